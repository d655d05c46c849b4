//! The client side of the node-to-node tunnel (HBONE framing): HTTP/2 `CONNECT podIP:port`
//! inside mutual TLS 1.3 to the destination node's port 15008, presenting the *source
//! workload's* certificate. Pooled connections per (source identity, destination node,
//! destination identity) carry the tunnels between them as HTTP/2 streams; when every pooled
//! connection carries [`STREAMS_PER_CONNECTION`] tunnels (a database pool holding hundreds)
//! another connection is opened, so a tunnel never waits for a stream to end. Readiness and
//! the CONNECT exchange are bounded by the connect timeout. Connections that closed, or that
//! carried nothing for [`IDLE_EVICTION`] (their node or identity may be gone), leave the pool.
//!
//! With `--tunnel-security plaintext` the same HTTP/2 CONNECT runs over plain TCP, with no
//! certificates (for measuring what TLS costs).

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    pin::Pin,
    sync::{atomic::Ordering, Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::{client::conn::http2, upgrade::Upgraded, Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mesh_api::identity::Identity;
use rustls::pki_types::ServerName;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ProxyStats;
use crate::{
    config::TunnelSecurity,
    identity::{IdentityManager, WorkloadCert},
    tls,
};

/// HTTP/2 flow-control windows (both ends): large enough for bulk transfers inside a data
/// centre, fixed because adaptive sizing sends BDP pings along with the data.
pub(super) const STREAM_WINDOW: u32 = 4 << 20;
pub(super) const CONNECTION_WINDOW: u32 = 16 << 20;
/// The CONNECT header naming the client's address.
pub const FORWARDED: &str = "forwarded";

/// The client address a `Forwarded: for=<ipv4>` header names.
pub fn forwarded_for(value: &str) -> Option<Ipv4Addr> {
    value
        .split(';')
        .find_map(|pair| pair.trim().strip_prefix("for="))
        .and_then(|v| v.trim_matches('"').parse().ok())
}

/// Tunnels one pooled connection carries before another is opened: below the 256 concurrent
/// streams the tunnel listener allows, so a stream is always free on a connection we pick.
pub const STREAMS_PER_CONNECTION: usize = 200;
/// A pooled connection that carried no tunnel for this long is closed.
const IDLE_EVICTION: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    #[test]
    fn forwarded_for_is_read_as_rfc_7239_writes_it() {
        assert_eq!(super::forwarded_for("for=10.1.1.2"), Some([10, 1, 1, 2].into()));
        assert_eq!(
            super::forwarded_for("proto=http; for=\"10.1.1.2\""),
            Some([10, 1, 1, 2].into())
        );
        assert_eq!(super::forwarded_for("for=unknown"), None);
        assert_eq!(super::forwarded_for("by=10.1.1.2"), None);
    }
}

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
    #[error("the destination node at {addr} did not answer CONNECT {target} in time")]
    ConnectTimeout { addr: SocketAddr, target: SocketAddrV4 },
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
    pub stats: Arc<ProxyStats>,
    /// Per key, the connections. A renewed certificate gets new connections; the old ones
    /// close once their streams finish.
    pool: Mutex<HashMap<PoolKey, Vec<Pooled>>>,
}

/// One pooled tunnel connection.
struct Pooled {
    /// Serial of the source certificate it was made with (empty for a plaintext tunnel).
    serial: String,
    sender: Sender,
    /// Held by every open tunnel of the connection: the strong count less one is the number
    /// of streams in use.
    streams: Arc<()>,
    last_used: Instant,
}

impl Pooled {
    fn in_use(&self) -> usize {
        Arc::strong_count(&self.streams) - 1
    }

    /// Open, and carrying tunnels or used recently.
    fn usable(&self, now: Instant) -> bool {
        !self.sender.is_closed() && (self.in_use() > 0 || now - self.last_used < IDLE_EVICTION)
    }
}

/// One tunnel: an HTTP/2 CONNECT stream, holding its connection's stream slot.
pub struct Tunnel {
    io: TokioIo<Upgraded>,
    _slot: Arc<()>,
}

impl AsyncRead for Tunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl TunnelClient {
    pub fn new(
        identities: Arc<IdentityManager>,
        security: TunnelSecurity,
        port: u16,
        mark: u32,
        connect_timeout: Duration,
        stats: Arc<ProxyStats>,
    ) -> Self {
        Self {
            identities,
            security,
            port,
            mark,
            connect_timeout,
            stats,
            pool: Mutex::default(),
        }
    }

    /// Opens a tunnel from `source` to `target` (a pod with identity `destination` on `node`),
    /// telling the destination node the client's address (`Forwarded: for=`, RFC 7239), which
    /// it dials the pod from once it checked the address belongs to the caller's identity.
    pub async fn open(
        &self,
        source: &Identity,
        node: Ipv4Addr,
        destination: &Identity,
        target: SocketAddrV4,
        client: Option<Ipv4Addr>,
    ) -> Result<Tunnel, TunnelError> {
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
        let (mut sender, slot) = match self.pooled(&key, serial) {
            Some(pooled) => pooled,
            None => {
                let sender = self.connect(&key, cert.as_deref(), target).await?;
                let slot = Arc::new(());
                self.stats
                    .tunnel_connections_opened
                    .fetch_add(1, Ordering::Relaxed);
                let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
                // New connections are rare: the time to forget those of other keys.
                let now = Instant::now();
                pool.retain(|_, conns| {
                    conns.retain(|c| c.usable(now));
                    !conns.is_empty()
                });
                pool.entry(key).or_default().push(Pooled {
                    serial: serial.to_string(),
                    sender: sender.clone(),
                    streams: slot.clone(),
                    last_used: Instant::now(),
                });
                (sender, slot)
            }
        };
        let h2 = |e: hyper::Error| TunnelError::Http2 {
            addr,
            message: e.to_string(),
        };
        let mut request = Request::builder().method(Method::CONNECT).uri(target.to_string());
        if let Some(client) = client {
            request = request.header(FORWARDED, format!("for={client}"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| TunnelError::Http2 {
                addr,
                message: e.to_string(),
            })?;
        let exchange = async {
            sender.ready().await.map_err(h2)?;
            sender.send_request(request).await.map_err(h2)
        };
        let response = tokio::time::timeout(self.connect_timeout, exchange)
            .await
            .map_err(|_| TunnelError::ConnectTimeout { addr, target })??;
        if response.status() != StatusCode::OK {
            return Err(TunnelError::Refused {
                target,
                status: response.status(),
            });
        }
        Ok(Tunnel {
            io: TokioIo::new(hyper::upgrade::on(response).await.map_err(h2)?),
            _slot: slot,
        })
    }

    /// A pooled connection for `key` made with the certificate `serial`, with a free stream,
    /// and the slot the new tunnel holds. Sweeps closed and long-idle connections on the way.
    fn pooled(&self, key: &PoolKey, serial: &str) -> Option<(Sender, Arc<()>)> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let conns = pool.get_mut(key)?;
        conns.retain(|c| c.usable(now));
        let conn = conns
            .iter_mut()
            .filter(|c| c.serial == serial && c.in_use() < STREAMS_PER_CONNECTION)
            .min_by_key(|c| c.in_use())?;
        conn.last_used = now;
        Some((conn.sender.clone(), conn.streams.clone()))
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
