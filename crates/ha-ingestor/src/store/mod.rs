//! The SQLite file: the default sink, and the durable journal the remote sinks read from.
//!
//! One owner for the file: [`open`] is the only way in (one set of pragmas, one busy timeout, the
//! schema migrated by the first writer), [`schema`] holds all DDL as versioned migrations, and the
//! SQL of each table lives here, by what it serves:
//!
//! - [`sqlite`]: writing records (idempotent batches) and evicting the oldest under a size bound;
//! - [`writer`]: the task that batches and commits them;
//! - [`journal`]: what sinks read, their cursors and dead letters;
//! - [`gaps`]: the gap backfill's records;
//! - [`progress`]: the history import's finished slices, the recorder import's position;
//! - [`statistics`]: HA's statistics (metadata, rows, corrections);
//! - [`registry`]: HA's registries (areas, floors, labels, devices, entities).

pub mod gaps;
pub mod journal;
mod open;
pub mod progress;
pub mod registry;
pub mod schema;
pub(crate) mod sqlite;
pub mod statistics;
mod writer;

pub use open::{Access, BUSY_TIMEOUT, check_writable, on_db, open};
pub use sqlite::{SinkScope, SqliteStore, StoreError, WriteOutcome};
pub(crate) use writer::commit as commit_within_bound;
pub use writer::{CommitHook, WriterConfig, sink_scopes, spawn_writer};
