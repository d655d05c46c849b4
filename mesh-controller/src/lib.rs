//! The Trellis controller: objects from a source (Kubernetes or a YAML directory), compiled
//! per node and streamed to the nodes (`distribution`), the mesh's CA (`ca`, `service`),
//! who a node is (`node_auth`) and what it may obtain (`authz`), and the debug endpoint
//! `mesh-ctl` reads.

pub mod app;
pub mod authz;
pub mod ca;
pub mod config;
pub mod debug;
pub mod distribution;
pub mod node_auth;
pub mod service;
pub mod source;
pub mod status_writer;
