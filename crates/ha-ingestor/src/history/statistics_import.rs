//! `ha-ingestor backfill --statistics --since 5y`: every statistic row HA still holds (hourly rows
//! outlive the purge; 5-minute ones live as long as states) into the store.
//!
//! The window is read in 30-day slices (aligned to the epoch), both periods, every statistic HA
//! lists. Each finished slice is recorded in `statistics_import_progress` once its rows are
//! committed, so an interrupted import resumes; writes are idempotent by (instance, statistic,
//! period, start), and a row HA changed since an earlier run is corrected (see
//! `store::statistics`).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::import::{ImportOptions, connect};
use super::iso;
use super::statistics::{list, read_rows};
use crate::config::Config;
use crate::record::{Record, StatisticPeriod};
use crate::run::RunError;
use crate::store::progress::ImportProgress;
use crate::store::{WriterConfig, spawn_writer};

/// The slice length.
const SLICE_US: i64 = 30 * super::DAY_US;

/// What a statistics import did.
#[derive(Debug, Default)]
pub struct StatisticsImportSummary {
    /// Statistics HA listed (summed over instances).
    pub statistics: u64,
    /// Rows read from HA.
    pub rows_read: u64,
    /// Slices read now.
    pub slices_read: u64,
    /// Slices skipped because an earlier run finished them.
    pub slices_skipped: u64,
    /// Seconds taken.
    pub seconds: f64,
}

impl std::fmt::Display for StatisticsImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "imported {} statistic rows of {} statistics in {:.1} s ({} 30-day slices read, {} already done by an earlier run)",
            self.rows_read, self.statistics, self.seconds, self.slices_read, self.slices_skipped
        )
    }
}

/// 30-day slices `[start, end)` covering `[since, until)`.
fn slices(since: i64, until: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut start = since;
    while start < until {
        let end = ((start.div_euclid(SLICE_US) + 1) * SLICE_US).min(until);
        out.push((start, end));
        start = end;
    }
    out
}

/// Imports HA's statistics of every configured instance into the store.
pub async fn import_statistics(
    config: Config,
    options: ImportOptions,
) -> Result<StatisticsImportSummary, RunError> {
    let started = Instant::now();
    let (tx, rx) = mpsc::channel(config.store.queue_capacity);
    // Counts records the writer has committed, so a slice is marked done only once durable.
    let (committed_tx, mut committed) = tokio::sync::watch::channel(0u64);
    let on_commit: crate::store::CommitHook = Arc::new(move |records, _| {
        committed_tx.send_modify(|n| *n += records.len() as u64);
    });
    let writer = spawn_writer(WriterConfig::new(&config, Some(on_commit)), rx, None)?;
    let progress =
        ImportProgress::open_statistics(&config.db).map_err(|e| RunError::Other(e.to_string()))?;
    if options.fresh {
        progress
            .forget()
            .map_err(|e| RunError::Other(e.to_string()))?;
    }
    let now = jiff::Timestamp::now().as_microsecond();
    let until = options.until_us.unwrap_or(now).min(now);
    if options.since_us >= until {
        return Err(RunError::Config(format!(
            "--since {} is not before the end {}",
            iso(options.since_us),
            iso(until)
        )));
    }
    let bar_wanted = options
        .progress_bar
        .unwrap_or_else(|| std::io::stderr().is_terminal());
    let mut summary = StatisticsImportSummary::default();
    let mut sent = 0u64;
    for inst in &config.instances {
        let name: Arc<str> = Arc::from(inst.name.as_str());
        let ws = connect(inst).await?;
        let mut metas = list(&ws)
            .await
            .map_err(|e| RunError::Other(format!("instance '{name}': {e}")))?;
        // By unit, so that a chunk of statistics is one request (statistics of one unit share
        // requests; a chunk of many units would be one request each).
        metas.sort_by(|a, b| {
            (&a.unit_class, &a.unit, &a.statistic_id).cmp(&(
                &b.unit_class,
                &b.unit,
                &b.statistic_id,
            ))
        });
        summary.statistics += metas.len() as u64;
        let all = slices(options.since_us, until);
        let todo: Vec<(i64, i64)> = all
            .iter()
            .copied()
            .filter(|(s, e)| !progress.done(&name, *s, *e))
            .collect();
        summary.slices_skipped += (all.len() - todo.len()) as u64;
        let bar = bar_wanted.then(|| {
            super::progress_bar(
                todo.len() as u64,
                name.to_string(),
                "{pos}/{len} slices, {msg}",
            )
        });
        if bar.is_none() {
            eprintln!(
                "import: instance {name}: {} statistics, {} slices of 30 days ({} done earlier), {} .. {}",
                metas.len(),
                all.len(),
                all.len() - todo.len(),
                iso(options.since_us),
                iso(until)
            );
        }
        for (i, (start, end)) in todo.iter().copied().enumerate() {
            let mut rows_in_slice = 0u64;
            // One request's rows in memory at a time, not the slice's: 30 days of 1000
            // statistics are millions of rows.
            for (period, group) in StatisticPeriod::ALL
                .into_iter()
                .flat_map(|p| metas.chunks(options.chunk.max(1)).map(move |g| (p, g)))
            {
                let rows = read_rows(
                    &ws,
                    &name,
                    group,
                    period,
                    |_| start,
                    Some(end),
                    options.chunk,
                    || {},
                )
                .await
                .map_err(|e| RunError::Other(format!("instance '{name}': {e}")))?;
                rows_in_slice += rows.len() as u64;
                for row in rows {
                    if tx.send(Record::Statistic(row)).await.is_err() {
                        return Err(RunError::Other("the writer stopped".into()));
                    }
                }
            }
            sent += rows_in_slice;
            summary.rows_read += rows_in_slice;
            summary.slices_read += 1;
            if committed.wait_for(|n| *n >= sent).await.is_err() {
                return Err(RunError::Other("the writer stopped".into()));
            }
            progress
                .finish(&name, start, end, rows_in_slice)
                .map_err(|e| RunError::Other(format!("statistics_import_progress: {e}")))?;
            match &bar {
                Some(bar) => {
                    bar.inc(1);
                    bar.set_message(format!("{} rows", summary.rows_read));
                }
                None => eprintln!(
                    "import: instance {name}: slice {}/{} {} .. {}: {rows_in_slice} statistic rows",
                    i + 1,
                    todo.len(),
                    iso(start),
                    iso(end)
                ),
            }
        }
        if let Some(bar) = bar {
            bar.finish();
        }
        ws.close();
    }
    drop(tx);
    match writer.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(RunError::Other(e.to_string())),
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_window_without_overlap() {
        let s = slices(SLICE_US / 2, 2 * SLICE_US + 5);
        assert_eq!(
            s,
            vec![
                (SLICE_US / 2, SLICE_US),
                (SLICE_US, 2 * SLICE_US),
                (2 * SLICE_US, 2 * SLICE_US + 5)
            ]
        );
    }
}
