//! The ways users install, against the simulator: as a Home Assistant add-on, through the
//! Supervisor's proxy (`addon` reads the add-on's options and stores every change through
//! `/core/websocket`; `check` says what Supervisor mode can do; the commands that need a user's
//! own token refuse, naming why), and under systemd (the token from `LoadCredential=`).

mod process;
mod sinks;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use ha_sim::{Sim, SimConfig};
use process::{free_port, recorded, until};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// The ingestor binary with the add-on's environment (and nothing of the caller's HA settings).
fn ingestor(sim: &Sim, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ha-ingestor"));
    c.args(args)
        .env_remove("HASS_SERVER")
        .env_remove("HASS_TOKEN")
        .env_remove("HASS_TOKEN_FILE")
        .env_remove("HA_INGESTOR_DB")
        .env("SUPERVISOR_TOKEN", &sim.config().supervisor_token)
        .env("HA_INGESTOR_SUPERVISOR_URL", sim.supervisor_url())
        .stdin(Stdio::null());
    c
}

/// Runs `c` to its end (off the async threads, which serve the simulator), at most 60 s: its
/// exit code and its output.
async fn output(c: Command) -> (i32, String) {
    output_with_stdin(c, None).await
}

/// [`output`], with `input` on its stdin.
async fn output_with_stdin(mut c: Command, input: Option<&str>) -> (i32, String) {
    if input.is_some() {
        c.stdin(Stdio::piped());
    }
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ha-ingestor");
    if let Some(input) = input {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "ha-ingestor did not end within 60 s:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Output {
        status,
        stdout,
        stderr,
    } = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.code().unwrap_or(-1), text)
}

fn stored(db: &Path) -> Vec<(String, i64, String)> {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare(
        "SELECT e.entity_id, s.last_updated_us, s.state FROM states s \
         JOIN entities e ON e.id = s.entity WHERE e.entity_id LIKE 'sensor.addon_%' \
         AND e.entity_id != 'sensor.addon_probe'",
    ) else {
        return Vec::new();
    };
    let mut rows: Vec<_> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.sort();
    rows
}

