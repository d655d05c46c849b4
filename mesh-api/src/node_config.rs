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
    objects::Object,
    peer_authentication::PeerAuthentication,
    selection::{self, Endpoint, Skipped, Workload},
};

mod destination_rules;
mod routes;
mod services;
mod visibility;

pub use self::routes::{
    HttpMatch, HttpRouteConfig, L4Match, L4RouteConfig, RetryConfig, RouteConfig, StringMatcher,
    WeightedDestination,
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
    /// Services with a virtual IP (Kubernetes Services with a cluster IP, ServiceEntries
    /// with addresses) that some workload of this node may use, and their endpoints.
    pub services: Vec<ServiceConfig>,
    /// The VirtualService routes of every host, per namespace of this node's workloads (not
    /// enforced yet: for `mesh-ctl proxy-config` and the L7 proxy to come).
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Every PeerAuthentication of the mesh (a workload's decision may depend on the mesh-wide
    /// and namespace policies as well as its own).
    pub peer_authentications: Vec<PeerAuthentication>,
    /// The namespaces labelled into the mesh: what the node (and the CNI plugin, from the copy
    /// the node leaves on disk) decides by for a pod sandbox the config does not list yet.
    #[serde(default)]
    pub enrolled_namespaces: BTreeSet<String>,
}

/// The sections of a [`NodeConfig`], as named on the wire and in `mesh-ctl proxy-config`.
pub const SECTIONS: [&str; 7] = [
    "workloads",
    "skipped",
    "endpoints",
    "services",
    "peer_authentications",
    "routes",
    "enrolled_namespaces",
];

impl NodeConfig {
    /// One section as JSON.
    pub fn section(&self, name: &str) -> Option<serde_json::Value> {
        let v = match name {
            "workloads" => serde_json::to_value(&self.workloads),
            "skipped" => serde_json::to_value(&self.skipped),
            "endpoints" => serde_json::to_value(&self.endpoints),
            "services" => serde_json::to_value(&self.services),
            "routes" => serde_json::to_value(&self.routes),
            "peer_authentications" => serde_json::to_value(&self.peer_authentications),
            "enrolled_namespaces" => serde_json::to_value(&self.enrolled_namespaces),
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
            "routes" => self.routes = parse(name, json)?,
            "peer_authentications" => self.peer_authentications = parse(name, json)?,
            "enrolled_namespaces" => self.enrolled_namespaces = parse(name, json)?,
            other => {
                return Err(format!(
                    "unknown section {other:?}: is this node older than the controller?"
                ))
            }
        }
        Ok(())
    }

    /// What a node checks before applying a config: things the compiler never produces but a
    /// broken or foreign controller could. Two workloads with one address are not refused
    /// here: one bad workload must not cost the node the whole version, so enrollment skips
    /// both and applies the rest (the compiler already leaves such pods out).
    pub fn validate(&self) -> Result<(), String> {
        for w in &self.workloads {
            if let Some(netns) = w.netns.as_ref().filter(|p| !p.is_absolute()) {
                return Err(format!(
                    "workloads: {}: netns {} is not an absolute path",
                    w.key(),
                    netns.display()
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

/// A service as the node routes to it: its virtual IP and the endpoints behind each port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// `namespace/name` of the Service or ServiceEntry. A ServiceEntry with several hosts
    /// or addresses gives several services of one name: `(name, hostname, vip)` is unique.
    pub name: String,
    /// `name.namespace.svc.<cluster domain>`, or the ServiceEntry host (may be a wildcard,
    /// `*.example.com`).
    pub hostname: String,
    /// The virtual IP; with `vip_prefix_len` < 32 the network of a ServiceEntry CIDR
    /// address (every address in it is the service).
    pub vip: Ipv4Addr,
    /// 32 for a single address.
    #[serde(default = "full_prefix")]
    pub vip_prefix_len: u8,
    pub ports: Vec<ServicePortConfig>,
    /// Namespaces whose workloads may use it; `*` means all.
    pub visible_to: BTreeSet<String>,
    /// Where the service comes from.
    #[serde(default)]
    pub source: ServiceSource,
    /// Whether its endpoints are in the mesh (Istio's ServiceEntry `location`).
    #[serde(default)]
    pub location: ServiceLocation,
    /// How the node finds the endpoints.
    #[serde(default)]
    pub resolution: ServiceResolution,
}

fn full_prefix() -> u8 {
    32
}

/// The kind of object a [`ServiceConfig`] was made from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceSource {
    #[default]
    Service,
    ServiceEntry,
}

/// Istio's `ServiceEntry.Location`; Kubernetes Services are inside the mesh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceLocation {
    #[default]
    MeshInternal,
    MeshExternal,
}

/// How the endpoints of a service are found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceResolution {
    /// The `endpoints` listed (Kubernetes Services; ServiceEntry `STATIC`).
    #[default]
    Static,
    /// No endpoints: the connection goes to the address the client dialled (ServiceEntry
    /// `NONE`).
    Passthrough,
    /// Host names resolved at connection time (ServiceEntry `DNS`, `DNS_ROUND_ROBIN`,
    /// `DYNAMIC_DNS`); `endpoints` holds only the IPv4 literals of the entry.
    Dns,
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
    /// The pod's (or WorkloadEntry's) labels: what DestinationRule subsets select.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
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

/// What the compiler cannot honour in `objects`, for the analysis: VirtualServices that
/// lose a host to an older one, workload-specific Sidecars (Trellis scopes egress per
/// namespace), and pods of the mesh left out because another pod claims their address or
/// network namespace. Pure.
pub fn diagnostics(objects: &[Object], options: &Options) -> Vec<Diagnostic> {
    let mut out = routes::conflicts(objects, options);
    let enrolled = selection::enrolled_namespaces(objects);
    for (pod, clash) in selection::clashes(objects) {
        if enrolled
            .iter()
            .any(|ns| pod.split_once('/').is_some_and(|(p, _)| p == *ns))
        {
            out.push(Diagnostic {
                severity: Severity::Warning,
                object: format!("Pod {pod}"),
                field: clash.field,
                message: format!("left out of the mesh: {}", clash.reason),
            });
        }
    }
    for object in objects {
        if let Object::Sidecar(s) = object {
            if s.spec.workload_selector.is_some() && !s.spec.egress.is_empty() {
                out.push(Diagnostic {
                    severity: Severity::Warning,
                    object: format!("Sidecar {}", s.key()),
                    field: "spec.workloadSelector".into(),
                    message: "Trellis scopes egress per namespace and does not honour Sidecars with a workloadSelector yet: the selected workloads reach what their namespace's Sidecar (or the root namespace's) allows".into(),
                });
            }
        }
    }
    out
}

/// The services of the registry (Kubernetes Services, then ServiceEntries), by name.
fn node_services(
    objects: &[Object],
    options: &Options,
    enrolled: &BTreeMap<Ipv4Addr, Endpoint>,
) -> Vec<ServiceConfig> {
    let registry = services::Registry::new(objects, enrolled);
    let mut out = services::kubernetes(objects, options, &registry);
    out.extend(services::service_entries(objects, &registry));
    out.sort_by(|a, b| (&a.name, &a.hostname, a.vip).cmp(&(&b.name, &b.hostname, b.vip)));
    out
}

/// Compiles the config of `node` from every object of the cluster. Pure.
pub fn compile(objects: &[Object], node: &str, options: &Options) -> NodeConfig {
    let selection = selection::select(objects, node);
    let mut endpoints = selection::endpoints(objects, &options.trust_domain);
    let all_enrolled = endpoints.clone();
    endpoints.retain(|_, e| e.node != node);
    let node_namespaces: BTreeSet<String> = selection.enrolled.iter().map(|w| w.namespace.clone()).collect();
    let sidecars = visibility::Sidecars::new(objects, &options.root_namespace);
    let mut services = node_services(objects, options, &all_enrolled);
    let routes = routes::compile(objects, options, &sidecars, &node_namespaces);
    visibility::restrict(
        &mut services,
        &sidecars,
        &node_namespaces,
        &routes::destination_hosts(&routes),
    );
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
        services,
        routes,
        peer_authentications,
        enrolled_namespaces: selection::enrolled_namespaces(objects)
            .into_iter()
            .map(String::from)
            .collect(),
    }
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
            .set_section("listeners", b"[]")
            .unwrap_err()
            .contains("unknown section"));
    }

    #[test]
    fn services_from_an_older_controller_still_parse() {
        let mut c = NodeConfig::default();
        let old = br#"[{"name": "shop/db", "hostname": "db.shop.svc.cluster.local", "vip": "10.96.0.11",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP", "app_protocol": null,
                       "endpoints": [{"ip": "10.9.9.9", "port": 5433, "pod": null, "identity": null}]}],
            "visible_to": ["*"]}]"#;
        c.set_section("services", old).unwrap();
        let s = &c.services[0];
        assert_eq!(
            (s.vip_prefix_len, s.source, s.location, s.resolution),
            (
                32,
                ServiceSource::Service,
                ServiceLocation::MeshInternal,
                ServiceResolution::Static
            )
        );
        assert!(s.ports[0].endpoints[0].labels.is_empty());
    }

    #[test]
    fn a_clash_skips_the_pods_involved_keeps_the_rest_and_is_reported() {
        let yaml = r#"
kind: Namespace
metadata: {name: shop, labels: {trellis.dev/mesh: enabled}}
---
kind: Pod
metadata: {name: done, namespace: shop, labels: {app: web}, annotations: {trellis.dev/netns: done}}
spec: {nodeName: n1}
status: {podIP: 10.1.1.2, phase: Succeeded}
---
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}, annotations: {trellis.dev/netns: web}}
spec: {nodeName: n1}
status: {podIP: 10.1.1.2, phase: Running}
---
kind: Pod
metadata: {name: a, namespace: shop, labels: {app: db}, annotations: {trellis.dev/netns: a}}
spec: {nodeName: n1}
status: {podIP: 10.1.1.3}
---
kind: Pod
metadata: {name: b, namespace: shop, labels: {app: db}, annotations: {trellis.dev/netns: b}}
spec: {nodeName: n1}
status: {podIP: 10.1.1.3}
---
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.10, selector: {app: web}, ports: [{name: http, port: 80}]}
"#;
        let objs = objects(yaml);
        let c = compile(&objs, "n1", &Options::default());
        let workloads: Vec<String> = c.workloads.iter().map(Workload::key).collect();
        assert_eq!(workloads, ["shop/web"]);
        let skipped: Vec<&str> = c.skipped.iter().map(|s| s.pod.as_str()).collect();
        assert_eq!(
            skipped,
            ["shop/a", "shop/b"],
            "the completed pod is not even skipped"
        );
        assert!(c.validate().is_ok(), "the node accepts it: {:?}", c.validate());
        let web = c.services.iter().find(|s| s.name == "shop/web").unwrap();
        let pods: Vec<Option<&str>> = web.ports[0].endpoints.iter().map(|e| e.pod.as_deref()).collect();
        assert_eq!(pods, [Some("shop/web")], "the completed pod is no endpoint");

        let found: Vec<String> = diagnostics(&objs, &Options::default())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "warning: Pod shop/a status.podIP: left out of the mesh: its address 10.1.1.3 is also claimed by running pod shop/b: none of them is enrolled until only one has it (the mesh cannot tell which one does)",
                "warning: Pod shop/b status.podIP: left out of the mesh: its address 10.1.1.3 is also claimed by running pod shop/a: none of them is enrolled until only one has it (the mesh cannot tell which one does)",
            ]
        );
    }
}
