//! The writer task: batches records by size or time and commits them to SQLite.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{SqliteStore, StoreError, WriteOutcome};
use crate::config::FullPolicy;
use crate::record::Record;

/// Batching settings.
#[derive(Clone)]
pub struct WriterConfig {
    /// The database file.
    pub path: PathBuf,
    /// Commit when this many records are waiting.
    pub batch_size: usize,
    /// Commit at the latest this long after the first waiting record arrived.
    pub flush_interval: Duration,
    /// Commit at most this often; rows committed as soon as none are waiting otherwise.
    pub min_commit_interval: Duration,
    /// The size bound and what to do when it is reached.
    pub bound: Option<(u64, FullPolicy)>,
    /// Called after every commit with the batch and what it did: wakes the remote sinks, and lets
    /// the bench harness measure end-to-end lag. Runs on the writer task, so keep it short.
    pub on_commit: Option<CommitHook>,
    /// Skip rows that repeat the entity's last row (see [`SqliteStore::set_skip_unchanged`]).
    pub skip_unchanged: bool,
    /// The configured sinks (see [`SqliteStore::set_sinks`]).
    pub sinks: Vec<super::SinkScope>,
}

impl WriterConfig {
    /// The writer of `config`'s database, with its `[store]` settings.
    pub fn new(config: &crate::config::Config, on_commit: Option<CommitHook>) -> Self {
        let store = &config.store;
        WriterConfig {
            path: config.db.clone(),
            batch_size: store.batch_size,
            flush_interval: store.flush_interval(),
            min_commit_interval: store.min_commit_interval(),
            bound: store.max_db_bytes.map(|max| (max, store.on_full)),
            on_commit,
            skip_unchanged: store.skip_unchanged,
            sinks: sink_scopes(config),
        }
    }
}

/// Each configured sink with the instances that feed it.
pub fn sink_scopes(config: &crate::config::Config) -> Vec<super::SinkScope> {
    config
        .sinks
        .iter()
        .map(|sc| super::SinkScope {
            name: sc.name.clone(),
            instances: config.sink_instances(sc),
        })
        .collect()
}

/// See [`WriterConfig::on_commit`].
pub type CommitHook = std::sync::Arc<dyn Fn(&[Record], &WriteOutcome) + Send + Sync>;

