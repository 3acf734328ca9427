//! OAuth2 against Home Assistant: code exchange, refresh, revoke, and a refreshing token source.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use url::Url;

use super::TokenSource;
use crate::retry::{RetryPolicy, retry_transient};
use crate::{Error, HaUrl, Secret, TlsOptions};

/// OAuth2 tokens for one Home Assistant, in a stable JSON form for the caller to store.
///
/// `expires_at` is the absolute expiry of the access token in Unix seconds, so stored tokens stay
/// meaningful across restarts. `Debug` never shows the tokens.
///
/// ```
/// use ha_client::auth::OAuthTokens;
/// let json = r#"{"hass_url":"http://ha:8123","client_id":"http://localhost/","access_token":"a","refresh_token":"r","token_type":"Bearer","expires_at":1800000000}"#;
/// let tokens = OAuthTokens::from_json(json)?;
/// assert_eq!(tokens.to_json(), json);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthTokens {
    /// The Home Assistant the tokens belong to.
    pub hass_url: HaUrl,
    /// The client_id the tokens were issued to; refreshes must send the same one.
    pub client_id: String,
    /// The short-lived access token (30 minutes on HA).
    pub access_token: Secret,
    /// The refresh token. HA does not rotate it: a refresh keeps the old one.
    pub refresh_token: Secret,
    /// `Bearer`.
    pub token_type: String,
    /// When the access token expires, in Unix seconds.
    pub expires_at: i64,
    /// The auth provider that issued them (`homeassistant`), when HA said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha_auth_provider: Option<String>,
}

impl OAuthTokens {
    /// True when the access token expires within `margin` from now.
    pub fn expires_within(&self, margin: Duration) -> bool {
        let margin = i64::try_from(margin.as_secs()).unwrap_or(i64::MAX);
        unix_now().saturating_add(margin) >= self.expires_at
    }

    /// The JSON form (stable: parsing and writing it again gives the same text).
    pub fn to_json(&self) -> String {
        // Serializing plain strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the JSON form.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Home Assistant's `/auth/token` success body.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Secret,
    #[serde(default)]
    refresh_token: Option<Secret>,
    token_type: String,
    expires_in: i64,
    #[serde(default)]
    ha_auth_provider: Option<String>,
}

/// An OAuth2 error body: `{"error":"invalid_grant","error_description":"..."}`.
#[derive(Deserialize)]
struct OAuthErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Talks to Home Assistant's OAuth2 endpoints for one `client_id`. Holds no tokens.
///
/// HA's `client_id` is a URL (IndieAuth); a CLI or daemon can use any URL whose origin matches the
/// redirect URI, such as `http://localhost/`.
#[derive(Clone, Debug)]
pub struct OAuthClient {
    pub(crate) http: reqwest::Client,
    pub(crate) base: HaUrl,
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    retry: RetryPolicy,
}

impl OAuthClient {
    /// A client with default TLS (verified, webpki roots).
    pub fn new(base: HaUrl, client_id: impl Into<String>) -> Result<Self, Error> {
        Self::with_tls(base, client_id, &TlsOptions::default())
    }

    /// A client with the given TLS options.
    pub fn with_tls(
        base: HaUrl,
        client_id: impl Into<String>,
        tls: &TlsOptions,
    ) -> Result<Self, Error> {
        let http = crate::http::build_reqwest(tls, crate::http::DEFAULT_TIMEOUT)?;
        Self::with_http_client(http, base, client_id)
    }

    /// A client on a prepared `reqwest::Client`.
    pub fn with_http_client(
        http: reqwest::Client,
        base: HaUrl,
        client_id: impl Into<String>,
    ) -> Result<Self, Error> {
        let client_id = client_id.into();
        match Url::parse(&client_id) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => {
                return Err(Error::Config(format!(
                    "client_id '{client_id}' must be an http(s) URL, e.g. http://localhost/ (Home Assistant uses IndieAuth)"
                )));
            }
        }
        Ok(OAuthClient {
            http,
            base,
            redirect_uri: client_id.clone(),
            client_id,
            retry: RetryPolicy::default(),
        })
    }

