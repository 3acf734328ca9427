//! What a PostgreSQL error means for the sink, and the message that says so.
//!
//! Why apart: tokio-postgres gives a SQLSTATE for server errors and only fixed texts for its own,
//! and the runner needs one of a few answers ([`Class`]): retry soon (down, restarting,
//! overloaded), wait for an operator (login, privileges, a missing database, the schema), or
//! isolate a row (a data error). An operator reads the result, so every message names the sink,
//! the server (never the password) and the fix ([`ErrorContext`]).

use tokio_postgres::config::Host;

use crate::sink::SinkError;

/// The sink's name and server, for messages.
#[derive(Clone)]
pub(super) struct ErrorContext {
    /// The sink's name.
    pub(super) name: String,
    /// Where the sink writes: hosts, ports, database, user; never the password.
    pub(super) target: String,
    /// The dsn's database, for the message that it does not exist.
    dbname: String,
}

impl ErrorContext {
    pub(super) fn new(name: &str, pg: &tokio_postgres::Config) -> Self {
        ErrorContext {
            name: name.to_string(),
            target: describe_target(pg),
            dbname: pg.get_dbname().unwrap_or("?").to_string(),
        }
    }

    /// Turns a tokio-postgres error into the runner's terms, with the sink, the server and the fix.
    pub(super) fn error(&self, what: &str, e: &tokio_postgres::Error) -> SinkError {
        self.error_of(what, classify(e), &error_text(e))
    }

    pub(super) fn error_of(&self, what: &str, class: Class, detail: &str) -> SinkError {
        let (name, target) = (&self.name, &self.target);
        match class {
            Class::Unavailable => SinkError::Unavailable(format!(
                "sink '{name}': PostgreSQL at {target} is unavailable while {what}: {detail}; \
                 retrying (check that the server runs and the dsn's host and port)"
            )),
            Class::Unauthorized => SinkError::Unauthorized(format!(
                "sink '{name}': PostgreSQL at {target} refused access while {what}: {detail}; \
                 check the dsn's user, the password (password_file/password_env), pg_hba.conf \
                 and the user's privileges on the database"
            )),
            Class::MissingDatabase => SinkError::Failed(format!(
                "sink '{name}': database \"{db}\" does not exist on PostgreSQL at {target} \
                 ({detail}); create it (CREATE DATABASE \"{db}\") or fix dbname in the dsn",
                db = self.dbname,
            )),
            Class::StaleEntity => SinkError::Unavailable(format!(
                "sink '{name}': ha_entities changed under the sink at {target} ({detail}); \
                 reloading the entity ids"
            )),
            Class::Tls => SinkError::Failed(format!(
                "sink '{name}': TLS to PostgreSQL at {target} failed while {what}: {detail}; {fix}",
                fix = tls_fix(detail)
            )),
            Class::Data | Class::Failed => SinkError::Failed(format!(
                "sink '{name}': PostgreSQL at {target} failed while {what}: {detail}"
            )),
        }
    }
}

/// "host:port/dbname as user", for messages.
pub(super) fn describe_target(pg: &tokio_postgres::Config) -> String {
    let ports = pg.get_ports();
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                Host::Unix(path) => format!("{}/.s.PGSQL.{port}", path.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_string()
    } else {
        hosts.join(",")
    };
    let user = pg.get_user().unwrap_or("?");
    let db = pg.get_dbname().unwrap_or(user);
    format!("{hosts}/{db} (user {user})")
}

/// What an error means for the runner (and whether bisecting can help).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    /// Down, restarting, overloaded, unreachable: retry soon.
    Unavailable,
    /// Login or privileges.
    Unauthorized,
    /// `3D000`: the dsn's database does not exist.
    MissingDatabase,
    /// A row's values were refused: isolate it.
    Data,
    /// `23503`: a cached `ha_entities` id is gone.
    StaleEntity,
    /// The TLS handshake: a refused certificate, or a server without TLS. Retried slowly (an
    /// operator fixes it), never as if the network were down.
    Tls,
    /// Anything else (schema, bug): retried slowly.
    Failed,
}

/// The fix for a TLS failure, from rustls' words for it.
fn tls_fix(detail: &str) -> &'static str {
    if detail.contains("UnknownIssuer") || detail.contains("BadSignature") {
        "the server's certificate is not signed by a CA the sink trusts: set ca_file (or the \
         dsn's sslrootcert) to the PEM of the CA that signed it"
    } else if detail.contains("NotValidForName") || detail.contains("not valid for name") {
        "the certificate does not name the dsn's host: connect by a name the certificate holds, \
         or use sslmode=verify-ca to check the CA only"
    } else if ["expired", "not valid yet", "notvalidyet"]
        .iter()
        .any(|w| detail.to_lowercase().contains(w))
    {
        "the server's certificate is outside its validity period: renew it, or check this \
         host's clock"
    } else if detail.contains("does not support TLS") {
        "turn on ssl in the server's postgresql.conf, or use sslmode=prefer or disable on a \
         network you trust"
    } else {
        "check the server's TLS settings and the dsn's sslmode, ca_file/sslrootcert"
    }
}

