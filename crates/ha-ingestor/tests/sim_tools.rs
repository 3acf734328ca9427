//! The setup tools against the simulator: the password prompt through a pseudo-terminal (no
//! echo), and a smoke run of every command.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ha_sim::{Sim, SimConfig};

fn bin(dir: &Path, server: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ha-ingestor"));
    for var in [
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
    c.env("HASS_SERVER", server).current_dir(dir);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_prompt_does_not_echo() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    // rexpect turns the pty's echo off at fork; a real terminal has it on: `stty echo` first.
    let mut cmd = bin(dir.path(), &sim.url());
    cmd.args(["login", "--token-out"]).arg(&file);
    let mut shell = Command::new("sh");
    shell
        .arg("-c")
        .arg("stty echo && exec \"$0\" \"$@\"")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .current_dir(dir.path());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => shell.env(k, v),
            None => shell.env_remove(k),
        };
    }
    let cmd = shell;
    let password = "admin-pass";
    let transcript = tokio::task::spawn_blocking(move || {
        let mut p = rexpect::session::spawn_command(cmd, Some(30_000)).expect("spawn in a pty");
        p.exp_string("Username: ").expect("username prompt");
        p.send_line("admin").unwrap();
        let before = p.exp_string("Password: ").expect("password prompt");
        // The prompt is up, so the terminal's echo is off by now: type the password.
        p.send_line(password).unwrap();
        let after = p.exp_eof().expect("ha-ingestor ends");
        let status = p.process_mut().wait().unwrap();
        // The terminal echoes what is typed at a normal prompt (the username)...
        assert!(
            before.contains("admin"),
            "no echo of the username: {before:?}"
        );
        (format!("{before}Password: {after}"), status)
    })
    .await
    .unwrap();
    let (text, status) = transcript;
    let status = format!("{status:?}");
    assert!(
        status.starts_with("Exited(") && status.ends_with(", 0)"),
        "{status}\n{text}"
    );
    // ...but not the password.
    assert!(!text.contains(password), "the password was echoed:\n{text}");
    assert!(text.contains("written to"), "{text}");
    let token = std::fs::read_to_string(&file).unwrap();
    assert!(!token.trim().is_empty());
    assert!(!text.contains(token.trim()), "the token was shown:\n{text}");
    sim.shutdown().await;
}

fn run(mut cmd: Command, stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    use std::process::Stdio;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("ha-ingestor did not finish within 60 s: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_against_the_simulator() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let url = sim.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = d.join("token");
        // Wrong password: exit 3, one line.
        let mut cmd = bin(&d, &url);
        cmd.args([
            "login",
            "--username",
            "user",
            "--password-stdin",
            "--print-token",
        ]);
        let (code, out, err) = run(cmd, "wrong\n");
        assert_eq!(code, 3, "{out}{err}");
        assert!(out.is_empty());
        // No terminal and no password source: a usage error before anything is sent.
        let mut cmd = bin(&d, &url);
        cmd.args(["login", "--username", "user", "--print-token"]);
        let (code, _, err) = run(cmd, "");
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--password-stdin"), "{err}");
        // --token is refused.
        let mut cmd = bin(&d, &url);
        cmd.args(["check", "--token", "abc"]);
        let (code, _, err) = run(cmd, "");
        assert_eq!(code, 2, "{err}");

        let mut cmd = bin(&d, &url);
        cmd.args([
            "login",
            "--username",
            "user",
            "--password-stdin",
            "--token-out",
        ])
        .arg(&file);
        let (code, out, err) = run(cmd, "user-pass\n");
        assert_eq!(code, 0, "{out}{err}");

        let mut cmd = bin(&d, &url);
        cmd.args(["token", "list", "--json"])
            .env("HASS_TOKEN_FILE", &file);
        let (code, out, err) = run(cmd, "");
        assert_eq!(code, 0, "{err}");
        let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        assert!(
            list.iter().any(|t| t["client_name"]
                .as_str()
                .unwrap_or("")
                .starts_with("ha-ingestor@")),
            "{out}"
        );

        let mut cmd = bin(&d, &url);
        cmd.args(["sign-path", "/api/states", "--expires", "1m"])
            .env("HASS_TOKEN_FILE", &file);
        let (code, out, err) = run(cmd, "");
        assert_eq!(code, 0, "{err}");
        assert!(out.trim().contains("authSig="), "{out}");

        let mut cmd = bin(&d, &url);
        cmd.args(["check", "--json"]).env("HASS_TOKEN_FILE", &file);
        let (code, out, err) = run(cmd, "");
        assert_eq!(code, 0, "{out}{err}");
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(doc["ok"], true, "{out}");
    })
    .await
    .unwrap();
    sim.shutdown().await;
}

/// `ha-ingestor demo | head -1`: the reader closes the pipe; the demo ends quietly instead of
/// panicking in its output.
#[test]
fn a_closed_stdout_ends_the_demo_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ha-ingestor"))
        .args([
            "demo",
            "--events",
            "200",
            "--metrics-addr",
            "127.0.0.1:0",
            "--db",
        ])
        .arg(dir.path().join("demo.db"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader is gone before anything is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
