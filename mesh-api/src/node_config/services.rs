//! The service registry, as Istio builds it: Kubernetes Services with their EndpointSlices
//! (or selected pods), and ServiceEntries
//! (<https://istio.io/latest/docs/reference/config/networking/service-entry/>).
//! Visibility is filled in later ([`super::visibility`]); here `visible_to` is the object's
//! own `exportTo`.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use super::{
    visibility::export_to, Options, ServiceConfig, ServiceEndpoint, ServiceLocation, ServicePortConfig,
    ServiceResolution, ServiceSource, EXPORT_TO_ANNOTATION,
};
use crate::{
    istio::{
        networking::{
            service_entry::{Location, Resolution, ServicePort as EntryPort},
            ServiceEntrySpec,
        },
        Resource,
    },
    objects::{IntOrString, Object, Pod, Service},
    selection::Endpoint,
};

/// What the registry looks pods and identities up in.
pub(super) struct Registry<'a> {
    pods: Vec<&'a Pod>,
    pod_by_ip: BTreeMap<Ipv4Addr, &'a Pod>,
    enrolled: &'a BTreeMap<Ipv4Addr, Endpoint>,
}

impl<'a> Registry<'a> {
    pub(super) fn new(objects: &'a [Object], enrolled: &'a BTreeMap<Ipv4Addr, Endpoint>) -> Self {
        // Completed pods are no endpoints, and their stale addresses must not name the pod
        // that has the address now.
        let pods: Vec<&Pod> = objects
            .iter()
            .filter_map(|o| match o {
                Object::Pod(p) if !crate::selection::is_completed(p) => Some(p),
                _ => None,
            })
            .collect();
        let pod_by_ip = pods.iter().filter_map(|p| Some((p.ip?, *p))).collect();
        Self {
            pods,
            pod_by_ip,
            enrolled,
        }
    }

    /// An endpoint at `ip:port`, with what is known of the pod behind it.
    fn endpoint(&self, ip: Ipv4Addr, port: u16, pod: Option<String>) -> ServiceEndpoint {
        let known = self.pod_by_ip.get(&ip);
        ServiceEndpoint {
            ip,
            port,
            pod: pod.or_else(|| known.map(|p| pod_key(p))),
            identity: self.enrolled.get(&ip).map(|e| e.identity.clone()),
            labels: known.map(|p| p.labels.clone()).unwrap_or_default(),
        }
    }

    /// Pods of `namespace` whose labels include all of `selector` (never all pods for an
    /// empty selector, as Kubernetes and Istio).
    fn selected<'s>(
        &'s self,
        namespace: &'s str,
        selector: &'s BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a Pod> + 's {
        self.pods.iter().copied().filter(move |p| {
            p.namespace == namespace
                && !selector.is_empty()
                && selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
        })
    }
}

/// Every Service with a cluster IP and the endpoints of its ports: from its EndpointSlices,
/// or, where it has none (a standalone directory has no endpoint controller), from the pods
/// its selector picks, as Kubernetes' endpoint controller would.
pub(super) fn kubernetes(objects: &[Object], options: &Options, registry: &Registry) -> Vec<ServiceConfig> {
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
                                eps.push(registry.endpoint(*ip, sp.port, e.pod.clone()));
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
                    for pod in registry.selected(&svc.meta.namespace, selector) {
                        if let (Some(ip), Some(port)) = (pod.ip, target) {
                            eps.push(registry.endpoint(ip, port, Some(pod_key(pod))));
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
            vip_prefix_len: 32,
            ports,
            visible_to: service_export_to(svc),
            source: ServiceSource::Service,
            location: ServiceLocation::MeshInternal,
            resolution: ServiceResolution::Static,
        });
    }
    out
}

/// A Service's `networking.istio.io/exportTo` annotation (comma separated).
fn service_export_to(svc: &Service) -> BTreeSet<String> {
    let values: Vec<&str> = svc
        .meta
        .annotations
        .get(EXPORT_TO_ANNOTATION)
        .map(|v| v.split(',').map(str::trim).filter(|v| !v.is_empty()).collect())
        .unwrap_or_default();
    export_to(&values, &svc.meta.namespace)
}

