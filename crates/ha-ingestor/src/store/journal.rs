//! The journal as sinks see it: records of each kind read forward from the sink's cursor for that
//! kind, cursors moved forward together with the dead letters of the rows a server refused.

use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::record::RecordKind;

/// One stored state change, as remote sinks see it.
#[derive(Clone, Debug, PartialEq)]
pub struct JournalRow {
    /// `states.id`: the journal sequence.
    pub id: i64,
    /// The HA instance's configured name.
    pub instance: Arc<str>,
    /// `domain.object_id`.
    pub entity_id: String,
    /// The state string.
    pub state: String,
    /// The numeric reading of the state (see [`crate::record::numeric_value`]).
    pub value: Option<f64>,
    /// The attributes as a JSON object, in HA's order, after the global attribute rules.
    pub attributes: String,
    /// Microseconds since the epoch.
    pub last_changed_us: i64,
    /// Microseconds since the epoch.
    pub last_updated_us: i64,
    /// Microseconds since the epoch; `None` for rows imported from HA's history.
    pub time_fired_us: Option<i64>,
    /// The context id.
    pub context_id: Option<String>,
    /// The user who caused the change.
    pub context_user_id: Option<String>,
}

impl JournalRow {
    /// `time_fired`, or `last_updated` when the row came from history (HA fires the event in the
    /// same instant it sets `last_updated`, so this is the best stand-in).
    pub fn time_fired_or_updated_us(&self) -> i64 {
        self.time_fired_us.unwrap_or(self.last_updated_us)
    }

    /// The part before the dot.
    pub fn domain(&self) -> &str {
        self.entity_id.split_once('.').map_or("", |(d, _)| d)
    }

    /// The part after the dot.
    pub fn object_id(&self) -> &str {
        self.entity_id
            .split_once('.')
            .map_or(self.entity_id.as_str(), |(_, o)| o)
    }
}

/// One stored event (not a state change), as remote sinks see it.
#[derive(Clone, Debug, PartialEq)]
pub struct JournalEvent {
    /// `events.id`: the journal sequence of events.
    pub id: i64,
    /// The HA instance's configured name.
    pub instance: Arc<str>,
    /// The event type.
    pub event_type: String,
    /// `data` as a JSON object.
    pub data: String,
    /// Microseconds since the epoch.
    pub time_fired_us: i64,
    /// The context id.
    pub context_id: Option<String>,
    /// `LOCAL` or `REMOTE`.
    pub origin: Option<String>,
}

/// A connection to the journal for one sink's runner: rows, cursors, dead letters.
pub struct Journal {
    conn: Connection,
}

