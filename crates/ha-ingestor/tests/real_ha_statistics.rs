//! HA's statistics mirror against a real HA and real sinks: statistics an admin imports with
//! `recorder/import_statistics` reach SQLite, PostgreSQL and InfluxDB (clean schema) with the
//! values `recorder/statistics_during_period` returns, row by row, with the ingestor running as a
//! non-admin user. Then the admin corrects the newest hour; after HA's next
//! `recorder_5min_statistics_generated` (every 5 minutes; the test fires nothing itself) or at
//! start-up, the correction reaches every store.
//!
//! Run against HA 2024.3.3 (the harness: `has_mean`, no `mean_type`/`unit_class` in the import)
//! and 2026.2.3 (the current release). On the current release also the live path: a sensor with a
//! `state_class`, HA's own 5-minute compilation, and its `recorder_5min_statistics_generated`
//! (up to 5 minutes of waiting: HA compiles on its clock).
#![cfg(all(feature = "real-ha", feature = "real-sinks"))]

mod pg_support;
mod sinks;

use std::path::Path;
use std::time::Duration;

use ha_client::auth::StaticToken;
use ha_client::ws::{StatisticsPeriod, StatisticsQuery, WsClient};
use ha_ingestor::config::{Config, Overrides};
use ha_testenv::HaTarget;
use serde_json::{Value, json};
use sinks::{env, influxql, reqwest_client, unique};

const WAIT: Duration = Duration::from_secs(60);
const HOUR_US: i64 = 3_600_000_000;

