//! Login flow, token endpoints and REST.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;

const CID: &str = "http://127.0.0.1:18123/";

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn login(sim: &Sim, user: &str, pass: &str) -> (String, Value) {
    let start = json_post(
        sim,
        "/auth/login_flow",
        None,
        &json!({"client_id": CID, "handler": ["homeassistant", null], "redirect_uri": CID}),
    )
    .await;
    assert_eq!(start.status, 200);
    let s = start.json();
    assert_eq!(
        (s["type"].clone(), s["step_id"].clone(), s["errors"].clone()),
        (json!("form"), json!("init"), json!({}))
    );
    let flow = s["flow_id"].as_str().unwrap().to_string();
    let r = json_post(
        sim,
        &format!("/auth/login_flow/{flow}"),
        None,
        &json!({"client_id": CID, "username": user, "password": pass}),
    )
    .await;
    assert_eq!(r.status, 200);
    (flow, r.json())
}

async fn exchange(sim: &Sim, code: &str) -> Value {
    let r = form_post(
        sim,
        "/auth/token",
        &format!(
            "grant_type=authorization_code&code={code}&client_id={}",
            enc(CID)
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.headers.get("cache-control").map(String::as_str),
        Some("no-store")
    );
    r.json()
}

#[tokio::test]
async fn login_flow_and_token_grants() {
    let sim = sim().await;
    let (flow, wrong) = login(&sim, "admin", "wrong").await;
    assert_eq!(wrong["errors"], json!({"base": "invalid_auth"}));
    assert_eq!(wrong["flow_id"], flow.as_str());
    let r = json_post(
        &sim,
        &format!("/auth/login_flow/{flow}"),
        None,
        &json!({"client_id": CID, "username": "admin", "password": "admin-pass"}),
    )
    .await
    .json();
    assert_eq!(r["type"], "create_entry");
    assert_eq!(r["version"], 1);
    let code = r["result"].as_str().unwrap().to_string();
    let tok = exchange(&sim, &code).await;
    assert_eq!(
        (
            tok["token_type"].clone(),
            tok["expires_in"].clone(),
            tok["ha_auth_provider"].clone()
        ),
        (json!("Bearer"), json!(1800), json!("homeassistant"))
    );
    let access = tok["access_token"].as_str().unwrap().to_string();
    let refresh = tok["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(
        get(&sim, "/api/", &access).await.json(),
        json!({"message": "API running."})
    );
    // Same code again.
    let r = form_post(
        &sim,
        "/auth/token",
        &format!(
            "grant_type=authorization_code&code={code}&client_id={}",
            enc(CID)
        ),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            json!({"error": "invalid_request", "error_description": "Invalid code"})
        )
    );
    // Refresh: same client id only.
    let ok = form_post(
        &sim,
        "/auth/token",
        &format!(
            "grant_type=refresh_token&refresh_token={refresh}&client_id={}",
            enc(CID)
        ),
    )
    .await;
    assert_eq!(ok.status, 200);
    let ok = ok.json();
    assert!(ok.get("refresh_token").is_none() && ok["expires_in"] == 1800);
    let other = form_post(
        &sim,
        "/auth/token",
        &format!(
            "grant_type=refresh_token&refresh_token={refresh}&client_id={}",
            enc("http://other.example/")
        ),
    )
    .await;
    assert_eq!(
        (other.status, other.json()),
        (400, json!({"error": "invalid_request"}))
    );
    let none = form_post(
        &sim,
        "/auth/token",
        &format!("grant_type=refresh_token&refresh_token={refresh}"),
    )
    .await;
    assert_eq!(none.json(), json!({"error": "invalid_request"}));
    let bad_cid = form_post(
        &sim,
        "/auth/token",
        "grant_type=authorization_code&code=x&client_id=not%20a%20url",
    )
    .await;
    assert_eq!(
        bad_cid.json(),
        json!({"error": "invalid_request", "error_description": "Invalid client id"})
    );
    let pw = form_post(
        &sim,
        "/auth/token",
        "grant_type=password&username=admin&password=admin-pass",
    )
    .await;
    assert_eq!(
        (pw.status, pw.json()),
        (400, json!({"error": "unsupported_grant_type"}))
    );
    let as_json = json_post(
        &sim,
        "/auth/token",
        None,
        &json!({"grant_type": "refresh_token", "refresh_token": refresh, "client_id": CID}),
    )
    .await;
    assert_eq!(
        (as_json.status, as_json.json()),
        (400, json!({"error": "unsupported_grant_type"}))
    );
    // A WS authenticated with a token of this refresh token is closed by the revoke.
    let mut c = Client::auth(&sim, &access).await;
    let rv = form_post(&sim, "/auth/revoke", &format!("token={refresh}")).await;
    assert_eq!((rv.status, rv.body.as_str()), (200, ""));
    assert_eq!(c.ended().await, Ended::CloseFrame);
    let after = form_post(
        &sim,
        "/auth/token",
        &format!(
            "grant_type=refresh_token&refresh_token={refresh}&client_id={}",
            enc(CID)
        ),
    )
    .await;
    assert_eq!(after.json(), json!({"error": "invalid_grant"}));
    assert_eq!(get(&sim, "/api/", &access).await.status, 401);
    assert_eq!(
        form_post(&sim, "/auth/revoke", "token=unknown")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn legacy_revoke_and_bad_flows() {
    let sim = sim().await;
    let (_, r) = login(&sim, "user", "user-pass").await;
    let tok = exchange(&sim, r["result"].as_str().unwrap()).await;
    let refresh = tok["refresh_token"].as_str().unwrap();
    assert_eq!(
        form_post(
            &sim,
            "/auth/token",
            &format!("action=revoke&token={refresh}")
        )
        .await
        .status,
        200
    );
    let after = form_post(
        &sim,
        "/auth/token",
        &format!(
            "grant_type=refresh_token&refresh_token={refresh}&client_id={}",
            enc(CID)
        ),
    )
    .await;
    assert_eq!(after.json(), json!({"error": "invalid_grant"}));
    let nope = json_post(
        &sim,
        "/auth/login_flow",
        None,
        &json!({"client_id": CID, "handler": ["nope", null], "redirect_uri": CID}),
    )
    .await;
    assert_eq!(
        (nope.status, nope.body.as_str()),
        (
            500,
            "500 Internal Server Error\n\nServer got itself in trouble"
        )
    );
    let evil = json_post(&sim, "/auth/login_flow", None, &json!({"client_id": CID, "handler": ["homeassistant", null], "redirect_uri": "http://evil.example/"})).await.json();
    let flow = evil["flow_id"].as_str().unwrap();
    let r = json_post(
        &sim,
        &format!("/auth/login_flow/{flow}"),
        None,
        &json!({"client_id": CID, "username": "admin", "password": "admin-pass"}),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (403, json!({"message": "Invalid redirect URI"}))
    );
    let r = json_post(
        &sim,
        "/auth/login_flow/nope",
        None,
        &json!({"client_id": CID}),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"message": "Invalid flow specified"}))
    );
    let p = http(&sim, "GET", "/auth/providers", &[], None).await.json();
    assert_eq!(
        p,
        json!({"providers": [{"name": "Home Assistant Local", "id": null, "type": "homeassistant"}], "preselect_remember_me": true})
    );
}