impl Journal {
    /// Opens the journal file the writer created (read-write: cursors and dead letters live here).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Journal {
            conn: super::open(path, super::Access::WriteExisting)?,
        })
    }

    /// The registry metadata of `keys` (instance, entity id), for a sink's `metadata_tags`.
    pub fn entity_metadata(
        &self,
        keys: &[(Arc<str>, String)],
    ) -> rusqlite::Result<super::registry::MetadataMap> {
        super::registry::metadata_of(&self.conn, keys.iter().map(|(i, e)| (&**i, e.as_str())))
    }

    /// The sink's cursor for `kind`, creating it when missing. A new cursor starts at `start`: 0
    /// replays the whole journal, which is what a user adding a sink to an existing store wants.
    pub fn cursor(&self, sink: &str, kind: RecordKind, start: i64) -> rusqlite::Result<i64> {
        self.conn.execute(
            "INSERT OR IGNORE INTO sink_cursors (sink, kind, last_id) VALUES (?1, ?2, ?3)",
            params![sink, kind.as_str(), start],
        )?;
        self.conn.query_row(
            "SELECT last_id FROM sink_cursors WHERE sink = ?1 AND kind = ?2",
            params![sink, kind.as_str()],
            |r| r.get(0),
        )
    }

    /// Moves the cursor of `kind` forward and records the dead letters (`(id, reason)`), in one
    /// transaction.
    pub fn advance(
        &mut self,
        sink: &str,
        kind: RecordKind,
        last_id: i64,
        dead: &[(i64, &str)],
    ) -> rusqlite::Result<()> {
        // Immediate: take the write lock first (waiting up to the busy timeout). A deferred
        // transaction that read first fails at once when another connection wrote meanwhile.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE sink_cursors SET last_id = ?3 WHERE sink = ?1 AND kind = ?2 AND last_id < ?3",
            params![sink, kind.as_str(), last_id],
        )?;
        if !dead.is_empty() {
            let now = jiff::Timestamp::now().as_microsecond();
            let mut insert = tx.prepare_cached(
                "INSERT INTO dead_letters (sink, kind, state_id, reason, at_us) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (id, reason) in dead {
                insert.execute(params![sink, kind.as_str(), id, reason, now])?;
            }
        }
        tx.commit()
    }

    /// The newest id of `kind`, for the lag gauge and `start = "new"`.
    pub fn head(&self, kind: RecordKind) -> rusqlite::Result<i64> {
        Ok(self
            .conn
            .query_row(&format!("SELECT max(id) FROM {}", kind.table()), [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .optional()?
            .flatten()
            .unwrap_or(0))
    }

    /// Up to `limit` statistic rows after `after`, in id order.
    pub fn read_statistics_after(
        &self,
        after: i64,
        limit: usize,
    ) -> rusqlite::Result<Vec<super::statistics::JournalStatistic>> {
        super::statistics::read_after(&self.conn, after, limit)
    }

    /// Up to `limit` events after `after`, in id order.
    pub fn read_events_after(
        &self,
        after: i64,
        limit: usize,
    ) -> rusqlite::Result<Vec<JournalEvent>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, instance, event_type, data, time_fired_us, context_id, origin FROM events \
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let mut instances = Instances::default();
        let rows = stmt.query_map(params![after, limit as i64], |r| {
            Ok(JournalEvent {
                id: r.get(0)?,
                instance: instances.share(r, 1)?,
                event_type: r.get(2)?,
                data: r.get(3)?,
                time_fired_us: r.get(4)?,
                context_id: r.get(5)?,
                origin: r.get(6)?,
            })
        })?;
        rows.collect()
    }

    /// Up to `limit` rows after `after`, in id order.
    pub fn read_after(&self, after: i64, limit: usize) -> rusqlite::Result<Vec<JournalRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT s.id, e.instance, e.entity_id, s.state, s.value, coalesce(a.json, '{}'), s.last_changed_us,
                    s.last_updated_us, s.time_fired_us, s.context_id, s.context_user_id
             FROM states s JOIN entities e ON e.id = s.entity LEFT JOIN attributes a ON a.id = s.attributes
             WHERE s.id > ?1 ORDER BY s.id LIMIT ?2",
        )?;
        let mut instances = Instances::default();
        let rows = stmt.query_map(params![after, limit as i64], |r| {
            Ok(JournalRow {
                id: r.get(0)?,
                instance: instances.share(r, 1)?,
                entity_id: r.get(2)?,
                state: r.get(3)?,
                value: r.get(4)?,
                attributes: r.get(5)?,
                last_changed_us: r.get(6)?,
                last_updated_us: r.get(7)?,
                time_fired_us: r.get(8)?,
                context_id: r.get(9)?,
                context_user_id: r.get(10)?,
            })
        })?;
        rows.collect()
    }
}

/// Few instances: one `Arc` per name instead of a `String` per row.
#[derive(Default)]
struct Instances(Vec<Arc<str>>);

impl Instances {
    /// Column `i` of `row`, shared.
    fn share(&mut self, row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Arc<str>> {
        let value = row.get_ref(i)?;
        let name = value.as_str().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, value.data_type(), Box::new(e))
        })?;
        Ok(match self.0.iter().find(|n| ***n == *name) {
            Some(n) => n.clone(),
            None => {
                let n: Arc<str> = Arc::from(name);
                self.0.push(n.clone());
                n
            }
        })
    }
}
