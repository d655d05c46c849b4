//! The client side of the node-to-node tunnel (HBONE framing): HTTP/2 `CONNECT podIP:port`
//! inside mutual TLS 1.3 to the destination node's port 15008, presenting the *source
//! workload's* certificate. One pooled connection per (source identity, destination node,
//! destination identity) carries every tunnel between them as HTTP/2 streams; the server's
//! stream limit queues extra tunnels rather than failing them.
//!
//! With `--tunnel-security plaintext` the same HTTP/2 CONNECT runs over plain TCP, with no
//! certificates (for measuring what TLS costs).

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::{client::conn::http2, upgrade::Upgraded, Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mesh_api::identity::Identity;
use rustls::pki_types::ServerName;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::{
    config::TunnelSecurity,
    identity::{IdentityManager, WorkloadCert},
    tls,
};

/// HTTP/2 flow-control windows (both ends): large enough for bulk transfers inside a data
/// centre, fixed because adaptive sizing sends BDP pings along with the data.
pub(super) const STREAM_WINDOW: u32 = 4 << 20;
pub(super) const CONNECTION_WINDOW: u32 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("no certificate for {0} yet: is the CA reachable? (see /certs on the admin endpoint)")]
    NoCertificate(Identity),
    #[error("connecting to {addr}: {source} (is the destination node's proxy running, port 15008 open?)")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to {0} timed out: is the destination node's proxy running and port 15008 open?")]
    Timeout(SocketAddr),
    #[error("TLS handshake with {addr}: {message}")]
    Handshake { addr: SocketAddr, message: String },
    #[error("HTTP/2 with {addr}: {message}")]
    Http2 { addr: SocketAddr, message: String },
    #[error("the destination node refused CONNECT {target}: {status}")]
    Refused {
        target: SocketAddrV4,
        status: StatusCode,
    },
}

type Sender = http2::SendRequest<Empty<Bytes>>;

#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    source: Identity,
    node: Ipv4Addr,
    destination: Identity,
}

pub struct TunnelClient {
    pub identities: Arc<IdentityManager>,
    pub security: TunnelSecurity,
    pub port: u16,
    pub mark: u32,
    pub connect_timeout: Duration,
    /// Per key: the serial of the source certificate the connection was made with (empty for
    /// a plaintext tunnel), and the connection. A renewed certificate gets a new connection; the old one closes once its
    /// streams finish.
    pool: Mutex<HashMap<PoolKey, (String, Sender)>>,
}

impl TunnelClient {
    pub fn new(
        identities: Arc<IdentityManager>,
        security: TunnelSecurity,
        port: u16,
        mark: u32,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            identities,
            security,
            port,
            mark,
            connect_timeout,
            pool: Mutex::default(),
        }
    }

    /// Opens a tunnel from `source` to `target` (a pod with identity `destination` on `node`).
    pub async fn open(
        &self,
        source: &Identity,
        node: Ipv4Addr,
        destination: &Identity,
        target: SocketAddrV4,
    ) -> Result<TokioIo<Upgraded>, TunnelError> {
        let key = PoolKey {
            source: source.clone(),
            node,
            destination: destination.clone(),
        };
        let addr = SocketAddr::from((node, self.port));
        let cert = match self.security {
            TunnelSecurity::Mtls => Some(
                self.identities
                    .cert(source)
                    .ok_or_else(|| TunnelError::NoCertificate(source.clone()))?,
            ),
            TunnelSecurity::Plaintext => None,
        };
        let serial = cert.as_ref().map_or("", |c| c.serial.as_str());
        let pooled = self
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .filter(|(pooled_serial, s)| pooled_serial == serial && !s.is_closed())
            .map(|(_, s)| s.clone());
        let mut sender = match pooled {
            Some(s) => s,
            None => {
                let s = self.connect(&key, cert.as_deref(), target).await?;
                self.pool
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, (serial.to_string(), s.clone()));
                s
            }
        };
        let h2 = |e: hyper::Error| TunnelError::Http2 {
            addr,
            message: e.to_string(),
        };
        sender.ready().await.map_err(h2)?;
        let request = Request::builder()
            .method(Method::CONNECT)
            .uri(target.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| TunnelError::Http2 {
                addr,
                message: e.to_string(),
            })?;
        let response = sender.send_request(request).await.map_err(h2)?;
        if response.status() != StatusCode::OK {
            return Err(TunnelError::Refused {
                target,
                status: response.status(),
            });
        }
        Ok(TokioIo::new(hyper::upgrade::on(response).await.map_err(h2)?))
    }

    /// A new tunnel connection: TCP, then mutual TLS presenting `cert` (none: plaintext),
    /// then HTTP/2.
    async fn connect(
        &self,
        key: &PoolKey,
        cert: Option<&WorkloadCert>,
        target: SocketAddrV4,
    ) -> Result<Sender, TunnelError> {
        let addr = SocketAddr::from((key.node, self.port));
        let socket =
            tokio::net::TcpSocket::new_v4().map_err(|source| TunnelError::Connect { addr, source })?;
        crate::proxy::set_mark(&socket, self.mark).map_err(|source| TunnelError::Connect { addr, source })?;
        let tcp = tokio::time::timeout(self.connect_timeout, socket.connect(addr))
            .await
            .map_err(|_| TunnelError::Timeout(addr))?
            .map_err(|source| TunnelError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        let Some(cert) = cert else {
            tracing::info!(peer = %addr, source = %key.source, destination = %key.destination, "plaintext tunnel connection established");
            return http2(tcp, addr).await;
        };
        let config = tls::client_config(
            self.identities.roots(),
            cert.certified.clone(),
            key.destination.clone(),
        )
        .map_err(|e| TunnelError::Handshake {
            addr,
            message: e.to_string(),
        })?;
        let name = ServerName::try_from(tls::sni_for(*target.ip())).map_err(|e| TunnelError::Handshake {
            addr,
            message: e.to_string(),
        })?;
        let handshake = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp);
        let stream = match tokio::time::timeout(self.connect_timeout, handshake).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.identities.record_handshake(Err("outbound_handshake_failed"));
                return Err(TunnelError::Handshake {
                    addr,
                    message: e.to_string(),
                });
            }
            Err(_) => return Err(TunnelError::Timeout(addr)),
        };
        self.identities.record_handshake(Ok(()));
        let (group, suite) = tls::negotiated(stream.get_ref().1);
        tracing::info!(
            target: "tls",
            peer = %addr,
            source = %key.source,
            destination = %key.destination,
            group = %group,
            cipher = %suite,
            "tunnel connection established"
        );
        http2(stream, addr).await
    }
}

/// The HTTP/2 client end of a tunnel connection over `io`; its connection task is spawned.
async fn http2<IO>(io: IO, addr: SocketAddr) -> Result<Sender, TunnelError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        // Fixed windows: adaptive sizing sends BDP pings with the data, extra packets and
        // wakeups per request for a gain only on long fat links.
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    let (sender, conn) = builder
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| TunnelError::Http2 {
            addr,
            message: e.to_string(),
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(peer = %addr, error = %e, "tunnel connection closed");
        }
    });
    Ok(sender)
}
