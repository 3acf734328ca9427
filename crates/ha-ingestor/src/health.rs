//! `/metrics` and `/health` on one small HTTP server (127.0.0.1 by default), and [`probe`], the
//! client side of `/health` that `ha-ingestor health` runs (a container's healthcheck).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

/// What `/health` reports.
#[derive(Default)]
pub struct Health {
    /// Ready when any instance is connected (several instances), instead of all.
    ready_when_any: std::sync::atomic::AtomicBool,
    instances: Mutex<BTreeMap<String, InstanceHealth>>,
    sink: Mutex<SinkHealth>,
    remote: Mutex<BTreeMap<String, RemoteSinkHealth>>,
    commit: Mutex<CommitHealth>,
    /// `[fleet]` only: the lock session and the instances this process owns.
    fleet: Mutex<Option<FleetHealth>>,
}

/// What a process of a fleet reports: whether it holds its PostgreSQL session, how many
/// processes share the fleet, which instances it serves.
#[derive(Clone, Serialize, Default, Debug, PartialEq, Eq)]
pub struct FleetHealth {
    /// The fleet's name.
    pub name: String,
    /// Holding the session whose advisory locks own the instances.
    pub connected: bool,
    /// Processes in the fleet (this one included), as PostgreSQL last counted them.
    pub members: u32,
    /// The instances this process owns (serves), sorted.
    pub owned: Vec<String>,
    /// Why the session is down, when it is.
    pub error: Option<String>,
}

#[derive(Clone, Serialize, Default)]
struct CommitHealth {
    /// The largest `time_fired` → commit lag of the last batch, in seconds.
    last_batch_lag_seconds: Option<f64>,
    /// When the last batch was committed.
    last_commit: Option<String>,
    rows_committed: u64,
}

#[derive(Clone, Serialize, Default)]
struct InstanceHealth {
    /// Which start of the instance this entry belongs to (see [`Health::register`]); 0 for
    /// entries of callers that do not register.
    #[serde(skip)]
    generation: u64,
    connected: bool,
    ha_version: Option<String>,
    /// Stopped for good (a refused token, say) and why; the others go on.
    #[serde(skip_serializing_if = "Option::is_none")]
    failed: Option<InstanceFailure>,
}

#[derive(Clone, Serialize)]
struct InstanceFailure {
    error: String,
    since: String,
}

#[derive(Clone, Serialize)]
struct RemoteSinkHealth {
    name: String,
    ok: bool,
    error: Option<String>,
    /// Journal rows not yet acknowledged by this sink.
    behind_rows: Option<u64>,
}

#[derive(Clone, Serialize)]
struct SinkHealth {
    name: &'static str,
    ok: bool,
    error: Option<String>,
}

impl Default for SinkHealth {
    fn default() -> Self {
        SinkHealth {
            name: "sqlite",
            ok: true,
            error: None,
        }
    }
}

