//! Credentials and TLS settings: of an HA instance, where its token comes from (a static token,
//! a file, an environment variable, or OAuth tokens refreshed and saved back), the CA to trust,
//! and private files for secrets; and the sinks' passwords and tokens (a file or a variable).
//! Used by the source, the history import, the sinks and the setup tools alike, so each reads
//! them one way.

use std::sync::Arc;

use ha_client::auth::{OAuth2TokenSource, OAuthTokens, StaticToken, TokenSource};
use ha_client::{Error as ClientError, TlsOptions};

use crate::config::InstanceConfig;
use crate::source::SourceError;

/// Builds the token source an instance is configured with.
pub fn token_source(inst: &InstanceConfig) -> Result<Arc<dyn TokenSource>, SourceError> {
    let config_err = |message: String| SourceError::Config {
        instance: inst.name.clone(),
        message,
    };
    if let Some(token) = &inst.token {
        return Ok(Arc::new(StaticToken::from(token.clone())));
    }
    if let Some(path) = &inst.oauth_state_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| config_err(format!("oauth_state_file {}: {e}", path.display())))?;
        let tokens = OAuthTokens::from_json(&text).map_err(|e| {
            config_err(format!(
                "oauth_state_file {} is not an OAuth token file: {e}",
                path.display()
            ))
        })?;
        let path = path.clone();
        let source = OAuth2TokenSource::builder(tokens)
            .tls(tls_options(inst).map_err(|e| config_err(e.to_string()))?)
            .on_update(move |t| {
                if let Err(e) = write_private(&path, t.to_json().as_bytes()) {
                    tracing::error!(path = %path.display(), %e, "cannot save the refreshed OAuth tokens");
                }
            })
            .build()
            .map_err(|e| config_err(e.to_string()))?;
        return Ok(Arc::new(source));
    }
    if let Some(path) = &inst.token_file {
        let token = std::fs::read_to_string(path)
            .map_err(|e| config_err(format!("token_file {}: {e}", path.display())))?;
        if token.trim().is_empty() {
            return Err(config_err(format!(
                "token_file {} is empty",
                path.display()
            )));
        }
        return Ok(Arc::new(StaticToken::new(token)));
    }
    let var = inst.token_env.as_deref().unwrap_or("HASS_TOKEN");
    match std::env::var(var) {
        Ok(token) if !token.trim().is_empty() => return Ok(Arc::new(StaticToken::new(token))),
        _ => {}
    }
    // systemd's `LoadCredential=ha-token:...` (see packaging/systemd): the default only.
    if inst.token_env.is_none()
        && let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY")
    {
        let path = std::path::Path::new(&dir).join(SYSTEMD_CREDENTIAL);
        match std::fs::read_to_string(&path) {
            Ok(token) if !token.trim().is_empty() => {
                return Ok(Arc::new(StaticToken::new(token)));
            }
            Ok(_) => {
                return Err(config_err(format!(
                    "the credential {} is empty",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(config_err(format!("credential {}: {e}", path.display()))),
        }
    }
    Err(config_err(format!(
        "no token: set {var} (or HASS_TOKEN_FILE / token_file, oauth_state_file, or systemd's \
         LoadCredential={SYSTEMD_CREDENTIAL}:<file>); a long-lived token comes from your HA \
         profile page"
    )))
}

/// The name of the token among systemd's credentials (`$CREDENTIALS_DIRECTORY/ha-token`).
pub const SYSTEMD_CREDENTIAL: &str = "ha-token";

/// The instance's base URL: as configured, or the Supervisor's Core proxy (add-on mode).
pub fn ha_url(inst: &InstanceConfig) -> Result<ha_client::HaUrl, ClientError> {
    let url = inst.url.as_deref().unwrap_or_default();
    match inst.supervisor {
        true => ha_client::HaUrl::supervisor_proxy(url),
        false => ha_client::HaUrl::parse(url),
    }
}

/// Writes a file readable by its owner only, atomically (temp file + rename).
pub fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The instance's TLS options.
pub fn tls_options(inst: &InstanceConfig) -> Result<TlsOptions, ClientError> {
    let mut tls =
        TlsOptions::default().danger_accept_invalid_certs(inst.danger_accept_invalid_certs);
    if let Some(ca) = &inst.ca_file {
        tls = tls.add_ca_file(ca)?;
    }
    Ok(tls)
}

/// Reads a secret from a file (trimmed) or an environment variable; `None` when neither is set.
pub fn read_secret(
    file: Option<&std::path::Path>,
    env: Option<&str>,
    what: &str,
) -> Result<Option<ha_client::Secret>, String> {
    match (file, env) {
        (Some(_), Some(_)) => Err(format!("set only one of {what}_file and {what}_env")),
        (Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {what}_file {}: {e}", path.display()))?;
            let value = text.trim();
            if value.is_empty() {
                return Err(format!("{what}_file {} is empty", path.display()));
            }
            Ok(Some(ha_client::Secret::new(value)))
        }
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(ha_client::Secret::new(v.trim()))),
            _ => Err(format!(
                "{what}_env names {var}, but that variable is unset or empty"
            )),
        },
        (None, None) => Ok(None),
    }
}
