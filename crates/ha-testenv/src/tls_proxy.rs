//! A loopback TLS terminator in front of a plain TCP server (the simulator), with a test CA made at
//! start, so the clients' TLS paths (trusted CA, unknown issuer, wrong name) can be tested end to end.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The names [`TlsProxy::start`] puts in the server certificate.
pub const DEFAULT_TLS_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// Terminates TLS on `127.0.0.1:<free port>` and forwards the plain bytes to a target.
///
/// At start it makes a fresh test CA and a server certificate signed by it for the given names
/// (DNS names, or IP addresses such as `127.0.0.1`). Clients trust it by adding
/// [`TlsProxy::ca_pem`]; without it they must reject the certificate (unknown issuer). Only the
/// `ring` provider is used. The listener closes when the proxy is dropped.
///
/// ```no_run
/// # async fn run(target: std::net::SocketAddr) {
/// let proxy = ha_testenv::TlsProxy::start(target).await.unwrap();
/// let base = proxy.https_url(); // https://localhost:<port>
/// let ca = proxy.ca_pem();      // PEM of the CA that signed the server certificate
/// # let _ = (base, ca);
/// # }
/// ```
pub struct TlsProxy {
    addr: SocketAddr,
    ca_pem: String,
    names: Vec<String>,
    counters: Arc<Counters>,
    accept_task: JoinHandle<()>,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    handshakes_ok: AtomicU64,
    handshakes_failed: AtomicU64,
}

impl TlsProxy {
    /// Starts a proxy to `target` whose certificate is valid for `localhost` and `127.0.0.1`
    /// (needs a tokio runtime).
    pub async fn start(target: SocketAddr) -> io::Result<TlsProxy> {
        TlsProxy::start_for_names(target, &DEFAULT_TLS_NAMES).await
    }

    /// Starts a proxy to `target` whose certificate is valid for `names` only (e.g.
    /// `["ha.example.test"]`, to test a name mismatch). Each name is a DNS name or an IP address.
    pub async fn start_for_names(target: SocketAddr, names: &[&str]) -> io::Result<TlsProxy> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let (ca_pem, chain, key) = make_certificates(&names).map_err(io::Error::other)?;
        let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(io::Error::other)?;
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let seen = counters.clone();
        let accept_task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                seen.connections.fetch_add(1, Ordering::SeqCst);
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(client).await {
                        Ok(tls) => {
                            seen.handshakes_ok.fetch_add(1, Ordering::SeqCst);
                            tls
                        }
                        Err(_) => {
                            seen.handshakes_failed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = copy_bidirectional(&mut tls, &mut server).await;
                });
            }
        });
        Ok(TlsProxy {
            addr,
            ca_pem,
            names,
            counters,
            accept_task,
        })
    }

    /// PEM of the test CA that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The names the server certificate is valid for.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `https://localhost:<port>` (a client derives `wss://` from it).
    pub fn https_url(&self) -> String {
        self.url_for_host("localhost")
    }

    /// `https://127.0.0.1:<port>`.
    pub fn https_ip_url(&self) -> String {
        self.url_for_host("127.0.0.1")
    }

    /// `https://<host>:<port>`, for a host that resolves to 127.0.0.1.
    pub fn url_for_host(&self, host: &str) -> String {
        format!("https://{host}:{}", self.port())
    }

    /// TCP connections accepted so far (one per client connection attempt).
    pub fn connections(&self) -> u64 {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// TLS handshakes that completed.
    pub fn handshakes_ok(&self) -> u64 {
        self.counters.handshakes_ok.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed (e.g. the client rejected the certificate).
    pub fn handshakes_failed(&self) -> u64 {
        self.counters.handshakes_failed.load(Ordering::SeqCst)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

type CertChain = Vec<CertificateDer<'static>>;

/// A CA, and a leaf for `names` signed by it: (CA PEM, leaf chain, leaf key).
fn make_certificates(
    names: &[String],
) -> Result<(String, CertChain, PrivateKeyDer<'static>), rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ha-testenv test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf_params = CertificateParams::new(names.to_vec())?;
    if let Some(first) = names.first() {
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    leaf_params.use_authority_key_identifier_extension = true;
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer)?;

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    Ok((ca_cert.pem(), vec![leaf_cert.der().clone()], key))
}
