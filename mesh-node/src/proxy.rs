//! The node proxy's listeners. 15001 takes connects the kernel captured from enrolled pods,
//! 15006 takes node-local non-mesh callers of enrolled pods. Both learn the original
//! destination and the caller's network namespace from the kernel (`ORIG_DST`), never from
//! the client, and relay to it with the proxy mark set, which the pod guards require.
//!
//! Every connection gets a span with an id and exactly one access-log event (target
//! `access`) when it ends.

pub mod limits;
pub mod relay;
pub mod tunnel;
mod tunnel_listener;

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use mesh_common::{OrigDst, SockTuple, DIRECTION_INBOUND, DIRECTION_OUTBOUND};
use serde::Serialize;
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{mpsc, watch},
};
use tracing::Instrument as _;

use mesh_api::{identity::Identity, peer_authentication};

use crate::{
    datapath::OrigDstTable,
    identity::IdentityManager,
    services::Lookup,
    workloads::{enrollment::Registry, NodeAddresses},
};

/// Which listener accepted a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Listener {
    Outbound,
    Inbound,
    Tunnel,
}

impl Listener {
    fn name(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
            Self::Tunnel => "tunnel",
        }
    }

    fn expected_direction(self) -> u8 {
        match self {
            Self::Outbound => DIRECTION_OUTBOUND,
            Self::Inbound | Self::Tunnel => DIRECTION_INBOUND,
        }
    }
}

/// The result field of the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnResult {
    /// Relayed; see `ending` for how it closed.
    Relayed(relay::Ending),
    /// The kernel recorded no original destination (a direct connect to the listener, or an
    /// entry lost): reset, fail closed.
    NoOriginalDestination,
    /// The entry belongs to the other listener: reset.
    WrongListener,
    /// The original destination is the proxy itself: reset instead of looping.
    Loop,
    /// The destination refused or was unreachable: the client gets a reset.
    UpstreamUnreachable,
    /// Connecting to the destination took longer than the connect timeout.
    UpstreamTimeout,
    /// PeerAuthentication requires mTLS for this destination and port: plaintext refused.
    DeniedPlaintext,
    /// The destination is the node itself (its loopback, unspecified or own addresses): the
    /// proxy runs in the node's namespace and never dials the node for a pod.
    DeniedNodeLocal,
    /// The source pod holds `--max-connections-per-pod` connections through this proxy.
    PodConnectionLimit,
    /// The source workload has no certificate yet, so no tunnel can be opened.
    NoCertificate,
    /// The tunnel to the destination node failed (connect, handshake, or CONNECT refused).
    TunnelFailed,
    /// A tunnel stream named a pod that is not an enrolled workload of this node.
    NotLocal,
    /// A tunnel stream named a pod whose identity is not the one the connection verified.
    IdentityMismatch,
    /// The destination is a service VIP whose port has no ready endpoint: reset, as
    /// kube-proxy rejects a service without endpoints.
    NoHealthyEndpoint,
}

impl ConnResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Relayed(relay::Ending::Closed) => "ok",
            Self::Relayed(relay::Ending::ClientReset) => "client_reset",
            Self::Relayed(relay::Ending::UpstreamReset) => "upstream_reset",
            Self::Relayed(relay::Ending::IdleTimeout) => "idle_timeout",
            Self::Relayed(relay::Ending::Drained) => "drained",
            Self::NoOriginalDestination => "no_original_destination",
            Self::WrongListener => "wrong_listener",
            Self::Loop => "loop_refused",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::DeniedPlaintext => "denied_plaintext",
            Self::DeniedNodeLocal => "denied_node_local",
            Self::PodConnectionLimit => "pod_connection_limit",
            Self::NoCertificate => "no_certificate",
            Self::TunnelFailed => "tunnel_failed",
            Self::NotLocal => "not_local",
            Self::IdentityMismatch => "identity_mismatch",
            Self::NoHealthyEndpoint => "no_healthy_endpoint",
        }
    }
}

