//! Test support: a tokio-tungstenite WebSocket client and a tiny HTTP/1.1 client.

mod faults;
mod history;
mod http;
mod statistics;
mod ws;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{Sim, SimConfig};

pub(crate) const T: Duration = Duration::from_secs(5);

pub(crate) async fn sim() -> Sim {
    Sim::start(SimConfig::default()).await.expect("start sim")
}

/// How a connection ended.
#[derive(Debug, PartialEq)]
pub(crate) enum Ended {
    /// A close frame arrived.
    CloseFrame,
    /// The TCP connection ended without a close frame.
    Dropped,
}

pub(crate) struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub next_id: i64,
    buf: VecDeque<Value>,
    /// Frames that were JSON arrays.
    pub arrays: usize,
}

impl Client {
    /// Connects and reads `auth_required`.
    pub async fn connect(sim: &Sim) -> (Client, Value) {
        let (ws, _) = tokio::time::timeout(T, tokio_tungstenite::connect_async(sim.ws_url()))
            .await
            .expect("connect timeout")
            .expect("connect");
        let mut c = Client {
            ws,
            next_id: 1,
            buf: VecDeque::new(),
            arrays: 0,
        };
        let first = c.recv().await;
        (c, first)
    }

    /// Connects and authenticates with `token`, asserting `auth_ok`.
    pub async fn auth(sim: &Sim, token: &str) -> Client {
        let (mut c, first) = Client::connect(sim).await;
        assert_eq!(first["type"], "auth_required");
        c.send(json!({"type": "auth", "access_token": token})).await;
        let ok = c.recv().await;
        assert_eq!(ok["type"], "auth_ok", "{ok}");
        c
    }

    pub async fn admin(sim: &Sim) -> Client {
        Client::auth(sim, "sim-admin-token").await
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::Text(s.into())).await.expect("send");
    }

    /// Next message (array frames are split), within 5 s.
    pub async fn recv(&mut self) -> Value {
        self.recv_within(T)
            .await
            .expect("no message within timeout")
    }

    /// Next message within `d`, `None` on timeout or end.
    pub async fn recv_within(&mut self, d: Duration) -> Option<Value> {
        if let Some(v) = self.buf.pop_front() {
            return Some(v);
        }
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
                .ok()?;
            match m {
                Message::Text(t) => {
                    let v: Value =
                        serde_json::from_str(t.as_str()).expect("server sent invalid JSON");
                    if let Value::Array(a) = v {
                        self.arrays += 1;
                        self.buf.extend(a);
                    } else {
                        self.buf.push_back(v);
                    }
                    return self.buf.pop_front();
                }
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// Next raw text frame.
    pub async fn recv_raw(&mut self) -> String {
        loop {
            match tokio::time::timeout(T, self.ws.next())
                .await
                .expect("timeout")
                .expect("ended")
                .expect("error")
            {
                Message::Text(t) => return t.to_string(),
                _ => continue,
            }
        }
    }

    /// Sends a command with the next id and returns its result (other messages are buffered).
    pub async fn cmd(&mut self, mut v: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        v["id"] = id.into();
        self.send(v).await;
        self.wait_id(id).await
    }

    /// Waits for the `result`/`pong` of `id`, keeping other messages.
    pub async fn wait_id(&mut self, id: i64) -> Value {
        let mut kept = VecDeque::new();
        let found = loop {
            let m = self.recv().await;
            if m["id"] == id && m["type"] != "event" {
                break m;
            }
            kept.push_back(m);
        };
        kept.extend(self.buf.drain(..));
        self.buf = kept;
        found
    }

    /// Next event message.
    pub async fn event(&mut self) -> Value {
        loop {
            let m = self.recv().await;
            if m["type"] == "event" {
                return m;
            }
        }
    }

    /// Reads until the connection ends; reports how.
    pub async fn ended(&mut self) -> Ended {
        loop {
            match tokio::time::timeout(T, self.ws.next())
                .await
                .expect("connection did not end")
            {
                Some(Ok(Message::Close(_))) => return Ended::CloseFrame,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Ended::Dropped,
            }
        }
    }
}

/// An HTTP answer.
pub(crate) struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub(crate) async fn http(
    sim: &Sim,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> Resp {
    let fut = async {
        let mut s = TcpStream::connect(sim.addr()).await.expect("tcp");
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            sim.addr()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        match body {
            Some((ct, b)) => req.push_str(&format!(
                "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None => req.push_str("Content-Length: 0\r\n\r\n"),
        }
        s.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read");
        let text = String::from_utf8(raw).expect("utf8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .expect("status");
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let body = if headers
            .get("transfer-encoding")
            .is_some_and(|t| t == "chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        Resp {
            status,
            headers,
            body,
        }
    };
    tokio::time::timeout(T, fut).await.expect("http timeout")
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

pub(crate) async fn get(sim: &Sim, path: &str, token: &str) -> Resp {
    let h = format!("Bearer {token}");
    http(sim, "GET", path, &[("Authorization", &h)], None).await
}

pub(crate) async fn form_post(sim: &Sim, path: &str, body: &str) -> Resp {
    http(
        sim,
        "POST",
        path,
        &[],
        Some(("application/x-www-form-urlencoded", body)),
    )
    .await
}

pub(crate) async fn json_post(sim: &Sim, path: &str, token: Option<&str>, body: &Value) -> Resp {
    let h = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = h
        .as_deref()
        .map(|h| vec![("Authorization", h)])
        .unwrap_or_default();
    http(
        sim,
        "POST",
        path,
        &headers,
        Some(("application/json", &body.to_string())),
    )
    .await
}

/// Polls `f` until it is true (10 ms steps, 5 s at most).
pub(crate) async fn eventually(mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn public_handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Sim>();
    check::<crate::GeneratorHandle>();
    check::<crate::SimStats>();
}
