//! What the gap backfill keeps in the database: the gaps not yet read back from HA's history,
//! and what it reads to find where a gap starts (the newest stored row, the entities seen).

use std::collections::HashMap;
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

/// What keeps a fleet's watermark of an instance back (see [`crate::fleet`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldBack {
    /// The oldest open gap's start, in microseconds.
    pub gap: Option<i64>,
    /// The oldest `last_updated` of the instance's rows that the sink has not acknowledged (all
    /// of them before the sink's first run), in microseconds.
    pub unsent: Option<i64>,
}

/// [`HeldBack`] of every instance with an open gap or an unsent row, for `sink`: one short-lived
/// connection and three queries however many instances the fleet gave this process.
pub async fn held_back(db: &Path, sink: &str) -> Result<HashMap<String, HeldBack>, String> {
    let sink = sink.to_string();
    on_db(db, false, move |conn| {
        let mut held: HashMap<String, HeldBack> = HashMap::new();
        let mut gaps =
            conn.prepare("SELECT instance, min(since_us) FROM gaps GROUP BY instance")?;
        for row in gaps.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))? {
            let (instance, since) = row?;
            held.entry(instance).or_default().gap = since;
        }
        let cursor: i64 = conn
            .query_row(
                "SELECT last_id FROM sink_cursors WHERE sink = ?1 AND kind = 'state'",
                [&sink],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        // The rows after the cursor are few (what the sink has yet to send): CROSS JOIN makes
        // SQLite read that range of the primary key first, not every row of the store.
        let mut unsent = conn.prepare(
            "SELECT e.instance, min(s.last_updated_us) FROM states s \
             CROSS JOIN entities e ON e.id = s.entity WHERE s.id > ?1 GROUP BY e.instance",
        )?;
        for row in unsent.query_map([cursor], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))? {
            let (instance, oldest) = row?;
            held.entry(instance).or_default().unsent = oldest;
        }
        Ok(held)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use crate::store::SqliteStore;
    use std::sync::Arc;

    fn row(instance: &str, entity: &str, us: i64) -> Record {
        match crate::store::sqlite::tests::row(entity, "1", us, "{}") {
            Record::State(mut r) => {
                r.instance = Arc::from(instance);
                Record::State(r)
            }
            other => other,
        }
    }

    /// Per instance: its oldest open gap, and its oldest row after the sink's cursor; an instance
    /// with neither is absent (nothing holds it back).
    #[tokio::test]
    async fn held_back_answers_for_every_instance_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("h.db");
        let mut store = SqliteStore::open(&db).unwrap();
        // ids 1..=3: home 100, cabin 200, home 300; then flat 400 (id 4).
        for r in [
            row("home", "sensor.a", 100),
            row("cabin", "sensor.a", 200),
            row("home", "sensor.b", 300),
            row("flat", "sensor.a", 400),
        ] {
            store.write_batch(&[r]).unwrap();
        }
        store
            .connection()
            .execute_batch(
                "INSERT INTO sink_cursors (sink, kind, last_id) VALUES ('pg', 'state', 2)",
            )
            .unwrap();
        open_gap(&db, "cabin", 50).await.unwrap();
        open_gap(&db, "cabin", 20).await.unwrap();
        open_gap(&db, "idle", 70).await.unwrap();
        let held = held_back(&db, "pg").await.unwrap();
        let at = |gap, unsent| HeldBack { gap, unsent };
        assert_eq!(held.len(), 4, "{held:?}");
        assert_eq!(
            held["home"],
            at(None, Some(300)),
            "row 1 was sent, row 3 not"
        );
        assert_eq!(held["cabin"], at(Some(20), None));
        assert_eq!(held["flat"], at(None, Some(400)));
        assert_eq!(held["idle"], at(Some(70), None));
        // A sink that never ran: every row is unsent.
        let fresh = held_back(&db, "new").await.unwrap();
        assert_eq!(fresh["home"], at(None, Some(100)));
        assert_eq!(fresh["cabin"], at(Some(20), Some(200)));
    }
}
