//! Pod sandboxes the container runtime reported through `trellis-cni`: the pod's network
//! namespace as the descriptor the plugin passed (never a path), and its addresses from the
//! primary CNI's result. Enrollment prefers these to anything else it could find.
//!
//! Only pods that belong in the mesh are kept (the descriptor pins the namespace and its
//! veth): a DEL forgets the sandbox it names, and a pass forgets sandboxes of pods that left
//! the config.

use std::{
    collections::HashMap,
    fs::File,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use super::Workload;

/// How long a sandbox waits for its pod to appear in the controller's config before it is
/// forgotten (the pod was deleted before the controller told us about it).
pub const UNKNOWN_POD_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Sandbox {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    pub uid: Option<String>,
    pub ips: Vec<IpAddr>,
    pub netns: File,
    pub reported_at: Instant,
}

impl Sandbox {
    /// The pod's IPv4 address from the runtime (the mesh carries IPv4 pods).
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.ips.iter().find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        })
    }

    fn is_of(&self, w: &Workload) -> bool {
        match (&self.uid, &w.uid) {
            (Some(a), Some(b)) => a == b,
            // One side does not know the UID (an older runtime, the standalone mode): the
            // name decides.
            _ => true,
        }
    }
}

/// The sandboxes, by pod (`namespace/name`).
#[derive(Debug, Default)]
pub struct Sandboxes {
    by_pod: HashMap<String, Sandbox>,
}

impl Sandboxes {
    /// Records the pod's (new) sandbox; an older one of the pod is dropped.
    pub fn add(&mut self, pod: String, sandbox: Sandbox) {
        self.by_pod.insert(pod, sandbox);
    }

    /// Forgets the pod's sandbox if it is the one named (a late DEL of an old sandbox leaves
    /// the new one alone). Whether it did.
    pub fn remove(&mut self, pod: &str, container_id: &str) -> bool {
        if self
            .by_pod
            .get(pod)
            .is_some_and(|s| s.container_id == container_id)
        {
            self.by_pod.remove(pod);
            return true;
        }
        false
    }

    /// The workload's sandbox, if the runtime reported one for this very pod.
    pub fn of(&self, w: &Workload) -> Option<&Sandbox> {
        self.by_pod.get(&w.key()).filter(|s| s.is_of(w))
    }

    /// Forgets the sandboxes of pods `wanted` says no to, once they had time to reach the
    /// config.
    pub fn retain(&mut self, wanted: impl Fn(&str) -> bool) {
        self.by_pod
            .retain(|pod, s| wanted(pod) || s.reported_at.elapsed() < UNKNOWN_POD_GRACE);
    }

    pub fn len(&self) -> usize {
        self.by_pod.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_pod.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(container_id: &str, uid: Option<&str>) -> Sandbox {
        Sandbox {
            container_id: container_id.into(),
            uid: uid.map(String::from),
            ips: vec!["fd00::1".parse().unwrap(), "10.1.1.2".parse().unwrap()],
            netns: File::open("/proc/self/ns/net").unwrap(),
            reported_at: Instant::now(),
        }
    }

    fn workload(uid: Option<&str>) -> Workload {
        Workload {
            namespace: "shop".into(),
            name: "web".into(),
            uid: uid.map(String::from),
            service_account: "default".into(),
            ip: None,
            netns: None,
            labels: Default::default(),
        }
    }

    #[test]
    fn a_sandbox_is_its_pods_only_and_a_late_del_of_an_old_one_changes_nothing() {
        let mut s = Sandboxes::default();
        s.add("shop/web".into(), sandbox("old", Some("u1")));
        s.add("shop/web".into(), sandbox("new", Some("u1")));
        assert!(!s.remove("shop/web", "old"), "the old sandbox's DEL");
        let found = s.of(&workload(Some("u1"))).unwrap();
        assert_eq!(found.container_id, "new");
        assert_eq!(found.ipv4(), Some(Ipv4Addr::new(10, 1, 1, 2)));
        assert!(
            s.of(&workload(None)).is_some(),
            "no UID in the config: the name decides"
        );
        assert!(
            s.of(&workload(Some("u2"))).is_none(),
            "a new pod of the same name is not the old pod's sandbox"
        );
        assert!(s.remove("shop/web", "new"));
        assert!(s.is_empty());
    }

    #[test]
    fn sandboxes_of_pods_outside_the_config_stay_for_a_grace_period() {
        let mut s = Sandboxes::default();
        s.add("shop/web".into(), sandbox("c", None));
        s.retain(|_| false);
        assert_eq!(s.len(), 1, "just reported: the config may not have it yet");
        s.by_pod.get_mut("shop/web").unwrap().reported_at -= UNKNOWN_POD_GRACE;
        s.retain(|_| false);
        assert!(s.is_empty());
    }
}
