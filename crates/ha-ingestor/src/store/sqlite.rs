//! The write side of the store: idempotent batched writes, and eviction under a size bound.

// foldhash: the caches are looked up several times per row; SipHash was 7 % of an import's time.
use foldhash::HashMap;
use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};

use crate::record::{EventRow, Record, StateRow};

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The writer task failed.
    #[error("the SQLite writer task failed: {0}")]
    Task(String),
    /// The file was written by a newer release, whose schema this one does not know.
    #[error(
        "the database has schema version {found}, newer than this ha-ingestor knows ({known}): \
         it was written by a newer release; run that release, or point --db at another file"
    )]
    NewerSchema {
        /// The file's `user_version`.
        found: i64,
        /// This build's.
        known: i64,
    },
    /// The file could not be opened.
    #[error("cannot open the database {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// Another connection holds the database's write lock (past the busy timeout): worth waiting
    /// for, not a reason to stop.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        )
    }

    /// The filesystem is full (SQLITE_FULL; SQLite rolls the transaction back): worth waiting
    /// for space, not a reason to stop.
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::DiskFull
        )
    }
}

/// What a batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// New rows.
    pub inserted: u64,
    /// Rows already present (same entity and `last_updated`): idempotent re-deliveries.
    pub duplicates: u64,
    /// `(instance, inserted, duplicates)` per instance in the batch.
    pub per_instance: Vec<(Arc<str>, u64, u64)>,
    /// For each record of the batch, in order: whether it was inserted.
    pub inserted_flags: Vec<bool>,
    /// Rows skipped because they repeat the entity's last stored row (same state, attributes and
    /// `last_changed`; only `last_updated` differs): HA re-announcing a state, which carries no new
    /// information. See [`SqliteStore::set_skip_unchanged`].
    pub unchanged: u64,
    /// Statistic rows written (new, or corrected by HA); they are not in the counts above.
    pub statistics: u64,
    /// Where each instance is in `per_instance` (a batch of a thousand instances' rows would
    /// otherwise compare names row by row: bench row i).
    per_instance_index: HashMap<Arc<str>, usize>,
}

impl WriteOutcome {
    /// Counts record `index` of the batch (`inserted_flags` is sized to the batch up front:
    /// state rows are inserted in groups, after the records that follow them are counted).
    fn count(&mut self, instance: &Arc<str>, index: usize, inserted: bool) {
        self.inserted_flags[index] = inserted;
        let i = match self.per_instance_index.get(instance) {
            Some(&i) => i,
            None => {
                self.per_instance.push((instance.clone(), 0, 0));
                self.per_instance_index
                    .insert(instance.clone(), self.per_instance.len() - 1);
                self.per_instance.len() - 1
            }
        };
        if inserted {
            self.inserted += 1;
            self.per_instance[i].1 += 1;
        } else {
            self.duplicates += 1;
            self.per_instance[i].2 += 1;
        }
    }
}

/// The SQLite store. One writer; readers may use the file concurrently (WAL).
pub struct SqliteStore {
    conn: Connection,
    /// Per instance, per entity id: the `entities` row.
    entity_ids: HashMap<Arc<str>, HashMap<String, i64>>,
    attribute_ids: HashMap<u64, i64>,
    /// The newest stored row per entity, for skipping unchanged re-announcements.
    last: HashMap<i64, LastRow>,
    skip_unchanged: bool,
    /// See [`SqliteStore::set_group_inserts`].
    group_inserts: bool,
    statistic_meta_ids: super::statistics::MetaIds,
    /// See [`SqliteStore::set_sinks`].
    sinks: Option<Vec<SinkScope>>,
}

/// A configured sink and the instances whose rows it receives (see [`SqliteStore::set_sinks`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkScope {
    /// The sink's name, as its cursors are keyed.
    pub name: String,
    /// The instances that feed it.
    pub instances: Vec<String>,
}

/// What is compared to decide that a row repeats the last one.
#[derive(Clone, Copy, PartialEq, Eq)]
struct LastRow {
    last_updated_us: i64,
    last_changed_us: i64,
    state_hash: u64,
    attributes: i64,
}

const ATTRIBUTE_CACHE: usize = 100_000;

