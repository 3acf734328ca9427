//! The task that owns the socket: connect, authenticate, dispatch, reconnect.
//!
//! Longer than most modules (about 950 lines of code): the connection's state machine is one
//! owner of the socket, the pending commands and the subscriptions, and splitting it would share
//! that state between files.
//!
//! One task per client. It reads the socket continuously and never waits on a consumer: replies go
//! through oneshot channels and events through bounded channels with `try_send`, so HA never piles
//! up unread messages for us (it drops clients at 4096).

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::frame::{self, Piece};
use super::subscription::{Delivery, Queued};
use super::types::span_in;
use super::{ConnectionEvent, ConnectionState, WsConfig, WsStats};
use crate::auth::TokenSource;
use crate::error::url_for_display;
use crate::{Error, HaUrl, Secret};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type CommandReply = oneshot::Sender<Result<Box<RawValue>, Error>>;

/// Requests from the handles to the task.
pub(crate) enum Control {
    Command {
        msg: Map<String, Value>,
        reply: CommandReply,
    },
    Subscribe {
        key: u64,
        msg: Map<String, Value>,
        events: mpsc::UnboundedSender<Delivery>,
        queued: Arc<Queued>,
        reply: oneshot::Sender<Result<(), Error>>,
        needs_running: bool,
    },
    Unsubscribe {
        key: u64,
    },
    Reconnect,
    Close,
}

/// State visible to the handles.
pub(crate) struct Shared {
    pub(crate) state: watch::Sender<ConnectionState>,
    pub(crate) events: broadcast::Sender<ConnectionEvent>,
    pub(crate) ha_version: Mutex<Option<String>>,
    pub(crate) auth_message: Mutex<Option<String>>,
    connect_attempts: AtomicU64,
    connects: AtomicU64,
    events_received: AtomicU64,
    events_dropped: AtomicU64,
    malformed_frames: AtomicU64,
    watchdog_timeouts: AtomicU64,
    commands_in_flight: AtomicU64,
}

impl Shared {
    pub(crate) fn stats(&self) -> WsStats {
        WsStats {
            connect_attempts: self.connect_attempts.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            events_received: self.events_received.load(Ordering::Relaxed),
            events_dropped: self.events_dropped.load(Ordering::Relaxed),
            malformed_frames: self.malformed_frames.load(Ordering::Relaxed),
            watchdog_timeouts: self.watchdog_timeouts.load(Ordering::Relaxed),
            commands_in_flight: self.commands_in_flight.load(Ordering::Relaxed),
        }
    }

    fn emit(&self, event: ConnectionEvent) {
        // No receivers is fine.
        let _ = self.events.send(event);
    }

    fn protocol_error(&self, detail: String) {
        self.malformed_frames.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%detail, "unexpected WebSocket message; skipped");
        self.emit(ConnectionEvent::ProtocolError { detail });
    }
}

/// Starts the connection task. The oneshot reports the outcome of the first connection.
pub(crate) fn spawn(
    base: HaUrl,
    tokens: Arc<dyn TokenSource>,
    tls: Option<Arc<rustls::ClientConfig>>,
    config: WsConfig,
) -> (
    Arc<Shared>,
    mpsc::UnboundedSender<Control>,
    oneshot::Receiver<Result<(), Error>>,
) {
    let (state, _) = watch::channel(ConnectionState::Connecting);
    // Connection events are few (at most one drop report a second per subscription); a receiver
    // that falls 64 behind sees `Lagged` and treats the time as a gap. A broadcast channel
    // allocates every slot up front: at 1024 that was ~100 KiB per client, half the memory of a
    // process serving a thousand instances (bench row i).
    let (events, _) = broadcast::channel(64);
    let shared = Arc::new(Shared {
        state,
        events,
        ha_version: Mutex::new(None),
        auth_message: Mutex::new(None),
        connect_attempts: AtomicU64::new(0),
        connects: AtomicU64::new(0),
        events_received: AtomicU64::new(0),
        events_dropped: AtomicU64::new(0),
        malformed_frames: AtomicU64::new(0),
        watchdog_timeouts: AtomicU64::new(0),
        commands_in_flight: AtomicU64::new(0),
    });
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (first_tx, first_rx) = oneshot::channel();
    let actor = Actor {
        base,
        tokens,
        tls,
        config,
        shared: shared.clone(),
        control: control_rx,
        subs: HashMap::new(),
        queued: Vec::new(),
        first: Some(first_tx),
        frame: None,
        pieces: Vec::new(),
        skeleton: String::new(),
    };
    tokio::spawn(actor.run());
    (shared, control_tx, first_rx)
}

