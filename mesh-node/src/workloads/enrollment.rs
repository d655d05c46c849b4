//! Applying a [`NodeConfig`] from the controller to the datapath, and publishing the registry
//! the proxy and admin read.
//!
//! Reconciliation is level-based: every pass compares what should be enrolled with what is,
//! so a missed update, a pod whose netns appears late, or an agent restart all converge the
//! same way. A pod that cannot be enrolled yet (its netns or veth is missing) is reported and
//! retried on the next pass; it never blocks the others.
//!
//! The registry is immutable once published: a pass builds the next one and swaps it in
//! whole, so a connection (which takes the registry once) sees one config version, never a
//! mix. (The kernel maps change during the pass, just before the publish: a connection
//! captured in between from a pod the registry does not know yet has no source identity and
//! cannot use the tunnel; it fails closed.)

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fs::File,
    net::Ipv4Addr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use arc_swap::ArcSwap;

use serde::Serialize;

use mesh_api::{
    identity::Identity, node_config::NodeConfig, peer_authentication::PeerAuthentications,
    selection::Endpoint,
};

use super::{kubelet, sandboxes::Sandboxes, Heartbeat, NodeAddresses, Selection, Skipped, Workload};
use crate::{
    datapath::{self, netns, Datapath, PodDatapath},
    identity::IdentityManager,
    services::ServiceIndex,
};

/// What the proxy and the admin endpoint know about enrolled workloads.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Registry {
    /// Enrolled workloads with their kernel-side identity.
    pub workloads: BTreeMap<String, EnrolledWorkload>,
    /// Pods selected but not (yet) enrolled, with the reason.
    pub failed: Vec<Skipped>,
    /// Those of them that cannot be captured as they are (see `NotEnrolled::unsupported`).
    pub unsupported: BTreeSet<String>,
    /// Pods deliberately left out, with the reason.
    pub skipped: Vec<Skipped>,
    /// The controller's config version this registry enforces (0: none yet).
    pub config_version: u64,
    /// When that version was applied.
    pub config_applied_at: Option<SystemTime>,
    /// Enrolled workloads on other nodes, by pod IP: reached through the tunnel.
    pub remote_endpoints: BTreeMap<Ipv4Addr, Endpoint>,
    /// Every PeerAuthentication in the cluster.
    pub peer_authentications: PeerAuthentications,
    /// Service VIPs and ports, with their endpoints, for outbound load balancing.
    pub services: ServiceIndex,
    /// Addresses of the other mesh nodes (those of remote endpoints).
    pub peer_nodes: HashSet<Ipv4Addr>,
    /// The namespaces labelled into the mesh (what the CNI plugin is answered by for a pod
    /// the config does not list yet).
    pub enrolled_namespaces: BTreeSet<String>,
    #[serde(skip)]
    by_cookie: HashMap<u64, String>,
    #[serde(skip)]
    by_ip: HashMap<Ipv4Addr, String>,
    #[serde(skip)]
    pub last_change: Option<SystemTime>,
}

/// A destination on another node.
pub struct RemoteWorkload {
    pub key: String,
    pub identity: Identity,
    pub node_ip: Ipv4Addr,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnrolledWorkload {
    pub workload: Workload,
    pub datapath: PodDatapath,
}

impl Registry {
    /// The workload whose network namespace has this cookie.
    pub fn by_netns_cookie(&self, cookie: u64) -> Option<&Workload> {
        self.by_cookie
            .get(&cookie)
            .and_then(|k| self.workloads.get(k))
            .map(|e| &e.workload)
    }

    /// The enrolled workload with this pod IP.
    /// An enrolled workload on another node whose node address is known.
    pub fn remote(&self, ip: Ipv4Addr) -> Option<RemoteWorkload> {
        let e = self.remote_endpoints.get(&ip)?;
        Some(RemoteWorkload {
            key: e.workload.clone(),
            identity: e.identity.clone(),
            node_ip: e.node_ip?,
        })
    }

    /// Whether the pod with this netns cookie, or this IP, sits on a bridge port (see
    /// `PodDatapath::bridged`).
    pub fn bridged(&self, cookie: Option<u64>, ip: Option<Ipv4Addr>) -> bool {
        let key = cookie
            .and_then(|c| self.by_cookie.get(&c))
            .or_else(|| ip.and_then(|ip| self.by_ip.get(&ip)));
        key.and_then(|k| self.workloads.get(k))
            .is_some_and(|e| e.datapath.bridged)
    }