    /// The redirect URI sent with authorize and login requests (default: the client_id). HA accepts
    /// one on the client_id's origin without fetching anything.
    pub fn redirect_uri(mut self, redirect_uri: impl Into<String>) -> Self {
        self.redirect_uri = redirect_uri.into();
        self
    }

    /// How transient failures of refresh and revoke are retried.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The Home Assistant this client talks to.
    pub fn base_url(&self) -> &HaUrl {
        &self.base
    }

    /// The client_id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The URL to send a user's browser to: HA's login page, which redirects back to
    /// `redirect_uri?code=...&state=...`. Exchange the code with [`OAuthClient::exchange_code`].
    pub fn authorize_url(&self, state: &str) -> Result<Url, Error> {
        let mut url = self.base.join("auth/authorize")?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("state", state);
        Ok(url)
    }

    /// Exchanges an authorization code (from the browser flow or a login flow) for tokens.
    ///
    /// Not retried: a code works once, so a retry after a lost answer could only fail.
    pub async fn exchange_code(&self, code: &str) -> Result<OAuthTokens, Error> {
        let reply = self
            .post_token(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("client_id", &self.client_id),
            ])
            .await?;
        let refresh_token =
            reply
                .refresh_token
                .clone()
                .ok_or_else(|| Error::UnexpectedResponse {
                    path: "/auth/token".into(),
                    detail: "the code exchange answer has no refresh_token".into(),
                })?;
        Ok(self.tokens_from(reply, refresh_token, self.client_id.clone()))
    }

    /// Gets a new access token with the refresh token, using the `client_id` the tokens were
    /// issued to. The refresh token is kept, since HA does not send a new one.
    pub async fn refresh(&self, tokens: &OAuthTokens) -> Result<OAuthTokens, Error> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens.refresh_token.expose()),
            ("client_id", tokens.client_id.as_str()),
        ];
        let reply =
            retry_transient(&self.retry, "token refresh", || self.post_token(&form)).await?;
        let refresh_token = reply
            .refresh_token
            .clone()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| tokens.refresh_token.clone());
        let mut new = self.tokens_from(reply, refresh_token, tokens.client_id.clone());
        new.hass_url = tokens.hass_url.clone();
        if new.ha_auth_provider.is_none() {
            new.ha_auth_provider = tokens.ha_auth_provider.clone();
        }
        Ok(new)
    }

    /// Revokes a refresh token and every access token made from it. Open WebSocket connections
    /// authenticated with them are closed by HA. HA answers 200 even for unknown tokens.
    pub async fn revoke(&self, refresh_token: &Secret) -> Result<(), Error> {
        let url = self.base.join("auth/revoke")?;
        retry_transient(&self.retry, "token revoke", || async {
            let resp = self
                .http
                .post(url.clone())
                .form(&[("token", refresh_token.expose())])
                .send()
                .await
                .map_err(|e| Error::transport(&url, e))?;
            let status = resp.status();
            if status.is_success() {
                Ok(())
            } else {
                let body = resp.bytes().await.unwrap_or_default();
                Err(oauth_error(status, &body, "/auth/revoke"))
            }
        })
        .await
    }

    fn tokens_from(
        &self,
        reply: TokenResponse,
        refresh_token: Secret,
        client_id: String,
    ) -> OAuthTokens {
        OAuthTokens {
            hass_url: self.base.clone(),
            client_id,
            access_token: reply.access_token,
            refresh_token,
            token_type: reply.token_type,
            expires_at: unix_now().saturating_add(reply.expires_in),
            ha_auth_provider: reply.ha_auth_provider,
        }
    }

    /// POSTs a form to `/auth/token` (HA reads a JSON body as `unsupported_grant_type`).
    async fn post_token(&self, form: &[(&str, &str)]) -> Result<TokenResponse, Error> {
        let url = self.base.join("auth/token")?;
        let resp = self
            .http
            .post(url.clone())
            .form(form)
            .send()
            .await
            .map_err(|e| Error::transport(&url, e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| Error::transport(&url, e))?;
        if !status.is_success() {
            return Err(oauth_error(status, &body, "/auth/token"));
        }
        serde_json::from_slice(&body).map_err(|e| Error::UnexpectedResponse {
            path: "/auth/token".into(),
            // Never the body itself: it holds tokens.
            detail: format!(
                "not a token answer ({:?} error at column {})",
                e.classify(),
                e.column()
            ),
        })
    }
}

