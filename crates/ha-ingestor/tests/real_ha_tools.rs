//! The setup tools (`login`, `token`, `sign-path`, `check`) as a user runs them: the built binary
//! against a real Home Assistant (`scripts/real-ha.sh start`).
#![cfg(feature = "real-ha")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ha_testenv::{CountingProxy, RealHa, totp};

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// The binary with a clean environment (no HASS_* from the caller).
fn bin(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ha-ingestor"));
    for var in [
        "HASS_SERVER",
        "HASS_TOKEN",
        "HASS_TOKEN_FILE",
        "HASS_CA_FILE",
        "HASS_USERNAME",
        "HASS_PASSWORD",
        "HASS_TOTP_CODE",
        "HA_INGESTOR_CONFIG",
        "HA_INGESTOR_DB",
        "RUST_LOG",
    ] {
        c.env_remove(var);
    }
    c.current_dir(dir);
    c
}

/// Runs it with `stdin` and waits at most 60 s (then kills it and fails).
fn run(mut cmd: Command, stdin: &str) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ha-ingestor");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ha-ingestor did not finish within 60 s: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Async tests run the binary off the runtime's workers (a proxy may be running on them).
async fn run_async(cmd: Command, stdin: &str) -> Output {
    let stdin = stdin.to_string();
    tokio::task::spawn_blocking(move || run(cmd, &stdin))
        .await
        .unwrap()
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn api_status(ha: &RealHa, token: &str) -> u16 {
    blocking_get(&format!("{}/api/", ha.url), Some(token)).0
}

/// A GET with reqwest on its own runtime: (status, body).
fn blocking_get(url: &str, token: Option<&str>) -> (u16, String) {
    let url = url.to_string();
    let token = token.map(str::to_owned);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let http = ha_client::TlsOptions::default()
                .reqwest_builder()
                .unwrap()
                .build()
                .unwrap();
            let mut req = http.get(&url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    })
    .join()
    .unwrap()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn assert_no_secret(ha: &RealHa, out: &Output, extra: &[&str]) {
    let text = out.all();
    for s in ha
        .secrets()
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
    {
        assert!(!text.contains(s), "a secret reached the output:\n{text}");
    }
}

/// Revokes a token by name with the token itself (cleanup).
fn revoke_with(ha: &RealHa, dir: &Path, token_file: &Path, name: &str) {
    let mut cmd = bin(dir);
    cmd.args(["token", "revoke", name, "--server", &ha.url, "--token-file"])
        .arg(token_file);
    let out = run(cmd, "");
    assert_eq!(out.code, 0, "{}", out.all());
}

#[test]
fn login_writes_a_private_token_that_works() {
    let ha = RealHa::from_env();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let name = unique("tools-login");
    let mut cmd = bin(dir.path());
    cmd.args([
        "login",
        "--server",
        &ha.url,
        "--username",
        &ha.user.username,
    ])
    .args([
        "--password-stdin",
        "--lifespan-days",
        "1",
        "--token-name",
        &name,
    ])
    .arg("--token-out")
    .arg(&file);
    let out = run(cmd, &format!("{}\n", ha.user.password));
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(mode(&file), 0o600);
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(!token.is_empty());
    assert_no_secret(&ha, &out, &[&token]);
    assert!(out.stderr.contains(&name), "{}", out.stderr);
    assert_eq!(api_status(&ha, &token), 200);

    // A second login does not overwrite the file.
    let mut cmd = bin(dir.path());
    cmd.args([
        "login",
        "--server",
        &ha.url,
        "--username",
        &ha.user.username,
    ])
    .args(["--password-stdin", "--token-out"])
    .arg(&file);
    let again = run(cmd, &format!("{}\n", ha.user.password));
    assert_eq!(again.code, 2, "{}", again.all());
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);

    revoke_with(&ha, dir.path(), &file, &name);
}