impl SqliteStore {
    /// Opens (or creates) the database, in WAL mode with the schema in place.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self::with(super::open(path, super::Access::Write)?))
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Ok(Self::with(super::open::in_memory()?))
    }

    fn with(conn: Connection) -> Self {
        // Room for every statement of a write transaction (rusqlite keeps 16), so that the
        // group insert, whose preparation costs as much as hundreds of rows, stays prepared.
        conn.set_prepared_statement_cache_capacity(32);
        SqliteStore {
            conn,
            entity_ids: HashMap::default(),
            attribute_ids: HashMap::default(),
            last: HashMap::default(),
            skip_unchanged: true,
            group_inserts: false,
            statistic_meta_ids: Default::default(),
            sinks: None,
        }
    }

    /// The sinks of the configuration. Statistics evicted before a sink received them are counted
    /// only for these sinks and only when their instance feeds the sink: the cursor of a sink
    /// since removed from the configuration, or a row the sink would skip, is no loss. Without
    /// this (tests), every cursor counts every row.
    pub fn set_sinks(&mut self, sinks: Vec<SinkScope>) {
        self.sinks = Some(sinks);
    }

    /// Whether to skip rows that repeat the entity's last stored row in state, attributes and
    /// `last_changed` (default on). Such a row differs only in `last_updated`: HA re-announced a
    /// state it already had (an integration reload, a restore). Keeping it adds a point with no
    /// new information; skipping it keeps sinks free of the restart duplicates users complain of.
    pub fn set_skip_unchanged(&mut self, skip: bool) {
        self.skip_unchanged = skip;
    }

    /// For a bulk import (`import-recorder`): a page cache of `mib` MiB for this connection
    /// (SQLite's default is 2 MiB), so the indexes' pages a large batch touches stay in memory
    /// instead of being read back from the file and the WAL for every row.
    pub fn set_cache_mib(&self, mib: u32) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "cache_size", -(i64::from(mib) * 1024))?;
        Ok(())
    }

    /// For a bulk import (`import-recorder`): insert state rows in groups of
    /// [`STATES_PER_INSERT`], one statement each, while the groups find their rows stored already
    /// (default off: the live writer inserts row by row). A statement of many rows keeps a statement journal (the foreign key on `entity` may
    /// abort it halfway), a copy of each page it changes; it is kept in memory here
    /// (`temp_store`), where a file would cost a write per page.
    pub fn set_group_inserts(&mut self, on: bool) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "temp_store", if on { "MEMORY" } else { "DEFAULT" })?;
        self.group_inserts = on;
        Ok(())
    }

    /// Writes a batch in one transaction. Rows that are already there are skipped.
    pub fn write_batch(&mut self, records: &[Record]) -> Result<WriteOutcome, StoreError> {
        let result = self.try_write_batch(records);
        if result.is_err() {
            // The transaction rolled back: ids cached during it may not exist.
            self.entity_ids.clear();
            self.attribute_ids.clear();
            self.last.clear();
            self.statistic_meta_ids.clear();
        }
        result
    }

    /// Writes statistic rows in one transaction (see [`super::statistics`]): for bulk imports
    /// that bypass the writer task. Sinks pick them up from the journal.
    pub fn write_statistics(
        &mut self,
        rows: &[crate::record::StatisticRow],
    ) -> Result<super::statistics::StatisticsWritten, StoreError> {
        let result = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let written = super::statistics::write_rows(&tx, &mut self.statistic_meta_ids, rows)?;
            tx.commit()?;
            Ok(written)
        })();
        if result.is_err() {
            self.statistic_meta_ids.clear();
        }
        result
    }

    fn try_write_batch(&mut self, records: &[Record]) -> Result<WriteOutcome, StoreError> {
        // Immediate: take the write lock first, waiting up to the busy timeout. A deferred
        // transaction reads first and then fails at once, without waiting, when another
        // connection (a sink's cursor, a gap record, an import) wrote in between.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outcome = WriteOutcome {
            inserted_flags: vec![false; records.len()],
            ..Default::default()
        };
        {
            let mut insert_event = tx.prepare_cached(
                "INSERT OR IGNORE INTO events (instance, event_type, data, time_fired_us, context_id, origin) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            // Groups pay for themselves on rows stored already (an import of a window the store
            // holds); on new rows their statement journal (a copy of every page they change)
            // costs more than they save. So a batch starts grouped and goes row by row once a
            // group inserted anything.
            let mut group = if self.group_inserts {
                STATES_PER_INSERT
            } else {
                1
            };
            let mut pending = Vec::with_capacity(group);
            for (index, record) in records.iter().enumerate() {
                let n = match record {
                    Record::State(row) => {
                        let entity = entity_id(&tx, &mut self.entity_ids, row)?;
                        // Before the attribute set is looked up or inserted: a duplicate must not
                        // leave an unused attribute row behind.
                        if row.time_fired_us.is_none() {
                            // The lookup must see the rows of this batch before it.
                            insert_states(&tx, records, &mut pending, &mut outcome)?;
                            if stored_within_a_microsecond(&tx, entity, row)? {
                                outcome.count(record.instance(), index, false);
                                continue;
                            }
                        }
                        let attributes =
                            attribute_id(&tx, &mut self.attribute_ids, &row.attributes)?;
                        let this = LastRow {
                            last_updated_us: row.last_updated_us,
                            last_changed_us: row.last_changed_us,
                            state_hash: xxhash_rust::xxh3::xxh3_64(row.state.as_bytes()),
                            attributes,
                        };
                        let last = last_row(&tx, &mut self.last, entity)?;
                        if self.skip_unchanged
                            && last.is_some_and(|l| {
                                l.last_updated_us < this.last_updated_us
                                    && l.last_changed_us == this.last_changed_us
                                    && l.state_hash == this.state_hash
                                    && l.attributes == this.attributes
                            })
                        {
                            outcome.unchanged += 1;
                            continue;
                        }
                        if last.is_none_or(|l| l.last_updated_us < this.last_updated_us) {
                            self.last.insert(entity, this);
                        }
                        pending.push(PendingState {
                            index,
                            entity,
                            attributes,
                            row,
                        });
                        if pending.len() == group
                            && insert_states(&tx, records, &mut pending, &mut outcome)? > 0
                        {
                            group = 1;
                        }
                        continue;
                    }
                    Record::Event(EventRow {
                        instance,
                        event_type,
                        data,
                        time_fired_us,
                        context_id,
                        origin,
                    }) => insert_event.execute(params![
                        &**instance,
                        event_type,
                        data,
                        time_fired_us,
                        context_id,
                        origin
                    ])?,
                    // A correction is a new journal row too (see `store::statistics`). Counted
                    // apart: the mirror re-reads its newest rows on purpose, which are no
                    // duplicate deliveries.
                    Record::Statistic(row) => {
                        let written =
                            super::statistics::write_row(&tx, &mut self.statistic_meta_ids, row)?
                                != super::statistics::RowWritten::Unchanged;
                        outcome.statistics += u64::from(written);
                        outcome.inserted_flags[index] = written;
                        continue;
                    }
                };
                outcome.count(record.instance(), index, n == 1);
            }
            insert_states(&tx, records, &mut pending, &mut outcome)?;
        }
        tx.commit()?;
        Ok(outcome)
    }

    /// The newest `last_updated` stored for an instance, in microseconds.
    pub fn last_updated_us(&self, instance: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT max(s.last_updated_us) FROM states s JOIN entities e ON e.id = s.entity WHERE e.instance = ?1",
                [instance],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?
            .flatten())
    }

    /// Bytes in use by data (pages that are not free); the file itself does not shrink.
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        let pragma = |name: &str| -> Result<i64, StoreError> {
            Ok(self
                .conn
                .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))?)
        };
        let used = (pragma("page_count")? - pragma("freelist_count")?) * pragma("page_size")?;
        Ok(u64::try_from(used).unwrap_or(0))
    }

    /// Deletes up to `rows` of the oldest records of every kind (states by `last_updated`, events
    /// by `time_fired`, statistics by the start of their period: a file filled by one kind must
    /// not lose the others first), and attribute sets no row uses any more. Returns how many
    /// records went.
    ///
    /// Statistic ids have holes anyway (a corrected row moves to a new id), so a sink cannot tell
    /// evicted statistics from the gaps between its cursor and the next row: they are counted here,
    /// per sink, when deleted before the sink's cursor passed them
    /// (`ha_ingestor_sink_rows_evicted_unsent_total{kind="statistic"}`).
    pub fn evict_oldest(&mut self, rows: u64) -> Result<u64, StoreError> {
        let (n, unsent) = self.evict(rows)?;
        for (sink, count) in unsent {
            metrics::counter!("ha_ingestor_sink_rows_evicted_unsent_total", "sink" => sink.clone(), "kind" => "statistic")
                .increment(count);
            tracing::error!(%sink, kind = "statistic", rows = count, "records were evicted from the journal (max_db_bytes) before this sink received them; raise max_db_bytes or fix the sink");
        }
        Ok(n)
    }

    /// [`SqliteStore::evict_oldest`]: how many records went, and per sink the statistics it had
    /// not received.
    fn evict(&mut self, rows: u64) -> Result<(u64, Vec<(String, u64)>), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let limit = i64::try_from(rows).unwrap_or(i64::MAX);
        // The oldest rows of each table (states and events by id: their ids follow time closely;
        // statistics by start, since a backfill writes them in any order), then the oldest of those.
        let mut oldest = tx.prepare(
            "SELECT kind, id, instance FROM (
                 SELECT 0 AS kind, id, t, NULL AS instance FROM (SELECT id, last_updated_us AS t FROM states ORDER BY id LIMIT ?1)
                 UNION ALL
                 SELECT 1, id, t, NULL FROM (SELECT id, time_fired_us AS t FROM events ORDER BY id LIMIT ?1)
                 UNION ALL
                 SELECT 2, s.id, s.t, m.instance FROM
                     (SELECT id, meta, start_us AS t FROM statistics ORDER BY start_us LIMIT ?1) s
                     JOIN statistics_meta m ON m.id = s.meta
             ) ORDER BY t LIMIT ?1",
        )?;
        let (mut states_up_to, mut events_up_to) = (None::<i64>, None::<i64>);
        let mut statistics = Vec::new();
        let rows = oldest.query_map([limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?;
        for row in rows {
            match row? {
                (0, id, _) => states_up_to = Some(states_up_to.map_or(id, |m| m.max(id))),
                (1, id, _) => events_up_to = Some(events_up_to.map_or(id, |m| m.max(id))),
                (_, id, instance) => statistics.push((id, instance.unwrap_or_default())),
            }
        }
        drop(oldest);
        // States and events keep their newest row: their ids are `max(id) + 1`, and an emptied
        // table would hand out ids a sink's cursor has passed already, so their rows would never
        // be sent. (Statistics ids are AUTOINCREMENT, never reused.)
        let newest = |table: &str| -> rusqlite::Result<i64> {
            tx.query_row(
                &format!("SELECT coalesce(max(id), 0) FROM {table}"),
                [],
                |r| r.get(0),
            )
        };
        let (newest_state, newest_event) = (newest("states")?, newest("events")?);
        let states_up_to = states_up_to.map(|id| id.min(newest_state - 1));
        let events_up_to = events_up_to.map(|id| id.min(newest_event - 1));
        let mut n = 0;
        if let Some(id) = states_up_to {
            n += tx.execute("DELETE FROM states WHERE id <= ?1", [id])?;
            tx.execute(
                "DELETE FROM attributes WHERE id NOT IN (SELECT DISTINCT attributes FROM states WHERE attributes IS NOT NULL)",
                [],
            )?;
        }
        if let Some(id) = events_up_to {
            n += tx.execute("DELETE FROM events WHERE id <= ?1", [id])?;
        }
        let unsent = statistics_unsent(&tx, &statistics, self.sinks.as_deref())?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM statistics WHERE id = ?1")?;
            for (id, _) in &statistics {
                n += delete.execute([id])?;
            }
        }
        tx.commit()?;
        self.attribute_ids.clear();
        self.last.clear();
        Ok((n as u64, unsent))
    }

    /// The connection, for queries.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// How many of the statistic rows `rows` (id, instance) each sink taking statistics has not