/// Counters kept by the proxy itself (the kernel's are in the `COUNTERS` map).
#[derive(Debug, Default, Serialize)]
pub struct ProxyStats {
    pub accepted: AtomicU64,
    pub active: AtomicU64,
    pub relayed: AtomicU64,
    pub refused: AtomicU64,
    /// Of `refused`: connections to the node's own addresses (`denied_node_local`).
    pub refused_node_local: AtomicU64,
    /// Of `refused`: connections over `--max-connections-per-pod` (`pod_connection_limit`).
    pub refused_pod_limit: AtomicU64,
    /// Tunnel connections refused because `--max-tls-handshakes` were in flight.
    pub tunnel_refused_handshake_limit: AtomicU64,
    /// Plaintext tunnel connections from an address that is not a mesh node's.
    pub tunnel_refused_not_a_node: AtomicU64,
    /// Tunnel connections this node opened to other nodes (one carries up to
    /// `tunnel::STREAMS_PER_CONNECTION` tunnels).
    pub tunnel_connections_opened: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
}

/// Everything a connection handler needs.
pub struct Proxy {
    pub node_ip: Ipv4Addr,
    pub ports: [u16; 2],
    pub mark: u32,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub orig_dst: Arc<OrigDstTable>,
    pub registry: Arc<ArcSwap<Registry>>,
    pub node_addresses: Arc<NodeAddresses>,
    pub limits: limits::Limits,
    /// Dial destinations from the client's address (`--preserve-source-address`).
    pub preserve_source: bool,
    pub stats: Arc<ProxyStats>,
    pub mesh: Option<MeshSecurity>,
    next_id: AtomicU64,
}

/// What the proxy needs for identities, tunnels and PeerAuthentication.
pub struct MeshSecurity {
    pub identities: Arc<IdentityManager>,
    pub tunnel: tunnel::TunnelClient,
    /// Istio's root namespace, where mesh-wide policies live.
    pub root_namespace: String,
    /// Whether callers in the node's own network namespace (kubelet probes, node agents)
    /// may use plaintext under STRICT.
    pub exempt_node: bool,
    /// The node's own network namespace cookie.
    pub node_netns_cookie: u64,
}

