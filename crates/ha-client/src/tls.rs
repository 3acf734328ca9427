//! TLS settings shared by HTTP and WebSocket connections. rustls with the `ring` provider.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::Error;

/// Which root certificates to trust.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RootCerts {
    /// Mozilla's roots, compiled in (`webpki-roots`). Works the same on every machine.
    #[default]
    WebPki,
    /// The operating system's store (`rustls-native-certs`).
    Native,
    /// None: only the CAs added with [`TlsOptions::add_ca_pem`] or [`TlsOptions::add_ca_file`]
    /// are trusted (a private CA that must not be widened by public ones).
    None,
}

/// TLS options: verified by default, an extra CA for a self-signed Home Assistant, and an explicit,
/// loudly named switch to turn verification off.
///
/// ```
/// use ha_client::TlsOptions;
/// let pem = b"-----BEGIN CERTIFICATE-----\n...";
/// let tls = TlsOptions::default().add_ca_pem(pem.to_vec());
/// # let _ = tls;
/// ```
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    roots: RootCerts,
    extra_ca_pem: Vec<Vec<u8>>,
    danger_accept_invalid_certs: bool,
    skip_hostname: bool,
    quiet_unverified: bool,
}

impl TlsOptions {
    /// Chooses the root store.
    pub fn roots(mut self, roots: RootCerts) -> Self {
        self.roots = roots;
        self
    }

    /// Trusts the certificates in a PEM blob as well (e.g. the CA of a self-signed HA).
    pub fn add_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.extra_ca_pem.push(pem.into());
        self
    }

    /// Reads a PEM file and trusts its certificates.
    pub fn add_ca_file(self, path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let pem = std::fs::read(path)
            .map_err(|e| Error::Tls(format!("cannot read CA file {}: {e}", path.display())))?;
        Ok(self.add_ca_pem(pem))
    }

    /// **Turns certificate verification off.** Anyone on the network path can then read and change
    /// the traffic, tokens included. Prefer [`TlsOptions::add_ca_pem`] for a self-signed server.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.danger_accept_invalid_certs = accept;
        self
    }

    /// Verifies the certificate chain but not that the certificate names the host (libpq's
    /// `sslmode=verify-ca`). Only safe with [`RootCerts::None`] and a private CA that signs
    /// nothing else: with public roots, any site's certificate would pass.
    pub fn skip_hostname_verification(mut self, skip: bool) -> Self {
        self.skip_hostname = skip;
        self
    }

    /// Leaves out the warning [`TlsOptions::client_config`] logs when verification is off, for a
    /// caller that says so itself in its own terms (e.g. libpq's `sslmode=prefer`, whose point is
    /// opportunistic encryption).
    pub fn quiet_when_unverified(mut self) -> Self {
        self.quiet_unverified = true;
        self
    }

    /// True when verification is off.
    pub fn accepts_invalid_certs(&self) -> bool {
        self.danger_accept_invalid_certs
    }

    /// Builds the rustls configuration (ring provider; no process-wide provider is installed).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?;
        let config = if self.danger_accept_invalid_certs {
            if !self.quiet_unverified {
                tracing::warn!(
                    "TLS certificate verification is OFF: anyone on the network path can read and change the traffic, secrets included"
                );
            }
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(
                    provider.signature_verification_algorithms,
                )))
                .with_no_client_auth()
        } else if self.skip_hostname {
            let roots = Arc::new(self.root_store()?);
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots,
                provider.clone(),
            )
            .build()
            .map_err(|e| Error::Tls(format!("cannot build the certificate verifier: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyNameCert(webpki)))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(self.root_store()?)
                .with_no_client_auth()
        };
        Ok(Arc::new(config))
    }

    /// A `reqwest::ClientBuilder` that uses these TLS options, for callers who want to tune other
    /// settings and pass the client to [`ClientBuilder::http_client`](crate::ClientBuilder::http_client).
    ///
    /// Use it instead of `reqwest::Client::new()`: this crate builds reqwest without a
    /// process-wide crypto provider, and reqwest's own default TLS setup would panic.
    pub fn reqwest_builder(&self) -> Result<reqwest::ClientBuilder, Error> {
        let config = (*self.client_config()?).clone();
        Ok(reqwest::Client::builder().tls_backend_preconfigured(config))
    }

    fn root_store(&self) -> Result<RootCertStore, Error> {
        let mut store = RootCertStore::empty();
        match self.roots {
            RootCerts::WebPki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            RootCerts::Native => {
                let found = rustls_native_certs::load_native_certs();
                if found.certs.is_empty() {
                    return Err(Error::Tls(format!(
                        "no usable certificates in the system store ({} errors); use the webpki roots or add a CA",
                        found.errors.len()
                    )));
                }
                store.add_parsable_certificates(found.certs);
            }
            RootCerts::None => {
                if self.extra_ca_pem.is_empty() {
                    return Err(Error::Tls(
                        "no root certificates: RootCerts::None needs a CA added with add_ca_pem or add_ca_file"
                            .to_string(),
                    ));
                }
            }
        }
        for pem in &self.extra_ca_pem {
            let mut n = 0;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| Error::Tls(format!("bad CA PEM: {e}")))?;
                store
                    .add(cert)
                    .map_err(|e| Error::Tls(format!("CA certificate rejected: {e}")))?;
                n += 1;
            }
            if n == 0 {
                return Err(Error::Tls(
                    "the CA PEM holds no CERTIFICATE block".to_string(),
                ));
            }
        }
        Ok(store)
    }
}

/// Accepts any server certificate but still checks handshake signatures.
#[derive(Debug)]
struct AcceptAnyCert(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Verifies the chain like webpki but accepts a certificate for any name.
#[derive(Debug)]
struct AnyNameCert(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyNameCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_builds() {
        TlsOptions::default().client_config().unwrap();
        TlsOptions::default()
            .danger_accept_invalid_certs(true)
            .client_config()
            .unwrap();
    }

    #[test]
    fn bad_ca_is_a_clear_error() {
        let err = TlsOptions::default()
            .add_ca_pem(b"not a pem".to_vec())
            .client_config()
            .unwrap_err();
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
        let err = TlsOptions::default()
            .add_ca_file("/nonexistent/ca.pem")
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
