//! The crate's one error type, split into final and transient failures.

/// Everything that can go wrong talking to Home Assistant.
///
/// Two questions matter to a caller, and each has a method:
/// - [`Error::is_final`]: an authentication failure. Retrying it cannot help and Home Assistant counts
///   every failed attempt toward banning the client's IP address, so it must not be retried. Ask the user
///   for a new token or a new login instead.
/// - [`Error::is_transient`]: the network, a timeout or a server error (HTTP 5xx). Retry with backoff.
///   A server certificate that failed verification (unknown issuer, wrong name, expired) is not
///   transient: retrying cannot help until the TLS options or the server's certificate change.
///
/// No variant carries a token or a password, and URLs in messages have their query string removed
/// (a signed path's `authSig` lives there).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// HTTP 401: the access token is invalid, expired or revoked (final).
    #[error(
        "Home Assistant rejected the access token (HTTP 401 for {path}): it is invalid, expired or revoked; \
         create a new long-lived token or log in again"
    )]
    Unauthorized {
        /// The request path, without query.
        path: String,
    },
    /// `/auth/token` answered `invalid_grant`: the refresh token is unknown, revoked or expired (final).
    #[error(
        "Home Assistant rejected the refresh token (invalid_grant): it was revoked or has expired; log in again"
    )]
    InvalidGrant,
    /// `/auth/token` answered `invalid_request` (final). Typical causes: an authorization code that
    /// was already used or is older than 10 minutes, or a `client_id` other than the one the refresh
    /// token was issued to.
    #[error(
        "Home Assistant refused the token request (invalid_request{}); check that the client_id is the one the \
         tokens were issued with and that an authorization code is used once, within 10 minutes",
        description.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
    )]
    InvalidRequest {
        /// HA's `error_description`, when given.
        description: Option<String>,
    },
    /// HTTP 403 / `access_denied`: the user is inactive, local-only, or the IP is banned (final).
    #[error("Home Assistant denied access (HTTP 403): {description}")]
    AccessDenied {
        /// HA's explanation.
        description: String,
    },
    /// The login flow answered `invalid_auth`: wrong username or password (final).
    #[error("Home Assistant rejected the username or password (invalid_auth)")]
    InvalidCredentials,
    /// The login flow answered `invalid_code`: wrong multi-factor code (final).
    #[error("Home Assistant rejected the multi-factor authentication code (invalid_code)")]
    InvalidMfaCode,
    /// The user has multi-factor authentication on and no code callback was given (final).
    #[error(
        "this user has multi-factor authentication enabled (module '{module}'); pass a callback that supplies the code"
    )]
    MfaRequired {
        /// The MFA module id, e.g. `totp`.
        module: String,
    },
    /// The login flow was aborted by HA (`login_expired`, `too_many_retry`, `not_allowed`, ...) (final).
    #[error("Home Assistant aborted the login flow: {reason}")]
    LoginAborted {
        /// HA's abort reason.
        reason: String,
    },
    /// Another OAuth2 error from `/auth/token`, e.g. `unsupported_grant_type` (final).
    #[error("Home Assistant's token endpoint answered HTTP {status} with error '{error}'{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    OAuth {
        /// HTTP status.
        status: u16,
        /// The OAuth2 `error` code.
        error: String,
        /// The `error_description`, when given.
        description: Option<String>,
    },
    /// A token source failed before (with a final error) and refuses to try again, so that a revoked
    /// token is not sent to HA over and over (final).
    #[error("the token source failed earlier and will not retry: {0}")]
    TokenSourceFailed(String),
    /// The request could not be sent or its answer not read: connection refused, DNS, TLS, timeout
    /// (transient, except a rejected server certificate). The message includes the causes.
    #[error("could not talk to Home Assistant at {url}: {}", with_causes(source))]
    Transport {
        /// The URL without its query string.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// HTTP 5xx (transient).
    #[error(
        "Home Assistant answered HTTP {status} for {path}: a server-side error; it will be retried"
    )]
    Server {
        /// The status code.
        status: u16,
        /// The request path, without query.
        path: String,
    },
    /// An answer this library does not understand (a bug, or an HA version it does not know).
    #[error("unexpected answer from Home Assistant for {path}: {detail}")]
    UnexpectedResponse {
        /// The request path, without query.
        path: String,
        /// What was wrong.
        detail: String,
    },
    /// A malformed Home Assistant URL.
    #[error("invalid Home Assistant URL '{url}': {reason}")]
    InvalidUrl {
        /// What was given.
        url: String,
        /// What is wrong with it, and the fix.
        reason: String,
    },
    /// Bad TLS options, e.g. an unreadable CA file.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// Bad client options.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The WebSocket auth phase answered `auth_invalid` (final; the client does not reconnect).
    #[error(
        "Home Assistant rejected the access token on the WebSocket (auth_invalid: {message}); \
         the client will not reconnect: create a new token or log in again"
    )]
    AuthInvalid {
        /// HA's message (informational only; do not match on it).
        message: String,
    },
    /// A WebSocket command needs an admin user (`unauthorized`).
    #[error(
        "Home Assistant refused '{command}' (unauthorized): this command needs an admin user, \
         or a non-admin user may not use it this way"
    )]
    CommandUnauthorized {
        /// The command type.
        command: String,
    },
    /// A WebSocket command failed with HA's error `code` and `message`.
    #[error("Home Assistant command '{command}' failed: {code}: {message}")]
    Command {
        /// The command type.
        command: String,
        /// HA's error code (`not_found`, `invalid_format`, `id_reuse`, ...).
        code: String,
        /// HA's message.
        message: String,
    },
    /// The WebSocket connection dropped while a command was in flight (transient).
    #[error("the connection to Home Assistant was lost before '{command}' was answered")]
    ConnectionLost {
        /// The command type.
        command: String,
    },
    /// No answer in time (transient).
    #[error("Home Assistant did not answer '{what}' within {seconds:.1} s")]
    Timeout {
        /// What timed out.
        what: String,
        /// The limit.
        seconds: f64,
    },
    /// The WebSocket could not be opened, or broke (transient, except a rejected server certificate).
    #[error("WebSocket to {url}: {detail}")]
    WebSocket {
        /// The URL without query.
        url: String,
        /// What happened.
        detail: String,
    },
    /// HA broke the protocol (e.g. no `auth_required` first).
    #[error("unexpected WebSocket message from Home Assistant: {0}")]
    Protocol(String),
    /// The client was closed by its owner.
    #[error("the WebSocket client is closed")]
    Closed,
    /// A blocking method was called on a thread that runs an async runtime.
    #[error(
        "a blocking ha_client method was called from inside an async runtime; use the async API there, \
         or call it from tokio::task::spawn_blocking"
    )]
    BlockingInAsyncContext,
}

