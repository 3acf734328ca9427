//! Setup and token tooling beside `run`: [`login`], [`token`] (create, list, revoke),
//! [`sign_path`] and [`check`].
//!
//! Every tool resolves its Home Assistant the way `run` does ([`ConnectionOptions`]: the config
//! file, `--server`/`HASS_SERVER`, `--token-file`/`HASS_TOKEN_FILE`, `HASS_TOKEN`, `--ca-file`,
//! `--insecure`) and fails with the same exit codes: 2 configuration or usage, 3 authentication,
//! 1 anything else. Human messages go to stderr; results (a URL, a table, JSON) to stdout.
//! Tokens and passwords never appear in any output, except a new token with `--print-token`.

pub mod check;
pub mod init;
pub mod login;
pub mod sign_path;
pub mod token;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ha_client::Error as ClientError;
use ha_client::auth::TokenSource;
use ha_client::ws::WsClient;

use crate::config::{Config, InstanceConfig, Overrides};
use crate::credentials::{ha_url, tls_options, token_source};
use crate::source::SourceError;

/// A tool's failure: the exit code and one message in plain words.
#[derive(Debug)]
pub struct ToolError {
    /// 1 other, 2 configuration or usage, 3 authentication.
    pub code: u8,
    /// What went wrong and the fix.
    pub message: String,
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ToolError {
    /// Exit code 2.
    pub fn usage(message: impl Into<String>) -> Self {
        ToolError {
            code: 2,
            message: message.into(),
        }
    }

    /// Exit code 3.
    pub fn auth(message: impl Into<String>) -> Self {
        ToolError {
            code: 3,
            message: message.into(),
        }
    }

    /// Exit code 1.
    pub fn other(message: impl Into<String>) -> Self {
        ToolError {
            code: 1,
            message: message.into(),
        }
    }

    /// A client error, with what was being done.
    pub fn client(doing: &str, e: &ClientError) -> Self {
        ToolError {
            code: client_exit_code(e),
            message: format!("{doing}: {e}"),
        }
    }
}

/// The exit code of a client error.
pub fn client_exit_code(e: &ClientError) -> u8 {
    if e.is_final() {
        3
    } else if matches!(
        e,
        ClientError::Config(_) | ClientError::InvalidUrl { .. } | ClientError::Tls(_)
    ) {
        2
    } else {
        1
    }
}

impl From<SourceError> for ToolError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Config { .. } => ToolError::usage(e.to_string()),
            SourceError::Auth { ref source, .. } => ToolError {
                code: client_exit_code(source),
                message: e.to_string(),
            },
        }
    }
}

