//! Configuration: a TOML file, overridden by environment variables, overridden by flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::filter::{AttributeRules, AttributesConfig, EntityFilter, FilterConfig};

/// A configuration problem, naming the key and the fix.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// The config file. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// SQLite file (default `ha-ingestor.db`).
    pub db: Option<PathBuf>,
    /// Metrics and health endpoint (default `127.0.0.1:9464`).
    pub metrics_addr: Option<SocketAddr>,
    /// `text` (default) or `json`.
    pub log_format: Option<LogFormat>,
    /// HA instances.
    #[serde(default, rename = "instance")]
    pub instances: Vec<InstanceConfig>,
    /// Which entities to keep.
    #[serde(default)]
    pub filter: FilterConfig,
    /// Which attributes to keep.
    #[serde(default)]
    pub attributes: AttributesConfig,
    /// Store settings.
    #[serde(default)]
    pub store: StoreConfig,
    /// Fill gaps from HA's history after every (re)connect (default true).
    pub backfill: Option<bool>,
    /// Mirror HA's statistics (5-minute and hourly) of every instance (default true); an
    /// instance's own `statistics` overrides it.
    pub statistics: Option<bool>,
    /// Keep HA's registries (areas, floors, labels, devices, entities) of every instance in the
    /// store (default true); an instance's own `registry` overrides it.
    pub registry: Option<bool>,
    /// Whether an instance that fails for good (token refused) stops the process (default: with
    /// one instance yes, exit 3; with several no, the others go on).
    pub exit_on_instance_failure: Option<bool>,
    /// When `/health` says ready: `all` instances connected, or `any` (default: `all` with one
    /// instance, `any` with several).
    pub ready_when: Option<ReadyWhen>,
    /// Remote sinks, fed from the SQLite journal.
    #[serde(default, rename = "sink")]
    pub sinks: Vec<crate::sink::SinkConfig>,
    /// Several ingestor processes sharing these instances through PostgreSQL (see
    /// [`crate::fleet`]).
    pub fleet: Option<FleetConfig>,
}

/// `[fleet]`: the instances are shared by every process run with this configuration; each
/// instance is served by one of them at a time, the owner of its PostgreSQL advisory lock.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// The `[[sink]]` (PostgreSQL, normalized schema, fed by every instance) whose server holds
    /// the locks and the fleet's table: the database the fleet writes to anyway, with its dsn,
    /// password and TLS settings.
    pub sink: String,
    /// Separates fleets that share one database (default `default`).
    #[serde(default = "default_fleet_name")]
    pub name: String,
}

fn default_fleet_name() -> String {
    "default".into()
}

/// See [`FileConfig::ready_when`].
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReadyWhen {
    /// Every instance connected.
    All,
    /// At least one instance connected.
    Any,
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// What to subscribe to.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Subscribe {
    /// `state_changed` only (works for non-admin users).
    #[default]
    StateChanged,
    /// Every event (needs an admin user); non-state events go to the `events` table.
    All,
}

/// One `[[instance]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// Name stored with every row (default `default`).
    #[serde(default = "default_name")]
    pub name: String,
    /// HA's URL, e.g. `http://homeassistant.local:8123`.
    pub url: Option<String>,
    /// A file holding a long-lived access token.
    pub token_file: Option<PathBuf>,
    /// An environment variable holding a long-lived token (default `HASS_TOKEN`).
    pub token_env: Option<String>,
    /// A JSON file with OAuth2 tokens, kept up to date by the ingestor on every refresh.
    pub oauth_state_file: Option<PathBuf>,
    /// `state_changed` (default) or `all`.
    #[serde(default)]
    pub subscribe: Subscribe,
    /// A PEM CA file to trust (self-signed HA).
    pub ca_file: Option<PathBuf>,
    /// Turn TLS verification off (dangerous).
    #[serde(default)]
    pub danger_accept_invalid_certs: bool,
    /// Bytes of events the client buffers when the ingestor falls behind (default 16 MiB); what
    /// does not fit is dropped, recorded as a gap and read back from HA's history.
    pub event_buffer_bytes: Option<usize>,
    /// `[instance.filter]`: this instance's own entity filter, on top of the global `[filter]`
    /// (an entity is kept only when both keep it).
    pub filter: Option<FilterConfig>,
    /// `[instance.attributes]`: this instance's own attribute rules, on top of the global
    /// `[attributes]` (an attribute is kept only when both keep it).
    pub attributes: Option<AttributesConfig>,
    /// A token handed over in memory (the demo, tests, `SUPERVISOR_TOKEN`); never read from the
    /// file.
    #[serde(skip)]
    pub token: Option<ha_client::Secret>,
    /// Reached through the Supervisor's Core proxy (add-on mode; see [`Overrides::supervisor`]).
    #[serde(skip)]
    pub supervisor: bool,
    /// Mirror this instance's statistics (default: the top-level `statistics`, itself true).
    #[serde(default)]
    pub statistics: Option<bool>,
    /// Keep this instance's registries (default: the top-level `registry`, itself true).
    #[serde(default)]
    pub registry: Option<bool>,
}

