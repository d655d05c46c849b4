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
    refresh(&config, &inventory);
    {
        let (config, inventory) = (config.clone(), inventory.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                refresh(&config, &inventory);
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

fn refresh(config: &Config, inventory: &RwLock<Inventory>) {
    let read = mesh_api::objects::read_dir(&config.config_dir);
    let mut inv = inventory.write().unwrap_or_else(|p| p.into_inner());
    match read {
        Ok(objects) => {
            inv.objects = objects;
            inv.error = None;
        }
        Err(e) => {
            let message = e.to_string();
            if inv.error.as_deref() != Some(message.as_str()) {
                tracing::error!(error = %message, "config directory rejected; keeping the last good inventory");
            }
            inv.error = Some(message);
        }
    }
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
