//! Gap backfill: after every (re)connect, fetch from HA's recorder what was missed.
//!
//! The subscription is made first, so nothing new is missed; then the gap, from the newest stored
//! `last_updated` of the instance or the oldest open gap (minus a margin) to now, is read with
//! `history/history_during_period` and written like live rows. The unique key on (entity,
//! `last_updated`) makes the overlap harmless.
//!
//! Gaps are kept in the `gaps` table until a fill covers them. The newest stored row alone is not
//! enough: after a reconnect, live rows from after the gap are stored while the gap is still being
//! read, and an ingestor killed then would, at its next start, see no gap at all.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ha_client::ws::{HistoryQuery, HistoryState, WsClient};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::filter::{AttributeRules, EntityFilter};
use crate::record::{Record, StateRow, numeric_value};

/// Backfill settings.
#[derive(Clone, Debug)]
pub struct BackfillConfig {
    /// Read back this much before the newest stored row (HA's history window excludes its start).
    pub margin: Duration,
    /// Entities per history request.
    pub chunk: usize,
    /// Never reach back further than this (HA's recorder keeps 10 days by default).
    pub max_gap: Duration,
    /// How long to wait for HA's recorder to write its backlog before reading.
    pub recorder_wait: Duration,
    /// After the first pass, read the last `tail` again once, to catch rows the recorder committed late.
    pub tail: Duration,
}

impl Default for BackfillConfig {
    fn default() -> Self {
        BackfillConfig {
            margin: Duration::from_secs(10),
            chunk: 50,
            max_gap: Duration::from_secs(10 * 86_400),
            recorder_wait: Duration::from_secs(30),
            tail: Duration::from_secs(15),
        }
    }
}

/// A request to fill a gap. The window starts at the newest stored row of the instance or at
/// `since_us`, whichever is older (minus the margin); with neither there is nothing to fill.
#[derive(Clone, Copy, Debug)]
pub struct Gap {
    /// The gap began no later than this, in microseconds: when the lost connection last
    /// delivered a message, or, at start, the newest row stored *before* subscribing. Needed because the newest stored row
    /// can be newer than the gap by the time the fill runs: live rows or another fill may have
    /// stored rows from after it.
    pub since_us: Option<i64>,
}

/// What the backfill worker needs.
pub struct Backfiller {
    /// The connection.
    pub ws: WsClient,
    /// The instance name.
    pub instance: Arc<str>,
    /// The database, read for the newest stored row.
    pub db: PathBuf,
    /// Entity filter.
    pub filter: Arc<EntityFilter>,
    /// Attribute rules.
    pub attributes: Arc<AttributeRules>,
    /// Where rows go.
    pub tx: mpsc::Sender<Record>,
    /// Settings.
    pub config: BackfillConfig,
}

/// The older of two optional times.
fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

