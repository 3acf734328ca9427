//! Authentication: where access tokens come from, and how they are refreshed.
//!
//! This module knows nothing about what requests contain. It hands out valid access tokens and
//! talks to Home Assistant's OAuth2 endpoints; it never stores tokens anywhere, it gives them to
//! the caller through a callback.
//!
//! Three ways to authenticate, as in Home Assistant's guide for API libraries:
//!
//! **A long-lived access token** (created in HA's profile page):
//! ```no_run
//! use ha_client::{Client, auth::StaticToken};
//! # async fn run() -> Result<(), ha_client::Error> {
//! let token = std::env::var("HA_TOKEN").expect("set HA_TOKEN");
//! let client = Client::builder("http://homeassistant.local:8123")
//!     .token_source(StaticToken::new(token))
//!     .build()?;
//! let states: serde_json::Value = client.get_json("/api/states").await?;
//! # Ok(()) }
//! ```
//!
//! **Your own token source** (HA's `AbstractAuth`): implement [`TokenSource`] and refresh however you
//! like, for example through your own cloud service:
//! ```no_run
//! use ha_client::{Client, Error, Secret, auth::TokenSource};
//! struct FromMyVault;
//! #[async_trait::async_trait]
//! impl TokenSource for FromMyVault {
//!     async fn access_token(&self) -> Result<Secret, Error> {
//!         Ok(Secret::new(std::fs::read_to_string("/run/secrets/ha").map_err(|e| Error::Config(e.to_string()))?))
//!     }
//! }
//! # fn run() -> Result<(), Error> {
//! let client = Client::builder("https://ha.example.org").token_source(FromMyVault).build()?;
//! # Ok(()) }
//! ```
//!
//! **OAuth2 tokens with refresh**, from a headless login, handed back to the caller on every refresh:
//! ```no_run
//! use ha_client::{Client, HaUrl, Secret};
//! use ha_client::auth::{Credentials, OAuthClient, OAuthTokens, OAuth2TokenSource};
//! # async fn run() -> Result<(), ha_client::Error> {
//! let base: HaUrl = "http://homeassistant.local:8123".parse()?;
//! let oauth = OAuthClient::new(base.clone(), "http://localhost/")?;
//! let tokens = oauth.login(&Credentials::new("me", Secret::new("pw")), None).await?;
//! let source = OAuth2TokenSource::builder(tokens)
//!     .on_update(|t: &OAuthTokens| {
//!         // The library stores nothing: persist the JSON yourself.
//!         std::fs::write("tokens.json", t.to_json()).ok();
//!     })
//!     .build()?;
//! let client = Client::builder(base).token_source(source).build()?;
//! # Ok(()) }
//! ```
//!
//! A blocking flavour of all of this is in [`crate::blocking`].

mod login;
mod oauth;
mod source;

pub use login::{AuthProvider, Credentials, LoginHandler, MfaCallback};
pub use oauth::{
    OAuth2TokenSource, OAuth2TokenSourceBuilder, OAuthClient, OAuthTokens, Refresher, refresher_fn,
};
pub use source::{StaticToken, TokenSource};
