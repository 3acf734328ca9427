//! Authentication against a real Home Assistant (`scripts/real-ha.sh start`).
//!
//! Run with `cargo test -p ha-client --features real-ha`. Without a running HA these tests fail.
#![cfg(feature = "real-ha")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ha_client::auth::{
    Credentials, LoginHandler, OAuth2TokenSource, OAuthClient, OAuthTokens, StaticToken,
    TokenSource,
};
use ha_client::{Client, Error, HaUrl, Method, RetryPolicy, Secret, StatusCode, blocking};
use ha_testenv::{CountingProxy, RealHa, totp};

fn ha() -> RealHa {
    RealHa::from_env()
}

fn base(ha: &RealHa) -> HaUrl {
    ha.url.parse().expect("HA url")
}

fn creds(u: &ha_testenv::RealHaUser) -> Credentials {
    Credentials::new(&u.username, Secret::new(&u.password))
}

/// A reqwest client that opens one connection per request, so a [`CountingProxy`] sees each one.
fn one_conn_per_request() -> reqwest::Client {
    ha_client::TlsOptions::default()
        .reqwest_builder()
        .unwrap()
        .pool_max_idle_per_host(0)
        .build()
        .expect("reqwest client")
}

/// An OAuthClient and base URL that go through a counting proxy.
async fn proxied(ha: &RealHa) -> (CountingProxy, HaUrl, OAuthClient) {
    let proxy = CountingProxy::start(ha.addr()).await;
    let url: HaUrl = proxy.url.parse().unwrap();
    let oauth = OAuthClient::with_http_client(one_conn_per_request(), url.clone(), &ha.client_id)
        .unwrap()
        .retry_policy(RetryPolicy::never());
    (proxy, url, oauth)
}

#[tokio::test]
async fn static_long_lived_token_works() {
    let ha = ha();
    let client = Client::builder(&ha.url)
        .token_source(StaticToken::new(ha.admin.long_lived_token.clone().unwrap()))
        .build()
        .unwrap();
    assert_eq!(client.api_status().await.unwrap(), "API running.");
    let config: serde_json::Value = client.get_json("/api/config").await.unwrap();
    assert_eq!(config["version"], ha.ha_version.as_str());
    // Path prefixes and trailing slashes are normalised: "http://h:p/" works like "http://h:p".
    let slash = Client::builder(format!("{}/", ha.url))
        .token_source(StaticToken::new(ha.admin.long_lived_token.clone().unwrap()))
        .build()
        .unwrap();
    let resp = slash
        .request(Method::GET, "api/states/sensor.nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_static_token_is_final_and_sent_once() {
    let ha = ha();
    let proxy = CountingProxy::start(ha.addr()).await;
    let client = Client::builder(&proxy.url)
        .token_source(StaticToken::new("not-a-valid-token"))
        .http_client(one_conn_per_request())
        .build()
        .unwrap();
    let err = client.api_status().await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert!(err.is_final() && !err.is_transient());
    assert!(!err.to_string().contains("not-a-valid-token"));
    assert_eq!(proxy.requests(), vec!["GET /api/ HTTP/1.1".to_string()]);
}

#[tokio::test]
async fn login_flow_right_password_gives_working_tokens() {
    let ha = ha();
    let oauth = OAuthClient::new(base(&ha), &ha.client_id).unwrap();
    let providers = oauth.providers().await.unwrap();
    assert!(
        providers.iter().any(|p| p.kind == "homeassistant"),
        "{providers:?}"
    );
    let tokens = oauth.login(&creds(&ha.admin), None).await.unwrap();
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.client_id, ha.client_id);
    assert!(!tokens.refresh_token.is_empty());
    assert!(
        !tokens.expires_within(Duration::from_secs(1700)),
        "HA issues 30-minute tokens"
    );
    // The JSON form round-trips exactly, and the parsed tokens still work.
    let json = tokens.to_json();
    let back = OAuthTokens::from_json(&json).unwrap();
    assert_eq!(back.to_json(), json);
    let client = Client::builder(&ha.url)
        .token_source(OAuth2TokenSource::new(back).unwrap())
        .build()
        .unwrap();
    assert_eq!(client.api_status().await.unwrap(), "API running.");
}

