//! The per-sink loop: read the journal from the cursor, filter, write, advance the cursor; one
//! cursor per kind of record the sink takes (states, events).
//!
//! A cursor only moves after the sink acknowledged a batch, so a crash or an outage replays
//! rows rather than losing them; sinks are idempotent, so a replay writes no duplicates.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ha_client::RetryPolicy;
use tokio::sync::watch;

use super::JournalRow;
use super::WriteReport;
use super::{Sink, SinkError, SinkStart};
use crate::filter::{AttributeRules, EntityFilter};
use crate::health::Health;
use crate::record::RecordKind;
use crate::store::journal::Journal;

/// Everything one sink's loop needs.
pub struct SinkRunner {
    /// The sink's name (cursor key, metric label).
    pub name: String,
    /// The destination.
    pub sink: Box<dyn Sink>,
    /// The SQLite journal file.
    pub journal: PathBuf,
    /// This sink's own entity filter (on top of the global one, which already ran at ingest).
    pub filter: EntityFilter,
    /// This sink's own attribute rules.
    pub attributes: AttributeRules,
    /// The instances that feed this sink (`None`: all).
    pub instances: Option<Vec<String>>,
    /// Rows per write.
    pub batch_size: usize,
    /// Where a new cursor starts.
    pub start: SinkStart,
    /// Ticks after every SQLite commit.
    pub commits: watch::Receiver<u64>,
    /// `/health`.
    pub health: Arc<Health>,
}

/// Delays between retries while a sink is unavailable: quick at first, capped at 30 s.
fn unavailable_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: u32::MAX,
        initial_backoff: Duration::from_millis(250),
        max_backoff: Duration::from_secs(30),
    }
}

/// Delays after an auth or configuration failure: slow, since only an operator can fix it.
fn failed_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: u32::MAX,
        initial_backoff: Duration::from_secs(10),
        max_backoff: Duration::from_secs(120),
    }
}

