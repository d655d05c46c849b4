//! Bounds that keep one client from starving the node: connections per source pod (by the
//! kernel-recorded netns cookie, which a pod cannot forge) and TLS handshakes in flight on the
//! tunnel listener. What goes over a bound is refused at once and counted, never queued.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Limits {
    per_pod: Arc<Mutex<HashMap<u64, u32>>>,
    max_per_pod: u32,
    handshakes: Arc<Semaphore>,
}

/// Held for the life of one connection; gives its slot back when dropped.
pub struct PodSlot {
    per_pod: Arc<Mutex<HashMap<u64, u32>>>,
    cookie: u64,
}

impl Drop for PodSlot {
    fn drop(&mut self) {
        let mut per_pod = self.per_pod.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_pod.get_mut(&self.cookie) {
            *n -= 1;
            if *n == 0 {
                per_pod.remove(&self.cookie);
            }
        }
    }
}

impl Limits {
    pub fn new(max_per_pod: u32, max_handshakes: usize) -> Self {
        Self {
            per_pod: Arc::default(),
            max_per_pod,
            handshakes: Arc::new(Semaphore::new(max_handshakes)),
        }
    }

    /// A slot for one more connection from the pod whose netns cookie is `cookie`, unless it
    /// holds `max_per_pod` already.
    pub fn pod_slot(&self, cookie: u64) -> Option<PodSlot> {
        let mut per_pod = self.per_pod.lock().unwrap_or_else(|p| p.into_inner());
        let n = per_pod.entry(cookie).or_default();
        if *n >= self.max_per_pod {
            return None;
        }
        *n += 1;
        Some(PodSlot {
            per_pod: self.per_pod.clone(),
            cookie,
        })
    }

    /// A permit for one TLS handshake on the tunnel listener, unless too many are in flight.
    pub fn handshake(&self) -> Option<OwnedSemaphorePermit> {
        self.handshakes.clone().try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_at_its_limit_is_refused_and_others_are_not() {
        let limits = Limits::new(2, 1);
        let a1 = limits.pod_slot(1).unwrap();
        let _a2 = limits.pod_slot(1).unwrap();
        assert!(limits.pod_slot(1).is_none(), "a third connection of pod 1");
        assert!(limits.pod_slot(2).is_some(), "pod 2 starved by pod 1");
        drop(a1);
        assert!(
            limits.pod_slot(1).is_some(),
            "a closed connection gave its slot back"
        );

        let h = limits.handshake().unwrap();
        assert!(limits.handshake().is_none());
        drop(h);
        assert!(limits.handshake().is_some());
    }

    #[test]
    fn slots_of_a_pod_with_no_connections_are_forgotten() {
        let limits = Limits::new(1, 1);
        drop(limits.pod_slot(7).unwrap());
        assert!(limits.per_pod.lock().unwrap().is_empty());
    }
}
