//! The ingestor against the in-process simulated Home Assistant (`ha-sim`): filters (HA's six
//! cases) and attribute rules end to end, idempotency, graceful shutdown and `kill -9` of the real
//! binary, the metrics values, and the exit codes. No external server: runs in `cargo test`.
//!
//! Every wait polls a condition against a deadline; nothing relies on a bare sleep.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ha_client::Secret;
use ha_ingestor::config::{Config, InstanceConfig, Overrides};
use ha_ingestor::filter::{AttributeRules, EntityFilter};
use ha_ingestor::record::Record;
use ha_ingestor::run::RunError;
use ha_ingestor::store::SqliteStore;
use ha_sim::{Sim, SimConfig};
use metrics_exporter_prometheus::PrometheusHandle;
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound for any single wait. Generous: the CI box has 2 cores and compiles meanwhile.
const TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Polls `check` every 25 ms until it returns `Ok`; panics after `limit` with `what` and the last
/// `Err` (what was observed instead).
async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {limit:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// The process-wide Prometheus recorder, so in-process tests can read metric values. Installed
/// once per test binary; each in-process test uses its own instance name so values don't mix.
fn global_metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| ha_ingestor::health::install_metrics().expect("install the recorder"))
        .clone()
}

/// Parses Prometheus text into `name{labels}` → value.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.trim().to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

fn metric(metrics: &BTreeMap<String, f64>, key: &str) -> f64 {
    metrics.get(key).copied().unwrap_or(0.0)
}

fn http_client() -> reqwest::Client {
    ha_client::TlsOptions::default()
        .reqwest_builder()
        .unwrap()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn scrape(http: &reqwest::Client, addr: SocketAddr) -> Result<BTreeMap<String, f64>, String> {
    let r = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    Ok(parse_metrics(&r.text().await.map_err(|e| e.to_string())?))
}

async fn health(http: &reqwest::Client, addr: SocketAddr) -> Result<(u16, Value), String> {
    let r = http
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body = r.json().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// A config from TOML text, with one instance pointing at the simulator (admin token in memory),
/// the given database, and a metrics endpoint on a free port.
fn sim_config(toml: &str, instance: &str, sim: &Sim, db: &Path) -> Config {
    let mut file = ha_ingestor::config::parse(toml).expect("the test config parses");
    file.instances = vec![InstanceConfig::with_token(
        instance,
        &sim.url(),
        Secret::new(sim.config().admin_token.clone()),
    )];
    Config::resolve(
        file,
        Overrides {
            db: Some(db.to_path_buf()),
            metrics_addr: Some("127.0.0.1:0".parse().unwrap()),
            ..Overrides::default()
        },
    )
    .expect("the test config resolves")
}

/// The service running in-process.
struct Service {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), RunError>>,
    metrics_addr: SocketAddr,
}

impl Service {
    async fn start(config: Config, metrics: PrometheusHandle) -> Service {
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(ha_ingestor::run::run(
            config,
            metrics,
            async {
                let _ = stop_rx.await;
            },
            Some(ready_tx),
        ));
        let metrics_addr = match ready_rx.await {
            Ok(addr) => addr,
            Err(_) => panic!("the service did not start: {:?}", task.await),
        };
        Service {
            stop: Some(stop),
            task,
            metrics_addr,
        }
    }

    /// Signals shutdown and expects a clean stop.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let r = tokio::time::timeout(TIMEOUT, &mut self.task)
            .await
            .expect("the service stops in time")
            .expect("the service task did not panic");
        r.expect("the service stops without error");
    }
}

