//! TLS to PostgreSQL: libpq's `sslmode` and `sslrootcert`, with rustls.
//!
//! Why by hand: tokio-postgres parses only `sslmode=disable|prefer|require` and no CA option, and
//! managed PostgreSQL services document libpq dsns with `sslmode=verify-full sslrootcert=...`. So
//! the two settings are taken out of the dsn here ([`TlsSettings::take_from_dsn`]), the rest goes
//! to tokio-postgres unchanged, and the certificate checks are rustls' (through
//! [`ha_client::TlsOptions`], the one owner of rustls settings; tokio-postgres-rustls does the
//! stream and channel binding).
//!
//! The modes, as libpq's:
//! * `disable`: plain text.
//! * `prefer` (libpq's default): TLS when the server offers it, else plain text; the certificate
//!   is not checked unless a CA is given (then as `verify-ca`).
//! * `require`: TLS or nothing; not checked unless a CA is given (then as `verify-ca`).
//! * `verify-ca`: the certificate must chain to the CA file; any host name. Needs a CA file: with
//!   public roots any site's certificate would pass.
//! * `verify-full`: chain and host name. Without a CA file, the system's roots (libpq's
//!   `sslrootcert=system`), which managed services with public certificates need.

use std::path::{Path, PathBuf};

use ha_client::{RootCerts, TlsOptions};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslModeSetting {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslModeSetting {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => SslModeSetting::Disable,
            "allow" | "prefer" => SslModeSetting::Prefer,
            "require" => SslModeSetting::Require,
            "verify-ca" => SslModeSetting::VerifyCa,
            "verify-full" => SslModeSetting::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other} is not a mode; use disable, prefer, require, verify-ca or \
                     verify-full"
                ));
            }
        })
    }

    /// What tokio-postgres is told: whether TLS is tried, and whether it is required.
    pub fn transport(self) -> SslMode {
        match self {
            SslModeSetting::Disable => SslMode::Disable,
            SslModeSetting::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        }
    }
}

/// The TLS part of a sink's connection settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslModeSetting,
    /// A PEM file of the CA(s) to trust (config `ca_file` or the dsn's `sslrootcert`).
    pub ca_file: Option<PathBuf>,
}

impl TlsSettings {
    /// Takes `sslmode` and `sslrootcert` out of a libpq dsn (key=value or URL form) and returns
    /// the dsn without them. `ca_file` comes from the sink's config; giving a CA in both places is
    /// an error (which one would win is not obvious).
    pub fn take_from_dsn(dsn: &str, ca_file: Option<&Path>) -> Result<(String, Self), String> {
        let (rest, params) = if let Some(url) = dsn
            .strip_prefix("postgres://")
            .or_else(|| dsn.strip_prefix("postgresql://"))
        {
            take_from_url(dsn, url)?
        } else {
            take_from_key_values(dsn)?
        };
        let mut settings = TlsSettings {
            ca_file: ca_file.map(Path::to_path_buf),
            ..TlsSettings::default()
        };
        let (mut mode, mut system_roots) = (None, false);
        for (key, value) in params {
            match key {
                TlsKey::Mode => mode = Some(SslModeSetting::parse(&value)?),
                TlsKey::RootCert if settings.ca_file.is_some() || system_roots => {
                    return Err(
                        "the dsn's sslrootcert and ca_file both name a CA; keep one".to_string()
                    );
                }
                TlsKey::RootCert if value == "system" => system_roots = true,
                TlsKey::RootCert => settings.ca_file = Some(PathBuf::from(value)),
            }
        }
        settings.mode = match (mode, system_roots) {
            (None, true) => SslModeSetting::VerifyFull,
            // As libpq: the system's roots vouch for any public name, so only verify-full.
            (Some(m), true) if m != SslModeSetting::VerifyFull => {
                return Err(
                    "sslrootcert=system needs sslmode=verify-full (with public roots a weaker \
                     mode would accept any site's certificate)"
                        .to_string(),
                );
            }
            (m, _) => m.unwrap_or_default(),
        };
        Ok((rest, settings))
    }

