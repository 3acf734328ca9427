//! HA's statistics mirror against the simulator: rows imported into HA (as admin) reach SQLite row
//! by row with HA's values, with the ingestor running as a non-admin user; reading again adds
//! nothing; rows compiled later arrive after `recorder_5min_statistics_generated`; rows written
//! while the ingestor was down are read at start; `backfill --statistics` imports everything and
//! resumes; a row HA corrected is corrected in the store.

use std::path::Path;
use std::time::Duration;

use ha_client::Secret;
use ha_client::auth::StaticToken;
use ha_client::ws::{StatisticsPeriod, StatisticsQuery, WsClient};
use ha_ingestor::config::{Config, FileConfig, InstanceConfig, Overrides};
use ha_sim::{Sim, SimConfig};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const HOUR_US: i64 = 3_600_000_000;

struct Service {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<(), ha_ingestor::run::RunError>>,
}

fn config(sim: &Sim, db: &Path) -> Config {
    // The ingestor's user is not an admin: statistics are readable all the same.
    let instance = InstanceConfig::with_token(
        "sim",
        &sim.url(),
        Secret::new(sim.config().user_token.clone()),
    );
    Config::resolve(
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
    .unwrap()
}

async fn start(sim: &Sim, db: &Path) -> Service {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(ha_ingestor::run::run(
        config(sim, db),
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

async fn admin(sim: &Sim) -> WsClient {
    WsClient::builder(sim.url())
        .token_source(StaticToken::new(sim.config().admin_token.clone()))
        .connect()
        .await
        .unwrap()
}

/// One row as a user compares it: statistic, period, start, mean, min, max, state, sum.
type Row = (
    String,
    String,
    i64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

/// The rows in SQLite, sorted.
fn stored(db: &Path) -> Vec<Row> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT m.statistic_id, s.period, s.start_us, s.mean, s.min, s.max, s.state, s.sum
             FROM statistics s JOIN statistics_meta m ON m.id = s.meta",
        )
        .unwrap();
    let mut rows: Vec<Row> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows
}

/// `statistics.id` per (statistic, period, start), sorted by key.
fn ids(db: &Path) -> Vec<(String, String, i64, i64)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT m.statistic_id, s.period, s.start_us, s.id FROM statistics s
             JOIN statistics_meta m ON m.id = s.meta ORDER BY 1, 2, 3",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// What HA answers for every statistic it lists, both periods, sorted.
async fn in_ha(sim: &Sim) -> Vec<Row> {
    let ws = admin(sim).await;
    let ids: Vec<String> = ws
        .list_statistic_ids()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.statistic_id)
        .collect();
    let mut rows = Vec::new();
    for period in [StatisticsPeriod::FiveMinute, StatisticsPeriod::Hour] {
        let q = StatisticsQuery::new("2000-01-01T00:00:00Z", ids.clone(), period);
        for (id, list) in ws.statistics_during_period(&q).await.unwrap() {
            rows.extend(list.into_iter().map(|r| {
                (
                    id.clone(),
                    period.as_str().to_string(),
                    r.start,
                    r.mean,
                    r.min,
                    r.max,
                    r.state,
                    r.sum,
                )
            }));
        }
    }
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows
}

/// Polls until SQLite holds exactly HA's rows; returns them.
async fn wait_equal(sim: &Sim, db: &Path) -> Vec<Row> {
    let want = in_ha(sim).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = if db.exists() { stored(db) } else { Vec::new() };
        if got == want {
            return got;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("SQLite != HA:\n stored {got:?}\n in HA  {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn iso(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us).unwrap().to_string()
}

/// The start of the hour `n` hours before the one the test began in (fixed once, so a test that
/// runs across the top of an hour still names the same hours).
fn hours_ago(n: i64) -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| jiff::Timestamp::now().as_microsecond().div_euclid(HOUR_US));
    (base - n) * HOUR_US
}

fn energy_meta() -> Value {
    json!({"has_mean":false,"mean_type":0,"has_sum":true,"name":"Probe energy",
           "source":"probe","statistic_id":"probe:energy","unit_class":"energy","unit_of_measurement":"kWh"})
}

fn power_meta() -> Value {
    json!({"has_mean":true,"mean_type":1,"has_sum":false,"name":null,
           "source":"recorder","statistic_id":"sensor.probe_power","unit_class":"power","unit_of_measurement":"W"})
}

/// `recorder/import_statistics` as HA's admin, with HA's payload shapes.
async fn import(ws: &WsClient, metadata: Value, stats: Value) {
    ws.command::<Value>(
        json!({"type": "recorder/import_statistics", "metadata": metadata, "stats": stats}),
    )
    .await
    .unwrap();
}

fn energy_rows(hours: &[(i64, f64)]) -> Value {
    Value::Array(
        hours
            .iter()
            .map(|(h, sum)| json!({"start": iso(hours_ago(*h)), "state": 100.0 + sum, "sum": sum}))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_statistics_reach_sqlite_row_by_row_then_new_rows_after_each_compilation() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let ws = admin(&sim).await;
    import(
        &ws,
        energy_meta(),
        energy_rows(&[(3, 0.0), (2, 1.5), (1, 4.0)]),
    )
    .await;
    import(
        &ws,
        power_meta(),
        json!([{"start": iso(hours_ago(2)), "mean": 100, "min": 90, "max": 110},
               {"start": iso(hours_ago(1)), "mean": 120.5, "min": 80, "max": 130}]),
    )
    .await;
    let service = start(&sim, &db).await;
    let first = wait_equal(&sim, &db).await;
    assert_eq!(first.len(), 5);
    assert_eq!(
        first[0],
        (
            "probe:energy".to_string(),
            "hour".to_string(),
            hours_ago(3),
            None,
            None,
            None,
            Some(100.0),
            Some(0.0)
        )
    );
    let ids_before = ids(&db);

    // HA compiles 5-minute rows and says so; the mirror reads them (and re-reads the newest
    // stored rows, which must add nothing).
    let five = (jiff::Timestamp::now()
        .as_microsecond()
        .div_euclid(300_000_000)
        - 1)
        * 300_000_000;
    sim.add_statistics(
        power_meta(),
        "5minute",
        json!([{"start": iso(five), "mean": 99.5, "min": 99, "max": 100}]),
    )
    .unwrap();
    sim.fire_5min_statistics_generated();
    let second = wait_equal(&sim, &db).await;
    assert_eq!(second.len(), 6);
    let ids_after = ids(&db);
    assert_eq!(
        ids_after
            .iter()
            .filter(|r| r.1 == "hour")
            .cloned()
            .collect::<Vec<_>>(),
        ids_before,
        "the hourly rows kept their ids: reading them again wrote nothing"
    );
    assert_eq!(ids_after.iter().map(|r| r.3).max(), Some(6));
    stop(service).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_while_the_ingestor_was_down_are_read_at_start() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let ws = admin(&sim).await;
    import(&ws, energy_meta(), energy_rows(&[(5, 0.0), (4, 1.0)])).await;
    let service = start(&sim, &db).await;
    assert_eq!(wait_equal(&sim, &db).await.len(), 2);
    stop(service).await;

    // Down: HA compiles three more hours. No event reaches anyone.
    import(
        &ws,
        energy_meta(),
        energy_rows(&[(3, 2.0), (2, 3.0), (1, 4.5)]),
    )
    .await;
    let service = start(&sim, &db).await;
    let rows = wait_equal(&sim, &db).await;
    assert_eq!(
        rows.iter().map(|r| (r.2, r.7)).collect::<Vec<_>>(),
        vec![
            (hours_ago(5), Some(0.0)),
            (hours_ago(4), Some(1.0)),
            (hours_ago(3), Some(2.0)),
            (hours_ago(2), Some(3.0)),
            (hours_ago(1), Some(4.5)),
        ]
    );
    stop(service).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_ha_corrected_is_corrected_in_the_store_under_a_new_id() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let ws = admin(&sim).await;
    import(
        &ws,
        energy_meta(),
        energy_rows(&[(3, 0.0), (2, 1.0), (1, 2.0)]),
    )
    .await;
    let service = start(&sim, &db).await;
    wait_equal(&sim, &db).await;
    let before = ids(&db);

    // An admin re-imports the newest hour with another value.
    import(&ws, energy_meta(), energy_rows(&[(1, 2.25)])).await;
    sim.fire_5min_statistics_generated();
    let rows = wait_equal(&sim, &db).await;
    assert_eq!(
        rows.iter().map(|r| r.7).collect::<Vec<_>>(),
        vec![Some(0.0), Some(1.0), Some(2.25)]
    );
    let after = ids(&db);
    assert_eq!(after[..2], before[..2], "the unchanged rows kept their ids");
    assert!(
        after[2].3 > before.iter().map(|r| r.3).max().unwrap(),
        "the corrected row has a new id, past every sink's cursor: {after:?}"
    );
    stop(service).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_statistics_imports_every_row_ha_holds_and_a_second_run_resumes() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let ws = admin(&sim).await;
    // Rows far apart: a year back, 40 days back, an hour back (several 30-day slices); two
    // statistics, read one per request (`--chunk 1`: a slice is read and sent request by request).
    import(
        &ws,
        energy_meta(),
        energy_rows(&[(24 * 365, 0.0), (24 * 40, 10.0), (1, 20.0)]),
    )
    .await;
    import(
        &ws,
        power_meta(),
        json!([{"start": iso(hours_ago(24 * 40)), "mean": 100, "min": 90, "max": 110},
               {"start": iso(hours_ago(1)), "mean": 120.5, "min": 80, "max": 130}]),
    )
    .await;
    let now = jiff::Timestamp::now().as_microsecond();
    let options = |fresh| ha_ingestor::history::import::ImportOptions {
        since_us: ha_ingestor::history::import::parse_since("2y", now).unwrap(),
        until_us: None,
        chunk: 1,
        fresh,
        progress_bar: Some(false),
    };
    let summary = ha_ingestor::history::statistics_import::import_statistics(
        config(&sim, &db),
        options(false),
    )
    .await
    .unwrap();
    assert_eq!((summary.rows_read, summary.slices_skipped), (5, 0));
    let rows = wait_equal(&sim, &db).await;
    assert_eq!(
        rows.iter()
            .map(|r| (r.0.as_str(), r.2, r.7))
            .collect::<Vec<_>>(),
        vec![
            ("probe:energy", hours_ago(24 * 365), Some(0.0)),
            ("probe:energy", hours_ago(24 * 40), Some(10.0)),
            ("probe:energy", hours_ago(1), Some(20.0)),
            ("sensor.probe_power", hours_ago(24 * 40), None),
            ("sensor.probe_power", hours_ago(1), None),
        ]
    );
    let before = ids(&db);

    // A second run skips the finished slices (all but the last, which ends now and grew).
    let again = ha_ingestor::history::statistics_import::import_statistics(
        config(&sim, &db),
        options(false),
    )
    .await
    .unwrap();
    assert!(again.slices_skipped >= summary.slices_read - 1, "{again}");
    assert_eq!(ids(&db), before);

    // An admin corrects the year-old row; --fresh reads everything again and takes it.
    import(&ws, energy_meta(), energy_rows(&[(24 * 365, 0.5)])).await;
    ha_ingestor::history::statistics_import::import_statistics(config(&sim, &db), options(true))
        .await
        .unwrap();
    let rows = wait_equal(&sim, &db).await;
    assert_eq!(rows[0].7, Some(0.5));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_compiled_while_the_connection_was_down_are_read_after_the_reconnect() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let ws = admin(&sim).await;
    import(&ws, energy_meta(), energy_rows(&[(3, 0.0), (2, 1.0)])).await;
    ws.close();
    let service = start(&sim, &db).await;
    assert_eq!(wait_equal(&sim, &db).await.len(), 2);

    // The connection drops; HA compiles an hour before the ingestor is back (auth is slow) and
    // fires no event the ingestor could see: only the reconnect makes it read.
    sim.set_auth_delay(Duration::from_millis(500));
    sim.drop_connections();
    sim.add_statistics(
        energy_meta(),
        "hour",
        json!([{"start": iso(hours_ago(1)), "state": 102.5, "sum": 2.5}]),
    )
    .unwrap();
    let rows = wait_equal(&sim, &db).await;
    assert_eq!(
        rows.iter().map(|r| (r.2, r.7)).collect::<Vec<_>>(),
        vec![
            (hours_ago(3), Some(0.0)),
            (hours_ago(2), Some(1.0)),
            (hours_ago(1), Some(2.5)),
        ]
    );
    stop(service).await;
    sim.shutdown().await;
}
