//! The server side of the node-to-node tunnel, port 15008: mutual TLS 1.3 (client
//! certificate required, chain to a trusted root, SPIFFE ID in our trust domain), then
//! HTTP/2 `CONNECT podIP:port` streams. A stream is accepted only for a local enrolled pod
//! whose identity is the one this connection's certificate was chosen for; the pod is dialled
//! with the proxy mark, which its guard requires.
//!
//! With `--tunnel-security plaintext` the streams arrive over plain TCP with no identity:
//! they are plaintext callers, admitted only where PeerAuthentication allows plaintext, and
//! only from the addresses of the other mesh nodes in the controller's config.

use std::{
    convert::Infallible,
    net::{SocketAddr, SocketAddrV4},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::{
    body::Incoming, server::conn::http2, service::service_fn, Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mesh_api::identity::Identity;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};
use tracing::Instrument as _;

use super::{
    relay,
    tunnel::{self, CONNECTION_WINDOW, STREAM_WINDOW},
    AccessLog, ConnResult, Proxy,
};
use crate::workloads::enrollment::Registry;
use crate::{config::TunnelSecurity, identity::IdentityManager, tls};

/// Concurrent tunnels per connection; the client opens another connection before this.
const MAX_STREAMS: u32 = 256;
/// How often a verified connection checks that this node still runs the identity it was
/// served for (new streams are refused at once anyway; this closes the connection).
const IDENTITY_CHECK: Duration = Duration::from_secs(10);

/// Who is at the other end of a tunnel connection.
#[derive(Clone)]
enum Caller {
    /// Mutual TLS: the client's verified identity, when its certificate expires, and the
    /// identity of the local workload whose certificate it was served (chosen by SNI).
    Verified {
        identity: Identity,
        expires: std::time::SystemTime,
        presented: Identity,
    },
    /// A plaintext tunnel: no identity.
    Plaintext,
}

impl Proxy {
    pub async fn serve_tunnel(
        self: Arc<Self>,
        listener: TcpListener,
        identities: Arc<IdentityManager>,
        security: TunnelSecurity,
        mut shutdown: watch::Receiver<bool>,
        active: mpsc::Sender<()>,
    ) {
        let mut server_config = ServerConfigCache::default();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "tunnel accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            // A flood of connections must not pile up TLS handshakes (each costs CPU): over
            // the bound, refuse at once.
            let Some(handshake) = self.limits.handshake() else {
                self.stats
                    .tunnel_refused_handshake_limit
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                relay::reset(&tcp);
                continue;
            };
            let config = match security {
                TunnelSecurity::Plaintext => None,
                TunnelSecurity::Mtls => match server_config.current(&identities) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::error!(error = %e, "tunnel TLS configuration");
                        continue;
                    }
                },
            };
            let proxy = self.clone();
            let identities = identities.clone();
            let active = active.clone();
            let span = tracing::info_span!("tunnel", %peer);
            tokio::spawn(
                async move {
                    proxy
                        .tunnel_connection(tcp, peer, identities, config, handshake)
                        .await;
                    drop(active);
                }
                .instrument(span),
            );
        }
    }

    async fn tunnel_connection(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        identities: Arc<IdentityManager>,
        config: Option<Arc<rustls::ServerConfig>>,
        handshake: tokio::sync::OwnedSemaphorePermit,
    ) {
        let Some(config) = config else {
            drop(handshake);
            // No TLS means no proof of who connects: only the other mesh nodes the
            // controller lists may, or any host reaching 15008 could enter enrolled pods.
            let from_node = match peer.ip() {
                std::net::IpAddr::V4(ip) => self.registry().is_peer_node(ip),
                std::net::IpAddr::V6(ip) => ip
                    .to_ipv4_mapped()
                    .is_some_and(|ip| self.registry().is_peer_node(ip)),
            };
            if !from_node {
                self.stats
                    .tunnel_refused_not_a_node
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(%peer, "plaintext tunnel refused: the caller is not a mesh node of the controller's config");
                return relay::reset(&tcp);
            }
            return self.serve_streams(tcp, peer, Caller::Plaintext).await;
        };
        let accept = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
        let accepted = tokio::time::timeout(Duration::from_secs(10), accept).await;
        drop(handshake);
        let stream = match accepted {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let reason = handshake_failure_reason(&e);
                identities.record_handshake(Err(reason));
                tracing::info!(reason, error = %e, "tunnel handshake refused");
                return;
            }
            Err(_) => {
                identities.record_handshake(Err("handshake_timeout"));
                return;
            }
        };
        let conn = stream.get_ref().1;
        let peer_identity = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(tls::spiffe_id);
        let expires = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(tls::not_after);
        let (Some(peer_identity), Some(expires)) = (peer_identity, expires) else {
            identities.record_handshake(Err("no_spiffe_id"));
            tracing::info!("tunnel refused: the client certificate carries no workload SPIFFE ID");
            return;
        };
        if peer_identity.trust_domain != identities.trust_domain() {
            identities.record_handshake(Err("wrong_trust_domain"));
            tracing::info!(%peer_identity, "tunnel refused: client outside our trust domain");
            return;
        }
        let Some(presented) = conn.server_name().and_then(tls::pod_from_sni).and_then(|pod| {
            self.registry()
                .by_ip(pod)
                .map(|w| w.identity(identities.trust_domain()))
        }) else {
            return;
        };
        identities.record_handshake(Ok(()));
        let (group, suite) = tls::negotiated(conn);
        tracing::info!(target: "tls", %peer_identity, local = %presented, group = %group, cipher = %suite, "tunnel connection accepted");
        let caller = Caller::Verified {
            identity: peer_identity,
            expires,
            presented,
        };
        self.serve_streams(stream, peer, caller).await;
    }

    /// HTTP/2 over an accepted tunnel connection: each CONNECT stream is one tunnel.
    async fn serve_streams<IO>(self: Arc<Self>, io: IO, peer: SocketAddr, caller: Caller)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let proxy = self.clone();
        let caller_for_checks = caller.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let (proxy, caller) = (proxy.clone(), caller.clone());
            async move { Ok::<_, Infallible>(proxy.connect_stream(req, peer, caller).await) }
        });
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_STREAMS)
            .max_pending_accept_reset_streams(Some(50))
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10))
            // Fixed windows: adaptive sizing sends BDP pings with the data, extra packets and
            // wakeups per request for a gain only on long fat links.
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let Caller::Verified {
            expires, presented, ..
        } = caller_for_checks
        else {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "tunnel connection ended");
            }
            return;
        };
        // A verified connection lives while its client certificate is valid and this node
        // runs the identity it was served for; then it takes no new streams (GOAWAY) and
        // closes once its streams finish.
        let until_expiry = expires
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        let expiry = tokio::time::sleep(until_expiry);
        tokio::pin!(expiry);
        let mut check =
            tokio::time::interval_at(tokio::time::Instant::now() + IDENTITY_CHECK, IDENTITY_CHECK);
        let mut closing = false;
        loop {
            let reason = tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "tunnel connection ended");
                    }
                    return;
                }
                _ = &mut expiry, if !closing => "the client certificate expired",
                _ = check.tick(), if !closing => {
                    let td = self.trust_domain();
                    if self.registry().workloads.values().any(|e| e.workload.identity(td) == presented) {
                        continue;
                    }
                    "this node no longer runs the identity it was served for"
                }
            };
            tracing::info!(reason, %peer, "closing tunnel connection; its streams drain");
            conn.as_mut().graceful_shutdown();
            closing = true;
        }
    }

    /// One CONNECT stream: check, dial, answer 200, relay.
    async fn connect_stream(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        caller: Caller,
    ) -> Response<Empty<Bytes>> {
        let started = Instant::now();
        let status = |s: StatusCode| {
            let mut r = Response::new(Empty::new());
            *r.status_mut() = s;
            r
        };
        if req.method() != Method::CONNECT {
            return status(StatusCode::METHOD_NOT_ALLOWED);
        }
        let Some(target) = req
            .uri()
            .authority()
            .and_then(|a| a.as_str().parse::<SocketAddrV4>().ok())
        else {
            return status(StatusCode::BAD_REQUEST);
        };
        let peer_identity = match &caller {
            Caller::Verified { identity, .. } => Some(identity),
            Caller::Plaintext => None,
        };
        let mut log = AccessLog::tunnel(peer, target, peer_identity);
        let reg = self.registry();
        let dst = reg
            .by_ip(*target.ip())
            .map(|w| (w.key(), w.identity(self.trust_domain())));
        let refuse = |log: AccessLog, result: ConnResult, code: StatusCode| {
            log.emit(result, 0, 0, started);
            status(code)
        };
        let Some((dst_key, dst_identity)) = dst else {
            return refuse(log, ConnResult::NotLocal, StatusCode::NOT_FOUND);
        };
        log.dst = Some(dst_key);
        log.dst_identity = Some(dst_identity.to_string());
        match &caller {
            // The client verified `presented`; it may not reach a workload with another identity.
            Caller::Verified { presented, .. } if dst_identity != *presented => {
                return refuse(log, ConnResult::IdentityMismatch, StatusCode::FORBIDDEN);
            }
            Caller::Verified { .. } => {}
            Caller::Plaintext => {
                if let Err(result) = self.admit_plaintext(&reg, None, target, &mut log) {
                    return refuse(log, result, StatusCode::FORBIDDEN);
                }
            }
        }
        let client = self.tunnel_client(&reg, &req, &caller);
        let upstream = match self.connect(target, client).await {
            Ok(s) => {
                log.upstream_src = s.local_addr().ok();
                s
            }
            Err(result) => return refuse(log, result, StatusCode::BAD_GATEWAY),
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        let idle = self.idle_timeout;
        tokio::spawn(
            async move {
                match on_upgrade.await {
                    Ok(upgraded) => {
                        let outcome =
                            relay::relay(TokioIo::new(upgraded), upstream, idle, std::future::pending())
                                .await;
                        log.emit(
                            ConnResult::Relayed(outcome.ending),
                            outcome.bytes_up,
                            outcome.bytes_down,
                            started,
                        );
                    }
                    Err(e) => tracing::debug!(error = %e, "tunnel stream upgrade failed"),
                }
            }
            .in_current_span(),
        );
        status(StatusCode::OK)
    }
}