/// Every ServiceEntry as services: one per host and address, each with all the entry's
/// ports (Istio gives every host of an entry every address).
///
/// Entries without `addresses` are skipped, without a diagnostic: Istio reaches them by
/// Host header or SNI on a port-wide listener, or by an address its DNS proxy allocates,
/// and a Trellis service is keyed by its virtual IP. Their hosts still get routes.
/// IPv6 addresses are skipped too (Trellis captures IPv4 only).
pub(super) fn service_entries(objects: &[Object], registry: &Registry) -> Vec<ServiceConfig> {
    let mut out = Vec::new();
    for entry in objects.iter().filter_map(|o| match o {
        Object::ServiceEntry(e) => Some(e),
        _ => None,
    }) {
        let spec = &entry.spec;
        let addresses: Vec<(Ipv4Addr, u8)> = spec.addresses.iter().filter_map(|a| ipv4_prefix(a)).collect();
        if addresses.is_empty() {
            continue;
        }
        let ports: Vec<ServicePortConfig> = spec
            .ports
            .iter()
            .map(|p| entry_port(entry, p, registry))
            .collect();
        let export: Vec<&str> = spec.export_to.iter().map(String::as_str).collect();
        let visible_to = export_to(&export, &entry.meta.namespace);
        let location = match spec.location.unwrap_or_default() {
            Location::MeshInternal => ServiceLocation::MeshInternal,
            Location::MeshExternal => ServiceLocation::MeshExternal,
        };
        let resolution = match spec.resolution.unwrap_or_default() {
            Resolution::None => ServiceResolution::Passthrough,
            Resolution::Static => ServiceResolution::Static,
            Resolution::Dns | Resolution::DnsRoundRobin | Resolution::DynamicDns => ServiceResolution::Dns,
        };
        for host in &spec.hosts {
            for (vip, prefix) in &addresses {
                out.push(ServiceConfig {
                    name: entry.key(),
                    hostname: host.clone(),
                    vip: *vip,
                    vip_prefix_len: *prefix,
                    ports: ports.clone(),
                    visible_to: visible_to.clone(),
                    source: ServiceSource::ServiceEntry,
                    location,
                    resolution,
                });
            }
        }
    }
    out
}

/// `10.0.0.1` or `10.0.0.0/8`, the network address and prefix length.
fn ipv4_prefix(address: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = match address.split_once('/') {
        Some((ip, len)) => (ip, len.parse::<u8>().ok().filter(|l| *l <= 32)?),
        None => (address, 32),
    };
    let ip: Ipv4Addr = ip.parse().ok()?;
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    Some((Ipv4Addr::from(u32::from(ip) & mask), len))
}

/// One port of a ServiceEntry and its endpoints, by resolution:
/// - `STATIC`: the `endpoints` (WorkloadEntry-shaped) with an IPv4 address, or the pods its
///   `workloadSelector` picks;
/// - `DNS`/`DNS_ROUND_ROBIN`: endpoints given as IPv4 literals are kept; host names (and
///   the entry's own hosts when it lists no endpoints) are resolved by the node at
///   connection time, not here, so they are not endpoints;
/// - `NONE`: no endpoints: traffic goes to the address the client dialled.
fn entry_port(
    entry: &Resource<ServiceEntrySpec>,
    port: &EntryPort,
    registry: &Registry,
) -> ServicePortConfig {
    let spec = &entry.spec;
    let number = u16::try_from(port.number).unwrap_or_default();
    // Istio: an endpoint's port is its `ports[<port name>]`, else the port's targetPort,
    // else the port's number.
    let default_target = port
        .target_port
        .filter(|t| *t != 0)
        .and_then(|t| u16::try_from(t).ok())
        .unwrap_or(number);
    let mut endpoints = Vec::new();
    if spec.resolution.unwrap_or_default() != Resolution::None {
        for we in spec.endpoints.iter().flatten() {
            // Unix sockets, host names and IPv6 are not IPv4 endpoints.
            let Some(ip) = we.address.as_deref().and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let target = we
                .ports
                .get(&port.name)
                .and_then(|p| u16::try_from(*p).ok())
                .unwrap_or(default_target);
            let mut endpoint = registry.endpoint(ip, target, None);
            endpoint.labels = we.labels.clone();
            endpoints.push(endpoint);
        }
        // Istio selects workloads for a ServiceEntry only when it is MESH_INTERNAL (the
        // reference: "applicable only for MESH_INTERNAL services").
        if let Some(selector) = &spec.workload_selector {
            if spec.location == Some(Location::MeshInternal) {
                for pod in registry.selected(&entry.meta.namespace, &selector.labels) {
                    if let Some(ip) = pod.ip {
                        endpoints.push(registry.endpoint(ip, default_target, Some(pod_key(pod))));
                    }
                }
            }
        }
    }
    endpoints.sort_by_key(|e| (e.ip, e.port));
    endpoints.dedup_by_key(|e| (e.ip, e.port));
    ServicePortConfig {
        name: port.name.clone(),
        port: number,
        // Istio's ServiceEntry protocols are application protocols over TCP (it does not
        // proxy UDP).
        protocol: "TCP".into(),
        app_protocol: port.protocol.as_ref().map(|p| p.to_ascii_lowercase()),
        endpoints,
    }
}

