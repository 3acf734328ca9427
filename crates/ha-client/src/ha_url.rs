//! [`HaUrl`]: where Home Assistant lives, including a reverse proxy's path prefix.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

use crate::Error;

/// The base URL of a Home Assistant instance: `http(s)://host[:port][/prefix]`.
///
/// Parsing normalises it (one trailing slash, no query, fragment or credentials), so
/// `http://ha:8123`, `http://ha:8123/` and `http://ha:8123//` are the same base. A path prefix is
/// kept for Home Assistant behind a reverse proxy.
///
/// ```
/// use ha_client::HaUrl;
/// let base: HaUrl = "https://example.org/ha/".parse()?;
/// assert_eq!(base.join("/api/states")?.as_str(), "https://example.org/ha/api/states");
/// assert_eq!(base.websocket_url().as_str(), "wss://example.org/ha/api/websocket");
/// assert_eq!(base.to_string(), "https://example.org/ha");
/// # Ok::<(), ha_client::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HaUrl {
    url: Url,
    /// Reached through the Supervisor's Core proxy (see [`HaUrl::supervisor_proxy`]).
    supervisor: bool,
}

/// What [`WsClient::builder`](crate::ws::WsClient::builder) and
/// [`Client::builder`](crate::Client::builder) take: a URL's text, parsed there, or an [`HaUrl`].
pub trait IntoHaUrl {
    /// Parses (text) or hands over (an [`HaUrl`]).
    fn into_ha_url(self) -> Result<HaUrl, Error>;
}

impl IntoHaUrl for HaUrl {
    fn into_ha_url(self) -> Result<HaUrl, Error> {
        Ok(self)
    }
}

impl IntoHaUrl for &HaUrl {
    fn into_ha_url(self) -> Result<HaUrl, Error> {
        Ok(self.clone())
    }
}

impl IntoHaUrl for &str {
    fn into_ha_url(self) -> Result<HaUrl, Error> {
        HaUrl::parse(self)
    }
}

impl IntoHaUrl for String {
    fn into_ha_url(self) -> Result<HaUrl, Error> {
        HaUrl::parse(&self)
    }
}

impl IntoHaUrl for &String {
    fn into_ha_url(self) -> Result<HaUrl, Error> {
        HaUrl::parse(self)
    }
}

impl HaUrl {
    /// Parses and normalises a base URL.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidUrl {
            url: input.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = input.trim();
        if !trimmed.contains("://") {
            return Err(bad(
                "no scheme; write it in full, e.g. http://homeassistant.local:8123",
            ));
        }
        let mut url = Url::parse(trimmed).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(bad("the scheme must be http or https"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "credentials in the URL are not supported; use a token source",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("remove the query string and fragment"));
        }
        let segments: Vec<String> = url
            .path_segments()
            .map(|s| s.filter(|p| !p.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        let mut path = String::from("/");
        for s in &segments {
            path.push_str(s);
            path.push('/');
        }
        url.set_path(&path);
        Ok(HaUrl {
            url,
            supervisor: false,
        })
    }

    /// Home Assistant as an add-on reaches it: through the Supervisor's proxy at `base` (normally
    /// `http://supervisor/core`), with the add-on's `SUPERVISOR_TOKEN`. REST paths join as usual
    /// (`/core/api/...`); the WebSocket is at `/core/websocket`, without `/api/`.
    ///
    /// ```
    /// use ha_client::HaUrl;
    /// let core = HaUrl::supervisor_proxy("http://supervisor/core")?;
    /// assert_eq!(core.join("/api/states")?.as_str(), "http://supervisor/core/api/states");
    /// assert_eq!(core.websocket_url().as_str(), "ws://supervisor/core/websocket");
    /// # Ok::<(), ha_client::Error>(())
    /// ```
    pub fn supervisor_proxy(base: &str) -> Result<Self, Error> {
        let mut url = HaUrl::parse(base)?;
        url.supervisor = true;
        Ok(url)
    }

    /// True for a base made by [`HaUrl::supervisor_proxy`].
    pub fn is_supervisor_proxy(&self) -> bool {
        self.supervisor
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        self.url.scheme()
    }

    /// The full URL of an API path such as `/api/states` or `auth/token?x=1`. A leading slash is
    /// optional; the base's path prefix is kept.
    pub fn join(&self, path: &str) -> Result<Url, Error> {
        let rest = path.trim_start_matches('/');
        let mut s = String::with_capacity(self.url.as_str().len() + rest.len());
        s.push_str(self.url.as_str());
        s.push_str(rest);
        Url::parse(&s).map_err(|e| Error::InvalidUrl {
            url: s.clone(),
            reason: format!("cannot join path '{path}': {e}"),
        })
    }

    /// The WebSocket endpoint: `ws(s)://host[:port][/prefix]/api/websocket`, or
    /// `.../core/websocket` through the Supervisor's proxy.
    pub fn websocket_url(&self) -> Url {
        let mut url = self.url.clone();
        let scheme = if self.url.scheme() == "https" {
            "wss"
        } else {
            "ws"
        };
        // http->ws and https->wss are always allowed by Url::set_scheme (both "special" schemes).
        let _ = url.set_scheme(scheme);
        let endpoint = if self.supervisor {
            "websocket"
        } else {
            "api/websocket"
        };
        let path = format!("{}{endpoint}", self.url.path());
        url.set_path(&path);
        url
    }

    /// The normalised base URL, with its trailing slash.
    pub fn as_url(&self) -> &Url {
        &self.url
    }
}

impl fmt::Display for HaUrl {
    /// The base without its trailing slash, as people write it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str().trim_end_matches('/'))
    }
}

