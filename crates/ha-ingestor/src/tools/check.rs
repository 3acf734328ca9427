//! `check`: a diagnosis of the setup in plain words, one line per step, stopping at the first
//! failure.
//!
//! Longer than most modules (about 650 lines of code): it is one report read top to bottom, and
//! each step's failure messages and fixes sit beside the step that finds them.
//!
//! Steps per instance: `tcp` (DNS and TCP), `tls` (https only), `http` (HA answers, with
//! `GET /auth/providers`, which needs no token: an unauthenticated `GET /api/` would count as a
//! failed login in HA's ban middleware), `token`, `user`, `ha` (version and state), `subscribe`
//! (the configured subscription is allowed), `rtt`; then `db` (the SQLite sink is writable).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ha_client::auth::TokenSource;
use ha_client::{Client, Error as ClientError, HaUrl, RetryPolicy};
use serde::Serialize;

use super::{ConnectionOptions, ToolError};
use crate::config::{InstanceConfig, Subscribe};
use crate::credentials::{ha_url, tls_options, token_source};

const NET_TIMEOUT: Duration = Duration::from_secs(5);

/// How a step went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but worth knowing (HA still starting, TLS verification off).
    Warn,
    /// Not applicable (TLS on http).
    Skip,
    /// Broken: the check stops here.
    Fail,
}

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// The instance name (empty for global steps).
    pub instance: String,
    /// `config`, `tcp`, `tls`, `http`, `token`, `websocket`, `user`, `ha`, `subscribe`, `rtt`, `db`.
    pub step: &'static str,
    /// Outcome.
    pub status: Status,
    /// What was found, and the fix on failure.
    pub message: String,
    /// Time taken, in milliseconds, where it means something.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms: Option<f64>,
}

struct Report {
    json: bool,
    /// Several instances: lines name theirs.
    multi: bool,
    steps: Vec<Step>,
}

/// A failed step: its exit code.
struct Failed(u8);

impl Report {
    fn add(&mut self, instance: &str, step: &'static str, status: Status, message: String) {
        self.add_timed(instance, step, status, message, None);
    }

    fn add_timed(
        &mut self,
        instance: &str,
        step: &'static str,
        status: Status,
        message: String,
        ms: Option<f64>,
    ) {
        if !self.json {
            let label = match status {
                Status::Ok => "ok",
                Status::Warn => "WARN",
                Status::Skip => "skip",
                Status::Fail => "FAIL",
            };
            let prefix = if instance.is_empty() || !self.multi {
                String::new()
            } else {
                format!("[{instance}] ")
            };
            crate::outln!("{label:<4}  {prefix}{step:<9}  {message}");
        }
        self.steps.push(Step {
            instance: instance.to_string(),
            step,
            status,
            message,
            ms,
        });
    }

    fn fail(&mut self, instance: &str, step: &'static str, code: u8, message: String) -> Failed {
        self.add(instance, step, Status::Fail, message);
        Failed(code)
    }
}

/// Runs `check`.
pub async fn check(conn: &ConnectionOptions, json: bool) -> Result<(), ToolError> {
    let mut report = Report {
        json,
        multi: false,
        steps: Vec::new(),
    };
    let outcome = run_steps(conn, &mut report).await;
    if json {
        let failed = report.steps.iter().find(|s| s.status == Status::Fail);
        let doc = serde_json::json!({
            "ok": outcome.is_ok(),
            "failed_step": failed.map(|s| s.step),
            "steps": report.steps,
        });
        crate::outln!("{doc:#}");
    }
    match outcome {
        Ok(()) => Ok(()),
        Err(Failed(code)) => {
            let step = report
                .steps
                .iter()
                .rev()
                .find(|s| s.status == Status::Fail)
                .map(|s| format!("{}: {}", s.step, s.message))
                .unwrap_or_default();
            Err(ToolError {
                code,
                message: format!("check failed at {step}"),
            })
        }
    }
}

