//! Which pods of a node are in the mesh: Namespaces labelled `trellis.dev/mesh=enabled`
//! enroll their pods; a pod label `trellis.dev/mesh=disabled` opts one out; hostNetwork pods
//! cannot be captured. A pure function, so the node (which enrolls) and the controller
//! (which issues identities only for enrolled pods of the asking node) decide alike.

use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::objects::NETNS_ANNOTATION;
use crate::{identity::Identity, objects::Object};

/// Namespace label that enrolls every pod in it.
pub const MESH_LABEL: &str = "trellis.dev/mesh";

/// An enrolled workload: one pod on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    pub ip: Ipv4Addr,
    pub netns: PathBuf,
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

/// Picks the pods of `node_name` that belong in the mesh. Pure: the same objects always give
/// the same answer, so it is tested without a kernel.
pub fn select(objects: &[Object], node_name: &str) -> Selection {
    let enabled_namespaces: Vec<&str> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Namespace(ns) if ns.labels.get(MESH_LABEL).map(String::as_str) == Some("enabled") => {
                Some(ns.name.as_str())
            }
            _ => None,
        })
        .collect();
    let mut selection = Selection::default();
    for pod in objects.iter().filter_map(|o| match o {
        Object::Pod(p) => Some(p),
        _ => None,
    }) {
        if pod.node_name.as_deref() != Some(node_name) {
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
        let Some(ip) = pod.ip else {
            selection.skipped.push(skip("no status.podIP yet".into()));
            continue;
        };
        let Some(netns) = &pod.netns else {
            selection.skipped.push(skip(format!(
                "no {NETNS_ANNOTATION} annotation naming its network namespace"
            )));
            continue;
        };
        selection.enrolled.push(Workload {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            service_account: pod.service_account.clone(),
            ip,
            netns: netns.clone(),
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
        for w in select(objects, node).enrolled {
            out.insert(
                w.ip,
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
metadata: {name: pending, namespace: shop, annotations: {trellis.dev/netns: pod-pending}}
spec: {nodeName: node-1}
"#;

    #[test]
    fn enrolls_only_labelled_namespaces_on_this_node() {
        let sel = select(&objects(CLUSTER), "node-1");
        let names: Vec<String> = sel.enrolled.iter().map(Workload::key).collect();
        assert_eq!(names, ["shop/web"]);
        let web = &sel.enrolled[0];
        assert_eq!(web.service_account, "web-sa");
        assert_eq!(web.ip, Ipv4Addr::new(10, 1, 1, 2));
        assert_eq!(web.netns, PathBuf::from("/run/netns/pod-web"));

        let node2 = select(&objects(CLUSTER), "node-2");
        assert_eq!(node2.enrolled[0].key(), "shop/db");
        assert_eq!(node2.enrolled[0].service_account, "default");
        assert_eq!(node2.enrolled[0].netns, PathBuf::from("/proc/42/ns/net"));
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
        assert!(reasons["shop/pending"].contains("podIP"));
        // Pods outside enrolled namespaces are simply not part of the mesh.
        assert!(!reasons.contains_key("legacy/old"));
    }
}