struct Sub {
    msg: Map<String, Value>,
    events: mpsc::UnboundedSender<Delivery>,
    /// Events in the channel, not yet taken by the stream (within `event_buffer` and
    /// `event_buffer_bytes`).
    queued: Arc<Queued>,
    reply: Option<oneshot::Sender<Result<(), Error>>>,
    needs_running: bool,
    ws_id: Option<u64>,
    dropped: u64,
    overflowing: bool,
    /// When the last `EventsDropped` went out: one per overflow, then at most one a second, so a
    /// flood cannot flood the connection events too.
    last_drop_report: Option<Instant>,
}

enum Pending {
    Command { reply: CommandReply, kind: String },
    Subscribe { key: u64 },
    RunningCheck,
    Ignore,
}

#[derive(Default)]
struct Session {
    next_id: u64,
    pending: HashMap<u64, Pending>,
    id_to_sub: HashMap<u64, u64>,
    ping_sent: Option<Instant>,
    last_ping: Option<Instant>,
    last_rx: Option<Instant>,
    running_check_at: Option<tokio::time::Instant>,
}

enum SessionEnd {
    Lost(String),
    Close,
}

struct Actor {
    base: HaUrl,
    tokens: Arc<dyn TokenSource>,
    tls: Option<Arc<rustls::ClientConfig>>,
    config: WsConfig,
    shared: Arc<Shared>,
    control: mpsc::UnboundedReceiver<Control>,
    subs: HashMap<u64, Sub>,
    queued: Vec<(Map<String, Value>, CommandReply)>,
    first: Option<oneshot::Sender<Result<(), Error>>>,
    /// The text frame being dispatched: events share it instead of each copying its JSON.
    frame: Option<tungstenite::Utf8Bytes>,
    /// Scratch space of the frame splitter, reused between frames.
    pieces: Vec<Piece>,
    skeleton: String,
}

