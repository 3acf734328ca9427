//! The HTTP side of the InfluxDB sink: one gzip'd line protocol body per batch, the server's
//! answer mapped to the runner's errors, and a refused batch split until the refused points stand
//! alone (see the module docs).

use std::io::Write as _;
use std::time::Duration;

use futures_util::future::BoxFuture;
use ha_client::{Secret, TlsOptions};

use super::Encoded;
use super::api::{self, WriteApi};
use super::clean_schema::CleanEncoder;
use super::config::{InfluxConfig, InfluxSchema};
use super::ha_schema::HaEncoder;
use crate::sink::config::TimeColumn;
use crate::sink::{JournalRow, Rejected, Sink, SinkError, WriteReport};

enum Encoder {
    Ha(HaEncoder),
    Clean(CleanEncoder),
}

/// Writes journal rows to InfluxDB (or anything that speaks its write API).
pub struct InfluxSink {
    name: String,
    client: reqwest::Client,
    write_url: reqwest::Url,
    ping_url: reqwest::Url,
    api: Box<dyn WriteApi>,
    gzip: bool,
    encoder: Encoder,
    time: TimeColumn,
    /// Where this sink writes, for messages (no credentials).
    target: String,
}

/// One encoded point: which row, and where its line is in the body.
#[derive(Clone, Copy)]
struct Line {
    row: usize,
    start: usize,
    end: usize,
}

impl InfluxSink {
    /// Builds the sink; `secret` is the v1 password or the v2 token, read by the caller from the
    /// configured file or environment variable.
    pub fn new(name: &str, config: &InfluxConfig, secret: Option<Secret>) -> Result<Self, String> {
        let base = reqwest::Url::parse(config.url.trim_end_matches('/')).map_err(|e| {
            format!(
                "sink '{name}': url '{}': {e}; use e.g. http://127.0.0.1:8086",
                config.url
            )
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(format!(
                "sink '{name}': url '{}' must start with http:// or https://",
                config.url
            ));
        }
        let api = api::from_config(name, config, secret)?;
        let write_url = api.write_url(&base);
        let ping_url = api::join(&base, "/ping");
        let mut tls =
            TlsOptions::default().danger_accept_invalid_certs(config.danger_accept_invalid_certs);
        if let Some(ca) = &config.ca_file {
            tls = tls
                .add_ca_file(ca)
                .map_err(|e| format!("sink '{name}': {e}"))?;
        }
        let client = tls
            .reqwest_builder()
            .map_err(|e| format!("sink '{name}': {e}"))?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("sink '{name}': HTTP client: {e}"))?;
        let encoder = match config.schema {
            InfluxSchema::Ha => {
                Encoder::Ha(HaEncoder::new(&config.ha).map_err(|e| format!("sink '{name}': {e}"))?)
            }
            InfluxSchema::Clean => Encoder::Clean(
                CleanEncoder::new(&config.clean).map_err(|e| format!("sink '{name}': {e}"))?,
            ),
        };
        let mut target = base.clone();
        let _ = target.set_password(None);
        let _ = target.set_username("");
        Ok(InfluxSink {
            name: name.to_string(),
            client,
            write_url,
            ping_url,
            api,
            gzip: config.gzip,
            encoder,
            time: config.time_column,
            target: target.to_string(),
        })
    }

    fn request(&self, method: reqwest::Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        self.api.authorize(self.client.request(method, url))
    }

