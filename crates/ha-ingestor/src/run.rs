//! The service: sources → filter → SQLite writer, plus the metrics endpoint.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::config::{Config, ConfigError};
use crate::filter::{AttributeRules, EntityFilter};
use crate::health::{self, Health};
use crate::instances::Instances;
use crate::source::SourceError;
use crate::store::{StoreError, WriterConfig, spawn_writer};

/// Why the service stopped with an error. Each kind has its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration (exit code 2).
    #[error("{0}")]
    Config(String),
    /// Authentication failed (exit code 3).
    #[error("{0}")]
    Auth(String),
    /// The store failed (exit code 4).
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Anything else (exit code 1).
    #[error("{0}")]
    Other(String),
}

impl RunError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) => 2,
            RunError::Auth(_) => 3,
            RunError::Store(_) => 4,
            RunError::Other(_) => 1,
        }
    }
}

impl From<SourceError> for RunError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Auth { .. } => RunError::Auth(e.to_string()),
            SourceError::Config { .. } => RunError::Config(e.to_string()),
        }
    }
}

/// Runs until `shutdown` completes, then flushes and returns. `ready` receives the metrics
/// endpoint's address once everything is started.
pub async fn run(
    config: Config,
    metrics: PrometheusHandle,
    shutdown: impl Future<Output = ()>,
    ready: Option<oneshot::Sender<SocketAddr>>,
) -> Result<(), RunError> {
    run_with_reloads(config, metrics, shutdown, ready, None).await
}

/// A configuration read again while running (SIGHUP), or why it could not be read.
pub type Reload = Result<Config, ConfigError>;

