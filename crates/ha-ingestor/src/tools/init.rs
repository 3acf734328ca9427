//! `init`: from nothing to running. Asks for Home Assistant's URL and a token (pasted, or made by
//! logging in as `login` does), checks the connection as `check` does, writes the token file
//! (0600) and a commented config file, and prints how to start. `--non-interactive` takes
//! everything from flags and the environment, for scripts.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use super::login::LoginOptions;
use super::{ConnectionOptions, TokenOutput, ToolError, ensure_writable_target};

/// The URL offered when none is given: HA's own default.
const DEFAULT_URL: &str = "http://homeassistant.local:8123";

/// Options of `init`: its command-line arguments as they are.
#[derive(Clone, Debug, clap::Args)]
pub struct InitOptions {
    /// HA's URL [asked for; default http://homeassistant.local:8123].
    #[arg(long, env = "HASS_SERVER")]
    pub server: Option<String>,
    /// Log in as this user to create a long-lived token (else a token from HASS_TOKEN, or
    /// pasted).
    #[arg(long, env = "HASS_USERNAME")]
    pub username: Option<String>,
    /// Read the password from the first line of stdin (else HASS_PASSWORD, or asked).
    #[arg(long)]
    pub password_stdin: bool,
    /// The current TOTP code, for a user with two-factor authentication.
    #[arg(long, env = "HASS_TOTP_CODE")]
    pub totp_code: Option<String>,
    /// Where the config file goes.
    #[arg(long, default_value = "ha-ingestor.toml")]
    pub config_out: PathBuf,
    /// Where the token goes [default: ha-token beside the config file].
    #[arg(long)]
    pub token_out: Option<PathBuf>,
    /// The database the config names.
    #[arg(long, env = "HA_INGESTOR_DB", default_value = "ha-ingestor.db")]
    pub db: PathBuf,
    /// A CA file to trust (a self-signed HA).
    #[arg(long, env = "HASS_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Ask nothing: take everything from flags and the environment, fail naming what is
    /// missing.
    #[arg(long)]
    pub non_interactive: bool,
    /// Replace an existing config or token file.
    #[arg(long)]
    pub force: bool,
}

/// Runs `init`.
pub async fn init(opts: &InitOptions) -> Result<(), ToolError> {
    let interactive = !opts.non_interactive && std::io::stdin().is_terminal();
    let token_path = opts.token_out.clone().unwrap_or_else(|| {
        opts.config_out
            .parent()
            .unwrap_or(Path::new("."))
            .join("ha-token")
    });
    // Settled before anything is asked or sent: nothing is overwritten by accident.
    ensure_writable_target(&opts.config_out, opts.force, "config file")?;
    ensure_writable_target(&token_path, opts.force, "token file")?;

    let server = match opts.server.clone().filter(|s| !s.trim().is_empty()) {
        Some(s) => s,
        None if interactive => ask(&format!("Home Assistant URL [{DEFAULT_URL}]: "))?
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_URL.into()),
        None => {
            return Err(ToolError::usage(
                "init --non-interactive needs the URL: --server or HASS_SERVER",
            ));
        }
    };
    ha_client::HaUrl::parse(&server).map_err(|e| ToolError::usage(e.to_string()))?;
    let conn = ConnectionOptions {
        server: Some(server.clone()),
        ca_file: opts.ca_file.clone(),
        db: Some(opts.db.clone()),
        ..ConnectionOptions::default()
    };

    // The token: HASS_TOKEN, a pasted one, or a login that creates one.
    let env_token = std::env::var("HASS_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty());
    let pasted = match (&env_token, &opts.username) {
        (Some(_), _) | (None, Some(_)) => None,
        (None, None) if interactive => ask(
            "Paste a long-lived token (your HA profile page, Security tab), or press Enter to \
             log in with a username and password: ",
        )?
        .filter(|t| !t.is_empty()),
        (None, None) => {
            return Err(ToolError::usage(
                "init --non-interactive needs a token: HASS_TOKEN, or --username with \
                 --password-stdin (or HASS_PASSWORD) to log in and create one",
            ));
        }
    };
    // The token is kept only once the check passed: a wrong URL leaves nothing behind that a
    // second try would have to --force away.
    let staged = staged_path(&token_path);
    let _ = std::fs::remove_file(&staged);
    let created_by_login = env_token.is_none() && pasted.is_none();
    match env_token.or(pasted) {
        Some(token) => {
            super::write_secret_file(&staged, format!("{}\n", token.trim()).as_bytes(), true)?
        }
        None => {
            let login = LoginOptions {
                username: opts.username.clone(),
                password_stdin: opts.password_stdin,
                totp_code: opts.totp_code.clone(),
                token: TokenOutput {
                    name: None,
                    lifespan_days: 3650,
                    out: Some(staged.clone()),
                    force: true,
                    print: false,
                },
                oauth: false,
                oauth_state_file: None,
                client_id: None,
            };
            super::login::login(&conn, &login).await?;
        }
    }

    eprintln!("checking the connection:");
    let checked = ConnectionOptions {
        token_file: Some(staged.clone()),
        ..conn
    };
    if let Err(mut e) = super::check::check(&checked, false).await {
        let _ = std::fs::remove_file(&staged);
        e.message.push_str("; nothing was written");
        if created_by_login {
            e.message.push_str(
                " (the long-lived token the login created stays in Home Assistant: revoke it on \
                 your profile page, Security tab)",
            );
        }
        return Err(e);
    }
    std::fs::rename(&staged, &token_path).map_err(|e| {
        ToolError::other(format!(
            "cannot move the token to {}: {e}",
            token_path.display()
        ))
    })?;

    let config = config_text(&server, &token_path, &opts.db, opts.ca_file.as_deref());
    std::fs::write(&opts.config_out, config).map_err(|e| {
        ToolError::other(format!("cannot write {}: {e}", opts.config_out.display()))
    })?;
    let config_path = std::fs::canonicalize(&opts.config_out).unwrap_or(opts.config_out.clone());
    crate::outln!(
        "wrote {} and {} (mode 0600)\n\nstart it:\n  ha-ingestor --config {} run\n\nor as a \
         service: packaging/systemd/ha-ingestor.service (README, Install)",
        opts.config_out.display(),
        token_path.display(),
        config_path.display()
    );
    Ok(())
}