impl InstanceConfig {
    /// Whether this instance's statistics are mirrored.
    pub fn mirrors_statistics(&self) -> bool {
        self.statistics.unwrap_or(true)
    }

    /// Whether this instance's registries are kept in the store.
    pub fn keeps_registry(&self) -> bool {
        self.registry.unwrap_or(true)
    }
}

fn default_name() -> String {
    "default".into()
}

impl InstanceConfig {
    fn named(name: &str) -> Self {
        InstanceConfig {
            name: name.into(),
            url: None,
            token_file: None,
            token_env: None,
            oauth_state_file: None,
            subscribe: Subscribe::default(),
            ca_file: None,
            danger_accept_invalid_certs: false,
            event_buffer_bytes: None,
            filter: None,
            attributes: None,
            token: None,
            supervisor: false,
            statistics: None,
            registry: None,
        }
    }

    /// Whether `other` would run exactly like this one (a reload restarts an instance only when it
    /// changed). Tokens are compared by value; a token *file* whose content changed is picked up
    /// by the failed-instance restart, not here.
    pub fn same_as(&self, other: &InstanceConfig) -> bool {
        let token = |i: &InstanceConfig| i.token.as_ref().map(|t| t.expose().to_string());
        self.name == other.name
            && self.url == other.url
            && self.token_file == other.token_file
            && self.token_env == other.token_env
            && self.oauth_state_file == other.oauth_state_file
            && self.subscribe == other.subscribe
            && self.ca_file == other.ca_file
            && self.danger_accept_invalid_certs == other.danger_accept_invalid_certs
            && self.event_buffer_bytes == other.event_buffer_bytes
            && self.filter == other.filter
            && self.attributes == other.attributes
            && self.statistics == other.statistics
            && self.registry == other.registry
            && token(self) == token(other)
            && self.supervisor == other.supervisor
    }

    /// An instance with a URL and an in-memory token.
    pub fn with_token(name: &str, url: &str, token: ha_client::Secret) -> Self {
        InstanceConfig {
            url: Some(url.to_string()),
            token: Some(token),
            ..InstanceConfig::named(name)
        }
    }
}

/// `[store]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Commit after this many records (default 1000).
    pub batch_size: usize,
    /// Commit at the latest this many milliseconds after the first waiting record (default 200).
    pub flush_interval_ms: u64,
    /// Commit at most this often, in milliseconds (default 10). Rows are committed as soon as
    /// none are waiting; this groups the commits of a busy stream.
    pub min_commit_interval_ms: u64,
    /// Records buffered between the sources and the writer (default 10000). When it is full the
    /// sources wait, and the WebSocket client's own per-subscription buffer takes the slack.
    pub queue_capacity: usize,
    /// Upper bound on the data in the database, in bytes (default: none). When it is reached, the
    /// `on_full` policy applies and `ha_ingestor_journal_full_total` counts it.
    pub max_db_bytes: Option<u64>,
    /// What to do at `max_db_bytes`: `drop_oldest` (default) or `drop_newest`.
    pub on_full: FullPolicy,
    /// Skip a state that repeats the entity's last stored one in state, attributes and
    /// `last_changed` (only `last_updated` differs: HA re-announced it). Default true.
    pub skip_unchanged: bool,
}

/// What the store does when `max_db_bytes` is reached.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Delete the oldest state rows (counted in `ha_ingestor_rows_evicted_total`) to make room.
    #[default]
    DropOldest,
    /// Keep what is stored and drop new rows (counted as dropped, reason `journal_full`) until
    /// there is room again.
    DropNewest,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            batch_size: 1000,
            flush_interval_ms: 200,
            min_commit_interval_ms: 10,
            queue_capacity: 10_000,
            max_db_bytes: None,
            on_full: FullPolicy::default(),
            skip_unchanged: true,
        }
    }
}

impl StoreConfig {
    /// The flush interval.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    /// The minimum time between commits.
    pub fn min_commit_interval(&self) -> Duration {
        Duration::from_millis(self.min_commit_interval_ms.min(self.flush_interval_ms))
    }
}

/// Values from the environment and the command line that override the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--db` / `HA_INGESTOR_DB`.
    pub db: Option<PathBuf>,
    /// `--metrics-addr` / `HA_INGESTOR_METRICS_ADDR`.
    pub metrics_addr: Option<SocketAddr>,
    /// `--server` / `HASS_SERVER`.
    pub server: Option<String>,
    /// `--token-file` / `HASS_TOKEN_FILE`.
    pub token_file: Option<PathBuf>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// Add-on mode: `SUPERVISOR_TOKEN` is set. An instance without a URL then reaches HA through
    /// the Supervisor's Core proxy with that token.
    pub supervisor: Option<SupervisorAccess>,
}

