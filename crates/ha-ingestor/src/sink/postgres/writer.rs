//! The PostgreSQL sink itself: the connection (made and migrated in [`Sink::prepare`], dropped
//! and made again after a failure), the entity dictionary of the normalized layout, and writes
//! in chunks, a refused chunk split until the refused rows stand alone.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use ha_client::Secret;
use tokio_postgres::{Client, Statement};

use super::config::{PostgresConfig, PostgresSchema};
use super::connect::Connector;
use super::errors::{Class, ErrorContext, classify, error_text};
use super::events::{EVENTS_INSERT, EventColumns, PreparedEvent};
use super::migrations;
use super::rows::{
    LTSS_INSERT, LTSS_INSERT_LOCATION, LtssColumns, NORMALIZED_INSERT, NormalizedColumns,
    PreparedRow, no_nul,
};
use super::statistics::{PreparedStatistic, STATISTICS_INSERT, StatisticColumns};
use crate::record::RecordKind;
use crate::sink::config::TimeColumn;
use crate::sink::influx::MetadataTag;
use crate::sink::split::{Split, SplitError, Splitter};
use crate::sink::{
    JournalEvent, JournalRow, JournalStatistic, Rejected, Sink, SinkError, WriteReport,
};
use crate::store::registry::MetadataMap;

/// Rows per `INSERT`. Batches are at most this big by default; bigger ones are split.
const CHUNK_ROWS: usize = 5000;

/// How long one write statement may take before the connection is given up as hung.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The normalized layout's entity dictionary: adds the entities it lacks (then [`ENTITY_LOOKUP`]
/// reads their ids).
const ENTITY_UPSERT: &str = "
INSERT INTO ha_entities (instance, entity_id, domain)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
ON CONFLICT (instance, entity_id) DO NOTHING";

/// The `ha_entities` ids of (instance, entity id) pairs.
const ENTITY_LOOKUP: &str = "
SELECT e.id, e.instance, e.entity_id
FROM ha_entities e JOIN unnest($1::text[], $2::text[]) AS u(instance, entity_id)
     ON e.instance = u.instance AND e.entity_id = u.entity_id";

/// A live connection and its prepared statements.
struct Conn {
    client: Client,
    /// The task driving the socket; aborted when the connection is dropped.
    task: tokio::task::JoinHandle<()>,
    insert: Statement,
    /// Normalized layout only.
    entity_upsert: Option<Statement>,
    entity_lookup: Option<Statement>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes journal rows to PostgreSQL or TimescaleDB. Not `Debug`: its connection settings hold
/// the password.
pub struct PostgresSink {
    /// The sink's name and server, for messages.
    ctx: ErrorContext,
    /// The server, the password and TLS.
    connector: Connector,
    schema: PostgresSchema,
    time_column: TimeColumn,
    timescaledb: bool,
    conn: Option<Conn>,
    /// `ha_entities.id` by instance and entity id; cleared on every reconnect.
    entities: HashMap<Arc<str>, HashMap<String, i32>>,
    /// LTSS layout: whether the table has PostGIS' `location` column.
    ltss_location: bool,
    /// The first successful `prepare` logs at info, later ones (reconnects) at debug.
    announced: bool,
    /// `metadata_columns`: the registry fields kept current in `ha_entities`.
    metadata_columns: Vec<MetadataTag>,
    /// The registry metadata of the batch being written (see `Sink::set_metadata`).
    metadata: MetadataMap,
}

impl PostgresSink {
    /// Builds the sink; `password` is read by the caller from `password_file` or `password_env`.
    /// Nothing connects yet: [`Sink::prepare`] does.
    pub fn new(
        name: &str,
        config: &PostgresConfig,
        password: Option<Secret>,
    ) -> Result<Self, String> {
        let connector = Connector::new(name, config, password)?;
        if config.schema == PostgresSchema::Ltss && !config.metadata_columns.is_empty() {
            return Err(format!(
                "sink '{name}': metadata_columns needs schema = \"normalized\" (LTSS's table has no \
                 entity table to hold them)"
            ));
        }
        Ok(PostgresSink {
            ctx: connector.context().clone(),
            connector,
            schema: config.schema,
            time_column: config.time_column,
            timescaledb: config.timescaledb,
            conn: None,
            entities: HashMap::new(),
            ltss_location: false,
            announced: false,
            metadata_columns: config.metadata_columns.clone(),
            metadata: MetadataMap::default(),
        })
    }