async fn run_steps(conn: &ConnectionOptions, report: &mut Report) -> Result<(), Failed> {
    let config = match conn.load() {
        Ok(c) => c,
        Err(e) => return Err(report.fail("", "config", 2, e.message)),
    };
    report.multi = config.instances.len() > 1;
    report.add(
        "",
        "config",
        Status::Ok,
        match &conn.config {
            Some(p) => format!("{} ({} instance(s))", p.display(), config.instances.len()),
            None => "no config file; flags and environment only".into(),
        },
    );
    for inst in &config.instances {
        check_instance(inst, report).await?;
    }
    check_db(&config.db, report)
}

async fn check_instance(inst: &InstanceConfig, report: &mut Report) -> Result<(), Failed> {
    let name = inst.name.as_str();
    let base = ha_url(inst).map_err(|e| report.fail(name, "config", 2, e.to_string()))?;
    check_tcp(name, &base, report).await?;
    if inst.supervisor {
        // The proxy relays /core/api/ only: no unauthenticated page to probe first.
        report.add(
            name,
            "http",
            Status::Skip,
            format!(
                "Supervisor mode: {base} (REST {base}/api/..., WebSocket {}); {}",
                base.websocket_url(),
                super::SUPERVISOR_LIMITS
            ),
        );
    } else {
        check_http(inst, &base, report).await?;
    }

    // The token, over HTTP first: the plainest answer to "is it valid".
    let tokens: Arc<dyn TokenSource> = match token_source(inst) {
        Ok(t) => t,
        Err(e) => return Err(report.fail(name, "token", 2, e.to_string())),
    };
    let tls = tls_options(inst).map_err(|e| report.fail(name, "tls", 2, e.to_string()))?;
    let http = Client::builder(&base)
        .shared_token_source(tokens.clone())
        .tls(tls)
        .timeout(Duration::from_secs(10))
        .retry_policy(RetryPolicy::never())
        .build()
        .map_err(|e| report.fail(name, "token", 2, e.to_string()))?;
    let started = Instant::now();
    match http.api_status().await {
        Ok(message) => report.add_timed(
            name,
            "token",
            Status::Ok,
            format!(
                "accepted ({}; GET /api/ answered '{message}')",
                token_origin(inst)
            ),
            Some(ms(started)),
        ),
        Err(e @ ClientError::Unauthorized { .. }) => {
            let _ = e;
            return Err(report.fail(
                name,
                "token",
                3,
                format!(
                    "rejected by Home Assistant (HTTP 401; {}): it is invalid, expired or revoked; \
                     {}",
                    token_origin(inst),
                    match inst.supervisor {
                        true => "check that the add-on's config.yaml has homeassistant_api: true",
                        false => "get a new one with `ha-ingestor login`",
                    }
                ),
            ));
        }
        Err(e) => {
            let code = super::client_exit_code(&e);
            return Err(report.fail(name, "token", code, e.to_string()));
        }
    }

    let ws = super::connect_with(inst, tokens)
        .await
        .map_err(|e| report.fail(name, "websocket", e.code, e.message))?;
    let result = check_session(inst, &ws, report).await;
    ws.close();
    result
}

fn token_origin(inst: &InstanceConfig) -> String {
    if inst.supervisor {
        "the add-on's SUPERVISOR_TOKEN".into()
    } else if inst.token.is_some() {
        "token given in memory".into()
    } else if let Some(p) = &inst.oauth_state_file {
        format!("OAuth tokens from {}", p.display())
    } else if let Some(p) = &inst.token_file {
        format!("token from {}", p.display())
    } else if inst.token_env.is_none()
        && std::env::var_os("HASS_TOKEN").is_none()
        && let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY")
    {
        format!(
            "token from systemd's credential {}",
            Path::new(&dir)
                .join(crate::credentials::SYSTEMD_CREDENTIAL)
                .display()
        )
    } else {
        format!(
            "token from ${}",
            inst.token_env.as_deref().unwrap_or("HASS_TOKEN")
        )
    }
}