impl Proxy {
    /// The client address a CONNECT names (`Forwarded: for=`), believed only when it is a pod
    /// of another node with the identity the caller proved: a node cannot make a pod look
    /// like a workload it holds no certificate for. (A plaintext tunnel proves nothing: its
    /// claim is believed for any known remote pod, as its callers are mesh nodes.)
    fn tunnel_client(
        &self,
        reg: &Registry,
        req: &Request<Incoming>,
        caller: &Caller,
    ) -> Option<std::net::Ipv4Addr> {
        let claimed = req
            .headers()
            .get(tunnel::FORWARDED)
            .and_then(|v| v.to_str().ok())
            .and_then(tunnel::forwarded_for)?;
        let remote = reg.remote(claimed)?;
        match caller {
            Caller::Verified { identity, .. } if remote.identity != *identity => {
                tracing::info!(%claimed, %identity, "Forwarded names a pod of another identity; dialling from the node");
                None
            }
            _ => Some(claimed),
        }
    }
}

/// The 15008 server configuration, rebuilt only when the trust bundle changes (the client
/// verifier parses every root; certificates are looked up live by SNI, so renewals need no
/// rebuild).
#[derive(Default)]
struct ServerConfigCache {
    built_for: Option<(Arc<rustls::RootCertStore>, Arc<rustls::ServerConfig>)>,
}

