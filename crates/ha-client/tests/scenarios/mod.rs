//! Client scenarios that run unchanged against the simulator (`sim_scenarios.rs`) and a real Home
//! Assistant (`real_ha_scenarios.rs`), so the two servers cannot drift apart.

use std::time::Duration;

use futures_util::StreamExt;
use ha_client::auth::{Credentials, OAuth2TokenSource, OAuthClient, StaticToken, TokenSource};
use ha_client::ws::{HaEvent, HistoryQuery, StateChangedData, WsClient};
use ha_client::{Client, Error, Secret};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

/// A server to run the scenarios against.
pub struct Target {
    pub url: String,
    pub client_id: String,
    pub admin_token: String,
    pub user_token: String,
    pub admin: (String, String),
    pub user: (String, String),
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{nanos}")
}

async fn ws(t: &Target, token: &str) -> WsClient {
    WsClient::builder(&t.url)
        .token_source(StaticToken::new(token))
        .connect()
        .await
        .expect("connect")
}

fn rest(t: &Target) -> Client {
    Client::builder(&t.url)
        .token_source(StaticToken::new(&t.admin_token))
        .build()
        .unwrap()
}

async fn set_state(t: &Target, entity: &str, state: &str) -> Value {
    rest(t)
        .post_json(
            &format!("/api/states/{entity}"),
            &json!({"state": state, "attributes": {"unit_of_measurement": "W"}}),
        )
        .await
        .expect("POST /api/states")
}

pub async fn websocket_auth_ok_and_final_failure(t: &Target) {
    let admin = ws(t, &t.admin_token).await;
    assert!(!admin.ha_version().unwrap_or_default().is_empty());
    assert!(admin.current_user().await.unwrap().is_admin);
    let user = ws(t, &t.user_token).await;
    assert!(!user.current_user().await.unwrap().is_admin);
    let err = WsClient::builder(&t.url)
        .token_source(StaticToken::new("not-a-valid-token"))
        .retry_initial_connect(true)
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::AuthInvalid { .. }) && err.is_final(),
        "{err}"
    );
}

pub async fn login_refresh_revoke(t: &Target) {
    let oauth = OAuthClient::new(t.url.parse().unwrap(), &t.client_id).unwrap();
    let wrong = Credentials::new(&t.admin.0, Secret::new("wrong-password"));
    assert!(matches!(
        oauth.login(&wrong, None).await,
        Err(Error::InvalidCredentials)
    ));
    let mut tokens = oauth
        .login(&Credentials::new(&t.user.0, Secret::new(&t.user.1)), None)
        .await
        .unwrap();
    tokens.expires_at = 0;
    let source = OAuth2TokenSource::new(tokens.clone()).unwrap();
    source.access_token().await.unwrap();
    assert_eq!(source.tokens().refresh_token, tokens.refresh_token);
    let client = Client::builder(&t.url)
        .token_source(source)
        .build()
        .unwrap();
    assert_eq!(client.api_status().await.unwrap(), "API running.");
    oauth.revoke(&tokens.refresh_token).await.unwrap();
    assert!(matches!(
        oauth.refresh(&tokens).await,
        Err(Error::InvalidGrant)
    ));
}

pub async fn state_changes_arrive_in_order(t: &Target) {
    let admin = ws(t, &t.admin_token).await;
    let mut events = admin.subscribe_events(Some("state_changed")).await.unwrap();
    let entity = format!("sensor.{}", unique("scenario"));
    for v in ["1", "2", "3"] {
        set_state(t, &entity, v).await;
    }
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        while seen.len() < 3 {
            let e: HaEvent = events.next().await.expect("stream open").parse().unwrap();
            let data: StateChangedData = serde_json::from_value(e.data).unwrap();
            if data.entity_id == entity {
                seen.push(data.new_state.unwrap().state);
            }
        }
    })
    .await
    .expect("events in time");
    assert_eq!(seen, ["1", "2", "3"]);
}

pub async fn non_admin_subscriptions(t: &Target) {
    let user = ws(t, &t.user_token).await;
    let err = user.subscribe_events(None).await.unwrap_err();
    assert!(matches!(err, Error::CommandUnauthorized { .. }), "{err}");
    let err = user.fire_event("scenario_event", None).await.unwrap_err();
    assert!(matches!(err, Error::CommandUnauthorized { .. }), "{err}");
    let mut events = user.subscribe_events(Some("state_changed")).await.unwrap();
    let entity = format!("sensor.{}", unique("user_scenario"));
    set_state(t, &entity, "9").await;
    tokio::time::timeout(WAIT, async {
        loop {
            let e: HaEvent = events.next().await.expect("stream open").parse().unwrap();
            if e.data["entity_id"] == entity.as_str() {
                return;
            }
        }
    })
    .await
    .expect("the non-admin user sees the change");
}

pub async fn long_lived_tokens(t: &Target) {
    let admin = ws(t, &t.admin_token).await;
    let name = unique("scenario-llat");
    let token = admin.create_long_lived_token(&name, 1, None).await.unwrap();
    let other = WsClient::builder(&t.url)
        .token_source(StaticToken::from(token))
        .connect()
        .await
        .unwrap();
    assert!(other.current_user().await.unwrap().is_admin);
    let err = admin
        .create_long_lived_token(&name, 1, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Command { code, .. } if code == "unknown_error"),
        "{err}"
    );
}

pub async fn signed_paths_are_get_only(t: &Target) {
    let admin = ws(t, &t.admin_token).await;
    let entity = format!("sensor.{}", unique("signed"));
    set_state(t, &entity, "5").await;
    let url = admin
        .sign_path(&format!("/api/states/{entity}"), Duration::from_secs(30))
        .await
        .unwrap();
    let http = ha_client::TlsOptions::default()
        .reqwest_builder()
        .unwrap()
        .build()
        .unwrap();
    let get = http.get(url.clone()).send().await.unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(get.json::<Value>().await.unwrap()["state"], "5");
    assert_eq!(
        http.post(url)
            .json(&json!({"state": "6"}))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

pub async fn history_has_what_was_set(t: &Target) {
    let admin = ws(t, &t.admin_token).await;
    let entity = format!("sensor.{}", unique("history"));
    let before =
        humantime::format_rfc3339_micros(std::time::SystemTime::now() - Duration::from_secs(1))
            .to_string();
    let first = set_state(t, &entity, "5").await;
    set_state(t, &entity, "6").await;
    set_state(t, &entity, "7").await;
    let first_at = first["last_updated"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let h = admin
            .history_during_period(&HistoryQuery::new(&before, vec![entity.clone()]))
            .await
            .unwrap();
        let states: Vec<String> = h
            .get(&entity)
            .map(|v| v.iter().map(|s| s.state.clone()).collect())
            .unwrap_or_default();
        if states == ["5", "6", "7"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "history never showed the three states: {states:?}"
        );
        // The recorder commits about once a second.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // HA's window is exclusive of its start: a change exactly at start_time is not returned, even
    // with include_start_time_state (the entity did not exist before it). Backfill must start earlier.
    let query = HistoryQuery {
        include_start_time_state: true,
        ..HistoryQuery::new(&first_at, vec![entity.clone()])
    };
    let h = admin.history_during_period(&query).await.unwrap();
    let states: Vec<&str> = h[&entity].iter().map(|s| s.state.as_str()).collect();
    assert_eq!(states, ["6", "7"]);
}