/// Maps a failed OAuth answer to a typed error.
pub(crate) fn oauth_error(status: reqwest::StatusCode, body: &[u8], path: &str) -> Error {
    if status.is_server_error() {
        return Error::Server {
            status: status.as_u16(),
            path: path.into(),
        };
    }
    if let Ok(e) = serde_json::from_slice::<OAuthErrorBody>(body) {
        return match e.error.as_str() {
            "invalid_grant" => Error::InvalidGrant,
            "invalid_request" => Error::InvalidRequest {
                description: e.error_description,
            },
            "access_denied" => Error::AccessDenied {
                description: e.error_description.unwrap_or(e.error),
            },
            _ => Error::OAuth {
                status: status.as_u16(),
                error: e.error,
                description: e.error_description,
            },
        };
    }
    crate::http::status_error(status, body, path)
}

/// Refreshes tokens. [`OAuthClient`] is the standard implementation; implement it to route
/// refreshes through your own service (as HA's cloud account linking does).
#[async_trait]
pub trait Refresher: Send + Sync + 'static {
    /// Returns fresh tokens for `current`. Leaving `refresh_token` empty keeps the current one.
    async fn refresh(&self, current: &OAuthTokens) -> Result<OAuthTokens, Error>;
}

#[async_trait]
impl Refresher for OAuthClient {
    async fn refresh(&self, current: &OAuthTokens) -> Result<OAuthTokens, Error> {
        OAuthClient::refresh(self, current).await
    }
}

/// A [`Refresher`] from an async closure.
///
/// ```
/// use ha_client::auth::{refresher_fn, OAuthTokens};
/// let refresher = refresher_fn(|mut t: OAuthTokens| async move {
///     t.access_token = my_service_refresh(&t).await?;
///     t.expires_at += 1800;
///     Ok(t)
/// });
/// # async fn my_service_refresh(_: &OAuthTokens) -> Result<ha_client::Secret, ha_client::Error> { unimplemented!() }
/// ```
pub fn refresher_fn<F, Fut>(f: F) -> impl Refresher
where
    F: Fn(OAuthTokens) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<OAuthTokens, Error>> + Send + 'static,
{
    struct FnRefresher<F>(F);
    #[async_trait]
    impl<F, Fut> Refresher for FnRefresher<F>
    where
        F: Fn(OAuthTokens) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<OAuthTokens, Error>> + Send + 'static,
    {
        async fn refresh(&self, current: &OAuthTokens) -> Result<OAuthTokens, Error> {
            (self.0)(current.clone()).await
        }
    }
    FnRefresher(f)
}

type UpdateCallback = Arc<dyn Fn(&OAuthTokens) + Send + Sync>;

/// A [`TokenSource`] that refreshes OAuth2 tokens before they expire.
///
/// - Refreshes `refresh_margin` (default 60 s) before expiry, and once after a 401.
/// - Single-flight: however many tasks ask during expiry, one refresh request is made; the others
///   wait for it and share the result.
/// - Each new set of tokens goes to the `on_update` callback; the library stores nothing.
/// - After a final failure (for example a revoked refresh token) it stops asking HA and returns
///   [`Error::TokenSourceFailed`], so a dead token does not earn the host an IP ban.
pub struct OAuth2TokenSource {
    current: RwLock<OAuthTokens>,
    /// Held while refreshing; holds the message of a final failure once one happened.
    refresh_gate: tokio::sync::Mutex<Option<String>>,
    refresher: Arc<dyn Refresher>,
    on_update: Option<UpdateCallback>,
    margin: Duration,
}

impl std::fmt::Debug for OAuth2TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2TokenSource")
            .field(
                "tokens",
                &*self.current.read().unwrap_or_else(|p| p.into_inner()),
            )
            .field("margin", &self.margin)
            .finish_non_exhaustive()
    }
}

/// Builds an [`OAuth2TokenSource`].
pub struct OAuth2TokenSourceBuilder {
    tokens: OAuthTokens,
    refresher: Option<Arc<dyn Refresher>>,
    on_update: Option<UpdateCallback>,
    margin: Duration,
    tls: TlsOptions,
}