/// Where the token waits for the check: beside its final place (so the rename stays on one
/// filesystem).
fn staged_path(token: &Path) -> PathBuf {
    let mut name = token.file_name().unwrap_or_default().to_os_string();
    name.push(".init-tmp");
    token.with_file_name(name)
}

/// One line from the terminal, trimmed; `None` at end of input.
fn ask(prompt: &str) -> Result<Option<String>, ToolError> {
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let n = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| ToolError::other(format!("cannot read the answer: {e}")))?;
    Ok((n > 0).then(|| line.trim().to_string()))
}

/// The config file `init` writes: what it set, and the common next steps commented out.
fn config_text(server: &str, token: &Path, db: &Path, ca_file: Option<&Path>) -> String {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let ca = match ca_file {
        Some(ca) => format!("ca_file = {:?}\n", absolute(ca)),
        None => "# ca_file = \"/etc/ha-ingestor/ha-ca.pem\"   # a self-signed HA\n".into(),
    };
    format!(
        r#"# ha-ingestor configuration, written by `ha-ingestor init`. Reference: README.md.

# The SQLite database every state change goes to.
db = {db:?}
# /metrics (Prometheus) and /health.
metrics_addr = "127.0.0.1:9464"

[[instance]]
name = "home"
url = {server:?}
# The long-lived token (mode 0600). Revoke it in HA's profile page, Security tab.
token_file = {token:?}
{ca}# subscribe = "all"    # every event, not only state changes (needs an admin's token)

# Which entities to keep (HA's include/exclude semantics); everything by default.
# [filter.include]
# domains = ["sensor", "binary_sensor"]
# [filter.exclude]
# entity_globs = ["sensor.*_rssi"]

# Bound the database; the oldest rows go first.
# [store]
# max_db_bytes = 2_000_000_000

# Forward to InfluxDB (HA's own schema by default) ...
# [[sink]]
# name = "influx"
# [sink.influxdb]
# url = "http://127.0.0.1:8086"
# database = "home_assistant"

# ... or PostgreSQL.
# [[sink]]
# name = "pg"
# [sink.postgres]
# dsn = "host=127.0.0.1 user=ha dbname=ha"
# password_file = "/etc/ha-ingestor/pg-password"
"#,
        db = absolute(db),
        token = absolute(token),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The written file is a config the loader takes, with what init set.
    #[test]
    fn the_config_text_loads() {
        let text = config_text(
            "http://ha.lan:8123",
            Path::new("/etc/ha-ingestor/ha-token"),
            Path::new("/var/lib/ha-ingestor/ha.db"),
            None,
        );
        let file = crate::config::parse(&text).unwrap();
        let config =
            crate::config::Config::resolve(file, crate::config::Overrides::default()).unwrap();
        assert_eq!(config.db, Path::new("/var/lib/ha-ingestor/ha.db"));
        let inst = &config.instances[0];
        assert_eq!(inst.url.as_deref(), Some("http://ha.lan:8123"));
        assert_eq!(
            inst.token_file.as_deref(),
            Some(Path::new("/etc/ha-ingestor/ha-token"))
        );
    }
}
