//! `[fleet]` across processes, against the real PostgreSQL (`--features real-sinks`): three
//! ingestor processes share thirty simulated homes through advisory locks. Each home is served by
//! exactly one process; one process is killed with SIGKILL under load; the other two own every
//! home again within 30 s; then the server ends one survivor's session, which stops serving and
//! joins again; and PostgreSQL ends with every state change exactly once.

#![cfg(feature = "real-sinks")]

mod pg_support;
mod process;
mod sinks;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ha_sim::{Sim, SimConfig};
use process::{Ingestor, free_port, log_tail, spawn_ingestor};
use serde_json::json;
use sinks::reqwest_client;

const HOMES: usize = 30;
const PROCESSES: usize = 3;

/// The test's ingestors (each is killed when dropped, however the test ends).
struct Fleet(Vec<Option<Ingestor>>);

fn home(i: usize) -> String {
    format!("home{i:02}")
}

/// One config per process: the same homes, sink and fleet; its own store and port.
fn write_config(dir: &Path, sims: &[Sim], dsn: &str, p: usize, metrics: u16) -> std::path::PathBuf {
    let mut text = format!(
        r#"
db = "{db}"
metrics_addr = "127.0.0.1:{metrics}"
[filter.include]
entity_globs = ["sensor.fleet_*"]
[store]
flush_interval_ms = 50
[fleet]
sink = "pg"
[[sink]]
name = "pg"
[sink.postgres]
dsn = "{dsn}"
timescaledb = false
"#,
        db = dir.join(format!("p{p}.db")).display(),
    );
    for (i, sim) in sims.iter().enumerate() {
        let token = dir.join(format!("{}.token", home(i)));
        std::fs::write(&token, &sim.config().admin_token).unwrap();
        text.push_str(&format!(
            "[[instance]]\nname = \"{}\"\nurl = \"{}\"\ntoken_file = \"{}\"\nstatistics = false\nregistry = false\n",
            home(i),
            sim.url(),
            token.display()
        ));
    }
    let path = dir.join(format!("p{p}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Per live process (index), the homes it owns and serves connected; `None` for one that does
/// not answer.
async fn owners(ports: &[u16], alive: &[bool]) -> Vec<Option<Vec<String>>> {
    let http = reqwest_client();
    let mut out = Vec::new();
    for (p, port) in ports.iter().enumerate() {
        if !alive[p] {
            out.push(None);
            continue;
        }
        let body = match http
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
        {
            Ok(r) => r.json::<serde_json::Value>().await.ok(),
            Err(_) => None,
        };
        out.push(body.map(|b| {
            let owned: Vec<String> = b["fleet"]["owned"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            // Owned and serving: its subscription is live.
            owned
                .into_iter()
                .filter(|h| b["instances"][h]["connected"] == true)
                .collect()
        }));
    }
    out
}

/// Whether every home is owned and served by exactly one of the live processes.
fn each_once(owners: &[Option<Vec<String>>]) -> bool {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for o in owners.iter().flatten() {
        for h in o {
            *count.entry(h.clone()).or_default() += 1;
        }
    }
    count.len() == HOMES && count.values().all(|&n| n == 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_thirty_homes_and_take_over_a_killed_ones() {
    let db = pg_support::fresh_db("fleet").await;
    let mut sims = Vec::new();
    for _ in 0..HOMES {
        sims.push(Sim::start(SimConfig::default()).await.unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..PROCESSES).map(|_| free_port()).collect();
    let logs: Vec<_> = (0..PROCESSES)
        .map(|p| dir.path().join(format!("p{p}.log")))
        .collect();
    let mut fleet = Fleet(Vec::new());
    for p in 0..PROCESSES {
        let config = write_config(dir.path(), &sims, &db.dsn, p, ports[p]);
        fleet.0.push(Some(spawn_ingestor(&config, &logs[p])));
    }
    let all_logs = || {
        logs.iter()
            .map(|l| format!("--- {}\n{}", l.display(), log_tail(l)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut alive = vec![true; PROCESSES];

    // Settled: each home served once, each process its share of ten.
    let start = Instant::now();
    loop {
        let o = owners(&ports, &alive).await;
        if each_once(&o) && o.iter().flatten().all(|h| h.len() == HOMES / PROCESSES) {
            println!(
                "settled after {:.1} s: {o:?}",
                start.elapsed().as_secs_f64()
            );
            break;
        }
        for ing in fleet.0.iter_mut().flatten() {
            if let Ok(Some(status)) = ing.child.try_wait() {
                panic!("an ingestor exited: {status}\n{}", all_logs());
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the fleet did not settle to 10 homes per process within 90 s: {o:?}\n{}",
            all_logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Load: every home changes two sensors, each change with a value of its own, ~10/s per home.
    let sims = Arc::new(sims);
    let set: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = {
        let (sims, set) = (sims.clone(), set.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            while !*stop_rx.borrow() {
                tick.tick().await;
                for (i, sim) in sims.iter().enumerate() {
                    for entity in ["sensor.fleet_a", "sensor.fleet_b"] {
                        n += 1;
                        let state = n.to_string();
                        sim.set_state(entity, &state, json!({"unit_of_measurement": "W"}));
                        set.lock()
                            .unwrap()
                            .push((home(i), entity.to_string(), state));
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;

    // SIGKILL the first process under load.
    let victim = 0;
    let mut killed = fleet.0[victim].take().unwrap();
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    alive[victim] = false;
    let killed_at = Instant::now();
    loop {
        let o = owners(&ports, &alive).await;
        if each_once(&o) {
            println!(
                "every home owned once again {:.1} s after the kill: {o:?}",
                killed_at.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "30 s after the kill, the homes are not each served by one process: {o:?}\n{}",
            all_logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;

    // A process that loses its session (here: the server ends it) stops serving its homes at
    // once; the other takes them, and the two share them again once it has joined anew.
    let cut = 1;
    let cut_pid = fleet.0[cut].as_ref().unwrap().child.id();
    let admin = pg_support::connect(&db.dsn).await;
    let ended: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name LIKE '%:' || $1::text",
            &[&cut_pid.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        ended, 1,
        "process {cut}'s fleet session, by its application_name"
    );
    let cut_at = Instant::now();
    process::until(
        "the process whose session was ended says so",
        &logs[cut],
        Duration::from_secs(30),
        async || {
            std::fs::read_to_string(&logs[cut])
                .unwrap()
                .contains("lost the fleet's PostgreSQL session")
        },
    )
    .await;
    println!(
        "process {cut} saw its session end {:.1} s after",
        cut_at.elapsed().as_secs_f64()
    );
    loop {
        let o = owners(&ports, &alive).await;
        if each_once(&o) && o.iter().flatten().all(|h| h.len() == HOMES / 2) {
            println!(
                "after process {cut}'s session was ended, the homes were shared 15/15 again {:.1} s later",
                cut_at.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            cut_at.elapsed() < Duration::from_secs(60),
            "60 s after process {cut}'s session was ended, the homes are not shared 15/15: {o:?}\n{}",
            all_logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_tx.send(true).unwrap();
    load.await.unwrap();
    let set = set.lock().unwrap().clone();
    println!("{} changes made in {HOMES} homes", set.len());

    // Settled: every change made is in PostgreSQL (or 120 s passed), the survivors' gap fills
    // are done (no gap left open in their stores) and their journals sent; then PostgreSQL is
    // read once more, for rows that came twice.
    let client = db.client().await;
    let query = "SELECT instance, entity_id, state, count(*) FROM ha_states_view \
                 WHERE entity_id LIKE 'sensor.fleet_%' GROUP BY 1, 2, 3";
    let read = async || -> BTreeMap<(String, String, String), i64> {
        client
            .query(query, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| ((r.get(0), r.get(1), r.get(2)), r.get(3)))
            .collect()
    };
    let settled = Instant::now();
    loop {
        let mut done = read().await.len() >= set.len();
        for p in (0..PROCESSES).filter(|p| alive[*p]) {
            let store = dir.path().join(format!("p{p}.db"));
            let conn = rusqlite::Connection::open_with_flags(
                &store,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .unwrap();
            let gaps: i64 = conn
                .query_row("SELECT count(*) FROM gaps", [], |r| r.get(0))
                .unwrap();
            let health: serde_json::Value = reqwest_client()
                .get(format!("http://127.0.0.1:{}/health", ports[p]))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            done &= gaps == 0 && health["journal_depth"] == 0;
        }
        if done || settled.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // PostgreSQL holds every change exactly once: counted row by row.
    let stored = read().await;
    let missing: Vec<_> = set.iter().filter(|k| !stored.contains_key(*k)).collect();
    let repeated: Vec<_> = stored.iter().filter(|(_, n)| **n != 1).collect();
    let expected: std::collections::BTreeSet<_> = set.iter().collect();
    let extra: Vec<_> = stored.keys().filter(|k| !expected.contains(k)).collect();
    assert!(
        missing.is_empty() && repeated.is_empty() && extra.is_empty(),
        "PostgreSQL: {} of {} changes missing (first: {:?}), {} stored more than once ({:?}), {} unknown ({:?})\n{}",
        missing.len(),
        set.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        repeated.len(),
        repeated.iter().take(5).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(5).collect::<Vec<_>>(),
        all_logs()
    );
    let total: i64 = client
        .query_one(
            "SELECT count(*) FROM ha_states_view WHERE entity_id LIKE 'sensor.fleet_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        total as usize,
        set.len(),
        "rows in ha_states, one per change"
    );
    println!(
        "PostgreSQL holds all {} changes, each once; the killed process's log:\n{}",
        set.len(),
        log_tail(&killed.log)
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(fleet);
    db.drop_db().await;
}