/// passed yet: of `sinks` only (when known), and only rows of the instances that feed it.
fn statistics_unsent(
    tx: &Connection,
    rows: &[(i64, String)],
    sinks: Option<&[SinkScope]>,
) -> rusqlite::Result<Vec<(String, u64)>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut cursors = tx
        .prepare("SELECT sink, last_id FROM sink_cursors WHERE kind = 'statistic' ORDER BY sink")?;
    let cursors = cursors
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(cursors
        .into_iter()
        .filter_map(|(sink, last_id)| {
            let feeds: Option<&[String]> = match sinks {
                None => None,
                Some(sinks) => Some(&sinks.iter().find(|s| s.name == sink)?.instances),
            };
            let n = rows
                .iter()
                .filter(|(id, instance)| {
                    *id > last_id && feeds.is_none_or(|f| f.iter().any(|i| i == instance))
                })
                .count() as u64;
            (n > 0).then_some((sink, n))
        })
        .collect())
}

/// State rows per multi-row `INSERT`: one statement for many rows saves SQLite's per-statement
/// work (opening cursors, the statement's start and end) and the binding calls' overhead, which
/// cost about as much as the insert itself for a row of this size.
pub const STATES_PER_INSERT: usize = 50;

/// The columns of a state row, in the order `bind_state` binds them.
const STATE_COLUMNS: &str = "entity, state, value, attributes, last_changed_us, last_updated_us, \
     time_fired_us, context_id, context_user_id, context_parent_id";