/// One message of HA's, borrowed from the frame.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(default)]
    id: Option<u64>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    success: Option<bool>,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<ErrorBody>,
    #[serde(default, borrow)]
    event: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct AuthMessage {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    ha_version: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn command_error(kind: &str, error: Option<ErrorBody>) -> Error {
    let error = error.unwrap_or(ErrorBody {
        code: "unknown_error".into(),
        message: "no error object in the failed result".into(),
    });
    if error.code == "unauthorized" {
        Error::CommandUnauthorized {
            command: kind.to_string(),
        }
    } else {
        Error::Command {
            command: kind.to_string(),
            code: error.code,
            message: error.message,
        }
    }
}

fn null_raw() -> Box<RawValue> {
    RawValue::from_string("null".into()).unwrap_or_else(|_| unreachable!("null is valid JSON"))
}

impl Actor {
    async fn run(mut self) {
        let mut attempt: u32 = 0;
        let mut gap_start: Option<SystemTime> = None;
        loop {
            self.shared.state.send_replace(ConnectionState::Connecting);
            self.shared.connect_attempts.fetch_add(1, Ordering::Relaxed);
            let opened = match tokio::time::timeout(self.config.connect_timeout, self.open()).await
            {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout {
                    what: "connect and authenticate".into(),
                    seconds: self.config.connect_timeout.as_secs_f64(),
                }),
            };
            match opened {
                Ok((mut ws, ha_version)) => {
                    let started = Instant::now();
                    self.shared.connects.fetch_add(1, Ordering::Relaxed);
                    *self
                        .shared
                        .ha_version
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(ha_version.clone());
                    self.shared.state.send_replace(ConnectionState::Connected {
                        ha_version: ha_version.clone(),
                    });
                    match (self.first.take(), gap_start.take()) {
                        (Some(first), _) => {
                            let _ = first.send(Ok(()));
                            self.shared.emit(ConnectionEvent::Connected {
                                ha_version,
                                at: SystemTime::now(),
                            });
                        }
                        (None, Some(start)) => self.shared.emit(ConnectionEvent::Reconnected {
                            gap_start: start,
                            gap_end: SystemTime::now(),
                        }),
                        (None, None) => {}
                    }
                    let mut session = Session {
                        next_id: 1,
                        ..Session::default()
                    };
                    let end = self.session(&mut ws, &mut session).await;
                    // The gap starts when the lost connection last delivered anything, not when
                    // the loss was noticed: a half-open socket is only caught by the watchdog,
                    // up to ping_interval + ping_timeout later, and events of that time are gone.
                    let last_heard = session.last_rx.unwrap_or(started);
                    self.end_session(session);
                    if started.elapsed() >= self.config.backoff.stable_after {
                        attempt = 0;
                    }
                    match end {
                        SessionEnd::Close => {
                            let _ = ws.close(None).await;
                            self.finish(ConnectionState::Closed, None);
                            return;
                        }
                        SessionEnd::Lost(reason) => {
                            tracing::warn!(%reason, "connection to Home Assistant lost; reconnecting");
                            let now = SystemTime::now();
                            gap_start = Some(now.checked_sub(last_heard.elapsed()).unwrap_or(now));
                            self.shared.emit(ConnectionEvent::Disconnected {
                                at: SystemTime::now(),
                                reason,
                            });
                        }
                    }
                }
                Err(e) if e.is_final() => {
                    tracing::error!(%e, "authentication failed; not reconnecting");
                    let message = match &e {
                        Error::AuthInvalid { message } => message.clone(),
                        other => other.to_string(),
                    };
                    *self
                        .shared
                        .auth_message
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(message.clone());
                    self.shared.emit(ConnectionEvent::AuthFailed {
                        message: message.clone(),
                    });
                    if let Some(first) = self.first.take() {
                        let _ = first.send(Err(e));
                    }
                    self.finish(ConnectionState::AuthFailed, Some(message));
                    return;
                }
                Err(e) => {
                    // The first connection returns its error unless asked to retry, and even then
                    // when retrying cannot help (an untrusted certificate, a bad URL). Later
                    // reconnects keep trying: an operator may fix the server meanwhile.
                    if (!self.config.retry_initial_connect || !e.is_transient())
                        && let Some(first) = self.first.take()
                    {
                        let _ = first.send(Err(e));
                        self.finish(ConnectionState::Closed, None);
                        return;
                    }
                    tracing::warn!(%e, attempt, "connecting to Home Assistant failed");
                }
            }
            let delay = self.config.backoff.delay(attempt);
            attempt = attempt.saturating_add(1);
            if !self.wait_disconnected(delay).await {
                self.finish(ConnectionState::Closed, None);
                return;
            }
        }
    }

    /// Serves the handles while waiting to reconnect. False when the client is closed.
    async fn wait_disconnected(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                ctl = self.control.recv() => match ctl {
                    None | Some(Control::Close) => return false,
                    Some(Control::Reconnect) => {}
                    Some(Control::Command { msg, reply }) => self.queued.push((msg, reply)),
                    Some(Control::Subscribe { key, msg, events, queued, reply, needs_running }) => {
                        self.subs.insert(key, Sub { msg, events, queued, reply: Some(reply), needs_running, ws_id: None, dropped: 0, overflowing: false, last_drop_report: None });
                    }
                    Some(Control::Unsubscribe { key }) => {
                        self.subs.remove(&key);
                    }
                },
            }
        }
    }

    /// Fails everything that waits and ends every subscription stream.
    fn finish(&mut self, state: ConnectionState, auth_message: Option<String>) {
        let error = || match &auth_message {
            Some(m) => Error::AuthInvalid { message: m.clone() },
            None => Error::Closed,
        };
        for (_, reply) in self.queued.drain(..) {
            let _ = reply.send(Err(error()));
        }
        for (_, mut sub) in self.subs.drain() {
            if let Some(reply) = sub.reply.take() {
                let _ = reply.send(Err(error()));
            }
        }
        self.shared.state.send_replace(state);
    }

    fn end_session(&mut self, session: Session) {
        for (_, p) in session.pending {
            if let Pending::Command { reply, kind } = p {
                self.shared
                    .commands_in_flight
                    .fetch_sub(1, Ordering::Relaxed);
                let _ = reply.send(Err(Error::ConnectionLost { command: kind }));
            }
        }
        for sub in self.subs.values_mut() {
            sub.ws_id = None;
        }
    }

    async fn open(&self) -> Result<(Ws, String), Error> {
        let token = self.tokens.access_token().await?;
        match self.handshake(&token).await {
            Err(Error::AuthInvalid { message }) => {
                // One fresh token, one more try (as for HTTP 401); never a loop.
                match self.tokens.refresh_after_rejection(&token).await? {
                    Some(fresh) => self.handshake(&fresh).await,
                    None => Err(Error::AuthInvalid { message }),
                }
            }
            other => other,
        }
    }

    async fn handshake(&self, token: &Secret) -> Result<(Ws, String), Error> {
        let url = self.base.websocket_url();
        let shown = url_for_display(&url);
        // tungstenite zero-fills the free part of its read buffer (up to this size) before every
        // read: at the default 128 KiB that was about 5 % of the client's CPU on a firehose whose
        // reads return a few KiB each.
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(32 * 1024)
            .max_message_size(Some(self.config.max_message_size))
            .max_frame_size(Some(self.config.max_message_size));
        let connector = match &self.tls {
            Some(c) => Connector::Rustls(c.clone()),
            None => Connector::Plain,
        };
        let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
            url.as_str(),
            Some(ws_config),
            true,
            Some(connector),
        )
        .await
        .map_err(|e| handshake_error(&shown, e))?;
        let first = next_auth_message(&mut ws, &shown).await?;
        if first.kind != "auth_required" {
            return Err(Error::Protocol(format!(
                "expected auth_required, got '{}'",
                first.kind
            )));
        }
        let auth = json!({"type": "auth", "access_token": token.expose()}).to_string();
        ws.send(Message::text(auth))
            .await
            .map_err(|e| ws_error(&shown, e))?;
        let reply = next_auth_message(&mut ws, &shown).await?;
        match reply.kind.as_str() {
            "auth_ok" => Ok((
                ws,
                reply.ha_version.or(first.ha_version).unwrap_or_default(),
            )),
            "auth_invalid" => Err(Error::AuthInvalid {
                message: reply.message.unwrap_or_default(),
            }),
            other => Err(Error::Protocol(format!(
                "expected auth_ok or auth_invalid, got '{other}'"
            ))),
        }
    }

    async fn session(&mut self, ws: &mut Ws, s: &mut Session) -> SessionEnd {
        if let Err(end) = self.start_session(ws, s).await {
            return end;
        }
        let granularity = match self.config.ping_interval {
            Some(i) => (i.min(self.config.ping_timeout) / 4).max(Duration::from_millis(5)),
            None => Duration::from_secs(3600),
        };
        let mut tick = tokio::time::interval(granularity);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let running_check = s.running_check_at;
            let result = tokio::select! {
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        s.last_rx = Some(Instant::now());
                        self.frame = Some(text.clone()); // a reference count, not a copy
                        let result = self.dispatch(ws, s, text.as_str()).await;
                        self.frame = None;
                        result
                    }
                    Some(Ok(Message::Ping(_))) => {
                        s.last_rx = Some(Instant::now());
                        // tungstenite queued the pong; flushing sends it.
                        ws.flush().await.map_err(|e| SessionEnd::Lost(e.to_string()))
                    }
                    Some(Ok(Message::Pong(_))) | Some(Ok(Message::Frame(_))) => {
                        s.last_rx = Some(Instant::now());
                        Ok(())
                    }
                    Some(Ok(Message::Binary(_))) => {
                        self.shared.protocol_error("unexpected binary frame".into());
                        Ok(())
                    }
                    Some(Ok(Message::Close(frame))) => Err(SessionEnd::Lost(match frame {
                        Some(f) => format!("HA closed the connection ({} {})", f.code, f.reason),
                        None => "HA closed the connection".into(),
                    })),
                    Some(Err(e)) => Err(SessionEnd::Lost(e.to_string())),
                    None => Err(SessionEnd::Lost("the connection ended".into())),
                },
                ctl = self.control.recv() => self.control_message(ws, s, ctl).await,
                _ = tick.tick() => self.watchdog(ws, s).await,
                _ = async {
                    match running_check {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    s.running_check_at = None;
                    self.send(ws, s, json_map(json!({"type": "get_config"})), Pending::RunningCheck).await.map(|_| ())
                }
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    /// Feature opt-in, resubscriptions, queued commands.
    async fn start_session(&mut self, ws: &mut Ws, s: &mut Session) -> Result<(), SessionEnd> {
        if self.config.coalesce_messages {
            let msg = json_map(
                json!({"type": "supported_features", "features": {"coalesce_messages": 1}}),
            );
            self.send(ws, s, msg, Pending::Ignore).await?;
        }
        if self.subs.values().any(|sub| sub.needs_running) {
            let msg = json_map(json!({"type": "get_config"}));
            self.send(ws, s, msg, Pending::RunningCheck).await?;
        }
        let keys: Vec<u64> = self
            .subs
            .iter()
            .filter(|(_, sub)| !sub.needs_running)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.send_subscribe(ws, s, key).await?;
        }
        for (msg, reply) in std::mem::take(&mut self.queued) {
            if reply.is_closed() {
                continue;
            }
            let kind = msg
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            self.send(ws, s, msg, Pending::Command { reply, kind })
                .await?;
        }
        Ok(())
    }

    async fn send(
        &mut self,
        ws: &mut Ws,
        s: &mut Session,
        mut msg: Map<String, Value>,
        pending: Pending,
    ) -> Result<u64, SessionEnd> {
        let id = s.next_id;
        s.next_id += 1;
        msg.insert("id".into(), Value::from(id));
        if matches!(pending, Pending::Command { .. }) {
            self.shared
                .commands_in_flight
                .fetch_add(1, Ordering::Relaxed);
        }
        s.pending.insert(id, pending);
        let text = Value::Object(msg).to_string();
        ws.send(Message::text(text))
            .await
            .map_err(|e| SessionEnd::Lost(e.to_string()))?;
        Ok(id)
    }

    /// Registers the subscription's id *before* sending, so no early event is lost.
    async fn send_subscribe(
        &mut self,
        ws: &mut Ws,
        s: &mut Session,
        key: u64,
    ) -> Result<(), SessionEnd> {
        let Some(sub) = self.subs.get_mut(&key) else {
            return Ok(());
        };
        let id = s.next_id;
        sub.ws_id = Some(id);
        s.id_to_sub.insert(id, key);
        let msg = sub.msg.clone();
        self.send(ws, s, msg, Pending::Subscribe { key })
            .await
            .map(|_| ())
    }

    async fn control_message(
        &mut self,
        ws: &mut Ws,
        s: &mut Session,
        ctl: Option<Control>,
    ) -> Result<(), SessionEnd> {
        match ctl {
            None | Some(Control::Close) => Err(SessionEnd::Close),
            Some(Control::Reconnect) => Err(SessionEnd::Lost("reconnect requested".into())),
            Some(Control::Command { msg, reply }) => {
                let kind = msg
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                self.send(ws, s, msg, Pending::Command { reply, kind })
                    .await
                    .map(|_| ())
            }
            Some(Control::Subscribe {
                key,
                msg,
                events,
                queued,
                reply,
                needs_running,
            }) => {
                self.subs.insert(
                    key,
                    Sub {
                        msg,
                        events,
                        queued,
                        reply: Some(reply),
                        needs_running,
                        ws_id: None,
                        dropped: 0,
                        overflowing: false,
                        last_drop_report: None,
                    },
                );
                self.send_subscribe(ws, s, key).await
            }
            Some(Control::Unsubscribe { key }) => {
                if let Some(sub) = self.subs.remove(&key)
                    && let Some(id) = sub.ws_id
                {
                    s.id_to_sub.remove(&id);
                    let msg = json_map(json!({"type": "unsubscribe_events", "subscription": id}));
                    self.send(ws, s, msg, Pending::Ignore).await?;
                }
                Ok(())
            }
        }
    }

    async fn watchdog(&mut self, ws: &mut Ws, s: &mut Session) -> Result<(), SessionEnd> {
        let Some(interval) = self.config.ping_interval else {
            return Ok(());
        };
        let now = Instant::now();
        if let Some(sent) = s.ping_sent {
            let heard_since = s.last_rx.is_some_and(|rx| rx > sent);
            if now.duration_since(sent) >= self.config.ping_timeout {
                if !heard_since {
                    self.shared
                        .watchdog_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(SessionEnd::Lost(format!(
                        "no answer to ping within {:.1} s (half-open connection?)",
                        self.config.ping_timeout.as_secs_f64()
                    )));
                }
                // Traffic flows but the pong is late: alive; ping again later.
                s.ping_sent = None;
            }
            return Ok(());
        }
        if s.last_ping
            .is_none_or(|p| now.duration_since(p) >= interval)
        {
            s.last_ping = Some(now);
            s.ping_sent = Some(now);
            self.send(ws, s, json_map(json!({"type": "ping"})), Pending::Ignore)
                .await?;
        }
        Ok(())
    }

    async fn dispatch(
        &mut self,
        ws: &mut Ws,
        s: &mut Session,
        text: &str,
    ) -> Result<(), SessionEnd> {
        // Hot path: the frame is split by its braces and events are handed over unparsed, one
        // delivery per subscription and run of its events. Everything else is parsed by serde.
        let mut pieces = std::mem::take(&mut self.pieces);
        if frame::split(text, &mut self.skeleton, &mut pieces) {
            let result = self.dispatch_pieces(ws, s, text, &pieces).await;
            self.pieces = pieces;
            return result;
        }
        self.pieces = pieces;
        if text.trim_start().starts_with('[') {
            match serde_json::from_str::<Vec<&RawValue>>(text) {
                Ok(items) => {
                    for item in items {
                        self.handle_message(ws, s, item.get()).await?;
                    }
                }
                Err(e) => self
                    .shared
                    .protocol_error(format!("invalid JSON array frame: {e}")),
            }
            Ok(())
        } else {
            self.handle_message(ws, s, text).await
        }
    }

    async fn dispatch_pieces(
        &mut self,
        ws: &mut Ws,
        s: &mut Session,
        text: &str,
        pieces: &[Piece],
    ) -> Result<(), SessionEnd> {
        // A run of events for one subscription, sent as one delivery.
        let mut run: Option<(u64, Vec<Range<usize>>)> = None;
        for piece in pieces {
            match piece {
                Piece::Event { id, event } => match run.as_mut() {
                    Some((run_id, spans)) if run_id == id => spans.push(event.clone()),
                    _ => {
                        if let Some((id, spans)) = run.take() {
                            self.deliver(s, id, spans);
                        }
                        run = Some((*id, vec![event.clone()]));
                    }
                },
                Piece::Other(range) => {
                    if let Some((id, spans)) = run.take() {
                        self.deliver(s, id, spans);
                    }
                    self.handle_message(ws, s, &text[range.clone()]).await?;
                }
            }
        }
        if let Some((id, spans)) = run {
            self.deliver(s, id, spans);
        }
        Ok(())
    }

    async fn handle_message(
        &mut self,
        ws: &mut Ws,
        s: &mut Session,
        text: &str,
    ) -> Result<(), SessionEnd> {
        match serde_json::from_str(text) {
            Ok(msg) => self.handle_incoming(ws, s, msg).await,
            Err(e) => {
                self.shared.protocol_error(format!("invalid message: {e}"));
                Ok(())
            }
        }
    }

    async fn handle_incoming(
        &mut self,
        ws: &mut Ws,
        s: &mut Session,
        msg: Incoming<'_>,
    ) -> Result<(), SessionEnd> {
        match msg.kind.as_ref() {
            "event" => {
                let (Some(id), Some(event)) = (msg.id, msg.event) else {
                    self.shared
                        .protocol_error("event without id or body".into());
                    return Ok(());
                };
                // Not split by braces (an unusual frame): shared if it lies in the frame.
                let frame = self.frame.clone().unwrap_or_default();
                match span_in(frame.as_str(), event.get()) {
                    Some(span) => self.deliver_in(s, id, &frame, vec![span]),
                    None => {
                        let own = tungstenite::Utf8Bytes::from(event.get().to_string());
                        let span = 0..own.len();
                        self.deliver_in(s, id, &own, vec![span]);
                    }
                }
                Ok(())
            }
            "result" => {
                let Some(id) = msg.id else {
                    self.shared.protocol_error("result without id".into());
                    return Ok(());
                };
                let success = msg.success.unwrap_or(false);
                match s.pending.remove(&id) {
                    Some(Pending::Command { reply, kind }) => {
                        self.shared
                            .commands_in_flight
                            .fetch_sub(1, Ordering::Relaxed);
                        let outcome = if success {
                            Ok(msg.result.map(RawValue::to_owned).unwrap_or_else(null_raw))
                        } else {
                            Err(command_error(&kind, msg.error))
                        };
                        let _ = reply.send(outcome);
                    }
                    Some(Pending::Subscribe { key }) => {
                        self.subscribe_result(s, id, key, success, msg.error)
                    }
                    Some(Pending::RunningCheck) => {
                        let running = msg
                            .result
                            .and_then(|r| serde_json::from_str::<super::HaConfig>(r.get()).ok())
                            .and_then(|c| c.state)
                            .is_none_or(|state| state == "RUNNING");
                        if running {
                            let keys: Vec<u64> = self
                                .subs
                                .iter()
                                .filter(|(_, sub)| sub.needs_running && sub.ws_id.is_none())
                                .map(|(k, _)| *k)
                                .collect();
                            for key in keys {
                                self.send_subscribe(ws, s, key).await?;
                            }
                        } else {
                            s.running_check_at =
                                Some(tokio::time::Instant::now() + self.config.running_poll);
                        }
                    }
                    Some(Pending::Ignore) | None => {}
                }
                Ok(())
            }
            "pong" => {
                s.ping_sent = None;
                if let Some(id) = msg.id {
                    s.pending.remove(&id);
                }
                Ok(())
            }
            other => {
                self.shared
                    .protocol_error(format!("unknown message type '{other}'"));
                Ok(())
            }
        }
    }

    fn subscribe_result(
        &mut self,
        s: &mut Session,
        id: u64,
        key: u64,
        success: bool,
        error: Option<ErrorBody>,
    ) {
        let Some(sub) = self.subs.get_mut(&key) else {
            return;
        };
        if success {
            if let Some(reply) = sub.reply.take() {
                let _ = reply.send(Ok(()));
            }
            return;
        }
        let kind = sub
            .msg
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let err = command_error(&kind, error);
        s.id_to_sub.remove(&id);
        if let Some(mut sub) = self.subs.remove(&key) {
            match sub.reply.take() {
                Some(reply) => {
                    let _ = reply.send(Err(err));
                }
                None => {
                    tracing::error!(%err, subscription = key, "resubscribing failed; the stream ends");
                    self.shared.emit(ConnectionEvent::ResubscribeFailed {
                        subscription: key,
                        error: err.to_string(),
                    });
                }
            }
        }
    }

    /// Hands `spans` of the current frame to subscription `id`.
    fn deliver(&mut self, s: &Session, id: u64, spans: Vec<Range<usize>>) {
        let frame = self.frame.clone().unwrap_or_default();
        self.deliver_in(s, id, &frame, spans);
    }

    fn deliver_in(
        &mut self,
        s: &Session,
        id: u64,
        frame: &tungstenite::Utf8Bytes,
        mut spans: Vec<Range<usize>>,
    ) {
        let Some(key) = s.id_to_sub.get(&id) else {
            tracing::trace!(
                id,
                "event for an unknown subscription (already unsubscribed?)"
            );
            return;
        };
        let Some(sub) = self.subs.get_mut(key) else {
            return;
        };
        let n = spans.len();
        self.shared
            .events_received
            .fetch_add(n as u64, Ordering::Relaxed);
        // Room by count and by bytes: the events that fit, in order.
        let room = self
            .config
            .event_buffer
            .saturating_sub(sub.queued.events.load(Ordering::Acquire));
        let mut bytes_room = self
            .config
            .event_buffer_bytes
            .saturating_sub(sub.queued.bytes.load(Ordering::Acquire));
        let mut taken = 0;
        let mut bytes = 0;
        for span in spans.iter().take(room) {
            if span.len() > bytes_room {
                break;
            }
            bytes_room -= span.len();
            bytes += span.len();
            taken += 1;
        }
        if taken > 0 {
            spans.truncate(taken);
            sub.queued.events.fetch_add(taken, Ordering::AcqRel);
            sub.queued.bytes.fetch_add(bytes, Ordering::AcqRel);
            let delivery = Delivery {
                frame: frame.clone(),
                spans,
                bytes,
            };
            if sub.events.send(delivery).is_err() {
                // The stream is gone; its unsubscribe is on its way.
                sub.queued.events.fetch_sub(taken, Ordering::AcqRel);
                sub.queued.bytes.fetch_sub(bytes, Ordering::AcqRel);
                return;
            }
        }
        if taken == n {
            sub.overflowing = false;
            return;
        }
        sub.dropped += (n - taken) as u64;
        self.shared
            .events_dropped
            .fetch_add((n - taken) as u64, Ordering::Relaxed);
        let first = !sub.overflowing;
        if first {
            sub.overflowing = true;
            tracing::warn!(
                subscription = key,
                "subscriber too slow: its event buffer is full; dropping events"
            );
        }
        if first
            || sub
                .last_drop_report
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            sub.last_drop_report = Some(Instant::now());
            self.shared.emit(ConnectionEvent::EventsDropped {
                subscription: *key,
                total: sub.dropped,
            });
        }
    }
}

