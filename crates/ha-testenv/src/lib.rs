//! Test support shared by the crates' test suites.
//!
//! - [`RealHa`]: the real Home Assistant that `scripts/real-ha.sh start` runs on loopback, with its
//!   users and credentials. Tests that need it live behind the `real-ha` cargo feature and **fail**
//!   when it is missing; they never pass vacuously.
//! - [`CountingProxy`]: a TCP proxy on loopback that records the request line of every connection,
//!   so a test can count what a client really sent to the real server.
//! - [`totp`]: RFC 6238 codes for the MFA user.
//! - [`LogCapture`]: collects everything `tracing` writes, to prove no secret reaches a log.
//! - [`CutProxy`]: a TCP proxy whose connections a test can cut, for network failures.
//! - [`TlsProxy`]: a TLS terminator with a test CA made at start, in front of a plain server (the
//!   simulator), for the clients' TLS paths.

mod cut_proxy;
mod tls_proxy;
pub use cut_proxy::CutProxy;
pub use tls_proxy::{DEFAULT_TLS_NAMES, TlsProxy};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A user of the real HA.
#[derive(Clone, Debug, Deserialize)]
pub struct RealHaUser {
    /// Login name.
    pub username: String,
    /// Password.
    pub password: String,
    /// A long-lived access token, when the harness made one.
    #[serde(default)]
    pub long_lived_token: Option<String>,
    /// The TOTP secret (base32), for the MFA user.
    #[serde(default)]
    pub totp_secret: Option<String>,
}

/// The real Home Assistant started by `scripts/real-ha.sh start`.
#[derive(Clone, Debug, Deserialize)]
pub struct RealHa {
    /// Base URL, e.g. `http://127.0.0.1:18123`.
    pub url: String,
    /// A client_id HA accepts for this URL.
    pub client_id: String,
    /// HA's version.
    pub ha_version: String,
    /// The owner (admin).
    pub admin: RealHaUser,
    /// A non-admin user (group system-users).
    pub user: RealHaUser,
    /// A non-admin user with TOTP enabled.
    pub mfa: RealHaUser,
}

impl RealHa {
    /// Reads the harness's `env.json` (path in `HA_TEST_ENV`, default `target/real-ha/env.json` of
    /// the workspace). Panics with the fix when it is missing: a real-HA test must fail, not skip.
    pub fn from_env() -> RealHa {
        let path = Self::env_path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "the real Home Assistant is not running ({}: {e}); start it with `bash scripts/real-ha.sh start`",
                path.display()
            )
        });
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not a harness env file: {e}", path.display()))
    }

    /// Where the harness's `env.json` is: `HA_TEST_ENV`, default `target/real-ha/env.json`.
    pub fn env_path() -> PathBuf {
        std::env::var_os("HA_TEST_ENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/real-ha/env.json")
            })
    }

    /// The harness's HA configuration folder: `config/` beside `env.json` (`HA_DIR/config`).
    pub fn config_dir() -> PathBuf {
        Self::env_path()
            .parent()
            .map(|dir| dir.join("config"))
            .unwrap_or_default()
    }

    /// `host:port` of the HA.
    pub fn addr(&self) -> SocketAddr {
        let rest = self.url.split("://").nth(1).unwrap_or(&self.url);
        rest.trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("HA url {} is not ip:port: {e}", self.url))
    }

    /// Every secret of the environment, to check that none reaches a log.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        for u in [&self.admin, &self.user, &self.mfa] {
            out.push(u.password.clone());
            out.extend(u.long_lived_token.clone());
            out.extend(u.totp_secret.clone());
        }
        out
    }
}

/// A real HA a test runs against, with what most tests need: the harness's (2024.3.3, see
/// [`RealHa`]) or the current release's (2026.2.3, `scripts/real-ha-current/up.sh`). `Debug`
/// leaves the tokens out.
#[derive(Clone)]
pub struct HaTarget {
    /// Base URL.
    pub url: String,
    /// HA's version.
    pub version: String,
    /// A long-lived token of the owner (admin).
    pub admin_token: String,
    /// A long-lived token of a non-admin user.
    pub user_token: String,
    /// HA's configuration folder (its recorder database is `home-assistant_v2.db` there).
    pub config_dir: PathBuf,
}

impl std::fmt::Debug for HaTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HaTarget")
            .field("url", &self.url)
            .field("version", &self.version)
            .field("config_dir", &self.config_dir)
            .finish_non_exhaustive()
    }
}