/// The Supervisor's Core proxy, as an add-on reaches it.
#[derive(Clone, Debug)]
pub struct SupervisorAccess {
    /// `SUPERVISOR_TOKEN`.
    pub token: ha_client::Secret,
    /// `HA_INGESTOR_SUPERVISOR_URL`, default [`SUPERVISOR_CORE_URL`] (tests point it elsewhere).
    pub url: Option<String>,
}

/// Where an add-on reaches Home Assistant Core.
pub const SUPERVISOR_CORE_URL: &str = "http://supervisor/core";

impl SupervisorAccess {
    /// From `SUPERVISOR_TOKEN` and `HA_INGESTOR_SUPERVISOR_URL`; `None` outside an add-on.
    pub fn from_env() -> Option<Self> {
        let token = std::env::var("SUPERVISOR_TOKEN").ok()?;
        if token.trim().is_empty() {
            return None;
        }
        Some(SupervisorAccess {
            token: ha_client::Secret::new(token.trim()),
            url: std::env::var("HA_INGESTOR_SUPERVISOR_URL")
                .ok()
                .filter(|u| !u.trim().is_empty()),
        })
    }
}

/// The resolved configuration.
#[derive(Debug)]
pub struct Config {
    /// SQLite file.
    pub db: PathBuf,
    /// Metrics and health endpoint.
    pub metrics_addr: SocketAddr,
    /// Log format.
    pub log_format: LogFormat,
    /// Instances (at least one).
    pub instances: Vec<InstanceConfig>,
    /// Entity filter.
    pub filter: FilterConfig,
    /// Attribute rules.
    pub attributes: AttributesConfig,
    /// Store settings.
    pub store: StoreConfig,
    /// Gap backfill on (re)connect.
    pub backfill: bool,
    /// See [`FileConfig::exit_on_instance_failure`] (resolved).
    pub exit_on_instance_failure: bool,
    /// See [`FileConfig::ready_when`] (resolved).
    pub ready_when: ReadyWhen,
    /// Gap backfill settings; not in the file (the defaults suit HA's recorder), but a program that
    /// embeds the service, or a test, may change them.
    pub backfill_settings: crate::history::gap_fill::BackfillConfig,
    /// Remote sinks.
    pub sinks: Vec<crate::sink::SinkConfig>,
    /// `[fleet]`, checked: its sink is a PostgreSQL sink of the normalized schema that every
    /// instance feeds.
    pub fleet: Option<FleetConfig>,
}

/// Checks a sink's `instances` against the configured ones and settles what depends on how many
/// feed it: the HA-compatible InfluxDB output's `instance` tag (on with several, so two homes'
/// `sensor.power` stay apart; off with one, so the output stays exactly HA's), and LTSS, whose
/// table has no instance column (one home per LTSS sink).
fn sink_instances(
    key: &str,
    sink: &mut crate::sink::SinkConfig,
    instances: &[InstanceConfig],
) -> Result<(), ConfigError> {
    let names: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
    let feeding = match &sink.instances {
        None => names.len(),
        Some(list) if list.is_empty() => {
            return Err(ConfigError(format!(
                "{key}.instances is empty: list the instances that feed this sink, or remove the key for all of them"
            )));
        }
        Some(list) => {
            if let Some(unknown) = list.iter().find(|n| !names.contains(&n.as_str())) {
                return Err(ConfigError(format!(
                    "{key}.instances: no instance is named '{unknown}' (the instances are: {})",
                    names.join(", ")
                )));
            }
            list.iter().collect::<std::collections::HashSet<_>>().len()
        }
    };
    match &mut sink.kind {
        crate::sink::SinkKind::Influxdb(c) => {
            let tag = *c.instance_tag.get_or_insert(feeding > 1);
            if tag
                && c.schema == crate::sink::influx::InfluxSchema::Ha
                && (c.ha.tags.contains_key("instance")
                    || c.ha.tags_attributes.iter().any(|a| a == "instance"))
            {
                return Err(ConfigError(format!(
                    "{key}: [sink.influxdb.ha] sets an `instance` tag (in tags or tags_attributes), \
                     which would clash with the tag naming each point's instance ({feeding} \
                     instances feed this sink); remove it, or set instance_tag = false"
                )));
            }
        }
        crate::sink::SinkKind::Postgres(c)
            if c.schema == crate::sink::postgres::PostgresSchema::Ltss && feeding > 1 =>
        {
            return Err(ConfigError(format!(
                "{key}: the LTSS table has no instance column, so {feeding} instances would \
                 overwrite each other's entities; give each instance an LTSS sink of its own \
                 (instances = [\"name\"], each to its own database), or use schema = \"normalized\", \
                 which has an instance column"
            )));
        }
        crate::sink::SinkKind::Postgres(_) => {}
    }
    Ok(())
}

