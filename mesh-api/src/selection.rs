//! Which pods of a node are in the mesh: Namespaces labelled `trellis.dev/mesh=enabled`
//! enroll their pods; a pod label `trellis.dev/mesh=disabled` opts one out; hostNetwork pods
//! cannot be captured. A pure function, so the node (which enrolls) and the controller
//! (which issues identities only for enrolled pods of the asking node) decide alike.
//!
//! One bad pod never spoils the rest: completed pods (which keep their `status.podIP` after
//! the address went to another pod) are left out entirely, and pods that clash with another
//! one (one address, or one network namespace, claimed by two live pods) are skipped with
//! the reason, while everything else is enrolled.

use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::objects::NETNS_ANNOTATION;
use crate::{
    identity::Identity,
    objects::{Object, Pod},
};

/// Namespace label that enrolls every pod in it.
pub const MESH_LABEL: &str = "trellis.dev/mesh";

/// An enrolled workload: one pod on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    /// The pod's `metadata.uid`, how the node matches the pod to the sandbox the container
    /// runtime (through the CNI plugin) or the kubelet's cgroups show it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    pub service_account: String,
    /// `status.podIP`; `None` for a pod scheduled here whose sandbox is being created: the
    /// node learns the address from the CNI plugin before the kubelet reports it.
    pub ip: Option<Ipv4Addr>,
    /// The network namespace the standalone mode's annotation names; `None` (always, in a
    /// cluster) means the node finds it itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    pub labels: BTreeMap<String, String>,
}

impl Workload {
    /// `namespace/name`, how the access log and admin name a workload.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The workload's SPIFFE identity in `trust_domain`.
    pub fn identity(&self, trust_domain: &str) -> Identity {
        Identity::new(trust_domain, &self.namespace, &self.service_account)
    }
}

/// A pod that was not enrolled, and why: shown on the admin endpoint so an operator can
/// tell a typo from an intentional opt-out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub pod: String,
    pub reason: String,
}

/// The decision for this node.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    pub enrolled: Vec<Workload>,
    pub skipped: Vec<Skipped>,
}

/// The namespaces labelled `trellis.dev/mesh=enabled`.
pub fn enrolled_namespaces(objects: &[Object]) -> Vec<&str> {
    objects
        .iter()
        .filter_map(|o| match o {
            Object::Namespace(ns) if ns.labels.get(MESH_LABEL).map(String::as_str) == Some("enabled") => {
                Some(ns.name.as_str())
            }
            _ => None,
        })
        .collect()
}

/// Whether a pod has finished (`status.phase` `Succeeded` or `Failed`): nothing of it runs
/// any more, and Kubernetes keeps it, with its `status.podIP`, until it is deleted, while the
/// address may already be another pod's.
pub fn is_completed(pod: &Pod) -> bool {
    matches!(pod.phase.as_deref(), Some("Succeeded" | "Failed"))
}

/// Why a live pod cannot be told apart from another one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clash {
    /// The field both pods share: `status.podIP`, or the netns annotation.
    pub field: String,
    pub reason: String,
}

