//! The node's side of `trellis-cni`: the socket the plugin reports pod sandboxes on
//! ([`server`]), and keeping the plugin chained into the primary CNI's configuration
//! ([`install`]).

pub mod install;
pub mod server;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "listening for the CNI plugin on {path}: {source} (is another mesh-node running on this node? \
         --cni-socket names another path)"
    )]
    Listen { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
}
