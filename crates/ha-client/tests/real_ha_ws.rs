//! The WebSocket client against a real Home Assistant (`scripts/real-ha.sh start`).
#![cfg(feature = "real-ha")]

use std::time::Duration;

use futures_util::StreamExt;
use ha_client::auth::{Credentials, OAuth2TokenSource, OAuthClient, StaticToken};
use ha_client::ws::{ConnectionState, HaEvent, HistoryQuery, StateChangedData, WsClient};
use ha_client::{Client, Error, Secret};
use ha_testenv::RealHa;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

async fn admin_ws(ha: &RealHa) -> WsClient {
    WsClient::builder(&ha.url)
        .token_source(StaticToken::new(ha.admin.long_lived_token.clone().unwrap()))
        .connect()
        .await
        .expect("connect as admin")
}

fn admin_rest(ha: &RealHa) -> Client {
    Client::builder(&ha.url)
        .token_source(StaticToken::new(ha.admin.long_lived_token.clone().unwrap()))
        .build()
        .unwrap()
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{nanos}")
}

#[tokio::test]
async fn auth_ok_and_typed_commands() {
    let ha = RealHa::from_env();
    let ws = admin_ws(&ha).await;
    assert_eq!(ws.ha_version().as_deref(), Some(ha.ha_version.as_str()));
    assert!(matches!(
        &*ws.connection_state().borrow(),
        ConnectionState::Connected { .. }
    ));
    let config = ws.get_config().await.unwrap();
    assert_eq!(config.state.as_deref(), Some("RUNNING"));
    let me = ws.current_user().await.unwrap();
    assert!(me.is_admin && me.is_owner);
    let states = ws.get_states().await.unwrap();
    assert!(
        states
            .iter()
            .any(|s| s.entity_id == "input_boolean.test_switch")
    );
    let info = ws.recorder_info().await.unwrap();
    assert!(info.backlog.is_some());
    // A failed command carries HA's code and message.
    let err = ws
        .call_service("input_number", "nope", None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Command { code, .. } if code == "not_found"),
        "{err}"
    );
    let err = ws
        .command_raw(json!({"type": "no_such_command"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Command { code, .. } if code == "unknown_command"),
        "{err}"
    );
    // The raw escape hatch.
    let pong = ws.command_raw(json!({"type": "get_config"})).await.unwrap();
    assert!(pong.get().contains("RUNNING"));
}

#[tokio::test]
async fn bad_token_is_final_and_tried_once() {
    let ha = RealHa::from_env();
    let proxy = ha_testenv::CountingProxy::start(ha.addr()).await;
    let err = WsClient::builder(&proxy.url)
        .token_source(StaticToken::new("not-a-token"))
        .retry_initial_connect(true)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuthInvalid { .. }), "{err}");
    assert!(err.is_final());
    assert!(!err.to_string().contains("not-a-token"));
    assert_eq!(
        proxy.requests(),
        vec!["GET /api/websocket HTTP/1.1".to_string()]
    );
}

#[tokio::test]
async fn oauth_tokens_work_on_the_websocket() {
    let ha = RealHa::from_env();
    let oauth = OAuthClient::new(ha.url.parse().unwrap(), &ha.client_id).unwrap();
    let mut tokens = oauth
        .login(
            &Credentials::new(&ha.user.username, Secret::new(&ha.user.password)),
            None,
        )
        .await
        .unwrap();
    tokens.expires_at = 0; // refreshed before the connection is made
    let ws = WsClient::builder(&ha.url)
        .token_source(OAuth2TokenSource::new(tokens).unwrap())
        .connect()
        .await
        .unwrap();
    assert!(!ws.current_user().await.unwrap().is_admin);
}

#[tokio::test]
async fn long_lived_token_creation_and_duplicate_name() {
    let ha = RealHa::from_env();
    let ws = admin_ws(&ha).await;
    let name = unique("ha-client-test");
    let token = ws.create_long_lived_token(&name, 1, None).await.unwrap();
    let other = WsClient::builder(&ha.url)
        .token_source(StaticToken::from(token))
        .connect()
        .await
        .unwrap();
    assert!(other.current_user().await.unwrap().is_admin);
    let err = ws
        .create_long_lived_token(&name, 1, Some("mdi:test"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Command { code, .. } if code == "unknown_error"),
        "{err}"
    );
}

