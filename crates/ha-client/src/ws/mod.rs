//! The WebSocket API: one connection object that hides reconnects, commands with typed answers,
//! and subscriptions that are streams and survive reconnects.
//!
//! Longer than most modules (about 670 lines of code): it is the client's public surface, one
//! method per HA command, each thin over the connection task; the machinery is in `connection`.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use ha_client::auth::StaticToken;
//! use ha_client::ws::{StateChangedEvent, WsClient};
//! # async fn run() -> Result<(), ha_client::Error> {
//! let ws = WsClient::builder("http://homeassistant.local:8123")
//!     .token_source(StaticToken::new(std::env::var("HA_TOKEN").unwrap()))
//!     .connect()
//!     .await?;
//! println!("HA {}", ws.ha_version().unwrap_or_default());
//! let mut events = ws.subscribe_events(Some("state_changed")).await?;
//! while let Some(event) = events.next().await {
//!     // The fast path: borrowed from the frame, attributes left as JSON until asked for.
//!     let e = event.state_changed().unwrap();
//!     if let Some(new) = &e.new_state {
//!         println!("{} -> {} at {:?} µs", e.entity_id, new.state, new.last_updated_us());
//!     }
//!     // Or owned, everything parsed (attributes into a map):
//!     let owned: StateChangedEvent = event.parse().unwrap();
//!     # let _ = owned;
//! }
//! # Ok(()) }
//! ```
//!
//! Typed events are parsed straight from the event's JSON: [`StateChangedRef`] (borrowed: the
//! fast path), [`StateChangedEvent`] (owned), [`HaEvent`] for any event type. The connection task
//! does not parse events: it finds them in the frame by their braces and hands each subscription
//! the frame's events at once; the one parse is yours.
//!
//! What it guarantees:
//! - `auth_invalid` is final: the client stops and every call returns [`Error::AuthInvalid`]; it
//!   never reconnects in a loop (HA bans IPs after repeated failures).
//! - Any other loss reconnects with exponential backoff and full jitter, refreshes the token if it
//!   expired, and resubscribes every live subscription under new ids; your streams go on.
//!   Commands in flight fail at once with [`Error::ConnectionLost`].
//! - [`WsClient::connection_events`] reports connects, disconnects, and each reconnect with the gap's
//!   start and end, so a consumer can backfill from history.
//! - The socket is read continuously. Events go to a bounded buffer per subscription; an overflow is
//!   counted and reported as [`ConnectionEvent::EventsDropped`], never silent.
//! - An application-level `ping` watchdog forces a reconnect on a half-open socket.

mod connection;
pub(crate) mod entities;
pub(crate) mod frame;
pub mod registry;
mod state_changed;
pub mod statistics;
mod subscription;
pub(crate) mod types;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use entities::{EntitiesSubscription, EntitiesUpdate, EntityState};
pub use registry::{AreaEntry, DeviceEntry, EntityEntry, FloorEntry, LabelEntry};
pub use state_changed::{ContextRef, StateChangedEvent, StateChangedRef, StateRef};
pub use statistics::{
    StatisticMetadata, StatisticRow, StatisticsAnswer, StatisticsPeriod, StatisticsQuery,
};
pub use subscription::Subscription;
pub use types::{
    Context, CurrentUser, Event, HaConfig, HaEvent, HistoryQuery, HistoryState, RecorderInfo,
    State, StateChangedData,
};

use crate::auth::TokenSource;
use crate::{Error, HaUrl, Secret, TlsOptions};
use connection::{Control, Shared};

/// Reconnect backoff: the delay before reconnect attempt `n` (from 0) is drawn uniformly from
/// `[0, min(max, initial * 2^n)]` ("full jitter"). The attempt count only resets after a session
/// stayed up for `stable_after`, so a server that accepts and drops at once (the Supervisor proxy
/// while HA starts) still meets growing delays.
#[derive(Clone, Debug)]
pub struct Backoff {
    /// Base delay.
    pub initial: Duration,
    /// Cap.
    pub max: Duration,
    /// How long a session must last before the attempt count resets.
    pub stable_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
            stable_after: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay bound for attempt `n` (before jitter).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.initial
            .saturating_mul(1u32 << attempt.min(30))
            .min(self.max)
    }

    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        use rand::Rng;
        let ceiling = self.ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

