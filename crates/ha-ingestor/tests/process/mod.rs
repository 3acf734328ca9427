//! The ingestor as users run it: the built binary in a process of its own.
#![allow(dead_code)] // each test file uses a part

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::sinks::reqwest_client;

/// A running `ha-ingestor run`, its stderr in `log`.
pub struct Ingestor {
    /// The process.
    pub child: Child,
    /// Its log file.
    pub log: PathBuf,
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
        .env("RUST_LOG", "info,ha_ingestor::backfill=debug")
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

/// The last 300 lines of a log, for a failure message.
pub fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(300)..].join("\n")
}
