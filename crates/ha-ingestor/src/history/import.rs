//! The history import (`ha-ingestor backfill --since`): the recorder's retained history into the
//! store.
//!
//! The window is read in day-sized slices (aligned to UTC midnight) and chunks of entities, so a
//! long import neither asks HA for one huge answer nor holds it in memory. Each finished slice is
//! recorded in the `import_progress` table; a second run skips the slices already done, so an
//! interrupted import resumes where it stopped. Writes go through the normal writer: idempotent on
//! (entity, `last_updated`), so overlaps and re-runs never duplicate. Remote sinks then receive the
//! rows from the journal like any others.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use ha_client::ws::WsClient;
use tokio::sync::mpsc;

use super::{OVERLAP_US, iso, read_history, slices};
use crate::config::Config;
use crate::credentials::{tls_options, token_source};
use crate::filter::EntityFilter;
use crate::run::RunError;
use crate::store::progress::ImportProgress;
use crate::store::{WriterConfig, spawn_writer};

/// What to import.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Start, in microseconds since the epoch.
    pub since_us: i64,
    /// End (default now), in microseconds.
    pub until_us: Option<i64>,
    /// Entities per history request.
    pub chunk: usize,
    /// Ignore the progress of earlier runs.
    pub fresh: bool,
    /// Draw a progress bar (a terminal); otherwise print a line per slice.
    pub progress_bar: Option<bool>,
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportSummary {
    /// History states read from HA.
    pub states_read: u64,
    /// Slices read now.
    pub slices_read: u64,
    /// Slices skipped because an earlier run finished them.
    pub slices_skipped: u64,
    /// Seconds taken.
    pub seconds: f64,
}

impl std::fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "imported {} history states in {:.1} s ({} day slices read, {} already done by an earlier run)",
            self.states_read, self.seconds, self.slices_read, self.slices_skipped
        )
    }
}

/// Parses `--since`: a duration back from now (`7d`, `36h`) or a timestamp (`2026-11-01`,
/// `2026-11-01T12:00:00Z`). Times before 1970 are refused: HA holds no history that old, and the
/// import would walk every day back to there (a huge duration reached back to the year -290000,
/// a hundred million day slices, before this check).
pub fn parse_since(text: &str, now_us: i64) -> Result<i64, String> {
    let since = parse_time_or_duration(text, now_us)?;
    if since < 0 {
        return Err(format!(
            "'{text}' reaches back before 1970-01-01, and Home Assistant holds no history that old; \
             give a shorter duration or a later date"
        ));
    }
    Ok(since)
}

fn parse_time_or_duration(text: &str, now_us: i64) -> Result<i64, String> {
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(now_us.saturating_sub(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)));
    }
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t.as_microsecond());
    }
    if let Ok(d) = text.parse::<jiff::civil::Date>() {
        let t = d
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map_err(|e| e.to_string())?
            .timestamp();
        return Ok(t.as_microsecond());
    }
    Err(format!(
        "'{text}' is neither a duration (7d, 36h, 90min) nor a timestamp (2026-11-01 or 2026-11-01T12:00:00Z)"
    ))
}

