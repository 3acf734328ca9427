//! The tables: versioned migrations, applied at start-up, each once.
//!
//! Each migration runs in its own transaction, under an advisory lock (two ingestors sharing a
//! database do not both run the DDL), and is recorded in `ha_ingestor_migrations`; normalized
//! migrations are numbered from 1001, LTSS ones from 2001, so both layouts can share a database.
//! With TimescaleDB available (and `timescaledb = true`) a new table becomes a hypertable;
//! otherwise, or when the sink's user may not create the extension, it stays a plain table. A
//! table that already exists (LTSS's own, say) is adopted as it is.

use tokio_postgres::Client;

use super::config::PostgresSchema;
use super::errors::{ErrorContext, error_text};
use super::events::EVENTS_DDL;
use super::statistics::STATISTICS_DDL;
use crate::sink::SinkError;

/// What start-up found and did.
pub(super) struct Migrated {
    /// The layout's table (`ha_states` or `ltss`), for messages.
    pub(super) table: &'static str,
    /// TimescaleDB is available and wanted.
    pub(super) timescale: bool,
    /// LTSS layout: the table has PostGIS' `location` column.
    pub(super) ltss_location: bool,
}

/// Applies the layout's migrations that the database lacks, then checks that its table is there.
pub(super) async fn migrate(
    client: &mut Client,
    schema: PostgresSchema,
    timescaledb: bool,
    ctx: &ErrorContext,
) -> Result<Migrated, SinkError> {
    let available = available_extensions(client, ctx).await?;
    let use_timescale = timescaledb && available.iter().any(|e| e == "timescaledb");
    let use_postgis = available.iter().any(|e| e == "postgis");
    let migrations = match schema {
        PostgresSchema::Normalized => NORMALIZED_MIGRATIONS,
        PostgresSchema::Ltss => LTSS_MIGRATIONS,
    };
    for m in migrations {
        apply(client, m, use_timescale, use_postgis, ctx).await?;
    }

    let table = migrations[0].table;
    let exists: bool = client
        .query_one("SELECT to_regclass($1::text) IS NOT NULL", &[&table])
        .await
        .map_err(|e| ctx.error("checking the tables", &e))?
        .get(0);
    if !exists {
        return Err(SinkError::Failed(format!(
            "sink '{}': table {table} is missing on PostgreSQL at {}, but \
             ha_ingestor_migrations says it was created; delete version {} from \
             ha_ingestor_migrations to have it created again",
            ctx.name, ctx.target, migrations[0].version
        )));
    }
    let ltss_location = schema == PostgresSchema::Ltss
        && client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('ltss') \
                 AND attname = 'location' AND NOT attisdropped)",
                &[],
            )
            .await
            .map_err(|e| ctx.error("checking the tables", &e))?
            .get::<_, bool>(0);
    Ok(Migrated {
        table,
        timescale: use_timescale,
        ltss_location,
    })
}

/// Key of the advisory lock that serialises migrations between ingestors sharing a database.
const MIGRATION_LOCK: i64 = 0x6861_5f69_6e67_6573; // "ha_inges"

/// One schema change, applied once.
struct Migration {
    /// Normalized migrations are numbered from 1001, LTSS ones from 2001, so both layouts can
    /// share a database and its `ha_ingestor_migrations` table.
    version: i32,
    /// For the log.
    what: &'static str,
    /// The table the migration creates: it becomes a hypertable when TimescaleDB is in use, but
    /// only if it did not exist before (converting a filled table needs a data migration).
    table: &'static str,
    /// The hypertable's chunk interval.
    chunk_interval: &'static str,
    /// Add LTSS's PostGIS `location` column when PostGIS is available and the table is new (what
    /// LTSS itself does).
    ltss_location: bool,
    /// The DDL.
    sql: &'static str,
}

const NORMALIZED_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1001,
        what: "create ha_entities, ha_states and ha_states_view",
        table: "ha_states",
        chunk_interval: "7 days",
        ltss_location: false,
        sql: NORMALIZED_DDL,
    },
    Migration {
        version: 1002,
        what: "create ha_events",
        table: "ha_events",
        chunk_interval: "7 days",
        ltss_location: false,
        sql: EVENTS_DDL,
    },
    Migration {
        version: 1003,
        what: "create ha_statistics",
        table: "ha_statistics",
        chunk_interval: "30 days",
        ltss_location: false,
        sql: STATISTICS_DDL,
    },
    Migration {
        version: 1004,
        what: "add HA's registry metadata to ha_entities and ha_states_view",
        table: "ha_entities",
        chunk_interval: "7 days",
        ltss_location: false,
        sql: METADATA_DDL,
    },
];