    /// Whether `ip` is the address of another mesh node, as the controller's config lists
    /// them (the nodes of remote endpoints).
    pub fn is_peer_node(&self, ip: Ipv4Addr) -> bool {
        self.peer_nodes.contains(&ip)
    }

    /// Enrolled pods by the ifindex of their host-side interface (for the admin view).
    pub fn pods_by_ifindex(&self) -> HashMap<u32, String> {
        self.workloads
            .iter()
            .map(|(key, e)| (e.datapath.host_ifindex, key.clone()))
            .collect()
    }

    pub fn peer_authentications(&self) -> &PeerAuthentications {
        &self.peer_authentications
    }

    pub fn by_ip(&self, ip: Ipv4Addr) -> Option<&Workload> {
        self.by_ip
            .get(&ip)
            .and_then(|k| self.workloads.get(k))
            .map(|e| &e.workload)
    }

    fn insert(&mut self, entry: EnrolledWorkload) {
        let key = entry.workload.key();
        self.by_cookie.insert(entry.datapath.netns_cookie, key.clone());
        self.by_ip.insert(entry.datapath.ip, key.clone());
        self.workloads.insert(key, entry);
    }

    fn remove(&mut self, key: &str) -> Option<EnrolledWorkload> {
        let entry = self.workloads.remove(key)?;
        self.by_cookie.remove(&entry.datapath.netns_cookie);
        self.by_ip.remove(&entry.datapath.ip);
        Some(entry)
    }
}

/// Drives enrollment from the controller's config.
pub struct Enroller {
    pub datapath: Arc<Mutex<Datapath>>,
    /// What the proxy reads; replaced whole after each pass.
    pub published: Arc<ArcSwap<Registry>>,
    /// The next registry, built by a pass.
    registry: Registry,
    pub node_name: String,
    pub trust_domain: String,
    /// Told which identities this node needs, when mTLS is configured.
    pub identities: Option<Arc<IdentityManager>>,
    first_pass: bool,
    /// Netns cookies, remembered so the pass every 500 ms costs a `stat` per pod.
    cookies: netns::Cookies,
    /// When the last pass finished; `/ready` goes false when passes stall or stop.
    pub heartbeat: Arc<Heartbeat>,
    /// The node's own addresses, refreshed every pass, which the proxy never dials for a pod.
    pub node_addresses: Arc<NodeAddresses>,
    /// The pod addresses the divert rule holds now (`None`: unknown, write them).
    diverted: Option<BTreeSet<Ipv4Addr>>,
    /// Pod sandboxes reported by the CNI plugin: where a pod's namespace is found first.
    pub sandboxes: Arc<Mutex<Sandboxes>>,
    /// The kubelet's cgroup root, where pods that ran before the agent are found by UID.
    pub kubelet_cgroups: PathBuf,
    /// Sandbox processes found there, by pod UID, so a pass does not walk the cgroups again
    /// while they live.
    sandbox_pids: HashMap<String, kubelet::SandboxProcess>,
    /// Where the enrolled namespaces are written for the CNI plugin (`None`: nowhere).
    pub namespaces_file: Option<PathBuf>,
    /// Where the CNI plugin stands (`cni::install::describe`); `None` when this node does
    /// not manage it (no `--cni-conf-dir`).
    pub cni_state: Arc<Mutex<Option<String>>>,
}

impl Enroller {
    pub fn new(
        datapath: Arc<Mutex<Datapath>>,
        published: Arc<ArcSwap<Registry>>,
        node_name: String,
        trust_domain: String,
        identities: Option<Arc<IdentityManager>>,
    ) -> Self {
        Self {
            datapath,
            published,
            registry: Registry::default(),
            node_name,
            trust_domain,
            identities,
            first_pass: true,
            cookies: netns::Cookies::default(),
            heartbeat: Arc::default(),
            node_addresses: Arc::default(),
            diverted: None,
            sandboxes: Arc::default(),
            kubelet_cgroups: PathBuf::from("/sys/fs/cgroup"),
            sandbox_pids: HashMap::new(),
            namespaces_file: None,
            cni_state: Arc::default(),
        }
    }

