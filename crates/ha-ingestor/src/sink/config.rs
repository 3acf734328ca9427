//! `[[sink]]` blocks: one per remote destination, each with its own filter and attribute rules.
//!
//! Why two shapes: users write the keys every sink has (`name`, `batch_size`, `filter`,
//! `attributes`, `start`) beside one table that says what the sink is (`[sink.influxdb]` or
//! `[sink.postgres]`). TOML reads that as a struct with two optional tables (`RawSinkConfig`);
//! the program wants exactly one, so [`SinkConfig`] holds the common keys and a [`SinkKind`] that
//! owns the per-kind config, and the conversion between them (at parse time) is where "both tables" and "neither"
//! are refused, naming the sink and the fix. Each kind's own keys live beside its code
//! (`influx::config`, `postgres::config`).

use serde::Deserialize;

use super::JournalRow;
use super::influx::InfluxConfig;
use super::postgres::PostgresConfig;
use crate::filter::{AttributesConfig, FilterConfig};

/// One `[[sink]]`, resolved: the common keys and what the sink is.
#[derive(Clone, Debug)]
pub struct SinkConfig {
    /// A unique name; also the cursor's key, so renaming a sink replays the journal into it.
    pub name: String,
    /// Rows per write (default 5000).
    pub batch_size: usize,
    /// Which entities this sink gets, on top of the global `[filter]` (HA's semantics).
    pub filter: FilterConfig,
    /// Which attributes this sink gets, on top of the global `[attributes]`.
    pub attributes: AttributesConfig,
    /// Where a new sink starts: `all` (default: replay the whole journal) or `new` (only rows
    /// stored from now on).
    pub start: SinkStart,
    /// Which instances feed this sink, by name (default: all of them).
    pub instances: Option<Vec<String>>,
    /// The destination and its own keys.
    pub kind: SinkKind,
}

/// The sink types, each with its `[sink.<type>]` table.
#[derive(Clone, Debug)]
pub enum SinkKind {
    /// `[sink.influxdb]`: InfluxDB 1.x/2.x/3.x, VictoriaMetrics: line protocol over HTTP.
    Influxdb(Box<InfluxConfig>),
    /// `[sink.postgres]`: PostgreSQL or TimescaleDB.
    Postgres(PostgresConfig),
}

/// A `[[sink]]` block as written: every kind's table optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSinkConfig {
    name: String,
    influxdb: Option<InfluxConfig>,
    postgres: Option<PostgresConfig>,
    #[serde(default = "default_batch")]
    batch_size: usize,
    #[serde(default)]
    filter: FilterConfig,
    #[serde(default)]
    attributes: AttributesConfig,
    #[serde(default)]
    start: SinkStart,
    instances: Option<Vec<String>>,
}

impl<'de> Deserialize<'de> for SinkConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawSinkConfig::deserialize(d)?
            .resolve()
            .map_err(serde::de::Error::custom)
    }
}

impl RawSinkConfig {
    /// Exactly one of `[sink.influxdb]` and `[sink.postgres]` must be set.
    fn resolve(self) -> Result<SinkConfig, String> {
        let raw = self;
        let kind = match (raw.influxdb, raw.postgres) {
            (Some(i), None) => SinkKind::Influxdb(Box::new(i)),
            (None, Some(p)) => SinkKind::Postgres(p),
            (None, None) => {
                return Err(format!(
                    "sink '{}': add a [sink.influxdb] or a [sink.postgres] table",
                    raw.name
                ));
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "sink '{}': set only one of [sink.influxdb] and [sink.postgres]; use two [[sink]] blocks for two destinations",
                    raw.name
                ));
            }
        };
        Ok(SinkConfig {
            name: raw.name,
            batch_size: raw.batch_size,
            filter: raw.filter,
            attributes: raw.attributes,
            start: raw.start,
            instances: raw.instances,
            kind,
        })
    }
}

fn default_batch() -> usize {
    5000
}

/// `true`, for serde defaults.
pub(super) fn yes() -> bool {
    true
}

/// Where a new sink's cursor starts.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkStart {
    /// Replay the whole journal.
    #[default]
    All,
    /// Start at the journal's head.
    New,
}

/// Which timestamp a point or row gets (both sinks have the key `time_column`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TimeColumn {
    /// When HA fired the event (HA's integration does this). Rows from history have none and use
    /// `last_updated`.
    #[default]
    TimeFired,
    /// When the state was last updated.
    LastUpdated,
}

impl TimeColumn {
    /// The row's time in microseconds since the epoch.
    pub fn micros(self, row: &JournalRow) -> i64 {
        match self {
            TimeColumn::TimeFired => row.time_fired_or_updated_us(),
            TimeColumn::LastUpdated => row.last_updated_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<SinkConfig, String> {
        toml::from_str(toml_text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_table_decides_the_kind() {
        let c = parse("name = \"i\"\n[influxdb]\nurl = \"http://x\"").unwrap();
        assert!(matches!(&c.kind, SinkKind::Influxdb(i) if i.url == "http://x"));
        assert_eq!((c.batch_size, c.start), (5000, SinkStart::All));
        let c =
            parse("name = \"p\"\nbatch_size = 7\nstart = \"new\"\n[postgres]\ndsn = \"host=x\"")
                .unwrap();
        assert!(matches!(&c.kind, SinkKind::Postgres(p) if p.dsn == "host=x"));
        assert_eq!((c.batch_size, c.start), (7, SinkStart::New));
    }

    #[test]
    fn both_or_neither_table_is_refused_naming_the_sink_and_the_fix() {
        let err = parse("name = \"s\"").unwrap_err();
        assert!(
            err.contains("sink 's': add a [sink.influxdb] or a [sink.postgres] table"),
            "{err}"
        );
        let err =
            parse("name = \"s\"\n[influxdb]\nurl = \"http://x\"\n[postgres]\ndsn = \"host=x\"")
                .unwrap_err();
        assert!(
            err.contains("sink 's': set only one of [sink.influxdb] and [sink.postgres]")
                && err.contains("two [[sink]] blocks"),
            "{err}"
        );
        let err = parse("name = \"s\"\nbatch = 1\n[influxdb]\nurl = \"http://x\"").unwrap_err();
        assert!(err.contains("unknown field `batch`"), "{err}");
    }
}
