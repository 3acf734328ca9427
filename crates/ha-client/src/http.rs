//! The authenticated HTTP client for HA's REST API.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::auth::TokenSource;
use crate::retry::{RetryPolicy, retry_transient};
use crate::{Error, HaUrl, Secret, TlsOptions};

pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the reqwest client with our rustls (ring) configuration.
pub(crate) fn build_reqwest(tls: &TlsOptions, timeout: Duration) -> Result<reqwest::Client, Error> {
    tls.reqwest_builder()?
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("ha-client/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))
}

/// Maps an unsuccessful HTTP status to an error. HA's error bodies never echo credentials.
pub(crate) fn status_error(status: StatusCode, body: &[u8], path: &str) -> Error {
    let path = path.to_string();
    if status.is_server_error() {
        return Error::Server {
            status: status.as_u16(),
            path,
        };
    }
    let text = String::from_utf8_lossy(body);
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| text.chars().take(200).collect());
    match status {
        StatusCode::UNAUTHORIZED => Error::Unauthorized { path },
        StatusCode::FORBIDDEN => Error::AccessDenied {
            description: if message.is_empty() {
                "forbidden (is this IP address banned?)".into()
            } else {
                message
            },
        },
        _ => Error::UnexpectedResponse {
            path,
            detail: format!("HTTP {status}: {message}"),
        },
    }
}

/// An authenticated client for Home Assistant's HTTP API. Cheap to clone.
///
/// Every request carries `Authorization: Bearer <token>` from the [`TokenSource`]. On a 401 the
/// source may refresh once and the request is retried once; never more, because HA counts each
/// rejected token toward banning the client. Network errors and 5xx answers of idempotent requests
/// are retried with backoff and jitter ([`RetryPolicy`]).
///
/// ```no_run
/// use ha_client::{Client, auth::StaticToken};
/// # async fn run() -> Result<(), ha_client::Error> {
/// let client = Client::builder("http://127.0.0.1:8123")
///     .token_source(StaticToken::new("long-lived-token"))
///     .build()?;
/// assert_eq!(client.api_status().await?, "API running.");
/// let resp = client.request(reqwest::Method::GET, "/api/states/sun.sun").send().await?;
/// println!("{}", resp.status());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: HaUrl,
    tokens: Arc<dyn TokenSource>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`].
pub struct ClientBuilder {
    base: Result<HaUrl, Error>,
    tokens: Option<Arc<dyn TokenSource>>,
    tls: TlsOptions,
    http: Option<reqwest::Client>,
    timeout: Duration,
    retry: RetryPolicy,
}

impl ClientBuilder {
    /// Where tokens come from (required).
    pub fn token_source(mut self, source: impl TokenSource) -> Self {
        self.tokens = Some(Arc::new(source));
        self
    }

    /// A token source that is shared with other clients (e.g. the WebSocket client).
    pub fn shared_token_source(mut self, source: Arc<dyn TokenSource>) -> Self {
        self.tokens = Some(source);
        self
    }

    /// TLS options (default: verified, webpki roots).
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Uses a prepared `reqwest::Client` (its TLS settings then apply, not [`ClientBuilder::tls`]).
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Per-request timeout (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How transient failures are retried.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<Client, Error> {
        let base = self.base?;
        let tokens = self.tokens.ok_or_else(|| {
            Error::Config(
                "no token source: call token_source(StaticToken::new(..)) or pass OAuth2 tokens"
                    .into(),
            )
        })?;
        let http = match self.http {
            Some(h) => h,
            None => build_reqwest(&self.tls, self.timeout)?,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                tokens,
                retry: self.retry,
            }),
        })
    }
}

impl Client {
    /// Starts building a client for the HA at `base` (`http(s)://host[:port][/prefix]`).
    pub fn builder(base: impl crate::IntoHaUrl) -> ClientBuilder {
        ClientBuilder {
            base: base.into_ha_url(),
            tokens: None,
            tls: TlsOptions::default(),
            http: None,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
        }
    }

    /// The Home Assistant this client talks to.
    pub fn base_url(&self) -> &HaUrl {
        &self.inner.base
    }

    /// The token source, to share it with a WebSocket connection.
    pub fn token_source(&self) -> Arc<dyn TokenSource> {
        self.inner.tokens.clone()
    }

    /// A request to `path` (relative to the base URL, e.g. `/api/states`).
    pub fn request(&self, method: Method, path: impl Into<String>) -> Request {
        Request {
            client: self.clone(),
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
            retry: None,
            error: None,
        }
    }

    /// `GET path` and parse the JSON answer. Non-2xx answers are errors.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let resp = self.request(Method::GET, path).send().await?;
        read_json(resp, path).await
    }

    /// `POST path` with a JSON body and parse the JSON answer. Non-2xx answers are errors.
    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Error> {
        let resp = self.request(Method::POST, path).json(body).send().await?;
        read_json(resp, path).await
    }

    /// `GET /api/`: HA answers `API running.` when the token is good.
    pub async fn api_status(&self) -> Result<String, Error> {
        #[derive(serde::Deserialize)]
        struct Status {
            message: String,
        }
        Ok(self.get_json::<Status>("/api/").await?.message)
    }
}

