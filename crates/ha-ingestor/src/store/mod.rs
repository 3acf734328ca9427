//! Storage. The SQLite store is the default sink and the durable journal other sinks read from.

mod sqlite;
mod writer;

pub use sqlite::{SCHEMA, SqliteStore, StoreError, WriteOutcome};
pub use writer::{CommitHook, WriterConfig, spawn_writer};
