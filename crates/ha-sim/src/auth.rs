//! Users and tokens: refresh tokens, access tokens (JWT-shaped, looked up rather than verified),
//! long-lived tokens, authorization codes, login flows and signed paths.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use data_encoding::{BASE64URL_NOPAD, HEXLOWER};
use rand::Rng as _;

use crate::config::{SimConfig, UserConfig};
use crate::time::now_us;

/// A user already has a long-lived token with this client name (HA raises a plain `ValueError`).
#[derive(Debug, thiserror::Error)]
#[error("{0} already exists")]
pub struct DuplicateClientName(pub String);

/// Who is authenticated: a user and the refresh token behind the access token.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The user.
    pub user: Arc<UserConfig>,
    /// Id of the refresh token the access token came from.
    pub refresh_id: String,
}

/// Kind of refresh token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TokenKind {
    /// OAuth login.
    Normal,
    /// `auth/long_lived_access_token`.
    LongLived,
    /// The configured static tokens.
    Static,
}

struct RefreshToken {
    token: String,
    user: Arc<UserConfig>,
    client_id: Option<String>,
    kind: TokenKind,
    client_name: Option<String>,
}

struct AccessToken {
    refresh_id: String,
    expires: Option<Instant>,
}

struct Signed {
    path: String,
    params: Vec<(String, String)>,
    expires: Instant,
    refresh_id: String,
}

/// Step of a login flow.
#[derive(Clone, Debug)]
pub enum FlowStep {
    /// Waiting for username/password.
    Init,
    /// Waiting for a TOTP code.
    Mfa {
        /// The user who gave the right password.
        user: Arc<UserConfig>,
        /// Wrong codes so far.
        tries: u32,
        /// When the MFA session ends (5 min).
        until: Instant,
    },
}

/// A login flow in progress.
#[derive(Clone, Debug)]
pub struct Flow {
    /// The client that started it.
    pub client_id: String,
    /// Where the code would be redirected.
    pub redirect_uri: String,
    /// Current step.
    pub step: FlowStep,
}

/// The auth state of the instance.
pub struct AuthStore {
    users: Vec<Arc<UserConfig>>,
    refresh: HashMap<String, RefreshToken>,
    refresh_by_token: HashMap<String, String>,
    access: HashMap<String, AccessToken>,
    codes: HashMap<(String, String), (Arc<UserConfig>, Instant)>,
    signed: HashMap<String, Signed>,
    /// Login flows by id.
    pub flows: HashMap<String, Flow>,
    ttl: Duration,
    leeway: Duration,
}

/// Random lowercase hex of `n` bytes.
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rng().fill(&mut b[..]);
    HEXLOWER.encode(&b)
}

fn jwt_shaped(iss: &str, lifetime: Duration) -> String {
    let now = now_us() / 1_000_000;
    let header = BASE64URL_NOPAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims =
        serde_json::json!({"iss": iss, "iat": now, "exp": now + lifetime.as_secs() as i64});
    let payload = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
    let mut sig = [0u8; 32];
    rand::rng().fill(&mut sig);
    format!("{header}.{payload}.{}", BASE64URL_NOPAD.encode(&sig))
}

