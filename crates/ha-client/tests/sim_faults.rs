//! Faults a real Home Assistant does not produce on demand, against the simulator (in-process, so
//! these run in `cargo test --workspace`).

mod flow;

use std::time::Duration;

use flow::expect_flow;
use futures_util::StreamExt;
use ha_client::Error;
use ha_client::auth::StaticToken;
use ha_client::ws::{Backoff, ConnectionEvent, ConnectionState, HaEvent, WsClient, WsConfig};
use ha_sim::{Sim, SimConfig};
use serde_json::json;
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(10);

async fn sim() -> Sim {
    Sim::start(SimConfig::default())
        .await
        .expect("start the simulator")
}

fn fast_config() -> WsConfig {
    WsConfig {
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
            stable_after: Duration::from_secs(30),
        },
        ..WsConfig::default()
    }
}

async fn connect(sim: &Sim, config: WsConfig) -> WsClient {
    WsClient::builder(sim.url())
        .token_source(StaticToken::new(sim.config().admin_token.clone()))
        .config(config)
        .connect()
        .await
        .expect("connect to the simulator")
}

/// Waits for a connection event matching `pred`.
async fn wait_for(
    rx: &mut broadcast::Receiver<ConnectionEvent>,
    what: &str,
    pred: impl Fn(&ConnectionEvent) -> bool,
) -> ConnectionEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            match rx.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    panic!("connection events closed while waiting for {what}")
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Sets a state until an event for it arrives on `events` (the subscription may be renewing).
#[tokio::test]
async fn drop_mid_stream_resumes_and_reports_the_gap() {
    let sim = sim().await;
    let ws = connect(&sim, fast_config()).await;
    let mut conn = ws.connection_events();
    let mut events = ws.subscribe_events(Some("state_changed")).await.unwrap();
    expect_flow(&sim, &mut events, "sensor.fault_a", WAIT).await;
    sim.drop_connections();
    wait_for(&mut conn, "Disconnected", |e| {
        matches!(e, ConnectionEvent::Disconnected { .. })
    })
    .await;
    let ConnectionEvent::Reconnected { gap_start, gap_end } =
        wait_for(&mut conn, "Reconnected", |e| {
            matches!(e, ConnectionEvent::Reconnected { .. })
        })
        .await
    else {
        unreachable!()
    };
    assert!(gap_end >= gap_start);
    expect_flow(&sim, &mut events, "sensor.fault_a", WAIT).await;
    assert_eq!(ws.stats().connects, 2);
}

