//! The blocking WebSocket client against the simulator: connect, commands, a subscription as an
//! iterator, signed paths and long-lived tokens, from a thread without an async runtime.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use ha_client::Error;
use ha_client::auth::StaticToken;
use ha_client::blocking::{Client, WsClient};
use ha_client::ws::ConnectionState;
use ha_sim::{Sim, SimConfig};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

/// The simulator on a runtime of its own; the test's thread stays free of one.
fn sim() -> (tokio::runtime::Runtime, Sim) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(Sim::start(SimConfig::default())).unwrap();
    (rt, sim)
}

fn connect(sim: &Sim, token: &str) -> WsClient {
    WsClient::builder(sim.url())
        .token_source(StaticToken::new(token))
        .connect()
        .expect("connect")
}

fn set_state(sim: &Sim, entity: &str, state: &str) {
    let rest = Client::builder(sim.url())
        .token_source(StaticToken::new(&sim.config().admin_token))
        .build()
        .unwrap();
    let _: Value = rest
        .post_json(
            &format!("/api/states/{entity}"),
            &json!({"state": state, "attributes": {"unit_of_measurement": "W"}}),
        )
        .unwrap();
}

/// Runs `f` on a thread and waits for it at most `WAIT` (an iterator that never yields would
/// otherwise hang the test).
fn within_deadline<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(WAIT).expect("finished within the deadline")
}

#[test]
fn connect_command_and_typed_errors() {
    let (_rt, sim) = sim();
    let ws = connect(&sim, &sim.config().admin_token);
    assert_eq!(
        ws.ha_version().as_deref(),
        Some(sim.config().ha_version.as_str())
    );
    assert!(matches!(
        ws.connection_state(),
        ConnectionState::Connected { .. }
    ));
    assert!(ws.current_user().unwrap().is_admin);
    let config: Value = ws.command(json!({"type": "get_config"})).unwrap();
    assert_eq!(config["state"], "RUNNING");
    let err = ws
        .command::<Value>(json!({"type": "no_such_command"}))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Command { code, .. } if code == "unknown_command"),
        "{err}"
    );
    let err = WsClient::builder(sim.url())
        .token_source(StaticToken::new("not-a-valid-token"))
        .connect()
        .unwrap_err();
    assert!(
        matches!(err, Error::AuthInvalid { .. }) && err.is_final(),
        "{err}"
    );
}

#[test]
fn a_subscription_is_an_iterator_of_typed_events() {
    let (_rt, sim) = sim();
    let ws = connect(&sim, &sim.config().admin_token);
    let mut events = ws.subscribe_events(Some("state_changed")).unwrap();
    for state in ["1", "2", "3"] {
        set_state(&sim, "sensor.blocking_probe", state);
    }
    // With a deadline first...
    let deadline = Instant::now() + WAIT;
    let first = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = events.next_timeout(left).unwrap().expect("stream open");
        let sc = e.state_changed().unwrap();
        if sc.entity_id == "sensor.blocking_probe" {
            break e;
        }
    };
    let sc = first.state_changed().unwrap();
    let new = sc.new_state.as_ref().unwrap();
    assert_eq!(new.state, "1");
    assert_eq!(
        new.last_updated_us(),
        ha_client::time::micros_from_iso(new.last_updated)
    );
    assert!(new.last_updated_us().is_some() && sc.time_fired_us().is_some());
    // ...then as an iterator, in order; it ends when the client closes.
    let ws2 = ws.clone();
    let (states, ended) = within_deadline(move || {
        let mut states = Vec::new();
        for e in events.by_ref() {
            let sc: ha_client::ws::StateChangedEvent = e.parse().unwrap();
            if sc.entity_id == "sensor.blocking_probe" {
                states.push(sc.new_state.unwrap().state);
            }
            if states.len() == 2 {
                break;
            }
        }
        ws2.close();
        (states, events.next().is_none())
    });
    assert_eq!(states, ["2", "3"]);
    assert!(ended, "the iterator ends when the client closes");
    let mut late = ws.subscribe_events(None);
    assert!(
        matches!(late.as_mut().map(|_| ()), Err(Error::Closed)),
        "{late:?}"
    );
}

#[test]
fn next_timeout_says_when_nothing_came() {
    let (_rt, sim) = sim();
    let ws = connect(&sim, &sim.config().admin_token);
    let mut events = ws
        .subscribe_events(Some("blocking_nothing_fires_this"))
        .unwrap();
    let err = events.next_timeout(Duration::from_millis(50)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    // Still subscribed: an event of that type arrives.
    ws.fire_event("blocking_nothing_fires_this", Some(json!({"n": 1})))
        .unwrap();
    let e = events.next_timeout(WAIT).unwrap().expect("stream open");
    let e: ha_client::ws::HaEvent = e.parse().unwrap();
    assert_eq!(e.data["n"], 1);
}

#[test]
fn signed_paths_and_long_lived_tokens() {
    let (rt, sim) = sim();
    let ws = connect(&sim, &sim.config().admin_token);
    set_state(&sim, "sensor.blocking_signed", "5");
    let url = ws
        .sign_path(
            "/api/states/sensor.blocking_signed",
            Duration::from_secs(30),
        )
        .unwrap();
    assert!(url.as_str().starts_with(&sim.url()), "{url}");
    // A plain GET, no Authorization header.
    let http = ha_client::TlsOptions::default()
        .reqwest_builder()
        .unwrap()
        .build()
        .unwrap();
    let body: Value = rt.block_on(async {
        let r = http.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    });
    assert_eq!(body["state"], "5");

    let token = ws
        .create_long_lived_token("blocking-test", 1, None)
        .unwrap();
    let other = WsClient::builder(sim.url())
        .token_source(StaticToken::from(token))
        .connect()
        .unwrap();
    assert!(other.current_user().unwrap().is_admin);
    let err = ws
        .create_long_lived_token("blocking-test", 1, None)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Command { code, .. } if code == "unknown_error"),
        "{err}"
    );
}

#[tokio::test]
async fn refused_inside_an_async_runtime() {
    let err = WsClient::builder("http://127.0.0.1:9")
        .token_source(StaticToken::new("t"))
        .connect()
        .unwrap_err();
    assert!(matches!(err, Error::BlockingInAsyncContext), "{err}");
}
