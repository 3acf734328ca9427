//! Reading the SQLite journal forward from a sink's cursor.

use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

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

/// A read connection to the journal, plus the cursor table.
pub struct Journal {
    conn: Connection,
}

impl Journal {
    /// Opens the journal file the writer created (read-write: cursors and dead letters live here).
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS dead_letters (
                 id       INTEGER PRIMARY KEY,
                 sink     TEXT NOT NULL,
                 state_id INTEGER NOT NULL,   -- states.id
                 reason   TEXT NOT NULL,
                 at_us    INTEGER NOT NULL
             );",
        )?;
        Ok(Journal { conn })
    }

    /// The sink's cursor, creating it when missing. A new sink starts at `start`: 0 replays the whole
    /// journal, which is what a user adding a sink to an existing store wants.
    pub fn cursor(&self, sink: &str, start: i64) -> rusqlite::Result<i64> {
        self.conn.execute(
            "INSERT OR IGNORE INTO sink_cursors (sink, last_id) VALUES (?1, ?2)",
            params![sink, start],
        )?;
        self.conn.query_row(
            "SELECT last_id FROM sink_cursors WHERE sink = ?1",
            [sink],
            |r| r.get(0),
        )
    }

    /// Moves the cursor forward and records dead letters, in one transaction.
    pub fn advance(
        &mut self,
        sink: &str,
        last_id: i64,
        dead: &[super::Rejected],
    ) -> rusqlite::Result<()> {
        // Immediate: take the write lock first (waiting up to the busy timeout). A deferred
        // transaction that read first fails at once when another connection wrote meanwhile.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE sink_cursors SET last_id = ?2 WHERE sink = ?1 AND last_id < ?2",
            params![sink, last_id],
        )?;
        if !dead.is_empty() {
            let now = jiff::Timestamp::now().as_microsecond();
            let mut insert = tx.prepare_cached(
                "INSERT INTO dead_letters (sink, state_id, reason, at_us) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for d in dead {
                insert.execute(params![sink, d.id, d.reason, now])?;
            }
        }
        tx.commit()
    }

    /// The newest journal id, for the lag gauge.
    pub fn head(&self) -> rusqlite::Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT max(id) FROM states", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .optional()?
            .flatten()
            .unwrap_or(0))
    }

    /// Up to `limit` rows after `after`, in id order.
    pub fn read_after(&self, after: i64, limit: usize) -> rusqlite::Result<Vec<JournalRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT s.id, e.instance, e.entity_id, s.state, s.value, coalesce(a.json, '{}'), s.last_changed_us,
                    s.last_updated_us, s.time_fired_us, s.context_id, s.context_user_id
             FROM states s JOIN entities e ON e.id = s.entity LEFT JOIN attributes a ON a.id = s.attributes
             WHERE s.id > ?1 ORDER BY s.id LIMIT ?2",
        )?;
        let mut instances: Vec<Arc<str>> = Vec::new();
        let rows = stmt.query_map(params![after, limit as i64], |r| {
            let instance: String = r.get(1)?;
            Ok((
                instance,
                JournalRow {
                    id: r.get(0)?,
                    instance: Arc::from(""),
                    entity_id: r.get(2)?,
                    state: r.get(3)?,
                    value: r.get(4)?,
                    attributes: r.get(5)?,
                    last_changed_us: r.get(6)?,
                    last_updated_us: r.get(7)?,
                    time_fired_us: r.get(8)?,
                    context_id: r.get(9)?,
                    context_user_id: r.get(10)?,
                },
            ))
        })?;
        let mut out = Vec::with_capacity(limit.min(4096));
        for row in rows {
            let (instance, mut row) = row?;
            // Few instances: share one Arc per name instead of a String per row.
            let shared = match instances.iter().find(|i| ***i == *instance) {
                Some(i) => i.clone(),
                None => {
                    let i: Arc<str> = Arc::from(instance);
                    instances.push(i.clone());
                    i
                }
            };
            row.instance = shared;
            out.push(row);
        }
        Ok(out)
    }
}