impl Proxy {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_ip: Ipv4Addr,
        ports: [u16; 2],
        mark: u32,
        connect_timeout: Duration,
        idle_timeout: Duration,
        orig_dst: Arc<OrigDstTable>,
        registry: Arc<ArcSwap<Registry>>,
        node_addresses: Arc<NodeAddresses>,
        limits: limits::Limits,
    ) -> Self {
        Self {
            node_ip,
            ports,
            mark,
            connect_timeout,
            idle_timeout,
            orig_dst,
            registry,
            node_addresses,
            limits,
            preserve_source: true,
            stats: Arc::default(),
            mesh: None,
            next_id: AtomicU64::new(1),
        }
    }

    /// The registry in force now. A connection takes it once and decides everything with
    /// it, so a config change never gives one connection a mix of two versions.
    fn registry(&self) -> Arc<Registry> {
        self.registry.load_full()
    }

    fn trust_domain(&self) -> &str {
        self.mesh
            .as_ref()
            .map_or("cluster.local", |m| m.identities.trust_domain())
    }

    /// Accepts until `shutdown` flips, then returns; each connection task holds a clone of
    /// `active` so the caller can wait for them to drain.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        kind: Listener,
        mut shutdown: watch::Receiver<bool>,
        drained: watch::Receiver<bool>,
        active: mpsc::Sender<()>,
    ) {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = kind.name(), error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Relayed bytes must not wait for Nagle (40 ms stalls with delayed ACKs).
            let _ = stream.set_nodelay(true);
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let span = tracing::info_span!("conn", id, listener = kind.name());
            let proxy = self.clone();
            let active = active.clone();
            let mut drained = drained.clone();
            tokio::spawn(
                async move {
                    let drained = async move {
                        let _ = drained.wait_for(|d| *d).await;
                    };
                    proxy.handle(stream, peer, kind, drained).await;
                    drop(active);
                }
                .instrument(span),
            );
        }
    }

    async fn handle(
        &self,
        client: TcpStream,
        peer: SocketAddr,
        kind: Listener,
        drained: impl std::future::Future<Output = ()>,
    ) {
        let started = Instant::now();
        let reg = self.registry();
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.stats.active.fetch_add(1, Ordering::Relaxed);
        let local = client.local_addr().ok();
        let orig = match (peer, local) {
            (SocketAddr::V4(peer), Some(SocketAddr::V4(local))) => self
                .orig_dst
                .take(&tuple(peer, local))
                .or_else(|| diverted(&reg, kind, local)),
            _ => None,
        };
        let mut log = AccessLog {
            kind: Some(kind),
            peer: Some(peer),
            orig,
            ..AccessLog::default()
        };
        if let Some(o) = orig {
            let td = self.trust_domain();
            if let Some(w) = reg.by_netns_cookie(o.src_netns_cookie) {
                log.src = Some(w.key());
                log.src_identity = Some(w.identity(td).to_string());
            }
            self.describe_dst(&reg, Ipv4Addr::from(u32::from_be(o.dst_ip)), &mut log);
        }
        // Held until the connection ends: its slot among the source pod's connections.
        // Clients from the network are not a pod of this node; the node's own namespace
        // (kubelet probes, every host-network pod) is not one pod either.
        let node_netns = self.mesh.as_ref().map(|m| m.node_netns_cookie);
        let slot = orig
            .filter(|o| o.src_netns_cookie != FROM_NETWORK && Some(o.src_netns_cookie) != node_netns)
            .map(|o| self.limits.pod_slot(o.src_netns_cookie));
        let result = match orig {
            None => ConnResult::NoOriginalDestination,
            Some(o) if o.direction != kind.expected_direction() => ConnResult::WrongListener,
            Some(_) if matches!(slot, Some(None)) => {
                self.stats.refused_pod_limit.fetch_add(1, Ordering::Relaxed);
                ConnResult::PodConnectionLimit
            }
            Some(o) => match self.resolve_service(&reg, kind, &o, &mut log) {
                Err(r) => r,
                Ok(Target { addr: dst, .. })
                    if *dst.ip() == self.node_ip && self.ports.contains(&dst.port()) =>
                {
                    ConnResult::Loop
                }
                Ok(Target { addr: dst, .. }) if self.node_addresses.is_node_local((*dst.ip()).into()) => {
                    self.stats.refused_node_local.fetch_add(1, Ordering::Relaxed);
                    ConnResult::DeniedNodeLocal
                }
                Ok(target) => match self
                    .open_upstream(&reg, kind, &o, client_ip(peer), target, &mut log)
                    .await
                {
                    Ok(Upstream::Direct(upstream)) => {
                        return self.finish(client, upstream, drained, log, started).await;
                    }
                    Ok(Upstream::Tunnel(upstream)) => {
                        return self.finish(client, upstream, drained, log, started).await;
                    }
                    Err(r) => r,
                },
            },
        };
        // Not relayed: the client gets a reset, as it would from an unreachable destination.
        relay::reset(&client);
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        log.emit(result, 0, 0, started);
    }

    async fn finish<U: relay::Side>(
        &self,
        client: TcpStream,
        upstream: U,
        drained: impl std::future::Future<Output = ()>,
        log: AccessLog,
        started: Instant,
    ) {
        let outcome = relay::relay(client, upstream, self.idle_timeout, drained).await;
        self.stats.bytes_up.fetch_add(outcome.bytes_up, Ordering::Relaxed);
        self.stats
            .bytes_down
            .fetch_add(outcome.bytes_down, Ordering::Relaxed);
        self.stats.relayed.fetch_add(1, Ordering::Relaxed);
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        log.emit(
            ConnResult::Relayed(outcome.ending),
            outcome.bytes_up,
            outcome.bytes_down,
            started,
        );
    }

    /// Names the destination workload (local or remote) in the access log.
    fn describe_dst(&self, reg: &Registry, ip: Ipv4Addr, log: &mut AccessLog) {
        if let Some(w) = reg.by_ip(ip) {
            log.dst = Some(w.key());
            log.dst_identity = Some(w.identity(self.trust_domain()).to_string());
        } else if let Some(r) = reg.remote(ip) {
            log.dst = Some(r.key.clone());
            log.dst_identity = Some(r.identity.to_string());
        }
    }

    /// Where an outbound connection to a service VIP goes: one of its endpoints, round
    /// robin. A VIP the caller's namespace may not use (`exportTo`) is dialled as it is, as
    /// Istio's sidecar passes an unknown address through to the original destination (in a
    /// cluster, kube-proxy may still answer there; the mesh adds nothing). A service port
    /// without endpoints is refused. Other destinations, and inbound callers (15006 never
    /// sees a VIP: connect4 sends only dials of enrolled pod IPs there), are unchanged.
    fn resolve_service(
        &self,
        reg: &Registry,
        kind: Listener,
        orig: &OrigDst,
        log: &mut AccessLog,
    ) -> Result<Target, ConnResult> {
        let dst = orig_socket_addr(orig);
        let direct = Target {
            addr: dst,
            identity: None,
        };
        if kind != Listener::Outbound {
            return Ok(direct);
        }
        let namespace = reg
            .by_netns_cookie(orig.src_netns_cookie)
            .map(|w| w.namespace.as_str());
        match reg.services.lookup(namespace, dst) {
            Lookup::NotAService => Ok(direct),
            Lookup::NotVisible(svc) => {
                log.dst_service = Some(svc.service.clone());
                log.lb = Some(Lb::ServiceNotVisible);
                Ok(direct)
            }
            Lookup::Service(svc) => {
                log.dst_service = Some(svc.service.clone());
                let Some(endpoint) = svc.pick() else {
                    log.lb = Some(Lb::NoEndpoint);
                    return Err(ConnResult::NoHealthyEndpoint);
                };
                let addr = SocketAddrV4::new(endpoint.ip, endpoint.port);
                log.lb = Some(Lb::RoundRobin);
                log.dst_endpoint = Some(addr);
                self.describe_dst(reg, endpoint.ip, log);
                Ok(Target {
                    addr,
                    identity: endpoint.identity.clone(),
                })
            }
        }
    }

    /// Where a captured connection goes: a local pod or a non-mesh destination directly
    /// (with the mark), an enrolled pod on another node through the tunnel, expecting the
    /// identity the service endpoint names (or, for a pod dialled by IP, the one the
    /// registry knows). Plaintext callers (15006) are first checked against
    /// PeerAuthentication.
    async fn open_upstream(
        &self,
        reg: &Registry,
        kind: Listener,
        orig: &OrigDst,
        client: Option<Ipv4Addr>,
        target: Target,
        log: &mut AccessLog,
    ) -> Result<Upstream, ConnResult> {
        let dst = target.addr;
        if kind == Listener::Inbound {
            let caller = (orig.src_netns_cookie != FROM_NETWORK).then_some(orig.src_netns_cookie);
            self.admit_plaintext(reg, caller, dst, log)?;
        }
        let remote = {
            let src = reg
                .by_netns_cookie(orig.src_netns_cookie)
                .map(|w| w.identity(self.trust_domain()));
            reg.remote(*dst.ip())
                .map(|r| (src, r.node_ip, target.identity.unwrap_or(r.identity)))
        };
        match (kind, remote, &self.mesh) {
            (Listener::Outbound, Some((Some(src), node, dst_identity)), Some(mesh)) => {
                match mesh.tunnel.open(&src, node, &dst_identity, dst, client).await {
                    Ok(stream) => Ok(Upstream::Tunnel(stream)),
                    Err(tunnel::TunnelError::NoCertificate(_)) => Err(ConnResult::NoCertificate),
                    Err(e) => {
                        tracing::warn!(error = %e, "tunnel failed");
                        Err(ConnResult::TunnelFailed)
                    }
                }
            }
            _ => {
                // A pod reaching itself (through its own Service) cannot be dialled from its own
                // address: its kernel drops a packet from itself arriving on eth0.
                let client = client.filter(|c| *c != *dst.ip() && answers_come_back(reg, kind, orig, dst));
                let upstream = self.connect(dst, client).await?;
                log.upstream_src = upstream.local_addr().ok();
                Ok(Upstream::Direct(upstream))
            }
        }
    }

    /// PeerAuthentication for a plaintext caller of a local workload: a node-local caller (the
    /// kernel tells its netns), a client from the network or a plaintext tunnel (no netns).
    fn admit_plaintext(
        &self,
        reg: &Registry,
        src_netns_cookie: Option<u64>,
        dst: SocketAddrV4,
        log: &mut AccessLog,
    ) -> Result<(), ConnResult> {
        let Some(mesh) = &self.mesh else { return Ok(()) };
        let Some(w) = reg.by_ip(*dst.ip()) else {
            return Ok(());
        };
        let decision = reg.peer_authentications().effective(
            &mesh.root_namespace,
            &peer_authentication::Target {
                namespace: &w.namespace,
                labels: &w.labels,
                port: dst.port(),
            },
        );
        let policy = decision.policy.as_deref().unwrap_or("built-in default");
        let mut authn = format!("{:?} ({} scope, {policy})", decision.mode, decision.scope).to_uppercase();
        let verdict = if decision.mode.allows_plaintext() {
            Ok(())
        } else if mesh.exempt_node && src_netns_cookie == Some(mesh.node_netns_cookie) {
            authn.push_str("; NODE-LOCAL CALLER EXEMPT");
            Ok(())
        } else {
            Err(ConnResult::DeniedPlaintext)
        };
        log.authn = Some(authn);
        verdict
    }

    /// Dials `dst` with the proxy mark, from `client`'s address when source preservation is
    /// on: the server, NetworkPolicy and address allow-lists see the client, not the node.
    /// The socket is transparent, so it may use an address that is not the node's; the
    /// answers, addressed to the client, are delivered back to it by the divert chain's
    /// `socket transparent` rule (see `datapath::tproxy`).
    pub(crate) async fn connect(
        &self,
        dst: SocketAddrV4,
        client: Option<Ipv4Addr>,
    ) -> Result<TcpStream, ConnResult> {
        let socket = TcpSocket::new_v4().map_err(|_| ConnResult::UpstreamUnreachable)?;
        set_mark(&socket, self.mark).map_err(|e| {
            tracing::error!(error = %e, "setting SO_MARK needs CAP_NET_ADMIN");
            ConnResult::UpstreamUnreachable
        })?;
        if let Some(client) = client.filter(|_| self.preserve_source) {
            // IP_BIND_ADDRESS_NO_PORT: the port is picked at connect() for the whole 4-tuple,
            // as for an unbound socket; bind() alone would reserve a port per address and
            // scan for a free one, which costs under connection churn.
            let bound = set_transparent(&socket)
                .and_then(|()| set_u32_option(&socket, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1))
                .and_then(|()| socket.bind(SocketAddrV4::new(client, 0).into()));
            if let Err(e) = bound {
                tracing::warn!(%client, error = %e, "cannot dial from the client's address");
                return Err(ConnResult::UpstreamUnreachable);
            }
        }
        match tokio::time::timeout(self.connect_timeout, socket.connect(dst.into())).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(e)) => {
                tracing::debug!(%dst, error = %e, "connect failed");
                Err(ConnResult::UpstreamUnreachable)
            }
            Err(_) => Err(ConnResult::UpstreamTimeout),
        }
    }
}