    /// The rustls connector for these settings; `None` for `disable`. Reads the CA file, so a
    /// missing or bad file is reported when the sink is built, not at the first connection.
    pub fn connector(&self) -> Result<Option<MakeRustlsConnect>, String> {
        let mut options = TlsOptions::default();
        if let Some(path) = &self.ca_file {
            options = options
                .roots(RootCerts::None)
                .add_ca_file(path)
                .map_err(|e| format!("{e}; ca_file must be a PEM file of the server's CA"))?;
        }
        options = match (self.mode, self.ca_file.is_some()) {
            (SslModeSetting::Disable, _) => return Ok(None),
            (SslModeSetting::VerifyFull, false) => options.roots(RootCerts::Native),
            (SslModeSetting::VerifyFull, true) => options,
            (SslModeSetting::VerifyCa, false) => {
                return Err("sslmode=verify-ca needs the CA that signed the server's \
                            certificate: set ca_file (or sslrootcert in the dsn); with the \
                            system's roots any public certificate would pass, so use \
                            verify-full for those"
                    .to_string());
            }
            // As libpq: with a CA file, prefer and require check the chain too.
            (_, true) => options.skip_hostname_verification(true),
            // Encryption only, as libpq; the sink says so in its own words (see `verifies`).
            (SslModeSetting::Prefer | SslModeSetting::Require, false) => options
                .danger_accept_invalid_certs(true)
                .quiet_when_unverified(),
        };
        let config = options.client_config().map_err(|e| e.to_string())?;
        Ok(Some(MakeRustlsConnect::new((*config).clone())))
    }

    /// Whether the server's certificate is checked at all.
    pub fn verifies(&self) -> bool {
        match self.mode {
            SslModeSetting::Disable => false,
            SslModeSetting::VerifyCa | SslModeSetting::VerifyFull => true,
            SslModeSetting::Prefer | SslModeSetting::Require => self.ca_file.is_some(),
        }
    }
}

enum TlsKey {
    Mode,
    RootCert,
}

fn tls_key(key: &str) -> Option<TlsKey> {
    match key {
        "sslmode" => Some(TlsKey::Mode),
        "sslrootcert" => Some(TlsKey::RootCert),
        _ => None,
    }
}

