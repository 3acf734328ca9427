//! Import progress, so a second run resumes: the slices a history import finished
//! ([`ImportProgress`]: `import_progress` for states, `statistics_import_progress` for statistics),
//! and how far a recorder import got in each table ([`RecorderProgress`]).

use std::path::Path;

use rusqlite::{Connection, params};

use super::{Access, StoreError};

/// The `import_progress` table.
pub struct ImportProgress {
    conn: Connection,
    table: &'static str,
}

impl ImportProgress {
    /// Opens the database (creating it, with the schema, when missing).
    pub fn open(db: &Path) -> Result<Self, StoreError> {
        Ok(ImportProgress {
            conn: super::open(db, Access::Write)?,
            table: "import_progress",
        })
    }

    /// The progress of `backfill --statistics`.
    pub fn open_statistics(db: &Path) -> Result<Self, StoreError> {
        Ok(ImportProgress {
            conn: super::open(db, Access::Write)?,
            table: "statistics_import_progress",
        })
    }

    /// Whether an earlier run finished a slice covering `[start, end)`.
    pub fn done(&self, instance: &str, start: i64, end: i64) -> bool {
        self.conn
            .query_row(
                &format!(
                    "SELECT 1 FROM {} WHERE instance = ?1 AND start_us <= ?2 AND end_us >= ?3",
                    self.table
                ),
                params![instance, start, end],
                |_| Ok(()),
            )
            .is_ok()
    }

    /// Records that the slice `[start, end)` is done, with how many states it held.
    pub fn finish(
        &self,
        instance: &str,
        start: i64,
        end: i64,
        states: u64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            &format!(
                "INSERT OR REPLACE INTO {} (instance, start_us, end_us, states) VALUES (?1, ?2, ?3, ?4)",
                self.table
            ),
            params![instance, start, end, states as i64],
        )?;
        Ok(())
    }

    /// Forgets every finished slice (`backfill --fresh`).
    pub fn forget(&self) -> Result<(), StoreError> {
        self.conn
            .execute(&format!("DELETE FROM {}", self.table), [])?;
        Ok(())
    }
}

/// Where an `import-recorder` run is: one row per (instance, recorder file, record kind, window).
pub struct RecorderProgress {
    conn: Connection,
}

/// The key of one recorder import's progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecorderImportKey<'a> {
    /// The instance the rows are stored under.
    pub instance: &'a str,
    /// The recorder file's identity.
    pub recorder: &'a str,
    /// `state` or `event`.
    pub kind: &'a str,
    /// The window asked for, `[since_us, until_us)`.
    pub since_us: i64,
    /// See `since_us`.
    pub until_us: i64,
}

impl RecorderProgress {
    /// Opens the database (creating it, with the schema, when missing).
    pub fn open(db: &Path) -> Result<Self, StoreError> {
        Ok(RecorderProgress {
            conn: super::open(db, Access::Write)?,
        })
    }

    /// The last recorder row id done and the rows read so far (0, 0 when none).
    pub fn get(&self, key: &RecorderImportKey<'_>) -> Result<(i64, u64), StoreError> {
        use rusqlite::OptionalExtension;
        let found: Option<(i64, i64)> = self
            .conn
            .query_row(
                "SELECT last_id, rows FROM recorder_import_progress WHERE instance = ?1 AND recorder = ?2 \
                 AND kind = ?3 AND since_us = ?4 AND until_us = ?5",
                params![key.instance, key.recorder, key.kind, key.since_us, key.until_us],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(found.map_or((0, 0), |(id, rows)| (id, rows as u64)))
    }

    /// Records that every recorder row up to `last_id` is committed in the store.
    pub fn set(
        &self,
        key: &RecorderImportKey<'_>,
        last_id: i64,
        rows: u64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO recorder_import_progress (instance, recorder, kind, since_us, until_us, last_id, rows) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                key.instance,
                key.recorder,
                key.kind,
                key.since_us,
                key.until_us,
                last_id,
                rows as i64
            ],
        )?;
        Ok(())
    }

    /// Forgets the progress of every recorder import (`import-recorder --fresh`).
    pub fn forget(&self) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM recorder_import_progress", [])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_progress_is_kept_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = RecorderProgress::open(&dir.path().join("p.db")).unwrap();
        let key = RecorderImportKey {
            instance: "home",
            recorder: "created 2026-01-01",
            kind: "state",
            since_us: 0,
            until_us: i64::MAX,
        };
        assert_eq!(p.get(&key).unwrap(), (0, 0));
        p.set(&key, 42, 40).unwrap();
        assert_eq!(p.get(&key).unwrap(), (42, 40));
        let other = RecorderImportKey {
            kind: "event",
            ..key.clone()
        };
        assert_eq!(p.get(&other).unwrap(), (0, 0));
        p.forget().unwrap();
        assert_eq!(p.get(&key).unwrap(), (0, 0));
    }

    const DAY_US: i64 = 86_400_000_000;

    #[test]
    fn progress_is_remembered_per_instance() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("p.db");
        let p = ImportProgress::open(&db).unwrap();
        p.finish("home", 0, DAY_US, 5).unwrap();
        assert!(p.done("home", 0, DAY_US));
        assert!(p.done("home", 10, DAY_US - 10));
        assert!(!p.done("home", 0, DAY_US + 1));
        assert!(!p.done("other", 0, DAY_US));
        p.forget().unwrap();
        assert!(!p.done("home", 0, DAY_US));
    }
}