/// Lines of HA's log that record a failed login on the login flow.
fn failed_login_lines(ha_log: &Path) -> usize {
    std::fs::read_to_string(ha_log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("invalid authentication") && l.contains("/auth/login_flow/"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_once_with_exit_3() {
    let ha = RealHa::from_env();
    let ha_log = std::env::var_os("HA_TEST_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/real-ha/env.json")
        })
        .with_file_name("ha.log");
    let logged_before = failed_login_lines(&ha_log);
    let proxy = CountingProxy::start(ha.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let mut cmd = bin(dir.path());
    cmd.args([
        "login",
        "--server",
        &proxy.url,
        "--username",
        &ha.user.username,
    ])
    .args(["--password-stdin", "--token-out"])
    .arg(&file);
    let wrong = "not-the-password-42";
    let out = run_async(cmd, &format!("{wrong}\n")).await;
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(
        out.stderr.contains("rejected the username") && out.stderr.contains("Not retried"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(!out.all().contains(wrong));
    assert!(!file.exists());
    assert_eq!(
        proxy.count("POST /auth/login_flow/"),
        1,
        "requests: {:?}",
        proxy.requests()
    );
    // HA's log records exactly one failed attempt.
    if ha_log.exists() {
        let deadline = Instant::now() + Duration::from_secs(15);
        while failed_login_lines(&ha_log) <= logged_before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(failed_login_lines(&ha_log), logged_before + 1);
    }
}

#[test]
fn login_with_totp_code() {
    let ha = RealHa::from_env();
    let secret = ha
        .mfa
        .totp_secret
        .clone()
        .expect("the harness enables TOTP for mfa");
    let dir = tempfile::tempdir().unwrap();

    // Without a code (and no terminal to ask on): HA's MFA step is reported, exit 3.
    let mut cmd = bin(dir.path());
    cmd.args(["login", "--server", &ha.url, "--username", &ha.mfa.username])
        .args(["--password-stdin", "--print-token"]);
    let out = run(cmd, &format!("{}\n", ha.mfa.password));
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(out.stderr.contains("--totp-code"), "{}", out.stderr);

    let file = dir.path().join("token");
    let name = unique("tools-mfa");
    let mut cmd = bin(dir.path());
    cmd.args(["login", "--server", &ha.url, "--username", &ha.mfa.username])
        .args([
            "--password-stdin",
            "--token-name",
            &name,
            "--lifespan-days",
            "1",
        ])
        .arg("--token-out")
        .arg(&file)
        .env("HASS_TOTP_CODE", totp(&secret));
    let out = run(cmd, &format!("{}\n", ha.mfa.password));
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(mode(&file), 0o600);
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_eq!(api_status(&ha, &token), 200);
    assert_no_secret(&ha, &out, &[&token]);
    revoke_with(&ha, dir.path(), &file, &name);
}

#[test]
fn token_create_list_and_revoke() {
    let ha = RealHa::from_env();
    let dir = tempfile::tempdir().unwrap();
    let admin_token = ha.admin.long_lived_token.clone().unwrap();
    let name = unique("tools-create");
    let file = dir.path().join("new-token");
    let mut cmd = bin(dir.path());
    cmd.args([
        "token",
        "create",
        "--server",
        &ha.url,
        "--token-name",
        &name,
    ])
    .args(["--lifespan-days", "1", "--token-out"])
    .arg(&file)
    .env("HASS_TOKEN", &admin_token);
    let out = run(cmd, "");
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(mode(&file), 0o600);
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_eq!(api_status(&ha, &token), 200);

    // The same name again: refused before HA is asked, with a clear message.
    let mut cmd = bin(dir.path());
    cmd.args([
        "token",
        "create",
        "--server",
        &ha.url,
        "--token-name",
        &name,
    ])
    .arg("--print-token")
    .env("HASS_TOKEN", &admin_token);
    let dup = run(cmd, "");
    assert_eq!(dup.code, 2, "{}", dup.all());
    assert!(
        dup.stderr.contains("already has a token named"),
        "{}",
        dup.stderr
    );
    assert!(dup.stdout.trim().is_empty());

    // list: the name, the type; never a secret.
    let list = |json: bool| {
        let mut cmd = bin(dir.path());
        cmd.args(["token", "list", "--server", &ha.url])
            .env("HASS_TOKEN", &admin_token);
        if json {
            cmd.arg("--json");
        }
        run(cmd, "")
    };
    let out = list(false);
    assert_eq!(out.code, 0, "{}", out.all());
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains(&name))
        .unwrap_or_else(|| panic!("{name} not listed:\n{}", out.stdout));
    assert!(line.contains("long-lived"), "{line}");
    assert_no_secret(&ha, &out, &[&token]);
    let out = list(true);
    assert_eq!(out.code, 0, "{}", out.all());
    let tokens: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    let entry = tokens
        .iter()
        .find(|t| t["client_name"] == name.as_str())
        .expect("listed in JSON");
    assert_eq!(entry["type"], "long_lived_access_token");
    assert!(entry["created_at"].is_string());
    assert_no_secret(&ha, &out, &[&token]);

    // revoke by name: gone from the list, and it no longer authenticates.
    let mut cmd = bin(dir.path());
    cmd.args(["token", "revoke", &name, "--server", &ha.url])
        .env("HASS_TOKEN", &admin_token);
    let out = run(cmd, "");
    assert_eq!(out.code, 0, "{}", out.all());
    let out = list(false);
    assert!(!out.stdout.contains(&name), "{}", out.stdout);
    assert_eq!(api_status(&ha, &token), 401);

    // An unknown name: exit 1, nothing revoked.
    let mut cmd = bin(dir.path());
    cmd.args(["token", "revoke", &name, "--server", &ha.url])
        .env("HASS_TOKEN", &admin_token);
    let out = run(cmd, "");
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("no token named"), "{}", out.stderr);
}

#[test]
fn oauth_login_state_file_works_and_revokes() {
    let ha = RealHa::from_env();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("oauth.json");
    let mut cmd = bin(dir.path());
    cmd.args([
        "login",
        "--server",
        &ha.url,
        "--username",
        &ha.user.username,
    ])
    .args(["--password-stdin", "--oauth-state-file"])
    .arg(&state);
    let out = run(cmd, &format!("{}\n", ha.user.password));
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(mode(&state), 0o600);
    let text = std::fs::read_to_string(&state).unwrap();
    let tokens = ha_client::auth::OAuthTokens::from_json(&text).unwrap();
    assert_no_secret(&ha, &out, &[tokens.refresh_token.expose()]);

    // The file as oauth_state_file: check passes.
    let config = dir.path().join("ingestor.toml");
    std::fs::write(
        &config,
        format!(
            "db = \"ha.db\"\n[[instance]]\nurl = \"{}\"\noauth_state_file = \"{}\"\n",
            ha.url,
            state.display()
        ),
    )
    .unwrap();
    let copy = dir.path().join("oauth-copy.json");
    std::fs::copy(&state, &copy).unwrap();
    let mut cmd = bin(dir.path());
    cmd.arg("check").arg("--config").arg(&config);
    let out = run(cmd, "");
    assert_eq!(out.code, 0, "{}", out.all());

    // Revoke through /auth/revoke: the file is removed and the tokens no longer work.
    let mut cmd = bin(dir.path());
    cmd.args(["token", "revoke", "--oauth-state-file"])
        .arg(&state);
    let out = run(cmd, "");
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!state.exists());
    std::fs::write(
        &config,
        format!(
            "db = \"ha.db\"\n[[instance]]\nurl = \"{}\"\noauth_state_file = \"{}\"\n",
            ha.url,
            copy.display()
        ),
    )
    .unwrap();
    let mut cmd = bin(dir.path());
    cmd.arg("check").arg("--config").arg(&config);
    let out = run(cmd, "");
    assert_eq!(out.code, 3, "{}", out.all());
}

#[test]
fn sign_path_gives_a_url_readable_without_header() {
    let ha = RealHa::from_env();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = bin(dir.path());
    cmd.args([
        "sign-path",
        "/api/",
        "--expires",
        "30s",
        "--server",
        &ha.url,
    ])
    .env("HASS_TOKEN", ha.user.long_lived_token.clone().unwrap());
    let out = run(cmd, "");
    assert_eq!(out.code, 0, "{}", out.all());
    let url = out.stdout.trim();
    assert!(
        url.starts_with(&format!("{}/api/?authSig=", ha.url)),
        "{url}"
    );
    let (status, body) = blocking_get(url, None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("API running"), "{body}");
    // Without the signature the same path is refused.
    assert_eq!(blocking_get(&format!("{}/api/", ha.url), None).0, 401);
}

fn check(dir: &Path, args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = bin(dir);
    cmd.arg("check").args(args);
    if let Some(t) = token {
        cmd.env("HASS_TOKEN", t);
    }
    run(cmd, "")
}

#[test]
fn check_passes_and_reports_every_step() {
    let ha = RealHa::from_env();
    let dir = tempfile::tempdir().unwrap();
    let token = ha.user.long_lived_token.clone().unwrap();
    let out = check(dir.path(), &["--server", &ha.url], Some(&token));
    assert_eq!(out.code, 0, "{}", out.all());
    for step in [
        "tcp",
        "http",
        "token",
        "user",
        "ha",
        "subscribe",
        "rtt",
        "db",
    ] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(&format!(" {step} "))),
            "no ok line for {step}:\n{}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("not an admin"), "{}", out.stdout);
    assert!(out.stdout.contains(&ha.ha_version), "{}", out.stdout);
    assert_no_secret(&ha, &out, &[]);

    let out = check(dir.path(), &["--server", &ha.url, "--json"], Some(&token));
    assert_eq!(out.code, 0, "{}", out.all());
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["ok"], true);
    let steps = doc["steps"].as_array().unwrap();
    let ha_step = steps.iter().find(|s| s["step"] == "ha").unwrap();
    assert_eq!(ha_step["status"], "ok");
    assert!(ha_step["message"].as_str().unwrap().contains("RUNNING"));

    // subscribe = "all" with an admin is allowed.
    let config = dir.path().join("admin.toml");
    std::fs::write(
        &config,
        format!("[[instance]]\nurl = \"{}\"\nsubscribe = \"all\"\n", ha.url),
    )
    .unwrap();
    let out = check(
        dir.path(),
        &["--config", config.to_str().unwrap()],
        ha.admin.long_lived_token.as_deref(),
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("all events: allowed"), "{}", out.stdout);
}