/// The registry metadata `metadata_columns` keeps current, per entity (HA's current values: a
/// renamed area shows on every row of its entities). Columns are added at the end of the view, as
/// `CREATE OR REPLACE VIEW` requires.
pub const METADATA_DDL: &str = "
ALTER TABLE ha_entities
    ADD COLUMN IF NOT EXISTS name   text,
    ADD COLUMN IF NOT EXISTS area   text,
    ADD COLUMN IF NOT EXISTS floor  text,
    ADD COLUMN IF NOT EXISTS device text,
    ADD COLUMN IF NOT EXISTS labels jsonb;
CREATE OR REPLACE VIEW ha_states_view AS
    SELECT s.time, e.instance, e.entity_id, e.domain, s.state, s.value, s.attributes,
           s.last_changed, s.last_updated, s.time_fired, s.context_id, s.context_user_id,
           e.name, e.area, e.floor, e.device, e.labels
    FROM ha_states s JOIN ha_entities e ON e.id = s.entity;
";

const LTSS_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 2001,
        what: "create the LTSS table ltss",
        table: "ltss",
        // LTSS's own default chunk_time_interval (2 592 000 000 000 us).
        chunk_interval: "30 days",
        ltss_location: true,
        sql: LTSS_DDL,
    },
    Migration {
        version: 2002,
        what: "create ha_events",
        table: "ha_events",
        chunk_interval: "7 days",
        ltss_location: false,
        sql: EVENTS_DDL,
    },
    Migration {
        version: 2003,
        what: "create ha_statistics",
        table: "ha_statistics",
        chunk_interval: "30 days",
        ltss_location: false,
        sql: STATISTICS_DDL,
    },
];

/// The normalized layout.
///
/// The key is `(entity, time, last_updated)`: `(entity, last_updated)` alone identifies a state
/// change, but TimescaleDB requires the partitioning column in every unique index, and `time` is a
/// function of the row, so the key is just as strict. It also serves `(entity, time)` range scans.
pub const NORMALIZED_DDL: &str = "
CREATE TABLE IF NOT EXISTS ha_entities (
    id        serial PRIMARY KEY,
    instance  text NOT NULL,
    entity_id text NOT NULL,
    domain    text NOT NULL,
    UNIQUE (instance, entity_id)
);
CREATE TABLE IF NOT EXISTS ha_states (
    time            timestamptz NOT NULL,
    entity          int NOT NULL REFERENCES ha_entities (id),
    state           text NOT NULL,
    value           double precision,
    attributes      jsonb NOT NULL,
    last_changed    timestamptz NOT NULL,
    last_updated    timestamptz NOT NULL,
    time_fired      timestamptz,
    context_id      text,
    context_user_id text,
    PRIMARY KEY (entity, time, last_updated)
);
CREATE OR REPLACE VIEW ha_states_view AS
    SELECT s.time, e.instance, e.entity_id, e.domain, s.state, s.value, s.attributes,
           s.last_changed, s.last_updated, s.time_fired, s.context_id, s.context_user_id
    FROM ha_states s JOIN ha_entities e ON e.id = s.entity;
";

/// LTSS's table and indexes, under LTSS's names (v2.x: no `id` column, key `(time, entity_id)`).
/// `IF NOT EXISTS` throughout, so a table LTSS already created is adopted as it is.
pub const LTSS_DDL: &str = "
CREATE TABLE IF NOT EXISTS ltss (
    time       timestamptz NOT NULL,
    entity_id  varchar(255) NOT NULL,
    state      varchar(255),
    attributes jsonb,
    PRIMARY KEY (time, entity_id)
);
CREATE INDEX IF NOT EXISTS ix_ltss_state ON ltss (state);
CREATE INDEX IF NOT EXISTS ltss_attributes_idx ON ltss USING gin (attributes);
CREATE INDEX IF NOT EXISTS ltss_entityid_time_composite_idx ON ltss (entity_id, time DESC);
";