#[tokio::test]
async fn in_flight_commands_fail_at_once_on_connection_loss() {
    let sim = sim().await;
    let ws = connect(&sim, fast_config()).await;
    sim.set_silent(true);
    let pending = tokio::spawn({
        let ws = ws.clone();
        async move { ws.get_states().await }
    });
    // Wait until the command is on the wire (the silent simulator will not answer it).
    tokio::time::timeout(WAIT, async {
        while ws.stats().commands_in_flight == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the command was sent");
    sim.drop_connections();
    sim.set_silent(false);
    let result = tokio::time::timeout(WAIT, pending)
        .await
        .expect("failed in time")
        .unwrap();
    let err = result.unwrap_err();
    assert!(matches!(err, Error::ConnectionLost { .. }), "{err}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn half_open_socket_is_caught_by_the_watchdog() {
    let sim = sim().await;
    let config = WsConfig {
        ping_interval: Some(Duration::from_millis(100)),
        ping_timeout: Duration::from_millis(400),
        ..fast_config()
    };
    let ws = connect(&sim, config).await;
    let mut conn = ws.connection_events();
    let mut events = ws.subscribe_events(Some("state_changed")).await.unwrap();
    let silenced_at = std::time::SystemTime::now();
    sim.set_silent(true);
    let ConnectionEvent::Disconnected { reason, .. } = wait_for(&mut conn, "Disconnected", |e| {
        matches!(e, ConnectionEvent::Disconnected { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert!(reason.contains("ping"), "{reason}");
    assert!(ws.stats().watchdog_timeouts >= 1);
    sim.set_silent(false);
    let ConnectionEvent::Reconnected { gap_start, .. } = wait_for(&mut conn, "Reconnected", |e| {
        matches!(e, ConnectionEvent::Reconnected { .. })
    })
    .await
    else {
        unreachable!()
    };
    // The gap reaches back to the silence, not only to when the watchdog noticed it (>= 400 ms
    // later): what HA sent meanwhile is lost too.
    assert!(
        gap_start <= silenced_at,
        "gap_start {gap_start:?} is after the silence began ({silenced_at:?})"
    );
    expect_flow(&sim, &mut events, "sensor.after_silence", WAIT).await;
}

#[tokio::test]
async fn malformed_and_unknown_frames_are_reported_not_fatal() {
    let sim = sim().await;
    let ws = connect(&sim, fast_config()).await;
    let mut conn = ws.connection_events();
    sim.send_raw("{this is not json");
    wait_for(&mut conn, "ProtocolError", |e| {
        matches!(e, ConnectionEvent::ProtocolError { .. })
    })
    .await;
    sim.send_raw(r#"{"id":999,"type":"surprise"}"#);
    let ConnectionEvent::ProtocolError { detail } = wait_for(&mut conn, "ProtocolError", |e| {
        matches!(e, ConnectionEvent::ProtocolError { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert!(detail.contains("surprise"), "{detail}");
    // Still connected and working.
    assert_eq!(
        ws.get_config().await.unwrap().state.as_deref(),
        Some("RUNNING")
    );
    assert_eq!(ws.stats().connects, 1);
    assert_eq!(ws.stats().malformed_frames, 2);
}

#[tokio::test]
async fn oversized_frame_drops_the_connection_which_recovers() {
    let sim = sim().await;
    let config = WsConfig {
        max_message_size: 64 * 1024,
        ..fast_config()
    };
    let ws = connect(&sim, config).await;
    let mut conn = ws.connection_events();
    let big = format!(
        r#"{{"id":1,"type":"result","success":true,"result":"{}"}}"#,
        "x".repeat(100_000)
    );
    sim.send_raw(&big);
    let ConnectionEvent::Disconnected { reason, .. } = wait_for(&mut conn, "Disconnected", |e| {
        matches!(e, ConnectionEvent::Disconnected { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert!(
        reason.to_lowercase().contains("size") || reason.contains("too long"),
        "{reason}"
    );
    wait_for(&mut conn, "Reconnected", |e| {
        matches!(e, ConnectionEvent::Reconnected { .. })
    })
    .await;
    assert!(ws.get_states().await.is_ok());
}

#[tokio::test]
async fn coalesced_arrays_deliver_every_event_in_order() {
    let sim = sim().await;
    let ws = connect(&sim, fast_config()).await;
    let mut events = ws.subscribe_events(Some("state_changed")).await.unwrap();
    let n = 5_000u64;
    let generator = sim.start_generator(None, Some(n));
    let mut got = 0u64;
    tokio::time::timeout(WAIT, async {
        while got < n {
            let e = events.next().await.expect("stream open");
            let e: HaEvent = e.parse().unwrap();
            assert_eq!(e.event_type, "state_changed");
            got += 1;
        }
    })
    .await
    .expect("all generated events arrive");
    drop(generator);
    let stats = sim.stats();
    assert!(
        stats.frames_sent < stats.messages_sent,
        "the simulator coalesced: {stats:?}"
    );
    assert_eq!(ws.stats().events_dropped, 0);
}

#[tokio::test]
async fn auth_invalid_is_never_retried() {
    let sim = sim().await;
    // At start-up, even with retry_initial_connect.
    sim.set_reject_auth(true);
    let err = WsClient::builder(sim.url())
        .token_source(StaticToken::new(sim.config().admin_token.clone()))
        .config(fast_config())
        .retry_initial_connect(true)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuthInvalid { .. }), "{err}");
    assert_eq!(sim.stats().auth_invalid, 1);
    assert_eq!(sim.stats().ws_connections_accepted, 1);

    // After a drop, when the token is no longer accepted.
    sim.set_reject_auth(false);
    let ws = connect(&sim, fast_config()).await;
    let mut conn = ws.connection_events();
    let mut state = ws.connection_state();
    sim.set_reject_auth(true);
    sim.drop_connections();
    wait_for(&mut conn, "AuthFailed", |e| {
        matches!(e, ConnectionEvent::AuthFailed { .. })
    })
    .await;
    tokio::time::timeout(WAIT, state.wait_for(|s| *s == ConnectionState::AuthFailed))
        .await
        .unwrap()
        .unwrap();
    // The connection task has ended: calls fail at once with the final error, nothing reconnects.
    let err = ws.get_states().await.unwrap_err();
    assert!(matches!(err, Error::AuthInvalid { .. }), "{err}");
    assert_eq!(sim.stats().auth_invalid, 2);
    assert_eq!(ws.stats().connect_attempts, 2);
}

#[tokio::test]
async fn slow_consumer_overflow_is_counted_and_reported() {
    let sim = sim().await;
    let ws = WsClient::builder(sim.url())
        .token_source(StaticToken::new(sim.config().admin_token.clone()))
        .config(fast_config())
        .event_buffer(10)
        .connect()
        .await
        .unwrap();
    let mut conn = ws.connection_events();
    let _events = ws.subscribe_events(Some("state_changed")).await.unwrap(); // never read
    let n = 2_000u64;
    let _generator = sim.start_generator(None, Some(n));
    let ConnectionEvent::EventsDropped { total, .. } = wait_for(&mut conn, "EventsDropped", |e| {
        matches!(e, ConnectionEvent::EventsDropped { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert!(total >= 1);
    // The socket is still read: every event arrives at the client, 10 are buffered, the rest counted.
    tokio::time::timeout(WAIT, async {
        while ws.stats().events_received < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the client kept reading");
    let stats = ws.stats();
    assert_eq!(stats.events_dropped, n - 10, "{stats:?}");
    assert_eq!(stats.connects, 1, "HA never dropped us");
    assert_eq!(sim.stats().pending_overflow_disconnects, 0);
}

#[tokio::test]
async fn twenty_forced_disconnects_then_every_subscription_delivers() {
    let sim = sim().await;
    let ws = connect(&sim, fast_config()).await;
    let mut conn = ws.connection_events();
    let mut events = ws.subscribe_events(Some("state_changed")).await.unwrap();
    let mut entities = ws
        .subscribe_entities(Some(vec!["sensor.storm".into()]))
        .await
        .unwrap();
    let mut trigger = ws
        .subscribe_trigger(json!({"platform": "state", "entity_id": "sensor.storm"}))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    for i in 0..20 {
        sim.drop_connections();
        wait_for(&mut conn, &format!("Reconnected #{i}"), |e| {
            matches!(e, ConnectionEvent::Reconnected { .. })
        })
        .await;
    }
    let elapsed = started.elapsed();
    let stats = ws.stats();
    // Each reconnect succeeded at its first attempt: exactly one attempt per drop, no storm.
    assert_eq!(stats.connect_attempts, 21, "{stats:?}");
    assert_eq!(stats.connects, 21);
    assert_eq!(sim.stats().ws_connections_accepted, 21);
    // The sessions were short, so the backoff kept growing to its 100 ms cap: 20 delays drawn from
    // [0, 10·2^n ms] capped at 100 ms have an expected sum of about 0.85 s; far less means no backoff.
    assert!(
        elapsed >= Duration::from_millis(250),
        "20 reconnects took only {elapsed:?}"
    );
    expect_flow(&sim, &mut events, "sensor.storm", WAIT).await;
    let update = tokio::time::timeout(WAIT, async {
        loop {
            let u = entities.next().await.expect("entities stream open");
            if u.changed.iter().any(|s| s.entity_id == "sensor.storm") {
                return u;
            }
        }
    })
    .await
    .expect("entities subscription delivers");
    assert!(!update.changed.is_empty());
    sim.set_state("sensor.storm", "trigger-me", json!({}));
    tokio::time::timeout(WAIT, trigger.next())
        .await
        .expect("trigger fires")
        .expect("open");
}

#[tokio::test]
async fn trigger_resubscription_waits_for_running() {
    let sim = sim().await;
    let ws = connect(
        &sim,
        WsConfig {
            running_poll: Duration::from_millis(50),
            ..fast_config()
        },
    )
    .await;
    let mut conn = ws.connection_events();
    let mut trigger = ws
        .subscribe_trigger(json!({"platform": "state", "entity_id": "sensor.boot"}))
        .await
        .unwrap();
    sim.restart(Duration::from_millis(600));
    wait_for(&mut conn, "Reconnected", |e| {
        matches!(e, ConnectionEvent::Reconnected { .. })
    })
    .await;
    // No ResubscribeFailed: the trigger was renewed only after RUNNING.
    tokio::time::timeout(WAIT, async {
        loop {
            sim.set_state(
                "sensor.boot",
                &format!("{:?}", std::time::Instant::now()),
                json!({}),
            );
            if let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(200), trigger.next()).await
            {
                return;
            }
        }
    })
    .await
    .expect("the trigger works after the restart");
    while let Ok(e) = conn.try_recv() {
        assert!(
            !matches!(e, ConnectionEvent::ResubscribeFailed { .. }),
            "{e:?}"
        );
    }
}

#[tokio::test]
async fn dropping_a_subscription_unsubscribes() {
    let sim = sim().await;
    let ws = connect(&sim, fast_config()).await;
    let mut events = ws.subscribe_events(Some("state_changed")).await.unwrap();
    expect_flow(&sim, &mut events, "sensor.unsub", WAIT).await;
    let commands = sim.stats().commands_received;
    drop(events);
    tokio::time::timeout(WAIT, async {
        while sim.stats().commands_received < commands + 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("unsubscribe_events was sent");
    // A round trip after the unsubscribe: HA has processed it by the time this answers.
    ws.get_config().await.unwrap();
    let sent = sim.stats().events_sent;
    sim.set_state("sensor.unsub", "after", json!({}));
    ws.get_config().await.unwrap();
    assert_eq!(
        sim.stats().events_sent,
        sent,
        "no events for a dropped subscription"
    );
}

/// The buffer is bounded in bytes too, and a flood's drops are reported once, then at most once a
/// second, not once per frame (which used to overrun the connection-event channel).
#[tokio::test]
async fn the_buffer_is_bounded_in_bytes_and_drop_reports_do_not_flood() {
    let sim = sim().await;
    let limit = 4096;
    let ws = WsClient::builder(sim.url())
        .token_source(StaticToken::new(sim.config().admin_token.clone()))
        .config(fast_config())
        .event_buffer_bytes(limit)
        .connect()
        .await
        .unwrap();
    let mut conn = ws.connection_events();
    let mut events = ws.subscribe_events(Some("state_changed")).await.unwrap(); // read later
    let n = 5_000u64;
    let started = std::time::Instant::now();
    let _generator = sim.start_generator(None, Some(n));
    tokio::time::timeout(WAIT, async {
        while ws.stats().events_received < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the client kept reading");
    let elapsed = started.elapsed().as_secs();

    // What was kept fits the bound, and kept + dropped = everything.
    let (mut kept, mut bytes) = (0u64, 0usize);
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(200), events.next()).await {
        kept += 1;
        bytes += e.raw().len();
    }
    assert!(bytes <= limit, "{bytes} bytes buffered, bound {limit}");
    assert!(kept > 0, "some events fit");
    assert_eq!(kept + ws.stats().events_dropped, n, "{:?}", ws.stats());

    let mut reports = 0;
    loop {
        match conn.try_recv() {
            Ok(ConnectionEvent::EventsDropped { .. }) => reports += 1,
            Ok(_) => {}
            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                panic!("connection events were missed: {missed}")
            }
            Err(_) => break,
        }
    }
    assert!(reports >= 1, "the overflow was reported");
    assert!(
        reports <= elapsed + 2,
        "{reports} drop reports in {elapsed} s: at most one a second"
    );
}