async fn check_session(
    inst: &InstanceConfig,
    ws: &ha_client::ws::WsClient,
    report: &mut Report,
) -> Result<(), Failed> {
    let name = inst.name.as_str();
    let user = ws
        .current_user()
        .await
        .map_err(|e| report.fail(name, "user", super::client_exit_code(&e), e.to_string()))?;
    let user_name = user.name.clone().unwrap_or_else(|| user.id.clone());
    report.add(
        name,
        "user",
        Status::Ok,
        format!(
            "'{user_name}', {}",
            match (user.is_owner, user.is_admin) {
                (true, _) => "the owner (admin)",
                (false, true) => "an admin",
                (false, false) => "not an admin",
            }
        ),
    );

    let started = Instant::now();
    let ha = ws
        .get_config()
        .await
        .map_err(|e| report.fail(name, "ha", super::client_exit_code(&e), e.to_string()))?;
    let version = ha.version.clone().unwrap_or_else(|| "?".into());
    let state = ha.state.clone().unwrap_or_else(|| "RUNNING".into());
    if state == "RUNNING" {
        report.add_timed(
            name,
            "ha",
            Status::Ok,
            format!("Home Assistant {version}, {state}"),
            Some(ms(started)),
        );
    } else {
        report.add(
            name,
            "ha",
            Status::Warn,
            format!(
                "Home Assistant {version} is {state}, not yet RUNNING: it is starting (or stopping); \
                 the ingestor connects anyway and history fills in once it runs"
            ),
        );
    }

    match inst.subscribe {
        Subscribe::All if !user.is_admin => {
            return Err(report.fail(
                name,
                "subscribe",
                2,
                format!(
                    "subscribe = \"all\" needs an admin user, and '{user_name}' is not one: use \
                     subscribe = \"state_changed\" (the default), or a token of an admin user"
                ),
            ));
        }
        sub => {
            let (event_type, label) = match sub {
                Subscribe::All => (None, "all events"),
                Subscribe::StateChanged => (Some("state_changed"), "state_changed events"),
            };
            match ws.subscribe_events(event_type).await {
                Ok(subscription) => {
                    drop(subscription);
                    report.add(
                        name,
                        "subscribe",
                        Status::Ok,
                        format!("{label}: allowed for this user"),
                    );
                }
                Err(ClientError::CommandUnauthorized { .. }) => {
                    return Err(report.fail(
                        name,
                        "subscribe",
                        2,
                        format!(
                            "{label}: Home Assistant refused the subscription for '{user_name}' \
                             (unauthorized); subscribe = \"all\" needs an admin"
                        ),
                    ));
                }
                Err(e) => {
                    return Err(report.fail(
                        name,
                        "subscribe",
                        super::client_exit_code(&e),
                        e.to_string(),
                    ));
                }
            }
        }
    }

    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        ws.current_user()
            .await
            .map_err(|e| report.fail(name, "rtt", super::client_exit_code(&e), e.to_string()))?;
        times.push(ms(t));
    }
    times.sort_by(f64::total_cmp);
    report.add_timed(
        name,
        "rtt",
        Status::Ok,
        format!(
            "WebSocket round trip {:.1} ms (median of 3; {:.1}..{:.1})",
            times[1], times[0], times[2]
        ),
        Some(times[1]),
    );
    Ok(())
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