    /// One reconcile pass: brings the datapath and the registry to `config` (version
    /// `version`), then publishes the registry if anything changed. The periodic re-run of
    /// an unchanged version only touches the kernel side (pods whose netns or veth appeared
    /// late); the cluster tables are rebuilt once per version.
    pub fn pass(&mut self, config: &NodeConfig, version: u64) {
        let selection = Selection {
            enrolled: config.workloads.clone(),
            skipped: config.skipped.clone(),
        };
        let (last_change, failed) = (self.registry.last_change, self.registry.failed.clone());
        self.apply(&selection);
        let new_version = self.registry.config_version != version;
        let workloads_changed = self.registry.last_change != last_change;
        if new_version {
            let reg = &mut self.registry;
            reg.remote_endpoints = config.endpoints.clone();
            reg.peer_nodes = config.endpoints.values().filter_map(|e| e.node_ip).collect();
            reg.peer_authentications = PeerAuthentications::new(config.peer_authentications.iter().cloned());
            reg.services = ServiceIndex::build(&config.services, &reg.services);
            if reg.enrolled_namespaces != config.enrolled_namespaces || reg.config_version == 0 {
                reg.enrolled_namespaces = config.enrolled_namespaces.clone();
                self.write_namespaces_file();
            }
            let reg = &mut self.registry;
            reg.config_version = version;
            reg.config_applied_at = Some(SystemTime::now());
        }
        if new_version || workloads_changed {
            self.update_identities();
        }
        if new_version || workloads_changed || self.registry.failed != failed {
            self.published.store(Arc::new(self.registry.clone()));
        }
        self.divert_enrolled_pods();
        self.node_addresses.refresh();
        self.heartbeat.beat();
    }

    /// Keeps the divert rule's set (`datapath::tproxy`) equal to the enrolled pod addresses.
    fn divert_enrolled_pods(&mut self) {
        let now: BTreeSet<Ipv4Addr> = self.registry.workloads.values().map(|e| e.datapath.ip).collect();
        if self.diverted.as_ref() == Some(&now) {
            return;
        }
        match datapath::tproxy::set_pods(&now) {
            Ok(()) => self.diverted = Some(now),
            Err(e) => tracing::warn!(error = %e, "updating the divert set; will retry"),
        }
    }

    /// Tells the identity manager which identities this node's enrolled workloads need.
    fn update_identities(&self) {
        let trust_domain = &self.trust_domain;
        let reg = &self.registry;
        let local: HashMap<Ipv4Addr, Identity> = reg
            .workloads
            .values()
            .map(|e| (e.datapath.ip, e.workload.identity(trust_domain)))
            .collect();
        if let Some(ids) = &self.identities {
            ids.set_local(local);
        }
    }

