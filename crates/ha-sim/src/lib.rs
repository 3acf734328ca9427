//! A simulated Home Assistant: it speaks HA's real WebSocket and HTTP protocol (as observed on HA
//! 2024.3.3), keeps a world of entities and a recorder, generates load, and produces faults on
//! command. It is used by the client's fault tests, by benchmarks and by the offline demo, and is
//! never a dependency of `ha-client`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let sim = ha_sim::Sim::start(ha_sim::SimConfig::default()).await?;
//! println!("{}", sim.url()); // http://127.0.0.1:PORT, WebSocket at /api/websocket
//! sim.set_state("sensor.probe", "42", serde_json::json!({"unit_of_measurement": "W"}));
//! sim.drop_connections();
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod config;
mod faults;
mod firehose;
mod generator;
mod http;
mod hub;
pub mod recorder;
pub mod registry;
mod services;
pub mod statistics;
mod stats;
mod supervisor;
pub mod time;
pub mod world;
mod ws;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

pub use config::{
    DEFAULT_TOTP_SECRET, EntitySeed, SimConfig, UserConfig, default_entities, default_users,
};
pub use firehose::{FirehoseOptions, FirehoseTemplates};
pub use generator::GeneratorHandle;
pub use stats::SimStats;

use auth::AuthStore;
use faults::Faults;
use hub::{Hub, Out};
use stats::Stats;
use world::{Attrs, Context, State, World};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Restart window: `NOT_RUNNING` until `starting`, `STARTING` until `until`.
#[derive(Clone, Copy)]
struct Restart {
    starting: Instant,
    until: Instant,
    epoch: u64,
}

/// Shared state of a running simulator.
pub(crate) struct Inner {
    pub cfg: SimConfig,
    pub world: Mutex<World>,
    pub hub: Hub,
    pub auth: Mutex<AuthStore>,
    pub faults: Faults,
    pub stats: Arc<Stats>,
    /// HA's statistics (`recorder/statistics_during_period` and friends).
    pub statistics: Mutex<statistics::Statistics>,
    /// HA's registries (`config/*_registry/list`).
    pub registries: Mutex<registry::Registries>,
    restart: Mutex<Option<Restart>>,
    restart_epoch: AtomicU64,
    pub stopped: AtomicBool,
    /// Writers signal here when their queues drain (the unpaced generator waits on it).
    pub drained: Notify,
    pub addr: OnceLock<SocketAddr>,
    pub rt: tokio::runtime::Handle,
}

impl Inner {
    /// The current state of an entity.
    pub fn get_state(&self, entity_id: &str) -> Option<Arc<State>> {
        lock(&self.world).states.get(entity_id).cloned()
    }

    /// A new context for `user_id`.
    pub fn new_context(&self, user_id: Option<Arc<str>>) -> Arc<Context> {
        lock(&self.world).new_context(time::now_us(), user_id)
    }

    /// Sets a state in a locked world, records it and tells subscribers.
    pub fn apply_locked(
        &self,
        w: &mut World,
        entity_id: &str,
        state: String,
        attrs: Arc<Attrs>,
        force: bool,
        ctx: Arc<Context>,
    ) -> Option<Arc<State>> {
        let now = time::now_us();
        let ch = w.set(entity_id, state, attrs, force, ctx, now)?;
        let new = ch.new.clone();
        self.dispatch(&ch, now);
        new
    }

    /// Tells subscribers of a change.
    fn dispatch(&self, ch: &world::Change, now: i64) {
        self.hub.dispatch_change(ch, || {
            let n = ch.new.as_deref();
            world::state_changed_body(
                &ch.entity_id,
                ch.old.as_deref(),
                n,
                n.map_or(now, |s| s.last_updated),
                n.map_or(
                    &Context {
                        id: String::new(),
                        parent_id: None,
                        user_id: None,
                    },
                    |s| &s.context,
                ),
            )
        });
    }

    /// Sets a state, records it and tells subscribers; `None` when nothing changed.
    pub fn apply(
        &self,
        entity_id: &str,
        state: String,
        attrs: Arc<Attrs>,
        force: bool,
        ctx: Arc<Context>,
    ) -> Option<Arc<State>> {
        let mut w = lock(&self.world);
        self.apply_locked(&mut w, entity_id, state, attrs, force, ctx)
    }

    /// Fires an event on the bus (`origin` `LOCAL` or `REMOTE`).
    pub fn fire(&self, event_type: &str, data: &Value, origin: &str, ctx: Arc<Context>) {
        let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
        let body = Arc::new(world::event_body(
            event_type,
            &data,
            origin,
            time::now_us(),
            &ctx,
        ));
        let _w = lock(&self.world);
        self.hub.dispatch_event(event_type, &body);
    }

