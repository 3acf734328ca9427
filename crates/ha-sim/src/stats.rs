//! Counters.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters (atomics).
#[derive(Default, Debug)]
pub struct Stats {
    pub(crate) ws_connections_accepted: AtomicU64,
    pub(crate) auth_ok: AtomicU64,
    pub(crate) auth_invalid: AtomicU64,
    pub(crate) commands_received: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) events_sent: AtomicU64,
    pub(crate) frames_sent: AtomicU64,
    pub(crate) token_requests: AtomicU64,
    pub(crate) http_requests: AtomicU64,
    pub(crate) pending_overflow_disconnects: AtomicU64,
    pub(crate) fault_disconnects: AtomicU64,
    pub(crate) events_generated: AtomicU64,
    pub(crate) supervisor_bad_gateway: AtomicU64,
    pub(crate) supervisor_relay_failures: AtomicU64,
}

impl Stats {
    pub(crate) fn inc(&self, c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, open: usize) -> SimStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SimStats {
            ws_connections_accepted: g(&self.ws_connections_accepted),
            ws_connections_open: open as u64,
            auth_ok: g(&self.auth_ok),
            auth_invalid: g(&self.auth_invalid),
            commands_received: g(&self.commands_received),
            messages_sent: g(&self.messages_sent),
            events_sent: g(&self.events_sent),
            frames_sent: g(&self.frames_sent),
            token_requests: g(&self.token_requests),
            http_requests: g(&self.http_requests),
            pending_overflow_disconnects: g(&self.pending_overflow_disconnects),
            fault_disconnects: g(&self.fault_disconnects),
            events_generated: g(&self.events_generated),
            supervisor_bad_gateway: g(&self.supervisor_bad_gateway),
            supervisor_relay_failures: g(&self.supervisor_relay_failures),
        }
    }
}

/// A snapshot of the simulator's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// WebSocket upgrades accepted.
    pub ws_connections_accepted: u64,
    /// WebSocket connections open now.
    pub ws_connections_open: u64,
    /// `auth_ok` answers.
    pub auth_ok: u64,
    /// `auth_invalid` answers.
    pub auth_invalid: u64,
    /// Commands received after auth (each element of an array counts).
    pub commands_received: u64,
    /// Messages written to WebSockets (each element of a coalesced array counts).
    pub messages_sent: u64,
    /// Event messages written to WebSockets.
    pub events_sent: u64,
    /// WebSocket text frames written.
    pub frames_sent: u64,
    /// Requests to `/auth/token`.
    pub token_requests: u64,
    /// HTTP requests other than the WebSocket upgrade.
    pub http_requests: u64,
    /// Connections dropped for exceeding `max_pending`.
    pub pending_overflow_disconnects: u64,
    /// Connections dropped by `drop_connections` / `drop_after_messages`.
    pub fault_disconnects: u64,
    /// Events made by generators.
    pub events_generated: u64,
    /// 502 answers of the Supervisor's proxy (Core down), REST and WebSocket.
    pub supervisor_bad_gateway: u64,
    /// Proxy sockets closed right after `auth_ok` (the proxy could not log in to Core).
    pub supervisor_relay_failures: u64,
}