const STATE_COLUMN_COUNT: usize = 10;

/// A state row decided on (not a duplicate within a microsecond, not an unchanged
/// re-announcement), waiting for its `INSERT`.
struct PendingState<'r> {
    /// Its place in the batch.
    index: usize,
    entity: i64,
    attributes: i64,
    row: &'r StateRow,
}

/// `INSERT OR IGNORE` of one state row, and of a group.
static INSERT_STATE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| insert_states_sql(1));
static INSERT_STATES: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| insert_states_sql(STATES_PER_INSERT));

/// `INSERT OR IGNORE` of `rows` state rows in one statement.
fn insert_states_sql(rows: usize) -> String {
    let one = format!(
        "({})",
        (0..STATE_COLUMN_COUNT)
            .map(|_| "?")
            .collect::<Vec<_>>()
            .join(", ")
    );
    format!(
        "INSERT OR IGNORE INTO states ({STATE_COLUMNS}) VALUES {}",
        vec![one; rows].join(", ")
    )
}

/// Binds one state row's values at parameters `first..first + STATE_COLUMN_COUNT`.
fn bind_state(
    stmt: &mut rusqlite::Statement<'_>,
    first: usize,
    p: &PendingState<'_>,
) -> rusqlite::Result<()> {
    let row = p.row;
    stmt.raw_bind_parameter(first, p.entity)?;
    stmt.raw_bind_parameter(first + 1, row.state.as_str())?;
    stmt.raw_bind_parameter(first + 2, row.value)?;
    stmt.raw_bind_parameter(first + 3, p.attributes)?;
    stmt.raw_bind_parameter(first + 4, row.last_changed_us)?;
    stmt.raw_bind_parameter(first + 5, row.last_updated_us)?;
    stmt.raw_bind_parameter(first + 6, row.time_fired_us)?;
    stmt.raw_bind_parameter(first + 7, row.context_id.as_deref())?;
    stmt.raw_bind_parameter(first + 8, row.context_user_id.as_deref())?;
    stmt.raw_bind_parameter(first + 9, row.context_parent_id.as_deref())?;
    Ok(())
}

/// Inserts the pending state rows (a full group in one statement, fewer one by one) and counts
/// each as inserted or already stored. Returns how many were inserted.
fn insert_states(
    tx: &rusqlite::Transaction<'_>,
    records: &[Record],
    pending: &mut Vec<PendingState<'_>>,
    outcome: &mut WriteOutcome,
) -> Result<usize, StoreError> {
    let before = outcome.inserted;
    if pending.len() == STATES_PER_INSERT {
        let mut stmt = tx.prepare_cached(&INSERT_STATES)?;
        for (i, p) in pending.iter().enumerate() {
            bind_state(&mut stmt, 1 + i * STATE_COLUMN_COUNT, p)?;
        }
        let changed = stmt.raw_execute()?;
        if changed == pending.len() || changed == 0 {
            for p in pending.iter() {
                outcome.count(records[p.index].instance(), p.index, changed > 0);
            }
        } else {
            // Some were stored already. The statement's new rows took consecutive ids (each is
            // the largest id + 1) ending at the last insert's; a row is new when the id its key
            // has now is one of them, and it is the first row of the group with that key.
            let last = tx.last_insert_rowid();
            let new_ids = last - changed as i64 + 1..=last;
            let mut id_of = tx.prepare_cached(
                "SELECT id FROM states WHERE entity = ?1 AND last_updated_us = ?2",
            )?;
            let mut seen = std::collections::HashSet::new();
            for p in pending.iter() {
                let id: i64 =
                    id_of.query_row(params![p.entity, p.row.last_updated_us], |r| r.get(0))?;
                let new = new_ids.contains(&id) && seen.insert(id);
                outcome.count(records[p.index].instance(), p.index, new);
            }
        }
    } else if !pending.is_empty() {
        let mut stmt = tx.prepare_cached(&INSERT_STATE)?;
        for p in pending.iter() {
            bind_state(&mut stmt, 1, p)?;
            let new = stmt.raw_execute()? == 1;
            outcome.count(records[p.index].instance(), p.index, new);
        }
    }
    pending.clear();
    Ok((outcome.inserted - before) as usize)
}