fn pod_key(p: &Pod) -> String {
    format!("{}/{}", p.namespace, p.name)
}

#[cfg(test)]
pub(super) mod tests {
    use test_case::test_case;

    use super::*;
    use crate::node_config::{compile, NodeConfig};

    pub(crate) const MESH: &str = include_str!("testdata/mesh.yaml");

    /// The test cluster plus `extra`, compiled for node n1.
    pub(crate) fn compile_n1(extra: &str) -> NodeConfig {
        let text = format!("{MESH}---\n{extra}");
        let objects = crate::objects::parse_documents(std::path::Path::new("t.yaml"), &text).unwrap();
        compile(&objects, "n1", &Options::default())
    }

    /// One line per service: what a reader checks.
    pub(crate) fn rows(config: &NodeConfig) -> Vec<String> {
        config
            .services
            .iter()
            .map(|s| {
                let ports: Vec<String> = s
                    .ports
                    .iter()
                    .map(|p| {
                        let eps: Vec<String> = p
                            .endpoints
                            .iter()
                            .map(|e| {
                                let mesh = if e.identity.is_some() { "+id" } else { "" };
                                format!("{}:{}{mesh}", e.ip, e.port)
                            })
                            .collect();
                        let app = p.app_protocol.as_deref().unwrap_or("-");
                        format!("{}:{}/{app}=[{}]", p.name, p.port, eps.join(" "))
                    })
                    .collect();
                let visible: Vec<&str> = s.visible_to.iter().map(String::as_str).collect();
                format!(
                    "{} {} {}/{} {:?} {:?} {:?} {} visible={}",
                    s.name,
                    s.hostname,
                    s.vip,
                    s.vip_prefix_len,
                    s.source,
                    s.location,
                    s.resolution,
                    ports.join(","),
                    visible.join(",")
                )
            })
            .collect()
    }