/// Settings of a [`WsClient`].
#[derive(Clone, Debug)]
pub struct WsConfig {
    /// Time allowed for connect plus auth (HA itself allows 10 s for the auth message).
    pub connect_timeout: Duration,
    /// Default per-command timeout.
    pub command_timeout: Duration,
    /// Interval of the app-level `ping` (`None` turns the watchdog off).
    pub ping_interval: Option<Duration>,
    /// How long without any message after a ping before the socket counts as dead. Keep it at 15 s
    /// or more in production: HA can be slow to answer under load or while starting.
    pub ping_timeout: Duration,
    /// Buffered events per subscription before new ones are dropped (and reported).
    pub event_buffer: usize,
    /// Buffered bytes (of event JSON) per subscription before new events are dropped (and
    /// reported): what bounds memory when HA sends faster than the caller reads. Default 16 MiB.
    pub event_buffer_bytes: usize,
    /// Largest accepted message and frame (`get_states` arrives as one frame).
    pub max_message_size: usize,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// Ask HA to batch messages into JSON arrays (`coalesce_messages`).
    pub coalesce_messages: bool,
    /// Keep retrying when the very first connection fails with a transient error (a service wants
    /// this; a CLI wants the error).
    pub retry_initial_connect: bool,
    /// How often to poll `get_config` while HA says it is not yet `RUNNING`.
    pub running_poll: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
            ping_interval: Some(Duration::from_secs(30)),
            ping_timeout: Duration::from_secs(20),
            event_buffer: 65_536,
            event_buffer_bytes: 16 << 20,
            max_message_size: 64 << 20,
            backoff: Backoff::default(),
            coalesce_messages: true,
            retry_initial_connect: false,
            running_poll: Duration::from_secs(1),
        }
    }
}

/// The connection's state, as a [`watch`] value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connecting or waiting to reconnect.
    Connecting,
    /// Authenticated.
    Connected {
        /// HA's version.
        ha_version: String,
    },
    /// Stopped for good after `auth_invalid`.
    AuthFailed,
    /// Closed by its owner.
    Closed,
}

/// Something that happened to the connection.
#[derive(Clone, Debug)]
pub enum ConnectionEvent {
    /// The first successful connection.
    Connected {
        /// HA's version.
        ha_version: String,
        /// When.
        at: SystemTime,
    },
    /// The connection was lost.
    Disconnected {
        /// When.
        at: SystemTime,
        /// Why.
        reason: String,
    },
    /// Connected again after a loss; subscriptions are being renewed. Events between `gap_start`
    /// and `gap_end` were not seen.
    Reconnected {
        /// When the lost connection last delivered a message (an event, a result, a pong): what
        /// HA sent after that may be lost, even if the loss was noticed later (a half-open socket
        /// is only caught by the ping watchdog).
        gap_start: SystemTime,
        /// When it was back.
        gap_end: SystemTime,
    },
    /// A subscription's buffer was full and events were dropped: treat it as a gap.
    EventsDropped {
        /// The subscription's stable key.
        subscription: u64,
        /// Dropped events of this subscription so far.
        total: u64,
    },
    /// A subscription could not be renewed after a reconnect; its stream ends.
    ResubscribeFailed {
        /// The subscription's stable key.
        subscription: u64,
        /// The error.
        error: String,
    },
    /// A frame HA sent could not be understood (logged and skipped).
    ProtocolError {
        /// What was wrong.
        detail: String,
    },
    /// `auth_invalid`: the client has stopped.
    AuthFailed {
        /// HA's message.
        message: String,
    },
}