#[tokio::test]
async fn login_flow_wrong_password_is_final_and_tried_once() {
    let ha = ha();
    let (proxy, _, oauth) = proxied(&ha).await;
    let wrong = Credentials::new(&ha.admin.username, Secret::new("definitely-wrong"));
    let err = oauth.login(&wrong, None).await.unwrap_err();
    assert!(matches!(err, Error::InvalidCredentials), "{err}");
    assert!(err.is_final());
    let submits = proxy.count("POST /auth/login_flow/");
    assert_eq!(
        submits,
        1,
        "credentials must be sent once: {:?}",
        proxy.requests()
    );
    assert_eq!(proxy.count("POST /auth/token"), 0);
    // The abandoned flow is deleted.
    assert_eq!(
        proxy.count("DELETE /auth/login_flow/"),
        1,
        "{:?}",
        proxy.requests()
    );
}

#[tokio::test]
async fn login_flow_with_totp_mfa() {
    let ha = ha();
    let oauth = OAuthClient::new(base(&ha), &ha.client_id).unwrap();
    let secret = ha
        .mfa
        .totp_secret
        .clone()
        .expect("mfa user has a TOTP secret");
    // No callback: a typed error naming the module.
    let err = oauth.login(&creds(&ha.mfa), None).await.unwrap_err();
    assert!(
        matches!(&err, Error::MfaRequired { module } if module == "totp"),
        "{err}"
    );
    // A wrong code: the right one with its last digit changed.
    let wrong = |_: &str| -> Result<Secret, Error> {
        let mut code = totp(&secret).into_bytes();
        code[5] = b'0' + (code[5] - b'0' + 5) % 10;
        Ok(Secret::new(String::from_utf8(code).unwrap()))
    };
    let err = oauth
        .login(&creds(&ha.mfa), Some(&wrong))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidMfaCode), "{err}");
    // The right code.
    let asked = AtomicUsize::new(0);
    let right = |module: &str| -> Result<Secret, Error> {
        assert_eq!(module, "totp");
        asked.fetch_add(1, Ordering::SeqCst);
        Ok(Secret::new(totp(&secret)))
    };
    let tokens = oauth.login(&creds(&ha.mfa), Some(&right)).await.unwrap();
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    let client = Client::builder(&ha.url)
        .token_source(OAuth2TokenSource::new(tokens).unwrap())
        .build()
        .unwrap();
    let me: serde_json::Value = client.get_json("/api/").await.unwrap();
    assert_eq!(me["message"], "API running.");
}