fn open_db(db: &Path) -> Connection {
    let conn = Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

fn rows_of(conn: &Connection, entity_id: &str) -> i64 {
    conn.query_row(
        "SELECT count(*) FROM states_view WHERE entity_id = ?1",
        [entity_id],
        |r| r.get(0),
    )
    .unwrap()
}

fn has_state(conn: &Connection, entity_id: &str, state: &str) -> bool {
    conn.query_row(
        "SELECT count(*) FROM states_view WHERE entity_id = ?1 AND state = ?2",
        [entity_id, state],
        |r| r.get::<_, i64>(0),
    )
    .unwrap()
        > 0
}

fn stored_entities(conn: &Connection) -> BTreeSet<String> {
    let mut stmt = conn
        .prepare("SELECT DISTINCT entity_id FROM states_view")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn count_states(conn: &Connection) -> i64 {
    conn.query_row("SELECT count(*) FROM states", [], |r| r.get(0))
        .unwrap()
}

/// Sets `probe` to a new value every 100 ms until a row of it is in the database: from then on the
/// subscription is live and every later event reaches the ingestor.
async fn wait_until_live(sim: &Sim, conn: &Connection, probe: &str) {
    let mut n = 0u64;
    eventually(
        "the subscription to be live (a probe row)",
        TIMEOUT,
        async || {
            if n.is_multiple_of(4) {
                sim.set_state(probe, &format!("probe-{n}"), json!({}));
            }
            n += 1;
            if rows_of(conn, probe) > 0 {
                Ok(())
            } else {
                Err("no probe row yet".into())
            }
        },
    )
    .await;
}

/// A barrier: sets `entity` (which the filter keeps) to a unique state and waits for its row. HA
/// delivers events in order, and the source and writer keep that order, so once it is committed
/// every earlier event has been stored or filtered out.
async fn barrier(sim: &Sim, conn: &Connection, entity: &str, tag: &str) {
    let state = format!("barrier-{tag}");
    sim.set_state(entity, &state, json!({}));
    eventually(
        &format!("the barrier {entity} = {state}"),
        TIMEOUT,
        async || {
            if has_state(conn, entity, &state) {
                Ok(())
            } else {
                Err(format!("{} rows stored", count_states(conn)))
            }
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 1. Filters and attribute rules, in-process
// ---------------------------------------------------------------------------------------------

/// One filter case: a `[filter]` config, the entities HA keeps and those it drops. The expectations
/// are those of HA's own `generate_filter` (the same table as `filter.rs`'s unit test, which was
/// checked against HA); here they are checked end to end, from a simulated HA into SQLite.
struct FilterCase {
    name: &'static str,
    toml: &'static str,
    kept: &'static [&'static str],
    dropped: &'static [&'static str],
}

const FILTER_CASES: &[FilterCase] = &[
    FilterCase {
        name: "1 no filter",
        toml: "",
        kept: &["sensor.a", "light.b", "sun.sun"],
        dropped: &[],
    },
    FilterCase {
        name: "2 includes only",
        toml: r#"
            [filter.include]
            domains = ["light", "sensor"]
            entities = ["binary_sensor.working"]
            entity_globs = ["cover.*_window"]
        "#,
        kept: &[
            "light.test",
            "sensor.test",
            "binary_sensor.working",
            "cover.bedroom_window",
        ],
        dropped: &["binary_sensor.another", "cover.garage_door", "sun.sun"],
    },
    FilterCase {
        name: "3 excludes only",
        toml: r#"
            [filter.exclude]
            domains = ["light", "sensor"]
            entities = ["binary_sensor.working"]
            entity_globs = ["cover.*_window"]
        "#,
        kept: &["binary_sensor.another", "cover.garage_door", "sun.sun"],
        dropped: &[
            "light.test",
            "sensor.test",
            "binary_sensor.working",
            "cover.bedroom_window",
        ],
    },
    FilterCase {
        name: "4a domain includes, domain and entity excludes",
        toml: r#"
            [filter.include]
            domains = ["light", "sensor"]
            entities = ["binary_sensor.working"]
            [filter.exclude]
            domains = ["binary_sensor", "switch"]
            entities = ["light.ignoreme", "sensor.notworking"]
        "#,
        kept: &["sensor.test", "light.test", "binary_sensor.working"],
        dropped: &[
            "sensor.notworking",
            "light.ignoreme",
            "binary_sensor.another",
            "switch.x",
            "sun.sun",
        ],
    },
    FilterCase {
        name: "4b glob includes beat glob and domain excludes",
        toml: r#"
            [filter.include]
            domains = ["light"]
            entity_globs = ["*working", "switch.*"]
            [filter.exclude]
            domains = ["switch", "sensor"]
            entities = ["switch.ignoreme"]
            entity_globs = ["*notworking", "light.*_ignored"]
        "#,
        kept: &[
            "sensor.working",
            "sensor.notworking",
            "light.test",
            "light.notworking",
            "switch.on",
            "binary_sensor.not_working",
        ],
        dropped: &[
            "sensor.other",
            "light.x_ignored",
            "switch.ignoreme",
            "sun.sun",
        ],
    },
    FilterCase {
        name: "5 domain and glob excludes, entity includes",
        toml: r#"
            [filter.include]
            entities = ["switch.keep", "sensor.power_raw", "light.both", "switch.both"]
            [filter.exclude]
            domains = ["switch"]
            entities = ["sensor.bad", "light.both", "switch.both"]
            entity_globs = ["sensor.*_raw"]
        "#,
        kept: &[
            "switch.keep",
            "sensor.power_raw",
            "sensor.good",
            "switch.both",
            "light.x",
        ],
        dropped: &[
            "switch.other",
            "sensor.temp_raw",
            "sensor.bad",
            "light.both",
        ],
    },
    FilterCase {
        name: "6 entity lists only",
        toml: r#"
            [filter.include]
            entities = ["light.a"]
            [filter.exclude]
            entities = ["light.b"]
        "#,
        kept: &["light.a"],
        dropped: &["light.b", "light.c", "sensor.a"],
    },
];

/// Runs one case against its own simulator and database; returns the entities stored.
async fn run_filter_case(case: &FilterCase) -> BTreeSet<String> {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("filter.db");
    let config = sim_config(case.toml, "filter", &sim, &db);
    let unused = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let service = Service::start(config, unused).await;
    let conn = open_db(&db);
    // The first kept entity is both the probe and the barrier: the filter keeps it.
    let probe = case.kept[0];
    wait_until_live(&sim, &conn, probe).await;
    for (i, entity) in case.kept.iter().chain(case.dropped).enumerate() {
        sim.set_state(entity, &format!("s{i}"), json!({"i": i}));
    }
    barrier(&sim, &conn, probe, "end").await;
    let stored = stored_entities(&conn);
    service.stop().await;
    sim.shutdown().await;
    stored
}

/// HA's six include/exclude cases, table-driven, end to end: only the entities HA would record are
/// in SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_six_cases_end_to_end() {
    let runs = FILTER_CASES.iter().map(run_filter_case);
    let results = futures_util::future::join_all(runs).await;
    for (case, stored) in FILTER_CASES.iter().zip(results) {
        let want: BTreeSet<String> = case.kept.iter().map(|s| s.to_string()).collect();
        assert_eq!(stored, want, "case {}", case.name);
        for d in case.dropped {
            assert!(!stored.contains(*d), "case {}: {d} stored", case.name);
        }
    }
}

const FILTER_AND_ATTRIBUTES: &str = r#"
    [filter.include]
    domains = ["sensor", "light"]
    entities = ["switch.keep"]

    [filter.exclude]
    entities = ["sensor.secret"]
    entity_globs = ["light.*_hidden"]

    [attributes]
    exclude = ["entity_picture", "friendly_name"]

    # Replaces the (absent) global include list for every *_power sensor; cannot bring back
    # friendly_name, which is excluded globally.
    [[attributes.entity]]
    match = "sensor.*_power"
    include = ["unit_of_measurement", "device_class", "friendly_name"]

    # The exact id: its exclude adds to the global one; its include (none) leaves the glob's.
    [[attributes.entity]]
    match = "sensor.oven_power"
    exclude = ["device_class"]

    # An empty include list keeps no attribute.
    [[attributes.entity]]
    match = "light.kitchen"
    include = []
"#;

/// What a row must hold: `None` when the entity is filtered out, else its value and attributes.
type Expected = Option<(Option<f64>, Value)>;

/// Include/exclude filter and `[attributes]` rules together: exactly the allowed entities, each with
/// exactly the allowed attributes, state and numeric value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_and_attribute_rules_end_to_end() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("attrs.db");
    let config = sim_config(FILTER_AND_ATTRIBUTES, "attrs", &sim, &db);
    let service = Service::start(config, global_metrics()).await;
    let conn = open_db(&db);
    wait_until_live(&sim, &conn, "sensor.probe").await;

    let all = json!({
        "unit_of_measurement": "W",
        "device_class": "power",
        "friendly_name": "Some name",
        "entity_picture": "/local/p.png",
        "icon": "mdi:flash",
        "nested": {"a": [1, 2, {"b": null}]},
    });
    let nested = json!({"a": [1, 2, {"b": null}]});
    let cases: Vec<(&str, &str, Expected)> = vec![
        (
            "sensor.kitchen_power",
            "412.5",
            Some((
                Some(412.5),
                json!({"unit_of_measurement": "W", "device_class": "power"}),
            )),
        ),
        (
            "sensor.oven_power",
            "2000",
            Some((Some(2000.0), json!({"unit_of_measurement": "W"}))),
        ),
        (
            "sensor.temperature",
            "unavailable",
            Some((
                None,
                json!({"unit_of_measurement": "W", "device_class": "power", "icon": "mdi:flash",
                       "nested": nested}),
            )),
        ),
        ("sensor.secret", "1", None),
        ("light.kitchen", "on", Some((Some(1.0), json!({})))),
        (
            "light.hall",
            "off",
            Some((
                Some(0.0),
                json!({"unit_of_measurement": "W", "device_class": "power", "icon": "mdi:flash",
                       "nested": nested}),
            )),
        ),
        ("light.porch_hidden", "on", None),
        (
            "switch.keep",
            "on",
            Some((
                Some(1.0),
                json!({"unit_of_measurement": "W", "device_class": "power", "icon": "mdi:flash",
                       "nested": nested}),
            )),
        ),
        ("switch.other", "on", None),
        ("binary_sensor.door", "on", None),
        ("climate.hall", "heat", None),
    ];
    for (entity, state, _) in &cases {
        sim.set_state(entity, state, all.clone());
    }
    barrier(&sim, &conn, "sensor.probe", "end").await;

    let mut want: BTreeSet<String> = cases
        .iter()
        .filter(|c| c.2.is_some())
        .map(|c| c.0.to_string())
        .collect();
    want.insert("sensor.probe".into());
    assert_eq!(stored_entities(&conn), want);
    for (entity, state, expected) in &cases {
        let Some((value, attrs)) = expected else {
            continue;
        };
        let (s, v, a): (String, Option<f64>, String) = conn
            .query_row(
                "SELECT state, value, attributes FROM states_view WHERE entity_id = ?1",
                [entity],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap_or_else(|e| panic!("{entity}: {e}"));
        assert_eq!(&s, state, "{entity}: state");
        assert_eq!(&v, value, "{entity}: value");
        let a: Value = serde_json::from_str(&a).unwrap();
        assert_eq!(&a, attrs, "{entity}: attributes");
    }
    // The dropped entities were seen and counted as filtered, not silently lost.
    let filtered = r#"ha_ingestor_events_dropped_total{instance="attrs",reason="filtered"}"#;
    let m = parse_metrics(&global_metrics().render());
    assert_eq!(metric(&m, filtered), 5.0, "{filtered}");
    service.stop().await;
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Idempotency
// ---------------------------------------------------------------------------------------------

const RAW_EVENT: &str = r#"{"event_type":"state_changed","data":{"entity_id":"sensor.p","old_state":null,"new_state":{"entity_id":"sensor.p","state":"42","attributes":{"unit_of_measurement":"W"},"last_changed":"2026-11-22T11:05:59.395949+00:00","last_updated":"2026-11-22T11:05:59.395949+00:00","context":{"id":"01M","parent_id":null,"user_id":"c3"}}},"origin":"LOCAL","time_fired":"2026-11-22T11:05:59.395949+00:00","context":{"id":"01M","parent_id":null,"user_id":"c3"}}"#;

/// The same raw event converted twice and written twice (in one batch, then again) is one row.
#[test]
fn same_event_twice_is_one_row() {
    let instance: Arc<str> = Arc::from("home");
    let filter = EntityFilter::new(&Default::default()).unwrap();
    let rules = AttributeRules::new(&Default::default()).unwrap();
    let convert = || {
        ha_ingestor::source::convert(&instance, RAW_EVENT, &filter, &rules)
            .unwrap()
            .expect("kept")
    };
    let (a, b) = (convert(), convert());
    assert_eq!(a, b);
    let Record::State(row) = &a else {
        panic!("a state row: {a:?}")
    };
    assert_eq!(row.last_updated_us, 1_795_345_559_395_949);

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("idem.db");
    let mut store = SqliteStore::open(&db).unwrap();
    let first = store.write_batch(&[a.clone(), b]).unwrap();
    assert_eq!((first.inserted, first.duplicates), (1, 1));
    let again = store.write_batch(&[a]).unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 1));
    drop(store);
    let conn = open_db(&db);
    assert_eq!(count_states(&conn), 1);
    let (state, attrs, user): (String, String, String) = conn
        .query_row(
            "SELECT state, attributes, context_user_id FROM states_view WHERE entity_id = 'sensor.p'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (state.as_str(), attrs.as_str(), user.as_str()),
        ("42", r#"{"unit_of_measurement":"W"}"#, "c3")
    );
}

/// HA delivers the same `state_changed` event a second time (re-sent on the live subscription):
/// still one row, and the re-delivery is counted as a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_event_through_the_pipeline_is_one_row() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("redeliver.db");
    let config = sim_config("", "redeliver", &sim, &db);
    let service = Service::start(config, global_metrics()).await;
    let conn = open_db(&db);
    wait_until_live(&sim, &conn, "sensor.probe").await;

    sim.set_state("sensor.dup", "7.5", json!({"unit_of_measurement": "W"}));
    barrier(&sim, &conn, "sensor.probe", "first").await;
    assert_eq!(rows_of(&conn, "sensor.dup"), 1);

    // Rebuild the exact event HA sent, from the state it holds now, and push it again on the open
    // connection. The subscription's id is the client's business: send it under the first ids;
    // the client ignores events for ids that are not a subscription.
    let state = sim.get_state("sensor.dup").unwrap();
    let event = json!({
        "event_type": "state_changed",
        "data": {"entity_id": "sensor.dup", "old_state": null, "new_state": state},
        "origin": "LOCAL",
        "time_fired": state["last_updated"],
        "context": state["context"],
    });
    for id in 1..=32 {
        sim.send_raw(&json!({"id": id, "type": "event", "event": event}).to_string());
    }
    barrier(&sim, &conn, "sensor.probe", "second").await;
    assert_eq!(rows_of(&conn, "sensor.dup"), 1, "a re-delivery adds no row");
    let key = r#"ha_ingestor_events_dropped_total{instance="redeliver",reason="duplicate"}"#;
    let http = http_client();
    eventually("the duplicate to be counted", TIMEOUT, async || {
        let v = metric(&scrape(&http, service.metrics_addr).await?, key);
        if v == 1.0 {
            Ok(())
        } else {
            Err(format!("{key} = {v}"))
        }
    })
    .await;
    service.stop().await;
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The binary as a child process
// ---------------------------------------------------------------------------------------------

/// A running `ha-ingestor` child. Killed on drop, so a failing test leaves no process behind.
struct Ingestor {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Environment variables the binary reads; cleared so the caller's environment cannot leak in.
const INGESTOR_ENV: &[&str] = &[
    "HASS_SERVER",
    "HASS_TOKEN",
    "HASS_TOKEN_FILE",
    "HA_INGESTOR_CONFIG",
    "HA_INGESTOR_CONFIG_IF_EXISTS",
    "HA_INGESTOR_DB",
    "HA_INGESTOR_METRICS_ADDR",
    "HA_INGESTOR_LOG_FORMAT",
    "NOTIFY_SOCKET",
    "RUST_LOG",
];

impl Ingestor {
    fn spawn(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Ingestor {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ha-ingestor"));
        cmd.args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for var in INGESTOR_ENV {
            cmd.env_remove(var);
        }
        cmd.env("RUST_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn ha-ingestor");
        let mut pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Ingestor {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Panics (with its stderr) if the process has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "ha-ingestor exited early with {status}; stderr:\n{}",
                self.stderr()
            );
        }
    }

    /// Waits for the exit; returns the status and the whole stderr.
    async fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, String) {
        let child = &mut self.child;
        let status = eventually("ha-ingestor to exit", limit, async || {
            child
                .try_wait()
                .unwrap()
                .ok_or_else(|| "still running".to_string())
        })
        .await;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (status, self.stderr())
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {signal} failed");
    }
}

impl Drop for Ingestor {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A free local port (bound, then released for the child).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `ha-ingestor run` against the simulator with the admin token from `HASS_TOKEN`.
fn spawn_run(sim: &Sim, dir: &Path, db: &Path, addr: SocketAddr, extra: &[&str]) -> Ingestor {
    let (db, addr) = (db.display().to_string(), addr.to_string());
    let mut args = vec!["run", "--db", &db, "--metrics-addr", &addr];
    args.extend_from_slice(extra);
    Ingestor::spawn(
        &args,
        &[
            ("HASS_SERVER", &sim.url()),
            ("HASS_TOKEN", &sim.config().admin_token),
        ],
        dir,
    )
}

/// Waits for `/health` to answer 200 and returns its JSON.
async fn wait_healthy(ingestor: &mut Ingestor, http: &reqwest::Client, addr: SocketAddr) -> Value {
    eventually("/health 200", TIMEOUT, async || {
        ingestor.assert_running();
        match health(http, addr).await? {
            (200, body) => Ok(body),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await
}

/// Sets a probe state every 100 ms until the child's `/metrics` counts a received event.
async fn wait_until_receiving(sim: &Sim, http: &reqwest::Client, addr: SocketAddr) {
    let mut n = 0u64;
    eventually("the first received event", TIMEOUT, async || {
        if n.is_multiple_of(4) {
            sim.set_state("sensor.probe", &format!("probe-{n}"), json!({}));
        }
        n += 1;
        let m = scrape(http, addr).await?;
        match metric(&m, RECEIVED) {
            v if v >= 1.0 => Ok(()),
            v => Err(format!("received {v}")),
        }
    })
    .await;
}

const RECEIVED: &str = r#"ha_ingestor_events_received_total{instance="default"}"#;
const WRITTEN: &str = r#"ha_ingestor_events_written_total{instance="default",sink="sqlite"}"#;
const DUPLICATES: &str =
    r#"ha_ingestor_events_dropped_total{instance="default",reason="duplicate"}"#;
const CONNECTED: &str = r#"ha_ingestor_connected{instance="default"}"#;
const LAG_COUNT: &str = "ha_ingestor_lag_seconds_count";

/// Waits until the child has received every event the simulator sent (the simulator is idle), and
/// returns that number.
async fn wait_all_received(
    sim: &Sim,
    http: &reqwest::Client,
    addr: SocketAddr,
    at_least: u64,
) -> u64 {
    let mut last: Option<u64> = None;
    eventually("every sent event to be received", TIMEOUT, async || {
        let sent = sim.stats().events_sent;
        let received = metric(&scrape(http, addr).await?, RECEIVED) as u64;
        // Twice the same equal pair in a row: nothing was left queued in the simulator.
        let settled = sent == received && sent >= at_least && last == Some(sent);
        last = (sent == received).then_some(sent);
        if settled {
            Ok(received)
        } else {
            Err(format!(
                "sent {sent}, received {received}, want at least {at_least}"
            ))
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// 3 + 5. Graceful shutdown with nothing lost, and the metrics values
// ---------------------------------------------------------------------------------------------

/// Batches of 1000 and a flush interval of an hour: full batches commit at once, the remainder
/// stays in the writer until shutdown, so only the SIGTERM flush can bring it to the database.
const SHUTDOWN_CONFIG: &str =
    "[store]\nbatch_size = 1000\nflush_interval_ms = 3600000\nmin_commit_interval_ms = 3600000\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_everything_and_metrics_add_up() {
    const N: u64 = 3000;
    const TAIL: u64 = 25;
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shutdown.db");
    let cfg = dir.path().join("ingestor.toml");
    std::fs::write(&cfg, SHUTDOWN_CONFIG).unwrap();
    let addr = free_addr();
    let mut ingestor = spawn_run(
        &sim,
        dir.path(),
        &db,
        addr,
        &["--config", cfg.to_str().unwrap()],
    );
    let http = http_client();
    let body = wait_healthy(&mut ingestor, &http, addr).await;
    assert_eq!(body["ready"], json!(true), "{body}");
    assert_eq!(
        body["instances"]["default"]["connected"],
        json!(true),
        "{body}"
    );
    wait_until_receiving(&sim, &http, addr).await;

    let generator = sim.start_generator(None, Some(N));
    generator.wait().await;
    assert_eq!(generator.emitted(), N);
    for i in 0..TAIL {
        sim.set_state("sensor.shutdown_tail", &i.to_string(), json!({}));
    }
    let received = wait_all_received(&sim, &http, addr, N + TAIL + 1).await;

    // Full batches are committed; the rest waits in the writer.
    let committed = received - received % 1000;
    let conn = open_db(&db);
    let m = eventually("the full batches and their metrics", TIMEOUT, async || {
        let rows = count_states(&conn) as u64;
        let m = scrape(&http, addr).await?;
        let (written, lag) = (metric(&m, WRITTEN) as u64, metric(&m, LAG_COUNT) as u64);
        if rows == committed && written == committed && lag == committed {
            Ok(m)
        } else {
            Err(format!(
                "rows {rows}, written {written}, lag count {lag}, want {committed}"
            ))
        }
    })
    .await;
    eprintln!(
        "received {received}, committed before SIGTERM {committed}, pending {}",
        received - committed
    );
    assert!(
        received % 1000 > 0,
        "precondition: some rows wait for the shutdown flush"
    );
    // 5. The metrics values.
    assert_eq!(metric(&m, RECEIVED) as u64, received);
    assert_eq!(metric(&m, WRITTEN) as u64, count_states(&conn) as u64);
    assert_eq!(metric(&m, LAG_COUNT) as u64, count_states(&conn) as u64);
    assert_eq!(metric(&m, DUPLICATES), 0.0);
    assert_eq!(m.get(CONNECTED), Some(&1.0), "{CONNECTED}");
    let (status, body) = health(&http, addr).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], json!(true), "{body}");
    assert_eq!(
        body["commits"]["rows_committed"],
        json!(committed),
        "{body}"
    );

    // 3. SIGTERM: flush, exit 0, nothing lost.
    ingestor.signal("-TERM");
    let (status, stderr) = ingestor.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "exit status; stderr:\n{stderr}");
    assert_eq!(
        count_states(&conn) as u64,
        received,
        "every received event is stored"
    );
    assert!(has_state(
        &conn,
        "sensor.shutdown_tail",
        &(TAIL - 1).to_string()
    ));
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 4. kill -9
// ---------------------------------------------------------------------------------------------

/// `(entity_id, last_updated_us)` of every committed row.
fn committed_rows(conn: &Connection) -> rusqlite::Result<BTreeSet<(String, i64)>> {
    let mut stmt = conn.prepare(
        "SELECT e.entity_id, s.last_updated_us FROM states s JOIN entities e ON e.id = s.entity",
    )?;
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_committed() {
    const SNAPSHOT_AT: usize = 2000;
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kill.db");
    // Small batches: many commits a second, so the kill lands between or inside one.
    let cfg = dir.path().join("ingestor.toml");
    std::fs::write(&cfg, "[store]\nbatch_size = 100\nflush_interval_ms = 20\n").unwrap();
    let addr = free_addr();
    let mut ingestor = spawn_run(
        &sim,
        dir.path(),
        &db,
        addr,
        &["--config", cfg.to_str().unwrap()],
    );
    let http = http_client();
    wait_healthy(&mut ingestor, &http, addr).await;
    wait_until_receiving(&sim, &http, addr).await;

    // Unpaced and endless: the ingestor is busy writing when the kill comes.
    let generator = sim.start_generator(None, None);
    let reader = Connection::open_with_flags(
        &db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap();
    reader.busy_timeout(Duration::from_secs(5)).unwrap();
    let snapshot = eventually("committed rows to snapshot", TIMEOUT, async || {
        ingestor.assert_running();
        let rows = committed_rows(&reader).map_err(|e| e.to_string())?;
        if rows.len() >= SNAPSHOT_AT {
            Ok(rows)
        } else {
            Err(format!("{} rows committed", rows.len()))
        }
    })
    .await;
    // SIGKILL, straight after the snapshot, while the generator still runs.
    ingestor.child.kill().unwrap();
    let (status, stderr) = ingestor.wait_exit(Duration::from_secs(30)).await;
    generator.stop();
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "killed; stderr:\n{stderr}");
    }
    let _ = (status, stderr);
    drop(reader);

    // Reopen (this recovers the WAL) and check.
    let conn = open_db(&db);
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let after = committed_rows(&conn).unwrap();
    let lost: Vec<_> = snapshot.difference(&after).take(5).collect();
    assert!(
        lost.is_empty(),
        "{} of {} committed rows lost after kill -9, e.g. {lost:?}",
        snapshot.difference(&after).count(),
        snapshot.len()
    );
    assert!(after.len() >= snapshot.len());
    eprintln!(
        "snapshot {} rows, {} after kill -9 and reopen",
        snapshot.len(),
        after.len()
    );
    drop(conn);
    // The ingestor can keep writing to it.
    let mut store = SqliteStore::open(&db).unwrap();
    let instance: Arc<str> = Arc::from("default");
    let record = ha_ingestor::source::convert(
        &instance,
        RAW_EVENT,
        &EntityFilter::new(&Default::default()).unwrap(),
        &AttributeRules::new(&Default::default()).unwrap(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(store.write_batch(&[record]).unwrap().inserted, 1);
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Exit codes
// ---------------------------------------------------------------------------------------------

/// A wrong token: exit 3, the message names the problem, and the token never appears, at any log
/// level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_exits_3_without_echoing_it() {
    const TOKEN: &str = "wrong-token-7d1f0c9a2b";
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bad.db");
    let mut ingestor = Ingestor::spawn(
        &[
            "run",
            "--db",
            db.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &[
            ("HASS_SERVER", &sim.url()),
            ("HASS_TOKEN", TOKEN),
            ("RUST_LOG", "trace"),
        ],
        dir.path(),
    );
    let (status, stderr) = ingestor.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(3), "stderr:\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("ha-ingestor: ") && last.contains("default") && {
            let l = last.to_lowercase();
            l.contains("auth") || l.contains("token")
        },
        "the last line names the instance and the problem: {last}"
    );
    assert!(!stderr.contains(TOKEN), "the token leaked:\n{stderr}");
    assert!(sim.stats().auth_invalid >= 1);
    sim.shutdown().await;
}

/// A config file with an unknown key: exit 2, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_config_key_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[store]\nbatch_sise = 100\n").unwrap();
    let mut ingestor = Ingestor::spawn(
        &["run", "--config", cfg.to_str().unwrap()],
        &[("HASS_SERVER", "http://127.0.0.1:9"), ("HASS_TOKEN", "t")],
        dir.path(),
    );
    let (status, stderr) = ingestor.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("batch_sise"), "names the key:\n{stderr}");
    assert!(stderr.contains("bad.toml"), "names the file:\n{stderr}");
}

/// `--token` is refused (exit 2) with the reason: flags show in `ps`. The value is not echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_flag_is_refused() {
    const TOKEN: &str = "cli-token-3e8a51";
    let dir = tempfile::tempdir().unwrap();
    let mut ingestor = Ingestor::spawn(
        &["run", "--server", "http://127.0.0.1:9", "--token", TOKEN],
        &[],
        dir.path(),
    );
    let (status, stderr) = ingestor.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("`ps`"), "says why:\n{stderr}");
    assert!(stderr.contains("HASS_TOKEN"), "says what to do:\n{stderr}");
    assert!(!stderr.contains(TOKEN), "echoes the token:\n{stderr}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "no database was created"
    );
}
