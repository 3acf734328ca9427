//! A Home Assistant client: authentication, REST and WebSocket, async and blocking.
//!
//! It follows Home Assistant's guide for API libraries: the [`auth`] part acquires and refreshes
//! tokens and makes authenticated requests without knowing what they contain; tokens are handed to
//! the caller in a JSON-serializable form and never stored by the library; the location of the
//! API is configurable ([`HaUrl`], with reverse-proxy prefixes); async first, with a [`blocking`]
//! flavour.
//!
//! See [`auth`] for one example per way of authenticating.
//!
//! Errors are typed ([`Error`]) and say whether they are final auth failures (never retry: HA bans
//! IPs after repeated failed logins) or transient (retry with backoff). Secrets are wrapped in
//! [`Secret`] and never appear in `Debug` output, logs or error messages.

pub mod auth;
pub mod blocking;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod ha_url;
mod http;
mod retry;
mod secret;
pub mod time;
mod tls;
pub mod ws;

pub use error::Error;
pub use ha_url::{HaUrl, IntoHaUrl};
pub use http::{Client, ClientBuilder, Request};
pub use retry::RetryPolicy;
pub use secret::Secret;
pub use tls::{RootCerts, TlsOptions};

/// Re-exported so callers can name methods and status codes without a direct dependency.
pub use reqwest::{Method, StatusCode};