/// The connection options every command shares with `run`.
#[derive(Clone, Debug, Default)]
pub struct ConnectionOptions {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--server` / `HASS_SERVER`.
    pub server: Option<String>,
    /// `--token-file` / `HASS_TOKEN_FILE`.
    pub token_file: Option<PathBuf>,
    /// `--ca-file` / `HASS_CA_FILE`.
    pub ca_file: Option<PathBuf>,
    /// `--insecure`.
    pub insecure: bool,
    /// `--instance`: which `[[instance]]` of the config file.
    pub instance: Option<String>,
    /// `--db` / `HA_INGESTOR_DB` (`check` only).
    pub db: Option<PathBuf>,
}

impl ConnectionOptions {
    /// Loads the configuration as `run` does, with `--ca-file`/`--insecure` applied.
    pub fn load(&self) -> Result<Config, ToolError> {
        let overrides = Overrides {
            server: self.server.clone(),
            token_file: self.token_file.clone(),
            db: self.db.clone(),
            supervisor: crate::config::SupervisorAccess::from_env(),
            ..Overrides::default()
        };
        let mut config = Config::load(self.config.as_deref(), overrides)
            .map_err(|e| ToolError::usage(e.to_string()))?;
        if let Some(name) = &self.instance {
            let names: Vec<String> = config.instances.iter().map(|i| i.name.clone()).collect();
            config.instances.retain(|i| &i.name == name);
            if config.instances.is_empty() {
                return Err(ToolError::usage(format!(
                    "--instance '{name}': the configuration has no such [[instance]] (it has: {})",
                    names.join(", ")
                )));
            }
        }
        apply_tls_overrides(&mut config, self.ca_file.clone(), self.insecure)
            .map_err(ToolError::usage)?;
        Ok(config)
    }

    /// The one instance a tool works on.
    pub fn instance(&self) -> Result<(Config, InstanceConfig), ToolError> {
        let config = self.load()?;
        if config.instances.len() > 1 {
            let names: Vec<&str> = config.instances.iter().map(|i| i.name.as_str()).collect();
            return Err(ToolError::usage(format!(
                "the configuration has several [[instance]] entries ({}); choose one with --instance NAME",
                names.join(", ")
            )));
        }
        let inst = config.instances[0].clone();
        Ok((config, inst))
    }
}

/// What the Supervisor's token cannot do, for the commands that need a user's own token.
pub const SUPERVISOR_LIMITS: &str = "in Supervisor mode (SUPERVISOR_TOKEN set, no url) Home \
    Assistant is reached through the Supervisor's Core proxy as the Supervisor's admin user, which \
    is enough to ingest, backfill and import; but the token is not a user's own, so long-lived \
    tokens (`token create/list/revoke`) and `login` do not apply: set url and a token (or run \
    outside the add-on) to use them";

/// Refuses a command that needs a user's own token in Supervisor mode.
pub fn refuse_in_supervisor_mode(inst: &InstanceConfig, command: &str) -> Result<(), ToolError> {
    match inst.supervisor {
        true => Err(ToolError::usage(format!("{command}: {SUPERVISOR_LIMITS}"))),
        false => Ok(()),
    }
}

/// Applies `--ca-file` and `--insecure` to the configuration's single instance (as `--server`
/// does). Used by `run` too.
pub fn apply_tls_overrides(
    config: &mut Config,
    ca_file: Option<PathBuf>,
    insecure: bool,
) -> Result<(), String> {
    if ca_file.is_none() && !insecure {
        return Ok(());
    }
    if config.instances.len() > 1 {
        return Err(
            "--ca-file/HASS_CA_FILE and --insecure apply to a single instance, but the config file has \
             several [[instance]] entries; set ca_file or danger_accept_invalid_certs in each (or pick one \
             with --instance)"
                .into(),
        );
    }
    let inst = &mut config.instances[0];
    if let Some(ca) = ca_file {
        inst.ca_file = Some(ca);
    }
    if insecure {
        inst.danger_accept_invalid_certs = true;
    }
    Ok(())
}

/// The instance's URL (validated by the config loader).
pub fn url_of(inst: &InstanceConfig) -> &str {
    inst.url.as_deref().unwrap_or_default()
}

/// Opens an authenticated WebSocket to the instance with a given token source. No retry: a CLI
/// wants the error.
pub async fn connect_with(
    inst: &InstanceConfig,
    tokens: Arc<dyn TokenSource>,
) -> Result<WsClient, ToolError> {
    let tls = tls_options(inst).map_err(|e| ToolError::usage(e.to_string()))?;
    WsClient::builder(ha_url(inst).map_err(|e| ToolError::usage(e.to_string()))?)
        .shared_token_source(tokens)
        .tls(tls)
        .ping(None, std::time::Duration::from_secs(20))
        .connect()
        .await
        .map_err(|e| ToolError::client("connecting to Home Assistant", &e))
}

/// Opens an authenticated WebSocket with the instance's configured token.
pub async fn connect(inst: &InstanceConfig) -> Result<WsClient, ToolError> {
    let tokens = token_source(inst)?;
    connect_with(inst, tokens).await
}

/// Fails unless `path` may be written: it must not exist (unless `force`) and its directory must.
pub fn ensure_writable_target(path: &Path, force: bool, what: &str) -> Result<(), ToolError> {
    if path.exists() && !force {
        return Err(ToolError::usage(format!(
            "{what} {} already exists; refusing to overwrite it (pass --force to replace it)",
            path.display()
        )));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(ToolError::usage(format!(
            "{what} {}: the directory {} does not exist",
            path.display(),
            parent.display()
        )));
    }
    Ok(())
}

/// Writes a secret to a file created with mode 0600. Without `force` the file must not exist
/// (created exclusively); with it, it is replaced atomically.
pub fn write_secret_file(path: &Path, data: &[u8], force: bool) -> Result<(), ToolError> {
    let fail =
        |e: std::io::Error| ToolError::other(format!("cannot write {}: {e}", path.display()));
    if force {
        return crate::credentials::write_private(path, data).map_err(fail);
    }
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            ToolError::usage(format!(
                "{} already exists; refusing to overwrite it (pass --force to replace it)",
                path.display()
            ))
        } else {
            fail(e)
        }
    })?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(fail)
}

/// This machine's host name (for default token names).
pub fn hostname() -> String {
    let from_file = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The default name of a long-lived token: `ha-ingestor@<hostname>`.
pub fn default_token_name() -> String {
    format!("ha-ingestor@{}", hostname())
}

/// Where a new long-lived token goes, and how it is named.
#[derive(Clone, Debug)]
pub struct TokenOutput {
    /// `--token-name`; default `ha-ingestor@<hostname>` (with ` (2)`, ` (3)`... when taken).
    pub name: Option<String>,
    /// `--lifespan-days`.
    pub lifespan_days: u32,
    /// `--token-out`.
    pub out: Option<PathBuf>,
    /// `--force`: replace an existing file.
    pub force: bool,
    /// `--print-token`: print the token on stdout.
    pub print: bool,
}

/// A short Unix-time-free rendering of HA's ISO 8601 times: `2024-03-10 12:34:56 UTC`.
pub fn short_time(iso: &str) -> String {
    match iso.parse::<jiff::Timestamp>() {
        Ok(ts) => ts.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => iso.to_string(),
    }
}

/// Writes a line to standard output. A reader that closed the pipe (`ha-ingestor demo | head -1`)
/// ends the process quietly, as other command-line tools do, where `println!` would panic.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::tools::write_stdout_line(format_args!($($arg)*))
    };
}

/// See [`outln!`].
pub fn write_stdout_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("ha-ingestor: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_file_is_private_and_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        write_secret_file(&path, b"one", false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let err = write_secret_file(&path, b"two", false).unwrap_err();
        assert_eq!(err.code, 2);
        assert!(err.message.contains("--force"), "{err}");
        assert!(ensure_writable_target(&path, false, "token file").is_err());
        assert!(ensure_writable_target(&path, true, "token file").is_ok());
        write_secret_file(&path, b"two", true).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        let missing = dir.path().join("nope/token");
        assert!(
            ensure_writable_target(&missing, false, "token file")
                .unwrap_err()
                .message
                .contains("does not exist")
        );
    }

    #[test]
    fn names_and_times() {
        assert!(default_token_name().starts_with("ha-ingestor@"));
        assert_eq!(
            short_time("2024-03-10T12:34:56.123456+00:00"),
            "2024-03-10 12:34:56 UTC"
        );
        assert_eq!(short_time("garbage"), "garbage");
    }
}