impl fmt::Debug for HaUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HaUrl({self})")
    }
}

impl AsRef<str> for HaUrl {
    fn as_ref(&self) -> &str {
        self.url.as_str()
    }
}

impl FromStr for HaUrl {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        HaUrl::parse(s)
    }
}

impl Serialize for HaUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HaUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        HaUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_slashes_and_keeps_prefix() {
        for input in [
            "http://h:8123",
            "http://h:8123/",
            "http://h:8123//",
            " http://h:8123 ",
        ] {
            let u = HaUrl::parse(input).unwrap();
            assert_eq!(
                u.join("api/").unwrap().as_str(),
                "http://h:8123/api/",
                "{input}"
            );
            assert_eq!(
                u.join("/api/").unwrap().as_str(),
                "http://h:8123/api/",
                "{input}"
            );
        }
        let p = HaUrl::parse("https://proxy.example/home//ha/").unwrap();
        assert_eq!(p.to_string(), "https://proxy.example/home/ha");
        assert_eq!(
            p.join("/auth/token").unwrap().as_str(),
            "https://proxy.example/home/ha/auth/token"
        );
        assert_eq!(
            p.websocket_url().as_str(),
            "wss://proxy.example/home/ha/api/websocket"
        );
        assert_eq!(
            HaUrl::parse("http://127.0.0.1:18123")
                .unwrap()
                .websocket_url()
                .as_str(),
            "ws://127.0.0.1:18123/api/websocket"
        );
    }

    #[test]
    fn join_keeps_colons_and_queries() {
        let u = HaUrl::parse("http://h").unwrap();
        let j = u
            .join("/api/history/period/2026-01-01T00:00:00Z?filter_entity_id=a.b")
            .unwrap();
        assert_eq!(j.path(), "/api/history/period/2026-01-01T00:00:00Z");
        assert_eq!(j.query(), Some("filter_entity_id=a.b"));
    }

    #[test]
    fn rejects_bad_urls_with_reason() {
        for (input, needle) in [
            ("homeassistant.local:8123", "no scheme"),
            ("ftp://h", "http or https"),
            ("http://u:p@h", "credentials"),
            ("http://h/?a=1", "query"),
            ("http://", "empty host"),
        ] {
            let err = HaUrl::parse(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
        }
    }

    #[test]
    fn serde_round_trip() {
        let u = HaUrl::parse("http://h:1/x/").unwrap();
        let json = serde_json::to_string(&u).unwrap();
        assert_eq!(json, "\"http://h:1/x\"");
        assert_eq!(serde_json::from_str::<HaUrl>(&json).unwrap(), u);
    }
}