/// A connection from the network that the divert rule handed to 15006 (see
/// `datapath::tproxy`): its local address is the enrolled pod it was sent to. Anything
/// else arriving at the transparent listener without a kernel entry is refused.
fn diverted(reg: &Registry, kind: Listener, local: SocketAddrV4) -> Option<OrigDst> {
    // Only what the divert rule sends: a connection to an enrolled pod of this node.
    let to_pod = reg.by_ip(*local.ip()).is_some();
    (kind == Listener::Inbound && to_pod).then(|| OrigDst {
        src_netns_cookie: FROM_NETWORK,
        dst_ip: u32::from(*local.ip()).to_be(),
        dst_port: local.port().to_be(),
        direction: DIRECTION_INBOUND,
        _pad: 0,
    })
}

/// Whether a destination's answers to the client's own address reach the proxy: they do when
/// they cross the node's IP layer (the divert chain hands them to the proxy's socket). Between
/// two pods of one bridge they are switched straight to the client, which knows nothing of
/// the connection; those connections are dialled from the node's address. A node-local
/// non-mesh caller's wiring is unknown: its dials to a bridged pod are treated the same way.
fn answers_come_back(reg: &Registry, kind: Listener, orig: &OrigDst, dst: SocketAddrV4) -> bool {
    match kind {
        Listener::Outbound => !reg.bridged(Some(orig.src_netns_cookie), None),
        Listener::Inbound if orig.src_netns_cookie == FROM_NETWORK => true,
        Listener::Inbound => !reg.bridged(None, Some(*dst.ip())),
        Listener::Tunnel => true,
    }
}