impl Error {
    /// An authentication failure: never retry it automatically (each attempt counts toward HA's IP ban).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Error::Unauthorized { .. }
                | Error::InvalidGrant
                | Error::InvalidRequest { .. }
                | Error::AccessDenied { .. }
                | Error::InvalidCredentials
                | Error::InvalidMfaCode
                | Error::MfaRequired { .. }
                | Error::LoginAborted { .. }
                | Error::OAuth { .. }
                | Error::TokenSourceFailed(_)
                | Error::AuthInvalid { .. }
        )
    }

    /// A failure that may go away: network errors, timeouts and HTTP 5xx. Retry with backoff.
    ///
    /// A server certificate rejected by verification is not transient: it stays untrusted until
    /// the TLS options (an added CA) or the server's certificate change.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { source, .. } => !is_rejected_certificate(source),
            // The WebSocket path keeps only the message of tungstenite's error; rustls's reads
            // "invalid peer certificate: <reason>".
            Error::WebSocket { detail, .. } => !detail.contains("invalid peer certificate"),
            Error::Server { .. } | Error::ConnectionLost { .. } | Error::Timeout { .. } => true,
            _ => false,
        }
    }

    /// Wraps a reqwest error, dropping the URL's query string.
    pub(crate) fn transport(url: &url::Url, source: reqwest::Error) -> Self {
        Error::Transport {
            url: url_for_display(url),
            source: source.without_url(),
        }
    }
}

/// The error's message followed by those of its causes, so that "error sending request" says why
/// (e.g. "invalid peer certificate: UnknownIssuer", "Connection refused").
fn with_causes(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

/// True when a rustls certificate verification error is in `e`'s causes. `io::Error` hides the
/// error it wraps from `source()`, so it is looked into with `get_ref()`.
fn is_rejected_certificate(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return matches!(tls, rustls::Error::InvalidCertificate(_));
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            && is_rejected_certificate(inner)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// `scheme://host:port/path`, no query, no fragment, no userinfo.
pub(crate) fn url_for_display(url: &url::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_and_transient_are_disjoint() {
        let finals = [
            Error::Unauthorized {
                path: "/api/".into(),
            },
            Error::InvalidGrant,
            Error::InvalidRequest { description: None },
            Error::AccessDenied {
                description: "x".into(),
            },
            Error::InvalidCredentials,
            Error::InvalidMfaCode,
            Error::LoginAborted { reason: "x".into() },
        ];
        for e in finals {
            assert!(e.is_final() && !e.is_transient(), "{e}");
        }
        let server = Error::Server {
            status: 502,
            path: "/api/".into(),
        };
        assert!(server.is_transient() && !server.is_final());
    }

    #[test]
    fn rejected_certificates_are_found_in_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped =
            std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, tls));
        assert!(is_rejected_certificate(&wrapped));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!is_rejected_certificate(&refused));
        let ws = |detail: &str| Error::WebSocket {
            url: "wss://h/api/websocket".into(),
            detail: detail.into(),
        };
        assert!(!ws("IO error: invalid peer certificate: UnknownIssuer").is_transient());
        assert!(ws("IO error: Connection refused (os error 111)").is_transient());
    }

    #[test]
    fn display_url_has_no_query() {
        let u = url::Url::parse("http://u:p@h:1/api/x?authSig=SECRET#f").unwrap();
        assert_eq!(url_for_display(&u), "http://h:1/api/x");
    }
}
