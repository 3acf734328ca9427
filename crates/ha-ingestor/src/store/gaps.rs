//! What the gap backfill keeps in the database: the gaps not yet read back from HA's history,
//! and what it reads to find where a gap starts (the newest stored row, the entities seen).

use std::path::Path;

use rusqlite::OptionalExtension;

use super::Access;

/// Runs `f` on a short-lived connection ([`super::on_db`]): read-only unless `write`. Writes wait
/// for the writer's lock (SQLite serializes writers).
async fn on_db<T: Send + 'static>(
    db: &Path,
    write: bool,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, String> {
    let (access, what) = match write {
        true => (Access::WriteExisting, "write"),
        false => (Access::ReadOnly, "read"),
    };
    let shown = db.display().to_string();
    super::on_db(db, access, move |conn| {
        f(conn).map_err(|e| format!("cannot {what} {shown}: {e}"))
    })
    .await
}

/// Records, durably, that a gap of `instance` began at `since_us`. Called before any row from after
/// the gap can be stored: once such rows exist, the newest stored row no longer shows the gap, and
/// only this record makes a later start (after `kill -9`, say) read it back. The fill that covers
/// it removes it ([`close_gaps`]).
pub async fn open_gap(db: &Path, instance: &str, since_us: i64) -> Result<(), String> {
    let instance = instance.to_string();
    on_db(db, true, move |conn| {
        conn.execute(
            "INSERT INTO gaps (instance, since_us) VALUES (?1, ?2)",
            rusqlite::params![instance, since_us],
        )
        .map(drop)
    })
    .await
}

/// The open gaps of an instance: the oldest start, and the newest record's id.
pub async fn open_gaps(db: &Path, instance: &str) -> Result<(Option<i64>, Option<i64>), String> {
    let instance = instance.to_string();
    on_db(db, false, move |conn| {
        conn.query_row(
            "SELECT min(since_us), max(id) FROM gaps WHERE instance = ?1",
            [&instance],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    })
    .await
}

/// Removes the gap records up to `id`: a fill that began after they were written covered them.
pub async fn close_gaps(db: &Path, instance: &str, id: i64) -> Result<(), String> {
    let instance = instance.to_string();
    on_db(db, true, move |conn| {
        conn.execute(
            "DELETE FROM gaps WHERE instance = ?1 AND id <= ?2",
            rusqlite::params![instance, id],
        )
        .map(drop)
    })
    .await
}

/// The newest `last_updated` stored for an instance, in microseconds.
pub async fn newest_stored(db: &Path, instance: &str) -> Result<Option<i64>, String> {
    let instance = instance.to_string();
    on_db(db, false, move |conn| {
        conn.query_row(
            "SELECT max(s.last_updated_us) FROM states s JOIN entities e ON e.id = s.entity WHERE e.instance = ?1",
            [&instance],
            |r| r.get::<_, Option<i64>>(0),
        )
    })
    .await
}

/// The entity ids stored for an instance.
pub async fn stored_entities(db: &Path, instance: &str) -> Result<Vec<String>, String> {
    let instance = instance.to_string();
    on_db(db, false, move |conn| {
        let mut stmt = conn.prepare("SELECT entity_id FROM entities WHERE instance = ?1")?;
        stmt.query_map([&instance], |r| r.get(0))?.collect()
    })
    .await
}

/// What keeps a fleet's watermark of `instance` back (see [`crate::fleet`]): the oldest open gap,
/// and the oldest `last_updated` of the instance's rows that `sink` has not acknowledged (all of
/// them before the sink's first run), both in microseconds.
pub async fn held_back(
    db: &Path,
    instance: &str,
    sink: &str,
) -> Result<(Option<i64>, Option<i64>), String> {
    let (instance, sink) = (instance.to_string(), sink.to_string());
    on_db(db, false, move |conn| {
        let gap: Option<i64> = conn.query_row(
            "SELECT min(since_us) FROM gaps WHERE instance = ?1",
            [&instance],
            |r| r.get(0),
        )?;
        let cursor: i64 = conn
            .query_row(
                "SELECT last_id FROM sink_cursors WHERE sink = ?1 AND kind = 'state'",
                [&sink],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        // The rows after the cursor are few (what the sink has yet to send): CROSS JOIN makes
        // SQLite read that range of the primary key first, not every row of the instance.
        let unsent: Option<i64> = conn.query_row(
            "SELECT min(s.last_updated_us) FROM states s CROSS JOIN entities e ON e.id = s.entity \
             WHERE s.id > ?2 AND e.instance = ?1",
            rusqlite::params![instance, cursor],
            |r| r.get(0),
        )?;
        Ok((gap, unsent))
    })
    .await
}
