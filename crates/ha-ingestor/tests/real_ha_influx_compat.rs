//! HA-compatible mode against HA itself: the real HA 2024.3 runs its own `influxdb` integration
//! (default options, writing entities `*.native_*` to database `ha_native`; see
//! `HA_INFLUX_URL` in scripts/real-ha.sh), and the ingestor's InfluxDB sink writes the same state
//! changes to another database. Every point must be identical: measurement, tags, fields, values,
//! timestamp.
#![cfg(all(feature = "real-ha", feature = "real-sinks"))]

mod sinks;

use std::collections::BTreeSet;
use std::time::Duration;

use ha_client::Secret;
use ha_ingestor::config::{Config, Overrides};
use ha_testenv::RealHa;
use serde_json::{Value, json};
use sinks::{env, influxql, reqwest_client, unique};

/// Every point of `db` since `since_ns`, as `measurement time column=value ...` strings (tags and
/// fields alike, nulls left out), so two databases compare as sets.
async fn points(base: &str, db: &str, since_ns: i64) -> BTreeSet<String> {
    let v: Value = reqwest_client()
        .post(format!("{base}/query"))
        .form(&[
            ("db", db),
            ("q", &format!("SELECT * FROM /.*/ WHERE time >= {since_ns}")),
            ("epoch", "ns"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut out = BTreeSet::new();
    for series in v["results"][0]["series"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let name = series["name"].as_str().unwrap().to_string();
        let columns: Vec<String> = series["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        for row in series["values"].as_array().unwrap() {
            let row = row.as_array().unwrap();
            let mut text = format!("{name} {}", row[0]);
            for (c, v) in columns.iter().zip(row).skip(1) {
                if !v.is_null() {
                    text.push_str(&format!(" {c}={v}"));
                }
            }
            out.insert(text);
        }
    }
    out
}

/// `measurement field type` for every field of `db`: the JSON of a query shows 5 for both 5.0 and
/// 5i, so the types are compared on their own.
async fn field_types(base: &str, db: &str) -> BTreeSet<String> {
    let v = influxql(base, db, "SHOW FIELD KEYS").await;
    let mut out = BTreeSet::new();
    for series in v["results"][0]["series"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        for row in series["values"].as_array().unwrap() {
            out.insert(format!("{} {} {}", series["name"], row[0], row[1]));
        }
    }
    out
}

fn states() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "sensor.native_temp",
            "21.5",
            json!({"state_class": "measurement", "unit_of_measurement": "°C", "device_class": "temperature", "friendly_name": "Living Room Temperature"}),
        ),
        (
            "light.native_kitchen",
            "on",
            json!({"brightness": 255, "color_mode": "brightness", "supported_color_modes": ["brightness"], "rgb_color": [255, 200, 100], "friendly_name": "Kitchen", "supported_features": 40}),
        ),
        (
            "climate.native_hall",
            "heat",
            json!({"current_temperature": 20.5, "temperature": 21, "hvac_modes": ["off", "heat"], "friendly_name": "Hall"}),
        ),
        (
            "binary_sensor.native_door",
            "off",
            json!({"device_class": "door", "friendly_name": "Front door"}),
        ),
        (
            "media_player.native_tv",
            "playing",
            json!({"media_title": "Film \"X\", part 2", "volume_level": 0.35, "is_volume_muted": false, "source_list": ["HDMI 1", "TV"], "extra": {"a": 1, "b": [true, null]}, "friendly_name": "TV"}),
        ),
        (
            "sensor.native_distance",
            "12 km",
            json!({"eta": "5 min", "route": "A10, exit 3", "friendly_name": "Distance"}),
        ),
        (
            "sensor.native_collide",
            "text",
            json!({"value": 99, "state": "x", "state_str": 1}),
        ),
        (
            // Fields collide by name (`zone` makes `zone_str`), so the result depends on the
            // attributes' order, which must stay HA's, live and from history.
            "sensor.native_order",
            "5",
            json!({"zone_str": 5, "zone": "north", "friendly_name": "Order"}),
        ),
        // Two entities of one measurement (unit `zones`) give field `zone_str` different types:
        // InfluxDB keeps the type of the first point written and refuses the other, so which is
        // refused depends on the order of writing. HA writes in time order: b's string first.
        (
            "sensor.native_zone_b",
            "1",
            json!({"unit_of_measurement": "zones", "zone": "north"}),
        ),
        (
            "sensor.native_zone_a",
            "2",
            json!({"unit_of_measurement": "zones", "zone_str": 5}),
        ),
        (
            "sensor.native_nan",
            "nan",
            json!({"unit_of_measurement": "W"}),
        ),
        (
            "sensor.native_odd",
            "7",
            json!({"x": "inf", "y": "1e400", "z": null, "tiny": 1e-9, "big": 1e20, "neg": -0.0, "unit_of_measurement": "kWh"}),
        ),
        (
            "sensor.native_unknown",
            "unknown",
            json!({"unit_of_measurement": "W"}),
        ),
        (
            "sensor.native_unicode",
            "ok",
            json!({"friendly_name": "Température ✓", "note": "tab\there", "name with space": "v=1,2", "back\\slash": "a\\b"}),
        ),
        (
            "sensor.native_battery",
            "42",
            json!({"unit_of_measurement": "%", "battery": 100, "device_class": "battery"}),
        ),
        (
            "sensor.native_date",
            "2024-01-01",
            json!({"last_reset": "2024-01-01T00:00:00+00:00", "friendly_name": "PM2.5 date"}),
        ),
        (
            "lock.native_front",
            "locked",
            json!({"friendly_name": "Front lock"}),
        ),
        (
            "person.native_anna",
            "home",
            json!({"latitude": 52.37, "longitude": 4.89, "gps_accuracy": 12, "source": "device_tracker.phone"}),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_compatible_points_equal_the_ones_ha_writes_itself() {
    // The sink's own log lines (warnings on failed writes) show in the test output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("ha_ingestor=info")
        .with_test_writer()
        .try_init();
    let ha = RealHa::from_env();
    let influx = env("HA_INGESTOR_INFLUX_URL");
    let ours = unique("ours");
    let created = influxql(&influx, "", &format!("CREATE DATABASE \"{ours}\"")).await;
    assert!(created["results"][0]["error"].is_null(), "{created}");
    let dir = tempfile::tempdir().unwrap();
    let config = ingestor_config(
        &ha,
        &dir.path().join("compat.db"),
        &format!(
            r#"
[[sink]]
name = "influx"
[sink.influxdb]
url = "{influx}"
database = "{ours}"
"#
        ),
    );
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let service = tokio::spawn(ha_ingestor::run::run(
        config,
        metrics,
        async {
            let _ = stop_rx.await;
        },
        Some(ready_tx),
    ));
    ready_rx.await.expect("service started");

    let http = reqwest_client();
    let admin = ha.admin.long_lived_token.clone().unwrap();
    let post = async |entity: &str, state: &str, attributes: &Value| {
        let r = http
            .post(format!("{}/api/states/{entity}", ha.url))
            .bearer_auth(&admin)
            .json(&json!({"state": state, "attributes": attributes}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{entity}: {}", r.status());
    };
    // Wait until our subscription is live: a probe change reaches our database.
    let since_ns = (jiff::Timestamp::now().as_microsecond() - 1_000_000) * 1000;
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut i = 0;
        loop {
            i += 1;
            post("sensor.native_live", &i.to_string(), &json!({})).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            if !points(&influx, &ours, since_ns).await.is_empty() {
                return;
            }
        }
    })
    .await
    .expect("the ingestor's subscription is live");
    let start_ns = (jiff::Timestamp::now().as_microsecond()) * 1000;
    let table = states();
    for round in 0..2 {
        for (entity, state, attributes) in &table {
            let state = if round == 1 && state.parse::<f64>().is_ok_and(f64::is_finite) {
                format!("{state}1") // a second, different value
            } else {
                state.to_string()
            };
            if *entity == "sensor.native_zone_a" {
                // InfluxDB refuses a whole write that brings a new field with two types (400
                // "field type conflict", not a partial write), and HA's integration then drops
                // its whole batch: let b's point land in a batch of its own first.
                zone_b_written(&influx, round, start_ns).await;
            }
            let mut attributes = attributes.clone();
            attributes["round"] = json!(round);
            post(entity, &state, &attributes).await;
        }
    }
    // HA's integration writes in one-second batches; compare until both sides settle (generous:
    // a write that stalls ends at the sink's 30 s request timeout and is retried).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let (mut theirs, mut mine);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        theirs = points(&influx, "ha_native", start_ns).await;
        mine = points(&influx, &ours, start_ns).await;
        if (theirs == mine && theirs.len() >= 2 * (table.len() - 4))
            || tokio::time::Instant::now() > deadline
        {
            break;
        }
    }
    let only_ha: Vec<_> = theirs.difference(&mine).collect();
    let only_ours: Vec<_> = mine.difference(&theirs).collect();
    println!(
        "HA-compatible mode: HA wrote {} points, the ingestor {}; only HA: {}, only ours: {}",
        theirs.len(),
        mine.len(),
        only_ha.len(),
        only_ours.len()
    );
    let journal = {
        let conn = rusqlite::Connection::open(dir.path().join("compat.db")).unwrap();
        let q = |sql: &str| -> String {
            conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
                .map(|v| format!("{v:?}"))
                .unwrap_or_else(|e| e.to_string())
        };
        format!(
            "journal: head {}, rows {}, cursor {}, dead letters {}",
            q("SELECT max(id) FROM states"),
            q("SELECT count(*) FROM states"),
            q("SELECT last_id FROM sink_cursors"),
            q("SELECT count(*) FROM dead_letters")
        )
    };
    assert!(
        only_ha.is_empty() && only_ours.is_empty(),
        "points differ ({journal})\nonly HA's:\n{}\nonly ours:\n{}",
        only_ha
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        only_ours
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let (their_types, our_types) = (
        field_types(&influx, "ha_native").await,
        field_types(&influx, &ours).await,
    );
    // HA's database also holds the fields of earlier runs; ours must be a subset with equal types.
    let wrong: Vec<_> = our_types.difference(&their_types).collect();
    assert!(wrong.is_empty(), "field types HA does not write: {wrong:?}");
    // nan and zone_a (refused by InfluxDB) and unknown (skipped) are in neither; everything else
    // is in both.
    assert!(
        theirs.len() >= 2 * (table.len() - 3),
        "{} points",
        theirs.len()
    );
    stop.send(()).unwrap();
    service.await.unwrap().unwrap();

    // The same changes read back from HA's history (an import into a new store) and sent to a
    // third database: HA's points again, time aside (history has no time_fired), but for the
    // attributes HA's recorder never stores.
    let backfilled = unique("backfilled");
    let created = influxql(&influx, "", &format!("CREATE DATABASE \"{backfilled}\"")).await;
    assert!(created["results"][0]["error"].is_null(), "{created}");
    let import_db = dir.path().join("import.db");
    let config = ingestor_config(&ha, &import_db, "");
    let summary = ha_ingestor::history::import::import(
        config,
        ha_ingestor::history::import::ImportOptions {
            since_us: start_ns / 1000,
            until_us: None,
            chunk: 50,
            fresh: false,
            progress_bar: Some(false),
        },
    )
    .await
    .unwrap();
    let sink = sinks::sink_config(&format!(
        r#"
[[sink]]
name = "influx"
[sink.influxdb]
url = "{influx}"
database = "{backfilled}"
"#
    ));
    let running = sinks::start(&sink, &import_db);
    running.caught_up(Duration::from_secs(60)).await;
    running.stop().await;
    let want = timeless(&theirs, RECORDER_EXCLUDED);
    let got = timeless(&points(&influx, &backfilled, start_ns).await, &[]);
    println!(
        "HA-compatible mode from history: {} states imported; HA wrote {} points, the backfill {}",
        summary.states_read,
        want.len(),
        got.len()
    );
    let only = |a: &[String], b: &[String]| -> String {
        a.iter()
            .filter(|p| !b.contains(p))
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        got == want,
        "backfilled points differ from HA's (time and recorder-excluded attributes aside)\nonly HA's:\n{}\nonly the backfill's:\n{}",
        only(&want, &got),
        only(&got, &want)
    );
}

/// Waits until HA's own integration wrote `sensor.native_zone_b`'s point of `round`.
async fn zone_b_written(influx: &str, round: i32, since_ns: i64) {
    let q = format!(
        "SELECT count(\"value\") FROM \"zones\" WHERE \"entity_id\" = 'native_zone_b' AND \"round\" = {round} AND time >= {since_ns}"
    );
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let v = influxql(influx, "ha_native", &q).await;
            if v["results"][0]["series"][0]["values"][0][1].as_i64() == Some(1) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("HA's influxdb integration writes zone_b's point");
}

/// The ingestor's config for the corpus's entities of `ha`, storing into `db`, with `sinks`.
fn ingestor_config(ha: &RealHa, db: &std::path::Path, sinks: &str) -> Config {
    let mut file = ha_ingestor::config::parse(&format!(
        "[filter.include]\nentity_globs = [\"*.native_*\"]\n{sinks}"
    ))
    .unwrap();
    file.instances = vec![ha_ingestor::config::InstanceConfig::with_token(
        "real",
        &ha.url,
        Secret::new(ha.user.long_lived_token.clone().unwrap()),
    )];
    Config::resolve(
        file,
        Overrides {
            db: Some(db.to_path_buf()),
            metrics_addr: Some("127.0.0.1:0".parse().unwrap()),
            ..Overrides::default()
        },
    )
    .unwrap()
}

/// Attributes HA's recorder never stores (`ALL_DOMAIN_EXCLUDE_ATTRS`), so history cannot return
/// them: their fields, as the HA-compatible schema names them.
const RECORDER_EXCLUDED: &[&str] = &[
    "supported_features",
    "supported_features_str",
    "attribution",
    "attribution_str",
    "restored",
    "restored_str",
];

/// `points` without their time and without the fields named in `drop`, sorted, repeats kept.
fn timeless(points: &BTreeSet<String>, drop: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = points
        .iter()
        .map(|p| {
            let mut parts = p.split(' ');
            let name = parts.next().unwrap_or_default();
            let _time = parts.next();
            let kept: Vec<&str> = parts
                .filter(|col| !drop.iter().any(|d| col.split('=').next() == Some(*d)))
                .collect();
            format!("{name} {}", kept.join(" "))
        })
        .collect();
    out.sort();
    out
}
