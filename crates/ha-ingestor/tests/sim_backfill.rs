//! Gap backfill against the simulator: what HA recorded while the ingestor was away ends up in
//! SQLite, exactly once.

use std::path::Path;
use std::time::Duration;

use ha_client::Secret;
use ha_client::auth::StaticToken;
use ha_client::ws::{HistoryQuery, WsClient};
use ha_ingestor::config::{Config, FileConfig, InstanceConfig, Overrides};
use ha_sim::{Sim, SimConfig};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

struct Service {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<(), ha_ingestor::run::RunError>>,
}

async fn start(sim: &Sim, db: &Path) -> Service {
    start_with(sim, db, |_| {}).await
}

async fn start_with(sim: &Sim, db: &Path, tweak: impl FnOnce(&mut Config)) -> Service {
    let instance = InstanceConfig::with_token(
        "sim",
        &sim.url(),
        Secret::new(sim.config().admin_token.clone()),
    );
    let config = Config::resolve(
        FileConfig {
            instances: vec![instance],
            ..FileConfig::default()
        },
        Overrides {
            db: Some(db.to_path_buf()),
            metrics_addr: Some("127.0.0.1:0".parse().unwrap()),
            ..Overrides::default()
        },
    )
    .unwrap();
    let mut config = config;
    tweak(&mut config);
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(ha_ingestor::run::run(
        config,
        metrics,
        async {
            let _ = stop_rx.await;
        },
        Some(ready_tx),
    ));
    ready_rx.await.expect("service started");
    Service { stop, handle }
}

async fn stop(service: Service) {
    service.stop.send(()).unwrap();
    service.handle.await.unwrap().expect("clean shutdown");
}

/// (entity_id, last_updated_us, state) rows of `entities` in the database, one per stored row
/// (a change stored twice shows twice), sorted.
fn stored(db: &Path, entities: &[&str]) -> Vec<(String, i64, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT e.entity_id, s.last_updated_us, s.state FROM states s JOIN entities e ON e.id = s.entity")
        .unwrap();
    let mut rows: Vec<_> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .filter(|(e, _, _): &(String, i64, String)| entities.contains(&e.as_str()))
        .collect();
    rows.sort();
    rows
}

/// The same rows according to the simulator's recorder, sorted.
async fn recorded(sim: &Sim, entities: &[&str]) -> Vec<(String, i64, String)> {
    let ws = WsClient::builder(sim.url())
        .token_source(StaticToken::new(sim.config().admin_token.clone()))
        .connect()
        .await
        .unwrap();
    let query = HistoryQuery::new(
        "2000-01-01T00:00:00Z",
        entities.iter().map(|e| e.to_string()).collect(),
    );
    let history = ws.history_during_period(&query).await.unwrap();
    let mut rows: Vec<_> = history
        .into_iter()
        .flat_map(|(entity, states)| {
            states
                .into_iter()
                .map(move |s| (entity.clone(), s.last_updated_us(), s.state))
        })
        .collect();
    rows.sort();
    rows
}