    /// HA's core state: `NOT_RUNNING`, `STARTING` or `RUNNING`.
    pub fn core_state(&self) -> &'static str {
        match *lock(&self.restart) {
            Some(r) if Instant::now() < r.starting => "NOT_RUNNING",
            Some(r) if Instant::now() < r.until => "STARTING",
            _ => "RUNNING",
        }
    }

    /// Closes (with a close frame) every connection using this refresh token.
    pub fn close_connections_of(&self, refresh_id: &str) {
        for c in self.hub.all() {
            if c.principal
                .get()
                .is_some_and(|p| p.refresh_id == refresh_id)
            {
                c.close.notify_one();
            }
        }
    }
}

/// A running simulated Home Assistant. Dropping it (or [`Sim::shutdown`]) stops it.
pub struct Sim {
    inner: Arc<Inner>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl Sim {
    /// Binds `config.bind` and starts serving. Must be called inside a tokio runtime.
    pub async fn start(config: SimConfig) -> std::io::Result<Sim> {
        let listener = tokio::net::TcpListener::bind(config.bind).await?;
        let addr = listener.local_addr()?;
        let world = World::new(
            &config.entities,
            config.seed,
            config.recorder_max_per_entity,
        );
        let inner = Arc::new(Inner {
            auth: Mutex::new(AuthStore::new(&config)),
            cfg: config,
            world: Mutex::new(world),
            hub: Hub::default(),
            faults: Faults::default(),
            stats: Arc::new(Stats::default()),
            restart: Mutex::new(None),
            restart_epoch: AtomicU64::new(0),
            statistics: Mutex::default(),
            registries: Mutex::default(),
            stopped: AtomicBool::new(false),
            drained: Notify::new(),
            addr: OnceLock::new(),
            rt: tokio::runtime::Handle::current(),
        });
        let _ = inner.addr.set(addr);
        let (stop, stop_rx) = oneshot::channel();
        let app = http::router(inner.clone());
        let server = tokio::spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(e) = r {
                tracing::warn!("ha-sim server ended: {e}");
            }
        });
        tracing::info!("ha-sim listening on http://{addr}");
        Ok(Sim {
            inner,
            addr,
            stop: Some(stop),
            server: Some(server),
        })
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Supervisor's Core proxy as an add-on reaches it, `http://127.0.0.1:PORT/core`: REST at
    /// `/core/api/...`, the WebSocket at `/core/websocket`, with [`SimConfig::supervisor_token`].
    pub fn supervisor_url(&self) -> String {
        format!("http://{}/core", self.addr)
    }

