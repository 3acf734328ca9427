//! The shared client scenarios against a real Home Assistant (`scripts/real-ha.sh start`).
#![cfg(feature = "real-ha")]

mod scenarios;

use ha_testenv::RealHa;
use scenarios::Target;

fn target() -> Target {
    let ha = RealHa::from_env();
    Target {
        url: ha.url.clone(),
        client_id: ha.client_id.clone(),
        admin_token: ha.admin.long_lived_token.clone().unwrap(),
        user_token: ha.user.long_lived_token.clone().unwrap(),
        admin: (ha.admin.username.clone(), ha.admin.password.clone()),
        user: (ha.user.username.clone(), ha.user.password.clone()),
    }
}

macro_rules! scenario_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            scenarios::$name(&target()).await;
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
