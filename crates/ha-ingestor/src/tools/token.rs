//! `token create`, `token list`, `token revoke`: the user's refresh tokens over the WebSocket API.

use std::path::PathBuf;

use ha_client::Error as ClientError;
use ha_client::auth::{OAuthClient, OAuthTokens};
use ha_client::ws::WsClient;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ConnectionOptions, TokenOutput, ToolError, connect, ensure_writable_target};
use crate::credentials::tls_options;

/// One entry of `auth/refresh_tokens`: metadata only; HA never sends the secret.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct TokenInfo {
    /// The refresh token id (what `revoke` takes).
    pub id: String,
    /// The OAuth client_id (`None` for long-lived tokens).
    #[serde(default)]
    pub client_id: Option<String>,
    /// The name given at creation (long-lived tokens).
    #[serde(default)]
    pub client_name: Option<String>,
    /// `normal` (a login), `long_lived_access_token` or `system`.
    #[serde(rename = "type")]
    pub kind: String,
    /// ISO 8601.
    #[serde(default)]
    pub created_at: Option<String>,
    /// ISO 8601.
    #[serde(default)]
    pub last_used_at: Option<String>,
    /// The address it was last used from.
    #[serde(default)]
    pub last_used_ip: Option<String>,
    /// The token this connection authenticated with.
    #[serde(default)]
    pub is_current: bool,
}

impl TokenInfo {
    /// The name shown: the client name, else the client_id, else the id.
    pub fn name(&self) -> &str {
        self.client_name
            .as_deref()
            .or(self.client_id.as_deref())
            .unwrap_or(&self.id)
    }

    /// The type in plain words.
    pub fn kind_label(&self) -> &str {
        match self.kind.as_str() {
            "long_lived_access_token" => "long-lived",
            "normal" => "login",
            other => other,
        }
    }
}

/// The connected user's refresh tokens.
pub async fn list_tokens(ws: &WsClient) -> Result<Vec<TokenInfo>, ToolError> {
    ws.command(json!({"type": "auth/refresh_tokens"}))
        .await
        .map_err(|e| ToolError::client("listing the tokens (auth/refresh_tokens)", &e))
}

/// Picks the token name: the requested one if free, else the default with ` (2)`, ` (3)`... HA
/// refuses a name the user already has with a bare `unknown_error`, so it is checked first.
pub async fn choose_name(ws: &WsClient, requested: Option<&str>) -> Result<String, ToolError> {
    let existing = list_tokens(ws).await?;
    let taken = |n: &str| existing.iter().any(|t| t.client_name.as_deref() == Some(n));
    match requested {
        Some(name) if name.trim().is_empty() => {
            Err(ToolError::usage("--token-name must not be empty"))
        }
        Some(name) if taken(name) => Err(ToolError::usage(format!(
            "this user already has a token named '{name}' (names must be unique per user); choose \
             another --token-name, or remove the old one with `ha-ingestor token revoke '{name}'`"
        ))),
        Some(name) => Ok(name.to_string()),
        None => {
            let base = super::default_token_name();
            if !taken(&base) {
                return Ok(base);
            }
            (2..)
                .map(|i| format!("{base} ({i})"))
                .find(|n| !taken(n))
                .ok_or_else(|| ToolError::other("no free token name"))
        }
    }
}

/// Creates a long-lived token on `ws` and delivers it as `out` says. Returns the name used.
pub async fn create_and_deliver(ws: &WsClient, out: &TokenOutput) -> Result<String, ToolError> {
    let name = choose_name(ws, out.name.as_deref()).await?;
    let token = ws
        .create_long_lived_token(&name, out.lifespan_days, None)
        .await
        .map_err(|e| match &e {
            ClientError::Command { code, .. } if code == "unknown_error" => ToolError::other(format!(
                "Home Assistant refused to create the token '{name}' (unknown_error); the usual cause is \
                 a token of that name that already exists for this user: choose another --token-name \
                 or remove the old one with `ha-ingestor token revoke '{name}'`"
            )),
            _ => ToolError::client("creating a long-lived token", &e),
        })?;
    if let Some(path) = &out.out {
        let mut text = token.expose().to_string();
        text.push('\n');
        super::write_secret_file(path, text.as_bytes(), out.force)?;
        eprintln!(
            "long-lived token '{name}' (valid {} days) written to {} (mode 0600)",
            out.lifespan_days,
            path.display()
        );
    }
    if out.print {
        crate::outln!("{}", token.expose());
    }
    Ok(name)
}

/// `token create`: a new long-lived token, made with the configured one.
pub async fn create(conn: &ConnectionOptions, out: &TokenOutput) -> Result<(), ToolError> {
    let (_, inst) = conn.instance()?;
    super::refuse_in_supervisor_mode(&inst, "token create")?;
    if out.out.is_none() && !out.print {
        return Err(ToolError::usage(
            "say where the new token goes: --token-out FILE (created with mode 0600) or --print-token",
        ));
    }
    if let Some(path) = &out.out {
        ensure_writable_target(path, out.force, "token file")?;
    }
    let ws = connect(&inst).await?;
    let result = create_and_deliver(&ws, out).await;
    ws.close();
    result.map(|_| ())
}

