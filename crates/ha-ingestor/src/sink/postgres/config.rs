//! `[sink.postgres]`: the server (a libpq-style dsn, the password kept apart from it) and the
//! table layout.

use std::path::PathBuf;

use serde::Deserialize;

use crate::sink::config::TimeColumn;

/// PostgreSQL table layout.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PostgresSchema {
    /// `ha_entities`, `ha_states` (numeric column, jsonb attributes).
    #[default]
    Normalized,
    /// LTSS's `ltss(time, entity_id, state, attributes jsonb)`, primary key `(time, entity_id)`.
    Ltss,
}

/// `[sink.postgres]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// A libpq-style connection string without the password, e.g.
    /// `host=127.0.0.1 port=5432 user=ha dbname=ha`, or a `postgresql://` URL. `sslmode`
    /// (disable, prefer, require, verify-ca, verify-full) and `sslrootcert` mean what they mean
    /// to libpq (see `tls`).
    pub dsn: String,
    /// A PEM file of the CA that signed the server's certificate (like the dsn's `sslrootcert`).
    pub ca_file: Option<PathBuf>,
    /// A file holding the password.
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
    /// `normalized` (default) or `ltss`.
    #[serde(default)]
    pub schema: PostgresSchema,
    /// `time_fired` (default) or `last_updated` as the time column.
    #[serde(default)]
    pub time_column: TimeColumn,
    /// Create TimescaleDB hypertables when the extension is available (default true).
    #[serde(default = "crate::sink::config::yes")]
    pub timescaledb: bool,
    /// Normalized layout: HA's registry metadata kept current in these columns of `ha_entities`
    /// (and so of `ha_states_view`): `name`, `area`, `floor`, `device`, `labels` (default none).
    #[serde(default)]
    pub metadata_columns: Vec<crate::sink::influx::MetadataTag>,
}
