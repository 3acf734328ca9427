//! The one place that opens the database file. Every connection gets the same pragmas and busy
//! timeout, and a connection that may write first brings the schema up to date ([`super::schema`]),
//! so the writer, the sinks, the gap records and an import can open the file in any order.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// How long a connection waits for another one's write lock before giving up. One value for all:
/// the writer, a sink's cursor, a gap record and an import share one file.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read and write, creating the file when it is missing, with the schema migrated.
    Write,
    /// Read and write an existing file (a missing one is an error), with the schema migrated.
    WriteExisting,
    /// Read only; the file must exist. Never migrates.
    ReadOnly,
}

/// Opens the database at `path`.
pub fn open(path: &Path, access: Access) -> Result<Connection, StoreError> {
    let flags = match access {
        Access::Write => OpenFlags::default(),
        Access::WriteExisting => OpenFlags::default() - OpenFlags::SQLITE_OPEN_CREATE,
        Access::ReadOnly => {
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI
        }
    };
    let failed = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    let mut conn = Connection::open_with_flags(path, flags).map_err(failed)?;
    configure(&mut conn, access != Access::ReadOnly).map_err(|e| match e {
        StoreError::Sqlite(source) => failed(source),
        other => other,
    })?;
    Ok(conn)
}

/// An in-memory database with the schema, for tests and benchmarks.
pub fn in_memory() -> Result<Connection, StoreError> {
    let mut conn = Connection::open_in_memory()?;
    configure(&mut conn, true)?;
    Ok(conn)
}

/// Whether the file can take a write now: the write lock is taken and released at once. Changes
/// nothing, not even the schema (`check` must not alter a file it was pointed at by mistake).
pub fn check_writable(path: &Path) -> Result<(), StoreError> {
    let flags = OpenFlags::default() - OpenFlags::SQLITE_OPEN_CREATE;
    let conn = Connection::open_with_flags(path, flags).map_err(|source| StoreError::Open {
        path: path.display().to_string(),
        source,
    })?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")?;
    Ok(())
}

fn configure(conn: &mut Connection, write: bool) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if write {
        // WAL: readers never block the writer. synchronous=NORMAL: a committed transaction
        // survives a killed process (the WAL is in the OS's cache); only a power loss can take
        // the last ones, which the next start reads back from HA's history.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        super::schema::migrate(conn)?;
    }
    Ok(())
}

/// Short-lived connections at once, across the process (see [`on_db`]).
const SHORT_LIVED_CONNECTIONS: usize = 4;
static SHORT_LIVED: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(SHORT_LIVED_CONNECTIONS);

/// Runs `f` on a connection of its own, opened for this call, off the async threads. At most four
/// run at once: a fleet's instances all start together, and each open connection holds a blocking
/// thread and a page cache (1000 instances reading their registries at once raised the peak RSS by
/// some 140 MiB before this bound).
pub async fn on_db<T: Send + 'static>(
    db: &Path,
    access: Access,
    f: impl FnOnce(&mut Connection) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let _permit = SHORT_LIVED
        .acquire()
        .await
        .map_err(|e| format!("the store's connections are closed: {e}"))?;
    let db = db.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut conn = open(&db, access).map_err(|e| e.to_string())?;
        f(&mut conn)
    })
    .await
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_four_short_lived_connections_at_once() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        super::open(&db, super::Access::Write).unwrap();
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (now, most, db) = (now.clone(), most.clone(), db.clone());
            tasks.push(tokio::spawn(async move {
                super::on_db(&db, super::Access::ReadOnly, move |_| {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    // Hold the connection a moment, so that calls overlap if they may.
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    now.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                })
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 4, "{most:?}");
    }
}
