//! Fault switches shared by the WebSocket and HTTP sides.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// The fault switches.
pub struct Faults {
    /// Half-open mode: nothing is read or written on WebSockets.
    pub silent: watch::Sender<bool>,
    /// Answer every `auth` with `auth_invalid`.
    pub reject_auth: AtomicBool,
    /// The Supervisor's proxy finds Core's API down: 502 for REST and the WebSocket upgrade.
    pub supervisor_core_down: AtomicBool,
    /// The Supervisor's proxy cannot log in to Core: `auth_ok`, then the socket closes.
    pub supervisor_relay_fails: AtomicBool,
    auth_delay_us: AtomicU64,
    token_failures: AtomicU32,
    history_failures: AtomicU32,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            silent: watch::channel(false).0,
            reject_auth: AtomicBool::new(false),
            supervisor_core_down: AtomicBool::new(false),
            supervisor_relay_fails: AtomicBool::new(false),
            auth_delay_us: AtomicU64::new(0),
            token_failures: AtomicU32::new(0),
            history_failures: AtomicU32::new(0),
        }
    }
}

impl Faults {
    /// Current auth delay.
    pub fn auth_delay(&self) -> Duration {
        Duration::from_micros(self.auth_delay_us.load(Ordering::Relaxed))
    }

    /// Sets the auth delay.
    pub fn set_auth_delay(&self, d: Duration) {
        self.auth_delay_us.store(
            d.as_micros().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    /// Arms `n` failing token requests.
    pub fn set_token_failures(&self, n: u32) {
        self.token_failures.store(n, Ordering::Relaxed);
    }

    /// Consumes one armed token failure; `true` when this request must fail.
    pub fn take_token_failure(&self) -> bool {
        self.token_failures
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Arms `n` failing history requests.
    pub fn set_history_failures(&self, n: u32) {
        self.history_failures.store(n, Ordering::Relaxed);
    }

    /// Consumes one armed history failure; `true` when this request must fail.
    pub fn take_history_failure(&self) -> bool {
        self.history_failures
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }
}