/// Imports HA's history for every configured instance into the store.
pub async fn import(config: Config, options: ImportOptions) -> Result<ImportSummary, RunError> {
    let started = Instant::now();
    let (tx, rx) = mpsc::channel(config.store.queue_capacity);
    // Counts records the writer has committed (inserted or not), so a slice is marked done only
    // after its rows are durable.
    let (committed_tx, mut committed) = tokio::sync::watch::channel(0u64);
    let on_commit: crate::store::CommitHook = Arc::new(move |records, _| {
        committed_tx.send_modify(|n| *n += records.len() as u64);
    });
    let mut sent: u64 = 0;
    let writer = spawn_writer(WriterConfig::new(&config, Some(on_commit)), rx, None)?;
    let progress = ImportProgress::open(&config.db).map_err(|e| RunError::Other(e.to_string()))?;
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
    let mut summary = ImportSummary::default();
    for inst in &config.instances {
        let name: Arc<str> = Arc::from(inst.name.as_str());
        // The instance's own rules on top of the global ones, as the live source applies them.
        let (filter, rules) = config.rules_for(inst).map_err(|e| RunError::Config(e.0))?;
        let ws = connect(inst).await?;
        let entities = entities(&ws, &config.db, &name, &filter).await?;
        let all = slices(options.since_us, until);
        let todo: Vec<(i64, i64)> = all
            .iter()
            .copied()
            .filter(|(s, e)| !progress.done(&name, *s, *e))
            .collect();
        summary.slices_skipped += (all.len() - todo.len()) as u64;
        let chunks = entities.len().div_ceil(options.chunk.max(1)).max(1);
        let bar = bar_wanted.then(|| {
            super::progress_bar(
                (todo.len() * chunks) as u64,
                name.to_string(),
                "{pos}/{len} requests, {msg}",
            )
        });
        if bar.is_none() {
            eprintln!(
                "import: instance {name}: {} entities, {} day slices ({} done earlier), {} .. {}",
                entities.len(),
                all.len(),
                all.len() - todo.len(),
                iso(options.since_us),
                iso(until)
            );
        }
        for (i, (start, end)) in todo.iter().copied().enumerate() {
            let rows = read_history(
                &ws,
                &name,
                &rules,
                &entities,
                options.chunk,
                start - OVERLAP_US,
                Some(end),
                || {
                    if let Some(bar) = &bar {
                        bar.inc(1);
                    }
                },
            )
            .await
            .map_err(|e| RunError::Other(format!("instance '{name}': {e}")))?;
            let states = rows.len() as u64;
            for record in rows {
                if tx.send(record).await.is_err() {
                    return Err(RunError::Other("the writer stopped".into()));
                }
            }
            sent += states;
            summary.states_read += states;
            summary.slices_read += 1;
            // The slice counts as done only once its rows are committed: a barrier through the writer.
            if committed.wait_for(|n| *n >= sent).await.is_err() {
                return Err(RunError::Other("the writer stopped".into()));
            }
            progress
                .finish(&name, start, end, states)
                .map_err(|e| RunError::Other(format!("import_progress: {e}")))?;
            match &bar {
                Some(bar) => bar.set_message(format!("{} states", summary.states_read)),
                None => eprintln!(
                    "import: instance {name}: slice {}/{} {} .. {}: {states} states",
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

/// A client of `inst` for an import; errors name the instance.
pub(crate) async fn connect(inst: &crate::config::InstanceConfig) -> Result<WsClient, RunError> {
    let name = &inst.name;
    let tokens = token_source(inst)?;
    let tls = tls_options(inst).map_err(|e| RunError::Config(format!("instance '{name}': {e}")))?;
    let url = crate::credentials::ha_url(inst)
        .map_err(|e| RunError::Config(format!("instance '{name}': {e}")))?;
    WsClient::builder(url)
        .shared_token_source(tokens)
        .tls(tls)
        .connect()
        .await
        .map_err(|e| {
            if e.is_final() {
                RunError::Auth(format!("instance '{name}': {e}"))
            } else {
                RunError::Other(format!("instance '{name}': {e}"))
            }
        })
}

/// The entities to import: those HA has now plus those the store has seen (entities deleted since
/// still have history), through the filter.
async fn entities(
    ws: &WsClient,
    db: &std::path::Path,
    instance: &str,
    filter: &EntityFilter,
) -> Result<Vec<String>, RunError> {
    let mut ids: std::collections::BTreeSet<String> = ws
        .get_states()
        .await
        .map_err(|e| RunError::Other(format!("instance '{instance}': get_states: {e}")))?
        .into_iter()
        .map(|s| s.entity_id)
        .collect();
    // A file not created yet has no entities: nothing to add.
    if db.exists() {
        ids.extend(
            crate::store::gaps::stored_entities(db, instance)
                .await
                .map_err(RunError::Other)?,
        );
    }
    Ok(ids.into_iter().filter(|id| filter.allows(id)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::DAY_US;

    #[test]
    fn since_accepts_durations_and_timestamps() {
        let now = 1_700_000_000_000_000;
        assert_eq!(parse_since("1h", now).unwrap(), now - 3_600_000_000);
        assert_eq!(parse_since("7d", now).unwrap(), now - 7 * DAY_US);
        assert_eq!(
            parse_since("2023-11-14T22:13:20Z", now).unwrap(),
            1_700_000_000_000_000
        );
        assert_eq!(parse_since("1970-01-02", now).unwrap(), DAY_US);
        let err = parse_since("yesterday", now).unwrap_err();
        assert!(err.contains("7d") && err.contains("2026-11-01"), "{err}");
    }

    #[test]
    fn since_before_1970_is_refused() {
        // Found by the `history` fuzz target: a duration this long reached back to the year
        // -290000, and the import's day slices from there filled gigabytes.
        let now = 1_700_000_000_000_000;
        for text in [
            "3h 6999999999h",
            "1000000000y",
            "1969-12-31",
            "1969-12-31T23:59:59Z",
        ] {
            let err = parse_since(text, now).unwrap_err();
            assert!(err.contains("before 1970-01-01"), "{text}: {err}");
        }
        assert_eq!(parse_since("1970-01-01", now).unwrap(), 0);
    }
}