    /// Keeps the batch's entities' registry metadata current in `ha_entities` (only what
    /// changed is written). An entity missing from the registry gets NULLs.
    async fn update_metadata(&mut self, rows: &[PreparedRow<'_>]) -> Result<(), SinkError> {
        let mut ids: Vec<i32> = Vec::new();
        let mut cols: [Vec<Option<String>>; 5] = Default::default();
        let mut seen = std::collections::HashSet::new();
        for p in rows {
            if !seen.insert(p.entity) {
                continue;
            }
            ids.push(p.entity);
            let m = self.metadata.get(&p.row.instance, &p.row.entity_id);
            for (i, tag) in [
                MetadataTag::Name,
                MetadataTag::Area,
                MetadataTag::Floor,
                MetadataTag::Device,
                MetadataTag::Labels,
            ]
            .into_iter()
            .enumerate()
            {
                let value = match (m, self.metadata_columns.contains(&tag)) {
                    (Some(m), true) => match tag {
                        MetadataTag::Name => m.name.clone(),
                        MetadataTag::Area => m.area.clone(),
                        MetadataTag::Floor => m.floor.clone(),
                        MetadataTag::Device => m.device.clone(),
                        MetadataTag::Labels => serde_json::to_string(&m.labels).ok(),
                    },
                    _ => None,
                };
                cols[i].push(value);
            }
        }
        let Some(conn) = self.conn.as_ref() else {
            return Err(self.not_connected());
        };
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
            [&ids, &cols[0], &cols[1], &cols[2], &cols[3], &cols[4]];
        let fut = conn.client.execute(
            "UPDATE ha_entities e SET name = m.name, area = m.area, floor = m.floor, device = m.device,
                    labels = m.labels::jsonb
             FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                  AS m(id, name, area, floor, device, labels)
             WHERE e.id = m.id
               AND (e.name, e.area, e.floor, e.device, e.labels)
                   IS DISTINCT FROM (m.name, m.area, m.floor, m.device, m.labels::jsonb)",
            &params,
        );
        match tokio::time::timeout(STATEMENT_TIMEOUT, fut).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                let class = match classify(&e) {
                    Class::Data => Class::Failed,
                    c => c,
                };
                self.conn = None;
                Err(self
                    .ctx
                    .error_of("storing registry metadata", class, &error_text(&e)))
            }
            Err(_) => {
                self.conn = None;
                Err(self.ctx.error_of(
                    "storing registry metadata",
                    Class::Unavailable,
                    "no answer in time",
                ))
            }
        }
    }

    /// Where the sink writes, as messages show it (no password).
    pub fn target(&self) -> &str {
        &self.ctx.target
    }

