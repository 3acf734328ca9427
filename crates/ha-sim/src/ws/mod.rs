//! The WebSocket endpoint `/api/websocket`: one reader task (auth phase, then commands) and one
//! writer task (queue → frames, coalescing, faults) per connection.

mod auth;
mod commands;
pub mod validate;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};

use crate::Inner;
use crate::hub::{Conn, Out};

/// `GET /api/websocket`.
pub(crate) async fn upgrade(State(inner): State<Arc<Inner>>, ws: WebSocketUpgrade) -> Response {
    upgrade_as(inner, ws, Door::Core)
}

/// Which door a connection came through.
#[derive(Clone, Copy)]
pub(crate) enum Door {
    /// Core's `/api/websocket`.
    Core,
    /// The Supervisor's proxy (`/core/websocket`): it runs the auth phase itself with the
    /// add-on's token, then relays to Core as an admin.
    Supervisor,
}

pub(crate) fn upgrade_as(inner: Arc<Inner>, ws: WebSocketUpgrade, door: Door) -> Response {
    inner.stats.inc(&inner.stats.ws_connections_accepted);
    ws.max_message_size(64 << 20)
        .max_frame_size(64 << 20)
        .on_upgrade(move |socket| run(inner, socket, door))
}

/// How the reader ended.
pub(crate) enum ReaderEnd {
    /// The client went away or the socket failed.
    Gone,
    /// A close was queued: let the writer flush and send it.
    Drain,
}

async fn run(inner: Arc<Inner>, socket: WebSocket, door: Door) {
    let (tx, rx) = mpsc::unbounded_channel();
    let id = inner.hub.next_id();
    let conn = Arc::new(Conn::new(
        id,
        tx,
        inner.cfg.max_pending,
        inner.cfg.drop_every_connection_after,
        inner.stats.clone(),
    ));
    inner.hub.insert(conn.clone());
    let (sink, stream) = socket.split();
    let mut writer = tokio::spawn(writer(inner.clone(), conn.clone(), sink, rx));
    let mut reader = tokio::spawn(reader(inner.clone(), conn.clone(), stream, door));
    conn.set_aborts(vec![writer.abort_handle(), reader.abort_handle()]);
    let (mut reader_done, mut writer_done) = (false, false);
    tokio::select! {
        r = &mut reader => {
            reader_done = true;
            if let Ok(ReaderEnd::Drain) = r {
                writer_done = tokio::time::timeout(Duration::from_secs(2), &mut writer).await.is_ok();
            }
        }
        _ = &mut writer => writer_done = true,
    }
    writer.abort();
    reader.abort();
    if !writer_done {
        let _ = writer.await;
    }
    if !reader_done {
        let _ = reader.await;
    }
    inner.hub.remove(id);
    inner.drained.notify_waiters();
}