/// The client's IPv4 address (an IPv4-mapped peer of a dual-stack socket included).
fn client_ip(peer: SocketAddr) -> Option<Ipv4Addr> {
    match peer.ip().to_canonical() {
        std::net::IpAddr::V4(ip) => Some(ip),
        std::net::IpAddr::V6(_) => None,
    }
}

/// The caller "netns cookie" of a connection diverted from the network: no namespace of this
/// node (the kernel never hands out cookie 0).
pub const FROM_NETWORK: u64 = 0;

/// The `ORIG_DST` key for an accepted connection: the client's address and the listener
/// address it reached, all in network byte order as sockops wrote them.
pub fn tuple(peer: SocketAddrV4, local: SocketAddrV4) -> SockTuple {
    SockTuple {
        src_ip: u32::from(*peer.ip()).to_be(),
        dst_ip: u32::from(*local.ip()).to_be(),
        src_port: peer.port().to_be(),
        dst_port: local.port().to_be(),
    }
}

fn orig_socket_addr(o: &OrigDst) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(u32::from_be(o.dst_ip)), u16::from_be(o.dst_port))
}

pub(crate) fn set_mark(socket: &TcpSocket, mark: u32) -> std::io::Result<()> {
    set_u32_option(socket, libc::SOL_SOCKET, libc::SO_MARK, mark)
}