/// Live pods (not completed, not hostNetwork) that share an address with another live pod
/// anywhere in the cluster, or a network namespace with another live pod of their node, by
/// `namespace/name`. Both (all) of them are skipped rather than one kept: the node and its
/// peers trust the address-to-pod mapping (a connection's source identity, the tunnel's
/// destination), and nothing in the objects says which pod really holds the address now (a
/// newer pod may have it while the older one's status is stale, or the other way round), so
/// picking either could give one pod's traffic the other's identity. In a healthy cluster such
/// a clash lasts only until the kubelet reports the stale pod's status.
pub fn clashes(objects: &[Object]) -> BTreeMap<String, Clash> {
    let live = objects.iter().filter_map(|o| match o {
        Object::Pod(p) if !p.host_network && !is_completed(p) => Some(p),
        _ => None,
    });
    let mut by_ip: BTreeMap<Ipv4Addr, Vec<String>> = BTreeMap::new();
    let mut by_netns: BTreeMap<(&str, &PathBuf), Vec<String>> = BTreeMap::new();
    for pod in live {
        let key = format!("{}/{}", pod.namespace, pod.name);
        if let Some(ip) = pod.ip {
            by_ip.entry(ip).or_default().push(key.clone());
        }
        if let (Some(node), Some(netns)) = (pod.node_name.as_deref(), &pod.netns) {
            by_netns.entry((node, netns)).or_default().push(key);
        }
    }
    let mut out = BTreeMap::new();
    let others = |all: &[String], me: &str| {
        all.iter()
            .filter(|k| *k != me)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    for ((_, netns), pods) in by_netns.iter().filter(|(_, pods)| pods.len() > 1) {
        for pod in pods {
            out.insert(
                pod.clone(),
                Clash {
                    field: format!("metadata.annotations[{NETNS_ANNOTATION}]"),
                    reason: format!(
                        "its network namespace {} is also named by pod {}: none of them is enrolled until only one does",
                        netns.display(),
                        others(pods, pod)
                    ),
                },
            );
        }
    }
    // An address clash says more (and is the likelier one): it wins when a pod has both.
    for (ip, pods) in by_ip.iter().filter(|(_, pods)| pods.len() > 1) {
        for pod in pods {
            out.insert(
                pod.clone(),
                Clash {
                    field: "status.podIP".into(),
                    reason: format!(
                        "its address {ip} is also claimed by running pod {}: none of them is enrolled until only one has it (the mesh cannot tell which one does)",
                        others(pods, pod)
                    ),
                },
            );
        }
    }
    out
}

/// Picks the pods of `node_name` that belong in the mesh. Pure: the same objects always give
/// the same answer, so it is tested without a kernel.
pub fn select(objects: &[Object], node_name: &str) -> Selection {
    let enabled_namespaces = enrolled_namespaces(objects);
    let clashes = clashes(objects);
    let mut selection = Selection::default();
    for pod in objects.iter().filter_map(|o| match o {
        Object::Pod(p) => Some(p),
        _ => None,
    }) {
        // Completed pods run nothing: they are not workloads, not even skipped ones.
        if pod.node_name.as_deref() != Some(node_name) || is_completed(pod) {
            continue;
        }
        let key = format!("{}/{}", pod.namespace, pod.name);
        let skip = |reason: String| Skipped {
            pod: key.clone(),
            reason,
        };
        if !enabled_namespaces.contains(&pod.namespace.as_str()) {
            continue;
        }
        if pod.labels.get(MESH_LABEL).map(String::as_str) == Some("disabled") {
            selection
                .skipped
                .push(skip(format!("pod label {MESH_LABEL}=disabled opts it out")));
            continue;
        }
        if pod.host_network {
            selection.skipped.push(skip(
                "hostNetwork pods share the node's namespace and cannot be captured".into(),
            ));
            continue;
        }
        if let Some(clash) = clashes.get(&key) {
            selection.skipped.push(skip(clash.reason.clone()));
            continue;
        }
        selection.enrolled.push(Workload {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            service_account: pod.service_account.clone(),
            ip: pod.ip,
            netns: pod.netns.clone(),
            labels: pod.labels.clone(),
        });
    }
    selection.enrolled.sort_by_key(Workload::key);
    selection
}

/// An enrolled workload anywhere in the cluster, as a destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `namespace/name`.
    pub workload: String,
    pub identity: Identity,
    pub node: String,
    /// The node's InternalIP, where its tunnel listens; `None` without a Node object.
    pub node_ip: Option<std::net::Ipv4Addr>,
}

