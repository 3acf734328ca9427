//! `ha-ingestor run` against the simulator behind TLS: with the CA it ingests; without it, it
//! stops at once with exit code 2 and a message naming the certificate, instead of retrying.

use std::process::{Command, Stdio};
use std::time::Duration;

use ha_sim::{Sim, SimConfig};
use ha_testenv::TlsProxy;
use serde_json::json;

fn ingestor(
    url: &str,
    token: &str,
    dir: &std::path::Path,
    ca: Option<&std::path::Path>,
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ha-ingestor"));
    cmd.arg("run")
        .arg("--db")
        .arg(dir.join("tls.db"))
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env_remove("HA_INGESTOR_CONFIG")
        .env_remove("HASS_TOKEN_FILE")
        .env_remove("HASS_CA_FILE")
        .env("HASS_SERVER", url)
        .env("HASS_TOKEN", token)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(ca) = ca {
        cmd.arg("--ca-file").arg(ca);
    }
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_stops_the_service_with_exit_code_2() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let proxy = TlsProxy::start(sim.addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = ingestor(
        &proxy.https_url(),
        &sim.config().admin_token,
        dir.path(),
        None,
    );
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || cmd.output().unwrap()),
    )
    .await
    .expect("the ingestor gives up at once instead of retrying")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    assert!(
        !stderr.contains(&sim.config().admin_token),
        "the token leaked: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_ca_file_it_ingests_over_tls() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let proxy = TlsProxy::start(sim.addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, proxy.ca_pem()).unwrap();
    let mut child = ingestor(
        &proxy.https_url(),
        &sim.config().admin_token,
        dir.path(),
        Some(&ca),
    )
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let db = dir.path().join("tls.db");
    let stored = tokio::time::timeout(Duration::from_secs(20), async {
        let mut i = 0;
        loop {
            i += 1;
            sim.set_state("sensor.tls_probe", &i.to_string(), json!({}));
            tokio::time::sleep(Duration::from_millis(100)).await;
            let n: i64 = rusqlite::Connection::open(&db)
                .ok()
                .and_then(|c| {
                    c.query_row(
                        "SELECT count(*) FROM states_view WHERE entity_id = 'sensor.tls_probe'",
                        [],
                        |r| r.get(0),
                    )
                    .ok()
                })
                .unwrap_or(0);
            if n > 0 {
                return n;
            }
        }
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(stored.expect("rows arrive over TLS") > 0);
    assert!(proxy.handshakes_ok() >= 1);
}