/// Maps a SQLSTATE to what it means for the sink.
pub(super) fn classify_sqlstate(code: &str) -> Class {
    match code {
        // invalid_authorization_specification, invalid_password, insufficient_privilege
        "28000" | "28P01" | "42501" => Class::Unauthorized,
        // invalid_catalog_name
        "3D000" => Class::MissingDatabase,
        // foreign_key_violation: only `ha_states.entity` references anything
        "23503" => Class::StaleEntity,
        // admin/crash shutdown, cannot connect now (starting up), query canceled (timeout),
        // serialization failure, deadlock, lock not available, object in use, read-only (a
        // standby after failover)
        "57P01" | "57P02" | "57P03" | "57014" | "57000" | "40001" | "40P01" | "55P03" | "55006"
        | "25006" => Class::Unavailable,
        // program_limit_exceeded: e.g. an index row or a jsonb value too large, a row's fault
        "54000" => Class::Data,
        // connection exceptions, insufficient resources (disk full, too many connections),
        // system errors (I/O)
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("58") => {
            Class::Unavailable
        }
        // data exceptions, integrity constraint violations
        c if c.starts_with("22") || c.starts_with("23") => Class::Data,
        _ => Class::Failed,
    }
}

pub(super) fn classify(e: &tokio_postgres::Error) -> Class {
    if let Some(db) = e.as_db_error() {
        return classify_sqlstate(db.code().code());
    }
    if e.is_closed() {
        return Class::Unavailable;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            // tokio-rustls hands rustls' verdicts on as I/O errors.
            let rustls = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
            return match rustls {
                Some(_) => Class::Tls,
                None => Class::Unavailable,
            };
        }
        source = s.source();
    }
    // tokio-postgres exposes no error kind, only these fixed texts.
    let text = e.to_string();
    if text.starts_with("error performing TLS handshake") {
        Class::Tls
    } else if text.starts_with("error serializing parameter") {
        Class::Data
    } else if text.starts_with("authentication error") {
        Class::Unauthorized
    } else if [
        "timeout waiting for server",
        "error connecting to server",
        "error communicating with the server",
        "unexpected message from server",
        "error parsing response from server",
    ]
    .iter()
    .any(|t| text.starts_with(t))
    {
        Class::Unavailable
    } else {
        Class::Failed
    }
}

/// The server's message (with detail, hint and SQLSTATE), or the client's error and its causes.
pub(crate) fn error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = db.message().to_string();
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        text.push_str(&format!(" [SQLSTATE {}]", db.code().code()));
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn sqlstates_map_to_sink_errors() {
        for (code, class) in [
            ("08001", Class::Unavailable),
            ("08006", Class::Unavailable),
            ("57P01", Class::Unavailable),
            ("57P03", Class::Unavailable),
            ("53300", Class::Unavailable),
            ("53100", Class::Unavailable),
            ("40001", Class::Unavailable),
            ("25006", Class::Unavailable),
            ("28P01", Class::Unauthorized),
            ("28000", Class::Unauthorized),
            ("42501", Class::Unauthorized),
            ("3D000", Class::MissingDatabase),
            ("22P02", Class::Data),
            ("22008", Class::Data),
            ("22021", Class::Data),
            ("22001", Class::Data),
            ("23502", Class::Data),
            ("54000", Class::Data),
            ("23503", Class::StaleEntity),
            ("42P01", Class::Failed),
            ("42703", Class::Failed),
            ("XX000", Class::Failed),
        ] {
            assert_eq!(classify_sqlstate(code), class, "{code}");
        }
    }

    #[test]
    fn classes_become_the_runners_errors_with_target_and_fix() {
        let pg =
            tokio_postgres::Config::from_str("host=db.lan port=5433 user=ha dbname=hist").unwrap();
        let sink = ErrorContext::new("pg", &pg);
        let e = sink.error_of(
            "writing",
            Class::Unauthorized,
            "password authentication failed",
        );
        let SinkError::Unauthorized(text) = e else {
            panic!("{e:?}")
        };
        assert!(text.contains("sink 'pg'") && text.contains("db.lan:5433/hist (user ha)"));
        assert!(text.contains("password_file"), "{text}");
        let e = sink.error_of("connecting", Class::MissingDatabase, "x");
        let SinkError::Failed(text) = e else {
            panic!("{e:?}")
        };
        assert!(text.contains("database \"hist\" does not exist"), "{text}");
        assert!(matches!(
            sink.error_of("writing", Class::Unavailable, "x"),
            SinkError::Unavailable(_)
        ));
        assert!(matches!(
            sink.error_of("writing", Class::StaleEntity, "x"),
            SinkError::Unavailable(_)
        ));
        assert!(matches!(
            sink.error_of("writing", Class::Failed, "x"),
            SinkError::Failed(_)
        ));
    }

    #[test]
    fn targets_name_hosts_ports_database_and_user() {
        let pg = tokio_postgres::Config::from_str("host=a,b port=1,2 user=u dbname=d password=p")
            .unwrap();
        assert_eq!(describe_target(&pg), "a:1,b:2/d (user u)");
        let pg = tokio_postgres::Config::from_str("host=/run/pg user=u").unwrap();
        assert_eq!(describe_target(&pg), "/run/pg/.s.PGSQL.5432/u (user u)");
    }
}
