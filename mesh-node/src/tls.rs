//! TLS for the node-to-node tunnel: rustls configs (TLS 1.3 only, X25519MLKEM768 preferred;
//! see `mesh_api::crypto`), the SPIFFE checks on both sides, and certificate selection.
//!
//! - The client (source node) presents the *source workload's* certificate and accepts the
//!   server only if its chain leads to a trusted root and its SPIFFE ID is the destination
//!   workload's identity.
//! - The server (destination node, port 15008) presents the certificate of the destination
//!   workload, chosen by SNI: the client names the destination pod (`10-2-1-2.pod.trellis`),
//!   because the node address alone does not say which workload is meant. It requires a client
//!   certificate chaining to a trusted root and naming a workload of our trust domain.
//! - Session resumption is off on both sides, so every connection re-verifies the chain
//!   (what makes a root rotation take effect).

use std::{net::Ipv4Addr, sync::Arc};

use mesh_api::identity::Identity;
use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        ResolvesClientCert, WebPkiServerVerifier,
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The mesh's crypto provider, built once: every tunnel connection and renewal uses it.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(mesh_api::crypto::provider()))
        .clone()
}

/// The SPIFFE identity in a certificate: its single URI SAN.
pub fn spiffe_id(cert: &CertificateDer<'_>) -> Option<Identity> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    let mut uris = ee.valid_uri_names();
    match (uris.next(), uris.next()) {
        (Some(uri), None) => uri.parse().ok(),
        _ => None,
    }
}

/// When a certificate stops being valid (`None` when it cannot be parsed).
pub fn not_after(cert: &CertificateDer<'_>) -> Option<std::time::SystemTime> {
    use x509_parser::prelude::*;
    let (_, x) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let secs = u64::try_from(x.validity().not_after.timestamp()).ok()?;
    Some(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// The SNI naming a destination pod.
pub fn sni_for(pod: Ipv4Addr) -> String {
    let o = pod.octets();
    format!("{}-{}-{}-{}.pod.trellis", o[0], o[1], o[2], o[3])
}

/// The pod an SNI names.
pub fn pod_from_sni(sni: &str) -> Option<Ipv4Addr> {
    let label = sni.strip_suffix(".pod.trellis")?;
    let octets: Vec<u8> = label.split('-').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [a, b, c, d] = octets.as_slice() else {
        return None;
    };
    Some(Ipv4Addr::new(*a, *b, *c, *d))
}

/// The handshake signature checks, which both verifiers leave to webpki unchanged.
macro_rules! delegate_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    };
}

/// Verifies the server's chain with webpki and requires an exact SPIFFE ID; the DNS name
/// check is meaningless here (the SNI is synthetic) and is the one failure ignored.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    expected: Identity,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks chain, validity and EKU before the name, so a name error means the
        // rest passed.
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(e) => return Err(e),
        }
        match spiffe_id(end_entity) {
            Some(id) if id == self.expected => Ok(ServerCertVerified::assertion()),
            _ => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    delegate_signature_checks!();
}

/// The server's view of client certificates: webpki chain verification, then a SPIFFE ID in
/// our trust domain, so a foreign identity fails the handshake itself (with an alert).
#[derive(Debug)]
struct SpiffeClientVerifier {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    trust_domain: String,
}

/// The client certificate names no workload of our trust domain.
#[derive(Debug, thiserror::Error)]
#[error("the client certificate names no workload of trust domain {0}")]
pub struct ForeignTrustDomain(pub String);

impl rustls::server::danger::ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        match spiffe_id(end_entity) {
            Some(id) if id.trust_domain == self.trust_domain => Ok(verified),
            _ => Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(ForeignTrustDomain(self.trust_domain.clone()))),
            ))),
        }
    }

    delegate_signature_checks!();
}

/// Always presents one workload's certificate.
#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Client side of a tunnel connection from `source` (its certificate) to `expected`.
pub fn client_config(
    roots: Arc<RootCertStore>,
    source: Arc<CertifiedKey>,
    expected: Identity,
) -> Result<ClientConfig, Error> {
    let provider = provider();
    let inner = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| Error::Config(e.to_string()))?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier { inner, expected }))
        .with_client_cert_resolver(Arc::new(FixedClientCert(source)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// Picks the server certificate for a connection from its SNI.
pub trait CertLookup: Send + Sync + std::fmt::Debug {
    fn cert_for_pod(&self, pod: Ipv4Addr) -> Option<Arc<CertifiedKey>>;
}

#[derive(Debug)]
struct SniResolver(Arc<dyn CertLookup>);

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.cert_for_pod(pod_from_sni(hello.server_name()?)?)
    }
}

/// Server side of the tunnel (port 15008).
pub fn server_config(
    roots: Arc<RootCertStore>,
    certs: Arc<dyn CertLookup>,
    trust_domain: &str,
) -> Result<ServerConfig, Error> {
    let provider = provider();
    let inner = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| Error::Config(e.to_string()))?;
    let verifier = Arc::new(SpiffeClientVerifier {
        inner,
        trust_domain: trust_domain.to_string(),
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SniResolver(certs)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The negotiated key exchange group and cipher suite, for logs and the admin view.
pub fn negotiated(conn: &rustls::CommonState) -> (String, String) {
    let group = conn
        .negotiated_key_exchange_group()
        .map(|g| format!("{:?}", g.name()))
        .unwrap_or_else(|| "-".into());
    let suite = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_else(|| "-".into());
    (group, suite)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_names_a_pod_and_back() {
        let ip = Ipv4Addr::new(10, 2, 1, 2);
        assert_eq!(sni_for(ip), "10-2-1-2.pod.trellis");
        assert_eq!(pod_from_sni(&sni_for(ip)), Some(ip));
        assert_eq!(pod_from_sni("10-2-1.pod.trellis"), None);
        assert_eq!(pod_from_sni("example.com"), None);
    }
}
