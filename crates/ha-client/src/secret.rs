//! [`Secret`]: a string that never shows itself by accident.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A token or password.
///
/// `Debug` prints `Secret([redacted])` and there is no `Display`, so a secret cannot reach a log line,
/// an error message or a panic message through formatting. The memory is zeroed on drop (via
/// [`secrecy`]). Serde (de)serializes the plain value, because tokens must round-trip through the
/// caller's own storage (see [`OAuthTokens`](crate::auth::OAuthTokens)).
///
/// ```
/// use ha_client::Secret;
/// let token = Secret::new("abc123");
/// assert_eq!(format!("{token:?}"), "Secret([redacted])");
/// assert_eq!(token.expose(), "abc123");
/// ```
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    /// The plain value. Call it only where the value must leave the process (a header, a form body).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// True for an empty value.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted_even_nested() {
        let s = Secret::new("hunter2");
        let nested = Some(vec![s.clone()]);
        let out = format!("{nested:?} {nested:#?}");
        assert!(!out.contains("hunter2"), "{out}");
        assert!(out.contains("redacted"));
    }

    #[test]
    fn serde_round_trip_keeps_value() {
        let s = Secret::new("tok");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"tok\"");
        let back: Secret = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}
