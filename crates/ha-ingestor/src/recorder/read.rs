//! Reading HA's recorder database file: opened read-only (safe beside a running HA, which keeps
//! the file in WAL mode), its schema version checked, rows read in chunks of recorder ids, each
//! chunk one statement (one read transaction), into plain structs. Nothing here knows the store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::RecorderError;

/// The oldest recorder schema read: the one HA 2024.3 writes (42; the `*_ts`, `states_meta`,
/// `event_types` and context-bin layout is the same from here on).
pub const OLDEST_SCHEMA: i64 = 42;
/// The newest recorder schema read: the one HA 2026.2 writes. Versions 43 to 53 changed nothing
/// this reader uses (43 added `states.last_reported_ts`; 44 to 48 changed MySQL/PostgreSQL
/// column types and re-ran data migrations; 49 to 53 changed statistics metadata).
pub const NEWEST_SCHEMA: i64 = 53;

/// Which HA releases wrote which schema, for messages.
pub const SUPPORTED: &str = "42 (HA 2024.3) to 53 (HA 2026.2)";

/// One row of the recorder's `states`. The entity and the attribute set are ids, resolved by the
/// caller from [`RecorderDb::entity_ids`] and [`RecorderDb::shared_attrs`]: HA shares an
/// attribute set among many rows, so it is read and converted once, not once per row.
#[derive(Clone, Debug, PartialEq)]
pub struct RecorderState {
    /// `state_id`.
    pub state_id: i64,
    /// `metadata_id` (the entity in `states_meta`).
    pub metadata_id: i64,
    /// The state; HA writes `""` for an entity that was removed.
    pub state: Option<String>,
    /// `attributes_id` (`state_attributes`), if any.
    pub attributes_id: Option<i64>,
    /// Float epoch seconds.
    pub last_updated_ts: f64,
    /// Float epoch seconds; `None` when equal to `last_updated_ts`.
    pub last_changed_ts: Option<f64>,
    /// The context bins (16 bytes; `None` for a missing or malformed one, as HA reads it).
    pub context_id: Option<[u8; 16]>,
    /// See `context_id`.
    pub context_user_id: Option<[u8; 16]>,
    /// See `context_id`.
    pub context_parent_id: Option<[u8; 16]>,
}

/// One row of the recorder's `events`, with its type and data joined.
#[derive(Clone, Debug, PartialEq)]
pub struct RecorderEvent {
    /// `event_id`.
    pub event_id: i64,
    /// The event type.
    pub event_type: String,
    /// `event_data.shared_data` (JSON).
    pub data: Option<String>,
    /// Float epoch seconds.
    pub time_fired_ts: f64,
    /// The context id bin.
    pub context_id: Option<Vec<u8>>,
    /// 0 local, 1 remote.
    pub origin_idx: Option<i64>,
}

/// Which recorder rows to read: ids in `(after, up_to]`, times in `[since_s, until_s)` (float
/// seconds, a millisecond wider than asked: the caller keeps the exact microsecond window).
#[derive(Clone, Copy, Debug)]
pub struct IdWindow {
    /// Rows after this id.
    pub after: i64,
    /// Up to this id (the newest when the import started).
    pub up_to: i64,
    /// Seconds.
    pub since_s: f64,
    /// Seconds.
    pub until_s: f64,
}

impl IdWindow {
    /// The ids after `after` up to `up_to`, in the microsecond window `[since_us, until_us)`.
    pub fn new(after: i64, up_to: i64, since_us: i64, until_us: i64) -> Self {
        IdWindow {
            after,
            up_to,
            since_s: since_us as f64 / 1e6 - 0.001,
            until_s: until_us as f64 / 1e6 + 0.001,
        }
    }

    /// No `--since` nor `--until`: every recorder row's time is in the window.
    pub fn all_times(&self) -> bool {
        self.since_s <= 0.0 && self.until_s >= i64::MAX as f64 / 1e6
    }
}

/// An open recorder database.
pub struct RecorderDb {
    conn: Connection,
    /// Its schema version (`schema_changes`).
    pub schema_version: i64,
    /// What identifies the file across copies and renames: when HA created it (the first
    /// `schema_changes` row). A new database (HA recreates a broken one) starts afresh.
    pub identity: String,
    /// The path.
    pub path: PathBuf,
}