async fn read_json<T: DeserializeOwned>(resp: reqwest::Response, path: &str) -> Result<T, Error> {
    let status = resp.status();
    let url = resp.url().clone();
    let body = resp.bytes().await.map_err(|e| Error::transport(&url, e))?;
    if !status.is_success() {
        return Err(status_error(status, &body, path));
    }
    serde_json::from_slice(&body).map_err(|e| Error::UnexpectedResponse {
        path: path.to_string(),
        detail: format!("invalid JSON: {e}"),
    })
}

/// A request being built; see [`Client::request`].
pub struct Request {
    client: Client,
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    body: Option<(Vec<u8>, &'static str)>,
    retry: Option<bool>,
    error: Option<Error>,
}

impl Request {
    /// Adds query parameters (values are percent-encoded, `+` included).
    pub fn query<K: AsRef<str>, V: AsRef<str>>(mut self, pairs: &[(K, V)]) -> Self {
        self.query.extend(
            pairs
                .iter()
                .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string())),
        );
        self
    }

    /// A JSON body.
    pub fn json<B: Serialize + ?Sized>(mut self, body: &B) -> Self {
        match serde_json::to_vec(body) {
            Ok(bytes) => self.body = Some((bytes, "application/json")),
            Err(e) => self.error = Some(Error::Config(format!("cannot serialize the body: {e}"))),
        }
        self
    }

    /// A form-encoded body.
    pub fn form<B: Serialize + ?Sized>(mut self, body: &B) -> Self {
        match serde_urlencoded::to_string(body) {
            Ok(text) => self.body = Some((text.into_bytes(), "application/x-www-form-urlencoded")),
            Err(e) => self.error = Some(Error::Config(format!("cannot form-encode the body: {e}"))),
        }
        self
    }

    /// Whether transient failures are retried. Default: yes for GET, HEAD, PUT, DELETE and OPTIONS,
    /// no for POST (it may not be safe to repeat).
    pub fn retry_transient(mut self, retry: bool) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Sends the request. Returns the response for any status below 500 except 401; a 401 that
    /// survives one refresh is [`Error::Unauthorized`], and 5xx is [`Error::Server`].
    pub async fn send(self) -> Result<reqwest::Response, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let inner = &self.client.inner;
        let mut url = inner.base.join(&self.path)?;
        if !self.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&self.query);
        }
        let retry = self.retry.unwrap_or(matches!(
            self.method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        ));
        let policy = if retry {
            inner.retry.clone()
        } else {
            RetryPolicy::never()
        };
        let path = url.path().to_string();
        retry_transient(&policy, "HTTP request", || self.send_once(&url, &path)).await
    }

    async fn send_once(&self, url: &url::Url, path: &str) -> Result<reqwest::Response, Error> {
        let inner = &self.client.inner;
        let token = inner.tokens.access_token().await?;
        let mut resp = self.attempt(url, &token).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            tracing::debug!(path, "HTTP 401; asking the token source for a fresh token");
            match inner.tokens.refresh_after_rejection(&token).await? {
                Some(fresh) => resp = self.attempt(url, &fresh).await?,
                None => return Err(Error::Unauthorized { path: path.into() }),
            }
            if resp.status() == StatusCode::UNAUTHORIZED {
                return Err(Error::Unauthorized { path: path.into() });
            }
        }
        if resp.status().is_server_error() {
            return Err(Error::Server {
                status: resp.status().as_u16(),
                path: path.into(),
            });
        }
        Ok(resp)
    }

    async fn attempt(&self, url: &url::Url, token: &Secret) -> Result<reqwest::Response, Error> {
        tracing::trace!(method = %self.method, path = url.path(), "HTTP request");
        let mut req = self
            .client
            .inner
            .http
            .request(self.method.clone(), url.clone())
            .bearer_auth(token.expose());
        if let Some((body, content_type)) = &self.body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, *content_type)
                .body(body.clone());
        }
        req.send().await.map_err(|e| Error::transport(url, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_are_typed() {
        assert!(matches!(
            status_error(StatusCode::UNAUTHORIZED, b"401: Unauthorized", "/api/"),
            Error::Unauthorized { .. }
        ));
        assert!(status_error(StatusCode::BAD_GATEWAY, b"", "/api/").is_transient());
        let e = status_error(
            StatusCode::NOT_FOUND,
            br#"{"message":"Entity not found."}"#,
            "/api/states/x",
        );
        assert!(e.to_string().contains("Entity not found."), "{e}");
    }

    #[test]
    fn builder_errors_name_the_fix() {
        let err = Client::builder("http://h").build().unwrap_err();
        assert!(err.to_string().contains("token_source"), "{err}");
        let err = Client::builder("h:8123")
            .token_source(crate::auth::StaticToken::new("t"))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("no scheme"), "{err}");
    }
}
