//! The blocking flavour: the same API for code that does not run an async runtime (HTTP, OAuth,
//! and the WebSocket client [`WsClient`], whose subscriptions are iterators).
//!
//! As in reqwest, the async implementation does the work; the calls here run it on a small
//! process-wide runtime (one worker thread) and wait. Calling them from inside an async runtime is
//! refused with [`Error::BlockingInAsyncContext`] rather than deadlocking.
//!
//! ```no_run
//! use ha_client::blocking::{Client, OAuthClient};
//! use ha_client::auth::{Credentials, OAuth2TokenSource, StaticToken};
//! use ha_client::Secret;
//!
//! // A long-lived token:
//! let client = Client::builder("http://homeassistant.local:8123")
//!     .token_source(StaticToken::new(std::env::var("HA_TOKEN").unwrap()))
//!     .build()?;
//! println!("{}", client.api_status()?);
//!
//! // A headless login, then a refreshing source whose updates the caller stores:
//! let oauth = OAuthClient::new("http://homeassistant.local:8123".parse()?, "http://localhost/")?;
//! let tokens = oauth.login(&Credentials::new("me", Secret::new("pw")), None)?;
//! let source = OAuth2TokenSource::builder(tokens)
//!     .on_update(|t| std::fs::write("tokens.json", t.to_json()).unwrap_or_default())
//!     .build()?;
//! let client = Client::builder("http://homeassistant.local:8123").token_source(source).build()?;
//! let states: serde_json::Value = client.get_json("/api/states")?;
//! # Ok::<(), ha_client::Error>(())
//! ```

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

mod ws;

pub use ws::{Subscription, WsClient, WsClientBuilder};

use crate::auth::{self, AuthProvider, Credentials, LoginHandler, MfaCallback, OAuthTokens};
use crate::retry::RetryPolicy;
use crate::{Error, HaUrl, Secret, TlsOptions};

fn runtime() -> Result<&'static tokio::runtime::Runtime, Error> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ha-client-blocking")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Error::Config(format!("cannot start the blocking runtime: {e}")))
}

fn block_on<F: Future>(future: F) -> Result<F::Output, Error> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::BlockingInAsyncContext);
    }
    Ok(runtime()?.block_on(future))
}

/// A token source for blocking code. Its calls run on a blocking thread of the internal runtime.
pub trait TokenSource: Send + Sync + 'static {
    /// A currently valid access token.
    fn access_token(&self) -> Result<Secret, Error>;
    /// See [`auth::TokenSource::refresh_after_rejection`].
    fn refresh_after_rejection(&self, rejected: &Secret) -> Result<Option<Secret>, Error> {
        let _ = rejected;
        Ok(None)
    }
}

struct SyncSource<T>(Arc<T>);

#[async_trait]
impl<T: TokenSource> auth::TokenSource for SyncSource<T> {
    async fn access_token(&self) -> Result<Secret, Error> {
        let source = self.0.clone();
        tokio::task::spawn_blocking(move || source.access_token())
            .await
            .map_err(|e| Error::Config(format!("the token source panicked: {e}")))?
    }
    async fn refresh_after_rejection(&self, rejected: &Secret) -> Result<Option<Secret>, Error> {
        let source = self.0.clone();
        let rejected = rejected.clone();
        tokio::task::spawn_blocking(move || source.refresh_after_rejection(&rejected))
            .await
            .map_err(|e| Error::Config(format!("the token source panicked: {e}")))?
    }
}

/// Blocking [`crate::Client`].
#[derive(Clone, Debug)]
pub struct Client {
    inner: crate::Client,
}

/// Builds a blocking [`Client`].
pub struct ClientBuilder {
    inner: crate::ClientBuilder,
}

impl ClientBuilder {
    /// An async token source (static, OAuth2, or your own).
    pub fn token_source(self, source: impl auth::TokenSource) -> Self {
        ClientBuilder {
            inner: self.inner.token_source(source),
        }
    }

    /// A blocking token source of your own.
    pub fn blocking_token_source(self, source: impl TokenSource) -> Self {
        ClientBuilder {
            inner: self.inner.token_source(SyncSource(Arc::new(source))),
        }
    }

    /// TLS options.
    pub fn tls(self, tls: TlsOptions) -> Self {
        ClientBuilder {
            inner: self.inner.tls(tls),
        }
    }

    /// Per-request timeout.
    pub fn timeout(self, timeout: Duration) -> Self {
        ClientBuilder {
            inner: self.inner.timeout(timeout),
        }
    }

    /// Retry policy for transient failures.
    pub fn retry_policy(self, policy: RetryPolicy) -> Self {
        ClientBuilder {
            inner: self.inner.retry_policy(policy),
        }
    }

    /// Uses a prepared async `reqwest::Client`.
    pub fn http_client(self, http: reqwest::Client) -> Self {
        ClientBuilder {
            inner: self.inner.http_client(http),
        }
    }

    /// Builds the client.
    pub fn build(self) -> Result<Client, Error> {
        Ok(Client {
            inner: self.inner.build()?,
        })
    }
}

/// A fully read response.
#[derive(Debug)]
pub struct Response {
    status: reqwest::StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> reqwest::StatusCode {
        self.status
    }
    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
    /// The body.
    pub fn bytes(&self) -> &[u8] {
        &self.body
    }
    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::UnexpectedResponse {
            path: String::new(),
            detail: format!("invalid JSON: {e}"),
        })
    }
}

/// A blocking request being built.
pub struct Request {
    inner: crate::Request,
}

