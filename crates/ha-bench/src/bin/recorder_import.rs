//! Benchmark of `ha-ingestor import-recorder`: a large synthetic recorder database (HA 2026.2.3's
//! schema, from the test fixture, plus generated rows) into a new store file, then again into
//! the store that holds them (every row already stored). Prints rows per second.
//!
//! ```bash
//! cargo build --release -p ha-bench && target/release/recorder_import --states 1000000
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use ha_ingestor::config::{Config, Overrides};
use ha_ingestor::recorder::import::{EventsChoice, RecorderImportOptions, import};

#[derive(Parser)]
struct Args {
    /// Recorder states to generate.
    #[arg(long, default_value_t = 1_000_000)]
    states: u64,
    /// Recorder events to generate.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Entities the states are spread over.
    #[arg(long, default_value_t = 500)]
    entities: u64,
    /// Where the recorder database and the store go (made anew).
    #[arg(long, default_value = "target/recorder-bench")]
    dir: PathBuf,
    /// Keep the recorder database of an earlier run in `dir` (only the store is made anew).
    #[arg(long)]
    reuse: bool,
    /// Recorder rows per read and per store transaction.
    #[arg(long, default_value_t = 20_000)]
    chunk: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let recorder = args.dir.join("home-assistant_v2.db");
    if !(args.reuse && recorder.exists()) {
        let _ = std::fs::remove_dir_all(&args.dir);
        std::fs::create_dir_all(&args.dir)?;
        let started = Instant::now();
        generate(&recorder, &args)?;
        println!(
            "generated {} states over {} entities and {} events in {:.1} s ({} MB)",
            args.states,
            args.entities,
            args.events,
            started.elapsed().as_secs_f64(),
            std::fs::metadata(&recorder)?.len() / 1_000_000
        );
    }
    let db = args.dir.join("store.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let file = args.dir.join("cfg.toml");
    std::fs::write(
        &file,
        format!(
            "db = {:?}\n[[instance]]\nname = \"home\"\n",
            db.display().to_string()
        ),
    )?;
    let config = Config::load_offline(Some(&file), Overrides::default())?;
    let mut options = RecorderImportOptions::new(recorder.display().to_string());
    options.progress_bar = Some(false);
    options.events = EventsChoice::Yes;
    options.chunk = args.chunk;
    for (what, fresh) in [
        ("into a new store", false),
        ("again, every row stored already", true),
    ] {
        options.fresh = fresh;
        let cpu_before = cpu_seconds();
        let summary = import(&config, &options)?;
        let cpu = cpu_seconds() - cpu_before;
        let events = summary.events.clone().unwrap_or_default();
        println!(
            "import {what}: {} states in {:.2} s: {:.0} states/s ({:.0} per CPU second, {:.2} CPU s); \
             {} events; {:.0} rows/s in all \
             (states: {} new, {} already stored, {} unchanged skipped; events: {} new, {} already stored)",
            summary.states.read,
            summary.seconds,
            summary.states.read as f64 / summary.seconds,
            summary.states.read as f64 / cpu,
            cpu,
            events.read,
            (summary.states.read + events.read) as f64 / summary.seconds,
            summary.states.inserted,
            summary.states.already_stored,
            summary.states.unchanged,
            events.inserted,
            events.already_stored,
        );
    }
    // The read alone (HA's file into plain structs), for where the time goes.
    let reader = ha_ingestor::recorder::read::RecorderDb::open(&recorder.display().to_string())?;
    let up_to = reader.newest_state_id()?;
    let (started, cpu_before) = (Instant::now(), cpu_seconds());
    let (mut after, mut rows, mut states) = (0, 0u64, Vec::with_capacity(args.chunk));
    while let Some(last) = reader.read_states(
        ha_ingestor::recorder::read::IdWindow::new(after, up_to, 0, i64::MAX),
        args.chunk,
        &mut states,
    )? {
        rows += states.len() as u64;
        states.clear();
        after = last;
    }
    let (secs, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu_before);
    println!(
        "the read alone: {rows} states in {secs:.2} s: {:.0} states/s ({:.0} per CPU second)",
        rows as f64 / secs,
        rows as f64 / cpu
    );
    println!("store: {} MB", std::fs::metadata(&db)?.len() / 1_000_000);
    Ok(())
}

/// User and system CPU seconds of this process so far: the machine is shared, so wall-clock rates
/// vary with the other load; CPU time is the steadier figure.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The fixture's recorder database (HA 2026.2.3) with `args.states` states and `args.events`
/// events added by SQL: numeric sensor states every few seconds over the last 10 days, a few
/// attribute sets per entity, random context bins, one event type in ten.
fn generate(recorder: &Path, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ha-ingestor/tests/fixtures/recorder-2026.2.3.db");
    std::fs::copy(fixture, recorder)?;
    let conn = rusqlite::Connection::open(recorder)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    let start = now - 10.0 * 86_400.0;
    let step = 10.0 * 86_400.0 / args.states.max(1) as f64;
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {entities})
         INSERT INTO states_meta (entity_id) SELECT 'sensor.bench_' || i FROM n;
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {entities} * 4)
         INSERT INTO state_attributes (hash, shared_attrs)
             SELECT i, '{{\"state_class\":\"measurement\",\"unit_of_measurement\":\"W\",\"device_class\":\"power\",\"friendly_name\":\"Bench ' || (i / 4) || '\",\"variant\":' || (i % 4) || '}}' FROM n;",
        entities = args.entities
    ))?;
    let (first_meta, first_attrs): (i64, i64) = tx.query_row(
        "SELECT (SELECT min(metadata_id) FROM states_meta WHERE entity_id LIKE 'sensor.bench_%'), \
                (SELECT min(attributes_id) FROM state_attributes WHERE hash = 0 AND shared_attrs LIKE '%Bench 0\"%')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    tx.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?1)
         INSERT INTO states (metadata_id, state, attributes_id, last_updated_ts, last_changed_ts,
                             context_id_bin, context_user_id_bin, origin_idx)
             SELECT ?2 + i % ?3, printf('%.2f', (abs(random()) % 100000) / 100.0),
                    ?4 + (i % ?3) * 4 + (i / ?3) % 4, ?5 + i * ?6, NULL, randomblob(16), NULL, 0
             FROM n",
        rusqlite::params![
            args.states as i64,
            first_meta,
            args.entities as i64,
            first_attrs,
            start,
            step
        ],
    )?;
    tx.execute_batch(
        "INSERT INTO event_types (event_type) VALUES ('bench_event');
         INSERT INTO event_data (hash, shared_data) VALUES (1, '{\"entity_id\":\"sensor.bench_1\",\"n\":1}');",
    )?;
    let ev_step = 10.0 * 86_400.0 / args.events.max(1) as f64;
    tx.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?1)
         INSERT INTO events (event_type_id, data_id, time_fired_ts, context_id_bin, origin_idx)
             SELECT (SELECT max(event_type_id) FROM event_types), (SELECT max(data_id) FROM event_data),
                    ?2 + i * ?3, randomblob(16), 0
             FROM n",
        rusqlite::params![args.events as i64, start, ev_step],
    )?;
    tx.commit()?;
    conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
    Ok(())
}