    fn apply(&mut self, selection: &Selection) {
        let datapath = self.datapath.clone();
        let mut datapath = datapath.lock().unwrap_or_else(|p| p.into_inner());
        let sandboxes = self.sandboxes.clone();
        let mut sandboxes = sandboxes.lock().unwrap_or_else(|p| p.into_inner());
        let mut failed = Vec::new();
        let mut unsupported = BTreeSet::new();
        let mut resolved = Vec::new();
        // The kubelet's cgroups are walked at most once a pass, and only when a pod needs it.
        let mut cgroups = None;
        for workload in &selection.enrolled {
            let key = workload.key();
            let found = self
                .netns_of(workload, &sandboxes, &mut cgroups)
                .and_then(|(ns, ip)| resolve(&key, ns, ip, &mut self.cookies));
            match found {
                Ok(dp) => resolved.push((workload, dp)),
                Err(not) => {
                    // Look for it afresh next pass (the sandbox process may be another now).
                    if let Some(uid) = &workload.uid {
                        self.sandbox_pids.remove(uid);
                    }
                    if not.unsupported {
                        unsupported.insert(key.clone());
                    }
                    failed.push(Skipped {
                        pod: key,
                        reason: not.reason,
                    })
                }
            }
        }
        let (resolved, clashing) = alone_by(resolved, |(_, dp)| dp.ip);
        for (w, dp) in clashing {
            failed.push(Skipped {
                pod: w.key(),
                reason: format!(
                    "another workload of this config has the address {}: neither is enrolled",
                    dp.ip
                ),
            });
        }
        let (resolved, clashing) = alone_by(resolved, |(_, dp)| dp.netns_cookie);
        for (w, dp) in clashing {
            failed.push(Skipped {
                pod: w.key(),
                reason: format!(
                    "its network namespace (cookie {}) is another workload's too: neither is enrolled",
                    dp.netns_cookie
                ),
            });
        }

        // After a restart, drop what the previous agent enrolled for pods that are gone.
        if self.first_pass {
            let keep: Vec<PodDatapath> = resolved.iter().map(|(_, dp)| dp.clone()).collect();
            if let Err(e) = datapath.retain(&keep) {
                tracing::warn!(error = %e, "cleaning up state left by a previous agent");
            }
            self.first_pass = false;
        }

        let reg = &mut self.registry;
        // The kernel state of a pod depends only on its datapath (netns, address, veth): a
        // change of labels or service account updates the registry entry and leaves the
        // pod's capture and guards in place, so its traffic never has a gap.
        for (w, dp) in &resolved {
            if let Some(current) = reg.workloads.get_mut(&w.key()) {
                if current.datapath == *dp && current.workload != **w {
                    current.workload = (*w).clone();
                    reg.last_change = Some(SystemTime::now());
                }
            }
        }
        let stale: Vec<String> = reg
            .workloads
            .iter()
            .filter(|(key, current)| {
                !resolved
                    .iter()
                    .any(|(w, dp)| &w.key() == *key && *dp == current.datapath)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(old) = reg.remove(&key) {
                match datapath.unenroll(&old.datapath) {
                    Ok(()) => tracing::info!(workload = %key, ip = %old.datapath.ip, "unenrolled"),
                    Err(e) => tracing::warn!(workload = %key, error = %e, "unenrolling"),
                }
                reg.last_change = Some(SystemTime::now());
            }
        }
        for (workload, dp) in resolved {
            if reg.workloads.contains_key(&workload.key()) {
                continue;
            }
            match datapath.enroll(&dp) {
                Ok(()) => {
                    tracing::info!(
                        workload = %workload.key(),
                        ip = %dp.ip,
                        veth = %dp.host_iface,
                        netns_cookie = dp.netns_cookie,
                        "enrolled"
                    );
                    reg.insert(EnrolledWorkload {
                        workload: workload.clone(),
                        datapath: dp,
                    });
                    reg.last_change = Some(SystemTime::now());
                }
                Err(e) => failed.push(Skipped {
                    pod: workload.key(),
                    reason: e.to_string(),
                }),
            }
        }
        let keys: HashSet<String> = selection.enrolled.iter().map(Workload::key).collect();
        self.cookies.retain(&keys);
        sandboxes.retain(|pod| keys.contains(pod));
        let uids: HashSet<&str> = selection
            .enrolled
            .iter()
            .filter_map(|w| w.uid.as_deref())
            .collect();
        self.sandbox_pids.retain(|uid, _| uids.contains(uid.as_str()));
        for f in &failed {
            if !reg.failed.contains(f) {
                tracing::warn!(workload = %f.pod, reason = %f.reason, "cannot enroll yet; will retry");
            }
        }
        failed.sort_by(|a, b| a.pod.cmp(&b.pod));
        reg.failed = failed;
        reg.unsupported = unsupported;
        reg.skipped = selection.skipped.clone();
    }

    /// Where the workload's network namespace is, and its address: the sandbox the CNI
    /// plugin reported, else the standalone mode's annotation, else the pod's sandbox process
    /// in the kubelet's cgroups (pods that ran before this agent). The runtime's address
    /// wins over `status.podIP`, which the kubelet copies from it later.
    fn netns_of(
        &mut self,
        w: &Workload,
        sandboxes: &Sandboxes,
        cgroups: &mut Option<HashMap<String, PathBuf>>,
    ) -> Result<(File, Option<Ipv4Addr>), NotEnrolled> {
        if let Some(sandbox) = sandboxes.of(w) {
            let ns = sandbox
                .netns
                .try_clone()
                .map_err(|e| format!("duplicating the sandbox's namespace descriptor: {e}"))?;
            let Some(ip) = sandbox.ipv4().or(w.ip) else {
                return Err(NotEnrolled::unsupported(
                    "the runtime gave the pod no IPv4 address: IPv6-only pods are not captured yet".into(),
                ));
            };
            return Ok((ns, Some(ip)));
        }
        if let Some(path) = &w.netns {
            return netns::open_pod_netns(path)
                .map(|ns| (ns, w.ip))
                .map_err(|e| format!("network namespace {}: {e}", path.display()).into());
        }
        let Some(uid) = &w.uid else {
            return Err("no sandbox reported by trellis-cni yet, and no pod UID to find it by".into());
        };
        if let Some(ns) = self
            .sandbox_pids
            .get(uid)
            .and_then(|p| kubelet::process_netns(*p).ok())
        {
            return Ok((ns, w.ip));
        }
        let cgroups = cgroups.get_or_insert_with(|| kubelet::pod_cgroups(&self.kubelet_cgroups));
        let (ns, process) =
            kubelet::pod_netns(&self.kubelet_cgroups, cgroups, uid).map_err(NotEnrolled::from)?;
        self.sandbox_pids.insert(uid.clone(), process);
        Ok((ns, w.ip))
    }

    /// Leaves the enrolled namespaces where the CNI plugin reads them when this agent does
    /// not answer.
    fn write_namespaces_file(&self) {
        let Some(path) = &self.namespaces_file else { return };
        let known = mesh_cni::protocol::EnrolledNamespaces {
            namespaces: self.registry.enrolled_namespaces.iter().cloned().collect(),
        };
        if let Err(e) = known.write(path) {
            tracing::warn!(path = %path.display(), error = %e, "writing the enrolled namespaces for the CNI plugin");
        }
    }
}

/// Splits `items` into those whose `key` no other item has, and the others. Two workloads
/// with one address, or one network namespace (reached by two paths), cannot both be
/// enrolled, and the node cannot tell which is right: neither is, the rest are. (The
/// controller's compiler leaves such pods out already; this keeps a config from another
/// controller from mixing two pods up in the kernel maps, or costing the whole version.)
fn alone_by<T, K: std::hash::Hash + Eq>(items: Vec<T>, key: impl Fn(&T) -> K) -> (Vec<T>, Vec<T>) {
    let mut count: HashMap<K, usize> = HashMap::new();
    for item in &items {
        *count.entry(key(item)).or_default() += 1;
    }
    items.into_iter().partition(|item| count[&key(item)] == 1)
}

/// Finds what the kernel needs for a workload in its namespace `ns`: the namespace's cookie
/// and the host-side interface (the peer of the pod's interface holding its IP, whatever the
/// CNI: veth, bridge port, ptp). Finding the address in the namespace also proves the
/// namespace is the pod's.
fn resolve(
    key: &str,
    ns: File,
    ip: Option<Ipv4Addr>,
    cookies: &mut netns::Cookies,
) -> Result<PodDatapath, NotEnrolled> {
    let ip = ip.ok_or("no address yet: neither the CNI plugin nor status.podIP gave one")?;
    let pod = cookies
        .pod(key, ns, ip)
        .map_err(|e| format!("in its network namespace: {e}"))?;
    let pod_side = pod.link.ok_or("no host-side interface")?;
    let host_ifindex = pod_side.peer;
    let host = datapath::veth::host_side(host_ifindex)
        .map_err(|e| format!("reading the pod's host-side interface (ifindex {host_ifindex}): {e}"))?;
    let Some(host) = host else {
        // The veth was replaced in the same namespace: look again next pass.
        cookies.forget(key);
        return Err(
            format!("the pod's host-side interface (ifindex {host_ifindex}) is gone from this node").into(),
        );
    };
    if !host.links_back_to(&pod_side) {
        // Not the pod's veth (a macvlan parent, or an index the pod steered): guarding it would
        // cut the wrong traffic and leave the pod's own link unguarded.
        cookies.forget(key);
        return Err(NotEnrolled::unsupported(format!(
            "the pod's interface names {} (ifindex {host_ifindex}, {}) as its peer, which is not \
             a veth leading back to it: not enrolled (only veth-attached pods are supported)",
            host.name,
            host.kind.as_deref().unwrap_or("unknown kind")
        )));
    }
    Ok(PodDatapath {
        netns_cookie: pod.netns_cookie,
        ip,
        host_iface: host.name,
        host_ifindex,
        bridged: host.bridged,
    })
}

/// Why a workload is not enrolled in this pass.
#[derive(Debug)]
struct NotEnrolled {
    reason: String,
    /// The pod cannot be captured as it is (not attached by a veth, no IPv4 address): not
    /// worth waiting for. The CNI plugin lets such a pod start, outside the mesh, with the
    /// reason, rather than hold it back for ever.
    unsupported: bool,
}

impl NotEnrolled {
    fn unsupported(reason: String) -> Self {
        Self {
            reason,
            unsupported: true,
        }
    }
}

impl From<String> for NotEnrolled {
    fn from(reason: String) -> Self {
        Self {
            reason,
            unsupported: false,
        }
    }
}

impl From<&str> for NotEnrolled {
    fn from(reason: &str) -> Self {
        reason.to_string().into()
    }
}

/// Re-exported for the admin view.
pub use datapath::DatapathView;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_that_share_an_address_or_a_netns_are_set_aside_together() {
        let (alone, clashing) = alone_by(vec![("a", 1), ("b", 2), ("c", 1), ("d", 3)], |(_, k)| *k);
        assert_eq!(alone, [("b", 2), ("d", 3)]);
        assert_eq!(clashing, [("a", 1), ("c", 1)]);
    }
}
