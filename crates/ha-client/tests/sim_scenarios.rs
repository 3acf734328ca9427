//! The shared client scenarios against the simulator.

mod scenarios;

use ha_sim::{Sim, SimConfig};
use scenarios::Target;

async fn target() -> (Sim, Target) {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let t = Target {
        url: sim.url(),
        client_id: format!("{}/", sim.url()),
        admin_token: sim.config().admin_token.clone(),
        user_token: sim.config().user_token.clone(),
        admin: ("admin".into(), "admin-pass".into()),
        user: ("user".into(), "user-pass".into()),
    };
    (sim, t)
}

macro_rules! scenario_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let (_sim, t) = target().await;
            scenarios::$name(&t).await;
        }
    )*};
}

scenario_tests!(
    websocket_auth_ok_and_final_failure,
    login_refresh_revoke,
    state_changes_arrive_in_order,
    non_admin_subscriptions,
    long_lived_tokens,
    signed_paths_are_get_only,
    history_has_what_was_set,
);
