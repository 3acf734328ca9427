//! The Home Assistant add-on: its options (`/data/options.json`, shaped by
//! `packaging/addon/config.yaml`) as the ingestor's configuration.
//!
//! The options are the add-on UI's flat fields; they are turned into the same structure a TOML
//! file has and read by the same deserializer, so every check of the config file applies. Secrets
//! (sink passwords and tokens) are written to private files under the add-on's `/data` and named
//! by `password_file`/`token_file`, as a config file would.

use std::path::{Path, PathBuf};

use ha_client::Secret;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::FileConfig;

/// The add-on's options, as `config.yaml`'s schema defines them.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AddonOptions {
    /// `state_changed` or `all`.
    pub subscribe: Option<String>,
    pub include_domains: Vec<String>,
    pub include_entities: Vec<String>,
    pub include_entity_globs: Vec<String>,
    pub exclude_domains: Vec<String>,
    pub exclude_entities: Vec<String>,
    pub exclude_entity_globs: Vec<String>,
    /// Gap backfill from HA's history (default on).
    pub backfill: Option<bool>,
    /// Bound on the database in MiB; 0 or absent: none.
    pub max_db_mb: Option<u64>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    pub influxdb: Option<InfluxOptions>,
    pub postgres: Option<PostgresOptions>,
}

/// The InfluxDB sink; off while `url` is empty.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InfluxOptions {
    pub url: Option<String>,
    pub api: Option<String>,
    pub database: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub org: Option<String>,
    pub bucket: Option<String>,
    pub token: Option<Secret>,
    pub schema: Option<String>,
}

/// The PostgreSQL sink; off while `dsn` is empty.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresOptions {
    pub dsn: Option<String>,
    pub password: Option<Secret>,
    pub schema: Option<String>,
    pub ca_file: Option<String>,
}

/// Where the add-on keeps its files.
pub struct AddonPaths {
    /// `/data`: the database and the private secret files.
    pub data: PathBuf,
}

impl AddonPaths {
    /// The database file.
    pub fn db(&self) -> PathBuf {
        self.data.join("ha-ingestor.db")
    }

    fn secret(&self, name: &str) -> PathBuf {
        self.data.join(".secrets").join(name)
    }
}

/// Reads `options.json` into a configuration for [`crate::config::Config::resolve`]: one instance
/// without a URL (Supervisor mode supplies it) and the sinks whose address is set.
pub fn load(options: &Path, paths: &AddonPaths) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(options)
        .map_err(|e| format!("cannot read the add-on options {}: {e}", options.display()))?;
    let options: AddonOptions = serde_json::from_str(&text).map_err(|e| {
        format!(
            "the add-on options {} are not valid: {e}",
            options.display()
        )
    })?;
    to_file_config(&options, paths)
}