/// Starts the writer. It ends, after a final commit, when every sender is dropped; it returns the
/// error that stopped it, if any.
pub fn spawn_writer(
    config: WriterConfig,
    mut rx: mpsc::Receiver<Record>,
    health: Option<std::sync::Arc<crate::health::Health>>,
) -> Result<JoinHandle<Result<(), StoreError>>, StoreError> {
    let mut store = SqliteStore::open(&config.path)?;
    store.set_skip_unchanged(config.skip_unchanged);
    store.set_sinks(config.sinks.clone());
    let mut store = Some(store);
    Ok(tokio::spawn(async move {
        let mut batch: Vec<Record> = Vec::with_capacity(config.batch_size);
        let mut counters = InstanceCounters::new();
        let mut last_commit = tokio::time::Instant::now();
        loop {
            let Some(first) = rx.recv().await else {
                return Ok(());
            };
            batch.push(first);
            // Group commit: commit as soon as no more rows are waiting, but not more often than
            // every `min_commit_interval` (rows arriving meanwhile join the batch), and at the
            // latest `flush_interval` after the first row (a steady stream never goes idle).
            let deadline = tokio::time::Instant::now() + config.flush_interval;
            let earliest = last_commit + config.min_commit_interval;
            let mut open = true;
            while batch.len() < config.batch_size {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    break;
                }
                if now >= earliest {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                } else {
                    match tokio::time::timeout_at(earliest.min(deadline), rx.recv()).await {
                        Ok(Some(r)) => batch.push(r),
                        Ok(None) => {
                            open = false;
                            break;
                        }
                        Err(_) => {}
                    }
                }
            }
            let mut records = std::mem::take(&mut batch);
            let bound = config.bound;
            let mut held = Held::default();
            let result = loop {
                let mut owned = store.take().expect("store is put back after each batch");
                let (owned, back, result) = tokio::task::spawn_blocking(move || {
                    let started = Instant::now();
                    let result = commit(&mut owned, &records, bound);
                    metrics::histogram!("ha_ingestor_write_duration_seconds", "sink" => "sqlite")
                        .record(started.elapsed().as_secs_f64());
                    (owned, records, result)
                })
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?;
                store = Some(owned);
                records = back;
                match result {
                    // Another program holds the write lock beyond the busy timeout (a `sqlite3`
                    // shell in a transaction, say), or the disk is full: wait, keeping the rows.
                    // Nothing of the batch was stored (SQLite rolled it back). Meanwhile the
                    // queue fills and the sources stop reading; what HA sends then is dropped by
                    // the client and read back from HA's history once writes work again.
                    Err(e) if e.is_busy() || e.is_disk_full() => {
                        metrics::counter!("ha_ingestor_write_errors_total", "sink" => "sqlite")
                            .increment(1);
                        held.failed(&e, &config.path, records.len(), health.as_deref());
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    other => {
                        held.ended(other.is_ok(), health.as_deref());
                        break other;
                    }
                }
            };
            last_commit = tokio::time::Instant::now();
            match result {
                Ok(outcome) => {
                    metrics::gauge!("ha_ingestor_queue_depth").set(rx.len() as f64);
                    let inserted = outcome.inserted;
                    if let Some(hook) = &config.on_commit {
                        hook(&records, &outcome);
                    }
                    let max_lag = record_metrics(&records, outcome, &mut counters);
                    if let Some(h) = &health {
                        h.committed(inserted, max_lag);
                    }
                }
                Err(e) => {
                    tracing::error!(%e, rows = records.len(), "writing to SQLite failed");
                    metrics::counter!("ha_ingestor_write_errors_total", "sink" => "sqlite")
                        .increment(1);
                    return Err(e);
                }
            }
            batch = records;
            batch.clear();
            if !open {
                return Ok(());
            }
        }
    }))
}

/// A batch kept while the database refuses it for a while (locked, disk full): says so in the log
/// (at the first failure, then once a minute) and in `/health`, and that it passed.
#[derive(Default)]
struct Held {
    retries: u32,
    since: Option<Instant>,
    last_log: Option<Instant>,
}

impl Held {
    fn failed(
        &mut self,
        e: &StoreError,
        path: &std::path::Path,
        rows: usize,
        health: Option<&crate::health::Health>,
    ) {
        self.retries += 1;
        let since = *self.since.get_or_insert_with(Instant::now);
        let why = if e.is_disk_full() {
            format!(
                "{e}: the disk holding {} is full; {rows} rows held, none stored since {}s ago; \
                 retrying every second (free space; what HA sends meanwhile is read back from \
                 its history)",
                path.display(),
                since.elapsed().as_secs()
            )
        } else {
            format!("{e}: another connection holds the write lock; retrying every second")
        };
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            self.last_log = Some(Instant::now());
            tracing::warn!(retries = self.retries, "{why}");
        }
        if let Some(h) = health {
            h.set_sink_error(why);
        }
    }

    fn ended(&self, ok: bool, health: Option<&crate::health::Health>) {
        let Some(since) = self.since else { return };
        if ok {
            tracing::info!(
                retries = self.retries,
                seconds = since.elapsed().as_secs(),
                "the database takes writes again"
            );
            if let Some(h) = health {
                h.set_sink_ok();
            }
        }
    }
}

