//! The chaos test: while a load of state changes runs against the real Home Assistant, the
//! ingestor is killed with SIGKILL three times, HA restarts twice, InfluxDB goes away for a while
//! and the network to HA is cut. Afterwards, for the test window, the set of (entity,
//! `last_updated`, state) in SQLite and in InfluxDB must equal HA's recorder history: 0 missing,
//! 0 duplicated. It restarts the shared HA and InfluxDB, so CI runs it alone.
#![cfg(all(feature = "real-ha", feature = "real-sinks"))]

mod process;
mod sinks;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ha_testenv::{CutProxy, RealHa};
use process::{Ingestor, log_tail, spawn_ingestor, wait_ready};
use sinks::{env, influx_rows, reqwest_client};

const ENTITIES: [&str; 5] = [
    "sensor.chaos_0",
    "sensor.chaos_1",
    "sensor.chaos_2",
    "sensor.chaos_3",
    "sensor.chaos_4",
];

type Row = (String, i64, String);

fn script(name: &str, args: &[&str]) {
    let path = format!("{}/../../scripts/{name}", env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("bash").arg(path).args(args).status().unwrap();
    assert!(status.success(), "{name} {args:?} failed");
}

async fn blocking_script(name: &'static str, args: &'static [&'static str]) {
    tokio::task::spawn_blocking(move || script(name, args))
        .await
        .unwrap();
}

fn sqlite_rows(db: &Path) -> Vec<Row> {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare(
        "SELECT e.entity_id, s.last_updated_us, s.state FROM states s JOIN entities e ON e.id = s.entity \
         WHERE e.entity_id LIKE 'sensor.chaos_%'",
    ) else {
        return Vec::new();
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// HA's recorded changes from `since_us` on.
async fn recorded(ha: &RealHa, since_us: i64) -> BTreeSet<Row> {
    let token = ha.admin.long_lived_token.clone().unwrap();
    process::recorded(&ha.url, &token, &ENTITIES, since_us)
        .await
        .into_iter()
        .collect()
}

/// The rows of `want` that `got` lacks, with readable times, for a failure message.
fn describe_missing(want: &BTreeSet<Row>, got: &[Row]) -> String {
    let got: BTreeSet<&Row> = got.iter().collect();
    want.iter()
        .filter(|r| !got.contains(r))
        .take(20)
        .map(|(entity, us, state)| {
            let at = jiff::Timestamp::from_microsecond(*us).unwrap();
            format!("  missing {entity} {at} state {state}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Missing and duplicated rows of `got` against `want`.
fn compare(want: &BTreeSet<Row>, got: &[Row]) -> (usize, usize, usize) {
    let mut counts: BTreeMap<&Row, usize> = BTreeMap::new();
    for r in got {
        *counts.entry(r).or_default() += 1;
    }
    let missing = want.iter().filter(|r| !counts.contains_key(r)).count();
    let duplicated = counts.values().filter(|n| **n > 1).map(|n| n - 1).sum();
    let extra = counts.keys().filter(|r| !want.contains(**r)).count();
    (missing, duplicated, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loses_nothing_and_duplicates_nothing() {
    let ha = RealHa::from_env();
    let influx = env("HA_INGESTOR_INFLUX_URL");
    let proxy = CutProxy::start(ha.addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let process::Setup {
        config,
        db,
        log,
        metrics,
        influx_db,
    } = process::setup(
        dir.path(),
        "chaos",
        &proxy.url,
        &ha.user.long_lived_token.clone().unwrap(),
        "sensor.chaos_*",
        &influx,
    )
    .await;
    let mut ingestor = spawn_ingestor(&config, &log);
    wait_ready(metrics, &mut ingestor, "real").await;

    // The load: one state change every 20 ms, round robin over the entities, through HA's REST API.
    let running = Arc::new(AtomicBool::new(true));
    let posted = Arc::new(AtomicU64::new(0));
    let load = {
        let (running, posted) = (running.clone(), posted.clone());
        let (url, admin) = (ha.url.clone(), ha.admin.long_lived_token.clone().unwrap());
        tokio::spawn(async move {
            let http = reqwest_client();
            let mut i: u64 = 0;
            while running.load(Ordering::SeqCst) {
                i += 1;
                let entity = ENTITIES[(i % 5) as usize];
                let ok = http
                    .post(format!("{url}/api/states/{entity}"))
                    .bearer_auth(&admin)
                    .json(&serde_json::json!({"state": i.to_string(), "attributes": {"unit_of_measurement": "W", "seq": i}}))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    posted.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // The window starts with the first row the ingestor stored (what came before it was never
    // promised: the store was empty, so there was no gap to fill).
    let since_us = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(first) = sqlite_rows(&db).iter().map(|r| r.1).min() {
                return first;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the first row is stored");

    let kill_and_restart = async |ingestor: &mut Ingestor, n: u32| {
        ingestor.child.kill().unwrap(); // SIGKILL
        ingestor.child.wait().unwrap();
        eprintln!("chaos: kill -9 #{n}");
        tokio::time::sleep(Duration::from_secs(2)).await; // changes pile up while it is dead
        let mut fresh = spawn_ingestor(&config, &log);
        wait_ready(metrics, &mut fresh, "real").await;
        *ingestor = fresh;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    kill_and_restart(&mut ingestor, 1).await;
    eprintln!("chaos: HA restart #1");
    blocking_script("real-ha.sh", &["restart"]).await;
    wait_ready(metrics, &mut ingestor, "real").await;
    kill_and_restart(&mut ingestor, 2).await;
    eprintln!("chaos: InfluxDB down for 5 s");
    blocking_script("services.sh", &["stop", "influxdb"]).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    blocking_script("services.sh", &["start", "influxdb"]).await;
    eprintln!("chaos: network cut for 3 s");
    proxy.set_down(true);
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.set_down(false);
    wait_ready(metrics, &mut ingestor, "real").await;
    eprintln!("chaos: HA restart #2");
    blocking_script("real-ha.sh", &["restart"]).await;
    wait_ready(metrics, &mut ingestor, "real").await;
    kill_and_restart(&mut ingestor, 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.store(false, Ordering::SeqCst);
    load.await.unwrap();

    // HA's recorder commits every second; read its history until it stops changing.
    let mut want = recorded(&ha, since_us).await;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let again = recorded(&ha, since_us).await;
        if again == want {
            break;
        }
        want = again;
    }
    let posted = posted.load(Ordering::SeqCst);
    assert!(want.len() > 200, "HA recorded only {} changes", want.len());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let (mut sqlite, mut influx_got);
    loop {
        sqlite = compare(
            &want,
            &sqlite_rows(&db)
                .into_iter()
                .filter(|r| r.1 >= since_us)
                .collect::<Vec<_>>(),
        );
        influx_got = compare(&want, &influx_rows(&influx, &influx_db, since_us).await);
        if sqlite == (0, 0, 0) && influx_got == (0, 0, 0) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "chaos: {posted} changes posted, {} recorded by HA in the window; \
         SQLite missing {} duplicated {} extra {}; InfluxDB missing {} duplicated {} extra {}",
        want.len(),
        sqlite.0,
        sqlite.1,
        sqlite.2,
        influx_got.0,
        influx_got.1,
        influx_got.2
    );
    ingestor.child.kill().unwrap();
    ingestor.child.wait().unwrap();
    let sqlite_now: Vec<Row> = sqlite_rows(&db)
        .into_iter()
        .filter(|r| r.1 >= since_us)
        .collect();
    assert_eq!(
        sqlite,
        (0, 0, 0),
        "SQLite (missing, duplicated, extra)\n{}\n{}",
        describe_missing(&want, &sqlite_now),
        log_tail(&log)
    );
    assert_eq!(
        influx_got,
        (0, 0, 0),
        "InfluxDB (missing, duplicated, extra)\n{}",
        log_tail(&log)
    );
}