fn probe_stored(db: &Path) -> bool {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| {
            c.query_row(
                "SELECT count(*) FROM states s JOIN entities e ON e.id = s.entity \
                 WHERE e.entity_id = 'sensor.addon_probe'",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .is_ok_and(|n| n > 0)
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_addon_stores_every_change_through_the_supervisor() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let options = data.join("options.json");
    std::fs::write(
        &options,
        json!({
            "subscribe": "state_changed",
            "include_entity_globs": ["sensor.addon_*"],
            "backfill": true,
            "influxdb": {"url": ""},
            "postgres": {"dsn": ""},
        })
        .to_string(),
    )
    .unwrap();
    let metrics = free_port();
    let log = dir.path().join("addon.log");
    let mut cmd = ingestor(
        &sim,
        &[
            "addon",
            "--options",
            options.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ],
    );
    cmd.env("HA_INGESTOR_METRICS_ADDR", format!("127.0.0.1:{metrics}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = Running(cmd.spawn().unwrap());
    let since_us = jiff::Timestamp::now().as_microsecond() - 1_000_000;
    let db = data.join("ha-ingestor.db");
    // Connected through the proxy once a change made now is stored.
    let mut n = 0;
    until("the add-on's first change stored", &log, WAIT, async || {
        n += 1;
        sim.set_state("sensor.addon_probe", &n.to_string(), json!({}));
        tokio::time::sleep(Duration::from_millis(50)).await;
        probe_stored(&db)
    })
    .await;
    for i in 0..50 {
        sim.set_state(
            &format!("sensor.addon_{}", i % 3),
            &i.to_string(),
            json!({"i": i}),
        );
    }
    // The probe's changes from before the subscription was live are not stored (a fresh database
    // has no gap to fill): compare the 50 made after.
    let entities = ["sensor.addon_0", "sensor.addon_1", "sensor.addon_2"];
    let want = recorded(&sim.url(), &sim.config().admin_token, &entities, since_us).await;
    until("every change stored once", &log, WAIT, async || {
        stored(&db) == want
    })
    .await;
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the add-on exited\n{}",
        process::log_tail(&log)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_says_what_supervisor_mode_can_do_and_token_commands_refuse() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("check.db");
    let (code, text) = output(ingestor(&sim, &["check", "--db", db.to_str().unwrap()])).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Supervisor mode"), "{text}");
    assert!(text.contains("/core/websocket"), "{text}");
    assert!(text.contains("SUPERVISOR_TOKEN"), "{text}");

    for args in [
        &["token", "create", "--print-token"][..],
        &["token", "list"][..],
        &["login", "--username", "admin"][..],
    ] {
        let (code, text) = output(ingestor(&sim, args)).await;
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(text.contains("Supervisor mode"), "{args:?}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_addon_without_homeassistant_api_says_so() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let mut cmd = ingestor(&sim, &["addon", "--options", "/nonexistent/options.json"]);
    cmd.env_remove("SUPERVISOR_TOKEN");
    let (code, text) = output(cmd).await;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("homeassistant_api: true"), "{text}");

    // A wrong token: refused for good (exit 3), not retried.
    let dir = tempfile::tempdir().unwrap();
    let options = dir.path().join("options.json");
    std::fs::write(&options, "{}").unwrap();
    let mut cmd = ingestor(
        &sim,
        &[
            "addon",
            "--options",
            options.to_str().unwrap(),
            "--data",
            dir.path().to_str().unwrap(),
        ],
    );
    cmd.env("SUPERVISOR_TOKEN", "not-the-token")
        .env("HA_INGESTOR_METRICS_ADDR", "127.0.0.1:0");
    let (code, text) = output(cmd).await;
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("Invalid access"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_comes_from_systemds_credentials_directory() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(
        creds.join("ha-token"),
        format!("{}\n", sim.config().user_token),
    )
    .unwrap();
    let db = dir.path().join("check.db");
    let mut cmd = ingestor(&sim, &["check", "--db", db.to_str().unwrap()]);
    cmd.env_remove("SUPERVISOR_TOKEN")
        .env("HASS_SERVER", sim.url())
        .env("CREDENTIALS_DIRECTORY", &creds);
    let (code, text) = output(cmd).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("systemd's credential") && text.contains("accepted"),
        "{text}"
    );

    // Without the file: the error names the way to give it.
    std::fs::remove_file(creds.join("ha-token")).unwrap();
    let mut cmd = ingestor(&sim, &["check", "--db", db.to_str().unwrap()]);
    cmd.env_remove("SUPERVISOR_TOKEN")
        .env("HASS_SERVER", sim.url())
        .env("CREDENTIALS_DIRECTORY", &creds);
    let (code, text) = output(cmd).await;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("LoadCredential=ha-token"), "{text}");
}

/// `init --non-interactive`, then `check` of the config it wrote: from nothing to a config that
/// works, with a token from HASS_TOKEN and with one a login creates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_a_config_that_check_accepts() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let init_at = |server: &str, name: &str, extra: &[&str]| {
        let config = dir.path().join(format!("{name}.toml"));
        let token = dir.path().join(format!("{name}-token"));
        let db = dir.path().join(format!("{name}.db"));
        let mut args = vec![
            "init".to_string(),
            "--non-interactive".into(),
            "--server".into(),
            server.to_string(),
            "--config-out".into(),
            config.display().to_string(),
            "--token-out".into(),
            token.display().to_string(),
            "--db".into(),
            db.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = ingestor(&sim, &args);
        cmd.env_remove("SUPERVISOR_TOKEN")
            .env_remove("HASS_PASSWORD");
        (cmd, config, token)
    };
    let url = sim.url();
    let init = |name: &str, extra: &[&str]| init_at(&url, name, extra);
    let check = |config: &Path| {
        let mut cmd = ingestor(&sim, &["--config", config.to_str().unwrap(), "check"]);
        cmd.env_remove("SUPERVISOR_TOKEN");
        cmd
    };

    // A token from the environment.
    let (mut cmd, config, token) = init("env", &[]);
    cmd.env("HASS_TOKEN", &sim.config().user_token);
    let (code, text) = output(cmd).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("ha-ingestor --config"),
        "it says how to start: {text}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is private");
    assert_eq!(
        std::fs::read_to_string(&token).unwrap().trim(),
        sim.config().user_token
    );
    let (code, text) = output(check(&config)).await;
    assert_eq!(code, 0, "check of the written config: {text}");

    // Again: nothing is overwritten without --force.
    let (mut cmd, _, _) = init("env", &[]);
    cmd.env("HASS_TOKEN", &sim.config().user_token);
    let (code, text) = output(cmd).await;
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("already exists") && text.contains("--force"),
        "{text}"
    );

    // A login that creates a long-lived token.
    let (cmd, config, token) = init("login", &["--username", "user", "--password-stdin"]);
    let (code, text) = output_with_stdin(cmd, Some("user-pass\n")).await;
    assert_eq!(code, 0, "{text}");
    let created = std::fs::read_to_string(&token).unwrap();
    assert_ne!(created.trim(), sim.config().user_token, "a new token");
    let (code, text) = output(check(&config)).await;
    assert_eq!(code, 0, "check of the written config: {text}");

    // A URL where no HA answers: the check fails and nothing is left behind.
    let (mut cmd, config, token) = init_at("http://127.0.0.1:9", "nohost", &[]);
    cmd.env("HASS_TOKEN", &sim.config().user_token);
    let (code, text) = output(cmd).await;
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("nothing was written"), "{text}");
    assert!(!config.exists() && !token.exists(), "nothing left behind");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("init-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Nothing to take the token from: named.
    let (cmd, config, _) = init("none", &[]);
    let (code, text) = output(cmd).await;
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("HASS_TOKEN") && text.contains("--username"),
        "{text}"
    );
    assert!(!config.exists(), "no config written");
}