async fn check_tcp(name: &str, base: &HaUrl, report: &mut Report) -> Result<(), Failed> {
    let url = base.as_url();
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let started = Instant::now();
    let addrs: Vec<std::net::SocketAddr> =
        match tokio::time::timeout(NET_TIMEOUT, tokio::net::lookup_host((host.as_str(), port)))
            .await
        {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => {
                return Err(report.fail(
                    name,
                    "tcp",
                    1,
                    format!("DNS: cannot resolve '{host}': {e}; check the host name in the URL"),
                ));
            }
            Err(_) => {
                return Err(report.fail(
                    name,
                    "tcp",
                    1,
                    format!(
                        "DNS: no answer for '{host}' within {} s",
                        NET_TIMEOUT.as_secs()
                    ),
                ));
            }
        };
    let mut last = String::from("no address");
    for addr in &addrs {
        match tokio::time::timeout(NET_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => {
                report.add_timed(
                    name,
                    "tcp",
                    Status::Ok,
                    format!("{host}:{port} ({addr}) accepts connections"),
                    Some(ms(started)),
                );
                return Ok(());
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = format!(
                    "connection to {host}:{port} ({addr}) refused: nothing listens there \
                     (Home Assistant is stopped, or the port is wrong; HA's default is 8123)"
                );
            }
            Ok(Err(e)) => last = format!("cannot connect to {host}:{port} ({addr}): {e}"),
            Err(_) => {
                last = format!(
                    "no answer from {host}:{port} ({addr}) within {} s: host down, a firewall, \
                     or a wrong address",
                    NET_TIMEOUT.as_secs()
                )
            }
        }
    }
    Err(report.fail(name, "tcp", 1, last))
}

/// Every message of an error's source chain, joined.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Names a TLS failure and its fix, when `detail` is one.
fn tls_problem(detail: &str) -> Option<String> {
    const FIX: &str = "pass the CA that signed HA's certificate with --ca-file FILE.pem \
                       (HASS_CA_FILE, or ca_file in the [[instance]]); --insecure turns \
                       verification off (dangerous)";
    let lower = detail.to_ascii_lowercase();
    if lower.contains("unknownissuer") || lower.contains("unknown issuer") {
        Some(format!(
            "the certificate is issued by a CA this machine does not trust (self-signed?): {FIX}"
        ))
    } else if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        Some(format!(
            "the certificate is not valid for this host name ({detail}); use the name in the \
             certificate in the URL, or {FIX}"
        ))
    } else if lower.contains("expired") {
        Some(format!("the certificate has expired ({detail})"))
    } else if lower.contains("notvalidyet") {
        Some(format!(
            "the certificate is not valid yet: check this machine's clock ({detail})"
        ))
    } else if lower.contains("invalid peer certificate") || lower.contains("certificate") {
        Some(format!("certificate problem: {detail}; {FIX}"))
    } else if lower.contains("corrupt message")
        || lower.contains("invalidcontenttype")
        || lower.contains("wrong version number")
        || lower.contains("invalid content type")
    {
        Some("the server does not speak TLS on this port: use http:// instead of https://".into())
    } else if lower.contains("tls") || lower.contains("handshake") {
        Some(format!("TLS handshake failed: {detail}"))
    } else {
        None
    }
}

