//! The history import's progress: the slices an import finished, so a second run resumes; one
//! table for states (`import_progress`), one for statistics (`statistics_import_progress`).

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

#[cfg(test)]
mod tests {
    use super::*;

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
