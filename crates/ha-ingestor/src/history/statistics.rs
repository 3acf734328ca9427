//! Reading HA's statistics into the store: the live mirror (after each
//! `recorder_5min_statistics_generated`, at each hour, and the gap after start-up or a reconnect)
//! and the bulk import (`backfill --statistics`). Both read through [`read_rows`].
//!
//! Values are asked for in each statistic's own unit (`units`), not the display unit HA would
//! convert to, so the store holds what HA stored.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use ha_client::ws::{
    StatisticMetadata, StatisticsAnswer, StatisticsPeriod, StatisticsQuery, WsClient,
};
use tokio::sync::mpsc;

use crate::record::{Record, StatisticMeta, StatisticPeriod, StatisticRow};

/// How far back the mirror reads a statistic it holds no row of yet (HA's default
/// `purge_keep_days`); older rows come with `backfill --statistics`.
pub const FIRST_READ_BACK_US: i64 = 10 * super::DAY_US;

/// Rows still appear this long after their period started (HA compiles an hour after it ends,
/// at its next 5-minute run): a mirror that read up to `t` reads again from `t` minus this.
const LATE_ROWS_US: i64 = 2 * 3_600_000_000;

/// The statistics HA lists, with their metadata.
pub async fn list(ws: &WsClient) -> Result<Vec<Arc<StatisticMeta>>, String> {
    let listed = ws
        .list_statistic_ids()
        .await
        .map_err(|e| format!("recorder/list_statistic_ids: {e}"))?;
    Ok(listed.iter().map(|m| Arc::new(meta_of(m))).collect())
}

pub(crate) fn meta_of(m: &StatisticMetadata) -> StatisticMeta {
    StatisticMeta {
        statistic_id: m.statistic_id.clone(),
        source: m.source.clone(),
        unit: m.statistics_unit_of_measurement.clone(),
        unit_class: m.unit_class.clone(),
        mean_type: m.mean_type(),
        has_sum: m.has_sum,
        name: m.name.clone(),
    }
}

fn iso(us: i64) -> String {
    super::iso(us)
}

fn ha_period(p: StatisticPeriod) -> StatisticsPeriod {
    match p {
        StatisticPeriod::FiveMinute => StatisticsPeriod::FiveMinute,
        StatisticPeriod::Hour => StatisticsPeriod::Hour,
    }
}

/// Reads the rows of `period` of `metas` with a start in `[since(statistic), end_us)` (to now
/// without `end_us`), `chunk` statistics per request. Statistics that share a start and a unit
/// share requests. Rows come in time order across statistics.
#[allow(clippy::too_many_arguments)] // one read, its parts named at the call sites
pub async fn read_rows(
    ws: &WsClient,
    instance: &Arc<str>,
    metas: &[Arc<StatisticMeta>],
    period: StatisticPeriod,
    since: impl Fn(&str) -> i64,
    end_us: Option<i64>,
    chunk: usize,
    mut on_request: impl FnMut(),
) -> Result<Vec<StatisticRow>, String> {
    type Group<'a> = (i64, Option<&'a str>, Option<&'a str>);
    let mut groups: BTreeMap<Group<'_>, Vec<&Arc<StatisticMeta>>> = BTreeMap::new();
    for m in metas {
        let start = since(&m.statistic_id);
        if end_us.is_some_and(|end| start >= end) {
            continue;
        }
        groups
            .entry((start, m.unit_class.as_deref(), m.unit.as_deref()))
            .or_default()
            .push(m);
    }
    let mut rows = Vec::new();
    for ((start, unit_class, unit), members) in groups {
        for chunk in members.chunks(chunk.max(1)) {
            let by_id: HashMap<&str, &Arc<StatisticMeta>> = chunk
                .iter()
                .map(|m| (m.statistic_id.as_str(), *m))
                .collect();
            let mut query = StatisticsQuery::new(
                iso(start),
                by_id.keys().map(|id| id.to_string()).collect(),
                ha_period(period),
            );
            if let Some(end) = end_us {
                query = query.end_time(iso(end));
            }
            if let (Some(class), Some(unit)) = (unit_class, unit) {
                query = query.unit(class, unit);
            }
            let answer = ws
                .statistics_during_period(&query)
                .await
                .map_err(|e| format!("recorder/statistics_during_period: {e}"))?;
            on_request();
            answer_rows(instance, &by_id, period, answer, &mut rows);
        }
    }
    sort_rows(&mut rows);
    Ok(rows)
}