/// Writes a batch within the size bound (`max_db_bytes`, `on_full`): the writer task's commit,
/// also used by `import-recorder`, which writes without the task.
pub(crate) fn commit(
    store: &mut SqliteStore,
    records: &[Record],
    bound: Option<(u64, FullPolicy)>,
) -> Result<WriteOutcome, StoreError> {
    let Some((max, policy)) = bound else {
        return store.write_batch(records);
    };
    if policy == FullPolicy::DropNewest && store.used_bytes()? >= max {
        metrics::counter!("ha_ingestor_journal_full_total").increment(1);
        for r in records {
            metrics::counter!("ha_ingestor_events_dropped_total", "instance" => r.instance().to_string(), "reason" => "journal_full")
                .increment(1);
        }
        tracing::warn!(
            max_db_bytes = max,
            rows = records.len(),
            "the database is full (drop_newest): dropping new rows"
        );
        return Ok(WriteOutcome::default());
    }
    let outcome = store.write_batch(records)?;
    // The batch is stored: an eviction that fails now (the disk filled up, say) must not send it
    // back to be written again. The next batch evicts.
    if let Err(e) = evict_to_bound(store, max, policy) {
        tracing::warn!(%e, "evicting the oldest rows failed; the next batch tries again");
    }
    Ok(outcome)
}

/// With `drop_oldest`, deletes the oldest rows until the database is 5 % under `max`.
fn evict_to_bound(store: &mut SqliteStore, max: u64, policy: FullPolicy) -> Result<(), StoreError> {
    if policy == FullPolicy::DropOldest && store.used_bytes()? > max {
        metrics::counter!("ha_ingestor_journal_full_total").increment(1);
        // Make some headroom (5 %) so eviction does not run after every batch.
        let target = max / 20 * 19;
        // Evict in steps of 2 % of the records of every kind (estimated from the id ranges, O(1)).
        let span: i64 = store.connection().query_row(
            "SELECT (SELECT coalesce(max(id) - min(id), 0) FROM states) \
                  + (SELECT coalesce(max(id) - min(id), 0) FROM events) \
                  + (SELECT coalesce(max(id) - min(id), 0) FROM statistics)",
            [],
            |r| r.get(0),
        )?;
        let span = u64::try_from(span).unwrap_or(0);
        let step = (span / 50).max(10);
        let mut evicted = 0;
        while store.used_bytes()? > target {
            let n = store.evict_oldest(step)?;
            if n == 0 {
                break;
            }
            evicted += n;
        }
        metrics::counter!("ha_ingestor_rows_evicted_total").increment(evicted);
        tracing::warn!(
            max_db_bytes = max,
            evicted,
            "the database reached its size bound (drop_oldest): oldest rows deleted"
        );
    }
    Ok(())
}

/// Each instance's `events_written_total` and `events_dropped_total{reason="duplicate"}`, looked
/// up once: a lookup builds the labels (allocating) and searches the registry, which a commit of
/// a thousand instances' rows would otherwise do per instance every time (bench row i).
type InstanceCounters = HashMap<Arc<str>, (metrics::Counter, metrics::Counter)>;

