//! Which pods this node enrolls, and keeping the kernel in step with that.
//!
//! Until the control plane lands, the source is a directory of Kubernetes-shaped YAML
//! (`mesh_api::objects`); `mesh_api::selection::select` decides, and [`enrollment`] applies
//! the decision to the datapath and keeps the registry the proxy reads.

pub mod enrollment;

pub use mesh_api::selection::{select, Selection, Skipped, Workload};
