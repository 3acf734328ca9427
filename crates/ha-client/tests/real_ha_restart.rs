//! A real Home Assistant restarts under a live subscription. This test restarts the shared HA,
//! so CI runs it on its own, after the other real-HA tests.
#![cfg(feature = "real-ha")]

use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use ha_client::Client;
use ha_client::auth::StaticToken;
use ha_client::ws::{Backoff, ConnectionEvent, HaEvent, WsClient};
use ha_testenv::RealHa;
use serde_json::json;

#[tokio::test]
async fn subscription_survives_a_restart_and_the_gap_is_reported() {
    let ha = RealHa::from_env();
    let token = ha.admin.long_lived_token.clone().unwrap();
    let ws = WsClient::builder(&ha.url)
        .token_source(StaticToken::new(token.clone()))
        .backoff(Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(2),
            stable_after: Duration::from_secs(30),
        })
        .connect()
        .await
        .unwrap();
    let mut conn = ws.connection_events();
    let before_subscribing = SystemTime::now();
    let mut events = ws.subscribe_events(Some("state_changed")).await.unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/real-ha.sh");
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(script)
            .arg("restart")
            .status()
    })
    .await
    .unwrap()
    .expect("run real-ha.sh restart");
    assert!(status.success(), "real-ha.sh restart failed");

    let (mut disconnected, mut gap) = (None, None);
    tokio::time::timeout(Duration::from_secs(60), async {
        while gap.is_none() {
            match conn.recv().await.expect("connection events") {
                ConnectionEvent::Disconnected { at, .. } => disconnected = Some(at),
                ConnectionEvent::Reconnected { gap_start, gap_end } => {
                    gap = Some((gap_start, gap_end))
                }
                _ => {}
            }
        }
    })
    .await
    .expect("reconnected within 60 s");
    let disconnected_at = disconnected.expect("the loss was reported");
    let (gap_start, gap_end) = gap.unwrap();
    // The gap starts at the last message of the lost connection (here the subscription's result
    // or a later one), at the latest when the loss was noticed.
    assert!(
        gap_start >= before_subscribing && gap_start <= disconnected_at && gap_end > gap_start,
        "{before_subscribing:?} <= {gap_start:?} <= {disconnected_at:?}, gap end {gap_end:?}"
    );
    assert!(ws.stats().connect_attempts >= 2);

    // The same stream delivers again once the resubscription is through. Keep changing a state
    // until one arrives (bounded).
    let rest = Client::builder(&ha.url)
        .token_source(StaticToken::new(token))
        .build()
        .unwrap();
    let entity = "sensor.ha_client_restart_probe";
    let received = tokio::time::timeout(Duration::from_secs(30), async {
        let mut n = 0u32;
        loop {
            n += 1;
            let _: serde_json::Value = rest
                .post_json(
                    &format!("/api/states/{entity}"),
                    &json!({"state": n.to_string()}),
                )
                .await
                .unwrap();
            if let Ok(Some(e)) =
                tokio::time::timeout(Duration::from_millis(500), events.next()).await
            {
                let e: HaEvent = e.parse().unwrap();
                if e.data["entity_id"] == entity {
                    return e;
                }
            }
        }
    })
    .await
    .expect("events flow again after the restart");
    assert_eq!(received.event_type, "state_changed");
}
