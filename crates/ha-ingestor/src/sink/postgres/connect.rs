//! Reaching the server: the dsn parsed (password kept apart from it, libpq's `sslmode`s taken out
//! and applied with rustls), then connecting. One owner for both, used by the sink and by the
//! fleet's lock session ([`crate::fleet`]).

use std::str::FromStr;
use std::time::Duration;

use ha_client::Secret;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::config::PostgresConfig;
use super::errors::ErrorContext;
use super::tls::{SslModeSetting, TlsSettings};

/// Connect timeout when the dsn sets none (tokio-postgres waits forever by default).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The server of a `[sink.postgres]`, ready to connect. Not `Debug`: it holds the password.
pub struct Connector {
    /// The parsed dsn, with the password set.
    pg: tokio_postgres::Config,
    /// The TLS connector; `None` for `sslmode=disable`.
    tls: Option<MakeRustlsConnect>,
    /// The sink's name and server, for messages (no password).
    ctx: ErrorContext,
}

impl Connector {
    /// Parses `config`'s dsn and TLS settings; `password` is read by the caller from
    /// `password_file` or `password_env`. Errors name the sink and never echo the dsn.
    pub fn new(
        name: &str,
        config: &PostgresConfig,
        password: Option<Secret>,
    ) -> Result<Self, String> {
        let (dsn, tls) = TlsSettings::take_from_dsn(&config.dsn, config.ca_file.as_deref())
            .map_err(|e| format!("sink '{name}': {e}"))?;
        // The parse error never echoes the dsn, so a password put there does not leak.
        let mut pg = tokio_postgres::Config::from_str(&dsn).map_err(|e| {
            format!(
                "sink '{name}': dsn is not a valid connection string ({e}); use e.g. \
                 \"host=127.0.0.1 port=5432 user=ha dbname=ha\""
            )
        })?;
        if let Some(password) = password {
            if pg.get_password().is_some() {
                return Err(format!(
                    "sink '{name}': the dsn holds a password and password_file/password_env is set \
                     too; keep it only in password_file or password_env"
                ));
            }
            pg.password(password.expose());
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("ha-ingestor");
        }
        if pg.get_ssl_mode() != tokio_postgres::config::SslMode::Prefer {
            // Every sslmode was to be taken out above; one left would be overwritten below.
            return Err(format!(
                "sink '{name}': the dsn's sslmode could not be read; write the dsn as \
                 key=value pairs"
            ));
        }
        let tls = tls_transport(&pg, tls).map_err(|e| format!("sink '{name}': {e}"))?;
        pg.ssl_mode(tls.mode.transport());
        if tls.mode == SslModeSetting::Require && !tls.verifies() {
            tracing::warn!(
                sink = name,
                "sslmode=require encrypts but does not check the server's certificate; set \
                 ca_file and sslmode=verify-full to know it is your server"
            );
        }
        let connector = tls.connector().map_err(|e| format!("sink '{name}': {e}"))?;
        Ok(Connector {
            ctx: ErrorContext::new(name, &pg),
            pg,
            tls: connector,
        })
    }

    /// The sink's name and server, for messages.
    pub(super) fn context(&self) -> &ErrorContext {
        &self.ctx
    }

    /// Where it connects, as messages show it (no password).
    pub fn target(&self) -> &str {
        &self.ctx.target
    }

    /// The password it sends.
    #[cfg(test)]
    pub(super) fn password(&self) -> Option<&[u8]> {
        self.pg.get_password()
    }

    /// Whether the connection uses TLS.
    #[cfg(test)]
    pub(super) fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Connects; the returned task drives the socket (abort it to close the connection).
    pub async fn connect(
        &self,
    ) -> Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
        let sink = self.ctx.name.clone();
        let ended = move |e: tokio_postgres::Error| {
            tracing::debug!(sink = %sink, error = %e, "PostgreSQL connection ended");
        };
        // The two connection types differ, so each branch spawns its own driver task.
        Ok(match &self.tls {
            Some(tls) => {
                let (client, connection) = self.pg.connect(tls.clone()).await?;
                let task = tokio::spawn(async move { connection.await.unwrap_or_else(ended) });
                (client, task)
            }
            None => {
                let (client, connection) = self.pg.connect(NoTls).await?;
                let task = tokio::spawn(async move { connection.await.unwrap_or_else(ended) });
                (client, task)
            }
        })
    }
}

/// What TLS can do for the dsn's hosts. A unix socket never has TLS (libpq ignores sslmode
/// there); a bare `hostaddr` has no name to give TLS, so it can only go without.
fn tls_transport(pg: &tokio_postgres::Config, tls: TlsSettings) -> Result<TlsSettings, String> {
    use tokio_postgres::config::Host;
    let hosts = pg.get_hosts();
    #[cfg(unix)]
    let all_sockets = !hosts.is_empty() && hosts.iter().all(|h| matches!(h, Host::Unix(_)));
    #[cfg(not(unix))]
    let all_sockets = false;
    let nameless = hosts.is_empty() && !pg.get_hostaddrs().is_empty();
    let off = TlsSettings {
        mode: SslModeSetting::Disable,
        ca_file: None,
    };
    match tls.mode {
        _ if all_sockets => Ok(off),
        SslModeSetting::Prefer if nameless => Ok(off),
        SslModeSetting::Disable | SslModeSetting::Prefer => Ok(tls),
        _ if nameless => Err(format!(
            "sslmode={} needs host=<the server's name> beside hostaddr: TLS checks and sends \
             the name",
            match tls.mode {
                SslModeSetting::Require => "require",
                SslModeSetting::VerifyCa => "verify-ca",
                _ => "verify-full",
            }
        )),
        _ => Ok(tls),
    }
}
