//! The registry of WebSocket connections, their outgoing queues and subscriptions, and the
//! dispatch of events to them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;

use crate::auth::Principal;
use crate::stats::Stats;
use crate::world::{Change, State, push_json_str, write_state_diff};

/// One item of a connection's outgoing queue.
#[derive(Debug)]
pub enum Out {
    /// A serialized message (may be coalesced with others).
    Msg(String),
    /// An event for subscription `sub`; `body` is the part after `"event":`.
    Event {
        /// Subscription id.
        sub: u64,
        /// Shared event body.
        body: Arc<String>,
    },
    /// A raw text frame, never coalesced (fault injection).
    Raw(String),
    /// Send a close frame and end the connection.
    Close,
}

/// What a subscription listens to.
#[derive(Debug, Clone)]
pub enum SubKind {
    /// `subscribe_events` (`None` = all events).
    Events(Option<String>),
    /// `subscribe_entities` (`None` = all entities).
    Entities(Option<HashSet<String>>),
    /// `subscribe_trigger` with a state trigger on these entities (empty = any), optional to-state.
    Trigger {
        /// Entities watched.
        entity_ids: Vec<String>,
        /// Only changes to this state.
        to: Option<String>,
        /// Only changes from this state.
        from: Option<String>,
    },
}

/// A WebSocket connection as the rest of the simulator sees it.
pub struct Conn {
    /// Connection number.
    pub id: u64,
    tx: mpsc::UnboundedSender<Out>,
    /// Messages queued but not yet taken by the writer.
    pub pending: AtomicUsize,
    max_pending: usize,
    /// Set after `auth_ok`.
    pub principal: OnceLock<Principal>,
    /// Subscriptions by id.
    pub subs: Mutex<Vec<(u64, SubKind)>>,
    /// Messages still allowed before the connection is dropped (`u64::MAX` = no limit).
    pub drop_budget: AtomicU64,
    /// Coalescing was enabled with `supported_features`.
    pub coalesce: AtomicBool,
    /// Asks the writer to send a close frame and end.
    pub close: Notify,
    /// A protocol ping was sent and its pong has not come yet.
    pub awaiting_pong: AtomicBool,
    aborts: Mutex<Vec<AbortHandle>>,
    killed: AtomicBool,
    stats: Arc<Stats>,
}

impl Conn {
    /// A connection with its queue sender.
    pub fn new(
        id: u64,
        tx: mpsc::UnboundedSender<Out>,
        max_pending: usize,
        drop_budget: Option<u64>,
        stats: Arc<Stats>,
    ) -> Conn {
        Conn {
            id,
            tx,
            pending: AtomicUsize::new(0),
            max_pending,
            principal: OnceLock::new(),
            subs: Mutex::new(Vec::new()),
            drop_budget: AtomicU64::new(drop_budget.unwrap_or(u64::MAX)),
            coalesce: AtomicBool::new(false),
            close: Notify::new(),
            awaiting_pong: AtomicBool::new(false),
            aborts: Mutex::new(Vec::new()),
            killed: AtomicBool::new(false),
            stats,
        }
    }

    /// Registers the tasks to abort when the connection is dropped.
    pub fn set_aborts(&self, handles: Vec<AbortHandle>) {
        *self.aborts.lock().unwrap_or_else(|e| e.into_inner()) = handles;
        if self.killed.load(Ordering::Acquire) {
            self.kill();
        }
    }

    /// Drops the connection at once: no close frame, the TCP socket is just closed.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        for h in self.aborts.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            h.abort();
        }
    }

    /// Queues an item; past `max_pending` the connection is dropped, as HA does.
    pub fn send(&self, out: Out) {
        let n = self.pending.fetch_add(1, Ordering::AcqRel) + 1;
        if n > self.max_pending {
            if !self.killed.swap(true, Ordering::AcqRel) {
                self.stats.inc(&self.stats.pending_overflow_disconnects);
                tracing::warn!(
                    conn = self.id,
                    "client unable to keep up with pending messages; reached {} pending messages",
                    self.max_pending
                );
                self.kill();
            }
            return;
        }
        let _ = self.tx.send(out);
    }

    /// Queues a serialized message.
    pub fn send_msg(&self, msg: String) {
        self.send(Out::Msg(msg));
    }
}

/// All connections.
#[derive(Default)]
pub struct Hub {
    conns: RwLock<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// Next connection number.
    pub fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Adds a connection.
    pub fn insert(&self, c: Arc<Conn>) {
        self.conns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(c.id, c);
    }

