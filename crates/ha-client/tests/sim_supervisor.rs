//! Home Assistant as an add-on reaches it: through the Supervisor's Core proxy, which the simulator
//! serves the Supervisor's way (`/core/api/...`, `/core/websocket`, the proxy's own auth phase,
//! 502 while Core is down, and "auth_ok, then closed" when the proxy cannot log in to Core).

mod flow;

use std::time::Duration;

use flow::expect_flow;
use ha_client::auth::StaticToken;
use ha_client::ws::{Backoff, ConnectionEvent, WsClient, WsConfig};
use ha_client::{Client, Error, HaUrl};
use ha_sim::{Sim, SimConfig};

const WAIT: Duration = Duration::from_secs(10);

fn core(sim: &Sim) -> HaUrl {
    HaUrl::supervisor_proxy(&sim.supervisor_url()).unwrap()
}

fn supervisor_token(sim: &Sim) -> StaticToken {
    StaticToken::new(sim.config().supervisor_token.clone())
}

fn fast() -> WsConfig {
    WsConfig {
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
            stable_after: Duration::from_secs(30),
        },
        ..WsConfig::default()
    }
}

/// Sets a state until its event arrives on `events`.
#[tokio::test]
async fn websocket_and_rest_work_through_the_proxy_as_an_admin() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let ws = WsClient::builder(core(&sim))
        .token_source(supervisor_token(&sim))
        .connect()
        .await
        .expect("connect through the proxy");
    assert_eq!(ws.ha_version().as_deref(), Some("2024.3.3"));
    // Every event type: an admin-only subscription, allowed because the proxy is an admin on Core.
    let mut events = ws.subscribe_events(None).await.unwrap();
    expect_flow(&sim, &mut events, "sensor.through_the_proxy", WAIT).await;
    assert!(!ws.get_states().await.unwrap().is_empty());

    let rest = Client::builder(core(&sim))
        .token_source(supervisor_token(&sim))
        .build()
        .unwrap();
    assert_eq!(rest.api_status().await.unwrap(), "API running.");
    let states: Vec<serde_json::Value> = rest.get_json("/api/states").await.unwrap();
    assert!(
        states
            .iter()
            .any(|s| s["entity_id"] == "sensor.through_the_proxy")
    );
}

#[tokio::test]
async fn another_token_is_refused_for_good_by_both_doors() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    // Even the admin's own long-lived token: the proxy takes only the add-on's.
    let wrong = StaticToken::new(sim.config().admin_token.clone());
    let e = WsClient::builder(core(&sim))
        .token_source(wrong.clone())
        .connect()
        .await
        .expect_err("refused");
    assert!(matches!(e, Error::AuthInvalid { .. }), "{e:?}");
    assert!(e.to_string().contains("Invalid access"), "{e}");
    assert!(e.is_final(), "{e}");

    let rest = Client::builder(core(&sim))
        .token_source(wrong)
        .build()
        .unwrap();
    let e = rest.api_status().await.unwrap_err();
    assert!(e.is_final() && e.to_string().contains("401"), "{e:?}");
}

#[tokio::test]
async fn auth_ok_then_closed_is_a_transient_failure_not_an_auth_failure() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let ws = WsClient::builder(core(&sim))
        .token_source(supervisor_token(&sim))
        .config(fast())
        .connect()
        .await
        .unwrap();
    let mut conn = ws.connection_events();
    let mut events = ws.subscribe_events(Some("state_changed")).await.unwrap();

    // The proxy can no longer log in to Core: each new socket gets auth_ok, then is closed. The
    // client must keep trying (three refused relays), never report an auth failure.
    sim.set_supervisor_relay_fails(true);
    sim.drop_connections();
    tokio::time::timeout(WAIT, async {
        while sim.stats().supervisor_relay_failures < 3 {
            if let Ok(Ok(ConnectionEvent::AuthFailed { message })) =
                tokio::time::timeout(Duration::from_millis(20), conn.recv()).await
            {
                panic!("auth_ok then closed was taken for an auth failure: {message}")
            }
        }
    })
    .await
    .expect("the client tried again three times");
    while let Ok(e) = conn.try_recv() {
        assert!(!matches!(e, ConnectionEvent::AuthFailed { .. }), "{e:?}");
    }
    sim.set_supervisor_relay_fails(false);
    expect_flow(&sim, &mut events, "sensor.after_the_relay", WAIT).await;
}

#[tokio::test]
async fn core_down_is_502_and_retried_until_it_is_up() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    sim.set_supervisor_core_down(true);
    let e = WsClient::builder(core(&sim))
        .token_source(supervisor_token(&sim))
        .connect()
        .await
        .expect_err("502");
    assert!(e.is_transient() && e.to_string().contains("502"), "{e:?}");
    let rest = Client::builder(core(&sim))
        .token_source(supervisor_token(&sim))
        .build()
        .unwrap();
    let e = rest
        .get_json::<serde_json::Value>("/api/config")
        .await
        .unwrap_err();
    assert!(e.is_transient() && e.to_string().contains("502"), "{e:?}");

    let connecting = tokio::spawn({
        let url = core(&sim);
        let token = supervisor_token(&sim);
        async move {
            WsClient::builder(url)
                .token_source(token)
                .config(fast())
                .retry_initial_connect(true)
                .connect()
                .await
        }
    });
    // It keeps asking (more 502s) while Core is down, without giving up.
    let before = sim.stats().supervisor_bad_gateway;
    tokio::time::timeout(WAIT, async {
        while sim.stats().supervisor_bad_gateway < before + 3 {
            assert!(!connecting.is_finished(), "gave up while Core was down");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("three more attempts while Core was down");
    sim.set_supervisor_core_down(false);
    let ws = tokio::time::timeout(WAIT, connecting)
        .await
        .expect("connected once Core is up")
        .unwrap()
        .unwrap();
    assert!(!ws.get_states().await.unwrap().is_empty());
}
