//! Wiring: the source of objects, the compiler's diagnostics (and, in Kubernetes mode, the
//! status they give each Istio object), the TLS gRPC server (config stream and CA on one
//! port, as istiod does), and the debug endpoint.

use std::{
    collections::BTreeSet,
    sync::{Arc, RwLock},
    time::Duration,
};

use mesh_api::{
    ca::istio_certificate_service_server::IstioCertificateServiceServer,
    config_stream::{config_discovery_server::ConfigDiscoveryServer, MAX_MESSAGE_BYTES},
    node_config::Options,
};
use tonic::transport::{Identity as TlsIdentity, Server, ServerTlsConfig};

use crate::{
    ca::CertificateAuthority,
    config::{Config, SourceKind},
    debug::{self, DebugState},
    distribution::{ConfigService, SyncTable},
    node_auth::NodeAuthenticator,
    service::CaService,
    source::{self, Snapshots},
    status_writer,
};

/// How long the server waits, after SIGTERM and once it has ended the config streams, for
/// connections to finish (a CA request in flight, a node slow to read the end of its stream)
/// before it stops anyway. Well inside Kubernetes' default 30 s grace period.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(3);

pub async fn run(config: Config) -> anyhow::Result<()> {
    mesh_api::crypto::install_default();
    let ca = Arc::new(CertificateAuthority::load_or_generate(&config.ca_dir)?);
    let client = match config.source {
        SourceKind::Kubernetes => Some(
            kube::Client::try_default()
                .await
                .map_err(source::Error::KubeConfig)?,
        ),
        SourceKind::Directory => None,
    };
    let node_auth = Arc::new(NodeAuthenticator::from_config(&config, client.clone())?);
    let snapshots = source::start(&config).await?;
    let source = match (&config.source, &config.config_dir) {
        (SourceKind::Directory, Some(dir)) => format!("directory {}", dir.display()),
        _ => "kubernetes".to_string(),
    };

    let diagnostics = Arc::new(RwLock::new(Vec::new()));
    tokio::spawn(report_diagnostics(snapshots.clone(), diagnostics.clone()));
    if let Some(client) = client {
        tokio::spawn(status_writer::run(client, snapshots.clone()));
    }

    let debug_listener = tokio::net::TcpListener::bind(config.debug_addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the debug endpoint on {}: {e}", config.debug_addr))?;
    let table = SyncTable::default();
    tokio::spawn(debug::serve(
        debug_listener,
        Arc::new(DebugState {
            source,
            snapshots: snapshots.clone(),
            table: table.clone(),
            diagnostics,
            config: config.clone(),
        }),
    ));

    let (cert, key) = ca.serving_cert(&config.server_name)?;
    let ca_service = CaService {
        ca,
        node_auth: node_auth.clone(),
        snapshots: snapshots.clone(),
        trust_domain: config.trust_domain.clone(),
        default_ttl: Duration::from_secs(config.default_ttl_secs),
        max_ttl: Duration::from_secs(config.max_ttl_secs),
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let config_service = ConfigService {
        node_auth,
        stopping: stopping.clone(),
        snapshots,
        options: Options {
            trust_domain: config.trust_domain.clone(),
            root_namespace: config.root_namespace.clone(),
            cluster_domain: config.cluster_domain.clone(),
        },
        table,
    };
    tracing::info!(listen = %config.listen, server_name = %config.server_name, debug = %config.debug_addr, node_auth = ?config.node_auth, "config stream and CA starting");
    let serve = Server::builder()
        // Config streams live for days: pings find nodes that vanished without a FIN.
        .http2_keepalive_interval(Some(Duration::from_secs(15)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tls_config(ServerTlsConfig::new().identity(TlsIdentity::from_pem(cert, key)))?
        .add_service(IstioCertificateServiceServer::new(ca_service))
        // A full snapshot of a large cluster passes 4 MiB; the node raises its decoding
        // limit to the same value.
        .add_service(ConfigDiscoveryServer::new(config_service).max_encoding_message_size(MAX_MESSAGE_BYTES))
        // On SIGTERM/SIGINT: stop accepting, end every config stream (the sessions watch
        // `stop`), then let the open connections finish.
        .serve_with_shutdown(config.listen, async move {
            shutdown_signal().await;
            tracing::info!("stopping: ending the config streams");
            let _ = stop.send(true);
        });
    let mut stopping = stopping;
    tokio::select! {
        served = serve => served?,
        () = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(DRAIN_LIMIT).await;
        } => tracing::warn!(limit_secs = DRAIN_LIMIT.as_secs(), "connections still open after the drain limit; stopping anyway"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Logs what the analysis finds (unsupported fields and cross-object problems) once per new
/// finding, and keeps the current list for `/debug/syncz`.
async fn report_diagnostics(
    mut snapshots: Snapshots,
    current: Arc<RwLock<Vec<mesh_api::node_config::Diagnostic>>>,
) {
    let mut logged = BTreeSet::new();
    snapshots.mark_changed();
    while snapshots.changed().await.is_ok() {
        let snapshot = snapshots.borrow_and_update().clone();
        let found = mesh_api::analysis::analyze(&snapshot.objects);
        for d in &found {
            let line = d.to_string();
            if !logged.contains(&line) {
                tracing::warn!(object = %d.object, field = %d.field, "{}", d.message);
                logged.insert(line);
            }
        }
        *current.write().unwrap_or_else(|p| p.into_inner()) = found;
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
