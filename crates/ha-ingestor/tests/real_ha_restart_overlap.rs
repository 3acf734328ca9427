//! A restart must not store a change twice. The ingestor stores 60 changes live, is stopped,
//! 20 more happen, and at its next start the gap backfill reads HA's history from 10 s before the
//! newest stored row: the 60 live changes come back from history as float seconds, and each must
//! be recognised as the row already stored. Row by row, SQLite and InfluxDB must hold each of the
//! 80 changes HA recorded exactly once, at the microsecond of HA's ISO time.
//!
//! Run against HA 2024.3.3 (the harness) and 2026.2.3 (the current release): since 2025 HA keeps
//! `time.time()`'s sub-microsecond digits in its history, and only the current release shows
//! whether they are rounded as HA rounds them.
#![cfg(all(feature = "real-ha", feature = "real-sinks"))]

mod process;
mod sinks;

use std::path::Path;
use std::time::Duration;

use ha_testenv::HaTarget;
use process::{log_tail, metric, spawn_ingestor, wait_ready};
use sinks::{env, influx_rows, reqwest_client};

/// (entity_id, last_updated in µs, state).
type Row = (String, i64, String);

const ENTITIES: [&str; 4] = [
    "sensor.fidelity_0",
    "sensor.fidelity_1",
    "sensor.fidelity_2",
    "sensor.fidelity_3",
];
const PROBE: &str = "sensor.fidelity_probe";
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_stores_each_change_once_on_the_harness_ha() {
    restart_overlap(HaTarget::harness()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_stores_each_change_once_on_the_current_ha() {
    let ha = HaTarget::current();
    assert!(ha.version.starts_with("2026."), "HA {}", ha.version);
    restart_overlap(ha).await;
}

/// SQLite's rows of [`ENTITIES`] from `since_us` on, one per stored row, sorted; and how many came
/// live (with `time_fired`).
fn sqlite_rows(db: &Path, since_us: i64) -> (Vec<Row>, usize) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT e.entity_id, s.last_updated_us, s.state, s.time_fired_us IS NOT NULL \
             FROM states s JOIN entities e ON e.id = s.entity \
             WHERE e.entity_id LIKE 'sensor.fidelity_%' AND e.entity_id != ?1 AND s.last_updated_us >= ?2",
        )
        .unwrap();
    let mut live = 0;
    let mut rows: Vec<Row> = stmt
        .query_map(rusqlite::params![PROBE, since_us], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, bool>(3)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .map(|(e, t, s, fired)| {
            live += usize::from(fired);
            (e, t, s)
        })
        .collect();
    rows.sort();
    (rows, live)
}

/// HA's recorded changes of [`ENTITIES`] from `since_us` on, sorted.
async fn recorded(ha: &HaTarget, since_us: i64) -> Vec<Row> {
    process::recorded(&ha.url, &ha.admin_token, &ENTITIES, since_us).await
}

/// Sets `count` states through HA's REST API, round robin over [`ENTITIES`], with attributes in
/// an order that is not alphabetical.
async fn post_changes(ha: &HaTarget, first: usize, count: usize) {
    let http = reqwest_client();
    for i in first..first + count {
        let entity = ENTITIES[i % ENTITIES.len()];
        let r = http
            .post(format!("{}/api/states/{entity}", ha.url))
            .bearer_auth(&ha.admin_token)
            .json(&serde_json::json!({
                "state": format!("{}.5", i),
                "attributes": {"unit_of_measurement": "W", "zeta": i, "alpha": 0.1, "friendly_name": format!("Fidelity {i}")}
            }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
}

/// Polls `check` until it returns true, or fails with `what` after [`WAIT`].
async fn until<F: AsyncFnMut() -> bool>(what: &str, log: &Path, check: F) {
    process::until(what, log, WAIT, check).await
}

async fn restart_overlap(ha: HaTarget) {
    let influx = env("HA_INGESTOR_INFLUX_URL");
    let dir = tempfile::tempdir().unwrap();
    let process::Setup {
        config,
        db,
        log,
        metrics,
        influx_db,
    } = process::setup(
        dir.path(),
        "fidelity",
        &ha.url,
        &ha.user_token,
        "sensor.fidelity_*",
        &influx,
    )
    .await;
    let since_us = jiff::Timestamp::now().as_microsecond();

    // 60 changes stored live.
    let mut ingestor = spawn_ingestor(&config, &log);
    wait_ready(metrics, &mut ingestor, "real").await;
    post_changes(&ha, 0, 60).await;
    until("60 live rows stored", &log, async || {
        sqlite_rows(&db, since_us).0.len() >= 60
    })
    .await;

    // A clean stop; 20 changes while it is down; a start whose backfill re-reads the live ones.
    let pid = ingestor.child.id().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::task::spawn_blocking(move || ingestor.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "stopped with {status}\n{}",
        log_tail(&log)
    );
    post_changes(&ha, 60, 20).await;
    let mut ingestor = spawn_ingestor(&config, &log);
    wait_ready(metrics, &mut ingestor, "real").await;
    until(
        "the start-up backfill read the 80 changes",
        &log,
        async || metric(metrics, "ha_ingestor_backfilled_states_total").await >= 80.0,
    )
    .await;
    // A barrier: a live change after the backfill's rows went to the writer; once it is stored,
    // so are they.
    let http = reqwest_client();
    let probe = http
        .post(format!("{}/api/states/{PROBE}", ha.url))
        .bearer_auth(&ha.admin_token)
        .json(&serde_json::json!({"state": since_us.to_string()}))
        .send()
        .await
        .unwrap();
    assert!(probe.status().is_success());
    let conn = rusqlite::Connection::open(&db).unwrap();
    until("the probe stored", &log, async || {
        conn.query_row(
            "SELECT count(*) FROM states_view WHERE entity_id = ?1 AND state = ?2",
            [PROBE, &since_us.to_string()],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            == 1
    })
    .await;

    let want = recorded(&ha, since_us).await;
    assert_eq!(
        want.len(),
        80,
        "HA {} recorded {} changes",
        ha.version,
        want.len()
    );
    let (stored, live) = sqlite_rows(&db, since_us);
    let extra: Vec<&Row> = stored.iter().filter(|r| !want.contains(r)).collect();
    assert_eq!(
        stored,
        want,
        "HA {}: SQLite differs from HA's history; rows HA does not have: {extra:?}\n{}",
        ha.version,
        log_tail(&log)
    );
    assert_eq!(
        live, 60,
        "the 60 live rows keep time_fired (not replaced by history rows)"
    );

    // InfluxDB: the same 80 points, one each, once the sink has caught up.
    let mut points = Vec::new();
    until("InfluxDB holds the 80 changes", &log, async || {
        points = influx_rows(&influx, &influx_db, since_us).await;
        points.retain(|p| p.0 != PROBE);
        points.sort();
        points.len() >= want.len()
    })
    .await;
    assert_eq!(
        points, want,
        "HA {}: InfluxDB differs from HA's history",
        ha.version
    );
    println!(
        "restart overlap on HA {}: {} changes, {} stored live, each once in SQLite and InfluxDB",
        ha.version,
        want.len(),
        live
    );
    ingestor.child.kill().unwrap();
    ingestor.child.wait().unwrap();
}