impl RecorderDb {
    /// Opens HA's recorder database at `location`: a path, or HA's `db_url` for SQLite
    /// (`sqlite:////config/home-assistant_v2.db`). A MariaDB, MySQL or PostgreSQL URL is refused
    /// with what to do instead.
    pub fn open(location: &str) -> Result<Self, RecorderError> {
        let path = sqlite_path(location)?;
        if !path.exists() {
            return Err(RecorderError::Missing { path });
        }
        // Read-only: never a write to HA's file, not even a WAL checkpoint or a journal.
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let failed = |source: rusqlite::Error| RecorderError::Open {
            path: path.clone(),
            source,
        };
        let conn = Connection::open_with_flags(&path, flags).map_err(failed)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(failed)?;
        conn.pragma_update(None, "query_only", true)
            .map_err(failed)?;
        let not_recorder = |why: String| RecorderError::NotRecorder {
            path: path.clone(),
            why,
        };
        let (schema_version, identity): (i64, String) = conn
            .query_row(
                "SELECT (SELECT schema_version FROM schema_changes ORDER BY change_id DESC LIMIT 1), \
                        (SELECT changed FROM schema_changes ORDER BY change_id LIMIT 1)",
                [],
                |r| {
                    Ok((
                        r.get::<_, Option<i64>>(0)?.unwrap_or(0),
                        r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    ))
                },
            )
            .map_err(|e| not_recorder(e.to_string()))?;
        // Reads through a memory map (no copy per page read) and a larger page cache; neither
        // writes anything. After the check: on a file that is not a database these fail too.
        conn.pragma_update(None, "mmap_size", 1i64 << 30)
            .map_err(failed)?;
        conn.pragma_update(None, "cache_size", -65_536)
            .map_err(failed)?;
        if !(OLDEST_SCHEMA..=NEWEST_SCHEMA).contains(&schema_version) {
            return Err(RecorderError::UnsupportedSchema {
                path,
                found: schema_version,
            });
        }
        let db = RecorderDb {
            conn,
            schema_version,
            identity: format!("created {identity}"),
            path,
        };
        db.check_migrated()?;
        Ok(db)
    }