    /// Connects, migrates and prepares the statements.
    async fn connect(&mut self) -> Result<(), SinkError> {
        self.conn = None;
        // Ids are cached per connection: a reconnect may follow a restore or a truncated table.
        self.entities.clear();
        let (mut client, task) = self
            .connector
            .connect()
            .await
            .map_err(|e| self.ctx.error("connecting", &e))?;

        let migrated =
            migrations::migrate(&mut client, self.schema, self.timescaledb, &self.ctx).await?;
        let table = migrated.table;
        self.ltss_location = migrated.ltss_location;

        let insert_sql = match self.schema {
            PostgresSchema::Normalized => NORMALIZED_INSERT,
            PostgresSchema::Ltss if self.ltss_location => LTSS_INSERT_LOCATION,
            PostgresSchema::Ltss => LTSS_INSERT,
        };
        let insert = client.prepare(insert_sql).await.map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_COLUMN_REFERENCE) {
                // 42P10: no unique constraint to match ON CONFLICT, i.e. an LTSS 1.x table.
                SinkError::Failed(format!(
                    "sink '{}': table {table} on PostgreSQL at {} has no primary key the sink can \
                     deduplicate on ({}); upgrade it with LTSS 2.x's migration, or remove duplicates \
                     and run ALTER TABLE ltss ADD PRIMARY KEY (time, entity_id)",
                    self.ctx.name,
                    self.ctx.target,
                    error_text(&e)
                ))
            } else {
                self.ctx.error("preparing the insert", &e)
            }
        })?;
        let (entity_upsert, entity_lookup) = if self.schema == PostgresSchema::Normalized {
            let upsert = client.prepare(ENTITY_UPSERT).await;
            let lookup = client.prepare(ENTITY_LOOKUP).await;
            (
                Some(upsert.map_err(|e| self.ctx.error("preparing statements", &e))?),
                Some(lookup.map_err(|e| self.ctx.error("preparing statements", &e))?),
            )
        } else {
            (None, None)
        };

        let level_info = !self.announced;
        self.announced = true;
        let (schema, location) = (
            match self.schema {
                PostgresSchema::Normalized => "normalized",
                PostgresSchema::Ltss => "ltss",
            },
            self.ltss_location,
        );
        if level_info {
            tracing::info!(sink = %self.ctx.name, target = %self.ctx.target, schema, timescaledb = migrated.timescale, location, "PostgreSQL sink ready");
        } else {
            tracing::debug!(sink = %self.ctx.name, target = %self.ctx.target, "PostgreSQL sink reconnected");
        }
        self.conn = Some(Conn {
            client,
            task,
            insert,
            entity_upsert,
            entity_lookup,
        });
        Ok(())
    }

    async fn write_rows(&mut self, rows: &[JournalRow]) -> Result<WriteReport, SinkError> {
        if self.conn.is_none() {
            return Err(self.not_connected());
        }
        let mut report = WriteReport::default();
        let mut prepared = Vec::with_capacity(rows.len());
        for row in rows {
            if self.schema == PostgresSchema::Ltss && row.state == "unknown" {
                // LTSS records every state but `unknown`; this layout promises LTSS's rows.
                report.skipped += 1;
                continue;
            }
            match PreparedRow::new(row, self.time_column, self.ltss_location) {
                Ok(p) => prepared.push(p),
                Err(reason) => report.rejected.push(Rejected {
                    id: row.id,
                    entity_id: row.entity_id.clone(),
                    reason,
                }),
            }
        }
        if prepared.is_empty() {
            return Ok(report);
        }
        if self.schema == PostgresSchema::Normalized {
            self.resolve_entities(&mut prepared).await?;
        }

        // Chunks in order, each split in halves on a data error until the bad rows stand alone.
        let split = match insert_in_parts(prepared.len(), |part| self.insert(&prepared[part])).await
        {
            Ok(split) => split,
            Err(Stop::EveryRowRefused(e)) => return Err(self.every_row_refused(e)),
            Err(Stop::Failed(class, detail)) => {
                // Reconnect in `prepare`: after a failure the connection may be half dead.
                self.conn = None;
                if class == Class::StaleEntity {
                    self.entities.clear();
                }
                return Err(self.ctx.error_of("writing", class, &detail));
            }
        };
        report.written += split.written;
        if self.schema == PostgresSchema::Normalized && !self.metadata_columns.is_empty() {
            self.update_metadata(&prepared).await?;
        }
        for (i, reason) in split.refused {
            let row = prepared[i].row;
            report.rejected.push(Rejected {
                id: row.id,
                entity_id: row.entity_id.clone(),
                reason,
            });
        }
        Ok(report)
    }

    async fn write_event_rows(
        &mut self,
        events: &[JournalEvent],
    ) -> Result<WriteReport, SinkError> {
        let Some(conn) = self.conn.as_ref() else {
            return Err(self.not_connected());
        };
        let mut report = WriteReport::default();
        let mut prepared = Vec::with_capacity(events.len());
        for event in events {
            match PreparedEvent::new(event) {
                Ok(p) => prepared.push(p),
                Err(reason) => report.rejected.push(Rejected {
                    id: event.id,
                    entity_id: event.event_type.clone(),
                    reason,
                }),
            }
        }
        let insert = |part: Range<usize>| {
            let columns = EventColumns::new(&prepared[part]);
            async move { timed(conn.client.execute(EVENTS_INSERT, &columns.params())).await }
        };
        let split = match insert_in_parts(prepared.len(), insert).await {
            Ok(split) => split,
            Err(Stop::EveryRowRefused(e)) => return Err(self.every_row_refused(e)),
            Err(Stop::Failed(class, detail)) => {
                self.conn = None;
                return Err(self.ctx.error_of("writing events", class, &detail));
            }
        };
        report.written += split.written;
        for (i, reason) in split.refused {
            let event = prepared[i].event;
            report.rejected.push(Rejected {
                id: event.id,
                entity_id: event.event_type.clone(),
                reason,
            });
        }
        Ok(report)
    }

    async fn write_statistic_rows(
        &mut self,
        rows: &[JournalStatistic],
    ) -> Result<WriteReport, SinkError> {
        let Some(conn) = self.conn.as_ref() else {
            return Err(self.not_connected());
        };
        let mut report = WriteReport::default();
        let mut prepared = Vec::with_capacity(rows.len());
        for row in rows {
            match PreparedStatistic::new(row) {
                Ok(p) => prepared.push(p),
                Err(reason) => report.rejected.push(Rejected {
                    id: row.id,
                    entity_id: row.statistic_id.clone(),
                    reason,
                }),
            }
        }
        let insert = |part: Range<usize>| {
            let columns = StatisticColumns::new(&prepared[part]);
            async move { timed(conn.client.execute(STATISTICS_INSERT, &columns.params())).await }
        };
        let split = match insert_in_parts(prepared.len(), insert).await {
            Ok(split) => split,
            Err(Stop::EveryRowRefused(e)) => return Err(self.every_row_refused(e)),
            Err(Stop::Failed(class, detail)) => {
                self.conn = None;
                return Err(self.ctx.error_of("writing statistics", class, &detail));
            }
        };
        report.written += split.written;
        for (i, reason) in split.refused {
            let row = prepared[i].row;
            report.rejected.push(Rejected {
                id: row.id,
                entity_id: row.statistic_id.clone(),
                reason,
            });
        }
        Ok(report)
    }

    /// A write while the connection is down (the next `prepare` reconnects).
    fn not_connected(&self) -> SinkError {
        SinkError::Unavailable(format!(
            "sink '{}': not connected to PostgreSQL at {}; reconnecting",
            self.ctx.name, self.ctx.target
        ))
    }

    fn every_row_refused(&mut self, e: SplitError) -> SinkError {
        self.conn = None;
        SinkError::Failed(format!(
            "sink '{}': PostgreSQL at {} {e}, which points at the table's definition rather \
             than the data; check the table's columns against the sink's schema. The cursor is \
             held",
            self.ctx.name, self.ctx.target,
        ))
    }

    /// One `INSERT` of `rows`; the error's class and the server's words.
    async fn insert(&self, rows: &[PreparedRow<'_>]) -> Result<(), (Class, String)> {
        let conn = self.conn.as_ref().expect("connected");
        let fut = async {
            match self.schema {
                PostgresSchema::Normalized => {
                    let c = NormalizedColumns::new(rows);
                    conn.client.execute(&conn.insert, &c.params()).await
                }
                PostgresSchema::Ltss => {
                    let c = LtssColumns::new(rows);
                    let params = c.params();
                    let n = if self.ltss_location { 6 } else { 4 };
                    conn.client.execute(&conn.insert, &params[..n]).await
                }
            }
        };
        timed(fut).await
    }

    /// Fills `entity` in every row, creating the `ha_entities` rows the cache lacks.
    async fn resolve_entities<'a>(
        &mut self,
        rows: &mut [PreparedRow<'a>],
    ) -> Result<(), SinkError> {
        let mut missing: Vec<&'a JournalRow> = rows
            .iter()
            .map(|p| p.row)
            .filter(|r| self.cached_entity(&r.instance, &r.entity_id).is_none())
            .collect();
        if !missing.is_empty() {
            // Sorted, so two ingestors inserting the same new entities lock them in one order.
            missing.sort_unstable_by(|a, b| {
                (&*a.instance, &a.entity_id).cmp(&(&*b.instance, &b.entity_id))
            });
            missing.dedup_by(|a, b| a.instance == b.instance && a.entity_id == b.entity_id);
            let instances: Vec<Cow<str>> = missing.iter().map(|r| no_nul(&r.instance)).collect();
            let ids: Vec<Cow<str>> = missing.iter().map(|r| no_nul(&r.entity_id)).collect();
            let domains: Vec<Cow<str>> = missing.iter().map(|r| no_nul(r.domain())).collect();
            let conn = self.conn.as_ref().expect("connected");
            let (upsert, lookup) = (
                conn.entity_upsert.as_ref().expect("normalized"),
                conn.entity_lookup.as_ref().expect("normalized"),
            );
            let fut = async {
                conn.client
                    .execute(upsert, &[&instances, &ids, &domains])
                    .await?;
                conn.client.query(lookup, &[&instances, &ids]).await
            };
            let found = match tokio::time::timeout(STATEMENT_TIMEOUT, fut).await {
                Ok(Ok(found)) => found,
                Ok(Err(e)) => {
                    let class = match classify(&e) {
                        // No single row is to blame for a failed dictionary insert.
                        Class::Data => Class::Failed,
                        c => c,
                    };
                    self.conn = None;
                    return Err(self
                        .ctx
                        .error_of("storing entities", class, &error_text(&e)));
                }
                Err(_) => {
                    self.conn = None;
                    return Err(self.ctx.error_of(
                        "storing entities",
                        Class::Unavailable,
                        &format!("no answer within {}s", STATEMENT_TIMEOUT.as_secs()),
                    ));
                }
            };
            // The server knows the names without NULs; map them back to the journal's names.
            let mut by_name: HashMap<(String, String), i32> = HashMap::with_capacity(found.len());
            for r in &found {
                by_name.insert((r.get(1), r.get(2)), r.get(0));
            }
            for (i, r) in missing.iter().enumerate() {
                let key = (instances[i].to_string(), ids[i].to_string());
                if let Some(&id) = by_name.get(&key) {
                    self.entities
                        .entry(r.instance.clone())
                        .or_default()
                        .insert(r.entity_id.clone(), id);
                }
            }
        }
        for p in rows.iter_mut() {
            p.entity = self
                .cached_entity(&p.row.instance, &p.row.entity_id)
                .ok_or_else(|| {
                    SinkError::Failed(format!(
                        "sink '{}': PostgreSQL at {} stored entity {} but did not return its id",
                        self.ctx.name, self.ctx.target, p.row.entity_id
                    ))
                })?;
        }
        Ok(())
    }

    fn cached_entity(&self, instance: &str, entity_id: &str) -> Option<i32> {
        self.entities.get(instance)?.get(entity_id).copied()
    }
}