/// `token list`.
pub async fn list(conn: &ConnectionOptions, as_json: bool) -> Result<(), ToolError> {
    let (_, inst) = conn.instance()?;
    super::refuse_in_supervisor_mode(&inst, "token list")?;
    let ws = connect(&inst).await?;
    let user = ws
        .current_user()
        .await
        .map_err(|e| ToolError::client("auth/current_user", &e))?;
    let mut tokens = list_tokens(&ws).await?;
    ws.close();
    tokens.sort_by(|a, b| a.created_at.cmp(&b.created_at));
    if as_json {
        let text =
            serde_json::to_string_pretty(&tokens).map_err(|e| ToolError::other(e.to_string()))?;
        crate::outln!("{text}");
        return Ok(());
    }
    crate::outln!(
        "Tokens of user '{}' (* = the one used now):",
        user.name.as_deref().unwrap_or(&user.id)
    );
    let rows: Vec<[String; 5]> = tokens
        .iter()
        .map(|t| {
            [
                format!("{}{}", if t.is_current { "* " } else { "  " }, t.name()),
                t.kind_label().to_string(),
                t.created_at
                    .as_deref()
                    .map(super::short_time)
                    .unwrap_or_default(),
                t.last_used_at
                    .as_deref()
                    .map(super::short_time)
                    .unwrap_or_else(|| "never".into()),
                t.id.clone(),
            ]
        })
        .collect();
    let header = ["  NAME", "TYPE", "CREATED", "LAST USED", "ID"].map(String::from);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(rows.iter()) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(rows.iter()) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        crate::outln!("{}", line.join("  ").trim_end());
    }
    Ok(())
}

/// `token revoke`: by name or id (`auth/delete_refresh_token`), or the refresh token of an OAuth
/// state file (`/auth/revoke`).
pub async fn revoke(
    conn: &ConnectionOptions,
    target: Option<&str>,
    oauth_state_file: Option<&PathBuf>,
) -> Result<(), ToolError> {
    if let Some(path) = oauth_state_file {
        return revoke_oauth_file(conn, path).await;
    }
    let Some(target) = target else {
        return Err(ToolError::usage(
            "say which token: `token revoke NAME_OR_ID`, or `token revoke --oauth-state-file FILE`",
        ));
    };
    let (_, inst) = conn.instance()?;
    super::refuse_in_supervisor_mode(&inst, "token revoke")?;
    let ws = connect(&inst).await?;
    let result = revoke_on(&ws, target).await;
    ws.close();
    result
}

async fn revoke_on(ws: &WsClient, target: &str) -> Result<(), ToolError> {
    let tokens = list_tokens(ws).await?;
    let by_id: Vec<&TokenInfo> = tokens.iter().filter(|t| t.id == target).collect();
    let matches = if by_id.is_empty() {
        let by_name: Vec<&TokenInfo> = tokens
            .iter()
            .filter(|t| t.client_name.as_deref() == Some(target))
            .collect();
        if by_name.is_empty() {
            tokens
                .iter()
                .filter(|t| t.client_name.is_none() && t.client_id.as_deref() == Some(target))
                .collect()
        } else {
            by_name
        }
    } else {
        by_id
    };
    let token = match matches.as_slice() {
        [one] => *one,
        [] => {
            return Err(ToolError::other(format!(
                "this user has no token named '{target}' and none with that id; `ha-ingestor token list` shows them"
            )));
        }
        several => {
            let ids: Vec<&str> = several.iter().map(|t| t.id.as_str()).collect();
            return Err(ToolError::usage(format!(
                "'{target}' names {} tokens; revoke one by id: {}",
                several.len(),
                ids.join(", ")
            )));
        }
    };
    let deleted = ws
        .command::<serde_json::Value>(
            json!({"type": "auth/delete_refresh_token", "refresh_token_id": token.id}),
        )
        .await;
    match deleted {
        Ok(_) => {}
        // Revoking the token in use: HA closes this connection at once, before the answer.
        Err(ClientError::ConnectionLost { .. } | ClientError::Closed) if token.is_current => {}
        Err(e) => {
            return Err(ToolError::client(
                "revoking the token (auth/delete_refresh_token)",
                &e,
            ));
        }
    }
    eprintln!(
        "revoked {} token '{}' (id {}){}",
        token.kind_label(),
        token.name(),
        token.id,
        if token.is_current {
            "; it was the token this command used, so it no longer works either"
        } else {
            ""
        }
    );
    Ok(())
}

async fn revoke_oauth_file(conn: &ConnectionOptions, path: &PathBuf) -> Result<(), ToolError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ToolError::usage(format!("oauth state file {}: {e}", path.display())))?;
    let tokens = OAuthTokens::from_json(&text).map_err(|e| {
        ToolError::usage(format!(
            "{} is not an OAuth token file (from `ha-ingestor login --oauth`): {e}",
            path.display()
        ))
    })?;
    // TLS settings from the usual options when they resolve; the URL is the one in the file.
    let tls = match conn.instance() {
        Ok((_, inst)) => tls_options(&inst).map_err(|e| ToolError::usage(e.to_string()))?,
        Err(_) => {
            let mut tls =
                ha_client::TlsOptions::default().danger_accept_invalid_certs(conn.insecure);
            if let Some(ca) = &conn.ca_file {
                tls = tls
                    .add_ca_file(ca)
                    .map_err(|e| ToolError::usage(e.to_string()))?;
            }
            tls
        }
    };
    let oauth = OAuthClient::with_tls(tokens.hass_url.clone(), tokens.client_id.clone(), &tls)
        .map_err(|e| ToolError::client("OAuth client", &e))?;
    oauth
        .revoke(&tokens.refresh_token)
        .await
        .map_err(|e| ToolError::client("revoking the OAuth refresh token (/auth/revoke)", &e))?;
    std::fs::remove_file(path).map_err(|e| {
        ToolError::other(format!(
            "the refresh token is revoked, but {} could not be removed: {e}",
            path.display()
        ))
    })?;
    eprintln!(
        "revoked the OAuth refresh token of {} and removed the file",
        path.display()
    );
    Ok(())
}
