//! Blocking [`crate::ws::WsClient`]: the async client runs on the blocking runtime; calls wait for
//! it, and a subscription is an iterator.
//!
//! ```no_run
//! use ha_client::auth::StaticToken;
//! use ha_client::blocking::WsClient;
//!
//! let ws = WsClient::builder("http://homeassistant.local:8123")
//!     .token_source(StaticToken::new(std::env::var("HA_TOKEN").unwrap()))
//!     .connect()?;
//! println!("HA {}", ws.ha_version().unwrap_or_default());
//! for event in ws.subscribe_events(Some("state_changed"))? {
//!     let e = event.state_changed().unwrap(); // borrowed from the frame
//!     println!("{} -> {:?}", e.entity_id, e.new_state.map(|s| s.state));
//! }
//! # Ok::<(), ha_client::Error>(())
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

use super::{SyncSource, TokenSource, block_on};
use crate::auth;
use crate::ws::{
    Backoff, ConnectionState, CurrentUser, Event, HaConfig, HistoryQuery, HistoryState,
    RecorderInfo, State, WsConfig, WsStats,
};
use crate::{Error, Secret, TlsOptions};

/// Events taken from the async stream per wait: one wake-up of the calling thread for a burst.
const BATCH: usize = 1024;

/// Builds a blocking [`WsClient`].
pub struct WsClientBuilder {
    inner: crate::ws::WsClientBuilder,
}

impl WsClientBuilder {
    /// An async token source (static, OAuth2, or your own).
    pub fn token_source(self, source: impl auth::TokenSource) -> Self {
        WsClientBuilder {
            inner: self.inner.token_source(source),
        }
    }
    /// A blocking token source of your own.
    pub fn blocking_token_source(self, source: impl TokenSource) -> Self {
        WsClientBuilder {
            inner: self.inner.token_source(SyncSource(Arc::new(source))),
        }
    }
    /// A token source shared with other clients.
    pub fn shared_token_source(self, source: Arc<dyn auth::TokenSource>) -> Self {
        WsClientBuilder {
            inner: self.inner.shared_token_source(source),
        }
    }
    /// TLS options for `wss://`.
    pub fn tls(self, tls: TlsOptions) -> Self {
        WsClientBuilder {
            inner: self.inner.tls(tls),
        }
    }
    /// All settings at once.
    pub fn config(self, config: WsConfig) -> Self {
        WsClientBuilder {
            inner: self.inner.config(config),
        }
    }
    /// Per-command timeout.
    pub fn command_timeout(self, t: Duration) -> Self {
        WsClientBuilder {
            inner: self.inner.command_timeout(t),
        }
    }
    /// Reconnect backoff.
    pub fn backoff(self, backoff: Backoff) -> Self {
        WsClientBuilder {
            inner: self.inner.backoff(backoff),
        }
    }
    /// Events buffered per subscription.
    pub fn event_buffer(self, n: usize) -> Self {
        WsClientBuilder {
            inner: self.inner.event_buffer(n),
        }
    }
    /// See [`crate::ws::WsClientBuilder::retry_initial_connect`].
    pub fn retry_initial_connect(self, retry: bool) -> Self {
        WsClientBuilder {
            inner: self.inner.retry_initial_connect(retry),
        }
    }
    /// Connects and authenticates; see [`crate::ws::WsClientBuilder::connect`].
    pub fn connect(self) -> Result<WsClient, Error> {
        Ok(WsClient {
            inner: block_on(self.inner.connect())??,
        })
    }
}

/// Blocking [`crate::ws::WsClient`]: the same connection (reconnects, resubscriptions, typed
/// errors), with calls that wait. Cheap to clone.
#[derive(Clone, Debug)]
pub struct WsClient {
    inner: crate::ws::WsClient,
}

