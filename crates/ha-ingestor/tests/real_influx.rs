//! The InfluxDB sink against a real InfluxDB 1.x and VictoriaMetrics (`scripts/services.sh start`).
#![cfg(feature = "real-sinks")]

mod sinks;

use std::time::Duration;

use sinks::*;

const WAIT: Duration = Duration::from_secs(30);

async fn create_database(base: &str, db: &str) {
    let v = influxql(base, "", &format!("CREATE DATABASE \"{db}\"")).await;
    assert!(v["results"][0]["error"].is_null(), "{v}");
}

fn t(i: i64) -> i64 {
    // Recent times, one per millisecond: InfluxDB keeps them in the current shard.
    jiff::Timestamp::now().as_microsecond() / 1000 * 1000 - 10_000_000 + i * 1000
}

#[tokio::test]
async fn ha_schema_points_land_and_a_type_conflict_is_isolated_to_its_point() {
    let base = env("HA_INGESTOR_INFLUX_URL");
    let db = unique("conflict");
    create_database(&base, &db).await;
    // A field of type string already sits where one of our points will write a float: InfluxDB
    // answers 400 "field type conflict" for that point only.
    let pre = reqwest_client()
        .post(format!("{base}/write?db={db}&precision=u"))
        .body(format!(
            "kWh,domain=sensor,entity_id=energy value=\"text\" {}",
            t(0)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);

    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    for i in 0..99 {
        rows.push(state(
            "sensor.living_temp",
            &format!("{}.5", 20 + i % 5),
            t(1 + i),
            r#"{"unit_of_measurement":"°C","friendly_name":"Living temp"}"#,
        ));
    }
    // The conflicting one, in the middle of the batch.
    rows.insert(
        50,
        state(
            "sensor.energy",
            "12.5",
            t(200),
            r#"{"unit_of_measurement":"kWh"}"#,
        ),
    );
    let journal = journal(dir.path(), &rows);
    let sink = sink_config(&format!(
        r#"
        [[sink]]
        name = "influx"
        batch_size = 1000
        [sink.influxdb]
        url = "{base}"
        database = "{db}"
        "#
    ));
    let running = start(&sink, &journal);
    running.caught_up(WAIT).await;
    assert_eq!(influx_count(&base, &db, "°C", "value").await, 99);
    let dead = dead_letters(&journal, "influx");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, 51, "the conflicting row's journal id");
    assert!(dead[0].1.contains("field type conflict"), "{}", dead[0].1);
    // The HA schema: entity_id tag is the object id, friendly_name a _str field.
    let v = influxql(
        &base,
        &db,
        "SELECT last(\"friendly_name_str\") FROM \"°C\" WHERE \"entity_id\" = 'living_temp' AND \"domain\" = 'sensor'",
    )
    .await;
    assert_eq!(
        v["results"][0]["series"][0]["values"][0][1], "Living temp",
        "{v}"
    );
    running.stop().await;
}

#[tokio::test]
async fn replays_after_a_restart_of_the_ingestor_write_no_duplicates() {
    let base = env("HA_INGESTOR_INFLUX_URL");
    let db = unique("replay");
    create_database(&base, &db).await;
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<_> = (0..500)
        .map(|i| {
            state(
                "sensor.power",
                &i.to_string(),
                t(i),
                r#"{"unit_of_measurement":"W"}"#,
            )
        })
        .collect();
    let journal = journal(dir.path(), &rows);
    let sink = sink_config(&format!(
        "[[sink]]\nname = \"influx\"\nbatch_size = 100\n[sink.influxdb]\nurl = \"{base}\"\ndatabase = \"{db}\"\n"
    ));
    let running = start(&sink, &journal);
    running.caught_up(WAIT).await;
    running.stop().await;
    // Pretend the cursor was lost in a crash before it was saved: everything is sent again.
    rusqlite::Connection::open(&journal)
        .unwrap()
        .execute("UPDATE sink_cursors SET last_id = 0", [])
        .unwrap();
    let running = start(&sink, &journal);
    running.caught_up(WAIT).await;
    assert_eq!(influx_count(&base, &db, "W", "value").await, 500);
    running.stop().await;
}