/// `key=value ...`, values bare or single-quoted with backslash escapes (tokio-postgres' rules).
/// The other parameters are written back quoted, which means the same.
fn take_from_key_values(dsn: &str) -> Result<(String, Vec<(TlsKey, String)>), String> {
    let mut rest = String::with_capacity(dsn.len());
    let mut taken = Vec::new();
    let mut chars = dsn.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace() && *c != '=')).collect();
        if key.is_empty() {
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            // Not the word itself: a password with a space in it would show a piece of it.
            return Err(format!(
                "the dsn has a word without `=value` (parameter {})",
                taken.len() + rest.matches('=').count() + 1
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => return Err(format!("the dsn's `{key}` has an unterminated quote")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        match tls_key(&key) {
            Some(k) => taken.push((k, value)),
            None => {
                if !rest.is_empty() {
                    rest.push(' ');
                }
                rest.push_str(&key);
                rest.push_str("='");
                for c in value.chars() {
                    if c == '\'' || c == '\\' {
                        rest.push('\\');
                    }
                    rest.push(c);
                }
                rest.push('\'');
            }
        }
    }
    Ok((rest, taken))
}

/// `postgresql://...?k=v&...`: the TLS parameters leave the query, the rest stays as written.
fn take_from_url(dsn: &str, after_scheme: &str) -> Result<(String, Vec<(TlsKey, String)>), String> {
    // The user and password may hold a literal `?` (tokio-postgres and libpq read them up to the
    // first `@`): the query starts after that.
    let host_part = after_scheme
        .split_once('@')
        .map_or(after_scheme, |(_, h)| h);
    let Some((_, query)) = host_part.split_once('?') else {
        return Ok((dsn.to_string(), Vec::new()));
    };
    let base = &dsn[..dsn.len() - query.len() - 1];
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| format!("the dsn's `{key}` is not UTF-8 once decoded"))
        };
        match tls_key(&decode(key)?) {
            Some(k) => taken.push((k, decode(value)?)),
            None => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, taken))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn take(dsn: &str) -> (String, TlsSettings) {
        TlsSettings::take_from_dsn(dsn, None).unwrap()
    }

    #[test]
    fn key_value_dsn_loses_only_the_tls_keys() {
        let (rest, s) = take(
            "host=db.lan sslmode=verify-full  user = 'o\\'brien' sslrootcert='/etc/my ca.pem' \
             dbname=ha",
        );
        assert_eq!(s.mode, SslModeSetting::VerifyFull);
        assert_eq!(s.ca_file.as_deref(), Some(Path::new("/etc/my ca.pem")));
        let pg = tokio_postgres::Config::from_str(&rest).unwrap();
        assert_eq!(pg.get_user(), Some("o'brien"));
        assert_eq!(pg.get_dbname(), Some("ha"));
        assert!(!rest.contains("ssl"), "{rest}");
    }

    #[test]
    fn url_dsn_loses_only_the_tls_parameters() {
        let (rest, s) = take(
            "postgresql://ha@h1:5432,h2/hist?sslmode=verify-ca&sslrootcert=%2Fca.pem&connect_timeout=5",
        );
        assert_eq!(s.mode, SslModeSetting::VerifyCa);
        assert_eq!(s.ca_file.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(rest, "postgresql://ha@h1:5432,h2/hist?connect_timeout=5");
        let (rest, s) = take("postgres://ha@h/db?sslmode=require");
        assert_eq!(
            (rest.as_str(), s.mode),
            ("postgres://ha@h/db", SslModeSetting::Require)
        );
    }

    #[test]
    fn default_is_prefer_like_libpq() {
        let (rest, s) = take("host=h user=u");
        assert_eq!(s, TlsSettings::default());
        assert_eq!(s.mode.transport(), SslMode::Prefer);
        tokio_postgres::Config::from_str(&rest).unwrap();
    }

    #[test]
    fn bad_values_say_what_to_use() {
        let e = TlsSettings::take_from_dsn("host=h sslmode=verify", None).unwrap_err();
        assert!(e.contains("verify-full"), "{e}");
        let e =
            TlsSettings::take_from_dsn("host=h sslrootcert=/a", Some(Path::new("/b"))).unwrap_err();
        assert!(e.contains("keep one"), "{e}");
        let e = TlsSettings::take_from_dsn("host='h", None).unwrap_err();
        assert!(e.contains("unterminated"), "{e}");
    }

    #[test]
    fn system_roots_mean_verify_full_in_any_order() {
        let (_, s) = take("host=h sslrootcert=system");
        assert_eq!((s.mode, s.ca_file), (SslModeSetting::VerifyFull, None));
        let (_, s) = take("host=h sslmode=verify-full sslrootcert=system");
        assert_eq!(s.mode, SslModeSetting::VerifyFull);
        for dsn in [
            "host=h sslmode=require sslrootcert=system",
            "host=h sslrootcert=system sslmode=require",
            "postgresql://h/db?sslrootcert=system&sslmode=verify-ca",
        ] {
            let e = TlsSettings::take_from_dsn(dsn, None).unwrap_err();
            assert!(e.contains("verify-full"), "{dsn}: {e}");
        }
    }

    #[test]
    fn a_question_mark_in_the_password_is_not_the_query() {
        let (rest, s) = take("postgresql://u:p?x@db/ha?sslmode=require&connect_timeout=3");
        assert_eq!(s.mode, SslModeSetting::Require);
        assert_eq!(rest, "postgresql://u:p?x@db/ha?connect_timeout=3");
        let pg = tokio_postgres::Config::from_str(&rest).unwrap();
        assert_eq!(pg.get_password(), Some(&b"p?x"[..]));
        assert_eq!(pg.get_ssl_mode(), SslMode::Prefer, "no sslmode left behind");
    }

    #[test]
    fn a_word_without_a_value_is_named_without_its_text() {
        let e = TlsSettings::take_from_dsn("host=h password=my secret", None).unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn verify_ca_needs_a_ca_file_and_a_missing_file_is_named() {
        let s = TlsSettings {
            mode: SslModeSetting::VerifyCa,
            ca_file: None,
        };
        let e = s.connector().err().unwrap();
        assert!(e.contains("ca_file"), "{e}");
        let s = TlsSettings {
            mode: SslModeSetting::VerifyFull,
            ca_file: Some("/nonexistent/ca.pem".into()),
        };
        let e = s.connector().err().unwrap();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        assert!(TlsSettings::default().connector().unwrap().is_some());
        let off = TlsSettings {
            mode: SslModeSetting::Disable,
            ca_file: None,
        };
        assert!(off.connector().unwrap().is_none());
    }
}
