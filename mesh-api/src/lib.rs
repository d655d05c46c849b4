//! What Trellis reads and decides, as plain data and pure functions, shared by the
//! controller, the node and (later) `mesh-ctl`.

pub mod analysis;
pub mod crypto;
pub mod identity;
pub mod istio;
pub mod node_config;
pub mod objects;
pub mod peer_authentication;
pub mod routing;
pub mod selection;
pub mod status;

/// Istio's CA service, `istio.v1.auth.IstioCertificateService` (generated).
pub mod ca {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("istio.v1.auth");
}

/// The controller-to-node config stream, `trellis.config.v1.ConfigDiscovery` (generated).
pub mod config_stream {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("trellis.config.v1");

    /// The largest config stream message either end accepts, in bytes. An update carries
    /// whole sections as JSON, and a full snapshot of a large cluster (every enrolled pod as
    /// an endpoint, every service with its endpoints) passes tonic's 4 MiB default. The
    /// controller is authenticated by TLS, so this bounds a bug, not an attacker.
    pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
}
