//! The ingestor service: Home Assistant state changes into durable storage.
//!
//! Layout (Vector-style): [`source`] (HA WebSocket, one per instance) → [`filter`] (HA's
//! include/exclude semantics, attribute rules; [`glob`] reads HA's globs) → [`store`] (SQLite;
//! also the journal that the remote [`sink`]s replicate from). [`health`] serves `/metrics` and
//! `/health`; [`run`] wires it together. [`tools`] holds the setup commands (`login`, `token`,
//! `sign-path`, `check`).

pub mod backfill;
pub mod config;
pub mod demo;
pub mod filter;
pub mod glob;
pub mod health;
pub mod import;
pub mod record;
pub mod run;
pub mod sink;
pub mod source;
pub mod store;
pub mod tools;