fn entity_id(
    tx: &rusqlite::Transaction<'_>,
    cache: &mut HashMap<Arc<str>, HashMap<String, i64>>,
    row: &StateRow,
) -> Result<i64, StoreError> {
    if let Some(id) = cache
        .get(&*row.instance)
        .and_then(|ids| ids.get(row.entity_id.as_str()))
    {
        return Ok(*id);
    }
    let domain = row.entity_id.split('.').next().unwrap_or_default();
    tx.prepare_cached(
        "INSERT OR IGNORE INTO entities (instance, entity_id, domain) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![&*row.instance, row.entity_id, domain])?;
    let id: i64 = tx
        .prepare_cached("SELECT id FROM entities WHERE instance = ?1 AND entity_id = ?2")?
        .query_row(params![&*row.instance, row.entity_id], |r| r.get(0))?;
    cache
        .entry(row.instance.clone())
        .or_default()
        .insert(row.entity_id.clone(), id);
    Ok(id)
}

/// The newest stored row of `entity`, from the cache or the database (once per entity).
fn last_row(
    tx: &rusqlite::Transaction<'_>,
    cache: &mut HashMap<i64, LastRow>,
    entity: i64,
) -> Result<Option<LastRow>, StoreError> {
    if let Some(l) = cache.get(&entity) {
        return Ok(Some(*l));
    }
    let found = tx
        .prepare_cached(
            "SELECT last_updated_us, last_changed_us, state, coalesce(attributes, 0) FROM states \
             WHERE entity = ?1 ORDER BY last_updated_us DESC LIMIT 1",
        )?
        .query_row([entity], |r| {
            Ok(LastRow {
                last_updated_us: r.get(0)?,
                last_changed_us: r.get(1)?,
                state_hash: xxhash_rust::xxh3::xxh3_64(r.get_ref(2)?.as_str()?.as_bytes()),
                attributes: r.get(3)?,
            })
        })
        .optional()?;
    if let Some(l) = found {
        cache.insert(entity, l);
    }
    Ok(found)
}

/// Whether a row from history (no `time_fired`) is a change already stored with a `last_updated`
/// one microsecond off: same entity, state and attributes. HA's float seconds round to the live
/// event's microsecond ([`ha_client::time::micros_from_seconds`]); this is the second defence, for
/// a float rounded otherwise (rows stored by an older release, a future HA). Only history rows pay
/// for the lookup; live rows carry HA's own ISO time.
fn stored_within_a_microsecond(
    tx: &rusqlite::Transaction<'_>,
    entity: i64,
    row: &StateRow,
) -> Result<bool, StoreError> {
    let mut near = tx.prepare_cached(
        "SELECT coalesce(a.json, '{}') FROM states s LEFT JOIN attributes a ON a.id = s.attributes \
         WHERE s.entity = ?1 AND s.last_updated_us IN (?2 - 1, ?2 + 1) AND s.state = ?3",
    )?;
    let mut rows = near.query(params![entity, row.last_updated_us, row.state])?;
    while let Some(r) = rows.next()? {
        let stored = r.get_ref(0)?.as_str().unwrap_or_default();
        if stored == row.attributes {
            return Ok(true);
        }
        // The same attributes written differently (key order, number format): compare as JSON.
        let parse = |json: &str| serde_json::from_str::<serde_json::Value>(json).ok();
        if parse(stored).is_some_and(|a| Some(a) == parse(&row.attributes)) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn attribute_id(
    tx: &rusqlite::Transaction<'_>,
    cache: &mut HashMap<u64, i64>,
    json: &str,
) -> Result<i64, StoreError> {
    let hash = xxhash_rust::xxh3::xxh3_64(json.as_bytes());
    if let Some(id) = cache.get(&hash) {
        return Ok(*id);
    }
    // SQLite integers are signed: store the hash's bits as i64.
    let signed = i64::from_ne_bytes(hash.to_ne_bytes());
    let existing: Option<i64> = tx
        .prepare_cached("SELECT id FROM attributes WHERE hash = ?1 AND json = ?2")?
        .query_row(params![signed, json], |r| r.get(0))
        .optional()?;
    let id = match existing {
        Some(id) => id,
        None => {
            tx.prepare_cached("INSERT INTO attributes (hash, json) VALUES (?1, ?2)")?
                .execute(params![signed, json])?;
            tx.last_insert_rowid()
        }
    };
    if cache.len() >= ATTRIBUTE_CACHE {
        cache.clear();
    }
    cache.insert(hash, id);
    Ok(id)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn row(entity: &str, state: &str, us: i64, attrs: &str) -> Record {
        Record::State(StateRow {
            instance: Arc::from("home"),
            entity_id: entity.into(),
            state: state.into(),
            value: crate::record::numeric_value(state),
            attributes: attrs.into(),
            last_changed_us: us,
            last_updated_us: us,
            time_fired_us: Some(us),
            context_id: Some("c".into()),
            context_user_id: None,
            context_parent_id: None,
        })
    }

    #[test]
    fn counts_per_instance_follow_interleaved_instances_by_name() {
        let mut store = SqliteStore::in_memory().unwrap();
        let of = |instance: &str, entity: &str, us: i64| match row(entity, "1", us, "{}") {
            Record::State(mut r) => {
                // A new Arc each time: equal names count together, whatever the pointer.
                r.instance = Arc::from(instance);
                Record::State(r)
            }
            other => other,
        };
        let batch = vec![
            of("north", "sensor.a", 10),
            of("south", "sensor.a", 10),
            of("north", "sensor.b", 10),
            of("east", "sensor.a", 10),
            of("south", "sensor.a", 10),
        ];
        let outcome = store.write_batch(&batch).unwrap();
        assert_eq!(
            outcome.per_instance,
            vec![
                (Arc::from("north"), 2, 0),
                (Arc::from("south"), 1, 1),
                (Arc::from("east"), 1, 0)
            ]
        );
        assert_eq!(outcome.inserted_flags, vec![true, true, true, true, false]);
    }

    #[test]
    fn idempotent_and_deduplicated() {
        let mut store = SqliteStore::in_memory().unwrap();
        let batch = vec![
            row("sensor.a", "1.5", 10, r#"{"u":"W"}"#),
            row("sensor.a", "2.5", 20, r#"{"u":"W"}"#),
            row("light.b", "on", 20, "{}"),
        ];
        let first = store.write_batch(&batch).unwrap();
        assert_eq!((first.inserted, first.duplicates), (3, 0));
        assert_eq!(first.per_instance, vec![(Arc::from("home"), 3, 0)]);
        let again = store.write_batch(&batch).unwrap();
        assert_eq!((again.inserted, again.duplicates), (0, 3));
        let conn = store.connection();
        let attrs: i64 = conn
            .query_row("SELECT count(*) FROM attributes", [], |r| r.get(0))
            .unwrap();
        assert_eq!(attrs, 2);
        let (v, last): (f64, String) = conn
            .query_row(
                "SELECT value, last_updated FROM states_view WHERE entity_id = 'light.b'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(v, 1.0);
        assert_eq!(last, "1970-01-01T00:00:00.000Z");
        assert_eq!(store.last_updated_us("home").unwrap(), Some(20));
        assert_eq!(store.last_updated_us("other").unwrap(), None);
    }

    /// Every stored state with its entity and attribute set by value, in id order.
    fn stored_rows(store: &SqliteStore) -> Vec<String> {
        let mut stmt = store
            .connection()
            .prepare(
                "SELECT s.id, e.entity_id, s.state, s.value, a.json, s.last_changed_us, s.last_updated_us, \
                        s.time_fired_us, s.context_id, s.context_user_id, s.context_parent_id \
                 FROM states s JOIN entities e ON e.id = s.entity LEFT JOIN attributes a ON a.id = s.attributes \
                 ORDER BY s.id",
            )
            .unwrap();
        stmt.query_map([], |r| {
            Ok((0..11)
                .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                .collect::<Vec<_>>()
                .join("|"))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    #[test]
    fn group_inserts_store_and_count_what_row_by_row_inserts_do() {
        // Rows a store holds already, spread over the batch, so that groups are partly new.
        let stored_first: Vec<Record> = (0..400)
            .filter(|i| i % 7 == 0 || (100..160).contains(i))
            .map(|i| row(&format!("sensor.e{}", i % 13), &i.to_string(), i, "{}"))
            .collect();
        let mut batch: Vec<Record> = (0..400)
            .map(|i| {
                let attrs = format!(r#"{{"n":{}}}"#, i % 5);
                row(&format!("sensor.e{}", i % 13), &i.to_string(), i, &attrs)
            })
            .collect();
        // The same key twice within one group: the first is stored, the second is a duplicate.
        batch.insert(230, batch[220].clone());
        // Unchanged re-announcements and events among them.
        batch.insert(301, changed_at("sensor.new", "1", 1, 1, "{}"));
        batch.insert(302, changed_at("sensor.new", "1", 1, 5, "{}"));
        batch.insert(303, event(5));
        let mut results = Vec::new();
        for grouped in [false, true] {
            let mut store = SqliteStore::in_memory().unwrap();
            store.set_group_inserts(grouped).unwrap();
            store.write_batch(&stored_first).unwrap();
            let outcome = store.write_batch(&batch).unwrap();
            let again = store.write_batch(&batch).unwrap();
            results.push((outcome, again, stored_rows(&store)));
        }
        let (row_by_row, grouped) = (&results[0], &results[1]);
        assert_eq!(grouped.0, row_by_row.0);
        assert_eq!(grouped.1, row_by_row.1);
        assert_eq!(grouped.2, row_by_row.2);
        // The cases above happened: some new, some stored, a duplicate in the batch.
        let o = &grouped.0;
        assert_eq!(o.inserted_flags.len(), batch.len());
        assert_eq!(
            o.inserted_flags[220..=230]
                .iter()
                .chain(&o.inserted_flags[301..=303])
                .collect::<Vec<_>>(),
            [
                true, true, true, true, false, true, true, true, true, true, false, true, false,
                true
            ]
            .iter()
            .collect::<Vec<_>>(),
            "rows 220 to 230 (224 stored already, 230 a copy of 220), two of sensor.new \
             (the second unchanged), an event"
        );
        assert_eq!(
            (o.inserted, o.duplicates, o.unchanged),
            (
                400 - stored_first.len() as u64 + 2,
                stored_first.len() as u64 + 1,
                1
            )
        );
        assert_eq!(grouped.1.inserted, 0);
    }

    /// `row` with a separate `last_changed`.
    fn changed_at(entity: &str, state: &str, changed: i64, updated: i64, attrs: &str) -> Record {
        let Record::State(mut r) = row(entity, state, updated, attrs) else {
            unreachable!()
        };
        r.last_changed_us = changed;
        Record::State(r)
    }

    fn stored(store: &SqliteStore) -> Vec<i64> {
        let conn = store.connection();
        let mut stmt = conn
            .prepare("SELECT last_updated_us FROM states ORDER BY last_updated_us")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn unchanged_re_announcements_are_skipped() {
        let mut store = SqliteStore::in_memory().unwrap();
        let a = r#"{"u":"W"}"#;
        store
            .write_batch(&[changed_at("sensor.a", "1", 10, 10, a)])
            .unwrap();
        // Same state, attributes and last_changed; only last_updated moved: skipped.
        let o = store
            .write_batch(&[changed_at("sensor.a", "1", 10, 20, a)])
            .unwrap();
        assert_eq!((o.inserted, o.unchanged), (0, 1));
        // An attribute change (last_changed stays): kept.
        let o = store
            .write_batch(&[changed_at("sensor.a", "1", 10, 30, r#"{"u":"kW"}"#)])
            .unwrap();
        assert_eq!((o.inserted, o.unchanged), (1, 0));
        // Same state and attributes but a new last_changed (a real off→on→off HA collapsed): kept.
        let o = store
            .write_batch(&[changed_at("sensor.a", "1", 40, 40, r#"{"u":"kW"}"#)])
            .unwrap();
        assert_eq!(o.inserted, 1);
        // An older row arriving late (backfill) is never compared with newer ones: kept.
        let o = store
            .write_batch(&[changed_at("sensor.a", "1", 10, 15, a)])
            .unwrap();
        assert_eq!(o.inserted, 1);
        assert_eq!(stored(&store), vec![10, 15, 30, 40]);
        // A new process (empty cache) still compares with what is in the file.
        let mut fresh = SqliteStore::with(std::mem::replace(
            &mut store.conn,
            Connection::open_in_memory().unwrap(),
        ));
        let o = fresh
            .write_batch(&[changed_at("sensor.a", "1", 40, 50, r#"{"u":"kW"}"#)])
            .unwrap();
        assert_eq!(o.unchanged, 1);
        // Off: every row is kept.
        fresh.set_skip_unchanged(false);
        let o = fresh
            .write_batch(&[changed_at("sensor.a", "1", 40, 60, r#"{"u":"kW"}"#)])
            .unwrap();
        assert_eq!(o.inserted, 1);
    }

    /// `changed_at` without `time_fired`, as rows from HA's history come.
    fn from_history(entity: &str, state: &str, us: i64, attrs: &str) -> Record {
        let Record::State(mut r) = changed_at(entity, state, us, us, attrs) else {
            unreachable!()
        };
        r.time_fired_us = None;
        r.context_id = None;
        Record::State(r)
    }

    #[test]
    fn a_history_row_one_microsecond_off_a_stored_change_is_that_change() {
        let mut store = SqliteStore::in_memory().unwrap();
        let (a, a_reordered) = (r#"{"u":"W","f":1.5}"#, r#"{"f":1.5,"u":"W"}"#);
        store
            .write_batch(&[
                changed_at("sensor.a", "1", 100, 100, a),
                changed_at("sensor.a", "2", 200, 200, a),
            ])
            .unwrap();
        let o = store
            .write_batch(&[
                from_history("sensor.a", "1", 101, a), // the live row at 100
                from_history("sensor.a", "2", 199, a_reordered), // the live row at 200, keys reordered
                from_history("sensor.a", "1", 202, a),           // 2 µs off: another change
                from_history("sensor.a", "3", 201, a),           // another state
                from_history("sensor.a", "2", 198, r#"{"u":"kW"}"#), // other attributes
                from_history("sensor.b", "1", 101, a),           // another entity
            ])
            .unwrap();
        assert_eq!((o.inserted, o.duplicates), (4, 2));
        assert_eq!(o.inserted_flags, vec![false, false, true, true, true, true]);
        // The duplicate's differently written attributes left no attribute row behind.
        let sets: Vec<String> = {
            let mut stmt = store
                .connection()
                .prepare("SELECT json FROM attributes ORDER BY id")
                .unwrap();
            stmt.query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(sets, vec![a.to_string(), r#"{"u":"kW"}"#.to_string()]);
        // Live rows are keyed by HA's own ISO time only: one 1 µs off is stored.
        let o = store
            .write_batch(&[changed_at("sensor.b", "1", 102, 102, a)])
            .unwrap();
        assert_eq!(o.inserted, 1);
    }

    fn event(us: i64) -> Record {
        Record::Event(EventRow {
            instance: Arc::from("home"),
            event_type: "call_service".into(),
            data: "{}".into(),
            time_fired_us: us,
            context_id: Some(format!("c{us}")),
            origin: None,
        })
    }

    #[test]
    fn statistics_are_evicted_by_period_start_and_unsent_ones_are_counted_per_sink() {
        use crate::store::statistics::tests::{energy, hour};
        let mut store = SqliteStore::in_memory().unwrap();
        let m = energy();
        // Written newest first (a backfill's order is not time order): ids run against time.
        let stats: Vec<Record> = (0..20)
            .rev()
            .map(|h| Record::Statistic(hour(&m, h, h as f64)))
            .collect();
        store.write_batch(&stats).unwrap();
        let later = 1000 * 3_600_000_000;
        let states: Vec<Record> = (0..20)
            .map(|i| row("sensor.a", "1", later + i, "{}"))
            .collect();
        store.write_batch(&states).unwrap();
        // Sink `a` received the 10 oldest ids (hours 19..10), sink `b` nothing.
        store
            .connection()
            .execute_batch(
                "INSERT INTO sink_cursors (sink, kind, last_id) VALUES ('a', 'statistic', 10), ('b', 'statistic', 0)",
            )
            .unwrap();
        let oldest: Vec<(i64, String)> = (16..=20).map(|id| (id, "home".into())).collect(); // hours 4..0
        assert_eq!(
            statistics_unsent(store.connection(), &oldest, None).unwrap(),
            vec![("a".to_string(), 5), ("b".to_string(), 5)]
        );
        assert_eq!(store.evict_oldest(5).unwrap(), 5);
        let hours: Vec<i64> = {
            let mut stmt = store
                .connection()
                .prepare("SELECT start_us / 3600000000 FROM statistics ORDER BY start_us")
                .unwrap();
            stmt.query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(
            hours,
            (5..20).collect::<Vec<i64>>(),
            "the five oldest hours went"
        );
        let states_left: i64 = store
            .connection()
            .query_row("SELECT count(*) FROM states", [], |r| r.get(0))
            .unwrap();
        assert_eq!(states_left, 20, "the newer states stayed");
    }

    /// The cursor of a sink no longer configured, and rows of an instance a sink does not take,
    /// are no loss: counting them logged errors and raised the metric for rows nobody would send.
    #[test]
    fn evicted_statistics_count_only_for_configured_sinks_that_take_their_instance() {
        use crate::store::statistics::tests::{energy, hour};
        let of = |instance: &str, h: i64| {
            let mut r = hour(&energy(), h, h as f64);
            r.instance = Arc::from(instance);
            Record::Statistic(r)
        };
        let scope = |name: &str, instances: &[&str]| SinkScope {
            name: name.into(),
            instances: instances.iter().map(|i| i.to_string()).collect(),
        };
        let evicted_unsent = |sinks: Option<Vec<SinkScope>>| {
            let mut store = SqliteStore::in_memory().unwrap();
            // Hours 0..6 of home and of cabin, interleaved: ids 1..=12, home's odd.
            let rows: Vec<Record> = (0..6)
                .flat_map(|h| [of("home", h), of("cabin", h)])
                .collect();
            store.write_batch(&rows).unwrap();
            store
                .connection()
                .execute_batch(
                    "INSERT INTO sink_cursors (sink, kind, last_id) VALUES \
                     ('both', 'statistic', 2), ('cabin_only', 'statistic', 0), ('removed', 'statistic', 0)",
                )
                .unwrap();
            if let Some(sinks) = sinks {
                store.set_sinks(sinks);
            }
            // The 8 oldest: hours 0..4 of both homes, ids 1..=8.
            let (n, unsent) = store.evict(8).unwrap();
            assert_eq!(n, 8);
            unsent
        };
        let configured = vec![
            scope("both", &["home", "cabin"]),
            scope("cabin_only", &["cabin"]),
        ];
        assert_eq!(
            evicted_unsent(Some(configured)),
            vec![("both".to_string(), 6), ("cabin_only".to_string(), 4)],
            "both: ids 3..=8; cabin_only: cabin's ids 2, 4, 6, 8; removed: none"
        );
        // Without the sinks known, every cursor counts every row (what eviction did before).
        assert_eq!(
            evicted_unsent(None),
            vec![
                ("both".to_string(), 6),
                ("cabin_only".to_string(), 8),
                ("removed".to_string(), 8)
            ]
        );
    }

    #[test]
    fn eviction_takes_the_oldest_records_of_every_kind() {
        let mut store = SqliteStore::in_memory().unwrap();
        // Events first (old), then states (new): the events go first.
        let events: Vec<Record> = (0..50).map(event).collect();
        let states: Vec<Record> = (100..150).map(|i| row("sensor.a", "1", i, "{}")).collect();
        store.write_batch(&events).unwrap();
        store.write_batch(&states).unwrap();
        // 60 asked: 49 events (the newest stays, so no id is handed out twice) and 10 states.
        assert_eq!(store.evict_oldest(60).unwrap(), 59);
        let count = |table: &str| -> i64 {
            store
                .connection()
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!((count("events"), count("states")), (1, 40));
        // A new event after that gets a new id, past every cursor.
        store.write_batch(&[event(500)]).unwrap();
        let newest: i64 = store
            .connection()
            .query_row("SELECT max(id) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(newest, 51);
        // Interleaved in time: each kind loses its own oldest.
        let mut store = SqliteStore::in_memory().unwrap();
        let mixed: Vec<Record> = (0..40)
            .map(|i| match i % 2 {
                0 => row("sensor.a", "1", i, "{}"),
                _ => event(i),
            })
            .collect();
        store.write_batch(&mixed).unwrap();
        assert_eq!(store.evict_oldest(10).unwrap(), 10);
        let oldest =
            |sql: &str| -> i64 { store.connection().query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(oldest("SELECT min(last_updated_us) FROM states"), 10);
        assert_eq!(oldest("SELECT min(time_fired_us) FROM events"), 11);
    }

    #[test]
    fn eviction_removes_oldest_rows_and_orphaned_attributes() {
        let mut store = SqliteStore::in_memory().unwrap();
        let batch: Vec<Record> = (0..100)
            .map(|i| row("sensor.a", "1", i, &format!("{{\"i\":{i}}}")))
            .collect();
        store.write_batch(&batch).unwrap();
        let used = store.used_bytes().unwrap();
        assert!(used > 0);
        assert_eq!(store.evict_oldest(60).unwrap(), 60);
        let conn = store.connection();
        let (n, min): (i64, i64) = conn
            .query_row(
                "SELECT count(*), min(last_updated_us) FROM states",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((n, min), (40, 60));
        let attrs: i64 = conn
            .query_row("SELECT count(*) FROM attributes", [], |r| r.get(0))
            .unwrap();
        assert_eq!(attrs, 40);
        // Writing again after eviction reuses no stale cached attribute ids.
        store
            .write_batch(&[row("sensor.a", "2", 1000, r#"{"i":0}"#)])
            .unwrap();
    }
}
