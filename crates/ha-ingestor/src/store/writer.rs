//! The writer task: batches records by size or time and commits them to SQLite.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{SqliteStore, StoreError};
use crate::record::Record;

/// Batching settings.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// The database file.
    pub path: PathBuf,
    /// Commit when this many records are waiting.
    pub batch_size: usize,
    /// Commit at the latest this long after the first waiting record arrived.
    pub flush_interval: Duration,
}

/// Starts the writer. It ends, after a final commit, when every sender is dropped; it returns the
/// error that stopped it, if any.
pub fn spawn_writer(
    config: WriterConfig,
    mut rx: mpsc::Receiver<Record>,
) -> Result<JoinHandle<Result<(), StoreError>>, StoreError> {
    let mut store = Some(SqliteStore::open(&config.path)?);
    Ok(tokio::spawn(async move {
        let mut batch: Vec<Record> = Vec::with_capacity(config.batch_size);
        loop {
            let Some(first) = rx.recv().await else {
                return Ok(());
            };
            batch.push(first);
            let deadline = tokio::time::Instant::now() + config.flush_interval;
            let mut open = true;
            while batch.len() < config.batch_size {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(r)) => batch.push(r),
                    Ok(None) => {
                        open = false;
                        break;
                    }
                    Err(_) => break,
                }
            }
            let mut owned = store.take().expect("store is put back after each batch");
            let records = std::mem::take(&mut batch);
            let (owned, records, result) = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let result = owned.write_batch(&records);
                metrics::histogram!("ha_ingestor_write_duration_seconds", "sink" => "sqlite")
                    .record(started.elapsed().as_secs_f64());
                (owned, records, result)
            })
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?;
            store = Some(owned);
            match result {
                Ok(outcome) => record_metrics(&records, outcome),
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

fn record_metrics(records: &[Record], outcome: super::WriteOutcome) {
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default();
    let lag = metrics::histogram!("ha_ingestor_lag_seconds");
    for r in records {
        if let Some(fired) = r.time_fired_us() {
            lag.record((now_us - fired).max(0) as f64 / 1e6);
        }
    }
    for (instance, inserted, duplicates) in outcome.per_instance {
        let instance = instance.to_string();
        metrics::counter!("ha_ingestor_events_written_total", "instance" => instance.clone(), "sink" => "sqlite")
            .increment(inserted);
        metrics::counter!("ha_ingestor_events_dropped_total", "instance" => instance, "reason" => "duplicate")
            .increment(duplicates);
    }
}
