//! Auth phase, id rules, subscriptions, coalescing and commands.

use std::time::Duration;

use serde_json::json;

use super::*;

#[tokio::test]
async fn auth_phase_ok_with_static_token() {
    let sim = sim().await;
    let (mut c, first) = Client::connect(&sim).await;
    assert_eq!(
        first,
        json!({"type": "auth_required", "ha_version": "2024.3.3"})
    );
    c.send(json!({"type": "auth", "access_token": "sim-user-token"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "auth_ok", "ha_version": "2024.3.3"})
    );
    assert_eq!(sim.stats().auth_ok, 1);
}

#[tokio::test]
async fn bad_token_and_missing_token_get_auth_invalid_then_close() {
    let sim = sim().await;
    for msg in [
        json!({"type": "auth", "access_token": "nope"}),
        json!({"type": "auth"}),
    ] {
        let (mut c, _) = Client::connect(&sim).await;
        c.send(msg).await;
        assert_eq!(
            c.recv().await,
            json!({"type": "auth_invalid", "message": "Invalid access token or password"})
        );
        assert_eq!(c.ended().await, Ended::CloseFrame);
    }
    assert_eq!(sim.stats().auth_invalid, 2);
}

#[tokio::test]
async fn command_before_auth_gets_has_message() {
    let sim = sim().await;
    let (mut c, _) = Client::connect(&sim).await;
    c.send(json!({"id": 1, "type": "get_states"})).await;
    let m = c.recv().await;
    assert_eq!(
        m["message"],
        "Auth message incorrectly formatted: extra keys not allowed @ data['id']. Got 1\nnot a valid value for dictionary value @ data['type']. Got 'get_states'"
    );
    assert_eq!(c.ended().await, Ended::CloseFrame);
}

#[tokio::test]
async fn id_rules_and_unknown_command() {
    let sim = sim().await;
    let mut c = Client::admin(&sim).await;
    let r = c.cmd(json!({"type": "no_such_command"})).await;
    assert_eq!(
        r,
        json!({"id": 1, "type": "result", "success": false, "error": {"code": "unknown_command", "message": "Unknown command."}})
    );
    c.send(json!({"id": 1, "type": "ping"})).await;
    let r = c.recv().await;
    assert_eq!(
        r["error"],
        json!({"code": "id_reuse", "message": "Identifier values have to increase."})
    );
    assert_eq!(r["id"], 1);
    c.send(json!({"type": "ping"})).await;
    let r = c.recv().await;
    assert_eq!(
        r,
        json!({"id": null, "type": "result", "success": false, "error": {"code": "invalid_format", "message": "Message incorrectly formatted."}})
    );
    c.send(json!({"id": "seven", "type": "ping"})).await;
    assert_eq!(c.recv().await["id"], "seven");
    c.send_text("[1]").await;
    assert_eq!(c.recv().await["id"], 0);
    c.next_id = 10;
    assert_eq!(
        c.cmd(json!({"type": "ping"})).await,
        json!({"id": 10, "type": "pong"})
    );
    let r = c
        .cmd(json!({"type": "call_service", "domain": "input_boolean"}))
        .await;
    assert_eq!(
        r["error"],
        json!({"code": "invalid_format", "message": "required key not provided @ data['service']. Got None"})
    );
    // Invalid JSON after auth: HA disconnects.
    c.send_text("{not json").await;
    assert_eq!(c.ended().await, Ended::CloseFrame);
}

