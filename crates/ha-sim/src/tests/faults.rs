//! Each fault switch.

use std::time::Duration;

use serde_json::json;

use super::*;

#[tokio::test]
async fn drop_connections_without_close_frame() {
    let sim = sim().await;
    let mut a = Client::admin(&sim).await;
    let mut b = Client::auth(&sim, "sim-user-token").await;
    sim.drop_connections();
    assert_eq!(a.ended().await, Ended::Dropped);
    assert_eq!(b.ended().await, Ended::Dropped);
    eventually(|| sim.stats().ws_connections_open == 0).await;
    // New connections work.
    let mut c = Client::admin(&sim).await;
    assert_eq!(c.cmd(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn drop_after_n_messages() {
    let sim = sim().await;
    let mut c = Client::admin(&sim).await;
    c.cmd(json!({"type": "subscribe_events", "event_type": "state_changed"}))
        .await;
    sim.drop_after_messages(3);
    for i in 0..10 {
        sim.set_state("sensor.n", &i.to_string(), json!({}));
    }
    let mut got = 0;
    while let Some(m) = c.recv_within(T).await {
        assert_eq!(m["type"], "event");
        got += 1;
    }
    assert_eq!(got, 3);
    // The next connection is not limited.
    let mut d = Client::admin(&sim).await;
    for _ in 0..5 {
        assert_eq!(d.cmd(json!({"type": "ping"})).await["type"], "pong");
    }
}

#[tokio::test]
async fn silent_holds_socket_open_and_answers_nothing() {
    let sim = sim().await;
    let mut c = Client::admin(&sim).await;
    sim.set_silent(true);
    c.send(json!({"id": 1, "type": "ping"})).await;
    c.ws.send(Message::Ping(vec![1, 2, 3].into()))
        .await
        .unwrap();
    // Neither the app-level pong nor the protocol pong arrives, and the socket is not closed.
    let quiet = tokio::time::timeout(Duration::from_millis(400), c.ws.next()).await;
    assert!(
        quiet.is_err(),
        "server sent something while silent: {quiet:?}"
    );
    assert_eq!(sim.stats().ws_connections_open, 1);
    // New connections get no auth_required either.
    let (ws, _) = tokio_tungstenite::connect_async(sim.ws_url())
        .await
        .unwrap();
    let mut ws = ws;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), ws.next())
            .await
            .is_err()
    );
    sim.set_silent(false);
    assert_eq!(c.recv().await, json!({"id": 1, "type": "pong"}));
}