impl OAuth2TokenSourceBuilder {
    /// Called with the new tokens after every refresh. Store them here.
    pub fn on_update(mut self, f: impl Fn(&OAuthTokens) + Send + Sync + 'static) -> Self {
        self.on_update = Some(Arc::new(f));
        self
    }

    /// Replaces the refresh step (default: `POST /auth/token` on `tokens.hass_url`).
    pub fn refresher(mut self, refresher: impl Refresher) -> Self {
        self.refresher = Some(Arc::new(refresher));
        self
    }

    /// How long before expiry to refresh (default 60 s; HA allows 10 s of clock skew).
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// TLS options for the default refresher.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Builds the source.
    pub fn build(self) -> Result<OAuth2TokenSource, Error> {
        let refresher = match self.refresher {
            Some(r) => r,
            None => Arc::new(OAuthClient::with_tls(
                self.tokens.hass_url.clone(),
                self.tokens.client_id.clone(),
                &self.tls,
            )?),
        };
        Ok(OAuth2TokenSource {
            current: RwLock::new(self.tokens),
            refresh_gate: tokio::sync::Mutex::new(None),
            refresher,
            on_update: self.on_update,
            margin: self.margin,
        })
    }
}

impl OAuth2TokenSource {
    /// A source with the default refresher and no update callback.
    pub fn new(tokens: OAuthTokens) -> Result<Self, Error> {
        Self::builder(tokens).build()
    }

    /// Starts building a source.
    pub fn builder(tokens: OAuthTokens) -> OAuth2TokenSourceBuilder {
        OAuth2TokenSourceBuilder {
            tokens,
            refresher: None,
            on_update: None,
            margin: Duration::from_secs(60),
            tls: TlsOptions::default(),
        }
    }

    /// A copy of the current tokens.
    pub fn tokens(&self) -> OAuthTokens {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Refreshes now, whatever the expiry (single-flight with concurrent callers).
    pub async fn refresh_now(&self) -> Result<OAuthTokens, Error> {
        let mut gate = self.refresh_gate.lock().await;
        self.refresh_locked(&mut gate).await?;
        Ok(self.tokens())
    }

    fn valid_token(&self) -> Option<Secret> {
        let t = self.current.read().unwrap_or_else(|p| p.into_inner());
        (!t.expires_within(self.margin)).then(|| t.access_token.clone())
    }

    async fn refresh_locked(&self, failed: &mut Option<String>) -> Result<Secret, Error> {
        if let Some(msg) = failed.as_ref() {
            return Err(Error::TokenSourceFailed(msg.clone()));
        }
        let before = self.tokens();
        tracing::debug!(hass_url = %before.hass_url, "refreshing the access token");
        match self.refresher.refresh(&before).await {
            Ok(mut new) => {
                if new.refresh_token.is_empty() {
                    new.refresh_token = before.refresh_token;
                }
                let access = new.access_token.clone();
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = new.clone();
                if let Some(cb) = &self.on_update {
                    cb(&new);
                }
                Ok(access)
            }
            Err(e) => {
                if e.is_final() {
                    *failed = Some(e.to_string());
                }
                Err(e)
            }
        }
    }
}

#[async_trait]
impl TokenSource for OAuth2TokenSource {
    async fn access_token(&self) -> Result<Secret, Error> {
        if let Some(t) = self.valid_token() {
            return Ok(t);
        }
        let mut gate = self.refresh_gate.lock().await;
        // Whoever held the gate before us may have refreshed already.
        if gate.is_none()
            && let Some(t) = self.valid_token()
        {
            return Ok(t);
        }
        self.refresh_locked(&mut gate).await
    }