/// The options as a config file would say them.
pub fn to_file_config(o: &AddonOptions, paths: &AddonPaths) -> Result<FileConfig, String> {
    let mut instance = json!({ "name": "home" });
    if let Some(subscribe) = non_empty(&o.subscribe) {
        instance["subscribe"] = subscribe.into();
    }
    let mut config = json!({
        "db": paths.db(),
        // The add-on's port (config.yaml `ports`, the watchdog's /health).
        "metrics_addr": "0.0.0.0:9464",
        "instance": [instance],
        "filter": {
            "include": {
                "domains": o.include_domains,
                "entities": o.include_entities,
                "entity_globs": o.include_entity_globs,
            },
            "exclude": {
                "domains": o.exclude_domains,
                "entities": o.exclude_entities,
                "entity_globs": o.exclude_entity_globs,
            },
        },
        "sink": [],
    });
    if let Some(backfill) = o.backfill {
        config["backfill"] = backfill.into();
    }
    if let Some(mb) = o.max_db_mb.filter(|mb| *mb > 0) {
        let bytes = mb
            .checked_mul(1024 * 1024)
            .ok_or_else(|| format!("max_db_mb {mb} is too large"))?;
        config["store"] = json!({ "max_db_bytes": bytes });
    }
    if let Some(format) = non_empty(&o.log_format) {
        config["log_format"] = format.into();
    }
    let mut sinks = Vec::new();
    if let Some(influx) = &o.influxdb
        && let Some(url) = non_empty(&influx.url)
    {
        let mut table = json!({ "url": url });
        for (key, value) in [
            ("api", &influx.api),
            ("database", &influx.database),
            ("username", &influx.username),
            ("org", &influx.org),
            ("bucket", &influx.bucket),
            ("schema", &influx.schema),
        ] {
            if let Some(v) = non_empty(value) {
                table[key] = v.into();
            }
        }
        if let Some(password) = non_empty_secret(&influx.password) {
            table["password_file"] = json!(secret_file(paths, "influxdb-password", password)?);
        }
        if let Some(token) = non_empty_secret(&influx.token) {
            table["token_file"] = json!(secret_file(paths, "influxdb-token", token)?);
        }
        sinks.push(json!({ "name": "influxdb", "influxdb": table }));
    }
    if let Some(pg) = &o.postgres
        && let Some(dsn) = non_empty(&pg.dsn)
    {
        let mut table = json!({ "dsn": dsn });
        if let Some(schema) = non_empty(&pg.schema) {
            table["schema"] = schema.into();
        }
        if let Some(ca) = non_empty(&pg.ca_file) {
            table["ca_file"] = ca.into();
        }
        if let Some(password) = non_empty_secret(&pg.password) {
            table["password_file"] = json!(secret_file(paths, "postgres-password", password)?);
        }
        sinks.push(json!({ "name": "postgres", "postgres": table }));
    }
    config["sink"] = Value::Array(sinks);
    serde_json::from_value(config).map_err(|e| format!("the add-on options: {e}"))
}

/// A set, non-blank option (the add-on UI leaves cleared fields empty).
fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A set, non-blank secret.
fn non_empty_secret(s: &Option<Secret>) -> Option<&str> {
    s.as_ref()
        .map(|s| s.expose().trim())
        .filter(|s| !s.is_empty())
}