/// Adds the rows of one `statistics_during_period` answer for the statistics asked for (`by_id`)
/// to `rows`.
pub(crate) fn answer_rows(
    instance: &Arc<str>,
    by_id: &HashMap<&str, &Arc<StatisticMeta>>,
    period: StatisticPeriod,
    answer: StatisticsAnswer,
    rows: &mut Vec<StatisticRow>,
) {
    for (id, list) in answer {
        let Some(meta) = by_id.get(id.as_str()) else {
            continue; // HA answered for a statistic not asked for
        };
        rows.extend(list.into_iter().map(|r| StatisticRow {
            instance: instance.clone(),
            meta: (*meta).clone(),
            period,
            start_us: r.start,
            mean: r.mean,
            min: r.min,
            max: r.max,
            state: r.state,
            sum: r.sum,
            last_reset_us: r.last_reset,
        }));
    }
}

/// Time order across statistics (by statistic within a start).
pub(crate) fn sort_rows(rows: &mut [StatisticRow]) {
    rows.sort_by(|a, b| {
        (a.start_us, &a.meta.statistic_id).cmp(&(b.start_us, &b.meta.statistic_id))
    });
}

/// Why the mirror reads now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The connection came back: read the whole gap since the newest stored rows.
    Reconnected,
}

/// The live mirror of one instance's statistics.
pub struct StatisticsMirror {
    /// The instance's client.
    pub ws: WsClient,
    /// The instance's name.
    pub instance: Arc<str>,
    /// The database, for the newest stored start per statistic.
    pub db: PathBuf,
    /// The writer's queue.
    pub tx: mpsc::Sender<Record>,
}

impl StatisticsMirror {
    /// Reads the gap since the newest stored rows, then what is new after every
    /// `recorder_5min_statistics_generated`, every hour and every reconnect, until `wake` closes.
    pub async fn run(self, mut wake: mpsc::Receiver<Wake>) {
        let name = self.instance.clone();
        let mut generated = match self
            .ws
            .subscribe_events(Some("recorder_5min_statistics_generated"))
            .await
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(instance = %name, %e, "cannot subscribe to recorder_5min_statistics_generated; statistics are read every hour only");
                None
            }
        };
        // When the last complete read began, this run: later reads start a little before it.
        let mut read_from: Option<i64> = None;
        loop {
            let began = jiff::Timestamp::now().as_microsecond();
            match self.read_new(read_from).await {
                Ok(n) => {
                    tracing::debug!(instance = %name, rows = n, "statistics read");
                    read_from = Some(began);
                }
                Err(e) => {
                    tracing::warn!(instance = %name, %e, "reading statistics failed; the next read covers this one's window");
                }
            }
            let until_next_hour = {
                let now = jiff::Timestamp::now().as_microsecond();
                let next = (now.div_euclid(3_600_000_000) + 1) * 3_600_000_000 + 30_000_000;
                Duration::from_micros(u64::try_from(next - now).unwrap_or(0))
            };
            tokio::select! {
                event = async {
                    match generated.as_mut() {
                        Some(s) => s.next().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if event.is_none() {
                        generated = None;
                    }
                }
                w = wake.recv() => match w {
                    Some(Wake::Reconnected) => read_from = None,
                    None => return,
                },
                _ = tokio::time::sleep(until_next_hour) => {}
            }
        }
    }

    /// Reads both periods of every statistic from its newest stored start (or
    /// [`FIRST_READ_BACK_US`] back), no earlier than `read_from` minus [`LATE_ROWS_US`] when given,
    /// and queues the rows. Returns how many were queued.
    pub async fn read_new(&self, read_from: Option<i64>) -> Result<u64, String> {
        let metas = list(&self.ws).await?;
        let now = jiff::Timestamp::now().as_microsecond();
        let mut queued = 0;
        for period in StatisticPeriod::ALL {
            let newest = newest_starts(&self.db, &self.instance, period).await?;
            let floor = read_from.map(|t| t - LATE_ROWS_US);
            let since = |id: &str| {
                let from = newest.get(id).copied().unwrap_or(now - FIRST_READ_BACK_US);
                floor.map_or(from, |f| from.max(f))
            };
            let rows = read_rows(
                &self.ws,
                &self.instance,
                &metas,
                period,
                since,
                None,
                100,
                || {},
            )
            .await?;
            for row in rows {
                if self.tx.send(Record::Statistic(row)).await.is_err() {
                    return Err("the writer stopped".into());
                }
                queued += 1;
            }
        }
        Ok(queued)
    }
}

/// The newest stored start per statistic of `instance` and `period`.
pub async fn newest_starts(
    db: &std::path::Path,
    instance: &str,
    period: StatisticPeriod,
) -> Result<HashMap<String, i64>, String> {
    let instance = instance.to_string();
    crate::store::on_db(db, crate::store::Access::ReadOnly, move |conn| {
        crate::store::statistics::newest_starts(conn, &instance, period).map_err(|e| e.to_string())
    })
    .await
}
