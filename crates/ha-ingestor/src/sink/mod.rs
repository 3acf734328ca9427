//! Remote sinks: InfluxDB and PostgreSQL, fed from the SQLite journal.
//!
//! Why a journal and not a channel: the SQLite store already holds every state change durably, with
//! a monotonic `states.id`. Each remote sink keeps its own cursor (the last acknowledged id) in the
//! `sink_cursors` table and reads forward from it. A sink that is down only falls behind; it never
//! stops ingestion or the other sinks, and nothing waits in RAM while it is down.
//!
//! A sink is a small trait ([`Sink`]): take a batch of journal rows, write them, say which rows the
//! server rejected for good. The [`runner`] owns everything else (cursor, retries, backoff, health,
//! dead letters). Each sink kind has a folder with its config beside its code ([`influx`],
//! [`postgres`]); [`config`] holds the keys every `[[sink]]` has, and [`split`] the one way both
//! kinds find the rows a server refuses in a batch it refused.

pub mod config;
pub mod influx;
pub mod postgres;
pub mod runner;
pub mod split;

use futures_util::future::BoxFuture;

pub use crate::store::journal::{JournalEvent, JournalRow};
pub use crate::store::statistics::JournalStatistic;
pub use config::{SinkConfig, SinkKind, SinkStart, TimeColumn};

use crate::record::RecordKind;

/// What a write did.
#[derive(Debug, Default)]
pub struct WriteReport {
    /// Rows the server accepted (or already had).
    pub written: usize,
    /// Rows the server refused for good (a 400 such as a field type conflict). They are dead-lettered
    /// and the cursor moves past them.
    pub rejected: Vec<Rejected>,
    /// Rows the sink skipped on purpose (HA-compatible mode skips `unknown`/`unavailable`/empty).
    pub skipped: usize,
}

/// One row a server refused.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The journal id (`states.id`).
    pub id: i64,
    /// The entity, for the log line.
    pub entity_id: String,
    /// The server's reason, e.g. `field type conflict: input field "value" ... is type string`.
    pub reason: String,
}

/// Why a write failed as a whole. The cursor is held in every case.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Network error, timeout, 5xx, server starting: retried with backoff and jitter.
    #[error("{0}")]
    Unavailable(String),
    /// 401/403: the sink is unhealthy until its credentials are fixed; retried slowly.
    #[error("{0}")]
    Unauthorized(String),
    /// Anything the sink cannot recover from by itself (bad schema, missing database).
    /// Retried slowly as well, since an operator may fix it while we run.
    #[error("{0}")]
    Failed(String),
}

/// A destination for journal rows.
///
/// Implementations must be idempotent: after a crash the runner may hand them rows they already
/// wrote (the cursor is committed after the write), and they must not duplicate them. InfluxDB is by
/// nature (same series and timestamp overwrite); PostgreSQL uses `ON CONFLICT DO NOTHING`.
pub trait Sink: Send {
    /// Prepares the destination (creates tables, checks the database exists). Called before the
    /// first write and after each failure.
    fn prepare(&mut self) -> BoxFuture<'_, Result<(), SinkError>>;

    /// Writes `rows`, which are in journal order and already passed this sink's filter.
    fn write<'a>(
        &'a mut self,
        rows: &'a [JournalRow],
    ) -> BoxFuture<'a, Result<WriteReport, SinkError>>;

    /// Whether the sink writes HA's registry metadata (`metadata_tags`). The runner then looks
    /// up each batch's entities in the registry tables and hands them over with
    /// [`Sink::set_metadata`] right before [`Sink::write`], so a rename reaches the next batch.
    fn wants_metadata(&self) -> bool {
        false
    }

    /// The registry metadata of the next batch's entities (see [`Sink::wants_metadata`]).
    fn set_metadata(&mut self, _metadata: crate::store::registry::MetadataMap) {}

    /// The kinds of records this sink takes; the runner keeps a cursor for each. States always.
    fn kinds(&self) -> &'static [RecordKind] {
        &[RecordKind::State]
    }

    /// Writes events (`subscribe = "all"`), in journal order; called only when [`Sink::kinds`]
    /// names [`RecordKind::Event`]. A [`Rejected`] names the event type where a state names its
    /// entity.
    fn write_events<'a>(
        &'a mut self,
        rows: &'a [JournalEvent],
    ) -> BoxFuture<'a, Result<WriteReport, SinkError>> {
        let refused = SinkError::Failed(format!(
            "this sink takes no events ({} of them asked for)",
            rows.len()
        ));
        Box::pin(async move { Err(refused) })
    }

    /// Writes HA's statistics, in journal order; called only when [`Sink::kinds`] names
    /// [`RecordKind::Statistic`]. A row may come again with other values (HA corrected it): the
    /// sink must overwrite its copy. A [`Rejected`] names the statistic id.
    fn write_statistics<'a>(
        &'a mut self,
        rows: &'a [JournalStatistic],
    ) -> BoxFuture<'a, Result<WriteReport, SinkError>> {
        let refused = SinkError::Failed(format!(
            "this sink takes no statistics ({} of them asked for)",
            rows.len()
        ));
        Box::pin(async move { Err(refused) })
    }
}

/// Builds the sink a `[[sink]]` block describes. Errors name the sink and the fix.
pub fn build(config: &SinkConfig) -> Result<Box<dyn Sink>, String> {
    let name = &config.name;
    match &config.kind {
        SinkKind::Influxdb(c) => {
            let (file, env, what) = influx::secret_source(c);
            let secret = crate::credentials::read_secret(file, env, what)
                .map_err(|e| format!("sink '{name}': {e}"))?;
            Ok(Box::new(influx::InfluxSink::new(name, c, secret)?))
        }
        SinkKind::Postgres(c) => {
            let password = postgres_password(name, c)?;
            Ok(Box::new(postgres::PostgresSink::new(name, c, password)?))
        }
    }
}

fn postgres_password(
    name: &str,
    c: &postgres::PostgresConfig,
) -> Result<Option<ha_client::Secret>, String> {
    crate::credentials::read_secret(
        c.password_file.as_deref(),
        c.password_env.as_deref(),
        "password",
    )
    .map_err(|e| format!("sink '{name}': {e}"))
}

/// The server of a PostgreSQL `[[sink]]`, for another session on it (the fleet's locks).
pub fn postgres_connector(config: &SinkConfig) -> Result<postgres::Connector, String> {
    match &config.kind {
        SinkKind::Postgres(c) => {
            let password = postgres_password(&config.name, c)?;
            postgres::Connector::new(&config.name, c, password)
        }
        SinkKind::Influxdb(_) => Err(format!("sink '{}' is not a PostgreSQL sink", config.name)),
    }
}
