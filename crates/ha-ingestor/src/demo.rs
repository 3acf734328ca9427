//! `demo`: the simulator in-process, a few thousand realistic events into SQLite, a summary.
//! Offline, and done in seconds.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ha_client::Secret;
use ha_sim::{Sim, SimConfig};
use metrics_exporter_prometheus::PrometheusHandle;
use rusqlite::Connection;

use crate::config::{Config, FileConfig, InstanceConfig, Overrides};
use crate::run::{RunError, run};

/// Demo settings.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The SQLite file (rows are added to what it holds).
    pub db: PathBuf,
    /// Events to generate.
    pub events: u64,
    /// Metrics endpoint.
    pub metrics_addr: SocketAddr,
}

/// Runs the demo and returns the summary text.
pub async fn demo(options: DemoOptions, metrics: PrometheusHandle) -> Result<String, RunError> {
    let started = Instant::now();
    let sim = Sim::start(SimConfig::default())
        .await
        .map_err(|e| RunError::Other(format!("cannot start the simulator: {e}")))?;
    let instance = InstanceConfig::with_token(
        "demo",
        &sim.url(),
        Secret::new(sim.config().admin_token.clone()),
    );
    let config = Config::resolve(
        FileConfig {
            instances: vec![instance],
            ..FileConfig::default()
        },
        Overrides {
            db: Some(options.db.clone()),
            metrics_addr: Some(options.metrics_addr),
            ..Overrides::default()
        },
    )
    .map_err(|e| RunError::Config(e.to_string()))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let service = tokio::spawn(run(
        config,
        metrics.clone(),
        async {
            let _ = stop_rx.await;
        },
        Some(ready_tx),
    ));
    let metrics_addr = match ready_rx.await {
        Ok(addr) => addr,
        Err(_) => return Err(service_error(service).await),
    };
    let conn = crate::store::open(&options.db, crate::store::Access::ReadOnly)
        .map_err(|e| RunError::Other(format!("demo database: {e}")))?;
    let count = |conn: &Connection| -> i64 {
        conn.query_row("SELECT count(*) FROM states", [], |r| r.get(0))
            .unwrap_or(0)
    };
    let before = count(&conn);

    // The subscription is live once a probe state reaches the database.
    let mut probe = 0u32;
    let live = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            probe += 1;
            sim.set_state(
                "sensor.demo_probe",
                &probe.to_string(),
                serde_json::json!({}),
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            if count(&conn) > before {
                return;
            }
        }
    })
    .await;
    if live.is_err() {
        let _ = stop_tx.send(());
        return Err(service_error(service).await);
    }
    let base = count(&conn);
    let generating = Instant::now();
    let generator = sim.start_generator(None, Some(options.events));
    generator.wait().await;
    let target = base + i64::try_from(generator.emitted()).unwrap_or(i64::MAX);
    let stored = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if count(&conn) >= target {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let ingest_time = generating.elapsed();
    let _ = stop_tx.send(());
    match service.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(RunError::Other(e.to_string())),
    }
    sim.shutdown().await;
    if stored.is_err() {
        // Say what was counted: every state change the simulator made is a distinct (entity,
        // last_updated), so each must be one row; rows the store merged as repeats are named.
        let merged = metrics
            .render()
            .lines()
            .filter(|l| {
                l.starts_with("ha_ingestor_events_dropped_total") && l.contains("duplicate")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        return Err(RunError::Other(format!(
            "only {} of the {} state changes the simulator made are rows in the database after \
             60 s ({merged} merged as repeats of a stored row)",
            count(&conn) - base,
            generator.emitted()
        )));
    }
    summary(
        &conn,
        &options,
        generator.emitted(),
        ingest_time,
        started.elapsed(),
        metrics_addr,
        &metrics,
    )
    .map_err(|e| RunError::Other(format!("demo summary: {e}")))
}

async fn service_error(service: tokio::task::JoinHandle<Result<(), RunError>>) -> RunError {
    match service.await {
        Ok(Err(e)) => e,
        Ok(Ok(())) => RunError::Other("the ingestor stopped early".into()),
        Err(e) => RunError::Other(e.to_string()),
    }
}

fn summary(
    conn: &Connection,
    options: &DemoOptions,
    events: u64,
    ingest_time: Duration,
    total: Duration,
    metrics_addr: SocketAddr,
    metrics: &PrometheusHandle,
) -> Result<String, rusqlite::Error> {
    let mut out = String::new();
    let rate = events as f64 / ingest_time.as_secs_f64().max(1e-9);
    let _ = writeln!(
        out,
        "Ingested {events} state changes from the simulated Home Assistant into {} in {:.2} s ({rate:.0}/s; {:.2} s in all).",
        options.db.display(),
        ingest_time.as_secs_f64(),
        total.as_secs_f64()
    );
    let _ = writeln!(out, "\nRows per domain (instance 'demo'):");
    let mut stmt = conn.prepare(
        "SELECT e.domain, count(*) FROM states s JOIN entities e ON e.id = s.entity \
         WHERE e.instance = 'demo' GROUP BY e.domain ORDER BY count(*) DESC",
    )?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (domain, n) = row?;
        let _ = writeln!(out, "  {domain:<16} {n:>8}");
    }
    let query = "SELECT entity_id, state, last_updated FROM states_view WHERE domain = 'sensor' \
                 AND value IS NOT NULL ORDER BY last_updated_us DESC LIMIT 1";
    let _ = writeln!(
        out,
        "\nSample query (the newest numeric sensor reading):\n  sqlite3 {} \"{query}\"",
        options.db.display()
    );
    let answer: Option<(String, String, String)> = conn
        .query_row(query.replace("last_updated_us", "ts").as_str(), [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .ok();
    match answer {
        Some((entity, state, at)) => {
            let _ = writeln!(out, "  -> {entity} = {state} at {at}");
        }
        None => {
            let _ = writeln!(out, "  -> no rows");
        }
    }
    let _ = writeln!(
        out,
        "\nMetrics were served at http://{metrics_addr}/metrics (health: /health) while the demo ran; \
         `ha-ingestor run` serves them for as long as it runs. From this run:"
    );
    for line in metrics.render().lines() {
        if line.starts_with("ha_ingestor_events_") && !line.starts_with('#') {
            let _ = writeln!(out, "  {line}");
        }
    }
    Ok(out)
}