/// The rules one instance applies: the global `[filter]` and `[attributes]`, then its own.
pub fn instance_rules(
    filter: &FilterConfig,
    attributes: &AttributesConfig,
    inst: &InstanceConfig,
) -> Result<(EntityFilter, AttributeRules), ConfigError> {
    let global = EntityFilter::new(filter).map_err(|e| ConfigError(format!("filter: {e}")))?;
    let filter = match &inst.filter {
        Some(own) => global.and(
            EntityFilter::new(own)
                .map_err(|e| ConfigError(format!("instance '{}'.filter: {e}", inst.name)))?,
        ),
        None => global,
    };
    if let Some(own) = &inst.attributes {
        // Checked alone first, so that an error names the table it is in.
        AttributeRules::new(own)
            .map_err(|e| ConfigError(format!("instance '{}'.attributes: {e}", inst.name)))?;
    }
    let attributes = AttributeRules::layered(attributes, inst.attributes.as_ref())
        .map_err(|e| ConfigError(format!("attributes: {e}")))?;
    Ok((filter, attributes))
}

impl Config {
    /// The entity filter and attribute rules of one instance (see [`instance_rules`]).
    pub fn rules_for(
        &self,
        inst: &InstanceConfig,
    ) -> Result<(EntityFilter, AttributeRules), ConfigError> {
        instance_rules(&self.filter, &self.attributes, inst)
    }

    /// The instances whose rows `sink` receives: its `instances`, or every instance of this
    /// configuration (how many feed a sink decided its schema at start: the HA-compatible
    /// instance tag, LTSS's one instance, so an instance a reload adds reaches it after a restart).
    pub fn sink_instances(&self, sink: &crate::sink::SinkConfig) -> Vec<String> {
        sink.instances
            .clone()
            .unwrap_or_else(|| self.instances.iter().map(|i| i.name.clone()).collect())
    }

