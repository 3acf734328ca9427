//! All DDL of the SQLite file, as versioned migrations. `PRAGMA user_version` holds how many have
//! run; each runs once, in its own transaction, so a file written by any earlier release upgrades
//! in place at the first start and keeps every row.
//!
//! Times are integer microseconds since the Unix epoch (exact, so the unique keys make writes
//! idempotent); `states_view` shows them as ISO text and epoch seconds for people and Grafana.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Version 1: the schema of the first releases. `IF NOT EXISTS` throughout: files written before
/// `user_version` was set have these tables already.
const V1_BASE: &str = r#"
CREATE TABLE IF NOT EXISTS entities (
    id        INTEGER PRIMARY KEY,
    instance  TEXT NOT NULL,              -- the HA instance's configured name
    entity_id TEXT NOT NULL,              -- domain.object_id
    domain    TEXT NOT NULL,
    UNIQUE (instance, entity_id)
);
CREATE TABLE IF NOT EXISTS attributes (
    id    INTEGER PRIMARY KEY,
    hash  INTEGER NOT NULL,               -- xxh3 of json; deduplicated like HA's recorder does
    json  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attributes_hash ON attributes (hash);
CREATE TABLE IF NOT EXISTS states (
    id                INTEGER PRIMARY KEY, -- also the journal sequence sinks follow
    entity            INTEGER NOT NULL REFERENCES entities (id),
    state             TEXT NOT NULL,
    value             REAL,                -- the state as a number, or 1/0 for on/off-like states
    attributes        INTEGER REFERENCES attributes (id),
    last_changed_us   INTEGER NOT NULL,
    last_updated_us   INTEGER NOT NULL,
    time_fired_us     INTEGER,             -- NULL for rows imported from history
    context_id        TEXT,
    context_user_id   TEXT,
    context_parent_id TEXT,
    UNIQUE (entity, last_updated_us)
);
CREATE TABLE IF NOT EXISTS events (
    id            INTEGER PRIMARY KEY,     -- the journal sequence of events
    instance      TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    data          TEXT NOT NULL,           -- JSON
    time_fired_us INTEGER NOT NULL,
    context_id    TEXT,
    origin        TEXT,
    UNIQUE (instance, event_type, time_fired_us, context_id)
);
CREATE TABLE IF NOT EXISTS gaps (
    id       INTEGER PRIMARY KEY,
    instance TEXT NOT NULL,
    since_us INTEGER NOT NULL              -- a gap not yet read back from HA's history began here
);
CREATE TABLE IF NOT EXISTS sink_cursors (
    sink    TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL
);
CREATE VIEW IF NOT EXISTS states_view AS
SELECT s.id, e.instance, e.entity_id, e.domain, s.state, s.value, a.json AS attributes,
       strftime('%Y-%m-%dT%H:%M:%fZ', s.last_changed_us / 1e6, 'unixepoch') AS last_changed,
       strftime('%Y-%m-%dT%H:%M:%fZ', s.last_updated_us / 1e6, 'unixepoch') AS last_updated,
       s.last_updated_us / 1e6 AS ts,
       s.context_id, s.context_user_id
FROM states s JOIN entities e ON e.id = s.entity LEFT JOIN attributes a ON a.id = s.attributes;
"#;

/// Version 2: the tables earlier releases created on first use (a sink's first refused row, the
/// first history import), now part of the schema (run after version 1's DDL again, see
/// [`MIGRATIONS`]).
const V2_LAZY_TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS dead_letters (
    id       INTEGER PRIMARY KEY,
    sink     TEXT NOT NULL,
    state_id INTEGER NOT NULL,             -- the refused row's id in its kind's table
    reason   TEXT NOT NULL,
    at_us    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS import_progress (
    instance TEXT NOT NULL,
    start_us INTEGER NOT NULL,             -- a finished slice [start_us, end_us)
    end_us   INTEGER NOT NULL,
    states   INTEGER NOT NULL,
    PRIMARY KEY (instance, start_us, end_us)
);
"#;

/// Version 3: the journal carries kinds of records (`state`, `event`; statistics and registry
/// entries to come), each in its own table with its own id sequence, so a sink keeps one cursor
/// per kind it takes, and a dead letter says which kind its id belongs to. Code, not SQL: it must
/// also run on a file it already changed (an older release, run in between, sets `user_version`
/// back to 1 at every start).
fn v3_record_kinds(tx: &Connection) -> rusqlite::Result<()> {
    if !has_column(tx, "sink_cursors", "kind")? {
        tx.execute_batch(
            "CREATE TABLE sink_cursors_by_kind (
                 sink    TEXT NOT NULL,
                 kind    TEXT NOT NULL,        -- 'state', 'event'
                 last_id INTEGER NOT NULL,     -- the last id of that kind's table the sink acknowledged
                 PRIMARY KEY (sink, kind)
             );
             INSERT INTO sink_cursors_by_kind (sink, kind, last_id)
                 SELECT sink, 'state', last_id FROM sink_cursors;
             DROP TABLE sink_cursors;
             ALTER TABLE sink_cursors_by_kind RENAME TO sink_cursors;",
        )?;
    }
    if !has_column(tx, "dead_letters", "kind")? {
        tx.execute_batch(
            "ALTER TABLE dead_letters ADD COLUMN kind TEXT NOT NULL DEFAULT 'state';",
        )?;
    }
    tx.execute_batch("CREATE INDEX IF NOT EXISTS events_time ON events (time_fired_us);")
}

/// Version 4: HA's long-term statistics (`recorder/statistics_during_period`, or HA's recorder
/// database). One row per (instance, statistic, period, start): re-reading a window adds nothing.
/// `statistics.id` is the journal sequence of the `statistic` record kind; a row HA corrected gets
/// a new one.
const V4_STATISTICS: &str = r#"
CREATE TABLE IF NOT EXISTS statistics_meta (
    id           INTEGER PRIMARY KEY,
    instance     TEXT NOT NULL,
    statistic_id TEXT NOT NULL,            -- sensor.x, or source:name for external statistics
    source       TEXT NOT NULL,            -- 'recorder' or the integration that imports it
    unit         TEXT,                     -- statistics_unit_of_measurement
    unit_class   TEXT,
    mean_type    INTEGER NOT NULL DEFAULT 0, -- 0 none, 1 arithmetic, 2 circular (HA's StatisticMeanType)
    has_sum      INTEGER NOT NULL,
    name         TEXT,
    UNIQUE (instance, statistic_id)
);
CREATE TABLE IF NOT EXISTS statistics (
    -- AUTOINCREMENT: a row HA corrected is written anew (see store/statistics.rs), and its new id
    -- must be past every sink's cursor even when the replaced row was the newest.
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    meta          INTEGER NOT NULL REFERENCES statistics_meta (id),
    period        TEXT NOT NULL,           -- '5minute' or 'hour'
    start_us      INTEGER NOT NULL,        -- start of the period, microseconds since the epoch
    mean          REAL,
    min           REAL,
    max           REAL,
    state         REAL,                    -- for sums: the meter's reading at the period's end
    sum           REAL,                    -- for sums: the running total since the first row
    last_reset_us INTEGER,
    unit          TEXT,                    -- the statistic's unit when the row was written: HA
                                           -- may change it later, and old rows keep theirs
    UNIQUE (meta, period, start_us)
);
CREATE INDEX IF NOT EXISTS statistics_start ON statistics (start_us);
CREATE TABLE IF NOT EXISTS statistics_import_progress (
    instance TEXT NOT NULL,
    start_us INTEGER NOT NULL,             -- a finished slice [start_us, end_us) of backfill --statistics
    end_us   INTEGER NOT NULL,
    states   INTEGER NOT NULL,             -- the rows it held
    PRIMARY KEY (instance, start_us, end_us)
);
CREATE VIEW IF NOT EXISTS statistics_view AS
SELECT s.id, m.instance, m.statistic_id, m.source, s.unit, m.unit_class, m.name, s.period,
       strftime('%Y-%m-%dT%H:%M:%SZ', s.start_us / 1e6, 'unixepoch') AS start,
       s.start_us / 1e6 AS ts,
       s.mean, s.min, s.max, s.state, s.sum,
       strftime('%Y-%m-%dT%H:%M:%SZ', s.last_reset_us / 1e6, 'unixepoch') AS last_reset
FROM statistics s JOIN statistics_meta m ON m.id = s.meta;
"#;

/// Version 5: the progress of `import-recorder` (HA's recorder database read directly), so an
/// interrupted import resumes: per instance, recorder file, record kind and window, the last
/// recorder row id whose row is committed here. Recorder ids only grow, so a later run with the
/// same window also picks up what HA recorded since.
const V5_RECORDER_IMPORT: &str = r#"
CREATE TABLE IF NOT EXISTS recorder_import_progress (
    instance TEXT NOT NULL,
    recorder TEXT NOT NULL,                -- the recorder file's identity (when HA created it)
    kind     TEXT NOT NULL,                -- 'state', 'event'
    since_us INTEGER NOT NULL,             -- the window asked for (--since, --until; 0 and
    until_us INTEGER NOT NULL,             -- the largest integer when not given)
    last_id  INTEGER NOT NULL,             -- recorder state_id / event_id done
    rows     INTEGER NOT NULL,             -- recorder rows read so far
    PRIMARY KEY (instance, recorder, kind, since_us, until_us)
);
"#;

/// HA's registries per instance (replaced whole on every read, see [`super::registry`]) and
/// `entity_metadata`: each entity with its name, area (its own, else its device's), floor,
/// device and label names.
const V6_REGISTRY: &str = r#"
CREATE TABLE IF NOT EXISTS registry_areas (
    instance TEXT NOT NULL,
    area_id  TEXT NOT NULL,
    name     TEXT NOT NULL,
    floor_id TEXT,
    labels   TEXT NOT NULL DEFAULT '[]',   -- JSON array of label ids
    PRIMARY KEY (instance, area_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS registry_floors (
    instance TEXT NOT NULL,
    floor_id TEXT NOT NULL,
    name     TEXT NOT NULL,
    level    INTEGER,
    PRIMARY KEY (instance, floor_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS registry_labels (
    instance TEXT NOT NULL,
    label_id TEXT NOT NULL,
    name     TEXT NOT NULL,
    PRIMARY KEY (instance, label_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS registry_devices (
    instance     TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    name         TEXT,                     -- the user's name, else the integration's
    area_id      TEXT,
    manufacturer TEXT,
    model        TEXT,
    labels       TEXT NOT NULL DEFAULT '[]',
    disabled_by  TEXT,
    PRIMARY KEY (instance, device_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS registry_entities (
    instance      TEXT NOT NULL,
    entity_id     TEXT NOT NULL,
    name          TEXT,                    -- the user's name
    original_name TEXT,                    -- the integration's name
    platform      TEXT NOT NULL,
    device_id     TEXT,
    area_id       TEXT,                    -- its own area, which overrides its device's
    labels        TEXT NOT NULL DEFAULT '[]',
    disabled_by   TEXT,
    hidden_by     TEXT,
    PRIMARY KEY (instance, entity_id)
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS entity_metadata AS
SELECT e.instance,
       e.entity_id,
       COALESCE(e.name, e.original_name) AS name,
       COALESCE(e.area_id, d.area_id) AS area_id,
       a.name AS area,
       a.floor_id,
       f.name AS floor,
       e.device_id,
       d.name AS device,
       (SELECT json_group_array(name) FROM (
            SELECT l.name FROM json_each(e.labels) j
            JOIN registry_labels l ON l.instance = e.instance AND l.label_id = j.value
            ORDER BY j.key)) AS labels,
       e.platform,
       e.disabled_by,
       e.hidden_by
FROM registry_entities e
LEFT JOIN registry_devices d ON d.instance = e.instance AND d.device_id = e.device_id
LEFT JOIN registry_areas a ON a.instance = e.instance AND a.area_id = COALESCE(e.area_id, d.area_id)
LEFT JOIN registry_floors f ON f.instance = e.instance AND f.floor_id = a.floor_id;
"#;

fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// One migration.
enum Migration {
    Sql(&'static str),
    Code(fn(&Connection) -> rusqlite::Result<()>),
}

/// Every migration, in order. Version 2 runs version 1's DDL again (all `IF NOT EXISTS`): files
/// of early releases have `user_version` 1 but lack tables added later (`gaps`, `sink_cursors`),
/// which those releases created at every start.
const MIGRATIONS: &[Migration] = &[
    Migration::Sql(V1_BASE),
    Migration::Code(|tx| tx.execute_batch(&format!("{V1_BASE}{V2_LAZY_TABLES}"))),
    Migration::Code(v3_record_kinds),
    Migration::Sql(V4_STATISTICS),
    Migration::Sql(V5_RECORDER_IMPORT),
    Migration::Sql(V6_REGISTRY),
];

/// The schema version this build writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Runs the migrations the file has not had yet. Two connections may call this at once: the
/// version is read again under the write lock.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    if version(conn)? == VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let from = version(&tx)?;
    if from > VERSION {
        return Err(StoreError::NewerSchema {
            found: from,
            known: VERSION,
        });
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        match migration {
            Migration::Sql(sql) => tx.execute_batch(sql)?,
            Migration::Code(run) => run(&tx)?,
        }
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    tx.commit()?;
    Ok(())
}

/// The file's schema version.
pub fn version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_gets_every_migration_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn).unwrap(), VERSION);
        migrate(&mut conn).unwrap(); // nothing to do
        let kinds: i64 = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('sink_cursors') WHERE name = 'kind'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(kinds, 1);
    }

    #[test]
    fn a_file_set_back_to_version_1_by_an_older_release_migrates_again() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO sink_cursors (sink, kind, last_id) VALUES ('s', 'state', 5), ('s', 'event', 7)",
            [],
        )
        .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn).unwrap(), VERSION);
        let n: i64 = conn
            .query_row("SELECT sum(last_id) FROM sink_cursors", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 12);
    }

    #[test]
    fn an_early_file_at_version_1_without_later_tables_gets_them() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE entities (id INTEGER PRIMARY KEY, instance TEXT NOT NULL, entity_id TEXT NOT NULL, domain TEXT NOT NULL, UNIQUE (instance, entity_id));
             PRAGMA user_version = 1;",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        for table in [
            "states",
            "events",
            "gaps",
            "sink_cursors",
            "dead_letters",
            "import_progress",
            "statistics_meta",
            "statistics",
            "recorder_import_progress",
        ] {
            assert!(
                has_column(&conn, table, "id").unwrap()
                    || has_column(&conn, table, "sink").unwrap()
                    || has_column(&conn, table, "instance").unwrap(),
                "{table}"
            );
        }
        assert!(has_column(&conn, "sink_cursors", "kind").unwrap());
    }

    #[test]
    fn a_file_of_a_newer_release_is_refused_untouched() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        let e = migrate(&mut conn).unwrap_err();
        assert!(e.to_string().contains("newer"), "{e}");
        assert_eq!(version(&conn).unwrap(), VERSION + 1);
    }
}