    /// Removes a connection.
    pub fn remove(&self, id: u64) {
        self.conns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// A snapshot of the connections.
    pub fn all(&self) -> Vec<Arc<Conn>> {
        self.conns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.conns.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Largest outgoing queue among authenticated connections with subscriptions.
    pub fn max_pending(&self) -> usize {
        self.conns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|c| c.pending.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }

    /// Sends a non-state event (`body` pre-serialized) to every matching subscription.
    pub fn dispatch_event(&self, event_type: &str, body: &Arc<String>) {
        for c in self
            .conns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            if c.principal.get().is_none() {
                continue;
            }
            for (id, k) in lock(&c.subs).iter() {
                if let SubKind::Events(t) = k
                    && t.as_deref().is_none_or(|t| t == event_type)
                {
                    c.send(Out::Event {
                        sub: *id,
                        body: body.clone(),
                    });
                }
            }
        }
    }

    /// Sends a state change to `state_changed`, `subscribe_entities` and trigger subscribers.
    /// `body` builds the `state_changed` event body; it is called at most once.
    pub fn dispatch_change(&self, ch: &Change, body: impl FnOnce() -> String) {
        let mut body = Some(body);
        let mut sc: Option<Arc<String>> = None;
        let mut compressed: Option<Arc<String>> = None;
        for c in self
            .conns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            if c.principal.get().is_none() {
                continue;
            }
            for (id, k) in lock(&c.subs).iter() {
                match k {
                    SubKind::Events(t) if t.as_deref().is_none_or(|t| t == "state_changed") => {
                        let b = sc
                            .get_or_insert_with(|| {
                                Arc::from(body.take().map(|f| f()).unwrap_or_default())
                            })
                            .clone();
                        c.send(Out::Event { sub: *id, body: b });
                    }
                    SubKind::Entities(filter)
                        if filter.as_ref().is_none_or(|f| f.contains(&*ch.entity_id)) =>
                    {
                        let b = compressed
                            .get_or_insert_with(|| Arc::from(compressed_change(ch)))
                            .clone();
                        c.send(Out::Event { sub: *id, body: b });
                    }
                    SubKind::Trigger {
                        entity_ids,
                        to,
                        from,
                    } => {
                        if (!entity_ids.is_empty()
                            && !entity_ids.iter().any(|e| **e == *ch.entity_id))
                            || to
                                .as_deref()
                                .is_some_and(|t| ch.new.as_ref().is_none_or(|n| n.state != t))
                            || from
                                .as_deref()
                                .is_some_and(|f| ch.old.as_ref().is_none_or(|o| o.state != f))
                        {
                            continue;
                        }
                        c.send(Out::Event {
                            sub: *id,
                            body: Arc::new(trigger_body(ch)),
                        });
                    }
                    _ => {}
                }
            }
        }
    }
}

impl Hub {
    /// Sends a pre-serialized state change (the firehose) to `state_changed` and
    /// `subscribe_entities` subscribers; each body is built at most once.
    pub fn dispatch_prebuilt(
        &self,
        full: impl FnOnce() -> String,
        compressed: impl FnOnce() -> String,
        entity_id: &str,
    ) {
        let (mut full, mut compressed) = (Some(full), Some(compressed));
        let (mut sc, mut diff): (Option<Arc<String>>, Option<Arc<String>>) = (None, None);
        for c in self
            .conns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            if c.principal.get().is_none() {
                continue;
            }
            for (id, k) in lock(&c.subs).iter() {
                let body = match k {
                    SubKind::Events(t) if t.as_deref().is_none_or(|t| t == "state_changed") => sc
                        .get_or_insert_with(|| {
                            Arc::new(full.take().map(|f| f()).unwrap_or_default())
                        })
                        .clone(),
                    SubKind::Entities(filter)
                        if filter.as_ref().is_none_or(|f| f.contains(entity_id)) =>
                    {
                        diff.get_or_insert_with(|| {
                            Arc::new(compressed.take().map(|f| f()).unwrap_or_default())
                        })
                        .clone()
                    }
                    _ => continue,
                };
                c.send(Out::Event { sub: *id, body });
            }
        }
    }
}

/// The `subscribe_entities` event for a change: `{"a":..}`, `{"c":..}` or `{"r":[..]}`.
pub fn compressed_change(ch: &Change) -> String {
    let mut s = String::with_capacity(256);
    match (&ch.old, &ch.new) {
        (Some(old), Some(new)) => {
            s.push_str("{\"c\":{");
            push_json_str(&mut s, &ch.entity_id);
            s.push(':');
            write_state_diff(&mut s, old, new);
            s.push_str("}}");
        }
        (None, Some(new)) => {
            s.push_str("{\"a\":{");
            push_json_str(&mut s, &ch.entity_id);
            s.push(':');
            new.write_compressed(&mut s);
            s.push_str("}}");
        }
        _ => {
            s.push_str("{\"r\":[");
            push_json_str(&mut s, &ch.entity_id);
            s.push_str("]}");
        }
    }
    s
}

/// The initial `subscribe_entities` event: `{"a":{..all..}}`.
pub fn compressed_all<'a>(states: impl Iterator<Item = &'a Arc<State>>) -> String {
    let mut s = String::from("{\"a\":{");
    let mut first = true;
    for st in states {
        if !first {
            s.push(',');
        }
        first = false;
        push_json_str(&mut s, &st.entity_id);
        s.push(':');
        st.write_compressed(&mut s);
    }
    s.push_str("}}");
    s
}

fn trigger_body(ch: &Change) -> String {
    let old = ch.old.as_ref().map_or("null", |s| s.json());
    let new = ch.new.as_ref().map_or("null", |s| s.json());
    let ctx = ch.new.as_ref().or(ch.old.as_ref()).map(|s| {
        let mut c = String::new();
        s.context.write_json(&mut c);
        c
    });
    let mut eid = String::new();
    push_json_str(&mut eid, &ch.entity_id);
    let mut desc = String::new();
    push_json_str(&mut desc, &format!("state of {}", ch.entity_id));
    format!(
        "{{\"variables\":{{\"trigger\":{{\"id\":\"0\",\"idx\":\"0\",\"alias\":null,\"platform\":\"state\",\"entity_id\":{eid},\"from_state\":{old},\"to_state\":{new},\"for\":null,\"attribute\":null,\"description\":{desc}}}}},\"context\":{}}}",
        ctx.unwrap_or_else(|| "null".into())
    )
}