/// Writes a secret to a file only the add-on's user can read, for `*_file` keys.
fn secret_file(paths: &AddonPaths, name: &str, value: &str) -> Result<PathBuf, String> {
    let path = paths.secret(name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    crate::credentials::write_private(&path, value.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides, SupervisorAccess};
    use crate::sink::SinkKind;

    fn paths(dir: &Path) -> AddonPaths {
        AddonPaths {
            data: dir.to_path_buf(),
        }
    }

    fn supervisor() -> Overrides {
        Overrides {
            supervisor: Some(SupervisorAccess {
                token: ha_client::Secret::new("sup"),
                url: None,
            }),
            ..Overrides::default()
        }
    }

    fn shipped() -> Value {
        serde_norway::from_str(include_str!("../../../packaging/addon/config.yaml")).unwrap()
    }

    /// Every option has a schema entry and every schema entry is an option the ingestor reads,
    /// so the add-on UI shows nothing the ingestor ignores.
    #[test]
    fn the_schema_and_the_options_agree() {
        let doc = shipped();
        let keys = |v: &Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&doc["options"]), keys(&doc["schema"]));
        // Every schema key is known to AddonOptions (deny_unknown_fields): filled with
        // placeholder values of the right shape, it parses.
        let mut filled = serde_json::Map::new();
        for (k, v) in doc["schema"].as_object().unwrap() {
            let value = match v {
                Value::Object(m) => {
                    Value::Object(m.keys().map(|k| (k.clone(), json!("x"))).collect())
                }
                Value::Array(_) => json!([]),
                Value::String(s) if s.starts_with("bool") => json!(true),
                Value::String(s) if s.starts_with("int") => json!(1),
                _ => json!("x"),
            };
            filled.insert(k.clone(), value);
        }
        serde_json::from_value::<AddonOptions>(Value::Object(filled)).unwrap();
        assert_eq!(doc["homeassistant_api"], true);
        assert_eq!(doc["hassio_api"], Value::Null, "no Supervisor API needed");
    }

    /// The options of `packaging/addon/config.yaml` as shipped: one instance through the
    /// Supervisor, no sinks, everything stored.
    #[test]
    fn the_shipped_defaults_make_a_working_config() {
        let dir = tempfile::tempdir().unwrap();
        let o: AddonOptions = serde_json::from_value(shipped()["options"].clone()).unwrap();
        let file = to_file_config(&o, &paths(dir.path())).unwrap();
        let config = Config::resolve(file, supervisor()).unwrap();
        assert_eq!(config.db, dir.path().join("ha-ingestor.db"));
        assert_eq!(config.metrics_addr.to_string(), "0.0.0.0:9464");
        let inst = &config.instances[0];
        assert!(inst.supervisor);
        assert_eq!(inst.url.as_deref(), Some("http://supervisor/core"));
        assert!(config.sinks.is_empty());
        assert!(config.backfill);
    }

    /// Every option lands on its key, secrets in private files.
    #[test]
    fn options_map_onto_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let o: AddonOptions = serde_json::from_value(json!({
            "subscribe": "all",
            "include_domains": ["sensor"],
            "exclude_entity_globs": ["sensor.*_rssi"],
            "backfill": false,
            "max_db_mb": 512,
            "log_format": "json",
            "influxdb": {"url": "http://influx:8086", "api": "v2", "org": "home", "bucket": "ha",
                         "token": "t0ken", "schema": "clean"},
            "postgres": {"dsn": "host=db user=ha dbname=ha sslmode=verify-full",
                         "password": "pw", "ca_file": "/ssl/ca.pem"},
        }))
        .unwrap();
        let file = to_file_config(&o, &paths(dir.path())).unwrap();
        let config = Config::resolve(file, supervisor()).unwrap();
        assert_eq!(config.store.max_db_bytes, Some(512 << 20));
        assert!(!config.backfill);
        assert_eq!(config.filter.include.domains, vec!["sensor"]);
        assert_eq!(config.filter.exclude.entity_globs, vec!["sensor.*_rssi"]);
        assert_eq!(config.instances[0].subscribe, crate::config::Subscribe::All);
        let names: Vec<&str> = config.sinks.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["influxdb", "postgres"]);
        let SinkKind::Influxdb(influx) = &config.sinks[0].kind else {
            panic!()
        };
        let token_file = influx.token_file.clone().unwrap();
        assert_eq!(std::fs::read_to_string(&token_file).unwrap(), "t0ken");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the secret is private");
        let SinkKind::Postgres(pg) = &config.sinks[1].kind else {
            panic!()
        };
        assert_eq!(pg.ca_file.as_deref(), Some(Path::new("/ssl/ca.pem")));
        let password = std::fs::read_to_string(pg.password_file.as_ref().unwrap()).unwrap();
        assert_eq!(password, "pw");
    }

    #[test]
    fn secrets_stay_out_of_debug_and_sizes_do_not_overflow() {
        let o: AddonOptions = serde_json::from_value(json!({
            "influxdb": {"url": "http://i", "password": "hunter2", "token": "t0ken"},
            "postgres": {"dsn": "host=db", "password": "s3cret"},
            "max_db_mb": u64::MAX,
        }))
        .unwrap();
        let shown = format!("{o:?}");
        for secret in ["hunter2", "t0ken", "s3cret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let dir = tempfile::tempdir().unwrap();
        let e = to_file_config(&o, &paths(dir.path())).unwrap_err();
        assert!(e.contains("max_db_mb"), "{e}");
    }

    #[test]
    fn bad_options_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let o: AddonOptions = serde_json::from_value(json!({"subscribe": "everything"})).unwrap();
        let e = to_file_config(&o, &paths(dir.path())).unwrap_err();
        assert!(e.contains("everything"), "{e}");
        let options = dir.path().join("options.json");
        std::fs::write(&options, r#"{"sinks": []}"#).unwrap();
        let e = load(&options, &paths(dir.path())).unwrap_err();
        assert!(e.contains("sinks") && e.contains("options.json"), "{e}");
    }
}
