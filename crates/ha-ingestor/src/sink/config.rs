//! `[[sink]]` blocks: one per remote destination, each with its own filter and attribute rules.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::filter::{AttributesConfig, FilterConfig};

/// One `[[sink]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// A unique name; also the cursor's key, so renaming a sink replays the journal into it.
    pub name: String,
    /// `[sink.influxdb]`: an InfluxDB or VictoriaMetrics sink.
    pub influxdb: Option<InfluxConfig>,
    /// `[sink.postgres]`: a PostgreSQL sink.
    pub postgres: Option<PostgresConfig>,
    /// Rows per write (default 5000).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Which entities this sink gets, on top of the global `[filter]` (HA's semantics).
    #[serde(default)]
    pub filter: FilterConfig,
    /// Which attributes this sink gets, on top of the global `[attributes]`.
    #[serde(default)]
    pub attributes: AttributesConfig,
    /// Where a new sink starts: `all` (default: replay the whole journal) or `new` (only rows
    /// stored from now on).
    #[serde(default)]
    pub start: SinkStart,
}

fn default_batch() -> usize {
    5000
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

/// The sink types.
#[derive(Clone, Copy, Debug)]
pub enum SinkKind<'a> {
    /// InfluxDB 1.x/2.x/3.x, VictoriaMetrics: line protocol over HTTP.
    Influxdb(&'a InfluxConfig),
    /// PostgreSQL or TimescaleDB.
    Postgres(&'a PostgresConfig),
}

impl SinkConfig {
    /// Which kind this is; exactly one of `[sink.influxdb]` and `[sink.postgres]` must be set.
    pub fn kind(&self) -> Result<SinkKind<'_>, String> {
        match (&self.influxdb, &self.postgres) {
            (Some(i), None) => Ok(SinkKind::Influxdb(i)),
            (None, Some(p)) => Ok(SinkKind::Postgres(p)),
            (None, None) => Err(format!(
                "sink '{}': add a [sink.influxdb] or a [sink.postgres] table",
                self.name
            )),
            (Some(_), Some(_)) => Err(format!(
                "sink '{}': set only one of [sink.influxdb] and [sink.postgres]; use two [[sink]] blocks for two destinations",
                self.name
            )),
        }
    }
}

/// Which InfluxDB write API.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InfluxApi {
    /// `/write?db=&rp=&precision=`, username and password (InfluxDB 1.x, 3.x, VictoriaMetrics).
    #[default]
    V1,
    /// `/api/v2/write?org=&bucket=&precision=`, `Authorization: Token` (InfluxDB 2.x, 3.x,
    /// VictoriaMetrics).
    V2,
}

/// Which points to write.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InfluxSchema {
    /// Exactly the points HA's own `influxdb` integration writes.
    #[default]
    Ha,
    /// Full entity_id tag, typed fields pinned per field, an attribute allowlist, no dots in
    /// measurement names.
    Clean,
}

/// Which timestamp a point gets.
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

/// `type = "influxdb"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    /// `v1` (default) or `v2`.
    #[serde(default)]
    pub api: InfluxApi,
    /// v1: the database (default `home_assistant`, as HA's integration).
    #[serde(default = "default_database")]
    pub database: String,
    /// v1: the retention policy.
    pub retention_policy: Option<String>,
    /// v1: user name.
    pub username: Option<String>,
    /// v1: a file holding the password.
    pub password_file: Option<PathBuf>,
    /// v1: an environment variable holding the password.
    pub password_env: Option<String>,
    /// v2: organisation.
    pub org: Option<String>,
    /// v2: bucket.
    pub bucket: Option<String>,
    /// v2: a file holding the API token.
    pub token_file: Option<PathBuf>,
    /// v2: an environment variable holding the API token.
    pub token_env: Option<String>,
    /// Gzip request bodies (default true).
    #[serde(default = "yes")]
    pub gzip: bool,
    /// A PEM CA file to trust.
    pub ca_file: Option<PathBuf>,
    /// Turn TLS verification off (dangerous).
    #[serde(default)]
    pub danger_accept_invalid_certs: bool,
    /// `ha` (default) or `clean`.
    #[serde(default)]
    pub schema: InfluxSchema,
    /// `time_fired` (default) or `last_updated`.
    #[serde(default)]
    pub time_column: TimeColumn,
    /// `[sink.influxdb.ha]`: HA-compatible options, with HA's names and meaning.
    #[serde(default)]
    pub ha: HaSchemaOptions,
    /// `[sink.influxdb.clean]`: clean-mode options.
    #[serde(default)]
    pub clean: CleanSchemaOptions,
}

fn default_database() -> String {
    "home_assistant".into()
}

fn yes() -> bool {
    true
}

/// The options of HA's `influxdb` integration that shape points, under the same names.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HaSchemaOptions {
    /// `unit_of_measurement` (default), `domain__device_class` or `entity_id`.
    pub measurement_attr: MeasurementAttr,
    /// Measurement when the chosen attribute is missing (default: the full entity_id).
    pub default_measurement: Option<String>,
    /// One measurement for everything.
    pub override_measurement: Option<String>,
    /// Static tags added to every point.
    pub tags: BTreeMap<String, String>,
    /// Attributes written as tags instead of fields.
    pub tags_attributes: Vec<String>,
    /// Attributes never written.
    pub ignore_attributes: Vec<String>,
    /// Per-entity options.
    pub component_config: BTreeMap<String, ComponentConfig>,
    /// Per-domain options.
    pub component_config_domain: BTreeMap<String, ComponentConfig>,
    /// Per-glob options, in file order: later globs win, as in HA.
    #[serde(deserialize_with = "ordered_map")]
    pub component_config_glob: Vec<(String, ComponentConfig)>,
}

/// HA's `measurement_attr`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MeasurementAttr {
    /// The `unit_of_measurement` attribute.
    #[default]
    UnitOfMeasurement,
    /// `<domain>__<device_class>` (HA's spelling, two underscores).
    #[serde(rename = "domain__device_class")]
    DomainDeviceClass,
    /// The full entity_id.
    EntityId,
}

/// One `component_config*` entry.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ComponentConfig {
    /// Measurement for matching entities.
    pub override_measurement: Option<String>,
    /// Extra ignored attributes for matching entities.
    pub ignore_attributes: Vec<String>,
}

/// Clean-mode options.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CleanSchemaOptions {
    /// Measurement name (default `states`); dots are replaced with `_`.
    pub measurement: Option<String>,
    /// Attributes written as fields (none by default: attributes are what makes series explode).
    pub attributes: Vec<String>,
    /// Pin a field's type: `float`, `string`, `bool` or `int`. A value that does not fit the pinned
    /// type is written to `<field>_str` instead, so the field never flips type.
    pub field_types: BTreeMap<String, FieldType>,
}

/// A pinned field type.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// Float.
    Float,
    /// Integer (`i` suffix).
    Int,
    /// Boolean.
    Bool,
    /// String.
    String,
}

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

/// `type = "postgres"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// A libpq-style connection string without the password, e.g.
    /// `host=127.0.0.1 port=5432 user=ha dbname=ha`.
    pub dsn: String,
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
    #[serde(default = "yes")]
    pub timescaledb: bool,
}

/// A table as `(key, value)` pairs in file order (the toml crate keeps it with `preserve_order`),
/// where order carries meaning, as for HA's `component_config_glob`.
fn ordered_map<'de, D, V>(de: D) -> Result<Vec<(String, V)>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Pairs<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Pairs<V> {
        type Value = Vec<(String, V)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a table")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    de.deserialize_map(Pairs(std::marker::PhantomData))
}
