//! What one node enforces, compiled from the cluster's objects: plain data the node uses
//! without looking anything up. The controller compiles it ([`compile`]) and streams it in
//! sections; the node applies a whole version at once.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use serde::{Deserialize, Serialize};

use crate::{
    identity::Identity,
    objects::{IntOrString, Object, Pod, Service},
    peer_authentication::PeerAuthentication,
    selection::{self, Endpoint, Skipped, Workload},
};

/// Service annotation restricting which namespaces see it (Istio's `exportTo`).
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";

/// Settings of the compiler that are not objects.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Options {
    pub trust_domain: String,
    /// Istio's root namespace (mesh-wide policies live there).
    pub root_namespace: String,
    /// Kubernetes cluster domain, for service host names (`web.shop.svc.<domain>`).
    pub cluster_domain: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            trust_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            cluster_domain: "cluster.local".into(),
        }
    }
}

/// Everything one node needs, by section. Each section is replaced whole by an update.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// Enrolled pods on this node.
    pub workloads: Vec<Workload>,
    /// Pods of this node left out of the mesh, and why.
    pub skipped: Vec<Skipped>,
    /// Enrolled pods on other nodes, by pod IP: reached through the tunnel.
    pub endpoints: BTreeMap<Ipv4Addr, Endpoint>,
    /// Services with a cluster IP, and their endpoints.
    pub services: Vec<ServiceConfig>,
    /// Every PeerAuthentication of the mesh (a workload's decision may depend on the mesh-wide
    /// and namespace policies as well as its own).
    pub peer_authentications: Vec<PeerAuthentication>,
}

/// The sections of a [`NodeConfig`], as named on the wire and in `mesh-ctl proxy-config`.
pub const SECTIONS: [&str; 5] = [
    "workloads",
    "skipped",
    "endpoints",
    "services",
    "peer_authentications",
];

impl NodeConfig {
    /// One section as JSON.
    pub fn section(&self, name: &str) -> Option<serde_json::Value> {
        let v = match name {
            "workloads" => serde_json::to_value(&self.workloads),
            "skipped" => serde_json::to_value(&self.skipped),
            "endpoints" => serde_json::to_value(&self.endpoints),
            "services" => serde_json::to_value(&self.services),
            "peer_authentications" => serde_json::to_value(&self.peer_authentications),
            _ => return None,
        };
        Some(v.expect("node config serialises to JSON"))
    }

    /// Replaces one section from JSON; the error names the section and the field.
    pub fn set_section(&mut self, name: &str, json: &[u8]) -> Result<(), String> {
        fn parse<T: serde::de::DeserializeOwned>(name: &str, json: &[u8]) -> Result<T, String> {
            let de = &mut serde_json::Deserializer::from_slice(json);
            serde_path_to_error::deserialize(de)
                .map_err(|e| format!("section {name}: {}: {}", e.path(), e.inner()))
        }
        match name {
            "workloads" => self.workloads = parse(name, json)?,
            "skipped" => self.skipped = parse(name, json)?,
            "endpoints" => self.endpoints = parse(name, json)?,
            "services" => self.services = parse(name, json)?,
            "peer_authentications" => self.peer_authentications = parse(name, json)?,
            other => {
                return Err(format!(
                    "unknown section {other:?}: is this node older than the controller?"
                ))
            }
        }
        Ok(())
    }

    /// What a node checks before applying a config: things the compiler never produces but a
    /// broken or foreign controller could.
    pub fn validate(&self) -> Result<(), String> {
        let mut ips = BTreeSet::new();
        for w in &self.workloads {
            if !ips.insert(w.ip) {
                return Err(format!("workloads: two workloads have the address {}", w.ip));
            }
            if !w.netns.is_absolute() {
                return Err(format!(
                    "workloads: {}: netns {} is not an absolute path",
                    w.key(),
                    w.netns.display()
                ));
            }
        }
        Ok(())
    }

    /// The sections whose content differs from `old` (all of them when `old` is `None`).
    pub fn changed_sections(&self, old: Option<&NodeConfig>) -> Vec<&'static str> {
        SECTIONS
            .into_iter()
            .filter(|s| old.is_none_or(|o| o.section(s) != self.section(s)))
            .collect()
    }
}

/// A Service as the node routes to it: its virtual IP and the endpoints behind each port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// `namespace/name`.
    pub name: String,
    /// `name.namespace.svc.<cluster domain>`.
    pub hostname: String,
    pub vip: Ipv4Addr,
    pub ports: Vec<ServicePortConfig>,
    /// Namespaces whose workloads may use it; `*` means all.
    pub visible_to: BTreeSet<String>,
}

impl ServiceConfig {
    /// Whether a workload in `namespace` may use this service (Istio's `exportTo` as the
    /// compiler resolved it into `visible_to`). Pure, so the node and `mesh-ctl` agree.
    pub fn is_visible_to(&self, namespace: &str) -> bool {
        visible(&self.visible_to, namespace)
    }
}

