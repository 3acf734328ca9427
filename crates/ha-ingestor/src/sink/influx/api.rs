//! The two InfluxDB write APIs, behind one small trait ([`WriteApi`]), as Vector's influxdb sinks
//! keep theirs behind `InfluxDbSettings`.
//!
//! Why a trait: the APIs differ only in the write URL (path and query parameters), the
//! credentials (basic auth or a token) and which secret the config names; the line protocol, the
//! HTTP handling and the error mapping are the same, and the writer should not branch on the
//! version everywhere. Both carry microsecond timestamps (`precision=u` / `precision=us`).

use std::path::Path;

use ha_client::Secret;
use reqwest::{RequestBuilder, Url};

use super::config::{InfluxApi, InfluxConfig};

/// What differs between the write APIs.
pub(super) trait WriteApi: Send + Sync {
    /// The write endpoint under `base` (whose path may hold a prefix), with its query parameters.
    fn write_url(&self, base: &Url) -> Url;

    /// Adds the credentials, if any, to a request (writes and `/ping`).
    fn authorize(&self, request: RequestBuilder) -> RequestBuilder;
}

/// `/write?db=&rp=&precision=u`, username and password as basic auth (InfluxDB 1.x, 3.x,
/// VictoriaMetrics).
struct V1 {
    database: String,
    retention_policy: Option<String>,
    credentials: Option<(String, Option<Secret>)>,
}

/// `/api/v2/write?org=&bucket=&precision=us`, `Authorization: Token` (InfluxDB 2.x, 3.x,
/// VictoriaMetrics).
struct V2 {
    org: Option<String>,
    bucket: String,
    token: Option<Secret>,
}

impl WriteApi for V1 {
    fn write_url(&self, base: &Url) -> Url {
        let mut url = join(base, "/write");
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("db", &self.database);
            if let Some(rp) = &self.retention_policy {
                q.append_pair("rp", rp);
            }
            q.append_pair("precision", "u");
        }
        url
    }

    fn authorize(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.credentials {
            Some((user, password)) => {
                request.basic_auth(user, password.as_ref().map(Secret::expose))
            }
            None => request,
        }
    }
}

impl WriteApi for V2 {
    fn write_url(&self, base: &Url) -> Url {
        let mut url = join(base, "/api/v2/write");
        {
            let mut q = url.query_pairs_mut();
            if let Some(org) = &self.org {
                q.append_pair("org", org);
            }
            q.append_pair("bucket", &self.bucket);
            q.append_pair("precision", "us");
        }
        url
    }

    fn authorize(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(token) => request.header("Authorization", format!("Token {}", token.expose())),
            None => request,
        }
    }
}

/// Which secret the configured API uses: the file, the environment variable, and the key's stem
/// for messages (`password` for v1, `token` for v2).
pub fn secret_source(config: &InfluxConfig) -> (Option<&Path>, Option<&str>, &'static str) {
    match config.api {
        InfluxApi::V1 => (
            config.password_file.as_deref(),
            config.password_env.as_deref(),
            "password",
        ),
        InfluxApi::V2 => (
            config.token_file.as_deref(),
            config.token_env.as_deref(),
            "token",
        ),
    }
}

/// The configured API; `secret` is the one [`secret_source`] names, already read. Errors name the
/// sink and the missing key.
pub(super) fn from_config(
    name: &str,
    config: &InfluxConfig,
    secret: Option<Secret>,
) -> Result<Box<dyn WriteApi>, String> {
    Ok(match config.api {
        InfluxApi::V1 => Box::new(V1 {
            database: config.database.clone(),
            retention_policy: config.retention_policy.clone(),
            credentials: match &config.username {
                Some(user) => Some((user.clone(), secret)),
                None if secret.is_some() => {
                    return Err(format!("sink '{name}': a password is set but no username"));
                }
                None => None,
            },
        }),
        InfluxApi::V2 => Box::new(V2 {
            org: config.org.clone(),
            bucket: config.bucket.clone().ok_or_else(|| {
                format!("sink '{name}': api = \"v2\" needs bucket (and org for InfluxDB 2)")
            })?,
            token: secret,
        }),
    })
}

/// `base` with `path` appended to its path: a prefix such as `/influx` is kept.
pub(super) fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let prefix = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{prefix}{path}"));
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(toml_text: &str, secret: Option<&str>) -> Result<Box<dyn WriteApi>, String> {
        let config: InfluxConfig = toml::from_str(toml_text).unwrap();
        from_config("i", &config, secret.map(Secret::new))
    }

    fn header(api: &dyn WriteApi, name: &str) -> Option<String> {
        let client = ha_client::TlsOptions::default()
            .reqwest_builder()
            .unwrap()
            .build()
            .unwrap();
        let request = api.authorize(client.get("http://x/ping")).build().unwrap();
        let value = request.headers().get(name)?;
        Some(value.to_str().unwrap().to_string())
    }

    #[test]
    fn v1_and_v2_urls_keep_the_prefix_and_carry_microseconds() {
        let base = Url::parse("http://h:8086/influx").unwrap();
        let v1 = api("url = \"x\"\nretention_policy = \"a b\"", None).unwrap();
        assert_eq!(
            v1.write_url(&base).as_str(),
            "http://h:8086/influx/write?db=home_assistant&rp=a+b&precision=u"
        );
        let v2 = api(
            "url = \"x\"\napi = \"v2\"\norg = \"home\"\nbucket = \"ha\"",
            None,
        )
        .unwrap();
        assert_eq!(
            v2.write_url(&base).as_str(),
            "http://h:8086/influx/api/v2/write?org=home&bucket=ha&precision=us"
        );
        assert_eq!(
            join(&Url::parse("http://h:8086/").unwrap(), "/ping").as_str(),
            "http://h:8086/ping"
        );
    }

    #[test]
    fn credentials_go_where_each_api_wants_them() {
        let v1 = api("url = \"x\"\nusername = \"ha\"", Some("pw")).unwrap();
        assert_eq!(
            header(&*v1, "authorization").as_deref(),
            Some("Basic aGE6cHc=")
        );
        let v2 = api("url = \"x\"\napi = \"v2\"\nbucket = \"b\"", Some("t0k")).unwrap();
        assert_eq!(header(&*v2, "authorization").as_deref(), Some("Token t0k"));
        let none = api("url = \"x\"", None).unwrap();
        assert_eq!(header(&*none, "authorization"), None);
    }

    #[test]
    fn missing_keys_are_named() {
        let err = api("url = \"x\"", Some("pw")).err().unwrap();
        assert_eq!(err, "sink 'i': a password is set but no username");
        let err = api("url = \"x\"\napi = \"v2\"", None).err().unwrap();
        assert!(err.contains("needs bucket"), "{err}");
        let config: InfluxConfig = toml::from_str("url = \"x\"\napi = \"v2\"").unwrap();
        assert_eq!(secret_source(&config), (None, None, "token"));
    }
}