/// statistic_id, start (µs), mean, min, max, state, sum: what a user compares.
type Row = (
    String,
    i64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_statistics_reach_every_store_on_the_harness_ha() {
    mirror(HaTarget::harness()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_statistics_reach_every_store_on_the_current_ha() {
    let ha = HaTarget::current();
    assert!(ha.version.starts_with("2026."), "HA {}", ha.version);
    mirror(ha).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_minute_rows_follow_ha_compilation_on_the_current_ha() {
    let ha = HaTarget::current();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &ha.user_token).unwrap();
    let config = dir.path().join("live.toml");
    std::fs::write(
        &config,
        format!(
            "db = \"{}\"\n[[instance]]\nname = \"real\"\nurl = \"{}\"\ntoken_file = \"{}\"\n\
             [filter.include]\nentities = [\"sensor.none_wanted\"]\n",
            db.display(),
            ha.url,
            token_file.display()
        ),
    )
    .unwrap();
    let entity = format!("sensor.hai{}_power", unique("l").replace('_', ""));
    let ids = vec![entity.clone()];
    let service = start(&config).await;
    // A measurement sensor, set through the REST API: HA compiles its statistics itself.
    let http = reqwest_client();
    for value in ["100", "140", "120"] {
        let r = http
            .post(format!("{}/api/states/{entity}", ha.url))
            .bearer_auth(&ha.admin_token)
            .json(
                &json!({"state": value, "attributes": {"state_class": "measurement",
                          "unit_of_measurement": "W", "device_class": "power"}}),
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let admin = WsClient::builder(ha.url.clone())
        .token_source(StaticToken::new(ha.admin_token.clone()))
        .connect()
        .await
        .unwrap();
    let five_minute = async |ids: &[String]| -> Vec<Row> {
        let q = StatisticsQuery::new(
            "2000-01-01T00:00:00Z",
            ids.to_vec(),
            StatisticsPeriod::FiveMinute,
        );
        let mut rows: Vec<Row> = admin
            .statistics_during_period(&q)
            .await
            .unwrap()
            .into_iter()
            .flat_map(|(id, list)| {
                list.into_iter()
                    .map(move |r| (id.clone(), r.start, r.mean, r.min, r.max, r.state, r.sum))
            })
            .collect();
        rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
        rows
    };
    // HA compiles every 5 minutes; the first compilation after the states were set gives a row.
    let mut want = Vec::new();
    tokio::time::timeout(Duration::from_secs(420), async {
        while want.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            want = five_minute(&ids).await;
        }
    })
    .await
    .expect("HA compiled a 5-minute row within 7 minutes");
    // The ingestor started before that: HA's event made it read the row (or, in the 30 s after
    // the top of an hour, its hourly read).
    let stored = |db: &Path| -> Vec<Row> {
        if !db.exists() {
            return Vec::new();
        }
        let conn = rusqlite::Connection::open(db).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT statistic_id, start_us, mean, min, max, state, sum FROM statistics s
                 JOIN statistics_meta m ON m.id = s.meta WHERE s.period = '5minute' AND statistic_id = ?1",
            )
            .unwrap();
        stmt.query_map([&entity], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    // Compared with HA's answer of the moment: HA may compile the next row meanwhile.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (got, now) = (stored(&db), five_minute(&ids).await);
        if got == now {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "SQLite's 5-minute rows != HA's after {WAIT:?}:\n SQLite: {got:?}\n HA: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop(service).await;
    admin.close();
}

fn iso(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us).unwrap().to_string()
}

/// `recorder/import_statistics` metadata in the shape this HA version takes (HA 2024.3 refuses
/// `mean_type` and `unit_class`; 2026.2 takes both).
fn metadata(ha: &HaTarget, id: &str, sum: bool) -> Value {
    let (source, unit, class) = match sum {
        true => (id.split(':').next().unwrap(), "kWh", "energy"),
        false => (id.split(':').next().unwrap(), "W", "power"),
    };
    let mut m = json!({"has_mean": !sum, "has_sum": sum, "name": format!("Test {id}"),
                       "source": source, "statistic_id": id, "unit_of_measurement": unit});
    if !ha.version.starts_with("2024.") {
        m["mean_type"] = json!(u8::from(!sum));
        m["unit_class"] = json!(class);
    }
    m
}

async fn import(ws: &WsClient, metadata: Value, stats: Value) {
    ws.command::<Value>(
        json!({"type": "recorder/import_statistics", "metadata": metadata, "stats": stats}),
    )
    .await
    .unwrap_or_else(|e| panic!("import_statistics: {e}"));
}

/// HA's hourly rows of `ids`, sorted (what the stores must hold).
async fn in_ha(ws: &WsClient, ids: &[String]) -> Vec<Row> {
    let q = StatisticsQuery::new("2000-01-01T00:00:00Z", ids.to_vec(), StatisticsPeriod::Hour);
    let mut rows: Vec<Row> = ws
        .statistics_during_period(&q)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|(id, list)| {
            list.into_iter()
                .map(move |r| (id.clone(), r.start, r.mean, r.min, r.max, r.state, r.sum))
        })
        .collect();
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows
}

fn sqlite_rows(db: &Path, ids: &[String]) -> Vec<Row> {
    if !db.exists() {
        return Vec::new();
    }
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT statistic_id, start_us, mean, min, max, state, sum FROM statistics s
             JOIN statistics_meta m ON m.id = s.meta WHERE s.period = 'hour'",
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
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .filter(|r: &Row| ids.contains(&r.0))
        .collect();
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows
}

async fn pg_rows(client: &tokio_postgres::Client, ids: &[String]) -> Vec<Row> {
    let rows = client
        .query(
            "SELECT statistic_id, (extract(epoch FROM time) * 1000000)::bigint, mean, min, max, state, sum
             FROM ha_statistics WHERE period = 'hour' AND statistic_id = ANY($1)",
            &[&ids],
        )
        .await
        .unwrap_or_default();
    let mut rows: Vec<Row> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows
}

async fn influx_rows(base: &str, db: &str, ids: &[String]) -> Vec<Row> {
    // Quoted: `mean`, `min`, `max` and `sum` are also InfluxQL's functions.
    let q = r#"SELECT "mean", "min", "max", "state", "sum" FROM "statistics" WHERE "period" = 'hour' GROUP BY "statistic_id""#;
    let v: Value = reqwest_client()
        .post(format!("{base}/query"))
        .form(&[("db", db), ("q", q), ("epoch", "u")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut rows = Vec::new();
    for series in v["results"][0]["series"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let id = series["tags"]["statistic_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !ids.contains(&id) {
            continue;
        }
        for p in series["values"].as_array().cloned().unwrap_or_default() {
            rows.push((
                id.clone(),
                p[0].as_i64().unwrap(),
                p[1].as_f64(),
                p[2].as_f64(),
                p[3].as_f64(),
                p[4].as_f64(),
                p[5].as_f64(),
            ));
        }
    }
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows
}

/// The rows VictoriaMetrics holds (clean schema through its InfluxDB API: one series per field,
/// `statistics_<field>`), sorted.
async fn vm_rows(base: &str, ids: &[String]) -> Vec<Row> {
    let client = reqwest_client();
    let _ = client
        .get(format!("{base}/internal/force_flush"))
        .send()
        .await;
    let export = client
        .post(format!("{base}/api/v1/export"))
        .form(&[(
            "match[]",
            format!(
                "{{__name__=~\"statistics_(mean|min|max|state|sum)\",period=\"hour\",statistic_id=~\"{}\"}}",
                ids.join("|")
            ),
        )])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let fields = ["mean", "min", "max", "state", "sum"];
    let mut points: std::collections::BTreeMap<(String, i64), [Option<f64>; 5]> =
        Default::default();
    for line in export.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let name = v["metric"]["__name__"].as_str().unwrap_or_default();
        let Some(field) = fields
            .iter()
            .position(|f| name == format!("statistics_{f}"))
        else {
            continue;
        };
        let id = v["metric"]["statistic_id"].as_str().unwrap_or_default();
        let values = v["values"].as_array().cloned().unwrap_or_default();
        let times = v["timestamps"].as_array().cloned().unwrap_or_default();
        for (value, ms) in values.iter().zip(&times) {
            let key = (id.to_string(), ms.as_i64().unwrap() * 1000);
            points.entry(key).or_default()[field] = value.as_f64();
        }
    }
    points
        .into_iter()
        .map(|((id, t), f)| (id, t, f[0], f[1], f[2], f[3], f[4]))
        .collect()
}

/// Polls `got` until it equals `want`, failing with both after [`WAIT`].
async fn until_equal<F: AsyncFnMut() -> Vec<Row>>(what: &str, want: &[Row], mut got: F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = got().await;
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} != HA after {WAIT:?}:\n {what}: {now:?}\n HA: {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Service {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<(), ha_ingestor::run::RunError>>,
}

async fn start(config: &Path) -> Service {
    let config = Config::load(
        Some(config),
        Overrides {
            metrics_addr: Some("127.0.0.1:0".parse().unwrap()),
            ..Overrides::default()
        },
    )
    .unwrap();
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

async fn mirror(ha: HaTarget) {
    let influx = env("HA_INGESTOR_INFLUX_URL");
    let vm = env("HA_INGESTOR_VM_URL");
    let pg = pg_support::fresh_db("stats").await;
    let dir = tempfile::tempdir().unwrap();
    let influx_db = unique("stats");
    let created = influxql(&influx, "", &format!("CREATE DATABASE \"{influx_db}\"")).await;
    assert!(created["results"][0]["error"].is_null(), "{created}");
    let db = dir.path().join("stats.db");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &ha.user_token).unwrap();
    let config = dir.path().join("stats.toml");
    std::fs::write(
        &config,
        format!(
            r#"
db = "{db}"
[[instance]]
name = "real"
url = "{url}"
token_file = "{token}"
[filter.include]
entities = ["sensor.none_wanted"]
[store]
flush_interval_ms = 100
[[sink]]
name = "influx"
[sink.influxdb]
url = "{influx}"
database = "{influx_db}"
schema = "clean"
[[sink]]
name = "pg"
[sink.postgres]
dsn = "{dsn}"
[[sink]]
name = "vm"
[sink.influxdb]
url = "{vm}"
api = "v2"
org = "home"
bucket = "{influx_db}"
schema = "clean"
"#,
            db = db.display(),
            url = ha.url,
            token = token_file.display(),
            dsn = pg.dsn,
        ),
    )
    .unwrap();

    // Unique external statistics (lowercase: HA's statistic ids are slugs).
    let tag = unique("s").replace('_', "");
    let energy = format!("hai{tag}:energy");
    let power = format!("hai{tag}:power");
    let ids = vec![energy.clone(), power.clone()];
    let admin = WsClient::builder(ha.url.clone())
        .token_source(StaticToken::new(ha.admin_token.clone()))
        .connect()
        .await
        .unwrap();
    let hour = jiff::Timestamp::now().as_microsecond().div_euclid(HOUR_US) * HOUR_US;
    let energy_rows = |values: &[(i64, f64)]| {
        Value::Array(
            values
                .iter()
                .map(|(h, sum)| json!({"start": iso(hour - h * HOUR_US), "state": 50.0 + sum, "sum": sum}))
                .collect(),
        )
    };
    import(
        &admin,
        metadata(&ha, &energy, true),
        energy_rows(&[(4, 0.0), (3, 1.25), (2, 2.5), (1, 4.0)]),
    )
    .await;
    import(
        &admin,
        metadata(&ha, &power, false),
        json!([{"start": iso(hour - 2 * HOUR_US), "mean": 100.5, "min": 90, "max": 110},
               {"start": iso(hour - HOUR_US), "mean": 120.25, "min": 80.5, "max": 130}]),
    )
    .await;
    // HA imports in its recorder thread: wait until it answers with every row.
    let mut want = Vec::new();
    tokio::time::timeout(WAIT, async {
        while want.len() < 6 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            want = in_ha(&admin, &ids).await;
        }
    })
    .await
    .expect("HA imported the statistics");

    let service = start(&config).await;
    let pg_client = pg.client().await;
    until_equal("SQLite", &want, async || sqlite_rows(&db, &ids)).await;
    until_equal("PostgreSQL", &want, async || {
        pg_rows(&pg_client, &ids).await
    })
    .await;
    until_equal("InfluxDB", &want, async || {
        influx_rows(&influx, &influx_db, &ids).await
    })
    .await;
    // VictoriaMetrics takes the same lines (one series per field). Checked before the correction
    // only: it keeps every sample it is sent and replaces none.
    until_equal("VictoriaMetrics", &want, async || vm_rows(&vm, &ids).await).await;
    stop(service).await;

    // The admin corrects the newest hour while the ingestor is down; the start-up read takes it.
    import(
        &admin,
        metadata(&ha, &energy, true),
        energy_rows(&[(1, 4.75)]),
    )
    .await;
    let mut corrected = Vec::new();
    tokio::time::timeout(WAIT, async {
        while !corrected.iter().any(|r: &Row| r.6 == Some(4.75)) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            corrected = in_ha(&admin, &ids).await;
        }
    })
    .await
    .expect("HA took the correction");
    let service = start(&config).await;
    until_equal("SQLite", &corrected, async || sqlite_rows(&db, &ids)).await;
    until_equal("PostgreSQL", &corrected, async || {
        pg_rows(&pg_client, &ids).await
    })
    .await;
    until_equal("InfluxDB", &corrected, async || {
        influx_rows(&influx, &influx_db, &ids).await
    })
    .await;
    stop(service).await;
    admin.close();
    pg.drop_db().await;
}