/// A statement with [`STATEMENT_TIMEOUT`]; an error's class and the server's words.
async fn timed(
    statement: impl Future<Output = Result<u64, tokio_postgres::Error>>,
) -> Result<(), (Class, String)> {
    match tokio::time::timeout(STATEMENT_TIMEOUT, statement).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err((classify(&e), error_text(&e))),
        Err(_) => Err((
            Class::Unavailable,
            format!("no answer within {}s", STATEMENT_TIMEOUT.as_secs()),
        )),
    }
}

/// Why [`insert_in_parts`] stopped.
enum Stop {
    /// The guard of [`crate::sink::split`]: the table, not the data, is at fault.
    EveryRowRefused(SplitError),
    /// Not a data error: the connection or the server.
    Failed(Class, String),
}

/// Inserts `n` prepared rows in chunks, in order, a refused chunk split in halves until the bad
/// rows stand alone; `insert` writes the rows of one part.
async fn insert_in_parts<F, Fut>(n: usize, mut insert: F) -> Result<Split, Stop>
where
    F: FnMut(Range<usize>) -> Fut,
    Fut: Future<Output = Result<(), (Class, String)>>,
{
    let mut split = Splitter::new(n, CHUNK_ROWS);
    while let Some(part) = split.next_part() {
        match insert(part.clone()).await {
            Ok(()) => split.written(part),
            Err((Class::Data, detail)) => {
                split.refused(part, detail).map_err(Stop::EveryRowRefused)?
            }
            Err((class, detail)) => return Err(Stop::Failed(class, detail)),
        }
    }
    split.finish().map_err(Stop::EveryRowRefused)
}

