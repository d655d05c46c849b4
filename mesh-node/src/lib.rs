//! The Trellis node: agent (kernel programs, enrollment) and proxy in one binary.

pub mod admin;
pub mod app;
pub mod cni;
pub mod config;
pub mod control;
pub mod datapath;
pub mod host_addresses;
pub mod identity;
pub mod metrics;
pub mod proxy;
pub mod services;
pub mod tls;
pub mod workloads;