/// `IP_TRANSPARENT`: the socket may accept connections addressed to other hosts (the
/// diverted ones, see `datapath::tproxy`); needs CAP_NET_ADMIN.
pub(crate) fn set_transparent(socket: &TcpSocket) -> std::io::Result<()> {
    set_u32_option(socket, libc::SOL_IP, libc::IP_TRANSPARENT, 1)
}

fn set_u32_option(
    socket: &TcpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: u32,
) -> std::io::Result<()> {
    // SAFETY: setsockopt on a live socket with a u32 value and its size.
    let ret = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The address a connection is relayed to, after service resolution.
struct Target {
    addr: SocketAddrV4,
    /// The identity a service endpoint is expected to present through the tunnel.
    identity: Option<Identity>,
}

enum Upstream {
    Direct(TcpStream),
    Tunnel(tunnel::Tunnel),
}

/// The fields of one access-log line.
#[derive(Default)]
struct AccessLog {
    kind: Option<Listener>,
    peer: Option<SocketAddr>,
    orig: Option<OrigDst>,
    /// For tunnel streams, which carry no kernel entry.
    target: Option<SocketAddrV4>,
    src: Option<String>,
    src_identity: Option<String>,
    dst: Option<String>,
    dst_identity: Option<String>,
    /// The PeerAuthentication decision, for plaintext callers.
    authn: Option<String>,
    /// `namespace/name` of the service whose VIP and port the client dialled.
    dst_service: Option<String>,
    /// The service endpoint chosen for this connection.
    dst_endpoint: Option<SocketAddrV4>,
    /// The local address of the proxy's connection to the destination (the client's own
    /// address when the source is preserved): what the server sees as its peer.
    upstream_src: Option<SocketAddr>,
    /// What the proxy did with a service VIP.
    lb: Option<Lb>,
}

/// The `lb` field of the access log: what became of a connection to a service VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lb {
    /// An endpoint was chosen round robin (see `crate::services`).
    RoundRobin,
    /// The service port had no ready endpoint; the connection was refused.
    NoEndpoint,
    /// The caller's namespace may not use the service (`exportTo`): the VIP was dialled
    /// as it is, like any address the mesh does not know.
    ServiceNotVisible,
}