impl Health {
    /// Ready when any instance is connected, instead of all of them (`ready_when = "any"`).
    pub fn set_ready_when_any(&self, any: bool) {
        self.ready_when_any
            .store(any, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records that an instance stopped for good, and why (until it is started again).
    pub fn set_failed(&self, instance: &str, error: String) {
        let mut map = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(instance.to_string()).or_default();
        entry.connected = false;
        entry.failed = Some(InstanceFailure {
            error,
            since: humantime_now(),
        });
    }

    /// Whether the SQLite store's last commit succeeded.
    pub fn store_ok(&self) -> bool {
        self.sink.lock().unwrap_or_else(|p| p.into_inner()).ok
    }

    /// Records the fleet's state (see [`FleetHealth`]).
    pub fn set_fleet(&self, fleet: FleetHealth) {
        *self.fleet.lock().unwrap_or_else(|p| p.into_inner()) = Some(fleet);
    }

    /// Drops an instance that no longer exists (removed by a reload).
    pub fn forget(&self, instance: &str) {
        let mut map = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(instance);
        metrics::gauge!("ha_ingestor_connected", "instance" => instance.to_string()).set(0.0);
    }

    /// An instance (re)started as `generation`: listed, not connected yet. Reports of an earlier
    /// start of the same name (a task a reload replaced, still closing) are ignored from now on.
    pub fn register(&self, instance: &str, generation: u64) {
        let mut map = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(
            instance.to_string(),
            InstanceHealth {
                generation,
                ..InstanceHealth::default()
            },
        );
        metrics::gauge!("ha_ingestor_connected", "instance" => instance.to_string()).set(0.0);
    }

    /// Records an instance's connection state (and `ha_ingestor_connected`).
    pub fn set_connected(&self, instance: &str, connected: bool, ha_version: Option<String>) {
        self.set_connected_as(instance, 0, connected, ha_version);
    }

    /// [`Health::set_connected`] from the start `generation` of the instance: ignored when that
    /// start was replaced or removed (0: from a caller that does not register).
    pub fn set_connected_as(
        &self,
        instance: &str,
        generation: u64,
        connected: bool,
        ha_version: Option<String>,
    ) {
        let mut map = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        let entry = match map.get_mut(instance) {
            Some(e) if generation == 0 || e.generation == generation => e,
            Some(_) => return,
            None if generation == 0 => map.entry(instance.to_string()).or_default(),
            None => return,
        };
        entry.connected = connected;
        if connected {
            entry.failed = None;
        }
        if ha_version.is_some() {
            entry.ha_version = ha_version;
        }
        metrics::gauge!("ha_ingestor_connected", "instance" => instance.to_string())
            .set(if connected { 1.0 } else { 0.0 });
    }

    /// Records the sink failing.
    pub fn set_sink_error(&self, error: String) {
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        sink.ok = false;
        sink.error = Some(error);
    }

    /// Records the sink working again after [`Health::set_sink_error`].
    pub fn set_sink_ok(&self) {
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        sink.ok = true;
        sink.error = None;
    }

    /// Records a remote sink's state. `behind_rows` keeps its last value when `None`.
    pub fn set_remote_sink(
        &self,
        name: &str,
        ok: bool,
        error: Option<String>,
        behind_rows: Option<u64>,
    ) {
        let mut map = self.remote.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry(name.to_string())
            .or_insert_with(|| RemoteSinkHealth {
                name: name.to_string(),
                ok,
                error: None,
                behind_rows: None,
            });
        entry.ok = ok;
        entry.error = error;
        if behind_rows.is_some() {
            entry.behind_rows = behind_rows;
        }
    }

    /// Records a committed batch.
    pub fn committed(&self, rows: u64, max_lag_seconds: Option<f64>) {
        let mut c = self.commit.lock().unwrap_or_else(|p| p.into_inner());
        c.rows_committed += rows;
        if max_lag_seconds.is_some() {
            c.last_batch_lag_seconds = max_lag_seconds;
        }
        c.last_commit = Some(humantime_now());
    }

    /// What `/health` answers, as JSON.
    pub fn snapshot(&self) -> serde_json::Value {
        self.report().1
    }

    fn report(&self) -> (bool, serde_json::Value) {
        let instances = self
            .instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let sink = self.sink.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let commit = self
            .commit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let remote: Vec<RemoteSinkHealth> = self
            .remote
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let journal_depth = remote
            .iter()
            .filter_map(|r| r.behind_rows)
            .max()
            .unwrap_or(0);
        // A remote sink being down does not make the service unready: ingestion goes on and the
        // journal holds the rows. It shows as "degraded".
        let remote_ok = remote.iter().all(|r| r.ok);
        let any = self
            .ready_when_any
            .load(std::sync::atomic::Ordering::Relaxed);
        let connected = match any {
            true => instances.values().any(|i| i.connected),
            false => instances.values().all(|i| i.connected),
        };
        let fleet = self.fleet.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // In a fleet a process that owns no instance is a standby, ready to take some over; it
        // is ready while it holds its session.
        let ready = match &fleet {
            Some(f) => sink.ok && f.connected && (instances.is_empty() || connected),
            None => sink.ok && !instances.is_empty() && connected,
        };
        let mut body = serde_json::json!({
            "status": if ready && remote_ok && instances.values().all(|i| i.connected) { "ok" } else { "degraded" },
            "live": true,
            "ready": ready,
            "instances": instances,
            "sinks": [sink],
            "remote_sinks": remote,
            "commits": commit,
            // Journal rows not yet acknowledged by the slowest remote sink (0 without remote
            // sinks; see ha_ingestor_queue_depth for rows waiting for the SQLite commit).
            "journal_depth": journal_depth,
            "time": humantime_now(),
        });
        if let Some(f) = fleet {
            body["fleet"] = serde_json::json!(f);
        }
        (ready, body)
    }
}

fn humantime_now() -> String {
    jiff::Timestamp::try_from(SystemTime::now())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Installs the Prometheus recorder (once per process).
pub fn install_metrics() -> Result<PrometheusHandle, String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ],
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())
}

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    health: Arc<Health>,
}

/// Binds the endpoint and serves it in the background; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    health: Arc<Health>,
) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health", get(health_handler))
        .with_state(AppState { metrics, health });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(%e, "the metrics endpoint stopped");
        }
    });
    Ok(bound)
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn health_handler(State(state): State<AppState>) -> impl IntoResponse {
    let (ready, body) = state.health.report();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

/// Where a client reaches a server listening on `addr`: an unspecified address (`0.0.0.0`, `::`,
/// as in a container) is reached on the loopback address of its family.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// Asks the `/health` of the ingestor listening on `addr`: `Ok(body)` when it answers 200 (ready),
/// `Err` naming the status and body, or why nothing answered, within `timeout`.
pub async fn probe(addr: SocketAddr, timeout: std::time::Duration) -> Result<String, String> {
    let url = format!("http://{}/health", reachable(addr));
    let http = ha_client::TlsOptions::default()
        .reqwest_builder()
        .map_err(|e| e.to_string())
        .and_then(|b| b.timeout(timeout).build().map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let response = http.get(&url).send().await.map_err(|e| {
        // reqwest's own message is only "error sending request"; the cause (refused, a timeout)
        // is in its sources.
        let mut cause = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            cause.push_str(&format!(": {s}"));
            source = s.source();
        }
        format!("{url}: no answer ({cause}); is `ha-ingestor run` running with this metrics_addr?")
    })?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| format!("{url}: {status}, the body broke off: {e}"))?;
    if status == StatusCode::OK {
        Ok(body)
    } else {
        Err(format!("{url}: {status} (not ready): {body}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_address_is_reached_on_loopback() {
        let at = |s: &str| reachable(s.parse().unwrap()).to_string();
        assert_eq!(at("0.0.0.0:9464"), "127.0.0.1:9464");
        assert_eq!(at("[::]:9464"), "[::1]:9464");
        assert_eq!(at("192.0.2.7:9464"), "192.0.2.7:9464");
        assert_eq!(at("127.0.0.1:1"), "127.0.0.1:1");
    }
}