/// Counters of a client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WsStats {
    /// Connection attempts (successful or not).
    pub connect_attempts: u64,
    /// Successful authentications.
    pub connects: u64,
    /// Events received for subscriptions.
    pub events_received: u64,
    /// Events dropped because a subscriber's buffer was full.
    pub events_dropped: u64,
    /// Frames that could not be parsed.
    pub malformed_frames: u64,
    /// Reconnects forced by the ping watchdog.
    pub watchdog_timeouts: u64,
    /// Commands sent and not yet answered.
    pub commands_in_flight: u64,
}

/// Builds a [`WsClient`].
pub struct WsClientBuilder {
    base: Result<HaUrl, Error>,
    tokens: Option<Arc<dyn TokenSource>>,
    tls: TlsOptions,
    config: WsConfig,
}

impl WsClientBuilder {
    /// Where tokens come from (required).
    pub fn token_source(mut self, source: impl TokenSource) -> Self {
        self.tokens = Some(Arc::new(source));
        self
    }
    /// A token source shared with other clients.
    pub fn shared_token_source(mut self, source: Arc<dyn TokenSource>) -> Self {
        self.tokens = Some(source);
        self
    }
    /// TLS options for `wss://`.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }
    /// All settings at once.
    pub fn config(mut self, config: WsConfig) -> Self {
        self.config = config;
        self
    }
    /// Per-command timeout.
    pub fn command_timeout(mut self, t: Duration) -> Self {
        self.config.command_timeout = t;
        self
    }
    /// Ping watchdog interval and timeout.
    pub fn ping(mut self, interval: Option<Duration>, timeout: Duration) -> Self {
        self.config.ping_interval = interval;
        self.config.ping_timeout = timeout;
        self
    }
    /// Reconnect backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }
    /// Events buffered per subscription.
    pub fn event_buffer(mut self, n: usize) -> Self {
        self.config.event_buffer = n.max(1);
        self
    }
    /// Bytes of events buffered per subscription (see [`WsConfig::event_buffer_bytes`]).
    pub fn event_buffer_bytes(mut self, n: usize) -> Self {
        self.config.event_buffer_bytes = n.max(1);
        self
    }
    /// Retry a first connection that fails with a transient error (network, 5xx, HA starting)
    /// instead of returning it. Other errors (auth, TLS verification, a bad URL) are returned.
    pub fn retry_initial_connect(mut self, retry: bool) -> Self {
        self.config.retry_initial_connect = retry;
        self
    }

    /// Connects and authenticates. Returns once the first session is up, or with the error of the
    /// first attempt (unless `retry_initial_connect`); a final auth error is always returned.
    pub async fn connect(self) -> Result<WsClient, Error> {
        let base = self.base?;
        let tokens = self.tokens.ok_or_else(|| {
            Error::Config("no token source: call token_source(StaticToken::new(..))".into())
        })?;
        let tls = if base.scheme() == "https" {
            Some(self.tls.client_config()?)
        } else {
            None
        };
        let (shared, control_tx, first) =
            connection::spawn(base.clone(), tokens, tls, self.config.clone());
        match first.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::Closed),
        }
        Ok(WsClient {
            inner: Arc::new(Inner {
                base,
                control: control_tx,
                shared,
                config: self.config,
                next_key: AtomicU64::new(1),
            }),
        })
    }
}

/// A WebSocket connection to Home Assistant that hides reconnects. Cheap to clone; the
/// connection closes when the last clone and the last subscription are dropped, or on
/// [`WsClient::close`].
#[derive(Clone)]
pub struct WsClient {
    inner: Arc<Inner>,
}

struct Inner {
    base: HaUrl,
    control: mpsc::UnboundedSender<Control>,
    shared: Arc<Shared>,
    config: WsConfig,
    next_key: AtomicU64,
}

impl std::fmt::Debug for WsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsClient")
            .field("base", &self.inner.base)
            .field("state", &*self.inner.shared.state.borrow())
            .finish_non_exhaustive()
    }
}