    const SE: &str =
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se, namespace: shop}\n";

    #[test]
    fn kubernetes_services_carry_pod_labels() {
        let c = compile_n1("");
        let reviews = c.services.iter().find(|s| s.name == "shop/reviews").unwrap();
        let labels: Vec<&str> = reviews.ports[0]
            .endpoints
            .iter()
            .map(|e| e.labels["version"].as_str())
            .collect();
        assert_eq!(labels, ["v1", "v2"]);
        assert_eq!(reviews.source, ServiceSource::Service);
    }

    // One row per rule of the ServiceEntry reference: the entry, the services it gives.
    #[test_case(
        "spec: {hosts: [vm.shop.internal], addresses: [240.0.0.10], location: MESH_INTERNAL, resolution: STATIC, ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}], endpoints: [{address: 10.5.0.1, labels: {version: v1}}, {address: 10.5.0.2, ports: {http: 9090}}, {address: 10.2.1.2}]}",
        &["shop/se vm.shop.internal 240.0.0.10/32 ServiceEntry MeshInternal Static http:80/http=[10.2.1.2:8080+id 10.5.0.1:8080 10.5.0.2:9090] visible=*"]
        ; "static endpoints: targetPort, per-endpoint port, enrolled pod keeps its identity")]
    #[test_case(
        "spec: {hosts: [reviews.mesh], addresses: [240.0.0.11], location: MESH_INTERNAL, resolution: STATIC, workloadSelector: {labels: {app: reviews}}, ports: [{number: 9080, name: http}]}",
        &["shop/se reviews.mesh 240.0.0.11/32 ServiceEntry MeshInternal Static http:9080/-=[10.2.1.2:9080+id 10.2.1.3:9080+id] visible=*"]
        ; "workload selector picks pods of its namespace")]
    #[test_case(
        "spec: {hosts: [reviews.mesh], addresses: [240.0.0.11], resolution: STATIC, workloadSelector: {labels: {app: reviews}}, ports: [{number: 9080, name: http}]}",
        &["shop/se reviews.mesh 240.0.0.11/32 ServiceEntry MeshExternal Static http:9080/-=[] visible=*"]
        ; "workload selector only for mesh internal")]
    #[test_case(
        "spec: {hosts: [db.corp], addresses: [192.168.7.0/16], ports: [{number: 5432, name: pg, protocol: TCP}], resolution: NONE}",
        &["shop/se db.corp 192.168.0.0/16 ServiceEntry MeshExternal Passthrough pg:5432/tcp=[] visible=*"]
        ; "none passes a CIDR through")]
    #[test_case(
        "spec: {hosts: [api.example.com], addresses: [240.0.0.12], ports: [{number: 443, name: https, protocol: TLS}], resolution: DNS, endpoints: [{address: 203.0.113.5}, {address: eu.api.example.com}]}",
        &["shop/se api.example.com 240.0.0.12/32 ServiceEntry MeshExternal Dns https:443/tls=[203.0.113.5:443] visible=*"]
        ; "dns keeps only address literals")]
    #[test_case(
        "spec: {hosts: [a.example.com, b.example.com], addresses: [240.0.0.13, 240.0.0.14], ports: [{number: 80, name: http}], resolution: NONE}",
        &[
            "shop/se a.example.com 240.0.0.13/32 ServiceEntry MeshExternal Passthrough http:80/-=[] visible=*",
            "shop/se a.example.com 240.0.0.14/32 ServiceEntry MeshExternal Passthrough http:80/-=[] visible=*",
            "shop/se b.example.com 240.0.0.13/32 ServiceEntry MeshExternal Passthrough http:80/-=[] visible=*",
            "shop/se b.example.com 240.0.0.14/32 ServiceEntry MeshExternal Passthrough http:80/-=[] visible=*",
        ]
        ; "every host gets every address")]
    #[test_case(
        "spec: {hosts: [api.example.com], ports: [{number: 443, name: https, protocol: TLS}], resolution: DNS}",
        &[]
        ; "no address no service")]
    fn service_entries(spec: &str, expected: &[&str]) {
        let found: Vec<String> = rows(&compile_n1(&format!("{SE}{spec}")))
            .into_iter()
            .filter(|r| r.starts_with("shop/se "))
            .collect();
        assert_eq!(found, expected);
    }

    #[test_case("10.0.0.1", Some((Ipv4Addr::new(10, 0, 0, 1), 32)) ; "address")]
    #[test_case("10.1.2.3/8", Some((Ipv4Addr::new(10, 0, 0, 0), 8)) ; "cidr is its network")]
    #[test_case("0.0.0.0/0", Some((Ipv4Addr::new(0, 0, 0, 0), 0)) ; "everything")]
    #[test_case("2001:db8::1", None ; "ipv6 skipped")]
    #[test_case("10.0.0.0/33", None ; "bad prefix")]
    fn addresses(text: &str, expected: Option<(Ipv4Addr, u8)>) {
        assert_eq!(ipv4_prefix(text), expected);
    }
}