impl Lb {
    fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::NoEndpoint => "no_endpoint",
            Self::ServiceNotVisible => "service_not_visible",
        }
    }
}

impl AccessLog {
    /// A tunnel stream from `peer`, whose verified identity (none over a plaintext tunnel).
    fn tunnel(peer: SocketAddr, target: SocketAddrV4, peer_identity: Option<&Identity>) -> Self {
        Self {
            kind: Some(Listener::Tunnel),
            peer: Some(peer),
            target: Some(target),
            src_identity: peer_identity.map(Identity::to_string),
            ..Self::default()
        }
    }

    fn emit(self, result: ConnResult, bytes_up: u64, bytes_down: u64, started: Instant) {
        let orig_dst = self
            .orig
            .map(|o| orig_socket_addr(&o))
            .or(self.target)
            .map_or_else(|| "-".to_string(), |a| a.to_string());
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        tracing::info!(
            target: "access",
            listener = self.kind.map_or("-", Listener::name),
            src_addr = %self.peer.map_or_else(|| "-".to_string(), |p| p.to_string()),
            src_workload = %dash(&self.src),
            src_identity = %dash(&self.src_identity),
            src_netns_cookie = self.orig.map(|o| o.src_netns_cookie).unwrap_or(0),
            orig_dst = %orig_dst,
            dst_workload = %dash(&self.dst),
            dst_identity = %dash(&self.dst_identity),
            authn = %dash(&self.authn),
            dst_service = %dash(&self.dst_service),
            dst_endpoint = %self.dst_endpoint.map_or_else(|| "-".to_string(), |a| a.to_string()),
            upstream_src = %self.upstream_src.map_or_else(|| "-".to_string(), |a| a.to_string()),
            lb = self.lb.map_or("-", Lb::as_str),
            bytes_to_dst = bytes_up,
            bytes_from_dst = bytes_down,
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            result = result.as_str(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuple_matches_the_kernel_layout() {
        let t = tuple(
            "10.1.1.2:40000".parse().unwrap(),
            "198.18.0.1:15001".parse().unwrap(),
        );
        // Network byte order in memory: the bytes read as on the wire.
        assert_eq!(t.src_ip.to_ne_bytes(), [10, 1, 1, 2]);
        assert_eq!(t.dst_ip.to_ne_bytes(), [198, 18, 0, 1]);
        assert_eq!(t.src_port.to_ne_bytes(), 40000u16.to_be_bytes());
        assert_eq!(t.dst_port.to_ne_bytes(), 15001u16.to_be_bytes());
    }
}