/// Drives the login flow by hand to get an authorization code, as a browser redirect would.
async fn raw_auth_code(ha: &RealHa, user: &ha_testenv::RealHaUser) -> String {
    let http = ha_client::TlsOptions::default()
        .reqwest_builder()
        .unwrap()
        .build()
        .unwrap();
    let start: serde_json::Value = http
        .post(format!("{}/auth/login_flow", ha.url))
        .json(&serde_json::json!({"client_id": ha.client_id, "handler": ["homeassistant", null], "redirect_uri": ha.client_id}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let flow_id = start["flow_id"].as_str().unwrap();
    let done: serde_json::Value = http
        .post(format!("{}/auth/login_flow/{flow_id}", ha.url))
        .json(&serde_json::json!({"client_id": ha.client_id, "username": user.username, "password": user.password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done["type"], "create_entry", "{done}");
    done["result"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn authorization_code_exchange_works_once() {
    let ha = ha();
    let oauth = OAuthClient::new(base(&ha), &ha.client_id).unwrap();
    let authorize = oauth.authorize_url("state-1").unwrap();
    assert!(
        authorize
            .as_str()
            .starts_with(&format!("{}/auth/authorize?", ha.url))
    );
    let code = raw_auth_code(&ha, &ha.admin).await;
    let tokens = oauth.exchange_code(&code).await.unwrap();
    assert!(!tokens.refresh_token.is_empty());
    let err = oauth.exchange_code(&code).await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err}");
    assert!(err.is_final());
    // Another client_id cannot refresh these tokens: HA binds them to the issuing client_id,
    // and our refresh always sends the issuing one.
    let other = OAuthClient::new(base(&ha), "http://127.0.0.1:9/").unwrap();
    let refreshed = other.refresh(&tokens).await.unwrap();
    assert_eq!(refreshed.client_id, ha.client_id);
    let mut forged = tokens.clone();
    forged.client_id = "http://127.0.0.1:9/".into();
    let err = oauth.refresh(&forged).await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err}");
}

#[tokio::test]
async fn refresh_keeps_refresh_token_and_calls_back() {
    let ha = ha();
    let oauth = OAuthClient::new(base(&ha), &ha.client_id).unwrap();
    let mut tokens = oauth.login(&creds(&ha.user), None).await.unwrap();
    tokens.expires_at = 0; // expired
    let updates = Arc::new(std::sync::Mutex::new(Vec::<OAuthTokens>::new()));
    let seen = updates.clone();
    let source = OAuth2TokenSource::builder(tokens.clone())
        .on_update(move |t| seen.lock().unwrap().push(t.clone()))
        .build()
        .unwrap();
    // (HA's access tokens are JWTs of {iss, iat, exp}: a refresh within the same second can
    // return the same string, so the update callback is the proof of a refresh.)
    let fresh = source.access_token().await.unwrap();
    let stored = updates.lock().unwrap().clone();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].access_token, fresh);
    assert_eq!(
        stored[0].refresh_token, tokens.refresh_token,
        "HA sends no new refresh token"
    );
    assert!(!stored[0].expires_within(Duration::from_secs(1700)));
    // Valid now: no further refresh.
    assert_eq!(source.access_token().await.unwrap(), fresh);
    assert_eq!(updates.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_with_expired_token_make_one_refresh() {
    let ha = ha();
    let (proxy, url, oauth) = proxied(&ha).await;
    let mut tokens = oauth.login(&creds(&ha.admin), None).await.unwrap();
    tokens.expires_at = 0;
    let source = OAuth2TokenSource::builder(tokens)
        .refresher(oauth)
        .build()
        .unwrap();
    let client = Client::builder(url.as_ref())
        .token_source(source)
        .http_client(one_conn_per_request())
        .build()
        .unwrap();
    proxy.reset();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.api_status().await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "API running.");
    }
    assert_eq!(
        proxy.count("POST /auth/token "),
        1,
        "{:?}",
        proxy.requests()
    );
    assert_eq!(proxy.count("GET /api/ "), 50);
}

#[tokio::test]
async fn rejected_access_token_refreshes_once_and_retries_once() {
    let ha = ha();
    let (proxy, url, oauth) = proxied(&ha).await;
    let mut tokens = oauth.login(&creds(&ha.admin), None).await.unwrap();
    tokens.access_token = Secret::new("garbage-but-not-expired");
    let source = OAuth2TokenSource::builder(tokens)
        .refresher(oauth)
        .build()
        .unwrap();
    let client = Client::builder(url.as_ref())
        .token_source(source)
        .http_client(one_conn_per_request())
        .build()
        .unwrap();
    proxy.reset();
    assert_eq!(client.api_status().await.unwrap(), "API running.");
    assert_eq!(
        proxy.requests(),
        vec![
            "GET /api/ HTTP/1.1",
            "POST /auth/token HTTP/1.1",
            "GET /api/ HTTP/1.1"
        ]
    );
}

#[tokio::test]
async fn revoke_then_refresh_is_invalid_grant_and_never_repeated() {
    let ha = ha();
    let (proxy, url, oauth) = proxied(&ha).await;
    let tokens = oauth.login(&creds(&ha.user), None).await.unwrap();
    oauth.revoke(&tokens.refresh_token).await.unwrap();
    let err = oauth.refresh(&tokens).await.unwrap_err();
    assert!(matches!(err, Error::InvalidGrant), "{err}");
    // Access tokens minted from the revoked refresh token stop working too.
    let client = Client::builder(url.as_ref())
        .token_source(StaticToken::from(tokens.access_token.clone()))
        .http_client(one_conn_per_request())
        .build()
        .unwrap();
    assert!(matches!(
        client.api_status().await,
        Err(Error::Unauthorized { .. })
    ));
    // A refreshing source stops after the first final failure.
    let mut expired = tokens.clone();
    expired.expires_at = 0;
    let source = OAuth2TokenSource::builder(expired)
        .refresher(oauth)
        .build()
        .unwrap();
    proxy.reset();
    assert!(matches!(
        source.access_token().await,
        Err(Error::InvalidGrant)
    ));
    for _ in 0..3 {
        assert!(matches!(
            source.access_token().await,
            Err(Error::TokenSourceFailed(_))
        ));
    }
    assert_eq!(
        proxy.count("POST /auth/token "),
        1,
        "{:?}",
        proxy.requests()
    );
}

#[tokio::test]
async fn non_admin_user_reads_but_cannot_write_states() {
    let ha = ha();
    let client = Client::builder(&ha.url)
        .token_source(StaticToken::new(ha.user.long_lived_token.clone().unwrap()))
        .build()
        .unwrap();
    let states: Vec<serde_json::Value> = client.get_json("/api/states").await.unwrap();
    assert!(
        states
            .iter()
            .any(|s| s["entity_id"] == "input_boolean.test_switch")
    );
    // HA answers 401 (not 403) when a non-admin writes a state.
    let err = client
        .post_json::<_, serde_json::Value>(
            "/api/states/sensor.realha_client_test",
            &serde_json::json!({"state": "1"}),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    // The admin can.
    let admin = Client::builder(&ha.url)
        .token_source(StaticToken::new(ha.admin.long_lived_token.clone().unwrap()))
        .build()
        .unwrap();
    let state: serde_json::Value = admin
        .post_json(
            "/api/states/sensor.realha_client_test",
            &serde_json::json!({"state": "1"}),
        )
        .await
        .unwrap();
    assert_eq!(state["state"], "1");
}

#[test]
fn blocking_flavour_end_to_end() {
    let ha = ha();
    // Static token.
    let client = blocking::Client::builder(&ha.url)
        .token_source(StaticToken::new(ha.admin.long_lived_token.clone().unwrap()))
        .build()
        .unwrap();
    assert_eq!(client.api_status().unwrap(), "API running.");
    let resp = client
        .request(Method::GET, "/api/states/sensor.nope")
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // A bad token is final.
    let bad = blocking::Client::builder(&ha.url)
        .token_source(StaticToken::new("nope"))
        .build()
        .unwrap();
    assert!(bad.api_status().unwrap_err().is_final());
    // Login, wrong password, MFA.
    let oauth = blocking::OAuthClient::new(base(&ha), &ha.client_id).unwrap();
    let err = oauth
        .login(
            &Credentials::new(&ha.user.username, Secret::new("wrong")),
            None,
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidCredentials), "{err}");
    let secret = ha.mfa.totp_secret.clone().unwrap();
    let code = |_: &str| Ok(Secret::new(totp(&secret)));
    let mfa_tokens = oauth.login(&creds(&ha.mfa), Some(&code)).unwrap();
    assert!(!mfa_tokens.refresh_token.is_empty());
    // Refresh with callback, through the blocking client.
    let mut tokens = oauth.login(&creds(&ha.user), None).unwrap();
    tokens.expires_at = 0;
    let updated = Arc::new(AtomicUsize::new(0));
    let counter = updated.clone();
    let source = OAuth2TokenSource::builder(tokens.clone())
        .on_update(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let client = blocking::Client::builder(&ha.url)
        .token_source(source)
        .build()
        .unwrap();
    assert_eq!(client.api_status().unwrap(), "API running.");
    assert_eq!(updated.load(Ordering::SeqCst), 1);
    // A custom blocking token source.
    struct Fixed(String);
    impl blocking::TokenSource for Fixed {
        fn access_token(&self) -> Result<Secret, Error> {
            Ok(Secret::new(&self.0))
        }
    }
    let custom = blocking::Client::builder(&ha.url)
        .blocking_token_source(Fixed(ha.user.long_lived_token.clone().unwrap()))
        .build()
        .unwrap();
    assert_eq!(custom.api_status().unwrap(), "API running.");
    // Revoke, then refresh fails for good.
    oauth.revoke(&tokens.refresh_token).unwrap();
    assert!(matches!(oauth.refresh(&tokens), Err(Error::InvalidGrant)));
    // Trusted networks is not configured on the test HA: a clear error, before any flow starts.
    let err = oauth
        .login_with(&LoginHandler::TrustedNetworks { user: None }, None)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("trusted_networks")),
        "{err}"
    );
}