#[tokio::test]
async fn clean_schema_and_the_v2_write_api_on_victoriametrics() {
    let base = env("HA_INGESTOR_VM_URL");
    let bucket = unique("vm");
    // VictoriaMetrics has no databases: a series of its own keeps a second run on the same server
    // from seeing the first one's points.
    let entity = format!("sensor.{bucket}");
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<_> = (0..50)
        .map(|i| {
            state(
                &entity,
                &format!("{i}.25"),
                t(i),
                r#"{"unit_of_measurement":"°C","friendly_name":"VM temp"}"#,
            )
        })
        .collect();
    let journal = journal(dir.path(), &rows);
    let sink = sink_config(&format!(
        r#"
        [[sink]]
        name = "vm"
        [sink.influxdb]
        url = "{base}"
        api = "v2"
        org = "home"
        bucket = "{bucket}"
        schema = "clean"
        [sink.influxdb.clean]
        measurement = "ha.states"
        "#
    ));
    let running = start(&sink, &journal);
    running.caught_up(WAIT).await;
    let client = reqwest_client();
    client
        .get(format!("{base}/internal/force_flush"))
        .send()
        .await
        .unwrap();
    // VictoriaMetrics names series <measurement>_<field>; no dots in the clean measurement.
    let export = client
        .post(format!("{base}/api/v1/export"))
        .form(&[(
            "match[]",
            format!("{{__name__=\"ha_states_value\",entity_id=\"{entity}\"}}"),
        )])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = export
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no series exported: {export}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["values"].as_array().unwrap().len(), 50, "{v}");
    assert_eq!(v["values"][49], 49.25, "{v}");
    running.stop().await;
}

/// A fresh database on the second InfluxDB of `scripts/services.sh` (authentication on), and a
/// `[[sink]]` for it that reads `password` from a file.
struct AuthDb {
    base: String,
    user: String,
    password: String,
    db: String,
    dir: tempfile::TempDir,
}

impl AuthDb {
    async fn create(tag: &str) -> AuthDb {
        let (base, user, password) = (
            env("HA_INGESTOR_INFLUX_AUTH_URL"),
            env("HA_INGESTOR_INFLUX_AUTH_USER"),
            env("HA_INGESTOR_INFLUX_AUTH_PASSWORD"),
        );
        let db = unique(tag);
        let created = influxql_as(
            &base,
            Some((&user, &password)),
            "",
            &format!("CREATE DATABASE \"{db}\""),
        )
        .await;
        assert!(created["results"][0]["error"].is_null(), "{created}");
        let dir = tempfile::tempdir().unwrap();
        AuthDb {
            base,
            user,
            password,
            db,
            dir,
        }
    }

    /// The sink's configuration, with `password` in its password file.
    fn sink(&self, password: &str) -> ha_ingestor::sink::SinkConfig {
        let password_file = self.dir.path().join("influx-password");
        std::fs::write(&password_file, format!("{password}\n")).unwrap();
        sink_config(&format!(
            r#"
            [[sink]]
            name = "influx"
            [sink.influxdb]
            url = "{}"
            database = "{}"
            username = "{}"
            password_file = "{}"
            "#,
            self.base,
            self.db,
            self.user,
            password_file.display()
        ))
    }
}

#[tokio::test]
async fn a_username_and_password_file_are_accepted_by_influxdb_with_authentication() {
    let server = AuthDb::create("auth_ok").await;
    let rows: Vec<_> = (0..10)
        .map(|i| {
            state(
                "sensor.auth_power",
                &i.to_string(),
                t(i),
                r#"{"unit_of_measurement":"W"}"#,
            )
        })
        .collect();
    let journal = journal(server.dir.path(), &rows);
    let running = start(&server.sink(&server.password), &journal);
    running.caught_up(WAIT).await;
    let v = influxql_as(
        &server.base,
        Some((&server.user, &server.password)),
        &server.db,
        "SELECT count(\"value\") FROM \"W\"",
    )
    .await;
    assert_eq!(v["results"][0]["series"][0]["values"][0][1], 10, "{v}");
    running.stop().await;
}

