//! Which pods this node enrolls, and keeping the kernel in step with that.
//!
//! The controller's config names the workloads (`mesh_api::selection` decides which pods are
//! enrolled); [`enrollment`] applies it to the datapath and keeps the registry the proxy
//! reads. A pod's network namespace is found through the sandbox the CNI plugin reported
//! ([`sandboxes`]), or, for pods that ran before the agent, the kubelet's cgroups
//! ([`kubelet`]).

pub mod enrollment;
pub mod kubelet;
pub mod sandboxes;

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

pub use crate::host_addresses::NodeAddresses;
pub use mesh_api::selection::{select, Selection, Skipped, Workload};

/// How long enrollment may go without finishing a pass (one is due every 500 ms) before the
/// node reports itself not ready: a stalled pass (a hung syscall) or a dead one (a panic)
/// means new pods are not captured and removed ones are not released.
pub const STALL_AFTER: Duration = Duration::from_secs(5);

/// When the last enrollment pass finished, in milliseconds since the Unix epoch (0: never).
#[derive(Debug, Default)]
pub struct Heartbeat(AtomicU64);

impl Heartbeat {
    pub fn beat(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }

    /// Time since the last finished pass, `None` before the first.
    pub fn since_last(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            at => Some(Duration::from_millis(now_ms().saturating_sub(at))),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