#[tokio::test]
async fn subscribe_and_unsubscribe_events() {
    let sim = sim().await;
    let mut c = Client::admin(&sim).await;
    let r = c
        .cmd(json!({"type": "subscribe_events", "event_type": "state_changed"}))
        .await;
    assert_eq!(
        r,
        json!({"id": 1, "type": "result", "success": true, "result": null})
    );
    sim.set_state(
        "sensor.probe",
        "42",
        json!({"unit_of_measurement": "W", "friendly_name": "Probe"}),
    );
    let e = c.event().await;
    assert_eq!(e["id"], 1);
    let ev = &e["event"];
    assert_eq!(ev["event_type"], "state_changed");
    assert_eq!(ev["origin"], "LOCAL");
    assert_eq!(ev["data"]["entity_id"], "sensor.probe");
    assert_eq!(ev["data"]["old_state"], serde_json::Value::Null);
    let ns = &ev["data"]["new_state"];
    let keys: Vec<&str> = ns.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "entity_id",
            "state",
            "attributes",
            "last_changed",
            "last_updated",
            "context"
        ],
        "HA's order (State.as_dict)"
    );
    assert_eq!(ns["state"], "42");
    assert_eq!(ns["context"]["id"].as_str().unwrap().len(), 26);
    assert!(ns["last_changed"].as_str().unwrap().ends_with("+00:00"));
    sim.set_state(
        "sensor.probe",
        "43",
        json!({"unit_of_measurement": "W", "friendly_name": "Probe"}),
    );
    assert_eq!(c.event().await["event"]["data"]["old_state"]["state"], "42");
    // Custom events reach an all-events subscription, not the state_changed one.
    let all = c.cmd(json!({"type": "subscribe_events"})).await;
    assert_eq!(all["success"], true);
    sim.fire_event("custom_thing", json!({"n": 2}));
    let e = c.event().await;
    assert_eq!(
        (
            e["id"].clone(),
            e["event"]["event_type"].clone(),
            e["event"]["data"]["n"].clone()
        ),
        (json!(2), json!("custom_thing"), json!(2))
    );
    let r = c
        .cmd(json!({"type": "unsubscribe_events", "subscription": 1}))
        .await;
    assert_eq!(r["success"], true);
    let r = c
        .cmd(json!({"type": "unsubscribe_events", "subscription": 1}))
        .await;
    assert_eq!(
        r["error"],
        json!({"code": "not_found", "message": "Subscription not found."})
    );
    sim.set_state("sensor.probe", "44", json!({}));
    let e = c.event().await;
    assert_eq!(e["id"], 2, "only the all-events subscription is left");
}

#[tokio::test]
async fn non_admin_allowlist_and_admin_only_commands() {
    let sim = sim().await;
    let mut c = Client::auth(&sim, "sim-user-token").await;
    let unauthorized = json!({"code": "unauthorized", "message": "Unauthorized"});
    assert_eq!(
        c.cmd(json!({"type": "subscribe_events"})).await["error"],
        unauthorized
    );
    assert_eq!(
        c.cmd(json!({"type": "subscribe_events", "event_type": "call_service"}))
            .await["error"],
        unauthorized
    );
    assert_eq!(
        c.cmd(json!({"type": "subscribe_events", "event_type": "state_changed"}))
            .await["success"],
        true
    );
    assert_eq!(
        c.cmd(json!({"type": "fire_event", "event_type": "x"}))
            .await["error"],
        unauthorized
    );
    assert_eq!(c.cmd(json!({"type": "subscribe_trigger", "trigger": {"platform": "state", "entity_id": "light.kitchen"}})).await["error"], unauthorized);
    let r = c.cmd(json!({"type": "call_service", "domain": "input_boolean", "service": "toggle", "service_data": {"entity_id": "input_boolean.test_switch"}})).await;
    assert_eq!(r["success"], true, "{r}");
    let user = c.cmd(json!({"type": "auth/current_user"})).await;
    assert_eq!(user["result"]["is_admin"], false);
    assert_eq!(
        user["result"]["credentials"],
        json!([{"auth_provider_type": "homeassistant", "auth_provider_id": null}])
    );
}