#[tokio::test]
async fn signed_path_is_readable_by_get_only() {
    let ha = RealHa::from_env();
    let ws = admin_ws(&ha).await;
    let url = ws
        .sign_path(
            "/api/states/input_boolean.test_switch",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert!(url.as_str().starts_with(&ha.url), "{url}");
    assert!(url.query().unwrap_or_default().contains("authSig="));
    let http = ha_client::TlsOptions::default()
        .reqwest_builder()
        .unwrap()
        .build()
        .unwrap();
    let get = http.get(url.clone()).send().await.unwrap();
    assert_eq!(get.status(), 200);
    let body: serde_json::Value = get.json().await.unwrap();
    assert_eq!(body["entity_id"], "input_boolean.test_switch");
    let post = http
        .post(url)
        .json(&json!({"state": "on"}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 401);
}

#[tokio::test]
async fn state_changes_arrive_on_a_subscription() {
    let ha = RealHa::from_env();
    let ws = admin_ws(&ha).await;
    let mut events = ws.subscribe_events(Some("state_changed")).await.unwrap();
    let entity = format!("sensor.{}", unique("ws_probe"));
    let rest = admin_rest(&ha);
    for v in ["1", "2", "3"] {
        let _: serde_json::Value = rest
            .post_json(
                &format!("/api/states/{entity}"),
                &json!({"state": v, "attributes": {"unit_of_measurement": "W"}}),
            )
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("event in time")
            .expect("stream open");
        let e: HaEvent = event.parse().unwrap();
        assert_eq!(e.event_type, "state_changed");
        let data: StateChangedData = serde_json::from_value(e.data).unwrap();
        if data.entity_id == entity {
            seen.push(data.new_state.unwrap().state);
        }
    }
    assert_eq!(seen, ["1", "2", "3"]);
}

#[tokio::test]
async fn subscribe_entities_decodes_changes() {
    let ha = RealHa::from_env();
    let ws = admin_ws(&ha).await;
    let entity = format!("sensor.{}", unique("ent_probe"));
    let rest = admin_rest(&ha);
    let _: serde_json::Value = rest
        .post_json(
            &format!("/api/states/{entity}"),
            &json!({"state": "10", "attributes": {"a": 1}}),
        )
        .await
        .unwrap();
    let mut sub = ws
        .subscribe_entities(Some(vec![entity.clone()]))
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.changed.len(), 1);
    assert_eq!(first.changed[0].state, "10");
    let _: serde_json::Value = rest
        .post_json(
            &format!("/api/states/{entity}"),
            &json!({"state": "11", "attributes": {"b": 2}}),
        )
        .await
        .unwrap();
    let update = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    let s = &update.changed[0];
    assert_eq!(s.state, "11");
    assert_eq!(s.attributes.get("b"), Some(&json!(2)));
    assert!(
        s.attributes.get("a").is_none(),
        "removed attribute must be gone: {s:?}"
    );
    assert!(s.last_changed > first.changed[0].last_changed);
}

#[tokio::test]
async fn non_admin_can_subscribe_state_changed_but_not_everything() {
    let ha = RealHa::from_env();
    let ws = WsClient::builder(&ha.url)
        .token_source(StaticToken::new(ha.user.long_lived_token.clone().unwrap()))
        .connect()
        .await
        .unwrap();
    let err = ws.subscribe_events(None).await.unwrap_err();
    assert!(
        matches!(&err, Error::CommandUnauthorized { command } if command == "subscribe_events"),
        "{err}"
    );
    assert!(err.to_string().contains("admin"));
    let err = ws.fire_event("ha_client_test", None).await.unwrap_err();
    assert!(matches!(err, Error::CommandUnauthorized { .. }), "{err}");
    let mut events = ws.subscribe_events(Some("state_changed")).await.unwrap();
    ws.call_service(
        "input_boolean",
        "toggle",
        None,
        Some(json!({"entity_id": "input_boolean.test_switch"})),
    )
    .await
    .unwrap();
    let event = tokio::time::timeout(WAIT, async {
        loop {
            let e = events.next().await.expect("stream open");
            let e: HaEvent = e.parse().unwrap();
            if e.data["entity_id"] == "input_boolean.test_switch" {
                return e;
            }
        }
    })
    .await
    .expect("toggle event in time");
    assert_eq!(event.event_type, "state_changed");
}

#[tokio::test]
async fn history_returns_the_states_that_were_set() {
    let ha = RealHa::from_env();
    let ws = admin_ws(&ha).await;
    let rest = admin_rest(&ha);
    let entity = format!("sensor.{}", unique("hist_probe"));
    let start = iso_one_second_ago();
    for v in ["5", "6", "7"] {
        let _: serde_json::Value = rest
            .post_json(
                &format!("/api/states/{entity}"),
                &json!({"state": v, "attributes": {"unit_of_measurement": "W"}}),
            )
            .await
            .unwrap();
    }
    // The recorder commits with a delay: wait until the history has all three (bounded).
    let deadline = tokio::time::Instant::now() + WAIT;
    let states = loop {
        let h = ws
            .history_during_period(&HistoryQuery::new(&start, vec![entity.clone()]))
            .await
            .unwrap();
        let states: Vec<String> = h
            .get(&entity)
            .map(|v| v.iter().map(|s| s.state.clone()).collect())
            .unwrap_or_default();
        if states.len() >= 3 || tokio::time::Instant::now() > deadline {
            break states;
        }
        // Poll again shortly: the recorder commits every second on the test HA.
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(states, ["5", "6", "7"]);
}

/// One second ago, as RFC 3339 (HA runs on the same clock).
fn iso_one_second_ago() -> String {
    humantime::format_rfc3339(std::time::SystemTime::now() - Duration::from_secs(1)).to_string()
}