    /// Where `/metrics` and `/health` listen unless `metrics_addr` says otherwise.
    pub const DEFAULT_METRICS_ADDR: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);

    /// The `metrics_addr` of a config file, or the default: for a client of the running service
    /// (`ha-ingestor health`), which needs none of the rest.
    pub fn metrics_addr_of_file(path: &Path) -> Result<SocketAddr, ConfigError> {
        Ok(read_file(path)?
            .metrics_addr
            .unwrap_or(Config::DEFAULT_METRICS_ADDR))
    }

    /// Reads the file (if any) and applies the overrides.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
        let parsed = match file {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Config::resolve(parsed, overrides)
    }

    /// As [`Config::load`], for a command that never contacts Home Assistant (`import-recorder`
    /// reads HA's database file): an instance needs no url.
    pub fn load_offline(file: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
        let parsed = match file {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Config::resolve_for(parsed, overrides, false)
    }

    /// Applies the overrides to a parsed file and validates.
    pub fn resolve(file: FileConfig, o: Overrides) -> Result<Config, ConfigError> {
        Config::resolve_for(file, o, true)
    }

    fn resolve_for(file: FileConfig, o: Overrides, online: bool) -> Result<Config, ConfigError> {
        let mut instances = file.instances;
        if instances.is_empty() {
            instances.push(InstanceConfig::named("default"));
        }
        if o.server.is_some() || o.token_file.is_some() {
            if instances.len() > 1 {
                return Err(ConfigError(
                    "HASS_SERVER/--server and HASS_TOKEN_FILE/--token-file apply to a single instance, \
                     but the config file has several [[instance]] entries; set url and token_file in each"
                        .into(),
                ));
            }
            if let Some(url) = o.server {
                instances[0].url = Some(url);
            }
            if let Some(file) = o.token_file {
                instances[0].token_file = Some(file);
            }
        }
        if let Some(sup) = &o.supervisor {
            for inst in instances.iter_mut().filter(|i| i.url.is_none()) {
                if inst.token_file.is_some()
                    || inst.token_env.is_some()
                    || inst.oauth_state_file.is_some()
                {
                    return Err(ConfigError(format!(
                        "instance '{}' has no url, so it reaches Home Assistant through the \
                         Supervisor with SUPERVISOR_TOKEN, which takes no other token; remove \
                         token_file/token_env/oauth_state_file, or set url to reach HA directly",
                        inst.name
                    )));
                }
                inst.url = Some(
                    sup.url
                        .clone()
                        .unwrap_or_else(|| SUPERVISOR_CORE_URL.into()),
                );
                inst.token = Some(sup.token.clone());
                inst.supervisor = true;
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, inst) in instances.iter().enumerate() {
            let key = format!("instance[{i}] ('{}')", inst.name);
            if inst.name.trim().is_empty() {
                return Err(ConfigError(format!("{key}: name must not be empty")));
            }
            if !names.insert(inst.name.clone()) {
                return Err(ConfigError(format!(
                    "{key}: the name is used twice; names must be unique"
                )));
            }
            match inst.url.as_deref() {
                Some(url) => {
                    ha_client::HaUrl::parse(url)
                        .map_err(|e| ConfigError(format!("{key}.url: {e}")))?;
                }
                None if online => {
                    return Err(ConfigError(format!(
                        "{key}: no url; set HASS_SERVER, --server, or url in the [[instance]] table"
                    )));
                }
                None => {}
            }
            let sources = [
                inst.token_file.is_some(),
                inst.token_env.is_some(),
                inst.oauth_state_file.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() > 1 {
                return Err(ConfigError(format!(
                    "{key}: set only one of token_file, token_env and oauth_state_file"
                )));
            }
            instance_rules(&file.filter, &file.attributes, inst)?;
        }
        let statistics = file.statistics.unwrap_or(true);
        for inst in &mut instances {
            inst.statistics.get_or_insert(statistics);
        }
        let registry = file.registry.unwrap_or(true);
        for inst in &mut instances {
            inst.registry.get_or_insert(registry);
        }
        let mut sink_names = std::collections::HashSet::new();
        let mut sinks = file.sinks;
        for (i, sink) in sinks.iter_mut().enumerate() {
            let key = format!("sink[{i}] ('{}')", sink.name);
            sink_instances(&key, sink, &instances)?;
            if sink.name.trim().is_empty() || sink.name == "sqlite" {
                return Err(ConfigError(format!(
                    "{key}: give the sink a name (not empty, not 'sqlite')"
                )));
            }
            if !sink_names.insert(sink.name.clone()) {
                return Err(ConfigError(format!(
                    "{key}: the name is used twice; names must be unique (each sink keeps its own cursor under its name)"
                )));
            }
            if sink.batch_size == 0 {
                return Err(ConfigError(format!("{key}: batch_size must be at least 1")));
            }
            crate::filter::EntityFilter::new(&sink.filter)
                .map_err(|e| ConfigError(format!("{key}.filter: {e}")))?;
            crate::filter::AttributeRules::new(&sink.attributes)
                .map_err(|e| ConfigError(format!("{key}.attributes: {e}")))?;
        }
        if file.store.batch_size == 0 || file.store.queue_capacity == 0 {
            return Err(ConfigError(
                "store.batch_size and store.queue_capacity must be at least 1".into(),
            ));
        }
        if let Some(fleet) = &file.fleet {
            check_fleet(fleet, &sinks, file.backfill.unwrap_or(true))?;
        }
        let several = instances.len() > 1;
        Ok(Config {
            db: o
                .db
                .or(file.db)
                .unwrap_or_else(|| PathBuf::from("ha-ingestor.db")),
            metrics_addr: o
                .metrics_addr
                .or(file.metrics_addr)
                .unwrap_or(Config::DEFAULT_METRICS_ADDR),
            log_format: o.log_format.or(file.log_format).unwrap_or_default(),
            instances,
            filter: file.filter,
            attributes: file.attributes,
            store: file.store,
            backfill: file.backfill.unwrap_or(true),
            exit_on_instance_failure: file.exit_on_instance_failure.unwrap_or(!several),
            ready_when: file.ready_when.unwrap_or(match several {
                false => ReadyWhen::All,
                true => ReadyWhen::Any,
            }),
            backfill_settings: crate::history::gap_fill::BackfillConfig::default(),
            sinks,
            fleet: file.fleet,
        })
    }
}

/// A fleet needs a PostgreSQL sink of the normalized schema that every instance feeds (a new
/// owner fills an instance's gap from what that database lacks), and the gap backfill.
fn check_fleet(
    fleet: &FleetConfig,
    sinks: &[crate::sink::SinkConfig],
    backfill: bool,
) -> Result<(), ConfigError> {
    if fleet.name.trim().is_empty() {
        return Err(ConfigError(
            "fleet.name must not be empty (remove it for \"default\")".into(),
        ));
    }
    let Some(sink) = sinks.iter().find(|s| s.name == fleet.sink) else {
        let pg: Vec<&str> = sinks
            .iter()
            .filter(|s| matches!(s.kind, crate::sink::SinkKind::Postgres(_)))
            .map(|s| s.name.as_str())
            .collect();
        return Err(ConfigError(format!(
            "fleet.sink: no [[sink]] is named '{}'; name the PostgreSQL sink the fleet writes to{}",
            fleet.sink,
            match pg.is_empty() {
                true => " (there is none: add a [[sink]] with type = \"postgres\")".to_string(),
                false => format!(" (the PostgreSQL sinks: {})", pg.join(", ")),
            }
        )));
    };
    match &sink.kind {
        crate::sink::SinkKind::Postgres(c)
            if c.schema == crate::sink::postgres::PostgresSchema::Normalized => {}
        crate::sink::SinkKind::Postgres(_) => {
            return Err(ConfigError(format!(
                "fleet.sink '{}': the fleet needs schema = \"normalized\" (the LTSS table holds one instance)",
                fleet.sink
            )));
        }
        _ => {
            return Err(ConfigError(format!(
                "fleet.sink '{}' is not a PostgreSQL sink; the fleet's locks live in PostgreSQL",
                fleet.sink
            )));
        }
    }
    if sink.instances.is_some() {
        return Err(ConfigError(format!(
            "fleet.sink '{}' sets instances; every instance of the fleet must feed it, so remove the key",
            fleet.sink
        )));
    }
    if !backfill {
        return Err(ConfigError(
            "[fleet] needs backfill = true: the process that takes an instance over fills the \
             gap since the last row that reached PostgreSQL from HA's history"
                .into(),
        ));
    }
    Ok(())
}

/// Reads and parses a config file; errors name the file.
fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "cannot read the config file {}: {e}",
            path.display()
        ))
    })?;
    parse(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
}