async fn wait_equal(sim: &Sim, db: &Path, entities: &[&str]) -> usize {
    let want = recorded(sim, entities).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = stored(db, entities);
        if got == want {
            return got.len();
        }
        if tokio::time::Instant::now() > deadline {
            let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(5).collect();
            let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(5).collect();
            panic!(
                "database != recorder: {} stored, {} recorded; missing {missing:?}; extra {extra:?}",
                got.len(),
                want.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sets the probe until one of its values set now is stored: the subscription is live.
async fn until_live(sim: &Sim, db: &Path) {
    let before = stored(db, &["sensor.backfill_probe"]).len();
    tokio::time::timeout(WAIT, async {
        let mut n = before;
        loop {
            n += 1;
            sim.set_state("sensor.backfill_probe", &n.to_string(), json!({}));
            tokio::time::sleep(Duration::from_millis(50)).await;
            if stored(db, &["sensor.backfill_probe"]).len() > before {
                return;
            }
        }
    })
    .await
    .expect("the subscription is live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_while_the_ingestor_was_down_are_backfilled_at_start() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ha.db");
    // (Not the probe: on a fresh database there is no gap to fill, so its first values, set before
    // the subscription was live, are rightly not there.)
    let entities = ["sensor.bf_power", "binary_sensor.bf_door"];

    let service = start(&sim, &db).await;
    until_live(&sim, &db).await;
    for i in 0..10 {
        sim.set_state(
            "sensor.bf_power",
            &i.to_string(),
            json!({"unit_of_measurement": "W"}),
        );
    }
    wait_equal(&sim, &db, &entities).await;
    stop(service).await;

    // While the ingestor is down.
    for i in 10..30 {
        sim.set_state(
            "sensor.bf_power",
            &i.to_string(),
            json!({"unit_of_measurement": "W"}),
        );
        sim.set_state(
            "binary_sensor.bf_door",
            if i % 2 == 0 { "on" } else { "off" },
            json!({}),
        );
    }
    let service = start(&sim, &db).await;
    let n = wait_equal(&sim, &db, &entities).await;
    assert!(n >= 50, "10 live + at least 40 backfilled rows: {n}");
    // Attribute-only rows from history keep their attributes.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let attrs: String = conn
        .query_row(
            "SELECT attributes FROM states_view WHERE entity_id = 'sensor.bf_power' AND state = '29'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(attrs, r#"{"unit_of_measurement":"W"}"#);
    stop(service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_removed_while_the_ingestor_was_down_is_backfilled() {
    // HA forgets an entity's state when its integration unloads (or, for states set through the
    // API, when HA restarts); its recorded history is still there, and so is the gap in ours.
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ha.db");
    let entities = ["sensor.bf_gone"];
    let service = start(&sim, &db).await;
    until_live(&sim, &db).await;
    sim.set_state("sensor.bf_gone", "0", json!({}));
    wait_equal(&sim, &db, &entities).await;
    stop(service).await;

    for i in 1..=5 {
        sim.set_state("sensor.bf_gone", &i.to_string(), json!({}));
    }
    sim.remove_state("sensor.bf_gone");
    assert!(sim.get_state("sensor.bf_gone").is_none());
    let service = start(&sim, &db).await;
    let n = wait_equal(&sim, &db, &entities).await;
    assert_eq!(n, 6, "1 live + 5 backfilled rows");
    stop(service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_left_unfilled_at_stop_is_filled_at_the_next_start() {
    // The connection drops, changes happen, the ingestor reconnects and stores live rows, but HA's
    // history fails, so the gap stays open; then the ingestor stops (or is killed). The newest
    // stored row is now a live row from after the gap: only the gap's record makes the next start
    // read it. (A margin of 300 ms instead of 10 s keeps the test short; the live rows come
    // later than the gap plus the margin, so the newest stored row does not reach back to it.)
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ha.db");
    const MARGIN: Duration = Duration::from_millis(300);
    let small_margin = |c: &mut Config| c.backfill_settings.margin = MARGIN;
    let entities = ["sensor.bf_hole"];
    let service = start_with(&sim, &db, small_margin).await;
    until_live(&sim, &db).await;
    sim.set_history_failures(u32::MAX);
    sim.drop_connections();
    for i in 0..5 {
        sim.set_state("sensor.bf_hole", &i.to_string(), json!({}));
    }
    let after_gap = tokio::time::Instant::now() + 2 * MARGIN;
    tokio::time::sleep_until(after_gap).await;
    // Live again: a probe set after the gap is stored.
    until_live(&sim, &db).await;
    assert!(
        stored(&db, &entities).is_empty(),
        "the gap is still open (history fails)"
    );
    stop(service).await;

    sim.set_history_failures(0);
    let service = start_with(&sim, &db, small_margin).await;
    assert_eq!(wait_equal(&sim, &db, &entities).await, 5);
    // The fill ends (after its second read of the tail) by removing the records it covered.
    tokio::time::timeout(WAIT, async {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let open = || -> i64 {
            conn.query_row("SELECT count(*) FROM gaps", [], |r| r.get(0))
                .unwrap()
        };
        while open() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a filled gap leaves no record");
    stop(service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_drop_under_load_leaves_no_gap_and_no_duplicate() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ha.db");
    let service = start(&sim, &db).await;
    until_live(&sim, &db).await;
    let entities = ["sensor.bf_load", "sensor.backfill_probe"];
    for round in 0..3 {
        for i in 0..200 {
            sim.set_state("sensor.bf_load", &format!("{round}.{i}"), json!({}));
            if i == 100 {
                // Events produced right after the drop never reach the ingestor over the socket.
                sim.drop_connections();
            }
        }
    }
    let n = wait_equal(&sim, &db, &entities).await;
    assert!(n >= 600, "{n} rows");
    stop(service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_import_fills_the_store_once_and_resumes() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ha.db");
    let entities = ["sensor.imp_a", "sensor.imp_b", "light.imp_c"];
    for i in 0..100 {
        let e = entities[i % 3];
        sim.set_state(
            e,
            &i.to_string(),
            json!({"n": i, "unit_of_measurement": "W"}),
        );
    }
    let config = || {
        Config::resolve(
            FileConfig {
                instances: vec![InstanceConfig::with_token(
                    "sim",
                    &sim.url(),
                    Secret::new(sim.config().admin_token.clone()),
                )],
                ..FileConfig::default()
            },
            Overrides {
                db: Some(db.clone()),
                ..Overrides::default()
            },
        )
        .unwrap()
    };
    let now = jiff::Timestamp::now().as_microsecond();
    // Two days back: three day slices, the history sits in the last one.
    let options = ha_ingestor::history::import::ImportOptions {
        since_us: now - 2 * 86_400_000_000,
        until_us: Some(now),
        chunk: 2,
        fresh: false,
        progress_bar: Some(false),
    };
    let first = ha_ingestor::history::import::import(config(), options.clone())
        .await
        .unwrap();
    assert!(first.states_read >= 100, "{first}");
    assert_eq!(first.slices_skipped, 0, "{first}");
    let n = wait_equal(&sim, &db, &entities).await;
    assert_eq!(n, 100);

    // The same window again: every slice is done, nothing is read.
    let second = ha_ingestor::history::import::import(config(), options.clone())
        .await
        .unwrap();
    assert_eq!((second.slices_read, second.states_read), (0, 0), "{second}");
    // --fresh reads again, and the unique key keeps the store free of duplicates.
    let third = ha_ingestor::history::import::import(
        config(),
        ha_ingestor::history::import::ImportOptions {
            fresh: true,
            ..options
        },
    )
    .await
    .unwrap();
    assert!(third.states_read >= 100, "{third}");
    let rows: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM states_view WHERE entity_id IN ('sensor.imp_a', 'sensor.imp_b', 'light.imp_c')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 100, "no duplicates after three imports");
    assert_eq!(wait_equal(&sim, &db, &entities).await, 100);
}
