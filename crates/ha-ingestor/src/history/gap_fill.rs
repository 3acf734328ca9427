//! The gap fill: after every (re)connect and at start, read from HA's recorder what was missed.
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
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ha_client::ws::WsClient;
use tokio::sync::mpsc;

use super::{OVERLAP_US, iso, now_us, read_history, slices};
use crate::filter::{AttributeRules, EntityFilter};
use crate::record::Record;
use crate::store::gaps::{close_gaps, newest_stored, open_gaps, stored_entities};

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
    /// `[fleet]`: a gap with a known start is filled from there, not from an older newest row of
    /// this process's store (rows of an instance it owned before, which another process has
    /// served since: PostgreSQL, not this store, says what is missing).
    pub fleet: bool,
}

impl Default for BackfillConfig {
    fn default() -> Self {
        BackfillConfig {
            margin: Duration::from_secs(10),
            chunk: 50,
            max_gap: Duration::from_secs(10 * 86_400),
            recorder_wait: Duration::from_secs(30),
            tail: Duration::from_secs(15),
            fleet: false,
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
        let known = earliest(gap.since_us, recorded);
        let since = match known {
            Some(_) if self.config.fleet => known,
            _ => earliest(self.newest_stored().await?, known),
        };
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
        // At least one slice, even when HA's clock runs ahead of this host's (the window starts
        // at HA's time); the last one is open-ended, so HA reads up to its own now.
        let slices = slices(start_us, now_us().max(start_us + 1));
        let last = slices.len().saturating_sub(1);
        for (i, (start, end)) in slices.into_iter().enumerate() {
            // The last slice stays open-ended: rows committed while it is read still come back.
            // Later ones start a little early: HA's window leaves out rows exactly at its start.
            let end = (i < last).then_some(end);
            let start = if i == 0 { start } else { start - OVERLAP_US };
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