/// Parses a config file's text.
pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
    // The line and column, not the line's text: it may hold a secret (a dsn with a password).
    toml::from_str(text).map_err(|e| {
        let at = e.span().map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: ")
        });
        ConfigError(format!("{}{}", at.unwrap_or_default(), e.message().trim()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two instances and the given `[[sink]]` tables.
    fn two_homes(sinks: &str) -> Result<Config, ConfigError> {
        let text = format!(
            r#"
            [[instance]]
            name = "north"
            url = "http://north:8123"
            [[instance]]
            name = "south"
            url = "http://south:8123"
            {sinks}
            "#
        );
        Config::resolve(parse(&text)?, Overrides::default())
    }

    fn instance_tag(c: &Config, sink: usize) -> Option<bool> {
        match &c.sinks[sink].kind {
            crate::sink::SinkKind::Influxdb(i) => i.instance_tag,
            crate::sink::SinkKind::Postgres(_) => None,
        }
    }

    #[test]
    fn a_fleet_needs_a_normalized_postgres_sink_every_instance_feeds() {
        // Top-level keys, [fleet], then the sinks' extra keys and the pg sink's schema.
        let load = |top: &str, fleet: &str, sink_extra: &str, schema: &str| {
            let text = format!(
                r#"
                {top}
                [fleet]
                {fleet}
                [[instance]]
                name = "north"
                url = "http://north:8123"
                [[sink]]
                name = "pg"
                {sink_extra}
                [sink.postgres]
                dsn = "host=db"
                {schema}
                [[sink]]
                name = "influx"
                [sink.influxdb]
                url = "http://influx:8086"
                "#
            );
            Config::resolve(parse(&text)?, Overrides::default())
        };
        let c = load("", r#"sink = "pg""#, "", "").unwrap();
        assert_eq!(
            c.fleet,
            Some(FleetConfig {
                sink: "pg".into(),
                name: "default".into()
            })
        );
        let err = |top, fleet, extra, schema| load(top, fleet, extra, schema).unwrap_err().0;
        let e = err("", r#"sink = "nope""#, "", "");
        assert!(
            e.contains("no [[sink]] is named 'nope'") && e.contains("(the PostgreSQL sinks: pg)"),
            "{e}"
        );
        let e = err("", r#"sink = "influx""#, "", "");
        assert!(e.contains("not a PostgreSQL sink"), "{e}");
        let e = err("", r#"sink = "pg""#, r#"instances = ["north"]"#, "");
        assert!(
            e.contains("every instance of the fleet must feed it"),
            "{e}"
        );
        let e = err("backfill = false", r#"sink = "pg""#, "", "");
        assert!(e.contains("needs backfill = true"), "{e}");
        let e = err("", "sink = \"pg\"\nname = \" \"", "", "");
        assert!(e.contains("fleet.name must not be empty"), "{e}");
        let e = err("", r#"sink = "pg""#, "", r#"schema = "ltss""#);
        assert!(e.contains("needs schema = \"normalized\""), "{e}");
        let e = err("", "", "", "");
        assert!(e.contains("sink"), "a [fleet] without sink: {e}");
    }

    #[test]
    fn the_instance_dimension_follows_how_many_instances_feed_a_sink() {
        let c = two_homes(
            r#"
            [[sink]]
            name = "both"
            [sink.influxdb]
            url = "http://influx:8086"
            [[sink]]
            name = "north_only"
            instances = ["north"]
            [sink.influxdb]
            url = "http://influx:8086"
            [[sink]]
            name = "forced"
            instances = ["north"]
            [sink.influxdb]
            url = "http://influx:8086"
            instance_tag = true
            [[sink]]
            name = "ltss_north"
            instances = ["north"]
            [sink.postgres]
            dsn = "host=pg"
            schema = "ltss"
            "#,
        )
        .unwrap();
        let tags: Vec<Option<bool>> = (0..3).map(|i| instance_tag(&c, i)).collect();
        assert_eq!(tags, [Some(true), Some(false), Some(true)]);
        assert_eq!(
            c.sinks[1].instances.as_deref(),
            Some(&["north".to_string()][..])
        );

        let e = two_homes(
            "[[sink]]\nname = \"l\"\n[sink.postgres]\ndsn = \"host=pg\"\nschema = \"ltss\"",
        )
        .unwrap_err();
        assert!(
            e.0.contains("LTSS") && e.0.contains("instances = [\"name\"]"),
            "{e}"
        );
        let e = two_homes(
            "[[sink]]\nname = \"x\"\ninstances = [\"west\"]\n[sink.influxdb]\nurl = \"http://i:8086\"",
        )
        .unwrap_err();
        assert!(
            e.0.contains("no instance is named 'west'") && e.0.contains("north, south"),
            "{e}"
        );
        let e = two_homes(
            "[[sink]]\nname = \"x\"\ninstances = []\n[sink.influxdb]\nurl = \"http://i:8086\"",
        )
        .unwrap_err();
        assert!(e.0.contains("instances is empty"), "{e}");
        let e = two_homes(
            "[[sink]]\nname = \"x\"\n[sink.influxdb]\nurl = \"http://i:8086\"\n[sink.influxdb.ha.tags]\ninstance = \"mine\"",
        )
        .unwrap_err();
        assert!(e.0.contains("sets an `instance` tag"), "{e}");
    }

    #[test]
    fn registry_is_on_by_default_off_globally_and_per_instance_and_a_change_restarts() {
        let homes = |top: &str, north: &str| {
            let text = format!(
                "{top}\n[[instance]]\nname = \"north\"\nurl = \"http://north:8123\"\n{north}\n\
                 [[instance]]\nname = \"south\"\nurl = \"http://south:8123\"\n"
            );
            let c = Config::resolve(parse(&text).unwrap(), Overrides::default()).unwrap();
            c.instances
                .iter()
                .map(InstanceConfig::keeps_registry)
                .collect::<Vec<bool>>()
        };
        assert_eq!(homes("", ""), vec![true, true]);
        assert_eq!(homes("registry = false", ""), vec![false, false]);
        assert_eq!(
            homes("registry = false", "registry = true"),
            vec![true, false]
        );
        assert_eq!(homes("", "registry = false"), vec![false, true]);
        let mut a = InstanceConfig::named("north");
        let b = a.clone();
        a.registry = Some(false);
        assert!(
            !a.same_as(&b),
            "a reload that turns the registry off restarts the instance"
        );
    }

    #[test]
    fn one_instance_keeps_the_ha_output_without_an_instance_tag() {
        let c = Config::resolve(
            parse(
                r#"
                [[instance]]
                url = "http://ha:8123"
                [[sink]]
                name = "influx"
                [sink.influxdb]
                url = "http://influx:8086"
                [sink.influxdb.ha.tags]
                instance = "mine"
                "#,
            )
            .unwrap(),
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(instance_tag(&c, 0), Some(false));
    }

    #[test]
    fn a_bad_instance_rule_names_its_instance() {
        let resolve = |text: &str| Config::resolve(parse(text).unwrap(), Overrides::default());
        let e = resolve(
            r#"
            [[instance]]
            name = "cabin"
            url = "http://cabin:8123"
            [instance.filter.include]
            entities = ["Not An Entity"]
            "#,
        )
        .unwrap_err();
        assert!(e.0.contains("instance 'cabin'.filter"), "{e}");
        let e = resolve(
            r#"
            [[instance]]
            name = "cabin"
            url = "http://cabin:8123"
            [[instance.attributes.entity]]
            match = "sensor.[x"
            "#,
        )
        .unwrap_err();
        assert!(e.0.contains("instance 'cabin'.attributes"), "{e}");
    }

    #[test]
    fn file_then_env_then_flags() {
        let file = parse(
            r#"
            db = "from-file.db"
            [[instance]]
            name = "home"
            url = "http://ha.local:8123"
            "#,
        )
        .unwrap();
        let c = Config::resolve(
            file,
            Overrides {
                db: Some("from-flag.db".into()),
                server: Some("http://other:8123".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(c.db, PathBuf::from("from-flag.db"));
        assert_eq!(c.instances[0].name, "home");
        assert_eq!(c.instances[0].url.as_deref(), Some("http://other:8123"));
        assert_eq!(c.metrics_addr.to_string(), "127.0.0.1:9464");
    }

    fn supervisor(url: Option<&str>) -> Overrides {
        Overrides {
            supervisor: Some(SupervisorAccess {
                token: ha_client::Secret::new("sup-token"),
                url: url.map(String::from),
            }),
            ..Overrides::default()
        }
    }

    #[test]
    fn supervisor_mode_fills_only_instances_without_a_url() {
        let c = Config::resolve(FileConfig::default(), supervisor(None)).unwrap();
        let inst = &c.instances[0];
        assert!(inst.supervisor);
        assert_eq!(inst.url.as_deref(), Some(SUPERVISOR_CORE_URL));
        assert_eq!(inst.token.as_ref().map(|t| t.expose()), Some("sup-token"));

        let file =
            parse("[[instance]]\nname='here'\n[[instance]]\nname='there'\nurl='http://other:8123'")
                .unwrap();
        let c = Config::resolve(file, supervisor(Some("http://127.0.0.1:1/core"))).unwrap();
        assert_eq!(
            c.instances[0].url.as_deref(),
            Some("http://127.0.0.1:1/core")
        );
        assert!(c.instances[0].supervisor);
        assert!(!c.instances[1].supervisor && c.instances[1].token.is_none());

        // A token of its own would be sent to the proxy, which takes only SUPERVISOR_TOKEN.
        let file = parse("[[instance]]\ntoken_file = '/t'").unwrap();
        let err = Config::resolve(file, supervisor(None))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SUPERVISOR_TOKEN") && err.contains("token_file"),
            "{err}"
        );
    }

    #[test]
    fn a_parse_error_names_the_place_not_the_line() {
        let err =
            parse("[[sink]]\nname = \"pg\"\n[sink.postgres]\ndsn = \"password=hunter2 host=x\" x")
                .unwrap_err()
                .to_string();
        assert!(err.contains("line 4"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn errors_name_the_key_and_fix() {
        let err = parse("dbb = 1").unwrap_err().to_string();
        assert!(err.contains("dbb"), "{err}");
        let err = Config::resolve(FileConfig::default(), Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("HASS_SERVER"), "{err}");
        let file = parse("[[instance]]\nurl = \"ha.local:8123\"").unwrap();
        let err = Config::resolve(file, Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("instance[0]") && err.contains("no scheme"),
            "{err}"
        );
        let file =
            parse("[[instance]]\nname='a'\nurl='http://a'\n[[instance]]\nname='a'\nurl='http://b'")
                .unwrap();
        let err = Config::resolve(file, Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("twice"), "{err}");
        let file = parse("[store]\nbatch_size = 0").unwrap();
        let err = Config::resolve(
            file,
            Overrides {
                server: Some("http://a".into()),
                ..Overrides::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("batch_size"), "{err}");
    }

    #[test]
    fn ha_option_names_parse_as_ha_spells_them() {
        let file = parse(
            "[[sink]]\nname = \"i\"\n[sink.influxdb]\nurl = \"http://x\"\n[sink.influxdb.ha]\nmeasurement_attr = \"domain__device_class\"\n",
        )
        .unwrap();
        let crate::sink::SinkKind::Influxdb(influx) = &file.sinks[0].kind else {
            panic!("an influxdb sink")
        };
        assert_eq!(
            influx.ha.measurement_attr,
            crate::sink::influx::MeasurementAttr::DomainDeviceClass
        );
        // Glob order is file order (later wins, as in HA), not alphabetical.
        let file = parse(
            "[[sink]]\nname = \"i\"\n[sink.influxdb]\nurl = \"http://x\"\n\
             [sink.influxdb.ha.component_config_glob]\n\"sensor.z*\" = { override_measurement = \"z\" }\n\
             \"sensor.*\" = { override_measurement = \"all\" }\n",
        )
        .unwrap();
        let crate::sink::SinkKind::Influxdb(influx) = &file.sinks[0].kind else {
            panic!("an influxdb sink")
        };
        let globs: Vec<&str> = influx
            .ha
            .component_config_glob
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(globs, ["sensor.z*", "sensor.*"]);
    }

    #[test]
    fn a_sink_needs_exactly_one_kind_table() {
        let err = parse("[[sink]]\nname = \"s\"\nbatch_size = 10\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sink 's': add a [sink.influxdb] or a [sink.postgres] table"),
            "{err}"
        );
        let err = parse(
            "[[sink]]\nname = \"s\"\n[sink.influxdb]\nurl = \"http://x\"\n[sink.postgres]\ndsn = \"host=x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sink 's': set only one of"), "{err}");
    }

    /// Every TOML example in the README parses, and its sinks' schema options compile.
    #[test]
    fn readme_examples_parse() {
        let readme = include_str!("../../../README.md");
        let mut n = 0;
        for block in readme.split("```toml\n").skip(1) {
            let text = block.split("```").next().unwrap();
            let file = parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            for sink in &file.sinks {
                match &sink.kind {
                    crate::sink::SinkKind::Influxdb(c) => {
                        crate::sink::influx::HaEncoder::new(&c.ha).unwrap();
                        crate::sink::influx::CleanEncoder::new(&c.clean).unwrap();
                    }
                    crate::sink::SinkKind::Postgres(_) => {}
                }
            }
            n += 1;
        }
        assert!(n >= 4, "found {n} TOML examples");
    }
}
