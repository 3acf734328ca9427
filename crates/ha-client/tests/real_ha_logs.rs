//! With every log at TRACE, a full auth session writes no token or password anywhere.
#![cfg(feature = "real-ha")]

use ha_client::auth::{Credentials, OAuth2TokenSource, OAuthClient, StaticToken, TokenSource};
use ha_client::{Client, Secret, blocking};
use ha_testenv::{LogCapture, RealHa, totp};

#[test]
fn trace_logs_contain_no_secret() {
    let logs = LogCapture::install_global();
    let ha = RealHa::from_env();
    let mut secrets = ha.secrets();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let oauth = OAuthClient::new(ha.url.parse().unwrap(), &ha.client_id).unwrap();
        let creds = Credentials::new(&ha.admin.username, Secret::new(&ha.admin.password));
        let mut tokens = oauth.login(&creds, None).await.unwrap();
        let _ = oauth
            .login(
                &Credentials::new(&ha.admin.username, Secret::new("wrong-pw-xyz")),
                None,
            )
            .await
            .unwrap_err();
        secrets.push("wrong-pw-xyz".into());
        secrets.push(tokens.refresh_token.expose().to_string());
        secrets.push(tokens.access_token.expose().to_string());
        tokens.expires_at = 0;
        let source = OAuth2TokenSource::new(tokens.clone()).unwrap();
        let fresh = source.access_token().await.unwrap();
        secrets.push(fresh.expose().to_string());
        let client = Client::builder(&ha.url)
            .token_source(source)
            .build()
            .unwrap();
        client.api_status().await.unwrap();
        tracing::debug!(?tokens, ?client, "debug output of tokens and client");
        let bad = Client::builder(&ha.url)
            .token_source(StaticToken::new("bad-token-xyz"))
            .build()
            .unwrap();
        let err = bad.api_status().await.unwrap_err();
        tracing::error!(%err, ?err, "an auth error");
        secrets.push("bad-token-xyz".into());
        // The WebSocket auth phase carries the token in a frame.
        let ws = ha_client::ws::WsClient::builder(&ha.url)
            .token_source(StaticToken::new(ha.admin.long_lived_token.clone().unwrap()))
            .connect()
            .await
            .unwrap();
        let llat = ws
            .create_long_lived_token(&format!("log-test-{}", std::process::id()), 1, None)
            .await
            .unwrap();
        secrets.push(llat.expose().to_string());
        let signed = ws
            .sign_path(
                "/api/states/input_boolean.test_switch",
                std::time::Duration::from_secs(30),
            )
            .await
            .unwrap();
        let sig = signed
            .query()
            .unwrap()
            .split("authSig=")
            .nth(1)
            .unwrap()
            .to_string();
        secrets.push(sig);
        let bad_ws = ha_client::ws::WsClient::builder(&ha.url)
            .token_source(StaticToken::new("bad-ws-token-xyz"))
            .connect()
            .await
            .unwrap_err();
        tracing::error!(%bad_ws, "ws auth error");
        secrets.push("bad-ws-token-xyz".into());
        oauth.revoke(&tokens.refresh_token).await.unwrap();
    });
    let secret = ha.mfa.totp_secret.clone().unwrap();
    let code = totp(&secret);
    let oauth = blocking::OAuthClient::new(ha.url.parse().unwrap(), &ha.client_id).unwrap();
    let mfa = oauth
        .login(
            &Credentials::new(&ha.mfa.username, Secret::new(&ha.mfa.password)),
            Some(&|_: &str| Ok(Secret::new(code.clone()))),
        )
        .unwrap();
    secrets.push(mfa.access_token.expose().to_string());
    secrets.push(mfa.refresh_token.expose().to_string());
    let text = logs.text();
    assert!(
        text.len() > 1000,
        "the capture saw almost nothing: {} bytes",
        text.len()
    );
    assert!(text.contains("TRACE"), "no TRACE lines captured");
    for (i, s) in secrets.iter().enumerate() {
        assert!(s.len() >= 6, "secret too short to check meaningfully");
        if let Some(pos) = text.find(s.as_str()) {
            let start = text[..pos].rfind('\n').map_or(0, |p| p + 1);
            let line = text[start..pos].to_string();
            panic!("secret #{i} reached the logs, in a line starting: {line}");
        }
    }
}
