//! The ingestor service: Home Assistant state changes into durable storage.
//!
//! Layout (Vector-style): [`source`] (HA's WebSocket, one per instance; [`credentials`] for its
//! tokens and TLS) → [`filter`] (HA's include/exclude semantics, attribute rules; [`glob`] reads
//! HA's globs) → [`store`] (the SQLite file: the default sink, and the journal the remote
//! [`sink`]s read from). [`history`] reads HA's recorder back (gap fill, history import); [`recorder`] imports HA's
//! recorder database file directly.
//! [`health`] serves `/metrics` and `/health`; [`run`] wires it together; [`tools`] holds the setup
//! commands (`login`, `token`, `sign-path`, `check`); [`demo`] runs all of it against the simulator; [`systemd`] tells a service manager when it is ready.

pub mod addon;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod filter;
pub mod fleet;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod glob;
pub mod health;
pub mod history;
pub mod instances;
pub mod record;
pub mod recorder;
pub mod registry;
pub mod run;
pub mod sink;
pub mod source;
pub mod store;
#[cfg(unix)]
pub mod systemd;
pub mod tools;
