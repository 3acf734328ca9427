//! `[sink.influxdb]`: where to write (URL, API, credentials, TLS) and which points (the schema and
//! its options). The options of the HA-compatible schema keep the names of HA's own `influxdb`
//! integration, so a user can copy them over.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::sink::config::TimeColumn;

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

/// `[sink.influxdb]`.
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
    #[serde(default = "crate::sink::config::yes")]
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
    /// HA-compatible schema: tag every point with `instance` (default: when more than one
    /// instance feeds the sink; resolved with the rest of the configuration). The clean schema
    /// always has the tag.
    pub instance_tag: Option<bool>,
    /// HA's registry metadata written as tags of each state point: `name`, `area`, `floor`,
    /// `device`, `labels` (default none, so the HA-compatible points stay exactly HA's unless the
    /// user asks).
    #[serde(default)]
    pub metadata_tags: Vec<MetadataTag>,
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

/// A registry field a sink can write with each state (`metadata_tags`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MetadataTag {
    /// The entity's name (the user's, else the integration's).
    Name,
    /// The area's name (the entity's own area, else its device's).
    Area,
    /// The area's floor's name.
    Floor,
    /// The device's name.
    Device,
    /// The labels' names, comma-separated, in HA's order.
    Labels,
}

impl MetadataTag {
    /// The tag's key.
    pub fn key(self) -> &'static str {
        match self {
            MetadataTag::Name => "name",
            MetadataTag::Area => "area",
            MetadataTag::Floor => "floor",
            MetadataTag::Device => "device",
            MetadataTag::Labels => "labels",
        }
    }
}

/// Clean-mode options.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CleanSchemaOptions {
    /// Measurement name (default `states`); dots are replaced with `_`.
    pub measurement: Option<String>,
    /// Measurement of events, with `subscribe = "all"` (default `events`); dots are replaced.
    pub events_measurement: Option<String>,
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