    /// WebSocket URL, `ws://127.0.0.1:PORT/api/websocket`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/api/websocket", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &SimConfig {
        &self.inner.cfg
    }

    fn stop_now(&mut self) {
        self.inner.stopped.store(true, Ordering::Release);
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        for c in self.inner.hub.all() {
            c.kill();
        }
    }

    /// Stops the server: closes every connection and the listening socket.
    pub async fn shutdown(mut self) {
        self.stop_now();
        if let Some(h) = self.server.take()
            && tokio::time::timeout(Duration::from_secs(2), h)
                .await
                .is_err()
        {
            tracing::debug!("ha-sim: graceful HTTP shutdown timed out");
        }
    }

    // ---- world ----

    /// Sets a state (any entity id), as `POST /api/states` does: emits `state_changed` to
    /// subscribers and records history. No event when neither state nor attributes change.
    pub fn set_state(&self, entity_id: &str, state: &str, attributes: Value) {
        let ctx = self.inner.new_context(None);
        self.inner.apply(
            entity_id,
            state.to_string(),
            Attrs::new(attributes),
            false,
            ctx,
        );
    }

    /// Removes an entity, as HA does when its integration unloads it: `state_changed` with
    /// `new_state: null` goes out, and its recorded history stays.
    pub fn remove_state(&self, entity_id: &str) {
        let mut w = lock(&self.inner.world);
        if let Some(ch) = w.remove(entity_id) {
            self.inner.dispatch(&ch, time::now_us());
        }
    }

    /// The current state of an entity, as HA's JSON state object.
    pub fn get_state(&self, entity_id: &str) -> Option<Value> {
        self.inner.get_state(entity_id).map(|s| s.to_value())
    }

    /// Number of history rows recorded for an entity.
    pub fn history_len(&self, entity_id: &str) -> usize {
        lock(&self.inner.world).recorder.len(entity_id)
    }

    /// Stores statistic rows of `period` (`5minute` or `hour`) with their `metadata`, as HA's
    /// compilation does (HA's own import takes hourly rows only; this also takes short-term ones).
    /// `metadata` and `rows` have the shapes of `recorder/import_statistics`; a row of a start
    /// already held replaces it. Fire [`Sim::fire_5min_statistics_generated`] to announce them.
    pub fn add_statistics(&self, metadata: Value, period: &str, rows: Value) -> Result<(), String> {
        lock(&self.inner.statistics)
            .import(&metadata, period, &rows)
            .map_err(|e| format!("{}: {}", e.code, e.message))
    }

    /// Creates or updates a registry entry (`kind`, `id`) with `fields` in HA's shape (e.g.
    /// `{"name": "Kitchen", "floor_id": "ground"}` for an area, `{"device_id": "d1", "area_id":
    /// null}` for an entity) and fires its `*_registry_updated` event, old values in `changes`.
    pub fn set_registry_entry(&self, kind: registry::Kind, id: &str, fields: Value) {
        let data = lock(&self.inner.registries).upsert(kind, id, fields);
        if let Some(data) = data {
            self.fire_event(kind.event_type(), data);
        }
    }

    /// Like [`Sim::set_registry_entry`] but fires no event: a change a client missed (it happened
    /// while the client was away), which only a full re-read finds.
    pub fn set_registry_entry_unannounced(&self, kind: registry::Kind, id: &str, fields: Value) {
        lock(&self.inner.registries).upsert(kind, id, fields);
    }

    /// Creates or renames an area.
    pub fn set_area(&self, area_id: &str, name: &str) {
        self.set_registry_entry(
            registry::Kind::Area,
            area_id,
            serde_json::json!({"name": name}),
        );
    }

    /// Sets the user's name of an entity registry entry (created if missing).
    pub fn rename_entity(&self, entity_id: &str, name: Option<&str>) {
        self.set_registry_entry(
            registry::Kind::Entity,
            entity_id,
            serde_json::json!({"name": name}),
        );
    }

    /// Removes a registry entry and fires its `remove` event.
    pub fn remove_registry_entry(&self, kind: registry::Kind, id: &str) {
        let data = lock(&self.inner.registries).remove(kind, id);
        if let Some(data) = data {
            self.fire_event(kind.event_type(), data);
        }
    }

    /// Answers `config/floor_registry/list` and `config/label_registry/list` with
    /// `unknown_command` and leaves `floor_id` and `labels` out of new entries, like an HA
    /// older than floors and labels (HA 2024.3.3 has them).
    pub fn set_without_floors_and_labels(&self, without: bool) {
        lock(&self.inner.registries).without_floors_and_labels = without;
    }

    /// Fires `recorder_5min_statistics_generated`, as HA does after each 5-minute compilation.
    pub fn fire_5min_statistics_generated(&self) {
        self.fire_event("recorder_5min_statistics_generated", serde_json::json!({}));
    }

    /// Fires a custom event (origin `LOCAL`) to `subscribe_events` subscribers.
    pub fn fire_event(&self, event_type: &str, data: Value) {
        let ctx = self.inner.new_context(None);
        self.inner.fire(event_type, &data, "LOCAL", ctx);
    }

    /// Starts a `state_changed` generator over the sensors, binary sensors, lights and climate
    /// entities: `events_per_sec` (`None` = as fast as the subscribers' sockets take them, pausing
    /// while a queue is more than half of `max_pending`), stopping after `count` events when given.
    /// The sequence of entities and values depends only on the seed.
    pub fn start_generator(
        &self,
        events_per_sec: Option<u64>,
        count: Option<u64>,
    ) -> GeneratorHandle {
        generator::start(self.inner.clone(), events_per_sec, count)
    }

    /// Starts the firehose: `templates` (built from this simulator's entities and seed) replayed
    /// with fresh, strictly increasing timestamps to `state_changed` and `subscribe_entities`
    /// subscribers. The world itself does not change (no history, no `get_states` updates), which
    /// makes it cheap enough to benchmark a client at hundreds of thousands of events per second.
    pub fn start_firehose(
        &self,
        templates: Arc<FirehoseTemplates>,
        options: FirehoseOptions,
    ) -> GeneratorHandle {
        firehose::start(self.inner.clone(), templates, options)
    }

    // ---- faults ----

    /// Drops every WebSocket connection abruptly (no close frame; the TCP socket is closed).
    pub fn drop_connections(&self) {
        for c in self.inner.hub.all() {
            self.inner.stats.inc(&self.inner.stats.fault_disconnects);
            c.kill();
        }
    }

    /// Each current connection is dropped (no close frame) after it has been sent `n` more messages.
    pub fn drop_after_messages(&self, n: u64) {
        for c in self.inner.hub.all() {
            c.drop_budget.store(n, Ordering::Release);
            if n == 0 {
                self.inner.stats.inc(&self.inner.stats.fault_disconnects);
                c.kill();
            }
        }
    }

    /// Half-open mode: sockets stay open but nothing is read or sent (no results, no pongs, no
    /// protocol pongs, no `auth_required` for new connections). Messages produced meanwhile are lost.
    pub fn set_silent(&self, silent: bool) {
        self.inner.faults.silent.send_replace(silent);
    }

    /// Sends a raw text frame to every authenticated connection (malformed JSON, unknown message
    /// types, oversized frames...).
    pub fn send_raw(&self, text: &str) {
        for c in self.inner.hub.all() {
            if c.principal.get().is_some() {
                c.send(Out::Raw(text.to_string()));
            }
        }
    }

    /// Whether the silent mode is on.
    pub fn is_silent(&self) -> bool {
        *self.inner.faults.silent.borrow()
    }

    /// Answer every `auth` with `auth_invalid` and close.
    pub fn set_reject_auth(&self, reject: bool) {
        self.inner
            .faults
            .reject_auth
            .store(reject, Ordering::Release);
    }

    /// The Supervisor's proxy finds Core down: `/core/...` answers 502 (REST and the upgrade).
    pub fn set_supervisor_core_down(&self, down: bool) {
        self.inner
            .faults
            .supervisor_core_down
            .store(down, Ordering::Release);
    }

    /// The Supervisor's proxy cannot log in to Core: its WebSocket sends `auth_ok`, then closes.
    pub fn set_supervisor_relay_fails(&self, fails: bool) {
        self.inner
            .faults
            .supervisor_relay_fails
            .store(fails, Ordering::Release);
    }

    /// Wait this long before answering `auth`.
    pub fn set_auth_delay(&self, d: Duration) {
        self.inner.faults.set_auth_delay(d);
    }

    /// A restart: every connection is closed (close frame), subscriptions and the signed-path secret
    /// are forgotten, states and tokens survive. `get_config`/`/api/config` say `NOT_RUNNING` for
    /// the first half of `not_running_for` and `STARTING` for the second (when
    /// `homeassistant_start` fires), then `RUNNING`, and `homeassistant_started` fires.
    pub fn restart(&self, not_running_for: Duration) {
        let inner = &self.inner;
        let now = Instant::now();
        let epoch = inner.restart_epoch.fetch_add(1, Ordering::AcqRel) + 1;
        *lock(&inner.restart) = Some(Restart {
            starting: now + not_running_for / 2,
            until: now + not_running_for,
            epoch,
        });
        lock(&inner.auth).forget_signed();
        for c in inner.hub.all() {
            c.close.notify_one();
        }
        let weak = Arc::downgrade(inner);
        inner.rt.spawn(async move {
            tokio::time::sleep(not_running_for / 2).await;
            let fire = |ev: &str| {
                let Some(inner) = weak.upgrade() else {
                    return false;
                };
                if lock(&inner.restart).is_none_or(|r| r.epoch != epoch) {
                    return false;
                }
                let ctx = inner.new_context(None);
                inner.fire(ev, &serde_json::json!({}), "LOCAL", ctx);
                true
            };
            if !fire("homeassistant_start") {
                return;
            }
            tokio::time::sleep(not_running_for - not_running_for / 2).await;
            let Some(inner) = weak.upgrade() else { return };
            {
                let mut r = lock(&inner.restart);
                if r.is_none_or(|r| r.epoch != epoch) {
                    return;
                }
                *r = None;
            }
            let ctx = inner.new_context(None);
            inner.fire(
                "homeassistant_started",
                &serde_json::json!({}),
                "LOCAL",
                ctx,
            );
        });
    }

    /// HA's core state now (`NOT_RUNNING`, `STARTING`, `RUNNING`).
    pub fn core_state(&self) -> &'static str {
        self.inner.core_state()
    }

    /// The next `n` `history/history_during_period` commands fail with `unknown_error`, as HA
    /// answers when the handler raises.
    pub fn set_history_failures(&self, n: u32) {
        self.inner.faults.set_history_failures(n);
    }

    /// The next `n` requests to `/auth/token` answer 500.
    pub fn set_token_endpoint_failures(&self, n: u32) {
        self.inner.faults.set_token_failures(n);
    }

    /// Counters.
    pub fn stats(&self) -> SimStats {
        self.inner.stats.snapshot(self.inner.hub.len())
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop_now();
    }
}

#[cfg(test)]
mod tests;