/// Waits until the silent mode is off.
async fn not_silent(silent: &mut watch::Receiver<bool>) {
    if silent.wait_for(|s| !*s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The next frame, never reading while silent.
async fn next_frame(
    stream: &mut SplitStream<WebSocket>,
    silent: &mut watch::Receiver<bool>,
) -> Option<Message> {
    loop {
        not_silent(silent).await;
        tokio::select! {
            m = stream.next() => return m.and_then(Result::ok),
            r = silent.changed() => if r.is_err() { std::future::pending::<()>().await },
        }
    }
}

async fn reader(
    inner: Arc<Inner>,
    conn: Arc<Conn>,
    mut stream: SplitStream<WebSocket>,
    door: Door,
) -> ReaderEnd {
    let mut silent = inner.faults.silent.subscribe();
    not_silent(&mut silent).await;
    conn.send_msg(format!(
        r#"{{"type":"auth_required","ha_version":{}}}"#,
        serde_json::Value::from(inner.cfg.ha_version.as_str())
    ));
    let first =
        match tokio::time::timeout(inner.cfg.auth_timeout, next_frame(&mut stream, &mut silent))
            .await
        {
            Ok(Some(Message::Text(t))) => t,
            Ok(Some(Message::Close(_)) | None) => return ReaderEnd::Gone,
            // Timeout or a non-text frame: HA disconnects.
            _ => {
                conn.send(Out::Close);
                return ReaderEnd::Drain;
            }
        };
    let authenticated = match door {
        Door::Core => auth::authenticate(&inner, &conn, first.as_str()).await,
        Door::Supervisor => auth::authenticate_supervisor(&inner, &conn, first.as_str()),
    };
    if !authenticated {
        conn.send(Out::Close);
        return ReaderEnd::Drain;
    }
    let mut session = commands::Session::default();
    loop {
        match next_frame(&mut stream, &mut silent).await {
            Some(Message::Text(t)) => {
                if commands::handle_text(&inner, &conn, &mut session, t.as_str()).is_err() {
                    conn.send(Out::Close);
                    return ReaderEnd::Drain;
                }
            }
            Some(Message::Binary(_)) => {
                // Binary frames address handlers registered by voice pipelines; there are none.
            }
            Some(Message::Pong(_)) => conn.awaiting_pong.store(false, Ordering::Release),
            Some(Message::Ping(_)) => {}
            Some(Message::Close(_)) | None => return ReaderEnd::Gone,
        }
    }
}

fn push_item(frame: &mut String, item: &Out) -> bool {
    match item {
        Out::Msg(m) => frame.push_str(m),
        Out::Event { sub, body } => {
            use std::fmt::Write;
            frame.push_str("{\"type\":\"event\",\"event\":");
            frame.push_str(body);
            let _ = write!(frame, ",\"id\":{sub}}}");
            return true;
        }
        _ => {}
    }
    false
}

struct Frames {
    group: Vec<Out>,
    frames: Vec<String>,
    messages: u64,
    events: u64,
}

impl Frames {
    fn flush_group(&mut self, coalesce: bool) {
        if self.group.is_empty() {
            return;
        }
        if coalesce && self.group.len() > 1 {
            let size: usize = self
                .group
                .iter()
                .map(|it| match it {
                    Out::Msg(m) => m.len() + 1,
                    Out::Event { body, .. } => body.len() + 48,
                    _ => 0,
                })
                .sum();
            let mut f = String::with_capacity(size + 2);
            f.push('[');
            for (i, it) in self.group.iter().enumerate() {
                if i > 0 {
                    f.push(',');
                }
                self.events += u64::from(push_item(&mut f, it));
            }
            f.push(']');
            self.frames.push(f);
        } else {
            for it in &self.group {
                let mut f = String::with_capacity(match it {
                    Out::Event { body, .. } => body.len() + 48,
                    Out::Msg(m) => m.len(),
                    _ => 0,
                });
                self.events += u64::from(push_item(&mut f, it));
                self.frames.push(f);
            }
        }
        self.messages += self.group.len() as u64;
        self.group.clear();
    }
}

async fn send_close(sink: &mut SplitSink<WebSocket, Message>) {
    let frame = CloseFrame {
        code: 1000,
        reason: Utf8Bytes::from_static(""),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        sink.send(Message::Close(Some(frame))),
    )
    .await;
}

async fn writer(
    inner: Arc<Inner>,
    conn: Arc<Conn>,
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::UnboundedReceiver<Out>,
) {
    let silent = inner.faults.silent.subscribe();
    let mut items: Vec<Out> = Vec::with_capacity(256);
    let hb = inner
        .cfg
        .heartbeat
        .unwrap_or(Duration::from_secs(86_400 * 365));
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + hb, hb);
    let mut out = Frames {
        group: Vec::new(),
        frames: Vec::new(),
        messages: 0,
        events: 0,
    };
    loop {
        tokio::select! {
            biased;
            _ = conn.close.notified() => {
                send_close(&mut sink).await;
                return;
            }
            n = rx.recv_many(&mut items, 256) => {
                if n == 0 {
                    return;
                }
                conn.pending.fetch_sub(n, Ordering::AcqRel);
                inner.drained.notify_waiters();
                if *silent.borrow() {
                    if items.iter().any(|i| matches!(i, Out::Close)) {
                        send_close(&mut sink).await;
                        return;
                    }
                    items.clear();
                    continue;
                }
                let coalesce = conn.coalesce.load(Ordering::Acquire);
                let mut end: Option<bool> = None; // Some(true) = close frame, Some(false) = drop
                let mut raws: Vec<(usize, String)> = Vec::new();
                for it in items.drain(..) {
                    if end.is_some() {
                        break;
                    }
                    match it {
                        Out::Close => {
                            end = Some(true);
                        }
                        Out::Raw(r) => {
                            out.flush_group(coalesce);
                            raws.push((out.frames.len(), r));
                        }
                        item => {
                            let budget = conn.drop_budget.load(Ordering::Acquire);
                            if budget == 0 {
                                end = Some(false);
                                break;
                            }
                            if budget != u64::MAX {
                                conn.drop_budget.store(budget - 1, Ordering::Release);
                                if budget == 1 {
                                    end = Some(false);
                                }
                            }
                            out.group.push(item);
                        }
                    }
                }
                out.flush_group(coalesce);
                let frames = std::mem::take(&mut out.frames);
                let mut raws = raws.into_iter().peekable();
                let mut failed = false;
                let total = frames.len();
                for (i, f) in frames.into_iter().enumerate() {
                    while let Some((_, r)) = raws.next_if(|(pos, _)| *pos == i) {
                        failed |= sink.feed(Message::Text(r.into())).await.is_err();
                    }
                    failed |= sink.feed(Message::Text(f.into())).await.is_err();
                }
                for (_, r) in raws {
                    failed |= sink.feed(Message::Text(r.into())).await.is_err();
                }
                failed |= sink.flush().await.is_err();
                let st = &inner.stats;
                st.add(&st.messages_sent, std::mem::take(&mut out.messages));
                st.add(&st.events_sent, std::mem::take(&mut out.events));
                st.add(&st.frames_sent, total as u64);
                if failed {
                    return;
                }
                match end {
                    Some(true) => {
                        send_close(&mut sink).await;
                        return;
                    }
                    Some(false) => {
                        st.inc(&st.fault_disconnects);
                        return;
                    }
                    None => {}
                }
            }
            _ = heartbeat.tick(), if inner.cfg.heartbeat.is_some() => {
                if *silent.borrow() {
                    continue;
                }
                if conn.awaiting_pong.swap(true, Ordering::AcqRel) {
                    // No pong since the last ping: aiohttp's heartbeat closes the connection.
                    send_close(&mut sink).await;
                    return;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    }
}
