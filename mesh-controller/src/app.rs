//! Wiring: the CA, the inventory refresh, the TLS gRPC server.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use mesh_api::ca::istio_certificate_service_server::IstioCertificateServiceServer;
use tonic::transport::{Identity as TlsIdentity, Server, ServerTlsConfig};

use crate::{
    authz::NodeTokens,
    ca::CertificateAuthority,
    config::Config,
    service::{CaService, Inventory},
};

pub async fn run(config: Config) -> anyhow::Result<()> {
    mesh_api::crypto::install_default();
    let ca = Arc::new(CertificateAuthority::load_or_generate(&config.ca_dir)?);
    let tokens = NodeTokens::load(&config.node_tokens)?;
    let inventory = Arc::new(RwLock::new(Inventory::default()));
    let mut snapshots = crate::source::start(&config).await?;
    refresh(&mut snapshots, &inventory);
    {
        let inventory = inventory.clone();
        tokio::spawn(async move {
            while snapshots.changed().await.is_ok() {
                refresh(&mut snapshots, &inventory);
            }
        });
    }
    let (cert, key) = ca.serving_cert(&config.server_name)?;
    let service = CaService {
        ca,
        tokens,
        inventory,
        trust_domain: config.trust_domain.clone(),
        default_ttl: Duration::from_secs(config.default_ttl_secs),
        max_ttl: Duration::from_secs(config.max_ttl_secs),
    };
    tracing::info!(listen = %config.listen, server_name = %config.server_name, "CA service starting");
    Server::builder()
        .tls_config(ServerTlsConfig::new().identity(TlsIdentity::from_pem(cert, key)))?
        .add_service(IstioCertificateServiceServer::new(service))
        .serve_with_shutdown(config.listen, shutdown())
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// The source keeps its last good objects when its input is refused; its first problem is
/// the inventory's error.
fn refresh(snapshots: &mut crate::source::Snapshots, inventory: &RwLock<Inventory>) {
    let snapshot = snapshots.borrow_and_update().clone();
    let mut inv = inventory.write().unwrap_or_else(|p| p.into_inner());
    inv.objects = snapshot.objects.clone();
    inv.error = snapshot.problems.first().map(ToString::to_string);
}

async fn shutdown() {
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
