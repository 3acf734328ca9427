//! TLS end to end: the simulator behind a TLS proxy whose certificate is signed by a test CA made
//! at start (`ha_testenv::TlsProxy`), for REST (`Client`) and WebSocket (`WsClient`). Runs in
//! `cargo test --workspace`; no real server needed.
//!
//! Each failure case also counts the proxy's TCP connections: a rejected certificate must fail
//! on the first attempt, not be retried as if it were a network error.

use std::future::Future;
use std::time::Duration;

use ha_client::auth::StaticToken;
use ha_client::ws::WsClient;
use ha_client::{Client, Error, RootCerts, TlsOptions};
use ha_sim::{Sim, SimConfig};
use ha_testenv::TlsProxy;

/// The longest any step may take; a hang fails the test instead of blocking it.
const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {WAIT:?}"))
}

async fn sim() -> Sim {
    Sim::start(SimConfig::default())
        .await
        .expect("start the simulator")
}

async fn proxy(sim: &Sim) -> TlsProxy {
    TlsProxy::start(sim.addr())
        .await
        .expect("start the TLS proxy")
}

fn token(sim: &Sim) -> StaticToken {
    StaticToken::new(sim.config().admin_token.clone())
}

fn rest(sim: &Sim, url: &str, tls: TlsOptions) -> Client {
    Client::builder(url)
        .token_source(token(sim))
        .tls(tls)
        .build()
        .expect("build the client")
}

/// A REST round trip: `GET /api/` and `GET /api/states`.
async fn rest_works(client: &Client) {
    let status = within("GET /api/", client.api_status())
        .await
        .expect("GET /api/ over TLS");
    assert_eq!(status, "API running.");
    let states: Vec<serde_json::Value> = within("GET /api/states", client.get_json("/api/states"))
        .await
        .expect("GET /api/states over TLS");
    assert!(!states.is_empty(), "the simulator has states");
}

async fn ws_connect(sim: &Sim, url: &str, tls: TlsOptions) -> Result<WsClient, Error> {
    within(
        "WebSocket connect",
        WsClient::builder(url)
            .token_source(token(sim))
            .tls(tls)
            .connect(),
    )
    .await
}

/// A WebSocket round trip: `get_states` and `get_config`.
async fn ws_works(ws: &WsClient) {
    let states = within("get_states", ws.get_states())
        .await
        .expect("get_states over wss");
    assert!(!states.is_empty(), "the simulator has states");
    within("get_config", ws.get_config())
        .await
        .expect("get_config over wss");
    ws.close();
}

/// The failure of a REST call that must not succeed.
async fn rest_error(client: &Client) -> Error {
    match within("GET /api/", client.api_status()).await {
        Ok(status) => panic!("GET /api/ succeeded ({status}) but must fail"),
        Err(e) => e,
    }
}

async fn ws_error(sim: &Sim, url: &str, tls: TlsOptions) -> Error {
    match ws_connect(sim, url, tls).await {
        Ok(_) => panic!("the WebSocket connected to {url} but must fail"),
        Err(e) => e,
    }
}

/// A rejected certificate: named in the message, not transient, and tried once.
fn assert_rejected(e: &Error, proxy: &TlsProxy, needles: &[&str]) {
    let text = e.to_string();
    for needle in needles {
        assert!(text.contains(needle), "'{needle}' is not in: {text}");
    }
    assert!(
        matches!(e, Error::Transport { .. } | Error::WebSocket { .. }),
        "{e:?}"
    );
    assert!(
        !e.is_transient(),
        "a rejected certificate is classified as transient: {e}"
    );
    assert_eq!(
        proxy.connections(),
        1,
        "a rejected certificate was retried: {e}"
    );
    assert_eq!(proxy.handshakes_ok(), 0, "a handshake succeeded: {e}");
}

#[tokio::test]
async fn rest_with_the_ca_works_by_name_and_by_ip() {
    let sim = sim().await;
    let proxy = proxy(&sim).await;
    let tls = TlsOptions::default().add_ca_pem(proxy.ca_pem());
    assert!(proxy.https_url().starts_with("https://localhost:"));
    rest_works(&rest(&sim, &proxy.https_url(), tls.clone())).await;
    rest_works(&rest(&sim, &proxy.https_ip_url(), tls)).await;
    assert!(
        proxy.handshakes_ok() >= 2,
        "the requests did not go through TLS"
    );
}

#[tokio::test]
async fn ws_with_the_ca_works_by_name_and_by_ip() {
    let sim = sim().await;
    let proxy = proxy(&sim).await;
    let tls = TlsOptions::default().add_ca_pem(proxy.ca_pem());
    for url in [proxy.https_url(), proxy.https_ip_url()] {
        let ws = ws_connect(&sim, &url, tls.clone())
            .await
            .unwrap_or_else(|e| panic!("wss via {url}: {e}"));
        ws_works(&ws).await;
    }
    assert!(
        proxy.handshakes_ok() >= 2,
        "the sockets did not go through TLS"
    );
}

#[tokio::test]
async fn rest_without_the_ca_fails_once_naming_the_unknown_issuer() {
    let sim = sim().await;
    let proxy = proxy(&sim).await;
    // Default options: webpki roots, retries on (GET, RetryPolicy::default()).
    let e = rest_error(&rest(&sim, &proxy.https_url(), TlsOptions::default())).await;
    assert_rejected(&e, &proxy, &["certificate", "UnknownIssuer"]);
}