    /// Rows HA's background migrations have not moved to the current layout yet (an entity id
    /// still in `states`, a time not yet in `*_ts`) would be read without entity or time.
    fn check_migrated(&self) -> Result<(), RecorderError> {
        let unmigrated: i64 = self
            .conn
            .query_row(
                "SELECT (SELECT count(*) FROM (SELECT 1 FROM states WHERE metadata_id IS NULL OR last_updated_ts IS NULL LIMIT 1)) \
                      + (SELECT count(*) FROM (SELECT 1 FROM events WHERE event_type_id IS NULL OR time_fired_ts IS NULL LIMIT 1))",
                [],
                |r| r.get(0),
            )
            .map_err(|e| RecorderError::NotRecorder {
                path: self.path.clone(),
                why: e.to_string(),
            })?;
        if unmigrated > 0 {
            return Err(RecorderError::Unmigrated {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// The newest `state_id` (0 for none).
    pub fn newest_state_id(&self) -> Result<i64, RecorderError> {
        self.query_i64("SELECT coalesce(max(state_id), 0) FROM states")
    }

    /// The newest `event_id` (0 for none).
    pub fn newest_event_id(&self) -> Result<i64, RecorderError> {
        self.query_i64("SELECT coalesce(max(event_id), 0) FROM events")
    }

    fn query_i64(&self, sql: &str) -> Result<i64, RecorderError> {
        Ok(self.conn.query_row(sql, [], |r| r.get(0))?)
    }

    /// How many states rows `window` holds (for the progress bar).
    pub fn count_states(&self, w: IdWindow) -> Result<u64, RecorderError> {
        self.count_rows("states", "state_id", "last_updated_ts", w)
    }

    /// How many events rows `window` holds.
    pub fn count_events(&self, w: IdWindow) -> Result<u64, RecorderError> {
        self.count_rows("events", "event_id", "time_fired_ts", w)
    }

    /// Rows of `table` in `w` by its `id` range and `time` column (constants, not input).
    fn count_rows(
        &self,
        table: &str,
        id: &str,
        time: &str,
        w: IdWindow,
    ) -> Result<u64, RecorderError> {
        // `+` keeps SQLite on the id range (the primary key) rather than the time index. Without
        // a time window, only the ids: counting them reads no row's columns.
        let times = if w.all_times() {
            "?3 < ?4".to_string()
        } else {
            format!("+{time} >= ?3 AND +{time} < ?4")
        };
        let sql =
            format!("SELECT count(*) FROM {table} WHERE {id} > ?1 AND {id} <= ?2 AND {times}");
        let n: i64 =
            self.conn
                .query_row(&sql, params![w.after, w.up_to, w.since_s, w.until_s], |r| {
                    r.get(0)
                })?;
        Ok(n as u64)
    }

    /// Every entity of `states_meta`: `metadata_id` to entity id. Read again when a row names
    /// one not known yet (HA added the entity since).
    pub fn entity_ids(&self) -> Result<std::collections::HashMap<i64, String>, RecorderError> {
        let mut stmt = self
            .conn
            .prepare("SELECT metadata_id, entity_id FROM states_meta")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// `state_attributes.shared_attrs` of one attribute set (JSON, HA's attribute order);
    /// `None` when it is gone or NULL.
    pub fn shared_attrs(&self, attributes_id: i64) -> Result<Option<String>, RecorderError> {
        Ok(self
            .conn
            .prepare_cached("SELECT shared_attrs FROM state_attributes WHERE attributes_id = ?1")?
            .query_row([attributes_id], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
    }

    /// Up to `limit` states of `window`, in `state_id` order, appended to `out`. Returns the
    /// last id read, or `None` when the window has no more rows.
    pub fn read_states(
        &self,
        w: IdWindow,
        limit: usize,
        out: &mut Vec<RecorderState>,
    ) -> Result<Option<i64>, RecorderError> {
        // No joins: the entity and the attribute set are ids the caller resolves once each.
        let mut stmt = self.conn.prepare_cached(
            "SELECT s.state_id, s.metadata_id, s.state, s.attributes_id, s.last_updated_ts, \
                    s.last_changed_ts, s.context_id_bin, s.context_user_id_bin, s.context_parent_id_bin \
             FROM states s \
             WHERE s.state_id > ?1 AND s.state_id <= ?2 \
               AND +s.last_updated_ts >= ?3 AND +s.last_updated_ts < ?4 \
             ORDER BY s.state_id LIMIT ?5",
        )?;
        let mut rows = stmt.query(params![
            w.after,
            w.up_to,
            w.since_s,
            w.until_s,
            limit as i64
        ])?;
        let mut last = None;
        while let Some(r) = rows.next()? {
            let Some(metadata_id) = r.get::<_, Option<i64>>(1)? else {
                // The join this replaced left such a row out (an unmigrated one is refused at open).
                last = Some(r.get(0)?);
                continue;
            };
            let state = RecorderState {
                state_id: r.get(0)?,
                metadata_id,
                state: r.get(2)?,
                attributes_id: r.get(3)?,
                last_updated_ts: r.get(4)?,
                last_changed_ts: r.get(5)?,
                context_id: bin16(r.get_ref(6)?),
                context_user_id: bin16(r.get_ref(7)?),
                context_parent_id: bin16(r.get_ref(8)?),
            };
            last = Some(state.state_id);
            out.push(state);
        }
        Ok(last)
    }

    /// Up to `limit` events of `window`, in `event_id` order, appended to `out`. Returns the last
    /// id read, or `None` when the window has no more rows.
    pub fn read_events(
        &self,
        w: IdWindow,
        limit: usize,
        out: &mut Vec<RecorderEvent>,
    ) -> Result<Option<i64>, RecorderError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT e.event_id, t.event_type, d.shared_data, e.time_fired_ts, e.context_id_bin, e.origin_idx \
             FROM events e \
             JOIN event_types t ON t.event_type_id = e.event_type_id \
             LEFT JOIN event_data d ON d.data_id = e.data_id \
             WHERE e.event_id > ?1 AND e.event_id <= ?2 \
               AND +e.time_fired_ts >= ?3 AND +e.time_fired_ts < ?4 \
             ORDER BY e.event_id LIMIT ?5",
        )?;
        let mut rows = stmt.query(params![
            w.after,
            w.up_to,
            w.since_s,
            w.until_s,
            limit as i64
        ])?;
        let mut last = None;
        while let Some(r) = rows.next()? {
            let event = RecorderEvent {
                event_id: r.get(0)?,
                event_type: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                data: r.get(2)?,
                time_fired_ts: r.get(3)?,
                context_id: r.get(4)?,
                origin_idx: r.get(5)?,
            };
            last = Some(event.event_id);
            out.push(event);
        }
        Ok(last)
    }

    /// The connection, for readers of other tables (statistics).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// A 16-byte context bin; anything else (NULL, another length) reads as none, as HA reads it.
fn bin16(v: rusqlite::types::ValueRef<'_>) -> Option<[u8; 16]> {
    match v {
        rusqlite::types::ValueRef::Blob(b) => b.try_into().ok(),
        _ => None,
    }
}

/// The file behind `location`: a path, or a SQLite `db_url` as HA's configuration writes it.
fn sqlite_path(location: &str) -> Result<PathBuf, RecorderError> {
    if let Some(path) = location.strip_prefix("sqlite:///") {
        return Ok(PathBuf::from(path));
    }
    if let Some((scheme, _)) = location.split_once("://") {
        // Only the scheme is named: the rest of a URL may hold a password.
        return Err(RecorderError::ServerUrl {
            scheme: scheme.to_string(),
        });
    }
    Ok(Path::new(location).to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            sqlite_path("sqlite:////config/home-assistant_v2.db").unwrap(),
            PathBuf::from("/config/home-assistant_v2.db")
        );
        assert_eq!(
            sqlite_path("home-assistant_v2.db").unwrap(),
            PathBuf::from("home-assistant_v2.db")
        );
        let e = sqlite_path("mysql://ha:s3cret@db/ha?charset=utf8mb4")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mysql") && e.contains("backfill"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }
}