#[test]
fn check_fails_on_a_closed_port() {
    let ha = RealHa::from_env();
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let out = check(
        dir.path(),
        &["--server", &url],
        ha.user.long_lived_token.as_deref(),
    );
    assert_eq!(out.code, 1, "{}", out.all());
    let fail = out.stdout.lines().last().unwrap_or_default();
    assert!(
        fail.starts_with("FAIL") && fail.contains("tcp") && fail.contains("refused"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("nothing listens"), "{}", out.stderr);

    let out = check(
        dir.path(),
        &["--server", &url, "--json"],
        ha.user.long_lived_token.as_deref(),
    );
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["failed_step"], "tcp");
}

#[test]
fn check_fails_on_a_bad_token() {
    let ha = RealHa::from_env();
    let dir = tempfile::tempdir().unwrap();
    let out = check(
        dir.path(),
        &["--server", &ha.url],
        Some("not-a-valid-token-1234"),
    );
    assert_eq!(out.code, 3, "{}", out.all());
    let fail = out.stdout.lines().last().unwrap_or_default();
    assert!(
        fail.starts_with("FAIL") && fail.contains("token") && fail.contains("rejected"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("ha-ingestor login"), "{}", out.stdout);
    assert!(!out.all().contains("not-a-valid-token-1234"));
}

#[test]
fn check_fails_for_a_non_admin_with_subscribe_all() {
    let ha = RealHa::from_env();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, ha.user.long_lived_token.clone().unwrap()).unwrap();
    let config = dir.path().join("ingestor.toml");
    std::fs::write(
        &config,
        format!(
            "[[instance]]\nname = \"home\"\nurl = \"{}\"\ntoken_file = \"{}\"\nsubscribe = \"all\"\n",
            ha.url,
            token_file.display()
        ),
    )
    .unwrap();
    let out = check(dir.path(), &["--config", config.to_str().unwrap()], None);
    assert_eq!(out.code, 2, "{}", out.all());
    let fail = out.stdout.lines().last().unwrap_or_default();
    assert!(
        fail.starts_with("FAIL") && fail.contains("subscribe") && fail.contains("needs an admin"),
        "{}",
        out.stdout
    );
}