impl HaTarget {
    /// The harness's HA ([`RealHa::from_env`]).
    pub fn harness() -> HaTarget {
        let ha = RealHa::from_env();
        HaTarget {
            url: ha.url,
            version: ha.ha_version,
            admin_token: ha
                .admin
                .long_lived_token
                .expect("the harness made an admin token"),
            user_token: ha
                .user
                .long_lived_token
                .expect("the harness made a user token"),
            config_dir: RealHa::config_dir(),
        }
    }

    /// The current release's HA: the credentials file `scripts/real-ha-current/up.sh` printed, in
    /// `HA_CURRENT_ENV`. Panics with the fix when it is missing: the test must fail, not skip.
    pub fn current() -> HaTarget {
        #[derive(Deserialize)]
        struct Creds {
            url: String,
            ha_version: String,
            long_lived_token: String,
            non_admin_token: String,
            config_dir: PathBuf,
        }
        let path = std::env::var_os("HA_CURRENT_ENV").map(PathBuf::from).unwrap_or_else(|| {
            panic!("HA_CURRENT_ENV is not set: start the current HA with `bash scripts/real-ha-current/up.sh` and export HA_CURRENT_ENV=<the path it prints>")
        });
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("the current HA is not running ({}: {e})", path.display()));
        let c: Creds = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{} is not a credentials file of up.sh: {e}", path.display())
        });
        HaTarget {
            url: c.url,
            version: c.ha_version,
            admin_token: c.long_lived_token,
            user_token: c.non_admin_token,
            config_dir: c.config_dir,
        }
    }
}

/// A loopback TCP proxy that records the first request line of each connection.
///
/// Make the client open one connection per request (`pool_max_idle_per_host(0)`) and every
/// request is seen.
pub struct CountingProxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl CountingProxy {
    /// Starts a proxy to `upstream` on an ephemeral port. It runs until the runtime ends.
    pub async fn start(upstream: SocketAddr) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy addr"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let _ = relay(client, upstream, seen).await;
                });
            }
        });
        CountingProxy { url, lines }
    }

    /// The request lines seen so far, e.g. `POST /auth/token HTTP/1.1`.
    pub fn requests(&self) -> Vec<String> {
        self.lines.lock().expect("proxy lines").clone()
    }

    /// How many requests started with `prefix` (e.g. `"POST /auth/token "`).
    pub fn count(&self, prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }

    /// Forgets what was seen.
    pub fn reset(&self) {
        self.lines.lock().expect("proxy lines").clear();
    }
}

async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 4096];
    // Read until the request line is complete; forward those bytes, then splice the rest.
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let end = head.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
    let line = String::from_utf8_lossy(&head[..end]).into_owned();
    seen.lock().expect("proxy lines").push(line);
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(&head).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

/// The current RFC 6238 TOTP code (SHA-1, 30 s, 6 digits) for a base32 secret.
pub fn totp(secret_base32: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    totp_at(secret_base32, now)
}

/// The TOTP code at a given Unix time.
pub fn totp_at(secret_base32: &str, unix: u64) -> String {
    let cleaned: String = secret_base32
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let key = data_encoding::BASE32_NOPAD
        .decode(cleaned.as_bytes())
        .expect("TOTP secret is not base32");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&key).expect("hmac key");
    mac.update(&(unix / 30).to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let bin = (u32::from(digest[offset] & 0x7f) << 24)
        | (u32::from(digest[offset + 1]) << 16)
        | (u32::from(digest[offset + 2]) << 8)
        | u32::from(digest[offset + 3]);
    format!("{:06}", bin % 1_000_000)
}

/// Captures all `tracing` output (every level, every crate, every thread) of the process.
#[derive(Clone, Default)]
pub struct LogCapture {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl LogCapture {
    /// Installs a TRACE-level subscriber as the process-wide default. Call it once, first thing, in
    /// a test binary of its own (the default can be set only once per process).
    pub fn install_global() -> LogCapture {
        let capture = LogCapture::default();
        let writer = capture.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        capture
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().expect("log buffer")).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.lock().expect("log buffer").extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totp_matches_rfc6238_vector() {
        // RFC 6238 appendix B, SHA-1, secret "12345678901234567890", T=59 -> 94287082 (8 digits).
        let secret = data_encoding::BASE32_NOPAD.encode(b"12345678901234567890");
        assert_eq!(totp_at(&secret, 59), "287082");
        assert_eq!(totp_at(&secret, 1111111109), "081804");
    }
}
