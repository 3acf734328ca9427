//! `ha-ingestor import-recorder`: HA's own recorder database (`home-assistant_v2.db`) into the
//! store, without HA's API.
//!
//! [`read`] opens HA's file read-only and reads its rows into plain structs; [`context`] turns
//! the context bins back into the ids live events carry; [`import`] converts rows into the
//! records live ingestion writes (same keys, same values) and writes them through the store,
//! resumably; [`statistics`] reads the statistics tables (not yet written to the store).

pub mod context;
pub mod import;
pub mod read;
pub mod statistics;

use std::path::PathBuf;

/// Why a recorder database cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    /// No such file.
    #[error(
        "the recorder database {path} does not exist: HA keeps it as home-assistant_v2.db in its \
         configuration folder (/config on HA OS and in containers); give that file's path"
    )]
    Missing {
        /// The path given.
        path: PathBuf,
    },
    /// A MariaDB, MySQL or PostgreSQL recorder.
    #[error(
        "--recorder-db is a {scheme}:// URL: only HA's default SQLite recorder database \
         (home-assistant_v2.db) can be imported. For a MariaDB/MySQL or PostgreSQL recorder, \
         import HA's history over its API instead: `ha-ingestor backfill --since 10d`"
    )]
    ServerUrl {
        /// The URL's scheme (never the rest: it may hold a password).
        scheme: String,
    },
    /// SQLite could not open it.
    #[error("cannot open the recorder database {path} read-only: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// Not HA's recorder database.
    #[error(
        "{path} is not a Home Assistant recorder database ({why}); give the path of \
         home-assistant_v2.db in HA's configuration folder"
    )]
    NotRecorder {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        why: String,
    },
    /// A schema version this build does not read.
    #[error(
        "{path} has recorder schema version {found}; this ha-ingestor reads versions {supported}. \
         {advice}",
        supported = read::SUPPORTED,
        advice = if *found < read::OLDEST_SCHEMA {
            "Start a newer Home Assistant on it once (it migrates the database), or use `backfill --since`"
        } else {
            "It was written by a newer Home Assistant: use a newer ha-ingestor, or `backfill --since`"
        }
    )]
    UnsupportedSchema {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
    },
    /// HA's background migration of old rows has not finished.
    #[error(
        "{path} still has rows in an older layout (HA's background migration of entity ids or \
         timestamps has not finished): let Home Assistant run on it until the migration is done, \
         then import again"
    )]
    Unmigrated {
        /// The file.
        path: PathBuf,
    },
    /// Reading failed.
    #[error("reading the recorder database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}