/// [`run`], and each configuration that arrives on `reloads` is applied: instances added,
/// removed or changed start, stop or restart, the others run on (see [`Instances::reload`]).
/// Keys read only at start (`db`, `metrics_addr`, `[store]`, sinks) are reported when they
/// changed; a configuration with an error is refused whole and the running one kept.
pub async fn run_with_reloads(
    config: Config,
    metrics: PrometheusHandle,
    shutdown: impl Future<Output = ()>,
    ready: Option<oneshot::Sender<SocketAddr>>,
    mut reloads: Option<mpsc::Receiver<Reload>>,
) -> Result<(), RunError> {
    let (tx, rx) = mpsc::channel(config.store.queue_capacity);
    let health = Arc::new(Health::default());
    // Remote sinks are built first, so a bad sink config stops us before anything runs.
    let mut remote = Vec::new();
    for sc in &config.sinks {
        let sink = crate::sink::build(sc).map_err(RunError::Config)?;
        let filter = EntityFilter::new(&sc.filter)
            .map_err(|e| RunError::Config(format!("sink '{}'.filter: {e}", sc.name)))?;
        let attributes = AttributeRules::new(&sc.attributes)
            .map_err(|e| RunError::Config(format!("sink '{}'.attributes: {e}", sc.name)))?;
        remote.push((sc.clone(), sink, filter, attributes));
    }
    let (commits_tx, commits_rx) = watch::channel(0u64);
    let on_commit: crate::store::CommitHook = Arc::new(move |_records, outcome| {
        // Statistics are counted apart from states and events; they wake the sinks too.
        if outcome.inserted > 0 || outcome.statistics > 0 {
            commits_tx.send_modify(|n| *n += 1);
        }
    });
    let mut writer = spawn_writer(
        WriterConfig::new(&config, Some(on_commit)),
        rx,
        Some(health.clone()),
    )?;
    let bound = health::serve(config.metrics_addr, metrics, health.clone())
        .await
        .map_err(|e| RunError::Config(format!("metrics_addr {}: {e}", config.metrics_addr)))?;
    tracing::info!(db = %config.db.display(), metrics = %format!("http://{bound}/metrics"), "ha-ingestor running");
    spawn_db_size_gauge(config.db.clone());

    let (sinks_stop_tx, sinks_stop_rx) = watch::channel(false);
    let mut sink_tasks = JoinSet::new();
    for (sc, sink, filter, attributes) in remote {
        let runner = crate::sink::runner::SinkRunner {
            name: sc.name.clone(),
            sink,
            journal: config.db.clone(),
            filter,
            attributes,
            instances: Some(config.sink_instances(&sc)),
            batch_size: sc.batch_size,
            start: sc.start,
            commits: commits_rx.clone(),
            health: health.clone(),
        };
        sink_tasks.spawn(runner.run(sinks_stop_rx.clone()));
    }
    health.set_ready_when_any(config.ready_when == crate::config::ReadyWhen::Any);
    let mut instances =
        Instances::start(&config, tx, health.clone()).map_err(|e| RunError::Config(e.0))?;
    // `[fleet]`: the instances run while this process owns them.
    let mut fleet = match config.fleet {
        Some(_) => {
            Some(crate::fleet::Fleet::start(&config, health.clone()).map_err(RunError::Config)?)
        }
        None => None,
    };
    let mut exit_on_instance_failure = config.exit_on_instance_failure;
    if let Some(ready) = ready {
        let _ = ready.send(bound);
    }
    // Ready means running, not connected: HA may be down for hours and the ingestor waits for it,
    // so a service manager must not hold the start (or time it out) until HA answers.
    #[cfg(unix)]
    crate::systemd::notify("READY=1");

    tokio::pin!(shutdown);
    let mut failure: Option<RunError> = None;
    // Whether the writer ended first (cleanly: every sender was gone).
    let mut writer_done = false;
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutting down: flushing");
                break;
            }
            Some(reload) = next_reload(&mut reloads) => match reload.and_then(|new| {
                instances.reload(&new).map(|summary| (new, summary))
            }) {
                Ok((new, summary)) => {
                    if let Some(fleet) = &fleet {
                        fleet.set_instances(&new);
                    }
                    if new.fleet != config.fleet {
                        tracing::warn!(key = "[fleet]", "reload: this key changed but is read only at start; restart the ingestor to apply it");
                    }
                    exit_on_instance_failure = new.exit_on_instance_failure;
                    health.set_ready_when_any(new.ready_when == crate::config::ReadyWhen::Any);
                    for key in needs_restart(&config, &new) {
                        tracing::warn!(key, "reload: this key changed but is read only at start; restart the ingestor to apply it");
                    }
                    let all_takers: Vec<&str> = config
                        .sinks
                        .iter()
                        .filter(|s| s.instances.is_none())
                        .map(|s| s.name.as_str())
                        .collect();
                    if !summary.added.is_empty() && !all_takers.is_empty() {
                        tracing::warn!(added = ?summary.added, sinks = ?all_takers, "reload: the sinks that take every instance get the new ones after a restart (until then their rows reach SQLite only)");
                    }
                    tracing::info!(added = ?summary.added, removed = ?summary.removed, restarted = ?summary.restarted, "configuration reloaded");
                }
                Err(e) => tracing::error!(error = %e, "reload refused; the running configuration stays"),
            },
            Some(command) = next_fleet_command(&mut fleet) => match command {
                crate::fleet::FleetCommand::Start { instance, since_us } => instances.start_owned(&instance, since_us),
                crate::fleet::FleetCommand::Stop { instance } => instances.stop_owned(&instance),
            },
            Some(done) = instances.join_next() => match done {
                Ok((name, generation, _)) if !instances.is_current(&name, generation) => {
                    // A task a reload replaced or removed.
                }
                // Only when the writer is gone (shutting down).
                Ok((_, _, Ok(()))) => break,
                Ok((name, _, Err(e))) if !exit_on_instance_failure => {
                    // One instance's final failure stops that instance only; it is started again
                    // when its token file changes (never in a loop: HA bans addresses).
                    tracing::error!(instance = %name, error = %e, "the instance stopped; the others go on");
                    instances.restart_when_credentials_change(&name, &e);
                }
                Ok((_, _, Err(e))) => {
                    failure = Some(e.into());
                    break;
                }
                Err(e) => {
                    failure = Some(RunError::Other(format!("a source task failed: {e}")));
                    break;
                }
            },
            w = &mut writer => {
                let e = match w {
                    // Every sender is gone, so every source has ended: their results (such as a
                    // refused token, exit 3) are collected below. Which of the two wakes first is a
                    // race.
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(RunError::Store(e)),
                    Err(e) => Some(RunError::Other(e.to_string())),
                };
                if let Some(e) = e {
                    health.set_sink_error(e.to_string());
                    // The sources' tasks end with `instances` (aborted: nothing can be stored).
                    let _ = sinks_stop_tx.send(true);
                    return Err(e);
                }
                writer_done = true;
                break;
            }
        }
    }
    #[cfg(unix)]
    crate::systemd::notify("STOPPING=1");
    // Leaving the fleet releases the instances; the others take them over from the watermarks.
    drop(fleet.take());
    if let Some(e) = instances.shut_down().await
        && failure.is_none()
    {
        failure = Some(e.into());
    }
    // Every sender is gone now: the writer commits what it holds and ends.
    let written = if writer_done {
        Ok(Ok(()))
    } else {
        writer.await
    };
    // Remote sinks stop where they are: their cursors are saved, and what they have not sent yet
    // stays in the journal for the next start.
    let _ = sinks_stop_tx.send(true);
    while sink_tasks.join_next().await.is_some() {}
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(RunError::Other(e.to_string())),
    }
    tracing::info!("all records committed");
    failure.map_or(Ok(()), Err)
}

/// The next reloaded configuration; pending forever without a reload channel.
async fn next_reload(reloads: &mut Option<mpsc::Receiver<Reload>>) -> Option<Reload> {
    match reloads {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The fleet's next command; pending forever without a fleet.
async fn next_fleet_command(
    fleet: &mut Option<crate::fleet::Fleet>,
) -> Option<crate::fleet::FleetCommand> {
    match fleet {
        Some(f) => f.commands.recv().await,
        None => std::future::pending().await,
    }
}

/// The keys read only at start that differ in a reloaded configuration.
fn needs_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if running.db != new.db {
        keys.push("db");
    }
    if running.metrics_addr != new.metrics_addr {
        keys.push("metrics_addr");
    }
    if running.log_format != new.log_format {
        keys.push("log_format");
    }
    if format!("{:?}", running.store) != format!("{:?}", new.store) {
        keys.push("[store]");
    }
    // Debug hides secrets, so a changed password alone is not seen here; sinks are read at start.
    if format!("{:?}", running.sinks) != format!("{:?}", new.sinks) {
        keys.push("[[sink]]");
    }
    keys
}

fn spawn_db_size_gauge(db: std::path::PathBuf) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            let mut wal = db.clone().into_os_string();
            wal.push("-wal");
            let bytes = size(&db) + size(std::path::Path::new(&wal));
            metrics::gauge!("ha_ingestor_journal_bytes").set(bytes as f64);
        }
    });
}