async fn check_http(
    inst: &InstanceConfig,
    base: &HaUrl,
    report: &mut Report,
) -> Result<(), Failed> {
    let name = inst.name.as_str();
    let https = base.scheme() == "https";
    let tls = tls_options(inst).map_err(|e| report.fail(name, "tls", 2, e.to_string()))?;
    let http = tls
        .reqwest_builder()
        .map_err(|e| report.fail(name, "tls", 2, e.to_string()))?
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| report.fail(name, "http", 1, e.to_string()))?;
    let url = base
        .join("auth/providers")
        .map_err(|e| report.fail(name, "http", 2, e.to_string()))?;
    let started = Instant::now();
    let resp = match http.get(url).send().await {
        Ok(r) => r,
        Err(e) => {
            let detail = chain(&e);
            if https && let Some(problem) = tls_problem(&detail) {
                return Err(report.fail(name, "tls", 2, problem));
            }
            let hint = if !https && (detail.contains("closed") || detail.contains("reset")) {
                "; the server closed the connection: does it expect https://?"
            } else {
                ""
            };
            return Err(report.fail(
                name,
                "http",
                1,
                format!(
                    "no HTTP answer: {}{hint}",
                    detail.replace(&base.to_string(), "")
                ),
            ));
        }
    };
    if https {
        if inst.danger_accept_invalid_certs {
            report.add(
                name,
                "tls",
                Status::Warn,
                "certificate verification is OFF (--insecure / danger_accept_invalid_certs)".into(),
            );
        } else {
            report.add(name, "tls", Status::Ok, "certificate verified".into());
        }
    } else {
        report.add(name, "tls", Status::Skip, "plain http (no TLS)".into());
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let providers: Option<Vec<String>> = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let list = v.get("providers").cloned().unwrap_or(v);
            list.as_array().map(|a| {
                a.iter()
                    .filter_map(|p| p.get("type").and_then(|t| t.as_str()).map(str::to_owned))
                    .collect()
            })
        });
    match (status.as_u16(), providers) {
        (200, Some(p)) => {
            report.add_timed(
                name,
                "http",
                Status::Ok,
                format!(
                    "Home Assistant answers at {} (auth providers: {})",
                    base,
                    p.join(", ")
                ),
                Some(ms(started)),
            );
            Ok(())
        }
        (404, _) => Err(report.fail(
            name,
            "http",
            1,
            format!(
                "HTTP 404 for /auth/providers: this is not Home Assistant, or the URL misses a \
                 reverse-proxy path prefix ({base})"
            ),
        )),
        (403, _) => Err(report.fail(
            name,
            "http",
            3,
            "HTTP 403: Home Assistant refuses this address (banned after failed logins? see \
             ip_bans.yaml in HA's config directory)"
                .into(),
        )),
        (code, _) => Err(report.fail(
            name,
            "http",
            1,
            format!("HTTP {code} for /auth/providers: not the answer of a Home Assistant"),
        )),
    }
}

fn check_db(db: &Path, report: &mut Report) -> Result<(), Failed> {
    if db.exists() {
        let result = crate::store::check_writable(db);
        return match result {
            Ok(()) => {
                let size = std::fs::metadata(db).map(|m| m.len()).unwrap_or(0);
                report.add(
                    "",
                    "db",
                    Status::Ok,
                    format!(
                        "SQLite {} is writable ({:.1} MB)",
                        db.display(),
                        size as f64 / 1e6
                    ),
                );
                Ok(())
            }
            Err(e) => Err(report.fail(
                "",
                "db",
                4,
                format!("SQLite {} cannot be written: {e}", db.display()),
            )),
        };
    }
    let dir = match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    let probe = dir.join(format!(".ha-ingestor-check-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            report.add(
                "",
                "db",
                Status::Ok,
                format!(
                    "SQLite {} does not exist yet; it will be created (the directory is writable)",
                    db.display()
                ),
            );
            Ok(())
        }
        Err(e) => Err(report.fail(
            "",
            "db",
            4,
            format!(
                "SQLite {}: cannot create files in {}: {e}",
                db.display(),
                dir.display()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_problems_are_named() {
        let p =
            tls_problem("error sending request: invalid peer certificate: UnknownIssuer").unwrap();
        assert!(p.contains("--ca-file") && p.contains("self-signed"), "{p}");
        let p = tls_problem("received corrupt message of type InvalidContentType").unwrap();
        assert!(p.contains("http://"), "{p}");
        assert!(tls_problem("connection refused").is_none());
    }

    #[test]
    fn db_step() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = Report {
            json: true,
            multi: false,
            steps: Vec::new(),
        };
        let db = dir.path().join("x.db");
        assert!(check_db(&db, &mut report).is_ok());
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE t(x)")
            .unwrap();
        assert!(check_db(&db, &mut report).is_ok());
        assert!(check_db(&dir.path().join("missing/x.db"), &mut report).is_err());
        assert_eq!(report.steps.last().unwrap().status, Status::Fail);
    }
}