impl Request {
    /// Adds query parameters.
    pub fn query<K: AsRef<str>, V: AsRef<str>>(self, pairs: &[(K, V)]) -> Self {
        Request {
            inner: self.inner.query(pairs),
        }
    }
    /// A JSON body.
    pub fn json<B: Serialize + ?Sized>(self, body: &B) -> Self {
        Request {
            inner: self.inner.json(body),
        }
    }
    /// A form body.
    pub fn form<B: Serialize + ?Sized>(self, body: &B) -> Self {
        Request {
            inner: self.inner.form(body),
        }
    }
    /// Whether transient failures are retried.
    pub fn retry_transient(self, retry: bool) -> Self {
        Request {
            inner: self.inner.retry_transient(retry),
        }
    }
    /// Sends the request and reads the whole answer. Same status rules as [`crate::Request::send`].
    pub fn send(self) -> Result<Response, Error> {
        block_on(async move {
            let resp = self.inner.send().await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let url = resp.url().clone();
            let body = resp
                .bytes()
                .await
                .map_err(|e| Error::transport(&url, e))?
                .to_vec();
            Ok(Response {
                status,
                headers,
                body,
            })
        })?
    }
}

impl Client {
    /// Starts building a client for the HA at `base`.
    pub fn builder(base: impl crate::IntoHaUrl) -> ClientBuilder {
        ClientBuilder {
            inner: crate::Client::builder(base),
        }
    }
    /// The Home Assistant this client talks to.
    pub fn base_url(&self) -> &HaUrl {
        self.inner.base_url()
    }
    /// A request to `path`.
    pub fn request(&self, method: Method, path: impl Into<String>) -> Request {
        Request {
            inner: self.inner.request(method, path),
        }
    }
    /// `GET path`, parsed as JSON.
    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        block_on(self.inner.get_json(path))?
    }
    /// `POST path` with a JSON body, parsed as JSON.
    pub fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Error> {
        block_on(self.inner.post_json(path, body))?
    }
    /// `GET /api/`.
    pub fn api_status(&self) -> Result<String, Error> {
        block_on(self.inner.api_status())?
    }
    /// The async client inside.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }
}

/// Blocking [`auth::OAuthClient`].
#[derive(Clone, Debug)]
pub struct OAuthClient {
    inner: auth::OAuthClient,
}

impl OAuthClient {
    /// See [`auth::OAuthClient::new`].
    pub fn new(base: HaUrl, client_id: impl Into<String>) -> Result<Self, Error> {
        Ok(OAuthClient {
            inner: auth::OAuthClient::new(base, client_id)?,
        })
    }
    /// See [`auth::OAuthClient::with_tls`].
    pub fn with_tls(
        base: HaUrl,
        client_id: impl Into<String>,
        tls: &TlsOptions,
    ) -> Result<Self, Error> {
        Ok(OAuthClient {
            inner: auth::OAuthClient::with_tls(base, client_id, tls)?,
        })
    }
    /// Wraps an async client.
    pub fn from_async(inner: auth::OAuthClient) -> Self {
        OAuthClient { inner }
    }
    /// See [`auth::OAuthClient::authorize_url`].
    pub fn authorize_url(&self, state: &str) -> Result<Url, Error> {
        self.inner.authorize_url(state)
    }
    /// See [`auth::OAuthClient::exchange_code`].
    pub fn exchange_code(&self, code: &str) -> Result<OAuthTokens, Error> {
        block_on(self.inner.exchange_code(code))?
    }
    /// See [`auth::OAuthClient::refresh`].
    pub fn refresh(&self, tokens: &OAuthTokens) -> Result<OAuthTokens, Error> {
        block_on(self.inner.refresh(tokens))?
    }
    /// See [`auth::OAuthClient::revoke`].
    pub fn revoke(&self, refresh_token: &Secret) -> Result<(), Error> {
        block_on(self.inner.revoke(refresh_token))?
    }
    /// See [`auth::OAuthClient::providers`].
    pub fn providers(&self) -> Result<Vec<AuthProvider>, Error> {
        block_on(self.inner.providers())?
    }
    /// See [`auth::OAuthClient::login`].
    pub fn login(
        &self,
        credentials: &Credentials,
        mfa: Option<MfaCallback<'_>>,
    ) -> Result<OAuthTokens, Error> {
        block_on(self.inner.login(credentials, mfa))?
    }
    /// See [`auth::OAuthClient::login_with`].
    pub fn login_with(
        &self,
        handler: &LoginHandler,
        mfa: Option<MfaCallback<'_>>,
    ) -> Result<OAuthTokens, Error> {
        block_on(self.inner.login_with(handler, mfa))?
    }
}

/// Blocking access to [`auth::OAuth2TokenSource::refresh_now`].
pub fn refresh_now(source: &auth::OAuth2TokenSource) -> Result<OAuthTokens, Error> {
    block_on(source.refresh_now())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_inside_a_runtime() {
        let client = Client::builder("http://127.0.0.1:9")
            .token_source(auth::StaticToken::new("t"))
            .build()
            .unwrap();
        assert!(matches!(
            client.api_status(),
            Err(Error::BlockingInAsyncContext)
        ));
    }

    #[test]
    fn connection_refused_is_transient() {
        let client = Client::builder("http://127.0.0.1:9")
            .token_source(auth::StaticToken::new("t"))
            .retry_policy(RetryPolicy::never())
            .build()
            .unwrap();
        let err = client.api_status().unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
    }
}