    /// Posts one body. `Ok(None)`: written; `Ok(Some(reason))`: a 400-class refusal of some
    /// line in it.
    async fn post(&self, body: &[u8]) -> Result<Option<String>, SinkError> {
        let mut req = self
            .request(reqwest::Method::POST, self.write_url.clone())
            .header("Content-Type", "text/plain; charset=utf-8");
        if self.gzip {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            gz.write_all(body)
                .and_then(|()| gz.flush())
                .map_err(|e| SinkError::Failed(format!("gzip: {e}")))?;
            let compressed = gz
                .finish()
                .map_err(|e| SinkError::Failed(format!("gzip: {e}")))?;
            req = req.header("Content-Encoding", "gzip").body(compressed);
        } else {
            req = req.body(body.to_vec());
        }
        // One immediate second try on a fresh connection: a pooled keep-alive connection the
        // server has closed fails the first request on it, which says nothing about the server.
        let retry = req.try_clone();
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(first) => match retry {
                Some(again) if !first.is_timeout() => again.send().await,
                _ => Err(first),
            }
            .map_err(|e| {
                SinkError::Unavailable(format!(
                    "sink '{}': cannot reach {}: {}",
                    self.name,
                    self.target,
                    describe(&e)
                ))
            })?,
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(None);
        }
        let text = resp.text().await.unwrap_or_default();
        let reason = server_message(&text);
        let what = format!(
            "sink '{}': {} answered {status}: {reason}",
            self.name, self.target
        );
        match status.as_u16() {
            400 | 413 | 422 => Ok(Some(reason)),
            401 | 403 => Err(SinkError::Unauthorized(format!(
                "{what}; check the username/password (v1) or the token (v2) and its write permission"
            ))),
            404 => Err(SinkError::Failed(format!(
                "{what}; does the database/bucket exist? (InfluxDB 1.x: CREATE DATABASE ...)"
            ))),
            429 | 500..=599 => Err(SinkError::Unavailable(what)),
            _ => Err(SinkError::Failed(what)),
        }
    }

    /// Writes `lines` of `body`; on a refusal, splits until the bad lines stand alone.
    /// Iterative (a stack of ranges) rather than recursive, to keep the future small.
    async fn write_lines(
        &self,
        body: &str,
        lines: &[Line],
        rows: &[JournalRow],
        report: &mut WriteReport,
    ) -> Result<(), SinkError> {
        let mut stack = vec![(0, lines.len())];
        let mut scratch = String::new();
        while let Some((lo, hi)) = stack.pop() {
            if lo == hi {
                continue;
            }
            let part = &lines[lo..hi];
            let refused = if lo == 0 && hi == lines.len() {
                self.post(body.as_bytes()).await?
            } else {
                scratch.clear();
                for l in part {
                    scratch.push_str(&body[l.start..l.end]);
                }
                self.post(scratch.as_bytes()).await?
            };
            match refused {
                None => report.written += part.len(),
                Some(reason) if part.len() == 1 => {
                    let row = &rows[part[0].row];
                    report.rejected.push(Rejected {
                        id: row.id,
                        entity_id: row.entity_id.clone(),
                        reason,
                    });
                }
                Some(_) => {
                    let mid = lo + part.len() / 2;
                    // Left half first, so points are written in journal order.
                    stack.push((mid, hi));
                    stack.push((lo, mid));
                }
            }
        }
        Ok(())
    }
}

/// A reqwest error with its causes ("error sending request: connection refused").
fn describe(e: &reqwest::Error) -> String {
    let mut out = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// InfluxDB answers errors as `{"error":"..."}`; keep just the message.
fn server_message(text: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Option<String>,
        message: Option<String>,
    }
    let msg = serde_json::from_str::<Body>(text)
        .ok()
        .and_then(|b| b.error.or(b.message))
        .unwrap_or_else(|| text.trim().to_string());
    let mut msg: String = msg.chars().take(500).collect();
    if msg.is_empty() {
        msg.push_str("(no message)");
    }
    msg
}

impl Sink for InfluxSink {
    fn prepare(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let resp = self
                .request(reqwest::Method::GET, self.ping_url.clone())
                .send()
                .await
                .map_err(|e| {
                    SinkError::Unavailable(format!(
                        "sink '{}': cannot reach {}: {}",
                        self.name,
                        self.target,
                        describe(&e)
                    ))
                })?;
            match resp.status().as_u16() {
                200..=299 => Ok(()),
                401 | 403 => Err(SinkError::Unauthorized(format!(
                    "sink '{}': {} refused the credentials on /ping",
                    self.name, self.target
                ))),
                s if s >= 500 => Err(SinkError::Unavailable(format!(
                    "sink '{}': {} /ping answered {s}",
                    self.name, self.target
                ))),
                // Some servers (InfluxDB 3 behind a proxy) have no /ping: the write will tell.
                _ => Ok(()),
            }
        })
    }

    fn write<'a>(
        &'a mut self,
        rows: &'a [JournalRow],
    ) -> BoxFuture<'a, Result<WriteReport, SinkError>> {
        Box::pin(async move {
            let mut report = WriteReport::default();
            let mut body = String::with_capacity(rows.len() * 256);
            let mut lines = Vec::with_capacity(rows.len());
            for (i, row) in rows.iter().enumerate() {
                let start = body.len();
                let encoded = match &self.encoder {
                    Encoder::Ha(e) => e.encode(row, self.time, &mut body),
                    Encoder::Clean(e) => e.encode(row, self.time, &mut body),
                };
                match encoded {
                    Encoded::Written => lines.push(Line {
                        row: i,
                        start,
                        end: body.len(),
                    }),
                    Encoded::Skipped => report.skipped += 1,
                }
            }
            if !lines.is_empty() {
                self.write_lines(&body, &lines, rows, &mut report).await?;
            }
            Ok(report)
        })
    }
}
