//! Wiring: datapath, enrollment, listeners, admin, and the shutdown sequence.
//!
//! Threads: the tokio runtime runs the listeners, relays, admin and the config stream;
//! enrollment passes run on the blocking pool (they make syscalls and briefly enter pod
//! namespaces on helper threads).
//!
//! Shutdown (SIGTERM/SIGINT): the listeners close at once, so the kernel refuses new captured
//! connects (fail closed; the pinned programs stay), while established connections get the
//! drain timeout to finish. A new agent can bind the ports meanwhile.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;

use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
};

use crate::{
    admin::{self, AdminState},
    cni::{self, install::Install, server::CniServer},
    config::{Config, TunnelSecurity},
    control::{ControlClient, ControlStatus},
    datapath::{self, cgroup, netns, tproxy, Datapath, Settings},
    identity::{CaSettings, IdentityManager},
    proxy::{limits::Limits, tunnel::TunnelClient, Listener, MeshSecurity, Proxy},
    workloads::{
        enrollment::{Enroller, Registry},
        Heartbeat, NodeAddresses,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Datapath(#[from] datapath::Error),
    #[error("diverting non-mesh clients from the network to the inbound listener: {0}")]
    Divert(tproxy::Error),
    #[error("binding {what} on {addr}: {source} (is another mesh-node running on this node?)")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Identity(#[from] crate::identity::Error),
    #[error("reading this node's network namespace cookie: {0}")]
    Netns(std::io::Error),
    #[error(transparent)]
    Cni(#[from] cni::Error),
    #[error("starting the {0} thread: {1}")]
    Thread(&'static str, std::io::Error),
}

pub async fn run(config: Config) -> Result<(), Error> {
    let cgroup_root = match &config.cgroup {
        Some(c) => c.clone(),
        None => cgroup::cgroup2_root()?,
    };
    let proxy_cgroup = cgroup::own_cgroup(&cgroup::cgroup2_root()?)?;
    if proxy_cgroup == cgroup_root {
        tracing::warn!(
            cgroup = %cgroup_root.display(),
            "mesh-node runs in the cgroup it captures: every process in that exact cgroup is exempt \
             from capture; run it in a cgroup of its own (a DaemonSet pod has one)"
        );
    }
    let settings = Settings {
        bpffs_dir: config.bpffs_dir.clone(),
        cgroup: cgroup_root.clone(),
        proxy_cgroup: proxy_cgroup.clone(),
        proxy_ip: config.node_ip,
        outbound_port: config.outbound_port,
        inbound_port: config.inbound_port,
        proxy_mark: config.proxy_mark,
        excluded: config.exclude_cidrs.clone(),
        drop_non_tcp: config.drop_non_tcp,
        cluster_dns: config.cluster_dns,
    };
    let (datapath, orig_dst) = Datapath::load(&settings)?;
    tracing::info!(
        node = %config.node_name,
        cgroup = %cgroup_root.display(),
        proxy_cgroup = %proxy_cgroup.display(),
        pins = %config.bpffs_dir.display(),
        "datapath loaded"
    );
    let datapath = Arc::new(Mutex::new(datapath));
    let orig_dst = Arc::new(orig_dst);
    let registry = Arc::new(ArcSwap::from_pointee(Registry::default()));

    let bind = |what, port, transparent| async move {
        let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        listen(addr, transparent).map_err(|source| Error::Bind { what, addr, source })
    };
    let outbound = bind("outbound listener", config.outbound_port, false).await?;
    // Transparent: it also takes the connections diverted from the network (datapath::tproxy).
    let inbound = bind("inbound listener", config.inbound_port, true).await?;
    tproxy::install(config.inbound_port, &Default::default()).map_err(Error::Divert)?;
    let admin_listener = TcpListener::bind(config.admin_addr)
        .await
        .map_err(|source| Error::Bind {
            what: "admin",
            addr: config.admin_addr,
            source,
        })?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (drained_tx, drained_rx) = watch::channel(false);
    let (active_tx, mut active_rx) = mpsc::channel::<()>(1);

    let identities = Some(Arc::new(IdentityManager::new(CaSettings {
        addr: config.controller_addr,
        server_name: config.controller_server_name.clone(),
        root_file: config.controller_root.clone(),
        token_file: config.token_file.clone(),
        trust_domain: config.trust_domain.clone(),
        ttl: config.cert_ttl(),
    })?));
    let node_addresses = Arc::new(NodeAddresses::default());
    node_addresses.refresh();
    let mut proxy = Proxy::new(
        config.node_ip,
        [config.outbound_port, config.inbound_port],
        config.proxy_mark,
        config.connect_timeout(),
        config.idle_timeout(),
        orig_dst.clone(),
        registry.clone(),
        node_addresses.clone(),
        Limits::new(config.max_connections_per_pod, config.max_tls_handshakes as usize),
    );
    proxy.preserve_source = config.preserve_source_address;
    if let Some(ids) = &identities {
        proxy.mesh = Some(MeshSecurity {
            identities: ids.clone(),
            tunnel: TunnelClient::new(
                ids.clone(),
                config.tunnel_security,
                config.tunnel_port,
                config.proxy_mark,
                config.connect_timeout(),
                proxy.stats.clone(),
            ),
            root_namespace: config.root_namespace.clone(),
            exempt_node: config.strict_exempt_node,
            node_netns_cookie: netns::own_cookie().map_err(Error::Netns)?,
        });
    }
    let proxy = Arc::new(proxy);
    let serving = [
        tokio::spawn(proxy.clone().serve(
            outbound,
            Listener::Outbound,
            shutdown_rx.clone(),
            drained_rx.clone(),
            active_tx.clone(),
        )),
        tokio::spawn(proxy.clone().serve(
            inbound,
            Listener::Inbound,
            shutdown_rx.clone(),
            drained_rx.clone(),
            active_tx.clone(),
        )),
    ];
    let mut serving = Vec::from(serving);
    if let Some(ids) = &identities {
        mesh_api::crypto::install_default();
        let tunnel = bind("tunnel listener", config.tunnel_port, false).await?;
        if config.tunnel_security == TunnelSecurity::Plaintext {
            tracing::warn!(
                "--tunnel-security plaintext: node-to-node tunnels carry no TLS and no identity; \
                 for measurement only"
            );
        }
        serving.push(tokio::spawn(proxy.clone().serve_tunnel(
            tunnel,
            ids.clone(),
            config.tunnel_security,
            shutdown_rx.clone(),
            active_tx.clone(),
        )));
        tokio::spawn(ids.clone().run(shutdown_rx.clone()));
    }
    drop(active_tx);

    let control_status = Arc::new(Mutex::new(ControlStatus::default()));
    let heartbeat = Arc::new(Heartbeat::default());
    let admin_state = Arc::new(AdminState {
        heartbeat: heartbeat.clone(),
        control: control_status.clone(),
        config: config.clone(),
        registry: registry.clone(),
        datapath: datapath.clone(),
        orig_dst,
        stats: proxy.stats.clone(),
        identities: identities.clone(),
    });
    tokio::spawn(admin::serve(admin_listener, admin_state, shutdown_rx.clone()));

    let mut enroller = Enroller::new(
        datapath.clone(),
        registry.clone(),
        config.node_name.clone(),
        config.trust_domain.clone(),
        identities.clone(),
    );
    enroller.heartbeat = heartbeat;
    enroller.node_addresses = node_addresses;
    enroller.kubelet_cgroups = config.kubelet_cgroup_root.clone();
    enroller.namespaces_file = Some(config.cni_namespaces_file.clone());
    let kick = Arc::new(tokio::sync::Notify::new());
    serve_cni(&config, &registry, &enroller, &kick)?;
    let control = ControlClient {
        node_name: config.node_name.clone(),
        identities: identities
            .clone()
            .expect("the node always has an identity manager"),
        status: control_status.clone(),
        kick,
    };
    let enrollment = tokio::spawn(control.run(enroller, shutdown_rx.clone()));

    wait_for_signal().await?;
    tracing::info!(
        drain_timeout_secs = config.drain_timeout_secs,
        "shutting down: listeners closed, draining connections"
    );
    let _ = shutdown_tx.send(true);
    for task in serving {
        let _ = task.await;
    }
    let _ = enrollment.await;
    // Every connection task holds an `active` sender; recv() returns None when all are gone.
    if tokio::time::timeout(config.drain_timeout(), active_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: resetting the remaining connections");
        let _ = drained_tx.send(true);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), active_rx.recv()).await;
    }
    tracing::info!("stopped; the datapath stays pinned and fails closed until an agent returns");
    Ok(())
}

/// Listens for `trellis-cni` and, with `--cni-conf-dir`, keeps it chained into the runtime's
/// CNI configuration (both on threads of their own: blocking file and socket work).
fn serve_cni(
    config: &Config,
    registry: &Arc<ArcSwap<Registry>>,
    enroller: &Enroller,
    kick: &Arc<tokio::sync::Notify>,
) -> Result<(), Error> {
    let listener = CniServer::bind(&config.cni_socket)?;
    let server = Arc::new(CniServer::new(
        registry.clone(),
        enroller.sandboxes.clone(),
        kick.clone(),
        config.cni_namespaces_file.clone(),
    ));
    std::thread::Builder::new()
        .name("cni-server".into())
        .spawn(move || server.serve(listener))
        .map_err(|e| Error::Thread("CNI server", e))?;
    tracing::info!(socket = %config.cni_socket.display(), "listening for trellis-cni");
    if let Some(conf_dir) = &config.cni_conf_dir {
        let plugin = match &config.cni_plugin {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .map_err(|source| cni::Error::Io {
                    path: "/proc/self/exe".into(),
                    source,
                })?
                .with_file_name(mesh_cni::conflist::PLUGIN_TYPE),
        };
        let install = Install {
            conf_dir: conf_dir.clone(),
            bin_dir: config.cni_bin_dir.clone(),
            plugin,
            entry: mesh_cni::conflist::PluginEntry::new(&config.cni_socket, &config.cni_namespaces_file),
        };
        let state = enroller.cni_state.clone();
        std::thread::Builder::new()
            .name("cni-install".into())
            .spawn(move || install.watch(state))
            .map_err(|e| Error::Thread("CNI install", e))?;
    }
    Ok(())
}

/// Connections a listener queues before the proxy accepts them. The kernel default of 128
/// overflows under connection bursts (a node proxy takes every pod's connects), and the
/// dropped SYNs are retried only after a second. `net.core.somaxconn` caps it.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr, transparent: bool) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    if transparent {
        crate::proxy::set_transparent(&socket)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn wait_for_signal() -> Result<(), Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
