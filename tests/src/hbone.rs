//! A bare HBONE client for tests that play a misbehaving mesh node: mutual TLS to a node's
//! 15008 with a certificate the test chose, an SNI naming a pod the test chose, then one
//! HTTP/2 `CONNECT` to a target the test chose. It checks nothing about the server (the
//! tests are about what the server refuses).

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use http_body_util::Empty;
use hyper::{body::Bytes, Method, Request};
use hyper_util::rt::TokioIo;
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    DigitallySignedStruct, SignatureScheme,
};

use crate::netns::Netns;

/// From inside `ns`: the status `node` (its 15008) answers to `CONNECT target`, presenting
/// `cert_pem`/`key_pem` with `sni` as the server name.
pub fn connect_status(
    ns: &Netns,
    node: SocketAddr,
    cert_pem: &str,
    key_pem: &str,
    sni: &str,
    target: SocketAddr,
) -> anyhow::Result<u16> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("client certificate PEM")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("client key PEM")?;
    let provider = Arc::new(mesh_api::crypto::provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_auth_cert(certs, key)?;
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::try_from(sni.to_string())?;
    ns.run_async(async move {
        let tcp = tokio::net::TcpStream::connect(node).await?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls))
                .await?;
        tokio::spawn(conn);
        let request = Request::builder()
            .method(Method::CONNECT)
            .uri(target.to_string())
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        Ok::<_, anyhow::Error>(response.status().as_u16())
    })
}

/// Accepts any server certificate, checking only that the handshake signatures are sound.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