impl ServerConfigCache {
    fn current(
        &mut self,
        identities: &Arc<IdentityManager>,
    ) -> Result<Arc<rustls::ServerConfig>, tls::Error> {
        let roots = identities.roots();
        if let Some((built, config)) = &self.built_for {
            if Arc::ptr_eq(built, &roots) {
                return Ok(config.clone());
            }
        }
        let config = Arc::new(tls::server_config(
            roots.clone(),
            identities.clone(),
            identities.trust_domain(),
        )?);
        self.built_for = Some((roots, config.clone()));
        Ok(config)
    }
}

/// A short, stable reason for a failed server handshake, for the counters.
fn handshake_failure_reason(error: &std::io::Error) -> &'static str {
    use rustls::{CertificateError as C, Error as E};
    match error.get_ref().and_then(|e| e.downcast_ref::<E>()) {
        Some(E::NoCertificatesPresented) => "no_client_certificate",
        Some(E::InvalidCertificate(C::Expired | C::ExpiredContext { .. })) => "expired_certificate",
        Some(E::InvalidCertificate(C::UnknownIssuer | C::BadSignature)) => "unknown_issuer",
        Some(E::InvalidCertificate(C::Other(o)))
            if o.0.downcast_ref::<tls::ForeignTrustDomain>().is_some() =>
        {
            "wrong_trust_domain"
        }
        Some(E::InvalidCertificate(_)) => "invalid_certificate",
        Some(E::PeerIncompatible(_)) => "incompatible_client",
        _ => "handshake_failed",
    }
}