/// Updates the metrics; returns the batch's largest lag in seconds.
fn record_metrics(
    records: &[Record],
    outcome: super::WriteOutcome,
    counters: &mut InstanceCounters,
) -> Option<f64> {
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default();
    let lag = metrics::histogram!("ha_ingestor_lag_seconds");
    let mut max_lag: Option<f64> = None;
    // Only rows this batch really inserted: duplicates and dropped rows were not committed now.
    for (r, _) in records
        .iter()
        .zip(&outcome.inserted_flags)
        .filter(|(_, inserted)| **inserted)
    {
        if let Some(fired) = r.time_fired_us() {
            let seconds = (now_us - fired).max(0) as f64 / 1e6;
            lag.record(seconds);
            max_lag = Some(max_lag.map_or(seconds, |m| m.max(seconds)));
        }
    }
    if outcome.unchanged > 0 {
        metrics::counter!("ha_ingestor_states_unchanged_total").increment(outcome.unchanged);
    }
    if outcome.statistics > 0 {
        metrics::counter!("ha_ingestor_statistics_written_total").increment(outcome.statistics);
    }
    for (instance, inserted, duplicates) in outcome.per_instance {
        let (written, dropped) = counters.entry(instance).or_insert_with_key(|instance| {
            let instance = instance.to_string();
            (
                metrics::counter!("ha_ingestor_events_written_total", "instance" => instance.clone(), "sink" => "sqlite"),
                metrics::counter!("ha_ingestor_events_dropped_total", "instance" => instance, "reason" => "duplicate"),
            )
        });
        written.increment(inserted);
        dropped.increment(duplicates);
    }
    max_lag
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::record::StateRow;

    fn big_row(i: i64) -> Record {
        Record::State(StateRow {
            instance: Arc::from("home"),
            entity_id: format!("sensor.s{}", i % 10),
            state: i.to_string(),
            value: Some(i as f64),
            // Distinct attributes per row, ~2 kB each, so the bound is reached quickly.
            attributes: format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(2000)),
            last_changed_us: i,
            last_updated_us: i,
            time_fired_us: Some(i),
            context_id: None,
            context_user_id: None,
            context_parent_id: None,
        })
    }

    fn fill(policy: FullPolicy) -> SqliteStore {
        let mut store = SqliteStore::in_memory().unwrap();
        let max = 1 << 20;
        for chunk in 0..20 {
            let batch: Vec<Record> = (chunk * 100..(chunk + 1) * 100).map(big_row).collect();
            commit(&mut store, &batch, Some((max, policy))).unwrap();
        }
        assert!(
            store.used_bytes().unwrap() <= max + (256 << 10),
            "bound held: {}",
            store.used_bytes().unwrap()
        );
        store
    }

    #[test]
    fn drop_oldest_keeps_the_newest_rows_within_the_bound() {
        let store = fill(FullPolicy::DropOldest);
        let (n, newest): (i64, i64) = store
            .connection()
            .query_row(
                "SELECT count(*), max(last_updated_us) FROM states",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(newest, 1999, "the newest row is kept");
        assert!(n < 2000 && n > 100, "old rows were evicted: {n} left");
    }

    #[test]
    fn drop_newest_keeps_the_oldest_rows_within_the_bound() {
        let store = fill(FullPolicy::DropNewest);
        let (n, oldest): (i64, i64) = store
            .connection()
            .query_row(
                "SELECT count(*), min(last_updated_us) FROM states",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(oldest, 0, "the oldest row is kept");
        assert!(n < 2000, "new rows were dropped: {n} stored");
    }

    /// Another program holding the write lock past the busy timeout delays the rows; it neither
    /// stops the writer nor loses them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_locked_by_another_program_delays_rows_and_loses_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locked.db");
        let (tx, rx) = mpsc::channel(16);
        let health = Arc::new(crate::health::Health::default());
        let writer = spawn_writer(
            WriterConfig {
                path: path.clone(),
                batch_size: 100,
                flush_interval: Duration::from_millis(10),
                min_commit_interval: Duration::from_millis(1),
                bound: None,
                on_commit: None,
                skip_unchanged: true,
                sinks: Vec::new(),
            },
            rx,
            Some(health.clone()),
        )
        .unwrap();
        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        for i in 1..=10 {
            tx.send(big_row(i)).await.unwrap();
        }
        // After the busy timeout (5 s) the writer reports the lock and keeps trying.
        let error = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(e) = health.snapshot()["sinks"][0]["error"].as_str() {
                    return e.to_string();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the lock is reported in /health");
        assert!(
            error.contains("locked") && error.contains("retrying"),
            "{error}"
        );
        assert!(
            !writer.is_finished(),
            "the writer gave up on a locked database"
        );
        other.execute_batch("COMMIT").unwrap();
        drop(tx);
        tokio::time::timeout(Duration::from_secs(20), writer)
            .await
            .expect("the writer ends once the lock is gone")
            .unwrap()
            .expect("no error");
        let n: i64 = other
            .query_row("SELECT count(*) FROM states", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 10);
        assert!(
            health.snapshot()["sinks"][0]["error"].is_null(),
            "cleared once written"
        );
    }
}
