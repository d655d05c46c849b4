//! Where the controller's objects come from: a directory of YAML (standalone) or the
//! Kubernetes API. Both publish the same thing, a [`Snapshot`] of every object, on a
//! `tokio::sync::watch` channel; the compiler does not know which source fed it.

pub mod directory;

use std::sync::Arc;

use mesh_api::objects::Object;
pub use mesh_api::status::Problem;

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
}

/// The receiving end every consumer (compiler, CA inventory, admin) holds.
pub type Snapshots = tokio::sync::watch::Receiver<Arc<Snapshot>>;
