//! The binary as service managers run it, against the in-process simulator: readiness to systemd
//! (`READY=1`, `STOPPING=1` on `$NOTIFY_SOCKET`), `ha-ingestor health` (the container's
//! healthcheck) and `--config-if-exists` (the container's optional config file).
//!
//! Every wait polls against a deadline; nothing relies on a bare sleep.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ha_sim::{Sim, SimConfig};
use tokio::net::UnixDatagram;

/// Upper bound for any single wait. Generous: the CI box has 2 cores and compiles meanwhile.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Variables the binary reads; cleared so the caller's environment cannot leak in.
const INGESTOR_ENV: &[&str] = &[
    "HASS_SERVER",
    "HASS_TOKEN",
    "HASS_TOKEN_FILE",
    "HA_INGESTOR_CONFIG",
    "HA_INGESTOR_CONFIG_IF_EXISTS",
    "HA_INGESTOR_DB",
    "HA_INGESTOR_METRICS_ADDR",
    "HA_INGESTOR_LOG_FORMAT",
    "NOTIFY_SOCKET",
    "RUST_LOG",
];

fn ingestor(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ha-ingestor"));
    cmd.args(args).current_dir(cwd).stdin(Stdio::null());
    for var in INGESTOR_ENV {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs a one-shot command to its end without blocking the runtime the simulator runs on.
async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run ha-ingestor"))
        .await
        .unwrap()
}

/// A child that is killed on drop, so a failing test leaves no process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Running {
    fn spawn(mut cmd: Command) -> Running {
        Running(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn ha-ingestor"),
        )
    }

    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "ha-ingestor did not exit");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn next_datagram(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(TIMEOUT, socket.recv(&mut buf))
        .await
        .expect("a notification within the deadline")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn health_cmd(addr: SocketAddr, cwd: &Path) -> Command {
    ingestor(&["health", "--metrics-addr", &addr.to_string()], &[], cwd)
}

/// `READY=1` once `run` has started, `ha-ingestor health` answers 0 with the JSON once the
/// instance is connected, and SIGTERM sends `STOPPING=1` before the clean exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_and_stopping_and_health_answers() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let systemd = UnixDatagram::bind(&socket_path).unwrap();
    let addr = free_addr();
    let db = dir.path().join("service.db");
    let mut run = Running::spawn(ingestor(
        &[
            "run",
            "--db",
            db.to_str().unwrap(),
            "--metrics-addr",
            &addr.to_string(),
        ],
        &[
            ("HASS_SERVER", &sim.url()),
            ("HASS_TOKEN", &sim.config().admin_token),
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ],
        dir.path(),
    ));
    assert_eq!(next_datagram(&systemd).await, "READY=1");

    // Ready to systemd means started; /health says 200 once the instance is connected.
    let deadline = Instant::now() + TIMEOUT;
    let healthy = loop {
        let out = output(health_cmd(addr, dir.path())).await;
        if out.status.success() {
            break out;
        }
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            Instant::now() < deadline,
            "health never answered 0; last: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let body: serde_json::Value = serde_json::from_slice(&healthy.stdout).expect("JSON on stdout");
    assert_eq!(body["ready"], serde_json::json!(true), "{body}");
    assert_eq!(
        body["instances"]["default"]["connected"],
        serde_json::json!(true),
        "{body}"
    );

    let ok = Command::new("kill")
        .args(["-TERM", &run.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM");
    assert_eq!(next_datagram(&systemd).await, "STOPPING=1");
    assert_eq!(run.wait_exit().await.code(), Some(0));
    sim.shutdown().await;
}

/// `health` exits 1 and says why: 503 while HA is unreachable, no answer when nothing listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let nothing = free_addr();
    let out = output(health_cmd(nothing, dir.path())).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("http://{nothing}/health"))
            && stderr.contains("no answer")
            && stderr.to_lowercase().contains("refused"),
        "{stderr}"
    );

    // An ingestor whose HA refuses connections (port 9 on loopback) is running but not ready.
    let addr = free_addr();
    let db = dir.path().join("unready.db");
    let _run = Running::spawn(ingestor(
        &[
            "run",
            "--db",
            db.to_str().unwrap(),
            "--metrics-addr",
            &addr.to_string(),
        ],
        &[("HASS_SERVER", "http://127.0.0.1:9"), ("HASS_TOKEN", "t")],
        dir.path(),
    ));
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let out = output(health_cmd(addr, dir.path())).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "never ready, yet: {stderr}");
        if stderr.contains("503") {
            assert!(stderr.contains("\"ready\":false"), "{stderr}");
            break;
        }
        assert!(Instant::now() < deadline, "no 503; last: {stderr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `--config-if-exists` reads the file when it is there, skips it when it is not, and yields to
/// `--config`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_if_exists_reads_only_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let present = dir.path().join("present.toml");
    std::fs::write(&present, "[store]\nbatch_sise = 100\n").unwrap();
    let absent = dir.path().join("absent.toml");
    let no_server = |config_if_exists: &Path, extra: &[&str]| {
        let mut args = vec!["run"];
        args.extend_from_slice(extra);
        ingestor(
            &args,
            &[(
                "HA_INGESTOR_CONFIG_IF_EXISTS",
                config_if_exists.to_str().unwrap(),
            )],
            dir.path(),
        )
    };

    // Read: its unknown key is the error.
    let out = output(no_server(&present, &[])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("batch_sise") && stderr.contains("present.toml"),
        "{stderr}"
    );

    // Skipped: the error is the missing server, as without any file.
    let out = output(no_server(&absent, &[])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("HASS_SERVER") && !stderr.contains("absent.toml"),
        "{stderr}"
    );

    // --config wins over an existing --config-if-exists file.
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[store]\nbatch_size = 100\n").unwrap();
    let out = output(no_server(&present, &["--config", good.to_str().unwrap()])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("HASS_SERVER") && !stderr.contains("batch_sise"),
        "{stderr}"
    );
}
