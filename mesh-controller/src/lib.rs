//! The Trellis controller. Today it is the mesh's certificate authority; the control plane
//! (Istio CRDs compiled into per-node config) arrives with its own issue.

pub mod app;
pub mod authz;
pub mod ca;
pub mod config;
pub mod debug;
pub mod distribution;
pub mod service;
pub mod source;
pub mod status_writer;