impl WsClient {
    /// Starts building a client for the HA at `base`.
    pub fn builder(base: impl crate::IntoHaUrl) -> WsClientBuilder {
        WsClientBuilder {
            inner: crate::ws::WsClient::builder(base),
        }
    }
    /// Wraps an async client (its calls then run on the blocking runtime).
    pub fn from_async(inner: crate::ws::WsClient) -> Self {
        WsClient { inner }
    }
    /// The async client inside.
    pub fn as_async(&self) -> &crate::ws::WsClient {
        &self.inner
    }
    /// HA's version, from the last `auth_ok`.
    pub fn ha_version(&self) -> Option<String> {
        self.inner.ha_version()
    }
    /// The connection's state now.
    pub fn connection_state(&self) -> ConnectionState {
        self.inner.connection_state().borrow().clone()
    }
    /// Counters.
    pub fn stats(&self) -> WsStats {
        self.inner.stats()
    }
    /// Drops the current connection and reconnects.
    pub fn reconnect(&self) {
        self.inner.reconnect();
    }
    /// Closes the connection for good; subscriptions end.
    pub fn close(&self) {
        self.inner.close();
    }
    /// See [`crate::ws::WsClient::command_raw`].
    pub fn command_raw(&self, command: Value) -> Result<Box<RawValue>, Error> {
        block_on(self.inner.command_raw(command))?
    }
    /// See [`crate::ws::WsClient::command`].
    pub fn command<T: DeserializeOwned>(&self, command: Value) -> Result<T, Error> {
        block_on(self.inner.command(command))?
    }
    /// `get_states`.
    pub fn get_states(&self) -> Result<Vec<State>, Error> {
        block_on(self.inner.get_states())?
    }
    /// `get_config`.
    pub fn get_config(&self) -> Result<HaConfig, Error> {
        block_on(self.inner.get_config())?
    }
    /// `auth/current_user`.
    pub fn current_user(&self) -> Result<CurrentUser, Error> {
        block_on(self.inner.current_user())?
    }
    /// See [`crate::ws::WsClient::call_service`].
    pub fn call_service(
        &self,
        domain: &str,
        service: &str,
        service_data: Option<Value>,
        target: Option<Value>,
    ) -> Result<Value, Error> {
        block_on(
            self.inner
                .call_service(domain, service, service_data, target),
        )?
    }
    /// `fire_event` (admin only).
    pub fn fire_event(&self, event_type: &str, data: Option<Value>) -> Result<Value, Error> {
        block_on(self.inner.fire_event(event_type, data))?
    }
    /// See [`crate::ws::WsClient::create_long_lived_token`].
    pub fn create_long_lived_token(
        &self,
        client_name: &str,
        lifespan_days: u32,
        client_icon: Option<&str>,
    ) -> Result<Secret, Error> {
        block_on(
            self.inner
                .create_long_lived_token(client_name, lifespan_days, client_icon),
        )?
    }
    /// See [`crate::ws::WsClient::sign_path`].
    pub fn sign_path(&self, path: &str, expires: Duration) -> Result<url::Url, Error> {
        block_on(self.inner.sign_path(path, expires))?
    }
    /// `history/history_during_period`, decoded.
    pub fn history_during_period(
        &self,
        query: &HistoryQuery,
    ) -> Result<BTreeMap<String, Vec<HistoryState>>, Error> {
        block_on(self.inner.history_during_period(query))?
    }
    /// `config/area_registry/list`.
    pub fn list_areas(&self) -> Result<Vec<crate::ws::AreaEntry>, Error> {
        block_on(self.inner.list_areas())?
    }
    /// `config/floor_registry/list` (absent on older HA).
    pub fn list_floors(&self) -> Result<Vec<crate::ws::FloorEntry>, Error> {
        block_on(self.inner.list_floors())?
    }
    /// `config/label_registry/list` (absent on older HA).
    pub fn list_labels(&self) -> Result<Vec<crate::ws::LabelEntry>, Error> {
        block_on(self.inner.list_labels())?
    }
    /// `config/device_registry/list`.
    pub fn list_devices(&self) -> Result<Vec<crate::ws::DeviceEntry>, Error> {
        block_on(self.inner.list_devices())?
    }
    /// `config/entity_registry/list`.
    pub fn list_entity_registry(&self) -> Result<Vec<crate::ws::EntityEntry>, Error> {
        block_on(self.inner.list_entity_registry())?
    }
    /// `recorder/list_statistic_ids`.
    pub fn list_statistic_ids(&self) -> Result<Vec<crate::ws::StatisticMetadata>, Error> {
        block_on(self.inner.list_statistic_ids())?
    }
    /// `recorder/get_statistics_metadata` for `statistic_ids` (all when empty).
    pub fn get_statistics_metadata(
        &self,
        statistic_ids: &[String],
    ) -> Result<Vec<crate::ws::StatisticMetadata>, Error> {
        block_on(self.inner.get_statistics_metadata(statistic_ids))?
    }
    /// `recorder/statistics_during_period`.
    pub fn statistics_during_period(
        &self,
        query: &crate::ws::StatisticsQuery,
    ) -> Result<crate::ws::StatisticsAnswer, Error> {
        block_on(self.inner.statistics_during_period(query))?
    }
    /// `recorder/info`.
    pub fn recorder_info(&self) -> Result<RecorderInfo, Error> {
        block_on(self.inner.recorder_info())?
    }
    /// `subscribe_events` for one event type, or all (`None`, admin only).
    pub fn subscribe_events(&self, event_type: Option<&str>) -> Result<Subscription, Error> {
        Ok(Subscription::new(block_on(
            self.inner.subscribe_events(event_type),
        )??))
    }
    /// `subscribe_trigger` (admin only).
    pub fn subscribe_trigger(&self, trigger: Value) -> Result<Subscription, Error> {
        Ok(Subscription::new(block_on(
            self.inner.subscribe_trigger(trigger),
        )??))
    }
    /// Any subscription command; see [`crate::ws::WsClient::subscribe`].
    pub fn subscribe(&self, command: Value, needs_running: bool) -> Result<Subscription, Error> {
        Ok(Subscription::new(block_on(
            self.inner.subscribe(command, needs_running),
        )??))
    }
}