/// Runs blocking journal work off the async threads.
async fn with_journal<T: Send + 'static>(
    journal: &Arc<Mutex<Journal>>,
    f: impl FnOnce(&mut Journal) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, String> {
    let journal = journal.clone();
    tokio::task::spawn_blocking(move || {
        let mut j = journal.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut j).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

impl SinkRunner {
    /// Runs until `stop` turns true. Never returns an error: a sink that fails is reported in
    /// `/health` and the metrics, and retried; ingestion and the other sinks go on.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let name = self.name.clone();
        let journal = loop {
            match Journal::open(&self.journal) {
                Ok(j) => break Arc::new(Mutex::new(j)),
                Err(e) => {
                    tracing::error!(sink = %name, %e, "cannot open the journal; retrying in 5 s");
                    if sleep_or_stop(Duration::from_secs(5), &mut stop).await {
                        return;
                    }
                }
            }
        };
        let start = self.start;
        let key = name.clone();
        let kinds = self.sink.kinds();
        let mut cursors = match with_journal(&journal, move |j| {
            kinds
                .iter()
                .map(|&kind| {
                    let start = match start {
                        SinkStart::All => 0,
                        SinkStart::New => j.head(kind)?,
                    };
                    Ok((kind, j.cursor(&key, kind, start)?))
                })
                .collect::<rusqlite::Result<Vec<(RecordKind, i64)>>>()
        })
        .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(sink = %name, %e, "cannot read the sink's cursor");
                self.health.set_remote_sink(&name, false, Some(e), None);
                return;
            }
        };
        tracing::info!(sink = %name, ?cursors, "sink started");
        let mut prepared = false;
        let mut failures: u32 = 0;
        loop {
            if *stop.borrow() {
                return;
            }
            let step = if prepared {
                self.step_all(&journal, &mut cursors).await
            } else {
                self.sink.prepare().await.map(|()| {
                    prepared = true;
                    Step::Prepared
                })
            };
            match step {
                Ok(Step::Prepared) => continue,
                Ok(Step::Idle { behind }) => {
                    if failures > 0 {
                        tracing::info!(sink = %name, "sink recovered");
                        failures = 0;
                    }
                    self.report(behind, None);
                    // Wait for the next commit (or a periodic re-check, in case of a missed tick).
                    tokio::select! {
                        _ = self.commits.changed() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => return,
                    }
                }
                Ok(Step::Wrote { behind }) => {
                    if failures > 0 {
                        tracing::info!(sink = %name, "sink recovered");
                        failures = 0;
                    }
                    self.report(behind, None);
                }
                Err(e) => {
                    prepared = false;
                    failures = failures.saturating_add(1);
                    let (kind, policy) = match &e {
                        SinkError::Unavailable(_) => ("unavailable", unavailable_policy()),
                        SinkError::Unauthorized(_) => ("unauthorized", failed_policy()),
                        SinkError::Failed(_) => ("failed", failed_policy()),
                    };
                    let delay = policy.backoff(failures);
                    metrics::counter!("ha_ingestor_sink_errors_total", "sink" => name.clone(), "kind" => kind).increment(1);
                    // Log the first failure and then every tenth, so a long outage does not flood.
                    if failures == 1 || failures.is_multiple_of(10) {
                        tracing::warn!(sink = %name, error = %e, kind, failures, retry_in = ?delay, "sink write failed; the cursor is held and nothing is lost");
                    }
                    // While the sink is down its backlog is what an operator watches.
                    let now = cursors.clone();
                    let behind = with_journal(&journal, move |j| behind(j, &now)).await.ok();
                    if let Some(b) = behind {
                        metrics::gauge!("ha_ingestor_sink_behind_rows", "sink" => name.clone())
                            .set(b as f64);
                    }
                    metrics::gauge!("ha_ingestor_sink_up", "sink" => name.clone()).set(0.0);
                    self.health
                        .set_remote_sink(&name, false, Some(e.to_string()), behind);
                    if sleep_or_stop(delay, &mut stop).await {
                        return;
                    }
                }
            }
        }
    }

    fn report(&self, behind: u64, error: Option<String>) {
        metrics::gauge!("ha_ingestor_sink_behind_rows", "sink" => self.name.clone())
            .set(behind as f64);
        metrics::gauge!("ha_ingestor_sink_up", "sink" => self.name.clone()).set(1.0);
        self.health
            .set_remote_sink(&self.name, true, error, Some(behind));
    }

    /// One batch of each kind the sink takes; `Idle` when none had rows.
    async fn step_all(
        &mut self,
        journal: &Arc<Mutex<Journal>>,
        cursors: &mut [(RecordKind, i64)],
    ) -> Result<Step, SinkError> {
        let mut wrote = false;
        for (kind, cursor) in cursors.iter_mut() {
            if let Some(last_id) = self.step(journal, *kind, *cursor).await? {
                *cursor = last_id;
                wrote = true;
            }
        }
        let now = cursors.to_vec();
        let behind = with_journal(journal, move |j| behind(j, &now))
            .await
            .map_err(|e| SinkError::Failed(format!("reading the journal: {e}")))?;
        Ok(match wrote {
            true => Step::Wrote { behind },
            false => Step::Idle { behind },
        })
    }

    /// One batch of `kind` after `cursor`: read, filter, write, advance. The new cursor, or
    /// `None` when there was nothing to read.
    async fn step(
        &mut self,
        journal: &Arc<Mutex<Journal>>,
        kind: RecordKind,
        cursor: i64,
    ) -> Result<Option<i64>, SinkError> {
        let limit = self.batch_size;
        let read_error = |e| SinkError::Failed(format!("reading the journal: {e}"));
        let (first_id, last_id, report) = match kind {
            RecordKind::State => {
                let rows = with_journal(journal, move |j| j.read_after(cursor, limit))
                    .await
                    .map_err(read_error)?;
                let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
                    return Ok(None);
                };
                let (first, last) = (first.id, last.id);
                let rows = self.apply_rules(rows);
                if self.sink.wants_metadata() && !rows.is_empty() {
                    let keys: Vec<(std::sync::Arc<str>, String)> = rows
                        .iter()
                        .map(|r| (r.instance.clone(), r.entity_id.clone()))
                        .collect();
                    let metadata = with_journal(journal, move |j| j.entity_metadata(&keys))
                        .await
                        .map_err(|e| SinkError::Failed(format!("reading the registry: {e}")))?;
                    self.sink.set_metadata(metadata);
                }
                let report = match rows.is_empty() {
                    true => WriteReport::default(),
                    false => self.sink.write(&rows).await?,
                };
                (first, last, report)
            }
            RecordKind::Event => {
                // Events have no entity: the sink's entity filter and attribute rules do not
                // apply to them.
                let rows = with_journal(journal, move |j| j.read_events_after(cursor, limit))
                    .await
                    .map_err(read_error)?;
                let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
                    return Ok(None);
                };
                let (first, last) = (first.id, last.id);
                let mut rows = rows;
                rows.retain(|e| self.takes(&e.instance));
                let report = match rows.is_empty() {
                    true => WriteReport::default(),
                    false => self.sink.write_events(&rows).await?,
                };
                (first, last, report)
            }
            RecordKind::Statistic => {
                let rows = with_journal(journal, move |j| j.read_statistics_after(cursor, limit))
                    .await
                    .map_err(read_error)?;
                let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
                    return Ok(None);
                };
                let (first, last) = (first.id, last.id);
                let mut rows = rows;
                rows.retain(|r| self.takes(&r.instance));
                let report = match rows.is_empty() {
                    true => WriteReport::default(),
                    false => self.sink.write_statistics(&rows).await?,
                };
                (first, last, report)
            }
        };
        // Statistic ids have holes (corrections): their eviction is counted where it happens
        // (`SqliteStore::evict_oldest`).
        let evicted = match kind {
            RecordKind::Statistic => 0,
            _ => evicted_unsent(cursor, first_id),
        };
        if evicted > 0 {
            metrics::counter!("ha_ingestor_sink_rows_evicted_unsent_total", "sink" => self.name.clone())
                .increment(evicted);
            tracing::error!(sink = %self.name, %kind, rows = evicted, "records were evicted from the journal (max_db_bytes) before this sink received them; raise max_db_bytes or fix the sink");
        }
        for r in &report.rejected {
            tracing::error!(sink = %self.name, %kind, entity_id = %r.entity_id, journal_id = r.id, reason = %r.reason,
                "the server rejected a row for good; it is kept in the dead_letters table");
        }
        let name = self.name.clone();
        let dead: Vec<(i64, String)> = report
            .rejected
            .iter()
            .map(|r| (r.id, r.reason.clone()))
            .collect();
        with_journal(journal, move |j| {
            let dead: Vec<(i64, &str)> = dead.iter().map(|(id, r)| (*id, r.as_str())).collect();
            j.advance(&name, kind, last_id, &dead)
        })
        .await
        .map_err(|e| SinkError::Failed(format!("saving the cursor: {e}")))?;
        let label = self.name.clone();
        metrics::counter!("ha_ingestor_sink_rows_written_total", "sink" => label.clone())
            .increment(report.written as u64);
        metrics::counter!("ha_ingestor_sink_rows_rejected_total", "sink" => label.clone())
            .increment(report.rejected.len() as u64);
        metrics::counter!("ha_ingestor_sink_rows_skipped_total", "sink" => label)
            .increment(report.skipped as u64);
        Ok(Some(last_id))
    }

    /// Whether rows of `instance` feed this sink.
    fn takes(&self, instance: &str) -> bool {
        self.instances
            .as_ref()
            .is_none_or(|list| list.iter().any(|n| n == instance))
    }

    /// This sink's instances, filter and attribute rules.
    fn apply_rules(&self, mut rows: Vec<JournalRow>) -> Vec<JournalRow> {
        rows.retain(|r| self.takes(&r.instance) && self.filter.allows(&r.entity_id));
        for row in &mut rows {
            let policy = self.attributes.for_entity(&row.entity_id);
            if policy.keeps_all() {
                continue;
            }
            // Rare path (per-sink attribute rules): rewrite the kept attributes, in HA's order.
            if let Ok(kept) = policy.retain_json(&row.attributes) {
                row.attributes = kept.into_owned();
            }
        }
        rows
    }
}