#[tokio::test]
async fn totp_step() {
    let sim = sim().await;
    let (flow, r) = login(&sim, "mfa", "mfa-pass").await;
    assert_eq!(
        (r["type"].clone(), r["step_id"].clone()),
        (json!("form"), json!("mfa"))
    );
    let bad = json_post(
        &sim,
        &format!("/auth/login_flow/{flow}"),
        None,
        &json!({"client_id": CID, "code": "000000"}),
    )
    .await
    .json();
    let bad = if bad["errors"]["base"] == "invalid_code" {
        bad
    } else {
        panic!("{bad}")
    };
    assert_eq!(bad["step_id"], "mfa");
    let code = ha_testenv::totp(crate::DEFAULT_TOTP_SECRET);
    let ok = json_post(
        &sim,
        &format!("/auth/login_flow/{flow}"),
        None,
        &json!({"client_id": CID, "code": code}),
    )
    .await
    .json();
    assert_eq!(ok["type"], "create_entry", "{ok}");
    exchange(&sim, ok["result"].as_str().unwrap()).await;
}

#[tokio::test]
async fn access_tokens_expire_and_refresh() {
    let sim = Sim::start(SimConfig {
        access_token_ttl: Duration::from_millis(1200),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let (_, r) = login(&sim, "admin", "admin-pass").await;
    let tok = exchange(&sim, r["result"].as_str().unwrap()).await;
    assert_eq!(tok["expires_in"], 1);
    let access = tok["access_token"].as_str().unwrap().to_string();
    assert_eq!(get(&sim, "/api/", &access).await.status, 200);
    // An open WS outlives its token.
    let mut c = Client::auth(&sim, &access).await;
    let deadline = tokio::time::Instant::now() + T;
    while get(&sim, "/api/", &access).await.status == 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "token never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.cmd(json!({"type": "ping"})).await["type"], "pong");
    let refresh = tok["refresh_token"].as_str().unwrap();
    let fresh = form_post(
        &sim,
        "/auth/token",
        &format!(
            "grant_type=refresh_token&refresh_token={refresh}&client_id={}",
            enc(CID)
        ),
    )
    .await
    .json();
    assert_eq!(
        get(&sim, "/api/", fresh["access_token"].as_str().unwrap())
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn rest_auth_and_states() {
    let sim = sim().await;
    let r = http(&sim, "GET", "/api/", &[], None).await;
    assert_eq!((r.status, r.body.as_str()), (401, "401: Unauthorized"));
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        http(
            &sim,
            "GET",
            "/api/",
            &[("Authorization", "sim-admin-token")],
            None
        )
        .await
        .status,
        401,
        "Bearer prefix required"
    );
    assert_eq!(
        http(
            &sim,
            "GET",
            "/api/",
            &[("Authorization", "bearer sim-admin-token")],
            None
        )
        .await
        .status,
        401
    );
    let r = get(&sim, "/api/states/sensor.does_not_exist", "sim-user-token").await;
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"message": "Entity not found."}))
    );
    assert!(
        get(&sim, "/api/states", "sim-user-token")
            .await
            .json()
            .as_array()
            .unwrap()
            .len()
            > 10
    );
    let body = json!({"state": "42", "attributes": {"unit_of_measurement": "W"}});
    let r = json_post(
        &sim,
        "/api/states/sensor.probe",
        Some("sim-admin-token"),
        &body,
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        r.headers.get("location").map(String::as_str),
        Some("/api/states/sensor.probe")
    );
    assert_eq!(r.json()["state"], "42");
    assert!(
        r.json().get("last_reported").is_none(),
        "2024.3.3 has no last_reported"
    );
    assert_eq!(
        json_post(
            &sim,
            "/api/states/sensor.probe",
            Some("sim-admin-token"),
            &body
        )
        .await
        .status,
        200
    );
    assert_eq!(
        json_post(
            &sim,
            "/api/states/sensor.probe",
            Some("sim-user-token"),
            &body
        )
        .await
        .status,
        401
    );
    assert_eq!(
        json_post(&sim, "/api/events/x", Some("sim-user-token"), &json!({}))
            .await
            .status,
        401
    );
    let r = json_post(
        &sim,
        "/api/events/realha_custom",
        Some("sim-admin-token"),
        &json!({"n": 2}),
    )
    .await;
    assert_eq!(r.json(), json!({"message": "Event realha_custom fired."}));
    let r = json_post(
        &sim,
        "/api/services/input_boolean/toggle",
        Some("sim-user-token"),
        &json!({"entity_id": "input_boolean.test_switch"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["state"], "on");
    let cfg = get(&sim, "/api/config", "sim-user-token").await.json();
    assert_eq!(
        (cfg["state"].clone(), cfg["version"].clone()),
        (json!("RUNNING"), json!("2024.3.3"))
    );
    assert_eq!(http(&sim, "GET", "/nope", &[], None).await.status, 404);
}