fn iso(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

impl Backfiller {
    /// Serves gap requests until the channel closes. Requests that pile up while one runs are
    /// merged into one. A fill that fails is not forgotten: its window is merged into the next
    /// request, or retried after 30 s when none comes.
    pub async fn run(self, mut gaps: mpsc::Receiver<Gap>) {
        let mut failed: Option<i64> = None;
        loop {
            let mut gap = match failed {
                None => match gaps.recv().await {
                    Some(g) => g,
                    None => return,
                },
                Some(since) => tokio::select! {
                    g = gaps.recv() => match g {
                        Some(g) => g,
                        None => return,
                    },
                    _ = tokio::time::sleep(Duration::from_secs(30)) => Gap { since_us: Some(since) },
                },
            };
            while let Ok(more) = gaps.try_recv() {
                gap.since_us = earliest(gap.since_us, more.since_us);
            }
            gap.since_us = earliest(gap.since_us, failed);
            let started = Instant::now();
            let result = match self.window_start(gap).await {
                Ok((Some(since), records)) => async {
                    let n = self.fill(since).await?;
                    if let Some(id) = records {
                        close_gaps(&self.db, &self.instance, id).await?;
                    }
                    Ok((n, Some(since)))
                }
                .await
                .map_err(|e| (e, Some(since))),
                Ok((None, _)) => Ok((0, None)),
                Err(e) => Err((e, gap.since_us)),
            };
            match result {
                Ok((n, since)) => {
                    failed = None;
                    metrics::counter!("ha_ingestor_backfilled_states_total", "instance" => self.instance.to_string())
                        .increment(n);
                    metrics::histogram!("ha_ingestor_backfill_duration_seconds", "instance" => self.instance.to_string())
                        .record(started.elapsed().as_secs_f64());
                    if n > 0 {
                        let from = since
                            .map(|us| iso(us - self.margin_us()))
                            .unwrap_or_default();
                        tracing::info!(instance = %self.instance, states = n, %from, seconds = started.elapsed().as_secs_f64(), "gap backfilled from HA's history");
                    }
                }
                Err((e, since)) => {
                    failed = earliest(failed, since);
                    metrics::counter!("ha_ingestor_backfill_errors_total", "instance" => self.instance.to_string())
                        .increment(1);
                    tracing::error!(instance = %self.instance, %e, "gap backfill failed; it is retried with the next reconnect, or in 30 s");
                }
            }
        }
    }

    /// Where the gap starts: the newest stored row of the instance, the request's own start, or
    /// the oldest gap on record, whichever is oldest. `None`: nothing stored and no known start,
    /// so nothing to fill. Also returns the newest gap record, which the fill covers.
    async fn window_start(&self, gap: Gap) -> Result<(Option<i64>, Option<i64>), String> {
        let (recorded, newest_record) = open_gaps(&self.db, &self.instance).await?;
        let since = earliest(
            earliest(self.newest_stored().await?, gap.since_us),
            recorded,
        );
        Ok((since, newest_record))
    }

    /// Fills the gap from `since` (minus the margin) to now; returns the number of history states
    /// handed to the writer.
    pub async fn fill(&self, since: i64) -> Result<u64, String> {
        let floor = now_us() - i64::try_from(self.config.max_gap.as_micros()).unwrap_or(i64::MAX);
        let start = (since - self.margin_us()).max(floor);
        self.wait_for_recorder().await;
        let entities = self.entities().await?;
        let first_read_at = now_us();
        let mut sent = self.read_window(&entities, start).await?;
        // HA's recorder commits in intervals and can lag under load: read the tail once more.
        // The tail is measured back from when the first read *started*, not from now: the
        // connection may have dropped in between, and the re-read must still meet the first one.
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.wait_for_recorder().await;
        let tail_start = first_read_at - i64::try_from(self.config.tail.as_micros()).unwrap_or(0);
        sent += self.read_window(&entities, tail_start.max(start)).await?;
        Ok(sent)
    }

    fn margin_us(&self) -> i64 {
        i64::try_from(self.config.margin.as_micros()).unwrap_or(0)
    }

    async fn newest_stored(&self) -> Result<Option<i64>, String> {
        newest_stored(&self.db, &self.instance).await
    }

    async fn wait_for_recorder(&self) {
        let deadline = Instant::now() + self.config.recorder_wait;
        loop {
            match self.ws.recorder_info().await {
                Ok(info) if info.backlog.unwrap_or(0) == 0 => return,
                Ok(info) => tracing::debug!(backlog = ?info.backlog, "waiting for HA's recorder"),
                Err(e) => {
                    tracing::warn!(%e, "recorder/info failed; reading history anyway");
                    return;
                }
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    "HA's recorder still has a backlog; reading history anyway (the tail is read again)"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The entities to read: those HA has now, and those stored before. An entity that is gone
    /// from HA's state machine (removed, renamed, or not yet set again after HA restarted) still
    /// has history in the gap.
    async fn entities(&self) -> Result<Vec<String>, String> {
        let states = self.ws.get_states().await.map_err(|e| e.to_string())?;
        let mut all: BTreeSet<String> = states.into_iter().map(|s| s.entity_id).collect();
        all.extend(stored_entities(&self.db, &self.instance).await?);
        Ok(all
            .into_iter()
            .filter(|id| self.filter.allows(id))
            .collect())
    }

    async fn read_window(&self, entities: &[String], start_us: i64) -> Result<u64, String> {
        let mut sent = 0;
        let slices = crate::import::slices(start_us, now_us());
        let last = slices.len().saturating_sub(1);
        for (i, (start, end)) in slices.into_iter().enumerate() {
            // The last slice stays open-ended: rows committed while it is read still come back.
            // Later ones start a little early: HA's window leaves out rows exactly at its start.
            let end = (i < last).then_some(end);
            let start = if i == 0 {
                start
            } else {
                start - crate::import::OVERLAP_US
            };
            let rows = read_history(
                &self.ws,
                &self.instance,
                &self.attributes,
                entities,
                self.config.chunk,
                start,
                end,
                || {},
            )
            .await?;
            for record in rows {
                if self.tx.send(record).await.is_err() {
                    return Ok(sent); // shutting down
                }
                sent += 1;
            }
        }
        Ok(sent)
    }
}

/// Reads `[start_us, end_us)` of `entities`' history (open-ended without `end_us`), `chunk`
/// entities per request, calling `on_request` after each, and returns the rows in time order
/// across entities: HA's own outputs see changes in that order, and an InfluxDB measurement that
/// two entities write with different field types keeps the type of the first point written.
#[allow(clippy::too_many_arguments)] // one read, its parts named at the call sites
pub async fn read_history(
    ws: &WsClient,
    instance: &Arc<str>,
    rules: &AttributeRules,
    entities: &[String],
    chunk: usize,
    start_us: i64,
    end_us: Option<i64>,
    mut on_request: impl FnMut(),
) -> Result<Vec<Record>, String> {
    let mut rows = Vec::new();
    for chunk in entities.chunks(chunk.max(1)) {
        let mut query = HistoryQuery::new(iso(start_us), chunk.to_vec());
        if let Some(end) = end_us {
            query = query.end_time(iso(end));
        }
        let history = ws
            .history_during_period(&query)
            .await
            .map_err(|e| format!("history from {}: {e}", query.start_time))?;
        tracing::debug!(%instance, from = %query.start_time, entities = chunk.len(), states = history.values().map(Vec::len).sum::<usize>(), "history read");
        // Rows, not HA's maps, are kept until the sort: a day of history is held at once.
        for (entity_id, states) in history {
            rows.extend(
                states
                    .into_iter()
                    .map(|s| history_record(instance, rules, &entity_id, s)),
            );
        }
        on_request();
    }
    rows.sort_by(|a, b| a.time_order().cmp(&b.time_order()));
    Ok(rows)
}

/// Runs `f` on a connection of its own, off the async threads: read-only unless `write`. Writes
/// wait for the writer's lock (SQLite serializes writers).
async fn on_db<T: Send + 'static>(
    db: &Path,
    write: bool,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, String> {
    use rusqlite::OpenFlags;
    let db = db.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let (flags, what) = match write {
            true => (OpenFlags::SQLITE_OPEN_READ_WRITE, "write"),
            false => (OpenFlags::SQLITE_OPEN_READ_ONLY, "read"),
        };
        rusqlite::Connection::open_with_flags(&db, flags)
            .and_then(|c| c.busy_timeout(Duration::from_secs(10)).map(|()| c))
            .and_then(|c| f(&c))
            .map_err(|e| format!("cannot {what} {}: {e}", db.display()))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Records, durably, that a gap of `instance` began at `since_us`. Called before any row from after
/// the gap can be stored: once such rows exist, the newest stored row no longer shows the gap, and
/// only this record makes a later start (after `kill -9`, say) read it back. The fill that covers
/// it removes it ([`close_gaps`]).
pub async fn open_gap(db: &Path, instance: &str, since_us: i64) -> Result<(), String> {
    let instance = instance.to_string();
    on_db(db, true, move |conn| {
        conn.execute(
            "INSERT INTO gaps (instance, since_us) VALUES (?1, ?2)",
            rusqlite::params![instance, since_us],
        )
        .map(drop)
    })
    .await
}

/// The open gaps of an instance: the oldest start, and the newest record's id.
async fn open_gaps(db: &Path, instance: &str) -> Result<(Option<i64>, Option<i64>), String> {
    let instance = instance.to_string();
    on_db(db, false, move |conn| {
        conn.query_row(
            "SELECT min(since_us), max(id) FROM gaps WHERE instance = ?1",
            [&instance],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    })
    .await
}

/// Removes the gap records up to `id`: a fill that began after they were written covered them.
async fn close_gaps(db: &Path, instance: &str, id: i64) -> Result<(), String> {
    let instance = instance.to_string();
    on_db(db, true, move |conn| {
        conn.execute(
            "DELETE FROM gaps WHERE instance = ?1 AND id <= ?2",
            rusqlite::params![instance, id],
        )
        .map(drop)
    })
    .await
}

/// The newest `last_updated` stored for an instance, in microseconds.
pub async fn newest_stored(db: &Path, instance: &str) -> Result<Option<i64>, String> {
    let instance = instance.to_string();
    on_db(db, false, move |conn| {
        conn.query_row(
            "SELECT max(s.last_updated_us) FROM states s JOIN entities e ON e.id = s.entity WHERE e.instance = ?1",
            [&instance],
            |r| r.get::<_, Option<i64>>(0),
        )
    })
    .await
}

/// The entity ids stored for an instance.
async fn stored_entities(db: &Path, instance: &str) -> Result<Vec<String>, String> {
    let instance = instance.to_string();
    on_db(db, false, move |conn| {
        let mut stmt = conn.prepare("SELECT entity_id FROM entities WHERE instance = ?1")?;
        stmt.query_map([&instance], |r| r.get(0))?.collect()
    })
    .await
}

/// A state from HA's history as a row (no `time_fired` or context: history has neither).
pub fn history_record(
    instance: &Arc<str>,
    rules: &AttributeRules,
    entity_id: &str,
    s: HistoryState,
) -> Record {
    // The microseconds of the live event's ISO time, so the unique key matches the live row.
    let (last_changed_us, last_updated_us) = (s.last_changed_us(), s.last_updated_us());
    let mut attributes = s.attributes;
    rules.for_entity(entity_id).retain(&mut attributes);
    Record::State(StateRow {
        instance: instance.clone(),
        entity_id: entity_id.to_string(),
        value: numeric_value(&s.state),
        state: s.state,
        attributes: Value::Object(attributes).to_string(),
        last_changed_us,
        last_updated_us,
        time_fired_us: None,
        context_id: None,
        context_user_id: None,
        context_parent_id: None,
    })
}