/// Whether a `visible_to` set admits workloads of `namespace`.
pub fn visible(visible_to: &BTreeSet<String>, namespace: &str) -> bool {
    visible_to.contains("*") || visible_to.contains(namespace)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePortConfig {
    pub name: String,
    pub port: u16,
    pub protocol: String,
    pub app_protocol: Option<String>,
    /// Ready endpoints for this port.
    pub endpoints: Vec<ServiceEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEndpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// `namespace/name` of the pod, when known.
    pub pod: Option<String>,
    /// The pod's identity when it is enrolled (reached through the tunnel or locally).
    pub identity: Option<Identity>,
}

/// A problem found while compiling: an input that is wrong, or a field Trellis does not act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// `Kind namespace/name`.
    pub object: String,
    /// The field from the object's root, e.g. `spec.http[0].fault`; empty for the object.
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.field.is_empty() {
            write!(f, "{severity}: {}: {}", self.object, self.message)
        } else {
            write!(f, "{severity}: {} {}: {}", self.object, self.field, self.message)
        }
    }
}

/// Compiles the config of `node` from every object of the cluster. Pure.
pub fn compile(objects: &[Object], node: &str, options: &Options) -> NodeConfig {
    let selection = selection::select(objects, node);
    let mut endpoints = selection::endpoints(objects, &options.trust_domain);
    let all_enrolled = endpoints.clone();
    endpoints.retain(|_, e| e.node != node);
    let peer_authentications = objects
        .iter()
        .filter_map(|o| match o {
            Object::PeerAuthentication(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    NodeConfig {
        workloads: selection.enrolled,
        skipped: selection.skipped,
        endpoints,
        services: services(objects, options, &all_enrolled),
        peer_authentications,
    }
}

/// Every Service with a cluster IP and the endpoints of its ports: from its EndpointSlices,
/// or, where it has none (a standalone directory has no endpoint controller), from the pods
/// its selector picks, as Kubernetes' endpoint controller would.
fn services(
    objects: &[Object],
    options: &Options,
    enrolled: &BTreeMap<Ipv4Addr, Endpoint>,
) -> Vec<ServiceConfig> {
    let pods: Vec<&Pod> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Pod(p) => Some(p),
            _ => None,
        })
        .collect();
    let pod_by_ip: BTreeMap<Ipv4Addr, &Pod> = pods.iter().filter_map(|p| Some((p.ip?, *p))).collect();
    let identity = |ip: &Ipv4Addr| enrolled.get(ip).map(|e| e.identity.clone());
    let mut out = Vec::new();
    for svc in objects.iter().filter_map(|o| match o {
        Object::Service(s) => Some(s),
        _ => None,
    }) {
        let Some(vip) = svc.cluster_ip else { continue };
        let slices: Vec<_> = objects
            .iter()
            .filter_map(|o| match o {
                Object::EndpointSlice(e)
                    if e.meta.namespace == svc.meta.namespace
                        && e.service.as_deref() == Some(&svc.meta.name) =>
                {
                    Some(e)
                }
                _ => None,
            })
            .collect();
        let ports = svc
            .ports
            .iter()
            .map(|port| {
                let mut eps = Vec::new();
                if !slices.is_empty() {
                    for slice in &slices {
                        let Some(sp) = slice.ports.iter().find(|p| p.name == port.name) else {
                            continue;
                        };
                        for e in slice.endpoints.iter().filter(|e| e.ready) {
                            for ip in &e.addresses {
                                eps.push(ServiceEndpoint {
                                    ip: *ip,
                                    port: sp.port,
                                    pod: e.pod.clone().or_else(|| pod_by_ip.get(ip).map(|p| pod_key(p))),
                                    identity: identity(ip),
                                });
                            }
                        }
                    }
                } else if let Some(selector) = &svc.selector {
                    let target = match &port.target_port {
                        None => Some(port.port),
                        Some(IntOrString::Int(p)) => Some(*p),
                        // Named container ports are not in Trellis' pod model: without an
                        // EndpointSlice the port is unknown, so no endpoint is invented.
                        Some(IntOrString::String(_)) => None,
                    };
                    for pod in pods.iter().filter(|p| {
                        p.namespace == svc.meta.namespace
                            && !selector.is_empty()
                            && selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
                    }) {
                        if let (Some(ip), Some(port)) = (pod.ip, target) {
                            eps.push(ServiceEndpoint {
                                ip,
                                port,
                                pod: Some(pod_key(pod)),
                                identity: identity(&ip),
                            });
                        }
                    }
                }
                eps.sort_by_key(|e| (e.ip, e.port));
                eps.dedup();
                ServicePortConfig {
                    name: port.name.clone(),
                    port: port.port,
                    protocol: port.protocol.clone(),
                    app_protocol: port.app_protocol.clone(),
                    endpoints: eps,
                }
            })
            .collect();
        out.push(ServiceConfig {
            name: svc.meta.key(),
            hostname: format!(
                "{}.{}.svc.{}",
                svc.meta.name, svc.meta.namespace, options.cluster_domain
            ),
            vip,
            ports,
            visible_to: export_to(svc),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn pod_key(p: &Pod) -> String {
    format!("{}/{}", p.namespace, p.name)
}

/// Istio's `exportTo` on a Service: `*` everyone (the default), `.` its own namespace, `~`
/// nobody, or namespace names.
fn export_to(svc: &Service) -> BTreeSet<String> {
    let Some(value) = svc.meta.annotations.get(EXPORT_TO_ANNOTATION) else {
        return ["*".to_string()].into();
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "~")
        .map(|v| {
            if v == "." {
                svc.meta.namespace.clone()
            } else {
                v.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(yaml: &str) -> Vec<Object> {
        crate::objects::parse_documents(std::path::Path::new("test.yaml"), yaml).unwrap()
    }

    const CLUSTER: &str = r#"
kind: Namespace
metadata: {name: shop, labels: {trellis.dev/mesh: enabled}}
---
kind: Node
metadata: {name: n2}
status: {addresses: [{type: InternalIP, address: 198.18.0.2}]}
---
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}, annotations: {trellis.dev/netns: web-1}}
spec: {nodeName: n1}
status: {podIP: 10.1.1.2}
---
kind: Pod
metadata: {name: web-2, namespace: shop, labels: {app: web}, annotations: {trellis.dev/netns: web-2}}
spec: {nodeName: n2}
status: {podIP: 10.2.1.2}
---
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: admin, port: 9000, targetPort: admin}]
---
kind: Service
metadata: {name: db, namespace: shop, annotations: {networking.istio.io/exportTo: "., billing"}}
spec: {clusterIP: 10.96.0.11, ports: [{name: pg, port: 5432}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: shop, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: pg, port: 5433}]
endpoints: [{addresses: [10.9.9.9]}, {addresses: [10.9.9.8], conditions: {ready: false}}]
"#;

    #[test]
    fn a_node_gets_its_workloads_and_the_rest_as_endpoints() {
        let c = compile(&objects(CLUSTER), "n1", &Options::default());
        assert_eq!(c.workloads.len(), 1);
        assert_eq!(c.workloads[0].key(), "shop/web-1");
        let remote: Vec<_> = c.endpoints.keys().collect();
        assert_eq!(remote, [&Ipv4Addr::new(10, 2, 1, 2)]);
        assert_eq!(
            c.endpoints[&Ipv4Addr::new(10, 2, 1, 2)].node_ip,
            Some(Ipv4Addr::new(198, 18, 0, 2))
        );
    }

    #[test]
    fn services_resolve_selectors_slices_and_export_to() {
        let c = compile(&objects(CLUSTER), "n1", &Options::default());
        let web = c.services.iter().find(|s| s.name == "shop/web").unwrap();
        assert_eq!(web.hostname, "web.shop.svc.cluster.local");
        let http = &web.ports[0];
        let ips: Vec<(Ipv4Addr, u16)> = http.endpoints.iter().map(|e| (e.ip, e.port)).collect();
        assert_eq!(
            ips,
            [
                (Ipv4Addr::new(10, 1, 1, 2), 8080),
                (Ipv4Addr::new(10, 2, 1, 2), 8080)
            ]
        );
        assert_eq!(
            http.endpoints[1]
                .identity
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("spiffe://cluster.local/ns/shop/sa/default")
        );
        assert!(
            web.ports[1].endpoints.is_empty(),
            "named target port without a slice: no guess"
        );
        assert_eq!(web.visible_to, BTreeSet::from(["*".to_string()]));

        let db = c.services.iter().find(|s| s.name == "shop/db").unwrap();
        let ips: Vec<(Ipv4Addr, u16)> = db.ports[0].endpoints.iter().map(|e| (e.ip, e.port)).collect();
        assert_eq!(
            ips,
            [(Ipv4Addr::new(10, 9, 9, 9), 5433)],
            "only ready slice endpoints"
        );
        assert_eq!(
            db.visible_to,
            BTreeSet::from(["billing".to_string(), "shop".to_string()])
        );
        assert!(db.is_visible_to("shop") && db.is_visible_to("billing"));
        assert!(
            !db.is_visible_to("shop2"),
            "exportTo names namespaces, not prefixes"
        );
        assert!(web.is_visible_to("anyone"));
    }

    #[test]
    fn sections_round_trip_and_diff() {
        let c = compile(&objects(CLUSTER), "n1", &Options::default());
        let mut copy = NodeConfig::default();
        for s in c.changed_sections(None) {
            copy.set_section(s, c.section(s).unwrap().to_string().as_bytes())
                .unwrap();
        }
        assert_eq!(copy, c);
        let mut next = c.clone();
        next.services.pop();
        assert_eq!(next.changed_sections(Some(&c)), ["services"]);
        let err = copy
            .set_section("workloads", br#"[{"namespace": 1}]"#)
            .unwrap_err();
        assert!(
            err.starts_with("section workloads: [0].namespace: invalid type"),
            "{err}"
        );
        assert!(copy
            .set_section("routes", b"[]")
            .unwrap_err()
            .contains("unknown section"));
    }
}