/// Every enrolled workload of the cluster by pod IP: where a node sends traffic for
/// enrolled pods elsewhere.
pub fn endpoints(objects: &[Object], trust_domain: &str) -> std::collections::BTreeMap<Ipv4Addr, Endpoint> {
    let mut nodes: Vec<(&str, Option<Ipv4Addr>)> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Node(n) => Some((n.name.as_str(), n.internal_ip)),
            _ => None,
        })
        .collect();
    // Pods may name nodes that have no Node object (yet): they still have endpoints.
    for o in objects {
        if let Object::Pod(p) = o {
            if let Some(n) = p.node_name.as_deref() {
                if !nodes.iter().any(|(name, _)| *name == n) {
                    nodes.push((n, None));
                }
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    for (node, node_ip) in nodes {
        // A pod without an address yet is no destination yet.
        for (w, ip) in select(objects, node)
            .enrolled
            .into_iter()
            .filter_map(|w| w.ip.map(|ip| (w, ip)))
        {
            out.insert(
                ip,
                Endpoint {
                    workload: w.key(),
                    identity: w.identity(trust_domain),
                    node: node.to_string(),
                    node_ip,
                },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(yaml: &str) -> Vec<Object> {
        crate::objects::parse_documents(std::path::Path::new("test.yaml"), yaml).unwrap()
    }

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {trellis.dev/mesh: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}, annotations: {trellis.dev/netns: pod-web}}
spec: {nodeName: node-1, serviceAccountName: web-sa}
status: {podIP: 10.1.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, annotations: {trellis.dev/netns: /proc/42/ns/net}}
spec: {nodeName: node-2}
status: {podIP: 10.2.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: old, namespace: legacy, annotations: {trellis.dev/netns: pod-old}}
spec: {nodeName: node-1}
status: {podIP: 10.1.2.2}
---
apiVersion: v1
kind: Pod
metadata: {name: batch, namespace: shop, labels: {trellis.dev/mesh: disabled}, annotations: {trellis.dev/netns: pod-batch}}
spec: {nodeName: node-1}
status: {podIP: 10.1.3.2}
---
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: shop}
spec: {nodeName: node-1, hostNetwork: true}
status: {podIP: 198.18.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: pending, namespace: shop, uid: 3c0e2b1a-7d7c-4c1e-9a55-0b6c1d2e3f40}
spec: {nodeName: node-1}
"#;

    #[test]
    fn enrolls_only_labelled_namespaces_on_this_node() {
        let sel = select(&objects(CLUSTER), "node-1");
        let names: Vec<String> = sel.enrolled.iter().map(Workload::key).collect();
        assert_eq!(names, ["shop/pending", "shop/web"]);
        let web = &sel.enrolled[1];
        assert_eq!(web.service_account, "web-sa");
        assert_eq!(web.ip, Some(Ipv4Addr::new(10, 1, 1, 2)));
        assert_eq!(web.netns, Some(PathBuf::from("/run/netns/pod-web")));

        let node2 = select(&objects(CLUSTER), "node-2");
        assert_eq!(node2.enrolled[0].key(), "shop/db");
        assert_eq!(node2.enrolled[0].service_account, "default");
        assert_eq!(node2.enrolled[0].netns, Some(PathBuf::from("/proc/42/ns/net")));
    }

    /// A pod scheduled here whose sandbox the runtime is creating has neither an address nor
    /// an annotation yet: it is a workload all the same, so the node enrolls it when the CNI
    /// plugin reports its sandbox, before the pod can start.
    #[test]
    fn a_pod_without_an_address_yet_is_enrolled_by_uid() {
        let sel = select(&objects(CLUSTER), "node-1");
        let pending = &sel.enrolled[0];
        assert_eq!(pending.key(), "shop/pending");
        assert_eq!(
            pending.uid.as_deref(),
            Some("3c0e2b1a-7d7c-4c1e-9a55-0b6c1d2e3f40")
        );
        assert_eq!((pending.ip, pending.netns.as_ref()), (None, None));
    }

    #[test]
    fn endpoints_span_every_node() {
        let mut objs = objects(CLUSTER);
        objs.push(Object::Node(crate::objects::Node {
            name: "node-2".into(),
            internal_ip: Some(Ipv4Addr::new(198, 18, 0, 2)),
        }));
        let eps = endpoints(&objs, "cluster.local");
        let db = &eps[&Ipv4Addr::new(10, 2, 1, 2)];
        assert_eq!(db.workload, "shop/db");
        assert_eq!(db.node_ip, Some(Ipv4Addr::new(198, 18, 0, 2)));
        assert_eq!(
            db.identity.to_string(),
            "spiffe://cluster.local/ns/shop/sa/default"
        );
        let web = &eps[&Ipv4Addr::new(10, 1, 1, 2)];
        assert_eq!((web.node.as_str(), web.node_ip), ("node-1", None));
        assert_eq!(
            eps.len(),
            2,
            "opted-out, hostNetwork and pending pods are no endpoints"
        );
    }

    #[test]
    fn every_skipped_pod_says_why() {
        let sel = select(&objects(CLUSTER), "node-1");
        let reasons: BTreeMap<&str, &str> = sel
            .skipped
            .iter()
            .map(|s| (s.pod.as_str(), s.reason.as_str()))
            .collect();
        assert!(reasons["shop/batch"].contains("opts it out"));
        assert!(reasons["shop/agent"].contains("hostNetwork"));
        // Pods outside enrolled namespaces are simply not part of the mesh.
        assert!(!reasons.contains_key("legacy/old"));
    }

    /// web is running; job-1 ran to completion on the same node and kept the address web has
    /// now; job-2 failed elsewhere; twin-a and twin-b (two nodes) both claim 10.1.9.9; ns-a
    /// and ns-b name one network namespace; two hostNetwork agents share their node's address
    /// (that is no clash); legacy/old, outside the mesh, claims lonely's address.
    const CLASHES: &str = r#"
kind: Namespace
metadata: {name: shop, labels: {trellis.dev/mesh: enabled}}
---
kind: Namespace
metadata: {name: legacy}
---
kind: Pod
metadata: {name: job-1, namespace: shop, annotations: {trellis.dev/netns: job-1}}
spec: {nodeName: n1}
status: {podIP: 10.1.1.2, phase: Succeeded}
---
kind: Pod
metadata: {name: web, namespace: shop, annotations: {trellis.dev/netns: web}}
spec: {nodeName: n1}
status: {podIP: 10.1.1.2, phase: Running}
---
kind: Pod
metadata: {name: job-2, namespace: shop, annotations: {trellis.dev/netns: job-2}}
spec: {nodeName: n2}
status: {podIP: 10.2.1.7, phase: Failed}
---
kind: Pod
metadata: {name: twin-a, namespace: shop, annotations: {trellis.dev/netns: twin-a}}
spec: {nodeName: n1}
status: {podIP: 10.1.9.9, phase: Running}
---
kind: Pod
metadata: {name: twin-b, namespace: shop, annotations: {trellis.dev/netns: twin-b}}
spec: {nodeName: n2}
status: {podIP: 10.1.9.9}
---
kind: Pod
metadata: {name: ns-a, namespace: shop, annotations: {trellis.dev/netns: shared}}
spec: {nodeName: n1}
status: {podIP: 10.1.1.3}
---
kind: Pod
metadata: {name: ns-b, namespace: shop, annotations: {trellis.dev/netns: /run/netns/shared}}
spec: {nodeName: n1}
status: {podIP: 10.1.1.4}
---
kind: Pod
metadata: {name: agent-1, namespace: shop}
spec: {nodeName: n1, hostNetwork: true}
status: {podIP: 198.18.0.1}
---
kind: Pod
metadata: {name: agent-2, namespace: shop}
spec: {nodeName: n1, hostNetwork: true}
status: {podIP: 198.18.0.1}
---
kind: Pod
metadata: {name: lonely, namespace: shop, annotations: {trellis.dev/netns: lonely}}
spec: {nodeName: n2}
status: {podIP: 10.2.1.5}
---
kind: Pod
metadata: {name: old, namespace: legacy}
spec: {nodeName: n2}
status: {podIP: 10.2.1.5, phase: Running}
"#;

    fn reasons(sel: &Selection) -> BTreeMap<&str, &str> {
        sel.skipped
            .iter()
            .map(|s| (s.pod.as_str(), s.reason.as_str()))
            .collect()
    }

    #[test]
    fn completed_pods_are_left_out_entirely() {
        let objs = objects(CLASHES);
        let n1 = select(&objs, "n1");
        let names: Vec<String> = n1.enrolled.iter().map(Workload::key).collect();
        assert_eq!(names, ["shop/web"], "web keeps the address job-1 used to have");
        assert!(!reasons(&n1).contains_key("shop/job-1"));
        assert!(!reasons(&select(&objs, "n2")).contains_key("shop/job-2"));
        let eps = endpoints(&objs, "cluster.local");
        assert_eq!(eps[&Ipv4Addr::new(10, 1, 1, 2)].workload, "shop/web");
        assert!(!eps.contains_key(&Ipv4Addr::new(10, 2, 1, 7)));
    }

    #[test]
    fn pods_that_share_an_address_or_a_netns_are_all_skipped_with_the_other_named() {
        let objs = objects(CLASHES);
        let n1 = select(&objs, "n1");
        let n2 = select(&objs, "n2");
        let (r1, r2) = (reasons(&n1), reasons(&n2));
        assert!(
            r1["shop/twin-a"].contains("address 10.1.9.9 is also claimed by running pod shop/twin-b"),
            "{r1:?}"
        );
        assert!(r2["shop/twin-b"].contains("pod shop/twin-a"), "{r2:?}");
        assert!(
            r1["shop/ns-a"].contains("network namespace /run/netns/shared is also named by pod shop/ns-b"),
            "{r1:?}"
        );
        assert!(r1["shop/ns-b"].contains("pod shop/ns-a"), "{r1:?}");
        // A pod outside the mesh claiming a mesh pod's address counts too.
        assert!(r2["shop/lonely"].contains("pod legacy/old"), "{r2:?}");
        assert!(n2.enrolled.is_empty());
        // hostNetwork pods share their node's address by design: no clash, the usual reason.
        assert!(r1["shop/agent-1"].contains("hostNetwork"), "{r1:?}");
        // None of them is anyone's endpoint.
        let eps = endpoints(&objs, "cluster.local");
        let ips: Vec<&Ipv4Addr> = eps.keys().collect();
        assert_eq!(ips, [&Ipv4Addr::new(10, 1, 1, 2)]);
    }
}