impl WsClient {
    /// Starts building a client for the HA at `base` (`http(s)://host[:port][/prefix]`; the
    /// WebSocket URL is derived from it).
    pub fn builder(base: impl crate::IntoHaUrl) -> WsClientBuilder {
        WsClientBuilder {
            base: base.into_ha_url(),
            tokens: None,
            tls: TlsOptions::default(),
            config: WsConfig::default(),
        }
    }

    /// HA's version, from the last `auth_ok`.
    pub fn ha_version(&self) -> Option<String> {
        match &*self.inner.shared.state.borrow() {
            ConnectionState::Connected { ha_version } => Some(ha_version.clone()),
            _ => self
                .inner
                .shared
                .ha_version
                .lock()
                .ok()
                .and_then(|v| v.clone()),
        }
    }

    /// The connection state, as a watch channel.
    pub fn connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.shared.state.subscribe()
    }

    /// Connection events from now on. The channel holds the last 64: a receiver that falls
    /// further behind gets `RecvError::Lagged` (treat the time as a gap), never a blocked client.
    pub fn connection_events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.inner.shared.events.subscribe()
    }

    /// Counters.
    pub fn stats(&self) -> WsStats {
        self.inner.shared.stats()
    }

    /// Drops the current connection and reconnects (after the backoff delay).
    pub fn reconnect(&self) {
        let _ = self.inner.control.send(Control::Reconnect);
    }

    /// Closes the connection for good; subscriptions end.
    pub fn close(&self) {
        let _ = self.inner.control.send(Control::Close);
    }

    /// Sends any command (without `id`; the client adds it) and returns HA's `result` as raw JSON.
    pub async fn command_raw(&self, command: Value) -> Result<Box<RawValue>, Error> {
        self.command_raw_timeout(command, self.inner.config.command_timeout)
            .await
    }

    /// Like [`WsClient::command_raw`] with its own timeout.
    pub async fn command_raw_timeout(
        &self,
        command: Value,
        timeout: Duration,
    ) -> Result<Box<RawValue>, Error> {
        let Value::Object(msg) = command else {
            return Err(Error::Config("a command must be a JSON object".into()));
        };
        let kind = command_type(&msg)?;
        let (tx, rx) = oneshot::channel();
        self.inner
            .control
            .send(Control::Command { msg, reply: tx })
            .map_err(|_| self.stopped_error())?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.stopped_error()),
            Err(_) => Err(Error::Timeout {
                what: kind,
                seconds: timeout.as_secs_f64(),
            }),
        }
    }

    /// Sends any command and parses the result.
    pub async fn command<T: DeserializeOwned>(&self, command: Value) -> Result<T, Error> {
        let raw = self.command_raw(command).await?;
        decode_result(&raw)
    }

    /// `get_states`.
    pub async fn get_states(&self) -> Result<Vec<State>, Error> {
        self.command(json!({"type": "get_states"})).await
    }

    /// `get_config`.
    pub async fn get_config(&self) -> Result<HaConfig, Error> {
        self.command(json!({"type": "get_config"})).await
    }

    /// `auth/current_user`.
    pub async fn current_user(&self) -> Result<CurrentUser, Error> {
        self.command(json!({"type": "auth/current_user"})).await
    }

    /// `call_service`; returns HA's result (`{"context": ...}` and, with responses, `response`).
    pub async fn call_service(
        &self,
        domain: &str,
        service: &str,
        service_data: Option<Value>,
        target: Option<Value>,
    ) -> Result<Value, Error> {
        let mut msg = json!({"type": "call_service", "domain": domain, "service": service});
        if let Some(d) = service_data {
            msg["service_data"] = d;
        }
        if let Some(t) = target {
            msg["target"] = t;
        }
        self.command(msg).await
    }

    /// `fire_event` (admin only).
    pub async fn fire_event(&self, event_type: &str, data: Option<Value>) -> Result<Value, Error> {
        let mut msg = json!({"type": "fire_event", "event_type": event_type});
        if let Some(d) = data {
            msg["event_data"] = d;
        }
        self.command(msg).await
    }

    /// `auth/long_lived_access_token`: a new long-lived token for the connected user.
    /// `client_name` must be unique per user (HA answers a duplicate with `unknown_error`).
    pub async fn create_long_lived_token(
        &self,
        client_name: &str,
        lifespan_days: u32,
        client_icon: Option<&str>,
    ) -> Result<Secret, Error> {
        let mut msg = json!({
            "type": "auth/long_lived_access_token",
            "client_name": client_name,
            "lifespan": lifespan_days,
        });
        if let Some(icon) = client_icon {
            msg["client_icon"] = Value::String(icon.to_string());
        }
        let token: String = self.command(msg).await?;
        Ok(Secret::new(token))
    }

    /// `auth/sign_path`: a full URL that a plain GET (no header) can read until it expires.
    pub async fn sign_path(&self, path: &str, expires: Duration) -> Result<url::Url, Error> {
        #[derive(serde::Deserialize)]
        struct Signed {
            path: String,
        }
        let signed: Signed = self
            .command(json!({"type": "auth/sign_path", "path": path, "expires": expires.as_secs()}))
            .await?;
        self.inner.base.join(&signed.path)
    }

    /// `history/history_during_period`, decoded.
    pub async fn history_during_period(
        &self,
        query: &HistoryQuery,
    ) -> Result<std::collections::BTreeMap<String, Vec<HistoryState>>, Error> {
        let mut msg = serde_json::to_value(query)
            .map_err(|e| Error::Config(format!("history query: {e}")))?;
        msg["type"] = Value::String("history/history_during_period".into());
        let raw = self.command_raw(msg).await?;
        types::decode_history(&raw).map_err(|e| Error::UnexpectedResponse {
            path: "history/history_during_period".into(),
            detail: e.to_string(),
        })
    }

    /// `recorder/info`.
    pub async fn recorder_info(&self) -> Result<RecorderInfo, Error> {
        self.command(json!({"type": "recorder/info"})).await
    }

    /// `config/area_registry/list`: every area.
    pub async fn list_areas(&self) -> Result<Vec<AreaEntry>, Error> {
        self.command(json!({"type": "config/area_registry/list"}))
            .await
    }

    /// `config/floor_registry/list`: every floor. On an HA without them: [`Error::Command`] with code
    /// `unknown_command`.
    pub async fn list_floors(&self) -> Result<Vec<FloorEntry>, Error> {
        self.command(json!({"type": "config/floor_registry/list"}))
            .await
    }

    /// `config/label_registry/list`: every label. On an HA without them: [`Error::Command`] with code
    /// `unknown_command`.
    pub async fn list_labels(&self) -> Result<Vec<LabelEntry>, Error> {
        self.command(json!({"type": "config/label_registry/list"}))
            .await
    }

    /// `config/device_registry/list`: every device.
    pub async fn list_devices(&self) -> Result<Vec<DeviceEntry>, Error> {
        self.command(json!({"type": "config/device_registry/list"}))
            .await
    }

    /// `config/entity_registry/list`: every entity in the entity registry (entities set through
    /// REST `POST /api/states` are not in it).
    pub async fn list_entity_registry(&self) -> Result<Vec<EntityEntry>, Error> {
        self.command(json!({"type": "config/entity_registry/list"}))
            .await
    }

    /// `recorder/list_statistic_ids`: every statistic HA holds or will compile (sensors with a
    /// `state_class` are listed before their first row), with its metadata.
    pub async fn list_statistic_ids(&self) -> Result<Vec<StatisticMetadata>, Error> {
        self.command(json!({"type": "recorder/list_statistic_ids"}))
            .await
    }

    /// `recorder/get_statistics_metadata` for `statistic_ids` (all when empty).
    pub async fn get_statistics_metadata(
        &self,
        statistic_ids: &[String],
    ) -> Result<Vec<StatisticMetadata>, Error> {
        let mut msg = json!({"type": "recorder/get_statistics_metadata"});
        if !statistic_ids.is_empty() {
            msg["statistic_ids"] = json!(statistic_ids);
        }
        self.command(msg).await
    }

    /// `recorder/statistics_during_period`: rows per statistic in `[start_time, end_time)`.
    /// HA's refusals come back as [`Error::Command`] with its code (`invalid_start_time`,
    /// `invalid_format` for an empty id list or an unknown period).
    pub async fn statistics_during_period(
        &self,
        query: &StatisticsQuery,
    ) -> Result<StatisticsAnswer, Error> {
        let mut msg = serde_json::to_value(query)
            .map_err(|e| Error::Config(format!("statistics query: {e}")))?;
        msg["type"] = Value::String("recorder/statistics_during_period".into());
        self.command(msg).await
    }

    /// `subscribe_events` for one event type, or all (`None`, admin only).
    pub async fn subscribe_events(&self, event_type: Option<&str>) -> Result<Subscription, Error> {
        let mut msg = json!({"type": "subscribe_events"});
        if let Some(t) = event_type {
            msg["event_type"] = Value::String(t.to_string());
        }
        self.subscribe(msg, false).await
    }

    /// `subscribe_entities`, decoded into full states.
    pub async fn subscribe_entities(
        &self,
        entity_ids: Option<Vec<String>>,
    ) -> Result<EntitiesSubscription, Error> {
        let mut msg = json!({"type": "subscribe_entities"});
        if let Some(ids) = entity_ids {
            msg["entity_ids"] = json!(ids);
        }
        Ok(EntitiesSubscription::new(self.subscribe(msg, false).await?))
    }

    /// `subscribe_trigger` (admin only). After a reconnect it is renewed only once HA is `RUNNING`.
    pub async fn subscribe_trigger(&self, trigger: Value) -> Result<Subscription, Error> {
        self.subscribe(
            json!({"type": "subscribe_trigger", "trigger": trigger}),
            true,
        )
        .await
    }

    /// Any subscription command (`{"type": ...}` without id). `needs_running`: renew it after a
    /// reconnect only once HA reports `RUNNING`.
    pub async fn subscribe(
        &self,
        command: Value,
        needs_running: bool,
    ) -> Result<Subscription, Error> {
        let Value::Object(msg) = command else {
            return Err(Error::Config("a subscription must be a JSON object".into()));
        };
        let kind = command_type(&msg)?;
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let queued = Arc::new(subscription::Queued::default());
        let (reply_tx, reply_rx) = oneshot::channel();
        self.inner
            .control
            .send(Control::Subscribe {
                key,
                msg,
                events: events_tx,
                queued: queued.clone(),
                reply: reply_tx,
                needs_running,
            })
            .map_err(|_| self.stopped_error())?;
        let sub = Subscription::new(key, events_rx, queued, self.inner.control.clone());
        let timeout = self.inner.config.command_timeout;
        match tokio::time::timeout(timeout, reply_rx).await {
            Ok(Ok(Ok(()))) => Ok(sub),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(self.stopped_error()),
            Err(_) => Err(Error::Timeout {
                what: kind,
                seconds: timeout.as_secs_f64(),
            }),
        }
    }

    fn stopped_error(&self) -> Error {
        match &*self.inner.shared.state.borrow() {
            ConnectionState::AuthFailed => Error::AuthInvalid {
                message: self
                    .inner
                    .shared
                    .auth_message
                    .lock()
                    .ok()
                    .and_then(|m| m.clone())
                    .unwrap_or_default(),
            },
            _ => Error::Closed,
        }
    }
}

fn command_type(msg: &Map<String, Value>) -> Result<String, Error> {
    if msg.contains_key("id") {
        return Err(Error::Config(
            "leave `id` out of commands: the client numbers them".into(),
        ));
    }
    msg.get("type")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::Config("a command needs a string `type`".into()))
}

/// A command's result as `T`: what [`WsClient::command`] returns (`get_states`, statistics, ...).
pub(crate) fn decode_result<T: DeserializeOwned>(raw: &RawValue) -> Result<T, Error> {
    serde_json::from_str(raw.get()).map_err(|e| Error::UnexpectedResponse {
        path: "websocket".into(),
        detail: format!("cannot parse the result: {e}"),
    })
}