impl Sink for PostgresSink {
    fn prepare(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let result = self.connect().await;
            if result.is_err() {
                self.conn = None;
            }
            result
        })
    }

    fn write<'a>(
        &'a mut self,
        rows: &'a [JournalRow],
    ) -> BoxFuture<'a, Result<WriteReport, SinkError>> {
        Box::pin(self.write_rows(rows))
    }

    fn kinds(&self) -> &'static [RecordKind] {
        &[RecordKind::State, RecordKind::Event, RecordKind::Statistic]
    }

    fn wants_metadata(&self) -> bool {
        !self.metadata_columns.is_empty()
    }

    fn set_metadata(&mut self, metadata: MetadataMap) {
        self.metadata = metadata;
    }

    fn write_statistics<'a>(
        &'a mut self,
        rows: &'a [JournalStatistic],
    ) -> BoxFuture<'a, Result<WriteReport, SinkError>> {
        Box::pin(self.write_statistic_rows(rows))
    }

    fn write_events<'a>(
        &'a mut self,
        events: &'a [JournalEvent],
    ) -> BoxFuture<'a, Result<WriteReport, SinkError>> {
        Box::pin(self.write_event_rows(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::postgres::rows::tests::row;

    fn config(dsn: &str) -> PostgresConfig {
        PostgresConfig {
            dsn: dsn.into(),
            ca_file: None,
            password_file: None,
            password_env: None,
            schema: PostgresSchema::Normalized,
            time_column: TimeColumn::TimeFired,
            timescaledb: true,
            metadata_columns: Vec::new(),
        }
    }

    #[test]
    fn metadata_columns_need_the_normalized_layout() {
        let mut c = config("host=127.0.0.1 user=ha");
        c.schema = PostgresSchema::Ltss;
        c.metadata_columns = vec![MetadataTag::Area];
        let err = PostgresSink::new("pg", &c, None).err().unwrap();
        assert!(err.contains("metadata_columns needs schema"), "{err}");
        c.schema = PostgresSchema::Normalized;
        assert!(PostgresSink::new("pg", &c, None).unwrap().wants_metadata());
    }

    #[test]
    fn the_password_never_shows() {
        let sink = PostgresSink::new(
            "pg",
            &config("host=127.0.0.1 user=ha"),
            Some(Secret::new("hunter2")),
        )
        .unwrap();
        assert_eq!(sink.target(), "127.0.0.1:5432/ha (user ha)");
        assert_eq!(sink.connector.password(), Some(&b"hunter2"[..]));
        for class in [Class::Unavailable, Class::Unauthorized, Class::Failed] {
            assert!(
                !sink
                    .ctx
                    .error_of("x", class, "y")
                    .to_string()
                    .contains("hunter2")
            );
        }
        // A password in both places is refused, without echoing either.
        let err = PostgresSink::new(
            "pg",
            &config("host=127.0.0.1 user=ha password=s3cret"),
            Some(Secret::new("hunter2")),
        )
        .err()
        .unwrap();
        assert!(!err.contains("s3cret") && !err.contains("hunter2"), "{err}");
        let err = PostgresSink::new("pg", &config("host=127.0.0.1 port=x password=s3cret"), None)
            .err()
            .unwrap();
        assert!(
            err.contains("sink 'pg'") && !err.contains("s3cret"),
            "{err}"
        );
    }
    #[test]
    fn sockets_go_without_tls_and_a_bare_hostaddr_cannot_be_verified() {
        let sink =
            PostgresSink::new("pg", &config("host=/run/postgresql sslmode=require"), None).unwrap();
        assert!(!sink.connector.uses_tls(), "a unix socket has no TLS");
        let sink = PostgresSink::new("pg", &config("hostaddr=10.0.0.5 user=ha"), None).unwrap();
        assert!(
            !sink.connector.uses_tls(),
            "prefer without a name goes without"
        );
        let err = PostgresSink::new(
            "pg",
            &config("hostaddr=10.0.0.5 user=ha sslmode=verify-full"),
            None,
        )
        .err()
        .unwrap();
        assert!(err.contains("host="), "{err}");
        let sink = PostgresSink::new(
            "pg",
            &config("host=db hostaddr=10.0.0.5 sslmode=require"),
            None,
        )
        .unwrap();
        assert!(sink.connector.uses_tls());
    }

    #[test]
    fn tls_settings_errors_name_the_sink_and_hide_the_password() {
        let err = PostgresSink::new(
            "pg",
            &config("host=127.0.0.1 user=ha password=s3cret sslmode=verify-ca"),
            None,
        )
        .err()
        .unwrap();
        assert!(
            err.contains("sink 'pg'") && err.contains("ca_file"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
        let err = PostgresSink::new("pg", &config("host=h password='s3cret"), None)
            .err()
            .unwrap();
        assert!(
            err.contains("unterminated") && !err.contains("s3cret"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn write_before_prepare_is_unavailable() {
        let mut sink = PostgresSink::new("pg", &config("host=127.0.0.1 port=1"), None).unwrap();
        let e = sink.write(&[row(1)]).await.unwrap_err();
        assert!(matches!(e, SinkError::Unavailable(_)), "{e:?}");
    }
}