#[tokio::test]
async fn coalescing_sends_arrays() {
    // The test runtime is single-threaded: everything queued before the writer runs is one batch.
    let sim = sim().await;
    let mut c = Client::admin(&sim).await;
    c.send_text(&json!([{"id": 1, "type": "ping"}, {"id": 2, "type": "ping"}]).to_string())
        .await;
    assert_eq!(
        c.recv_raw().await,
        r#"{"id":1,"type":"pong"}"#,
        "no coalescing before supported_features"
    );
    assert_eq!(c.recv_raw().await, r#"{"id":2,"type":"pong"}"#);
    c.next_id = 3;
    let r = c
        .cmd(json!({"type": "supported_features", "features": {"coalesce_messages": 1}}))
        .await;
    assert_eq!(r["success"], true);
    c.cmd(json!({"type": "subscribe_events", "event_type": "state_changed"}))
        .await;
    for i in 0..20 {
        sim.set_state("sensor.burst", &i.to_string(), json!({}));
    }
    let raw = c.recv_raw().await;
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(20), "{raw}");
    assert_eq!(v[19]["event"]["data"]["new_state"]["state"], "19");
    c.send_text(&json!([{"id": 10, "type": "ping"}, {"id": 11, "type": "ping"}]).to_string())
        .await;
    assert_eq!(
        c.recv_raw().await,
        r#"[{"id":10,"type":"pong"},{"id":11,"type":"pong"}]"#
    );
}

#[tokio::test]
async fn subscribe_entities_compressed() {
    let sim = sim().await;
    let mut c = Client::admin(&sim).await;
    let r = c
        .cmd(json!({"type": "subscribe_entities", "entity_ids": ["input_number.test_level"]}))
        .await;
    assert_eq!(r["success"], true);
    let first = c.event().await;
    let a = &first["event"]["a"]["input_number.test_level"];
    assert_eq!(a["s"], "0.0");
    assert!(
        a["c"].is_string() && a["lc"].is_f64() && a["a"]["friendly_name"] == "Test level",
        "{a}"
    );
    let r = c.cmd(json!({"type": "call_service", "domain": "input_number", "service": "set_value",
                         "service_data": {"value": 7}, "target": {"entity_id": "input_number.test_level"}})).await;
    assert_eq!(r["success"], true, "{r}");
    let user_id = r["result"]["context"]["user_id"].clone();
    let ch = c.event().await;
    let plus = &ch["event"]["c"]["input_number.test_level"]["+"];
    assert_eq!(plus["s"], "7.0");
    assert!(plus["lc"].is_f64());
    assert_eq!(plus["c"]["user_id"], user_id);
    assert_eq!(plus["c"]["id"], r["result"]["context"]["id"]);
}

#[tokio::test]
async fn call_service_errors_as_observed() {
    let sim = sim().await;
    let mut c = Client::admin(&sim).await;
    let r = c
        .cmd(json!({"type": "call_service", "domain": "input_number", "service": "nope"}))
        .await;
    assert_eq!(
        r["error"],
        json!({"code": "not_found", "message": "Service input_number.nope not found.", "translation_key": "service_not_found",
               "translation_placeholders": {"domain": "input_number", "service": "nope"}, "translation_domain": "homeassistant"})
    );
    let r = c.cmd(json!({"type": "call_service", "domain": "input_number", "service": "set_value",
                         "service_data": {"entity_id": "input_number.test_level", "value": 99999999}})).await;
    assert_eq!(
        r["error"],
        json!({"code": "invalid_format", "message": "Invalid value for input_number.test_level: 99999999.0 (range 0.0 - 1000000.0)"})
    );
    let r = c.cmd(json!({"type": "call_service", "domain": "input_number", "service": "set_value", "return_response": true,
                         "service_data": {"entity_id": "input_number.test_level", "value": 1}})).await;
    assert_eq!(r["error"]["code"], "unknown_error");
    for _ in 0..3 {
        c.cmd(json!({"type": "call_service", "domain": "counter", "service": "increment", "service_data": {"entity_id": "counter.test_counter"}})).await;
    }
    assert_eq!(sim.get_state("counter.test_counter").unwrap()["state"], "3");
    c.cmd(json!({"type": "call_service", "domain": "input_boolean", "service": "turn_on", "target": {"entity_id": ["input_boolean.test_switch"]}})).await;
    assert_eq!(
        sim.get_state("input_boolean.test_switch").unwrap()["state"],
        "on"
    );
}