    async fn refresh_after_rejection(&self, rejected: &Secret) -> Result<Option<Secret>, Error> {
        let mut gate = self.refresh_gate.lock().await;
        if gate.is_none() {
            let current = self.tokens().access_token;
            if current != *rejected {
                return Ok(Some(current));
            }
        }
        self.refresh_locked(&mut gate).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn tokens(expires_at: i64) -> OAuthTokens {
        OAuthTokens {
            hass_url: "http://127.0.0.1:1".parse().unwrap(),
            client_id: "http://localhost/".into(),
            access_token: Secret::new("old-access"),
            refresh_token: Secret::new("the-refresh"),
            token_type: "Bearer".into(),
            expires_at,
            ha_auth_provider: Some("homeassistant".into()),
        }
    }

    #[test]
    fn json_round_trip_is_stable() {
        let t = tokens(1_800_000_000);
        let json = t.to_json();
        let back = OAuthTokens::from_json(&json).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.to_json(), json);
        assert!(json.contains("\"refresh_token\":\"the-refresh\""));
        assert!(!format!("{t:?}").contains("the-refresh"));
    }

    #[test]
    fn expiry_margin() {
        let now = unix_now();
        assert!(tokens(now + 30).expires_within(Duration::from_secs(60)));
        assert!(!tokens(now + 300).expires_within(Duration::from_secs(60)));
    }

    fn counting_source(
        calls: Arc<AtomicUsize>,
        fail_with: Option<fn() -> Error>,
    ) -> OAuth2TokenSource {
        let updates = Arc::new(AtomicUsize::new(0));
        OAuth2TokenSource::builder(tokens(0))
            .refresher(refresher_fn(move |mut t: OAuthTokens| {
                let calls = calls.clone();
                async move {
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    // Let the other callers pile up behind the gate.
                    tokio::task::yield_now().await;
                    if let Some(f) = fail_with {
                        return Err(f());
                    }
                    t.access_token = Secret::new(format!("new-access-{n}"));
                    t.refresh_token = Secret::new("");
                    t.expires_at = unix_now() + 1800;
                    Ok(t)
                }
            }))
            .on_update(move |_| {
                updates.fetch_add(1, Ordering::SeqCst);
            })
            .build()
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_refresh() {
        let calls = Arc::new(AtomicUsize::new(0));
        let source = Arc::new(counting_source(calls.clone(), None));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let s = source.clone();
                tokio::spawn(async move { s.access_token().await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().expose(), "new-access-1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // An empty refresh token from the refresher keeps the old one.
        assert_eq!(source.tokens().refresh_token.expose(), "the-refresh");
    }

    #[tokio::test]
    async fn rejection_refreshes_once_per_rejected_token() {
        let calls = Arc::new(AtomicUsize::new(0));
        let source = counting_source(calls.clone(), None);
        let first = source.access_token().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let second = source
            .refresh_after_rejection(&first)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.expose(), "new-access-2");
        // A stale rejection (someone already refreshed) gets the current token, no new request.
        let again = source
            .refresh_after_rejection(&first)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again, second);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn final_failure_is_sticky_and_not_repeated() {
        let calls = Arc::new(AtomicUsize::new(0));
        let source = counting_source(calls.clone(), Some(|| Error::InvalidGrant));
        assert!(matches!(
            source.access_token().await,
            Err(Error::InvalidGrant)
        ));
        for _ in 0..5 {
            let e = source.access_token().await.unwrap_err();
            assert!(
                matches!(e, Error::TokenSourceFailed(_)) && e.is_final(),
                "{e}"
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn transient_failure_is_retried_on_next_call() {
        let calls = Arc::new(AtomicUsize::new(0));
        let source = counting_source(
            calls.clone(),
            Some(|| Error::Server {
                status: 502,
                path: "/auth/token".into(),
            }),
        );
        assert!(source.access_token().await.unwrap_err().is_transient());
        assert!(source.access_token().await.unwrap_err().is_transient());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn authorize_url_has_all_parameters() {
        let c = OAuthClient::new(
            "http://ha:8123/prefix".parse().unwrap(),
            "http://localhost/",
        )
        .unwrap();
        let u = c.authorize_url("xyz").unwrap();
        assert_eq!(u.path(), "/prefix/auth/authorize");
        let q: std::collections::HashMap<_, _> = u.query_pairs().into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "http://localhost/");
        assert_eq!(q["redirect_uri"], "http://localhost/");
        assert_eq!(q["state"], "xyz");
        let err = OAuthClient::new("http://ha".parse().unwrap(), "my-app").unwrap_err();
        assert!(err.to_string().contains("must be an http(s) URL"), "{err}");
    }
}
