//! `login`: HA's login flow (username, password, TOTP), then a long-lived token or OAuth tokens
//! in a 0600 file.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ha_client::auth::{Credentials, OAuthClient, StaticToken};
use ha_client::{Error as ClientError, HaUrl, Secret};

use super::{ConnectionOptions, TokenOutput, ToolError, ensure_writable_target, url_of};
use crate::credentials::tls_options;

/// The default OAuth client_id: HA accepts any http(s) URL and, since the redirect URI is on the
/// same origin, fetches nothing.
pub const DEFAULT_CLIENT_ID: &str = "http://localhost/ha-ingestor";

/// Options of `login`.
#[derive(Clone, Debug)]
pub struct LoginOptions {
    /// `--username` / `HASS_USERNAME`; prompted for on a terminal when missing.
    pub username: Option<String>,
    /// `--password-stdin`: the first line of stdin is the password.
    pub password_stdin: bool,
    /// `--totp-code` / `HASS_TOTP_CODE`; prompted for on a terminal when MFA asks and it is missing.
    pub totp_code: Option<String>,
    /// Where the long-lived token goes.
    pub token: TokenOutput,
    /// `--oauth`: keep OAuth2 tokens (refresh token plus client_id) instead.
    pub oauth: bool,
    /// `--oauth-state-file`.
    pub oauth_state_file: Option<PathBuf>,
    /// `--client-id`.
    pub client_id: Option<String>,
}

/// Runs `login`.
pub async fn login(conn: &ConnectionOptions, opts: &LoginOptions) -> Result<(), ToolError> {
    let (_, inst) = conn.instance()?;
    super::refuse_in_supervisor_mode(&inst, "login")?;
    // Where the result goes is settled before anything is sent to HA.
    let mut token_out = opts.token.clone();
    let oauth_file = if opts.oauth {
        let path = opts
            .oauth_state_file
            .clone()
            .or_else(|| inst.oauth_state_file.clone())
            .ok_or_else(|| {
                ToolError::usage(
                    "--oauth needs --oauth-state-file FILE (or oauth_state_file in the [[instance]])",
                )
            })?;
        ensure_writable_target(&path, token_out.force, "oauth state file")?;
        Some(path)
    } else {
        if token_out.out.is_none() {
            token_out.out = inst.token_file.clone();
        }
        if token_out.out.is_none() && !token_out.print {
            return Err(ToolError::usage(
                "say where the token goes: --token-out FILE (created with mode 0600; or --token-file / \
                 HASS_TOKEN_FILE / token_file, where `run` reads it), or --print-token",
            ));
        }
        if let Some(path) = &token_out.out {
            ensure_writable_target(path, token_out.force, "token file")?;
        }
        None
    };

    let username = read_username(opts.username.clone())?;
    let password = read_password(opts.password_stdin)?;
    let credentials = Credentials::new(username.clone(), password);

    let base = HaUrl::parse(url_of(&inst)).map_err(|e| ToolError::usage(e.to_string()))?;
    let tls = tls_options(&inst).map_err(|e| ToolError::usage(e.to_string()))?;
    // One connection per request: a login is a handful of requests, and each is then visible on
    // its own to a proxy that counts them.
    let http = tls
        .reqwest_builder()
        .map_err(|e| ToolError::usage(e.to_string()))?
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| ToolError::other(format!("HTTP client: {e}")))?;
    let client_id = opts
        .client_id
        .clone()
        .unwrap_or_else(|| DEFAULT_CLIENT_ID.to_string());
    let oauth = OAuthClient::with_http_client(http, base, client_id)
        .map_err(|e| ToolError::usage(e.to_string()))?;

    let totp = opts.totp_code.clone();
    let mfa = move |module: &str| -> Result<Secret, ClientError> {
        if let Some(code) = &totp {
            return Ok(Secret::new(code.trim()));
        }
        if !std::io::stdin().is_terminal() {
            return Err(ClientError::MfaRequired {
                module: module.to_string(),
            });
        }
        eprint!("Two-factor code ({module}): ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| ClientError::Config(format!("cannot read the code: {e}")))?;
        Ok(Secret::new(line.trim()))
    };
    let tokens = oauth
        .login(&credentials, Some(&mfa))
        .await
        .map_err(|e| login_error(&username, &e))?;

    if let Some(path) = oauth_file {
        let mut json = tokens.to_json();
        json.push('\n');
        super::write_secret_file(&path, json.as_bytes(), token_out.force)?;
        eprintln!(
            "logged in as '{username}'; OAuth tokens (refresh token and client_id) written to {} \
             (mode 0600). Use it with oauth_state_file = \"{}\" in the [[instance]]; the ingestor \
             keeps it up to date",
            path.display(),
            path.display()
        );
        return Ok(());
    }

    let access = Arc::new(StaticToken::from(tokens.access_token.clone()));
    let result = async {
        let ws = super::connect_with(&inst, access).await?;
        let created = super::token::create_and_deliver(&ws, &token_out).await;
        ws.close();
        created
    }
    .await;
    // The login's own refresh token is not needed any more: revoke it so it does not linger in
    // the user's token list.
    if let Err(e) = oauth.revoke(&tokens.refresh_token).await {
        eprintln!("warning: could not revoke the login session's refresh token: {e}");
    }
    let name = result?;
    eprintln!("logged in as '{username}'; created the long-lived token '{name}'");
    Ok(())
}

fn login_error(username: &str, e: &ClientError) -> ToolError {
    match e {
        ClientError::InvalidCredentials => ToolError::auth(format!(
            "login failed: Home Assistant rejected the username '{username}' or its password. Not \
             retried: HA counts every failed login toward banning this address"
        )),
        ClientError::InvalidMfaCode => ToolError::auth(
            "login failed: Home Assistant rejected the two-factor code (invalid_code); not retried. \
             Check the authenticator app's clock and use a fresh code",
        ),
        ClientError::MfaRequired { module } => ToolError::auth(format!(
            "this user has two-factor authentication ({module}); pass the current code with \
             --totp-code or HASS_TOTP_CODE, or run login on a terminal to be asked for it"
        )),
        other => ToolError::client("login", other),
    }
}

/// The username: given, or asked for on a terminal.
fn read_username(given: Option<String>) -> Result<String, ToolError> {
    if let Some(u) = given.filter(|u| !u.trim().is_empty()) {
        return Ok(u.trim().to_string());
    }
    if !std::io::stdin().is_terminal() {
        return Err(ToolError::usage(
            "no username: pass --username (or HASS_USERNAME); there is no terminal to ask on",
        ));
    }
    eprint!("Username: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| ToolError::other(format!("cannot read the username: {e}")))?;
    let name = line.trim().to_string();
    if name.is_empty() {
        return Err(ToolError::usage("no username given"));
    }
    Ok(name)
}

/// The password: stdin's first line (`--password-stdin`), `HASS_PASSWORD`, or asked for on the
/// terminal without echo.
fn read_password(from_stdin: bool) -> Result<Secret, ToolError> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| ToolError::other(format!("cannot read the password from stdin: {e}")))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else if let Ok(p) = std::env::var("HASS_PASSWORD") {
        p
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Password: ")
            .map_err(|e| ToolError::other(format!("cannot read the password: {e}")))?
    } else {
        return Err(ToolError::usage(
            "no terminal to ask for the password on: pipe it with --password-stdin, or set HASS_PASSWORD",
        ));
    };
    if password.is_empty() {
        return Err(ToolError::usage("the password is empty"));
    }
    Ok(Secret::new(password))
}
