//! The service: sources → filter → SQLite writer, plus the metrics endpoint.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::filter::{AttributeRules, EntityFilter};
use crate::health::{self, Health};
use crate::source::{SourceContext, SourceError, run_source};
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
    // Each instance's rules: the global ones, then its own.
    let mut rules = std::collections::HashMap::new();
    for inst in &config.instances {
        let (filter, attributes) = config.rules_for(inst).map_err(|e| RunError::Config(e.0))?;
        rules.insert(inst.name.clone(), (Arc::new(filter), Arc::new(attributes)));
    }
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
        if outcome.inserted > 0 {
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

    let (stop_tx, stop_rx) = watch::channel(false);
    let (sinks_stop_tx, sinks_stop_rx) = watch::channel(false);
    let mut sink_tasks = JoinSet::new();
    for (sc, sink, filter, attributes) in remote {
        let runner = crate::sink::runner::SinkRunner {
            name: sc.name.clone(),
            sink,
            journal: config.db.clone(),
            filter,
            attributes,
            batch_size: sc.batch_size,
            start: sc.start,
            commits: commits_rx.clone(),
            health: health.clone(),
        };
        sink_tasks.spawn(runner.run(sinks_stop_rx.clone()));
    }
    health.set_ready_when_any(config.ready_when == crate::config::ReadyWhen::Any);
    let context = |name: &str| SourceContext {
        filter: rules[name].0.clone(),
        attributes: rules[name].1.clone(),
        tx: tx.clone(),
        health: health.clone(),
        db: config.db.clone(),
        backfill: config.backfill.then(|| config.backfill_settings.clone()),
    };
    let mut sources = JoinSet::new();
    for inst in config.instances.clone() {
        metrics::gauge!("ha_ingestor_instance_up", "instance" => inst.name.clone()).set(1.0);
        sources.spawn(run_source(
            inst.clone(),
            context(&inst.name),
            stop_rx.clone(),
        ));
    }
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
            Some(done) = sources.join_next() => match done {
                // Only when the writer is gone (shutting down).
                Ok(Ok(())) => break,
                Ok(Err(e)) if !config.exit_on_instance_failure => {
                    // One instance's final failure stops that instance only; it is started again
                    // when its token file changes (never in a loop: HA bans addresses).
                    let name = e.instance().to_string();
                    tracing::error!(instance = %name, error = %e, "the instance stopped; the others go on");
                    health.set_failed(&name, e.to_string());
                    metrics::gauge!("ha_ingestor_instance_up", "instance" => name.clone()).set(0.0);
                    if let Some(inst) = config.instances.iter().find(|i| i.name == name) {
                        let (inst, ctx, stop) = (inst.clone(), context(&inst.name), stop_rx.clone());
                        sources.spawn(async move {
                            if !wait_for_new_credentials(&inst, stop.clone()).await {
                                return Ok(());
                            }
                            tracing::info!(instance = %inst.name, "its token file changed: starting it again");
                            metrics::gauge!("ha_ingestor_instance_up", "instance" => inst.name.clone()).set(1.0);
                            run_source(inst, ctx, stop).await
                        });
                    }
                }
                Ok(Err(e)) => {
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
                    let _ = stop_tx.send(true);
                    let _ = sinks_stop_tx.send(true);
                    return Err(e);
                }
                writer_done = true;
                break;
            }
        }
    }
    drop(tx);
    #[cfg(unix)]
    crate::systemd::notify("STOPPING=1");
    let _ = stop_tx.send(true);
    while let Some(done) = sources.join_next().await {
        if let Ok(Err(e)) = done
            && failure.is_none()
        {
            failure = Some(e.into());
        }
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

/// Waits until the instance's token file (or OAuth state file) changes: `true` then, `false` when
/// the service stops first. An instance whose token has no file (an environment variable) can only
/// be fixed by a restart, and waits for the stop.
async fn wait_for_new_credentials(
    inst: &crate::config::InstanceConfig,
    mut stop: watch::Receiver<bool>,
) -> bool {
    let files: Vec<std::path::PathBuf> = [&inst.token_file, &inst.oauth_state_file]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    if files.is_empty() {
        tracing::warn!(instance = %inst.name, "its token comes from no file: restart the ingestor once it is fixed");
    }
    let stamp = |files: &[std::path::PathBuf]| -> Vec<Option<(SystemTime, u64)>> {
        files
            .iter()
            .map(|f| {
                let m = std::fs::metadata(f).ok()?;
                Some((m.modified().ok()?, m.len()))
            })
            .collect()
    };
    let before = stamp(&files);
    loop {
        tokio::select! {
            _ = stop.changed() => return false,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {
                if !files.is_empty() && stamp(&files) != before {
                    return true;
                }
            }
        }
    }
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
