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
use crate::record::RecordKind;
use crate::sink::config::TimeColumn;
use crate::sink::split::{SplitError, Splitter};
use crate::sink::{
    JournalEvent, JournalRow, JournalStatistic, Rejected, Sink, SinkError, WriteReport,
};
use crate::store::registry::MetadataMap;

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
    /// The registry metadata of the batch being written (`metadata_tags`).
    metadata: MetadataMap,
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
            InfluxSchema::Ha => Encoder::Ha(
                HaEncoder::new(&config.ha)
                    .map_err(|e| format!("sink '{name}': {e}"))?
                    .with_instance_tag(config.instance_tag.unwrap_or(false))
                    .with_metadata_tags(&config.metadata_tags),
            ),
            InfluxSchema::Clean => Encoder::Clean(
                CleanEncoder::new(&config.clean)
                    .map_err(|e| format!("sink '{name}': {e}"))?
                    .with_metadata_tags(&config.metadata_tags),
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
            metadata: MetadataMap::default(),
        })
    }

    fn request(&self, method: reqwest::Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        self.api.authorize(self.client.request(method, url))
    }

    /// A request that got no answer: the server is unavailable (the runner retries).
    fn unreachable(&self, e: &reqwest::Error) -> SinkError {
        SinkError::Unavailable(format!(
            "sink '{}': cannot reach {}: {}",
            self.name,
            self.target,
            describe(e)
        ))
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
            .map_err(|e| self.unreachable(&e))?,
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

    /// Writes `lines` of `body` in one request; on a refusal, the splitter isolates the refused
    /// lines (see [`crate::sink::split`]).
    async fn write_lines(
        &self,
        body: &str,
        lines: &[Line],
        describe: impl Fn(usize) -> (i64, String),
        report: &mut WriteReport,
    ) -> Result<(), SinkError> {
        let mut split = Splitter::new(lines.len(), lines.len());
        let mut scratch = String::new();
        let mut dropped = 0;
        while let Some(part) = split.next_part() {
            let refused = if part.len() == lines.len() {
                self.post(body.as_bytes()).await?
            } else {
                scratch.clear();
                for l in &lines[part.clone()] {
                    scratch.push_str(&body[l.start..l.end]);
                }
                self.post(scratch.as_bytes()).await?
            };
            match refused {
                None => split.written(part),
                Some(reason) => match dropped_by_retention(&reason) {
                    // Not a refusal: the rest was written, and those points are older than the
                    // database keeps (a new sink replaying an old journal). No dead letters, and
                    // no "every row refused" guard: the sink must move on.
                    Some(n) => {
                        dropped += n.min(part.len());
                        split.written(part);
                    }
                    None => split
                        .refused(part, reason)
                        .map_err(|e| self.every_point_refused(e))?,
                },
            }
        }
        let split = split.finish().map_err(|e| self.every_point_refused(e))?;
        if dropped > 0 {
            tracing::warn!(sink = %self.name, points = dropped, "InfluxDB dropped points older than the database's retention policy");
        }
        report.written += split.written - dropped;
        report.skipped += dropped;
        for (i, reason) in split.refused {
            let (id, entity_id) = describe(lines[i].row);
            report.rejected.push(Rejected {
                id,
                entity_id,
                reason,
            });
        }
        Ok(())
    }

    fn every_point_refused(&self, e: SplitError) -> SinkError {
        SinkError::Failed(format!(
            "sink '{}': {} {e}, which points at the database or the server rather than the \
             points; check the database's retention policy and its field types. The cursor is held",
            self.name, self.target
        ))
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

/// InfluxDB 1.x's answer when it wrote a body except `n` points older than the database's
/// retention policy: `partial write: points beyond retention policy dropped=<n>`.
fn dropped_by_retention(reason: &str) -> Option<usize> {
    reason
        .strip_prefix("partial write: points beyond retention policy dropped=")?
        .trim()
        .parse()
        .ok()
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
                .map_err(|e| self.unreachable(&e))?;
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
                    Encoder::Ha(e) => e.encode_with(
                        row,
                        self.metadata.get(&row.instance, &row.entity_id),
                        self.time,
                        &mut body,
                    ),
                    Encoder::Clean(e) => e.encode_with(
                        row,
                        self.metadata.get(&row.instance, &row.entity_id),
                        self.time,
                        &mut body,
                    ),
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
                let describe = |i: usize| (rows[i].id, rows[i].entity_id.clone());
                self.write_lines(&body, &lines, describe, &mut report)
                    .await?;
            }
            Ok(report)
        })
    }

    fn wants_metadata(&self) -> bool {
        match &self.encoder {
            Encoder::Ha(e) => e.has_metadata_tags(),
            Encoder::Clean(e) => e.has_metadata_tags(),
        }
    }

    fn set_metadata(&mut self, metadata: MetadataMap) {
        self.metadata = metadata;
    }

    fn kinds(&self) -> &'static [RecordKind] {
        match self.encoder {
            // HA's integration writes no events: the HA-compatible output stays exactly HA's.
            Encoder::Ha(_) => &[RecordKind::State],
            Encoder::Clean(_) => &[RecordKind::State, RecordKind::Event, RecordKind::Statistic],
        }
    }

    fn write_statistics<'a>(
        &'a mut self,
        rows: &'a [JournalStatistic],
    ) -> BoxFuture<'a, Result<WriteReport, SinkError>> {
        Box::pin(async move {
            if matches!(self.encoder, Encoder::Ha(_)) {
                return Err(SinkError::Failed(format!(
                    "sink '{}': the HA-compatible schema takes no statistics",
                    self.name
                )));
            }
            let mut report = WriteReport::default();
            let mut body = String::with_capacity(rows.len() * 128);
            let mut lines = Vec::with_capacity(rows.len());
            for (i, row) in rows.iter().enumerate() {
                let start = body.len();
                match super::clean_schema::encode_statistic(row, &mut body) {
                    Encoded::Written => lines.push(Line {
                        row: i,
                        start,
                        end: body.len(),
                    }),
                    Encoded::Skipped => report.skipped += 1,
                }
            }
            if !lines.is_empty() {
                let describe = |i: usize| (rows[i].id, rows[i].statistic_id.clone());
                self.write_lines(&body, &lines, describe, &mut report)
                    .await?;
            }
            Ok(report)
        })
    }

    fn write_events<'a>(
        &'a mut self,
        events: &'a [JournalEvent],
    ) -> BoxFuture<'a, Result<WriteReport, SinkError>> {
        Box::pin(async move {
            let Encoder::Clean(encoder) = &self.encoder else {
                return Err(SinkError::Failed(format!(
                    "sink '{}': the HA-compatible schema takes no events",
                    self.name
                )));
            };
            let mut report = WriteReport::default();
            let mut body = String::with_capacity(events.len() * 256);
            let mut lines = Vec::with_capacity(events.len());
            for (i, event) in events.iter().enumerate() {
                let start = body.len();
                encoder.encode_event(event, &mut body);
                lines.push(Line {
                    row: i,
                    start,
                    end: body.len(),
                });
            }
            if !lines.is_empty() {
                let describe = |i: usize| (events[i].id, events[i].event_type.clone());
                self.write_lines(&body, &lines, describe, &mut report)
                    .await?;
            }
            Ok(report)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::StatusCode;

    use super::*;

    /// A write endpoint on a free loopback port that refuses (400, as InfluxDB does for a field
    /// type conflict) every body holding a point of entity `bad`; returns the sink's URL.
    async fn fake_influx() -> String {
        let app = axum::Router::new().route(
            "/write",
            axum::routing::post(|body: String| async move {
                if body.contains("entity_id=old ") {
                    // InfluxDB 1.x writes the rest and says how many it dropped.
                    let n = body.matches("entity_id=old ").count();
                    let error =
                        format!("partial write: points beyond retention policy dropped={n}");
                    return (StatusCode::BAD_REQUEST, format!(r#"{{"error":"{error}"}}"#));
                }
                if body.contains("entity_id=bad ") {
                    (
                        StatusCode::BAD_REQUEST,
                        r#"{"error":"field type conflict"}"#.to_string(),
                    )
                } else {
                    (StatusCode::NO_CONTENT, String::new())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn rows(entities: &[&str]) -> Vec<JournalRow> {
        (1..)
            .zip(entities)
            .map(|(id, entity)| JournalRow {
                id,
                instance: Arc::from("home"),
                entity_id: format!("sensor.{entity}"),
                state: "1".into(),
                value: Some(1.0),
                attributes: "{}".into(),
                last_changed_us: id,
                last_updated_us: id,
                time_fired_us: Some(id),
                context_id: None,
                context_user_id: None,
            })
            .collect()
    }

    #[test]
    fn the_ha_compatible_schema_takes_no_statistics_and_the_clean_one_does() {
        let ha: InfluxConfig = toml::from_str("url = \"http://127.0.0.1:1\"").unwrap();
        let sink = InfluxSink::new("i", &ha, None).unwrap();
        assert_eq!(sink.kinds(), &[RecordKind::State]);
        let clean: InfluxConfig =
            toml::from_str("url = \"http://127.0.0.1:1\"\nschema = \"clean\"").unwrap();
        let sink = InfluxSink::new("i", &clean, None).unwrap();
        assert!(sink.kinds().contains(&RecordKind::Statistic));
    }

    #[tokio::test]
    async fn refused_points_are_isolated_but_a_batch_refused_whole_fails() {
        let config: InfluxConfig =
            toml::from_str(&format!("url = \"{}\"\ngzip = false", fake_influx().await)).unwrap();
        let mut sink = InfluxSink::new("i", &config, None).unwrap();

        let batch = rows(&["a", "b", "bad", "c", "d", "e", "bad", "f", "g", "h"]);
        let report = sink.write(&batch).await.unwrap();
        let ids: Vec<i64> = report.rejected.iter().map(|r| r.id).collect();
        assert_eq!((report.written, ids), (8, vec![3, 7]));
        assert!(report.rejected[0].reason.contains("field type conflict"));

        // A few bad points on their own are dead-lettered, as bad points.
        let report = sink.write(&rows(&["bad"; 3])).await.unwrap();
        assert_eq!((report.written, report.rejected.len()), (0, 3));

        // Points beyond the retention policy are dropped by the server, not refused: skipped,
        // never dead-lettered, and a batch of only such points does not stop the sink.
        let report = sink.write(&rows(&["a", "old", "b", "old"])).await.unwrap();
        assert_eq!(
            (report.written, report.skipped, report.rejected.len()),
            (2, 2, 0)
        );
        let report = sink.write(&rows(&["old"; 20])).await.unwrap();
        assert_eq!(
            (report.written, report.skipped, report.rejected.len()),
            (0, 20, 0)
        );

        // Every point of a larger batch refused: the server is at fault, the cursor is held.
        let e = sink.write(&rows(&["bad"; 20])).await.unwrap_err();
        assert!(
            matches!(&e, SinkError::Failed(m) if m.contains("refused every row of the batch")),
            "{e:?}"
        );
    }
}
