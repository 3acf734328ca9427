//! The [`TokenSource`] trait and the static source.

use async_trait::async_trait;

use crate::{Error, Secret};

/// Hands out valid access tokens (HA's `AbstractAuth`).
///
/// Implementors decide how tokens are obtained and refreshed. The HTTP and WebSocket clients call
/// [`TokenSource::access_token`] before each request or connection, and
/// [`TokenSource::refresh_after_rejection`] once when HA answers 401.
#[async_trait]
pub trait TokenSource: Send + Sync + 'static {
    /// A currently valid access token, refreshed first when it is about to expire.
    async fn access_token(&self) -> Result<Secret, Error>;

    /// Home Assistant rejected `rejected` with HTTP 401. Return a different, fresh token to retry
    /// with once, or `None` when nothing can be done (the 401 then stands, as a final error).
    ///
    /// The default returns `None`, which is right for tokens that cannot be refreshed.
    async fn refresh_after_rejection(&self, rejected: &Secret) -> Result<Option<Secret>, Error> {
        let _ = rejected;
        Ok(None)
    }
}

#[async_trait]
impl<T: TokenSource + ?Sized> TokenSource for std::sync::Arc<T> {
    async fn access_token(&self) -> Result<Secret, Error> {
        (**self).access_token().await
    }
    async fn refresh_after_rejection(&self, rejected: &Secret) -> Result<Option<Secret>, Error> {
        (**self).refresh_after_rejection(rejected).await
    }
}

/// A long-lived access token. It cannot be refreshed: a 401 is final.
///
/// ```
/// use ha_client::auth::StaticToken;
/// let source = StaticToken::new("eyJhbGciOi...");
/// assert!(!format!("{source:?}").contains("eyJ"));
/// ```
#[derive(Clone, Debug)]
pub struct StaticToken(Secret);

impl StaticToken {
    /// Wraps a token. Surrounding whitespace (a newline from a file) is removed.
    pub fn new(token: impl Into<String>) -> Self {
        let token: String = token.into();
        let trimmed = token.trim();
        if trimmed.len() == token.len() {
            StaticToken(Secret::new(token))
        } else {
            StaticToken(Secret::new(trimmed))
        }
    }
}

impl From<Secret> for StaticToken {
    fn from(token: Secret) -> Self {
        StaticToken::new(token.expose())
    }
}

#[async_trait]
impl TokenSource for StaticToken {
    async fn access_token(&self) -> Result<Secret, Error> {
        if self.0.is_empty() {
            return Err(Error::Config(
                "the access token is empty; give a long-lived access token from your HA profile page".into(),
            ));
        }
        Ok(self.0.clone())
    }
}