fn json_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

async fn next_auth_message(ws: &mut Ws, url: &str) -> Result<AuthMessage, Error> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str())
                    .map_err(|e| Error::Protocol(format!("invalid auth-phase message: {e}")));
            }
            Some(Ok(Message::Close(_))) | None => {
                return Err(Error::WebSocket {
                    url: url.to_string(),
                    detail: "closed during the auth phase".into(),
                });
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ws_error(url, e)),
        }
    }
}

fn ws_error(url: &str, e: tungstenite::Error) -> Error {
    Error::WebSocket {
        url: url.to_string(),
        detail: e.to_string(),
    }
}

/// An HTTP answer to the upgrade request says more than a generic failure.
fn handshake_error(url: &str, e: tungstenite::Error) -> Error {
    if let tungstenite::Error::Http(resp) = &e {
        let status = resp.status().as_u16();
        return match status {
            401 => Error::Unauthorized {
                path: "/api/websocket".into(),
            },
            403 => Error::AccessDenied {
                description:
                    "the WebSocket upgrade was refused (HTTP 403; is this IP address banned?)"
                        .into(),
            },
            404 => Error::Config(format!(
                "{url} answered 404: is the URL right (path prefix?) and websocket_api enabled?"
            )),
            s if s >= 500 => Error::Server {
                status: s,
                path: "/api/websocket".into(),
            },
            _ => ws_error(url, e),
        };
    }
    ws_error(url, e)
}