/// The extensions this sink may use that the server offers.
async fn available_extensions(
    client: &Client,
    ctx: &ErrorContext,
) -> Result<Vec<String>, SinkError> {
    let rows = client
        .query(
            "SELECT name::text FROM pg_available_extensions WHERE name IN ('timescaledb', 'postgis')",
            &[],
        )
        .await
        .map_err(|e| ctx.error("listing extensions", &e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Applies one migration unless `ha_ingestor_migrations` already has it.
async fn apply(
    client: &mut Client,
    m: &Migration,
    use_timescale: bool,
    use_postgis: bool,
    ctx: &ErrorContext,
) -> Result<(), SinkError> {
    let what = format!("applying migration {} ({})", m.version, m.what);
    let err = |e: tokio_postgres::Error| ctx.error(&what, &e);
    let tx = client.transaction().await.map_err(err)?;
    // Two ingestors starting together must not both run the DDL: serialise on a lock that is
    // released at commit, then look again.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS ha_ingestor_migrations (
             version    int PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(err)?;
    let applied = tx
        .query_opt(
            "SELECT 1 FROM ha_ingestor_migrations WHERE version = $1",
            &[&m.version],
        )
        .await
        .map_err(err)?
        .is_some();
    if applied {
        return tx.commit().await.map_err(err);
    }
    let existed: bool = tx
        .query_one("SELECT to_regclass($1::text) IS NOT NULL", &[&m.table])
        .await
        .map_err(err)?
        .get(0);
    // Extensions need privileges the sink's user may lack; without them, plain tables (with a
    // warning) beat not starting. A savepoint keeps the migration's transaction usable.
    let timescale = use_timescale
        && !existed
        && try_extension(
            &tx,
            ctx,
            "timescaledb",
            "plain tables instead of hypertables",
        )
        .await?;
    tx.batch_execute(m.sql).await.map_err(err)?;
    if m.ltss_location
        && use_postgis
        && !existed
        && try_extension(&tx, ctx, "postgis", "no location column").await?
    {
        tx.batch_execute("ALTER TABLE ltss ADD COLUMN location geometry(POINT, 4326)")
            .await
            .map_err(err)?;
    }
    if timescale {
        // Table names are constants; the interval is one of ours, so formatting is safe.
        tx.batch_execute(&format!(
            "SELECT create_hypertable('{}', 'time', if_not_exists => TRUE, \
             chunk_time_interval => INTERVAL '{}')",
            m.table, m.chunk_interval
        ))
        .await
        .map_err(err)?;
    }
    tx.execute(
        "INSERT INTO ha_ingestor_migrations (version, applied_at) VALUES ($1, now())",
        &[&m.version],
    )
    .await
    .map_err(err)?;
    tx.commit().await.map_err(err)?;
    tracing::info!(sink = %ctx.name, target = %ctx.target, version = m.version, what = m.what, hypertable = timescale, "applied a PostgreSQL migration");
    Ok(())
}

/// `CREATE EXTENSION IF NOT EXISTS` inside a savepoint; false (and a warning) when the server
/// refuses it for a reason other than the connection.
async fn try_extension(
    tx: &tokio_postgres::Transaction<'_>,
    ctx: &ErrorContext,
    extension: &str,
    fallback: &str,
) -> Result<bool, SinkError> {
    let sql = format!("SAVEPOINT ext; CREATE EXTENSION IF NOT EXISTS {extension} CASCADE");
    match tx.batch_execute(&sql).await {
        Ok(()) => {
            tx.batch_execute("RELEASE SAVEPOINT ext")
                .await
                .map_err(|e| ctx.error("creating an extension", &e))?;
            Ok(true)
        }
        Err(e) if e.as_db_error().is_some() => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT ext")
                .await
                .map_err(|e| ctx.error("creating an extension", &e))?;
            tracing::warn!(sink = %ctx.name, target = %ctx.target, extension, error = %error_text(&e),
                "the extension is available but cannot be created (a superuser can run CREATE EXTENSION once); {fallback}");
            Ok(false)
        }
        Err(e) => Err(ctx.error("creating an extension", &e)),
    }
}