enum Step {
    Prepared,
    Idle { behind: u64 },
    Wrote { behind: u64 },
}

/// Rows of every kind the journal holds beyond the cursors.
fn behind(j: &mut Journal, cursors: &[(RecordKind, i64)]) -> rusqlite::Result<u64> {
    cursors.iter().try_fold(0u64, |sum, (kind, cursor)| {
        Ok(sum + (j.head(*kind)? - cursor).max(0) as u64)
    })
}

/// Journal rows this sink never received, between its cursor and the first row it reads now. Ids
/// of a kind have no holes (SQLite gives `max(id) + 1`, and each table keeps its newest row) except
/// where the size bound evicted rows; a journal starts at id 1. So a cursor still at 0 counts too:
/// a sink failing since its start loses rows to eviction like any other (and a sink added with
/// `start = "all"` after an eviction counts the rows it can no longer get).
fn evicted_unsent(cursor: i64, first_id: i64) -> u64 {
    u64::try_from(first_id - cursor - 1).unwrap_or(0)
}

/// Sleeps; true when `stop` turned true meanwhile.
async fn sleep_or_stop(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use crate::store::SqliteStore;

    /// Eviction of states and events, then what a sink's cursor at 0 (failing since its start)
    /// and one part-way through would count as never received, against the real store.
    #[test]
    fn rows_evicted_before_a_sink_read_them_are_counted_from_any_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("j.db")).unwrap();
        let records: Vec<Record> = (0..100)
            .map(|i| crate::store::sqlite::tests::row("sensor.a", &i.to_string(), i, "{}"))
            .collect();
        store.write_batch(&records).unwrap();
        assert_eq!(store.evict_oldest(30).unwrap(), 30);
        let first: i64 = store
            .connection()
            .query_row("SELECT min(id) FROM states", [], |r| r.get(0))
            .unwrap();
        assert_eq!(first, 31);
        assert_eq!(evicted_unsent(0, first), 30);
        assert_eq!(evicted_unsent(10, first), 20);
        assert_eq!(evicted_unsent(30, first), 0);
        assert_eq!(evicted_unsent(40, 41), 0);
    }
}
