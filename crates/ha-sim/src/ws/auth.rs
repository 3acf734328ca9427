//! The auth phase: `auth` → `auth_ok` or `auth_invalid` (then close).

use std::sync::atomic::Ordering;

use serde_json::Value;

use super::validate::{Ty, validate};
use crate::hub::Conn;
use crate::{Inner, lock};

fn invalid(inner: &Inner, conn: &Conn, message: &str) {
    inner.stats.inc(&inner.stats.auth_invalid);
    conn.send_msg(format!(
        r#"{{"type":"auth_invalid","message":{}}}"#,
        Value::from(message)
    ));
}

/// Handles the first client message; `true` when authenticated.
pub(super) async fn authenticate(inner: &Inner, conn: &Conn, text: &str) -> bool {
    // HA disconnects without an answer on invalid JSON.
    let Ok(msg) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    let delay = inner.faults.auth_delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let fields = [
        ("type", true, Ty::Const("auth")),
        ("access_token", false, Ty::Str),
        ("api_password", false, Ty::Str),
    ];
    if let Err(e) = validate(&msg, &fields) {
        invalid(
            inner,
            conn,
            &format!("Auth message incorrectly formatted: {e}"),
        );
        return false;
    }
    if inner.faults.reject_auth.load(Ordering::Acquire) {
        invalid(inner, conn, "Invalid access token or password");
        return false;
    }
    let principal = msg
        .get("access_token")
        .and_then(Value::as_str)
        .and_then(|t| lock(&inner.auth).validate_access(t));
    match principal {
        Some(p) => {
            let _ = conn.principal.set(p);
            inner.stats.inc(&inner.stats.auth_ok);
            conn.send_msg(format!(
                r#"{{"type":"auth_ok","ha_version":{}}}"#,
                Value::from(inner.cfg.ha_version.as_str())
            ));
            true
        }
        None => {
            invalid(inner, conn, "Invalid access token or password");
            false
        }
    }
}

/// The Supervisor's proxy's auth phase: the add-on's token (`access_token` or `api_password`)
/// against [`crate::SimConfig::supervisor_token`]; `auth_invalid` "Invalid access" otherwise.
/// `auth_ok` goes out before the proxy logs in to Core (as an admin); when that fails
/// ([`crate::Sim::set_supervisor_relay_fails`]) the socket closes right after `auth_ok`.
pub(super) fn authenticate_supervisor(inner: &Inner, conn: &Conn, text: &str) -> bool {
    let Ok(msg) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    let token = msg
        .get("access_token")
        .or_else(|| msg.get("api_password"))
        .and_then(Value::as_str);
    if msg.get("type").and_then(Value::as_str) != Some("auth")
        || token != Some(inner.cfg.supervisor_token.as_str())
    {
        invalid(inner, conn, "Invalid access");
        return false;
    }
    conn.send_msg(format!(
        r#"{{"type":"auth_ok","ha_version":{}}}"#,
        Value::from(inner.cfg.ha_version.as_str())
    ));
    if inner.faults.supervisor_relay_fails.load(Ordering::Acquire) {
        inner.stats.inc(&inner.stats.supervisor_relay_failures);
        return false;
    }
    let Some(admin) = lock(&inner.auth).validate_access(&inner.cfg.admin_token) else {
        return false;
    };
    let _ = conn.principal.set(admin);
    inner.stats.inc(&inner.stats.auth_ok);
    true
}