/// A live subscription as an iterator of [`Event`]s; it survives reconnects, and the iterator
/// ends when the client closes. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    inner: crate::ws::Subscription,
    buffered: VecDeque<Event>,
    batch: Vec<Event>,
}

impl Subscription {
    fn new(inner: crate::ws::Subscription) -> Self {
        Subscription {
            inner,
            buffered: VecDeque::new(),
            batch: Vec::with_capacity(BATCH),
        }
    }

    /// The stable key, as used in [`crate::ws::ConnectionEvent`]s.
    pub fn key(&self) -> u64 {
        self.inner.key()
    }

    /// The next event, waiting at most `timeout`: `Ok(None)` when the subscription has ended,
    /// [`Error::Timeout`] when nothing came in time.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, Error> {
        if let Some(e) = self.buffered.pop_front() {
            return Ok(Some(e));
        }
        // The timer is made inside the runtime, where it has a clock.
        match block_on(async { tokio::time::timeout(timeout, self.fill()).await })? {
            Ok(more) => Ok(more.then(|| self.buffered.pop_front()).flatten()),
            Err(_) => Err(Error::Timeout {
                what: "the next event".into(),
                seconds: timeout.as_secs_f64(),
            }),
        }
    }

    /// Waits for events; false when the subscription has ended.
    async fn fill(&mut self) -> bool {
        let n = self.inner.recv_many(&mut self.batch, BATCH).await;
        self.buffered.extend(self.batch.drain(..));
        n > 0
    }
}

impl Iterator for Subscription {
    type Item = Event;

    /// The next event; `None` when the subscription has ended (or when called inside an async
    /// runtime, which the blocking client refuses).
    fn next(&mut self) -> Option<Event> {
        if let Some(e) = self.buffered.pop_front() {
            return Some(e);
        }
        match block_on(self.fill()) {
            Ok(true) => self.buffered.pop_front(),
            Ok(false) => None,
            Err(e) => {
                tracing::error!(%e, "a blocking subscription was polled inside an async runtime");
                None
            }
        }
    }
}
