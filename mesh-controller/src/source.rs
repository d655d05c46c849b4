//! Where the controller's objects come from: a directory of YAML (standalone) or the
//! Kubernetes API. Both publish the same thing, a [`Snapshot`] of every object, on a
//! `tokio::sync::watch` channel; the compiler does not know which source fed it.

pub mod directory;
pub mod kubernetes;

use std::sync::Arc;

use mesh_api::objects::Object;
pub use mesh_api::status::Problem;

use crate::config::{Config, SourceKind};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--source directory needs --config-dir (TRELLIS_CONFIG_DIR): the directory of YAML objects")]
    NoConfigDir,
    #[error("no Kubernetes client configuration: {0}: run in a pod with a service account token, or set KUBECONFIG")]
    KubeConfig(#[source] kube::Error),
    #[error("cannot reach the Kubernetes API server: {0}: check its address, the controller's service account token and any network policy in between")]
    Unreachable(#[source] kube::Error),
}

/// Starts the source `config` names and returns its snapshots. The Kubernetes source returns
/// once every kind has been listed (or reported as not listable).
pub async fn start(config: &Config) -> Result<Snapshots, Error> {
    match config.source {
        SourceKind::Directory => {
            let dir = config.config_dir.clone().ok_or(Error::NoConfigDir)?;
            Ok(directory::watch(dir))
        }
        SourceKind::Kubernetes => {
            let client = kube::Client::try_default().await.map_err(Error::KubeConfig)?;
            kubernetes::watch(client).await
        }
    }
}

/// Everything the controller knows at one moment.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Every object read, in source order (the tie-breaker Istio's precedence rules need
    /// when timestamps are absent).
    pub objects: Vec<Object>,
    /// Bumped by the source on every change.
    pub revision: u64,
    /// Problems with the source itself. Directory: the whole directory was refused and
    /// `objects` is the last good state. Kubernetes: objects that were refused one by one
    /// and left out (the rest applies).
    pub problems: Vec<Problem>,
    /// Kubernetes only: every Istio object the API server has, parsed or refused, with the
    /// generation this snapshot holds and the status it had then (what the status writer
    /// compares with). Empty for the directory source.
    pub istio_objects: Vec<kubernetes::IstioObject>,
}

/// The receiving end every consumer (compiler, CA inventory, admin) holds.
pub type Snapshots = tokio::sync::watch::Receiver<Arc<Snapshot>>;
