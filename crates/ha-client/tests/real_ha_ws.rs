//! The WebSocket client against a real Home Assistant (`scripts/real-ha.sh start`). The scenarios
//! shared with the simulator are in `real_ha_scenarios.rs`.
#![cfg(feature = "real-ha")]

use std::time::Duration;

use futures_util::StreamExt;
use ha_client::auth::{Credentials, OAuth2TokenSource, OAuthClient, StaticToken};
use ha_client::ws::{ConnectionState, WsClient};
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