#[tokio::test]
async fn send_raw_frames() {
    let sim = sim().await;
    let mut c = Client::admin(&sim).await;
    sim.send_raw("{not json");
    assert_eq!(c.recv_raw().await, "{not json");
    sim.send_raw(r#"{"type":"mystery"}"#);
    assert_eq!(c.recv_raw().await, r#"{"type":"mystery"}"#);
    let big = format!(r#"{{"type":"event","pad":"{}"}}"#, "x".repeat(2 << 20));
    sim.send_raw(&big);
    assert_eq!(c.recv_raw().await.len(), big.len());
}

#[tokio::test]
async fn reject_auth_and_auth_delay() {
    let sim = sim().await;
    sim.set_reject_auth(true);
    let (mut c, _) = Client::connect(&sim).await;
    c.send(json!({"type": "auth", "access_token": "sim-admin-token"}))
        .await;
    assert_eq!(c.recv().await["type"], "auth_invalid");
    assert_eq!(c.ended().await, Ended::CloseFrame);
    sim.set_reject_auth(false);
    sim.set_auth_delay(Duration::from_millis(300));
    let (mut c, _) = Client::connect(&sim).await;
    let t0 = std::time::Instant::now();
    c.send(json!({"type": "auth", "access_token": "sim-admin-token"}))
        .await;
    assert_eq!(c.recv().await["type"], "auth_ok");
    assert!(t0.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn restart_closes_forgets_and_comes_back() {
    let sim = sim().await;
    let mut c = Client::admin(&sim).await;
    c.cmd(json!({"type": "subscribe_events", "event_type": "state_changed"}))
        .await;
    let signed = c
        .cmd(json!({"type": "auth/sign_path", "path": "/api/states/light.kitchen"}))
        .await["result"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(http(&sim, "GET", &signed, &[], None).await.status, 200);
    sim.set_state("sensor.keep", "1", json!({}));
    sim.restart(Duration::from_millis(600));
    assert_eq!(c.ended().await, Ended::CloseFrame);
    let mut c = Client::admin(&sim).await;
    let state = c.cmd(json!({"type": "get_config"})).await["result"]["state"].clone();
    assert!(state == "NOT_RUNNING" || state == "STARTING", "{state}");
    assert_eq!(
        http(&sim, "GET", &signed, &[], None).await.status,
        401,
        "signed paths die with a restart"
    );
    assert_eq!(
        sim.get_state("sensor.keep").unwrap()["state"],
        "1",
        "states survive"
    );
    let r = c
        .cmd(json!({"type": "subscribe_events", "event_type": "homeassistant_started"}))
        .await;
    assert_eq!(r["success"], true);
    let e = c.event().await;
    assert_eq!(e["event"]["event_type"], "homeassistant_started");
    assert_eq!(sim.core_state(), "RUNNING");
    assert_eq!(
        c.cmd(json!({"type": "get_config"})).await["result"]["state"],
        "RUNNING"
    );
}

#[tokio::test]
async fn slow_reader_is_dropped_at_max_pending() {
    let sim = Sim::start(SimConfig {
        max_pending: 64,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut c = Client::admin(&sim).await;
    c.cmd(json!({"type": "subscribe_events", "event_type": "state_changed"}))
        .await;
    // Nobody reads `c` while large events pile up (the kernel buffers fill, then the queue).
    let pad = "x".repeat(64 << 10);
    for i in 0..2000 {
        sim.set_state("sensor.big", &i.to_string(), json!({ "pad": pad }));
        if sim.stats().pending_overflow_disconnects > 0 {
            break;
        }
        if i % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(sim.stats().pending_overflow_disconnects, 1);
    assert_eq!(c.ended().await, Ended::Dropped);
}

#[tokio::test]
async fn token_endpoint_5xx() {
    let sim = sim().await;
    sim.set_token_endpoint_failures(2);
    for _ in 0..2 {
        let r = form_post(
            &sim,
            "/auth/token",
            "grant_type=refresh_token&refresh_token=x",
        )
        .await;
        assert_eq!(r.status, 500);
        assert_eq!(
            r.body,
            "500 Internal Server Error\n\nServer got itself in trouble"
        );
    }
    let r = form_post(
        &sim,
        "/auth/token",
        "grant_type=refresh_token&refresh_token=x",
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"error": "invalid_grant"}))
    );
    assert_eq!(sim.stats().token_requests, 3);
}

#[tokio::test]
async fn generator_is_deterministic_and_counts() {
    async fn run(seed: u64) -> Vec<(String, String)> {
        let sim = Sim::start(SimConfig {
            seed,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let mut c = Client::admin(&sim).await;
        c.cmd(json!({"type": "subscribe_events", "event_type": "state_changed"}))
            .await;
        let g = sim.start_generator(None, Some(300));
        let mut seen = Vec::new();
        while seen.len() < 300 {
            let e = c.event().await;
            let d = &e["event"]["data"];
            seen.push((
                d["entity_id"].as_str().unwrap().to_string(),
                d["new_state"]["state"].as_str().unwrap().to_string(),
            ));
        }
        tokio::time::timeout(T, g.wait()).await.unwrap();
        assert_eq!(g.emitted(), 300);
        assert_eq!(sim.stats().events_generated, 300);
        seen
    }
    let a = run(7).await;
    assert_eq!(a, run(7).await);
    assert_ne!(a, run(8).await);
}

#[tokio::test]
async fn generator_at_a_rate() {
    let sim = sim().await;
    let g = sim.start_generator(Some(200), Some(40));
    let t0 = std::time::Instant::now();
    tokio::time::timeout(T, g.wait()).await.unwrap();
    assert_eq!(g.emitted(), 40);
    assert!(
        t0.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t0.elapsed()
    );
}
