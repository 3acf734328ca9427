//! Shared by the simulator tests: waiting until a subscription carries events.

use std::time::Duration;

use futures_util::StreamExt;
use ha_client::ws::{HaEvent, Subscription};
use ha_sim::Sim;
use serde_json::json;

/// Sets `entity`'s state again and again until its event arrives on `events` (fails after `wait`):
/// the subscription is live end to end.
pub async fn expect_flow(sim: &Sim, events: &mut Subscription, entity: &str, wait: Duration) {
    tokio::time::timeout(wait, async {
        let mut n = 0u32;
        loop {
            n += 1;
            sim.set_state(entity, &n.to_string(), json!({}));
            while let Ok(Some(e)) =
                tokio::time::timeout(Duration::from_millis(200), events.next()).await
            {
                let e: HaEvent = e.parse().unwrap();
                if e.data["entity_id"] == entity {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no event for {entity} within {wait:?}"));
}