#[tokio::test]
async fn ws_without_the_ca_fails_once_naming_the_unknown_issuer() {
    let sim = sim().await;
    let proxy = proxy(&sim).await;
    let e = ws_error(&sim, &proxy.https_url(), TlsOptions::default()).await;
    assert_rejected(&e, &proxy, &["certificate", "UnknownIssuer"]);
}

#[tokio::test]
async fn danger_accept_invalid_certs_works_without_the_ca() {
    let sim = sim().await;
    let proxy = proxy(&sim).await;
    // A certificate for another name as well: verification is off, the name is not checked either.
    let other = TlsProxy::start_for_names(sim.addr(), &["ha.example.test"])
        .await
        .expect("start the TLS proxy");
    let tls = TlsOptions::default().danger_accept_invalid_certs(true);
    assert!(tls.accepts_invalid_certs());
    for url in [proxy.https_url(), other.https_ip_url()] {
        rest_works(&rest(&sim, &url, tls.clone())).await;
        let ws = ws_connect(&sim, &url, tls.clone())
            .await
            .unwrap_or_else(|e| panic!("wss via {url} without verification: {e}"));
        ws_works(&ws).await;
    }
    assert!(proxy.handshakes_ok() >= 2 && other.handshakes_ok() >= 2);
}

#[tokio::test]
async fn a_certificate_for_another_name_fails_naming_the_mismatch() {
    let sim = sim().await;
    let proxy = TlsProxy::start_for_names(sim.addr(), &["ha.example.test"])
        .await
        .expect("start the TLS proxy");
    let tls = TlsOptions::default().add_ca_pem(proxy.ca_pem());
    let needles = ["not valid for name", "127.0.0.1", "ha.example.test"];

    let e = rest_error(&rest(&sim, &proxy.https_ip_url(), tls.clone())).await;
    assert_rejected(&e, &proxy, &needles);

    let proxy = TlsProxy::start_for_names(sim.addr(), &["ha.example.test"])
        .await
        .expect("start the TLS proxy");
    let tls = TlsOptions::default().add_ca_pem(proxy.ca_pem());
    let e = ws_error(&sim, &proxy.https_ip_url(), tls.clone()).await;
    assert_rejected(&e, &proxy, &needles);

    // The control: the same certificate and CA work under the certificate's own name, so the
    // failures above are the name's and nothing else's.
    let http = tls
        .reqwest_builder()
        .expect("reqwest builder")
        .resolve("ha.example.test", proxy.addr())
        .build()
        .expect("build reqwest");
    let client = Client::builder(proxy.url_for_host("ha.example.test"))
        .token_source(token(&sim))
        .http_client(http)
        .build()
        .expect("build the client");
    rest_works(&client).await;
}

#[tokio::test]
async fn add_ca_file_reads_the_ca_and_names_a_missing_file() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sim_tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temp dir");

    let missing = dir.join("no-such-ca.pem");
    let e = TlsOptions::default()
        .add_ca_file(&missing)
        .expect_err("a missing CA file must be an error");
    assert!(matches!(e, Error::Tls(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(&missing.display().to_string()) && text.contains("cannot read CA file"),
        "{text}"
    );

    let sim = sim().await;
    let proxy = proxy(&sim).await;
    let file = dir.join("ca.pem");
    std::fs::write(&file, proxy.ca_pem()).expect("write the CA file");
    let tls = TlsOptions::default()
        .add_ca_file(&file)
        .expect("read the CA file");
    rest_works(&rest(&sim, &proxy.https_url(), tls.clone())).await;
    let ws = ws_connect(&sim, &proxy.https_url(), tls)
        .await
        .expect("wss with the CA from a file");
    ws_works(&ws).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A service retries a first connection that fails transiently, but a rejected certificate will
/// not fix itself: it comes back at once, tried once, instead of being retried for ever.
#[tokio::test]
async fn retry_initial_connect_still_returns_a_rejected_certificate() {
    let sim = sim().await;
    let proxy = proxy(&sim).await;
    let e = within(
        "WebSocket connect",
        WsClient::builder(proxy.https_url())
            .token_source(token(&sim))
            .retry_initial_connect(true)
            .connect(),
    )
    .await
    .expect_err("the connection must fail");
    assert_rejected(&e, &proxy, &["certificate", "UnknownIssuer"]);
}

#[tokio::test]
async fn skip_hostname_verification_checks_the_chain_but_not_the_name() {
    let sim = sim().await;
    let proxy = TlsProxy::start_for_names(sim.addr(), &["ha.example.test"])
        .await
        .expect("start the TLS proxy");
    // Only the test CA, any name: the certificate for ha.example.test is accepted at 127.0.0.1.
    let verify_ca = TlsOptions::default()
        .roots(RootCerts::None)
        .add_ca_pem(proxy.ca_pem())
        .skip_hostname_verification(true);
    rest_works(&rest(&sim, &proxy.https_ip_url(), verify_ca)).await;

    // The chain is still checked: another CA's certificate is refused, at once.
    let other = TlsProxy::start_for_names(sim.addr(), &["ha.example.test"])
        .await
        .expect("start the TLS proxy");
    let wrong_ca = TlsOptions::default()
        .roots(RootCerts::None)
        .add_ca_pem(proxy.ca_pem())
        .skip_hostname_verification(true);
    let e = rest_error(&rest(&sim, &other.https_ip_url(), wrong_ca)).await;
    assert_rejected(&e, &other, &["invalid peer certificate"]);
}

#[test]
fn no_roots_without_a_ca_is_a_clear_error() {
    let e = TlsOptions::default()
        .roots(RootCerts::None)
        .client_config()
        .unwrap_err();
    assert!(e.to_string().contains("needs a CA"), "{e}");
}