#[tokio::test]
async fn get_states_get_config_fire_event_recorder_info() {
    let sim = sim().await;
    let mut c = Client::admin(&sim).await;
    let states = c.cmd(json!({"type": "get_states"})).await;
    let list = states["result"].as_array().unwrap();
    assert!(list.iter().any(|s| s["entity_id"] == "light.kitchen"
        && s["attributes"]["supported_color_modes"].is_array()));
    assert!(
        list.iter()
            .any(|s| s["entity_id"] == "sensor.outdoor_temperature"
                && s["attributes"]["device_class"] == "temperature")
    );
    let cfg = c.cmd(json!({"type": "get_config"})).await;
    assert_eq!(
        (
            cfg["result"]["state"].clone(),
            cfg["result"]["version"].clone()
        ),
        (json!("RUNNING"), json!("2024.3.3"))
    );
    c.cmd(json!({"type": "subscribe_events", "event_type": "my_event"}))
        .await;
    let r = c
        .cmd(json!({"type": "fire_event", "event_type": "my_event", "event_data": {"a": 1}}))
        .await;
    assert!(r["result"]["context"]["id"].is_string());
    let e = c.event().await;
    assert_eq!(
        (
            e["event"]["origin"].clone(),
            e["event"]["data"]["a"].clone()
        ),
        (json!("REMOTE"), json!(1))
    );
    let info = c.cmd(json!({"type": "recorder/info"})).await;
    assert_eq!(info["result"]["backlog"], 0);
    assert_eq!(info["result"]["thread_running"], true);
}

#[tokio::test]
async fn long_lived_tokens() {
    let sim = sim().await;
    let mut c = Client::admin(&sim).await;
    let r = c
        .cmd(json!({"type": "auth/long_lived_access_token", "client_name": "probe"}))
        .await;
    assert_eq!(
        r["error"],
        json!({"code": "invalid_format", "message": "required key not provided @ data['lifespan']. Got None"})
    );
    let r = c
        .cmd(json!({"type": "auth/long_lived_access_token", "client_name": "probe", "lifespan": 1}))
        .await;
    let token = r["result"].as_str().unwrap().to_string();
    assert_eq!(token.split('.').count(), 3, "JWT-shaped");
    let r = c
        .cmd(json!({"type": "auth/long_lived_access_token", "client_name": "probe", "lifespan": 1}))
        .await;
    assert_eq!(
        r["error"],
        json!({"code": "unknown_error", "message": "Unknown error"})
    );
    let mut c2 = Client::auth(&sim, &token).await;
    assert_eq!(c2.cmd(json!({"type": "ping"})).await["type"], "pong");
    assert_eq!(get(&sim, "/api/", &token).await.status, 200);
}

#[tokio::test]
async fn sign_path_get_only_same_path() {
    let sim = sim().await;
    let mut c = Client::auth(&sim, "sim-user-token").await;
    let r = c.cmd(json!({"type": "auth/sign_path", "path": "/api/states/input_number.test_level", "expires": 30})).await;
    let path = r["result"]["path"].as_str().unwrap().to_string();
    assert!(
        path.starts_with("/api/states/input_number.test_level?authSig="),
        "{path}"
    );
    let ok = http(&sim, "GET", &path, &[], None).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["entity_id"], "input_number.test_level");
    let sig = path.split_once('?').unwrap().1;
    assert_eq!(
        http(
            &sim,
            "GET",
            &format!("/api/states/light.kitchen?{sig}"),
            &[],
            None
        )
        .await
        .status,
        401
    );
    assert_eq!(
        http(
            &sim,
            "POST",
            &path,
            &[],
            Some(("application/json", "{\"state\":\"1\"}"))
        )
        .await
        .status,
        401
    );
}

#[tokio::test]
async fn subscribe_trigger_state() {
    let sim = sim().await;
    let mut c = Client::admin(&sim).await;
    let r = c.cmd(json!({"type": "subscribe_trigger", "trigger": {"platform": "state", "entity_id": "light.kitchen", "to": "off"}})).await;
    assert_eq!(r["success"], true);
    sim.set_state("light.living_room", "on", json!({}));
    sim.set_state("light.kitchen", "off", json!({}));
    let e = c.event().await;
    assert_eq!(
        e["event"]["variables"]["trigger"]["to_state"]["state"],
        "off"
    );
    assert_eq!(
        e["event"]["variables"]["trigger"]["entity_id"],
        "light.kitchen"
    );
    let _ = Duration::ZERO;
}