/// HA's indieauth `verify_client_id`: an http(s) URL without user info, fragment or dot segments,
/// whose host is a name or a local address.
pub fn verify_client_id(client_id: &str) -> bool {
    let Ok(u) = url::Url::parse(client_id) else {
        return false;
    };
    if !matches!(u.scheme(), "http" | "https")
        || !u.username().is_empty()
        || u.password().is_some()
        || u.fragment().is_some()
    {
        return false;
    }
    let raw_path = client_id.split_once("://").map(|(_, r)| r).unwrap_or("");
    let raw_path = raw_path.find('/').map(|i| &raw_path[i..]).unwrap_or("/");
    let raw_path = raw_path.split(['?', '#']).next().unwrap_or("");
    if raw_path.split('/').any(|seg| seg == "." || seg == "..") {
        return false;
    }
    match u.host() {
        Some(url::Host::Domain(_)) => true,
        Some(url::Host::Ipv4(ip)) => is_local(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_local(IpAddr::V6(ip)),
        None => false,
    }
}

fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => v.is_loopback() || v.is_private() || v.is_link_local(),
        IpAddr::V6(v) => {
            v.is_loopback()
                || (v.segments()[0] & 0xfe00) == 0xfc00
                || (v.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// `redirect_uri` passes when it has the client id's scheme, host and port.
pub fn verify_redirect_uri(client_id: &str, redirect_uri: &str) -> bool {
    match (url::Url::parse(client_id), url::Url::parse(redirect_uri)) {
        (Ok(c), Ok(r)) => {
            c.scheme() == r.scheme()
                && c.host() == r.host()
                && c.port_or_known_default() == r.port_or_known_default()
        }
        _ => false,
    }
}

impl AuthStore {
    /// Users and static tokens from the config.
    pub fn new(cfg: &SimConfig) -> AuthStore {
        let users: Vec<Arc<UserConfig>> = cfg.users.iter().cloned().map(Arc::new).collect();
        let mut s = AuthStore {
            users,
            refresh: HashMap::new(),
            refresh_by_token: HashMap::new(),
            access: HashMap::new(),
            codes: HashMap::new(),
            signed: HashMap::new(),
            flows: HashMap::new(),
            ttl: cfg.access_token_ttl,
            leeway: cfg.access_token_leeway,
        };
        let admin = s.users.iter().find(|u| u.is_admin).cloned();
        let user = s.users.iter().find(|u| !u.is_admin).cloned();
        for (tok, u, id) in [
            (&cfg.admin_token, admin, "static-admin"),
            (&cfg.user_token, user, "static-user"),
        ] {
            if let Some(u) = u {
                s.refresh.insert(
                    id.into(),
                    RefreshToken {
                        token: random_hex(64),
                        user: u,
                        client_id: None,
                        kind: TokenKind::Static,
                        client_name: Some(id.into()),
                    },
                );
                s.access.insert(
                    tok.clone(),
                    AccessToken {
                        refresh_id: id.into(),
                        expires: None,
                    },
                );
            }
        }
        s
    }

    /// Access-token lifetime for OAuth tokens.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The user with this login name.
    pub fn user_by_name(&self, username: &str) -> Option<Arc<UserConfig>> {
        self.users.iter().find(|u| u.username == username).cloned()
    }

    /// Checks an access token (static, OAuth or long-lived).
    pub fn validate_access(&self, token: &str) -> Option<Principal> {
        let a = self.access.get(token)?;
        if let Some(exp) = a.expires
            && Instant::now() > exp + self.leeway
        {
            return None;
        }
        let r = self.refresh.get(&a.refresh_id)?;
        Some(Principal {
            user: r.user.clone(),
            refresh_id: a.refresh_id.clone(),
        })
    }

    /// Stores an authorization code for `client_id` (valid 10 min).
    pub fn create_code(&mut self, client_id: &str, user: Arc<UserConfig>) -> String {
        let code = random_hex(16);
        self.codes.insert(
            (client_id.to_string(), code.clone()),
            (user, Instant::now() + Duration::from_secs(600)),
        );
        code
    }

    /// Takes a code (single use).
    pub fn take_code(&mut self, client_id: &str, code: &str) -> Option<Arc<UserConfig>> {
        let (u, until) = self
            .codes
            .remove(&(client_id.to_string(), code.to_string()))?;
        (Instant::now() <= until).then_some(u)
    }

    /// A normal refresh token for a user and client; returns (refresh token string, its id).
    pub fn create_refresh(
        &mut self,
        user: Arc<UserConfig>,
        client_id: Option<String>,
    ) -> (String, String) {
        let id = random_hex(16);
        let token = random_hex(64);
        self.refresh_by_token.insert(token.clone(), id.clone());
        self.refresh.insert(
            id.clone(),
            RefreshToken {
                token: token.clone(),
                user,
                client_id,
                kind: TokenKind::Normal,
                client_name: None,
            },
        );
        (token, id)
    }

    /// Looks a refresh token up by its string: (id, client_id, kind).
    pub fn find_refresh(&self, token: &str) -> Option<(String, Option<String>)> {
        let id = self.refresh_by_token.get(token)?;
        let r = self.refresh.get(id)?;
        Some((id.clone(), r.client_id.clone()))
    }

    /// A new access token for a refresh token, valid `lifetime` (default: the configured TTL).
    pub fn create_access(&mut self, refresh_id: &str, lifetime: Option<Duration>) -> String {
        let life = lifetime.unwrap_or(self.ttl);
        let tok = jwt_shaped(refresh_id, life);
        self.access.insert(
            tok.clone(),
            AccessToken {
                refresh_id: refresh_id.into(),
                expires: Some(Instant::now() + life),
            },
        );
        tok
    }

    /// Revokes a refresh token by its string; returns its id when it existed.
    pub fn revoke(&mut self, token: &str) -> Option<String> {
        let id = self.refresh_by_token.remove(token)?;
        self.refresh.remove(&id);
        self.access.retain(|_, a| a.refresh_id != id);
        self.signed.retain(|_, s| s.refresh_id != id);
        Some(id)
    }

    /// Creates a long-lived token; `Err` when the user already has one with this client name.
    pub fn create_llat(
        &mut self,
        user: Arc<UserConfig>,
        client_name: &str,
        lifespan_days: i64,
    ) -> Result<String, DuplicateClientName> {
        if self.refresh.values().any(|r| {
            r.kind == TokenKind::LongLived
                && r.user.id == user.id
                && r.client_name.as_deref() == Some(client_name)
        }) {
            return Err(DuplicateClientName(client_name.to_string()));
        }
        let id = random_hex(16);
        let token = random_hex(64);
        self.refresh.insert(
            id.clone(),
            RefreshToken {
                token,
                user,
                client_id: None,
                kind: TokenKind::LongLived,
                client_name: Some(client_name.into()),
            },
        );
        let life = Duration::from_secs((lifespan_days.max(0) as u64).saturating_mul(86_400));
        Ok(self.create_access(&id, Some(life)))
    }

    /// Refresh tokens of a user, for `auth/refresh_tokens`: (id, client_id, client_name, kind).
    pub fn tokens_of(
        &self,
        user_id: &str,
    ) -> Vec<(String, Option<String>, Option<String>, TokenKind)> {
        self.refresh
            .iter()
            .filter(|(_, r)| r.user.id == user_id && r.kind != TokenKind::Static)
            .map(|(id, r)| {
                (
                    id.clone(),
                    r.client_id.clone(),
                    r.client_name.clone(),
                    r.kind,
                )
            })
            .collect()
    }

    /// Deletes a refresh token by id (returns whether it existed).
    pub fn delete_refresh_id(&mut self, id: &str) -> bool {
        match self.refresh.get(id) {
            Some(r) if r.kind != TokenKind::Static => {
                let t = r.token.clone();
                self.revoke(&t).is_some()
            }
            _ => false,
        }
    }

    /// Signs `path` (which may carry a query) for `expires` seconds; returns `path?...&authSig=...`.
    pub fn sign_path(&mut self, refresh_id: &str, path: &str, expires: Duration) -> String {
        let (p, query) = path.split_once('?').unwrap_or((path, ""));
        let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k != "height" && k != "width")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let sig = jwt_shaped(refresh_id, expires);
        self.signed.insert(
            sig.clone(),
            Signed {
                path: p.to_string(),
                params,
                expires: Instant::now() + expires,
                refresh_id: refresh_id.into(),
            },
        );
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            ser.append_pair(&k, &v);
        }
        ser.append_pair("authSig", &sig);
        format!("{p}?{}", ser.finish())
    }

    /// Checks a signed GET: `path` without query, all query pairs (authSig included).
    pub fn validate_signed(&self, path: &str, query: &[(String, String)]) -> Option<Principal> {
        let sig = &query.iter().find(|(k, _)| k == "authSig")?.1;
        let s = self.signed.get(sig)?;
        let params: Vec<(String, String)> = query
            .iter()
            .filter(|(k, _)| k != "authSig" && k != "height" && k != "width")
            .cloned()
            .collect();
        if s.path != path || s.params != params || Instant::now() > s.expires {
            return None;
        }
        let r = self.refresh.get(&s.refresh_id)?;
        Some(Principal {
            user: r.user.clone(),
            refresh_id: s.refresh_id.clone(),
        })
    }

    /// Forgets the signing secret (restart): every signed path stops working.
    pub fn forget_signed(&mut self) {
        self.signed.clear();
    }
}

/// RFC 6238 TOTP code (SHA-1, 30 s, 6 digits) at a Unix time.
pub fn totp_at(secret_base32: &str, unix: u64) -> Option<String> {
    use hmac::{Hmac, Mac};
    let cleaned: String = secret_base32
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let key = data_encoding::BASE32_NOPAD
        .decode(cleaned.as_bytes())
        .ok()?;
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&key).ok()?;
    mac.update(&(unix / 30).to_be_bytes());
    let d = mac.finalize().into_bytes();
    let o = usize::from(d[19] & 0x0f);
    let bin = (u32::from(d[o] & 0x7f) << 24)
        | (u32::from(d[o + 1]) << 16)
        | (u32::from(d[o + 2]) << 8)
        | u32::from(d[o + 3]);
    Some(format!("{:06}", bin % 1_000_000))
}

/// Checks a TOTP code with one step of drift either side (as pyotp's `valid_window=1`).
pub fn totp_ok(secret: &str, code: &str) -> bool {
    let now = (now_us() / 1_000_000) as u64;
    [now.saturating_sub(30), now, now + 30]
        .iter()
        .any(|t| totp_at(secret, *t).as_deref() == Some(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids() {
        assert!(verify_client_id("http://127.0.0.1:18123/"));
        assert!(verify_client_id("https://my-app.example/"));
        assert!(!verify_client_id("not a url"));
        assert!(!verify_client_id("ftp://x/"));
        assert!(!verify_client_id("http://8.8.8.8/"));
        assert!(!verify_client_id("http://a/../b"));
        assert!(verify_redirect_uri(
            "http://127.0.0.1:1/",
            "http://127.0.0.1:1/?auth_callback=1"
        ));
        assert!(!verify_redirect_uri(
            "http://127.0.0.1:1/",
            "http://evil.example/"
        ));
    }

    #[test]
    fn totp_vector() {
        let secret = data_encoding::BASE32_NOPAD.encode(b"12345678901234567890");
        assert_eq!(totp_at(&secret, 59).as_deref(), Some("287082"));
    }
}
