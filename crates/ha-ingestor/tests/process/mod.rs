//! The ingestor as users run it: the built binary in a process of its own.
#![allow(dead_code)] // each test file uses a part

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::sinks::{influxql, reqwest_client, unique};

/// A running `ha-ingestor run`, its stderr in `log`.
pub struct Ingestor {
    /// The process.
    pub child: Child,
    /// Its log file.
    pub log: PathBuf,
}

/// However a test ends (a failed assertion too), its ingestor does not outlive it: a leftover
/// process would go on writing to the shared servers the next tests count rows in.
impl Drop for Ingestor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `ha-ingestor --config <config> run`, appending its stderr to `log`.
pub fn spawn_ingestor(config: &Path, log: &Path) -> Ingestor {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ha-ingestor"))
        .args(["--config", config.to_str().unwrap(), "run"])
        .env_remove("HASS_SERVER")
        .env_remove("HASS_TOKEN")
        .env_remove("HASS_TOKEN_FILE")
        .env_remove("HA_INGESTOR_DB")
        .env("RUST_LOG", "info,ha_ingestor::history=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .expect("spawn ha-ingestor");
    Ingestor {
        child,
        log: log.to_path_buf(),
    }
}

/// Waits for the ingestor's /health to say `instance` is connected.
pub async fn wait_ready(metrics: u16, ingestor: &mut Ingestor, instance: &str) {
    let http = reqwest_client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{metrics}/health"))
            .send()
            .await
            && let Ok(v) = r.json::<serde_json::Value>().await
            && v["instances"][instance]["connected"] == true
        {
            return;
        }
        if let Ok(Some(status)) = ingestor.child.try_wait() {
            panic!("the ingestor exited: {status}\n{}", log_tail(&ingestor.log));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ingestor did not connect within 60 s\n{}",
            log_tail(&ingestor.log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A counter of the ingestor's /metrics, summed over its labels.
pub async fn metric(port: u16, name: &str) -> f64 {
    let text = reqwest_client()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `check` until it returns true, or fails with `what` (and the log's tail) after `wait`.
pub async fn until<F: AsyncFnMut() -> bool>(what: &str, log: &Path, wait: Duration, mut check: F) {
    let deadline = tokio::time::Instant::now() + wait;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {wait:?}\n{}",
            log_tail(log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last 300 lines of a log, for a failure message.
pub fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(300)..].join("\n")
}

/// The files of an ingestor set up for a test: instance `real` storing the entities a glob
/// matches, and a clean-schema InfluxDB sink with points at `last_updated`.
pub struct Setup {
    /// The config file, for [`spawn_ingestor`].
    pub config: PathBuf,
    /// The SQLite database.
    pub db: PathBuf,
    /// The log file.
    pub log: PathBuf,
    /// The /metrics and /health port.
    pub metrics: u16,
    /// The InfluxDB database the sink writes to (created here).
    pub influx_db: String,
}

/// Writes a config (and a token file) into `dir` for HA at `url` and the InfluxDB at `influx`,
/// and creates the sink's database, named after `name`.
pub async fn setup(
    dir: &Path,
    name: &str,
    url: &str,
    token: &str,
    glob: &str,
    influx: &str,
) -> Setup {
    let influx_db = unique(name);
    let created = influxql(influx, "", &format!("CREATE DATABASE \"{influx_db}\"")).await;
    assert!(created["results"][0]["error"].is_null(), "{created}");
    let db = dir.join(format!("{name}.db"));
    let token_file = dir.join("token");
    std::fs::write(&token_file, token).unwrap();
    let metrics = free_port();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"
db = "{db}"
metrics_addr = "127.0.0.1:{metrics}"
[[instance]]
name = "real"
url = "{url}"
token_file = "{token}"
[filter.include]
entity_globs = ["{glob}"]
[store]
flush_interval_ms = 100
[[sink]]
name = "influx"
batch_size = 500
[sink.influxdb]
url = "{influx}"
database = "{influx_db}"
schema = "clean"
time_column = "last_updated"
"#,
            db = db.display(),
            token = token_file.display(),
        ),
    )
    .unwrap();
    Setup {
        config,
        db,
        log: dir.join("ingestor.log"),
        metrics,
        influx_db,
    }
}

/// HA's recorded changes of `entities` from `since_us` on, as (entity_id, last_updated in µs,
/// state), sorted: what the store must hold, row by row.
pub async fn recorded(
    url: &str,
    admin_token: &str,
    entities: &[&str],
    since_us: i64,
) -> Vec<(String, i64, String)> {
    use ha_client::auth::StaticToken;
    use ha_client::ws::{HistoryQuery, WsClient};
    let ws = WsClient::builder(url)
        .token_source(StaticToken::new(admin_token.to_string()))
        .connect()
        .await
        .unwrap();
    let start = jiff::Timestamp::from_microsecond(since_us - 1_000_000).unwrap();
    let query = HistoryQuery::new(
        start.to_string(),
        entities.iter().map(|e| e.to_string()).collect(),
    );
    let history = ws.history_during_period(&query).await.unwrap();
    ws.close();
    let mut rows: Vec<(String, i64, String)> = history
        .into_iter()
        .flat_map(|(entity, states)| {
            states
                .into_iter()
                .map(move |s| (entity.clone(), s.last_updated_us(), s.state))
        })
        .filter(|r| r.1 >= since_us)
        .collect();
    rows.sort();
    rows
}
