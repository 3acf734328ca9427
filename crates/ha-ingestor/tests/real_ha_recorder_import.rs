//! `import-recorder` against a real, running Home Assistant's own recorder database. The live
//! ingestor (subscribed to all events) stores a window of state changes and events; after it
//! stops, `ha-ingestor import-recorder` reads HA's `home-assistant_v2.db` beside the running HA
//! for the same window: into the same store it must add nothing, and into an empty store it must
//! write the very rows live ingestion wrote (values, times, context ids), row by row.
//!
//! Statistics too: an admin imports an external statistic three days back, the live ingestor
//! mirrors it through HA's API, and `import-recorder` of HA's `statistics` table finds the same
//! values stored (nothing new, nothing corrected), and writes them into an empty store.
//!
//! Run against HA 2024.3.3 (recorder schema 42, the harness) and 2026.2.3 (schema 53,
//! `HA_CURRENT_ENV`).
#![cfg(feature = "real-ha")]

mod process;
mod sinks;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ha_testenv::HaTarget;
use process::{free_port, log_tail, spawn_ingestor, until, wait_ready};
use sinks::reqwest_client;

const WAIT: Duration = Duration::from_secs(90);
const PROBE: &str = "sensor.recimport_probe";
const ENTITIES: [&str; 3] = [
    "sensor.recimport_0",
    "sensor.recimport_1",
    "sensor.recimport_2",
];
const EVENT: &str = "recimport_event";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_of_the_harness_ha_imports_as_live_ingestion_stored_it() {
    import_matches_live(HaTarget::harness()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_of_the_current_ha_imports_as_live_ingestion_stored_it() {
    let ha = HaTarget::current();
    assert!(ha.version.starts_with("2026."), "HA {}", ha.version);
    import_matches_live(ha).await;
}

/// Every column of a stored state of the test's entities, in store order per entity.
type StateRow = (
    String,
    String,
    Option<f64>,
    String,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
);
/// Every column of a stored event.
type EventRow = (String, String, i64, Option<String>, Option<String>);

fn states(db: &Path) -> Vec<StateRow> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT e.entity_id, s.state, s.value, a.json, s.last_changed_us, s.last_updated_us, \
                    s.time_fired_us, s.context_id, s.context_user_id, s.context_parent_id \
             FROM states s JOIN entities e ON e.id = s.entity LEFT JOIN attributes a ON a.id = s.attributes \
             WHERE e.entity_id LIKE 'sensor.recimport_%' AND e.entity_id != ?1 \
             ORDER BY e.entity_id, s.last_updated_us",
        )
        .unwrap();
    stmt.query_map([PROBE], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            r.get(9)?,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn events(db: &Path, event_type: &str) -> Vec<EventRow> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT event_type, data, time_fired_us, context_id, origin FROM events \
             WHERE event_type = ?1 ORDER BY time_fired_us",
        )
        .unwrap();
    stmt.query_map([event_type], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn count(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// The stored `last_updated` of the probe in `state`, if stored.
fn probe_at(db: &Path, state: &str) -> Option<i64> {
    let conn = rusqlite::Connection::open(db).ok()?;
    conn.query_row(
        "SELECT s.last_updated_us FROM states s JOIN entities e ON e.id = s.entity \
         WHERE e.entity_id = ?1 AND s.state = ?2",
        [PROBE, state],
        |r| r.get(0),
    )
    .ok()
}

async fn post(ha: &HaTarget, path: &str, body: serde_json::Value) {
    let r = reqwest_client()
        .post(format!("{}{path}", ha.url))
        .bearer_auth(&ha.admin_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
}

fn config(dir: &Path, name: &str, db: &Path, ha: &HaTarget, metrics: u16) -> PathBuf {
    let token = dir.join("token");
    std::fs::write(&token, &ha.admin_token).unwrap();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"
db = "{db}"
metrics_addr = "127.0.0.1:{metrics}"
[[instance]]
name = "real"
url = "{url}"
token_file = "{token}"
subscribe = "all"
[filter.include]
entity_globs = ["sensor.recimport_*"]
[store]
flush_interval_ms = 100
"#,
            db = db.display(),
            url = ha.url,
            token = token.display(),
        ),
    )
    .unwrap();
    config
}

fn iso(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us).unwrap().to_string()
}

/// Runs `ha-ingestor --config <config> import-recorder ...`; returns its stdout.
fn import_recorder(config: &Path, recorder: &Path, since_us: i64, until_us: i64) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ha-ingestor"))
        .args(["--config", config.to_str().unwrap(), "import-recorder"])
        .args(["--recorder-db", recorder.to_str().unwrap()])
        .args(["--since", &iso(since_us), "--until", &iso(until_us)])
        .env_remove("HA_INGESTOR_DB")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "import-recorder failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Whether HA's recorder has committed this run's end probe and its `events` test events (the
/// recorder keeps earlier runs' rows: they are told apart by the run id in their attributes and
/// data).
fn recorder_has_committed(recorder: &Path, run: i64, events: usize) -> bool {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(recorder, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return false;
    };
    let run = format!("%\"run\":{run}%");
    let probe: i64 = conn
        .query_row(
            "SELECT count(*) FROM states s JOIN states_meta m ON m.metadata_id = s.metadata_id \
             JOIN state_attributes a ON a.attributes_id = s.attributes_id \
             WHERE m.entity_id = ?1 AND s.state = 'end' AND a.shared_attrs LIKE ?2",
            [PROBE, &run],
            |r| r.get(0),
        )
        .unwrap_or(0);
    let fired: i64 = conn
        .query_row(
            "SELECT count(*) FROM events e JOIN event_types t ON t.event_type_id = e.event_type_id \
             JOIN event_data d ON d.data_id = e.data_id WHERE t.event_type = ?1 AND d.shared_data LIKE ?2",
            [EVENT, &run],
            |r| r.get(0),
        )
        .unwrap_or(0);
    probe >= 1 && fired as usize >= events
}

const HOUR_US: i64 = 3_600_000_000;

/// (start µs, state, sum, id) of the stored hourly rows of `statistic_id`, by start.
fn statistic_rows(db: &Path, statistic_id: &str) -> Vec<(i64, Option<f64>, Option<f64>, i64)> {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare(
        "SELECT s.start_us, s.state, s.sum, s.id FROM statistics s JOIN statistics_meta m ON m.id = s.meta \
         WHERE m.statistic_id = ?1 AND s.period = 'hour' ORDER BY s.start_us",
    ) else {
        return Vec::new();
    };
    stmt.query_map([statistic_id], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Imports two hourly rows of an external statistic, three days back, as the admin; returns its
/// id and the first row's start, once HA answers them.
async fn import_statistic(ha: &HaTarget, run: i64) -> (String, i64) {
    use ha_client::auth::StaticToken;
    use ha_client::ws::{StatisticsPeriod, StatisticsQuery, WsClient};
    let ws = WsClient::builder(ha.url.as_str())
        .token_source(StaticToken::new(ha.admin_token.clone()))
        .connect()
        .await
        .unwrap();
    let id = format!("recimport:energy_{run}");
    let start =
        jiff::Timestamp::now().as_microsecond().div_euclid(HOUR_US) * HOUR_US - 72 * HOUR_US;
    // HA 2024.3 refuses `mean_type` and `unit_class`; 2026.2 takes both.
    let mut metadata = serde_json::json!({"has_mean": false, "has_sum": true, "name": null,
        "source": "recimport", "statistic_id": id, "unit_of_measurement": "kWh"});
    if !ha.version.starts_with("2024.") {
        metadata["mean_type"] = serde_json::json!(0);
        metadata["unit_class"] = serde_json::json!("energy");
    }
    ws.command::<serde_json::Value>(serde_json::json!({
        "type": "recorder/import_statistics",
        "metadata": metadata,
        "stats": [
            {"start": iso(start), "state": 10.0, "sum": 0.0},
            {"start": iso(start + HOUR_US), "state": 12.5, "sum": 2.5}
        ]
    }))
    .await
    .unwrap_or_else(|e| panic!("import_statistics: {e}"));
    // HA's recorder writes them on its own schedule.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let q = StatisticsQuery::new(
            iso(start - HOUR_US),
            vec![id.clone()],
            StatisticsPeriod::Hour,
        );
        let rows = ws.statistics_during_period(&q).await.unwrap();
        if rows.get(&id).is_some_and(|r| r.len() == 2) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "HA did not store the statistic"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ws.close();
    (id, start)
}

async fn import_matches_live(ha: HaTarget) {
    let recorder = ha.config_dir.join("home-assistant_v2.db");
    assert!(recorder.exists(), "{} is missing", recorder.display());
    let (statistic, stat_start) =
        import_statistic(&ha, jiff::Timestamp::now().as_microsecond()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let metrics = free_port();
    let config = config(dir.path(), "live", &db, &ha, metrics);
    let log = dir.path().join("ingestor.log");
    let mut ingestor = spawn_ingestor(&config, &log);
    wait_ready(metrics, &mut ingestor, "real").await;
    until("the statistic mirrored live", &log, WAIT, async || {
        statistic_rows(&db, &statistic).len() == 2
    })
    .await;
    let live_statistic = statistic_rows(&db, &statistic);
    // A unique run id: the recorder keeps earlier runs' rows of the same entities.
    let run = jiff::Timestamp::now().as_microsecond();

    post(
        &ha,
        &format!("/api/states/{PROBE}"),
        serde_json::json!({"state": "start", "attributes": {"run": run}}),
    )
    .await;
    until("the start probe stored", &log, WAIT, async || {
        probe_at(&db, "start").is_some()
    })
    .await;
    let since_us = probe_at(&db, "start").unwrap();
    // 30 changes over three entities, attributes in HA's (not alphabetical) order, an
    // attribute-only change per entity; events with nested data.
    for i in 0..30usize {
        let entity = ENTITIES[i % 3];
        let state = if i >= 27 {
            format!("{}.5", i - 3)
        } else {
            format!("{i}.5")
        };
        post(
            &ha,
            &format!("/api/states/{entity}"),
            serde_json::json!({"state": state, "attributes": {
                "unit_of_measurement": "W", "zeta": i, "alpha": 0.1, "friendly_name": format!("Recorder import {i} ☀"),
                "nested": {"run": run, "list": [1, 2.5, null, "x"]}
            }}),
        )
        .await;
        if i % 6 == 0 {
            post(
                &ha,
                &format!("/api/events/{EVENT}"),
                serde_json::json!({"i": i, "run": run, "f": 0.1, "l": [true, null]}),
            )
            .await;
        }
    }
    post(
        &ha,
        &format!("/api/states/{PROBE}"),
        serde_json::json!({"state": "end", "attributes": {"run": run}}),
    )
    .await;
    until("the end probe stored", &log, WAIT, async || {
        probe_at(&db, "end").is_some()
    })
    .await;
    // The window: from the start probe (included) to the end probe (left out).
    let until_us = probe_at(&db, "end").unwrap();
    until(
        "every change and event stored live",
        &log,
        WAIT,
        async || {
            states(&db).iter().filter(|s| s.5 >= since_us).count() >= 30
                && events(&db, EVENT).len() >= 5
        },
    )
    .await;

    // A clean stop (SIGTERM flushes), then wait for HA's recorder to commit (it batches).
    let pid = ingestor.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || ingestor.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "stopped with {status}\n{}",
        log_tail(&log)
    );
    until(
        "HA's recorder committed the window",
        &log,
        WAIT,
        async || recorder_has_committed(&recorder, run, 5),
    )
    .await;

    let live_states: Vec<StateRow> = states(&db)
        .into_iter()
        .filter(|s| (since_us..until_us).contains(&s.5))
        .collect();
    let live_events: Vec<EventRow> = events(&db, EVENT)
        .into_iter()
        .filter(|e| (since_us..until_us).contains(&e.2))
        .collect();
    assert_eq!(live_states.len(), 30, "{live_states:#?}");
    assert_eq!(live_events.len(), 5, "{live_events:#?}");
    let total = |db: &Path| {
        (
            count(db, "SELECT count(*) FROM states"),
            count(db, "SELECT count(*) FROM events"),
            count(db, "SELECT count(*) FROM attributes"),
        )
    };
    let before = total(&db);

    // The same window from HA's recorder, beside the running HA, into the same store: nothing new.
    let out = import_recorder(&config, &recorder, since_us, until_us);
    assert!(
        out.contains(" 0 new, 31 already stored, 0 unchanged skipped,"),
        "the 30 changes and the start probe (the end probe and other entities are left out): {out}"
    );
    assert_eq!(total(&db), before, "import-recorder added rows: {out}");
    let same: Vec<StateRow> = states(&db)
        .into_iter()
        .filter(|s| (since_us..until_us).contains(&s.5))
        .collect();
    assert_eq!(same, live_states);

    // The statistic's hours from HA's recorder: the same values, already stored (not corrected:
    // same ids).
    let window = (stat_start - HOUR_US, stat_start + 2 * HOUR_US);
    let out = import_recorder(&config, &recorder, window.0, window.1);
    let stats_part = out.split("; statistics ").nth(1).unwrap_or_default();
    assert!(
        stats_part.contains(" 0 new,") && !stats_part.starts_with("0 read"),
        "{out}"
    );
    assert_eq!(statistic_rows(&db, &statistic), live_statistic, "{out}");

    // Into an empty store: the rows live ingestion wrote, every column.
    let empty = dir.path().join("imported.db");
    let config_empty = self::config(dir.path(), "imported", &empty, &ha, free_port());
    let out = import_recorder(&config_empty, &recorder, since_us, until_us);
    assert!(out.contains(" 31 new, 0 already stored,"), "{out}");
    let imported: Vec<StateRow> = states(&empty);
    assert_eq!(imported.len(), live_states.len(), "{out}");
    for (got, want) in imported.iter().zip(&live_states) {
        assert_eq!(got, want, "{out}");
    }
    assert!(
        imported
            .iter()
            .all(|s| s.7.as_ref().is_some_and(|c| c.len() == 26)),
        "ULID contexts"
    );
    assert!(
        imported
            .iter()
            .all(|s| s.8.as_ref().is_some_and(|u| u.len() == 32)),
        "the admin user's id"
    );
    assert_eq!(events(&empty, EVENT), live_events, "{out}");
    assert_eq!(
        count(
            &empty,
            "SELECT count(*) FROM states s JOIN entities e ON e.id = s.entity WHERE e.entity_id = 'sensor.recimport_probe'"
        ),
        1,
        "the window ends before the end probe, and starts at the start probe"
    );
    let fresh = dir.path().join("statistics.db");
    let config_fresh = self::config(dir.path(), "statistics", &fresh, &ha, free_port());
    let out = import_recorder(&config_fresh, &recorder, window.0, window.1);
    let values = |rows: Vec<(i64, Option<f64>, Option<f64>, i64)>| -> Vec<_> {
        rows.into_iter().map(|(t, s, m, _)| (t, s, m)).collect()
    };
    assert_eq!(
        values(statistic_rows(&fresh, &statistic)),
        values(live_statistic),
        "{out}"
    );
    eprintln!("HA {}: {out}", ha.version);
}