#[tokio::test]
async fn a_wrong_password_is_refused_holds_the_cursor_and_is_never_shown() {
    const WRONG: &str = "wrong-password-5e1d";
    let server = AuthDb::create("auth_bad").await;
    let rows = vec![state("sensor.auth_power", "1", t(0), "{}")];
    let journal = journal(server.dir.path(), &rows);
    let running = start(&server.sink(WRONG), &journal);
    let error = tokio::time::timeout(WAIT, async {
        loop {
            let health = running.health.snapshot();
            if let Some(e) = health["remote_sinks"][0]["error"].as_str() {
                return e.to_string();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the sink reports the refusal");
    assert!(
        error.contains("401") && error.contains("username/password"),
        "{error}"
    );
    assert!(!error.contains(WRONG), "the password leaked: {error}");
    assert_eq!(
        cursor_and_head(&journal, "influx").0.unwrap_or(0),
        0,
        "the cursor held"
    );
    running.stop().await;
}

#[tokio::test]
async fn events_reach_the_clean_schema_and_never_the_ha_compatible_one() {
    let base = env("HA_INGESTOR_INFLUX_URL");
    let (clean_db, ha_db) = (unique("events_clean"), unique("events_ha"));
    create_database(&base, &clean_db).await;
    create_database(&base, &ha_db).await;
    let dir = tempfile::tempdir().unwrap();
    let t0 = t(0); // t() moves with the clock: one base for the records and the checks
    let at = |i: i64| t0 + i * 1000;
    let mut records = vec![state(
        "sensor.events_probe",
        "1",
        at(0),
        r#"{"unit_of_measurement":"W"}"#,
    )];
    for i in 0..30 {
        let kind = if i % 3 == 0 {
            "call_service"
        } else {
            "automation_triggered"
        };
        records.push(event(
            kind,
            t(1 + i),
            &format!(r#"{{"seq":{i},"name":"a \"b\""}}"#),
        ));
    }
    let journal = journal(dir.path(), &records);
    let sink = |name: &str, db: &str, schema: &str| {
        sink_config(&format!(
            r#"
            [[sink]]
            name = "{name}"
            [sink.influxdb]
            url = "{base}"
            database = "{db}"
            schema = "{schema}"
            "#
        ))
    };
    let clean = start(&sink("clean", &clean_db, "clean"), &journal);
    let ha = start(&sink("ha", &ha_db, "ha"), &journal);
    clean.caught_up(WAIT).await;
    ha.caught_up(WAIT).await;
    // Run the clean sink's batch again from scratch: InfluxDB overwrites, nothing doubles.
    clean.stop().await;
    rusqlite::Connection::open(&journal)
        .unwrap()
        .execute(
            "UPDATE sink_cursors SET last_id = 0 WHERE sink = 'clean'",
            [],
        )
        .unwrap();
    let clean = start(&sink("clean", &clean_db, "clean"), &journal);
    clean.caught_up(WAIT).await;

    let per_type = influxql(
        &base,
        &clean_db,
        "SELECT count(\"data\") FROM \"events\" GROUP BY \"event_type\"",
    )
    .await;
    let mut counts: Vec<(String, i64)> = per_type["results"][0]["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["tags"]["event_type"].as_str().unwrap().to_string(),
                s["values"][0][1].as_i64().unwrap(),
            )
        })
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        vec![
            ("automation_triggered".into(), 20),
            ("call_service".into(), 10)
        ]
    );
    let one = influxql(
        &base,
        &clean_db,
        "SELECT \"data\", \"context_id\", \"origin\" FROM \"events\" WHERE \"event_type\" = 'call_service' LIMIT 1",
    )
    .await;
    let values = &one["results"][0]["series"][0]["values"][0];
    assert_eq!(values[1], r#"{"seq":0,"name":"a \"b\""}"#);
    assert_eq!(values[2], format!("01CTX{}", at(1)));
    assert_eq!(values[3], "LOCAL");
    // HA's integration writes no events, so neither does the HA-compatible schema: no measurement,
    // and no cursor of events at all.
    let shown = influxql(&base, &ha_db, "SHOW MEASUREMENTS").await;
    let names: Vec<&str> = shown["results"][0]["series"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v[0].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["W"]);
    assert_eq!(cursor_and_head_of(&journal, "ha", "event").0, None);
    clean.stop().await;
    ha.stop().await;
}

/// Rows of `sensor.power` from the instance `instance`.
fn power(instance: &str, values: &[(i64, &str)]) -> Vec<ha_ingestor::record::Record> {
    values
        .iter()
        .map(|(us, v)| {
            let mut r = state("sensor.power", v, *us, r#"{"unit_of_measurement":"W"}"#);
            if let ha_ingestor::record::Record::State(s) = &mut r {
                s.instance = std::sync::Arc::from(instance);
            }
            r
        })
        .collect()
}

/// (instance tag, time µs, value) of every `W` point, sorted.
async fn power_points(base: &str, db: &str) -> Vec<(String, i64, f64)> {
    let v: serde_json::Value = reqwest_client()
        .post(format!("{base}/query"))
        .form(&[
            ("db", db),
            ("q", "SELECT \"value\" FROM \"W\" GROUP BY *"),
            ("epoch", "u"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut out = Vec::new();
    for series in v["results"][0]["series"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let instance = series["tags"]["instance"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for p in series["values"].as_array().cloned().unwrap_or_default() {
            out.push((
                instance.clone(),
                p[0].as_i64().unwrap(),
                p[1].as_f64().unwrap(),
            ));
        }
    }
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

/// Two homes, the same entity at the same instants: with both feeding the HA-compatible output it
/// gets an `instance` tag and every point survives; a sink fed by one home (`instances`) writes
/// exactly HA's points, without the tag, and only that home's.
#[tokio::test]
async fn two_homes_stay_apart_in_the_ha_compatible_output() {
    let base = env("HA_INGESTOR_INFLUX_URL");
    let (both, north_only) = (unique("homes"), unique("north"));
    create_database(&base, &both).await;
    create_database(&base, &north_only).await;
    let (t1, t2, t3) = (t(1), t(2), t(3));
    let mut rows = power("north", &[(t1, "100"), (t2, "200"), (t3, "300")]);
    rows.extend(power("south", &[(t1, "5"), (t2, "6"), (t3, "7")]));
    let dir = tempfile::tempdir().unwrap();
    let journal = journal(dir.path(), &rows);
    // Resolved as a whole file: how many instances feed a sink decides the tag.
    let file = ha_ingestor::config::parse(&format!(
        r#"
        [[instance]]
        name = "north"
        url = "http://north.invalid:8123"
        [[instance]]
        name = "south"
        url = "http://south.invalid:8123"
        [[sink]]
        name = "both"
        [sink.influxdb]
        url = "{base}"
        database = "{both}"
        [[sink]]
        name = "north_only"
        instances = ["north"]
        [sink.influxdb]
        url = "{base}"
        database = "{north_only}"
        "#
    ))
    .unwrap();
    let config =
        ha_ingestor::config::Config::resolve(file, ha_ingestor::config::Overrides::default())
            .unwrap();
    let running: Vec<_> = config.sinks.iter().map(|s| start(s, &journal)).collect();
    for r in &running {
        r.caught_up(WAIT).await;
    }
    let want_both = vec![
        ("north".to_string(), t1, 100.0),
        ("north".to_string(), t2, 200.0),
        ("north".to_string(), t3, 300.0),
        ("south".to_string(), t1, 5.0),
        ("south".to_string(), t2, 6.0),
        ("south".to_string(), t3, 7.0),
    ];
    assert_eq!(power_points(&base, &both).await, want_both);
    let want_north = vec![
        (String::new(), t1, 100.0),
        (String::new(), t2, 200.0),
        (String::new(), t3, 300.0),
    ];
    assert_eq!(power_points(&base, &north_only).await, want_north);
    let keys = influxql(&base, &north_only, "SHOW TAG KEYS FROM \"W\"").await;
    assert_eq!(
        keys["results"][0]["series"][0]["values"],
        serde_json::json!([["domain"], ["entity_id"]]),
        "HA's tags only: {keys}"
    );
    for r in running {
        r.stop().await;
    }
}
