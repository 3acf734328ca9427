//! The ingestor against a real Home Assistant: 500 state changes of every kind, each stored exactly.
#![cfg(feature = "real-ha")]

use std::collections::HashMap;
use std::time::Duration;

use ha_client::Client;
use ha_client::auth::StaticToken;
use ha_ingestor::config::{Config, FileConfig, InstanceConfig, Overrides, Subscribe};
use ha_ingestor::record::{numeric_value, parse_time_us};
use ha_testenv::RealHa;
use serde_json::{Value, json};

/// entity_id, state, value, attributes, last_changed_us, last_updated_us, time_fired_us
type StoredRow = (String, String, Option<f64>, String, i64, i64, Option<i64>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_changes_are_stored_exactly() {
    let ha = RealHa::from_env();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, ha.user.long_lived_token.clone().unwrap()).unwrap();
    let db = dir.path().join("ha.db");
    let file = FileConfig {
        instances: vec![InstanceConfig {
            name: "realha".into(),
            url: Some(ha.url.clone()),
            token_file: Some(token_file),
            token_env: None,
            oauth_state_file: None,
            subscribe: Subscribe::StateChanged,
            ca_file: None,
            danger_accept_invalid_certs: false,
            event_buffer_bytes: None,
            filter: None,
            attributes: None,
            token: None,
            supervisor: false,
            statistics: None,
            registry: None,
        }],
        ..FileConfig::default()
    };
    let config = Config::resolve(
        file,
        Overrides {
            db: Some(db.clone()),
            metrics_addr: Some("127.0.0.1:0".parse().unwrap()),
            ..Overrides::default()
        },
    )
    .unwrap();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let service = tokio::spawn(ha_ingestor::run::run(
        config,
        metrics,
        async {
            let _ = stop_rx.await;
        },
        Some(ready_tx),
    ));
    let metrics_addr = ready_rx.await.expect("service started");
    // Wait until the subscription is live: /health says ready.
    let http = ha_client::TlsOptions::default()
        .reqwest_builder()
        .unwrap()
        .build()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(r) = http
                .get(format!("http://{metrics_addr}/health"))
                .send()
                .await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("ingestor ready");
    // The subscribe command may still be in flight after /health turns ready; a probe that arrives
    // in the database proves the subscription is live.
    let rest = Client::builder(&ha.url)
        .token_source(StaticToken::new(ha.admin.long_lived_token.clone().unwrap()))
        .build()
        .unwrap();
    let run_id = std::process::id();
    let probe = format!("sensor.ingest_probe_{run_id}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut n = 0;
        loop {
            n += 1;
            let _: Value = rest
                .post_json(
                    &format!("/api/states/{probe}"),
                    &json!({"state": n.to_string()}),
                )
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let c: i64 = conn
                .query_row(
                    "SELECT count(*) FROM states_view WHERE entity_id = ?1",
                    [&probe],
                    |r| r.get(0),
                )
                .unwrap();
            if c > 0 {
                return;
            }
        }
    })
    .await
    .expect("the probe reached the database");

    // 500 changes of different kinds over 5 entities.
    let entities = [
        format!("sensor.ingest_power_{run_id}"),
        format!("binary_sensor.ingest_door_{run_id}"),
        format!("sensor.ingest_text_{run_id}"),
        format!("climate.ingest_hall_{run_id}"),
        format!("sensor.ingest_attr_{run_id}"),
    ];
    let mut expected: HashMap<(String, i64), Value> = HashMap::new();
    for i in 0..500u32 {
        let k = (i % 5) as usize;
        let entity = &entities[k];
        let body = match k {
            0 => {
                json!({"state": format!("{}.{}", i, i % 7), "attributes": {"unit_of_measurement": "W", "device_class": "power"}})
            }
            1 => {
                json!({"state": if i % 2 == 0 { "on" } else { "off" }, "attributes": {"device_class": "door"}})
            }
            2 => {
                json!({"state": format!("text \"{i}\" ünïcødé"), "attributes": {"list": [1, "a", null], "nested": {"x": i}}})
            }
            3 => {
                json!({"state": "heat", "attributes": {"temperature": 20 + i % 3, "hvac_modes": ["off", "heat"], "step": i}})
            }
            // Attribute-only changes: same state, a new attribute value each time.
            _ => json!({"state": "constant", "attributes": {"counter": i}}),
        };
        let state: Value = rest
            .post_json(&format!("/api/states/{entity}"), &body)
            .await
            .unwrap();
        let lu = parse_time_us(state["last_updated"].as_str().unwrap()).unwrap();
        expected.insert((entity.clone(), lu), state);
    }
    assert_eq!(expected.len(), 500, "HA produced 500 distinct updates");

    let placeholders = entities.iter().map(|_| "?").collect::<Vec<_>>().join(",");
    let sql = format!(
        "SELECT e.entity_id, s.state, s.value, a.json, s.last_changed_us, s.last_updated_us, s.time_fired_us \
         FROM states s JOIN entities e ON e.id = s.entity LEFT JOIN attributes a ON a.id = s.attributes \
         WHERE e.instance = 'realha' AND e.entity_id IN ({placeholders})"
    );
    let rows = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut stmt = conn.prepare(&sql).unwrap();
            let rows: Vec<StoredRow> = stmt
                .query_map(rusqlite::params_from_iter(entities.iter()), |r| {
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
                .collect::<Result<_, _>>()
                .unwrap();
            if rows.len() >= 500 {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("all 500 rows stored");
    assert_eq!(rows.len(), 500);
    for (entity, state, value, attrs, lc, lu, fired) in rows {
        let want = expected
            .get(&(entity.clone(), lu))
            .unwrap_or_else(|| panic!("unexpected row {entity} {lu}"));
        assert_eq!(state, want["state"].as_str().unwrap(), "{entity}");
        assert_eq!(value, numeric_value(&state), "{entity} {state}");
        let stored: Value = serde_json::from_str(&attrs).unwrap();
        assert_eq!(stored, want["attributes"], "{entity}");
        assert_eq!(
            lc,
            parse_time_us(want["last_changed"].as_str().unwrap()).unwrap(),
            "{entity}"
        );
        assert!(fired.is_some());
    }
    stop_tx.send(()).unwrap();
    service.await.unwrap().expect("clean shutdown");
}
