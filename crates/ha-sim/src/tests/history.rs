//! History over WS and REST against what was emitted.

use serde_json::{Value, json};

use super::*;
use crate::time::{iso, now_us};

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn ws_history_honours_options() {
    let sim = sim().await;
    let mut c = Client::admin(&sim).await;
    let attrs = json!({"unit_of_measurement": "W"});
    sim.set_state("sensor.h", "1", attrs.clone());
    let start = now_us() + 1;
    // Make sure the first row is strictly before `start`.
    while now_us() <= start {
        tokio::task::yield_now().await;
    }
    sim.set_state("sensor.h", "2", attrs.clone());
    sim.set_state(
        "sensor.h",
        "2",
        json!({"unit_of_measurement": "W", "extra": 1}),
    ); // attribute-only
    sim.set_state("sensor.h", "3", attrs.clone());
    let q = |extra: Value| {
        let mut m = json!({"type": "history/history_during_period", "start_time": iso(start), "entity_ids": ["sensor.h"]});
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        m
    };
    let r = c.cmd(q(json!({}))).await["result"]["sensor.h"].clone();
    let states: Vec<&str> = r
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["s"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["1", "2", "3"],
        "start state + significant changes: {r}"
    );
    assert_eq!(
        r[0]["lu"].as_f64().unwrap(),
        start as f64 / 1e6,
        "start state clamped to start"
    );
    assert!(r[0].get("lc").is_none() && r[0]["a"] == attrs);
    let r = c
        .cmd(q(
            json!({"significant_changes_only": false, "include_start_time_state": false}),
        ))
        .await["result"]["sensor.h"]
        .clone();
    assert_eq!(r.as_array().unwrap().len(), 3, "{r}");
    assert_eq!(r[1]["a"]["extra"], 1);
    assert!(
        r[1]["lc"].as_f64().unwrap() < r[1]["lu"].as_f64().unwrap(),
        "lc only when it differs"
    );
    let r = c.cmd(q(json!({"minimal_response": true, "no_attributes": true, "significant_changes_only": false}))).await["result"]["sensor.h"].clone();
    assert_eq!(
        r,
        json!([{"s": "1", "lu": start as f64 / 1e6}, {"s": "2", "lu": r[1]["lu"]}, {"s": "3", "lu": r[2]["lu"]}])
    );
    let r = c
        .cmd(q(json!({"entity_ids": ["sensor.unknown_thing"]})))
        .await;
    assert_eq!(r["result"], json!({}));
    let r = c.cmd(json!({"type": "history/history_during_period", "start_time": "yesterday", "entity_ids": ["sensor.h"]})).await;
    assert_eq!(
        r["error"],
        json!({"code": "invalid_start_time", "message": "Invalid start_time"})
    );
}

#[tokio::test]
async fn rest_history_period() {
    let sim = sim().await;
    let start = now_us() - 1;
    sim.set_state("sensor.r", "10", json!({"friendly_name": "R"}));
    sim.set_state("sensor.r", "11", json!({"friendly_name": "R"}));
    let path = format!(
        "/api/history/period/{}?filter_entity_id=sensor.r,light.kitchen&end_time={}",
        iso(start),
        enc(&iso(now_us() + 1_000_000))
    );
    let r = get(&sim, &path, "sim-admin-token").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v[0].as_array().unwrap().len(), 2);
    assert_eq!(v[0][0]["entity_id"], "sensor.r");
    assert!(v[0][0]["context"].is_object());
    assert_eq!(v[1][0]["entity_id"], "light.kitchen");
    assert_eq!(v[1][0]["last_changed"], iso(start), "start state clamped");
    let r = get(
        &sim,
        &format!("{path}&minimal_response&no_attributes&skip_initial_state"),
        "sim-admin-token",
    )
    .await
    .json();
    assert_eq!(
        r[0][1],
        json!({"state": "11", "last_changed": r[0][1]["last_changed"]})
    );
    assert_eq!(r[0][0]["attributes"], json!({}));
    let bad = get(
        &sim,
        &format!(
            "/api/history/period/{}?filter_entity_id=sensor.r&end_time=2026-01-01T00:00:00+00:00",
            iso(start)
        ),
        "sim-admin-token",
    )
    .await;
    assert_eq!(
        (bad.status, bad.json()),
        (400, json!({"message": "Invalid end_time"}))
    );
    let missing = get(
        &sim,
        &format!("/api/history/period/{}", iso(start)),
        "sim-admin-token",
    )
    .await;
    assert_eq!(
        (missing.status, missing.json()),
        (400, json!({"message": "filter_entity_id is missing"}))
    );
    assert_eq!(sim.history_len("sensor.r"), 2);
}
