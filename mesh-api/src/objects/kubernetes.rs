//! Kubernetes core kinds, reduced to what Trellis uses: Namespace, Pod, Node, Service,
//! EndpointSlice, ServiceAccount. Unknown fields are ignored here (these objects carry many
//! fields that do not concern a mesh); the fields read are checked and errors name them.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{meta, typed, Doc, Ignored, Meta, Object};

/// Pod annotation naming its network namespace: a name under `/run/netns` or an absolute
/// path (`/proc/<pid>/ns/net`). For the standalone mode only, where the directory's author
/// is the node's operator: the Kubernetes source drops it, since a pod's owner writes it and
/// the node would open what it names. There the node finds a pod's namespace itself (the CNI
/// plugin, or the kubelet's cgroups).
pub const NETNS_ANNOTATION: &str = "trellis.dev/netns";

/// The EndpointSlice label naming the Service it belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    /// `metadata.uid`: what the container runtime (CNI) and the kubelet's cgroups name the
    /// pod by.
    pub uid: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub node_name: Option<String>,
    pub host_network: bool,
    pub ip: Option<Ipv4Addr>,
    pub netns: Option<PathBuf>,
    /// `status.phase` (`Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`), when known.
    pub phase: Option<String>,
}

/// A Kubernetes Node: where its pods' traffic is tunnelled to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub name: String,
    /// `status.addresses[type=InternalIP]`.
    pub internal_ip: Option<Ipv4Addr>,
}

/// A Service: a virtual IP and ports in front of the pods its selector picks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    pub meta: Meta,
    /// `None` for headless Services (`clusterIP: None`) and before one is allocated.
    pub cluster_ip: Option<Ipv4Addr>,
    pub ports: Vec<ServicePort>,
    /// `None`: endpoints are managed by hand (EndpointSlices without a selector).
    pub selector: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default)]
    pub name: String,
    pub port: u16,
    /// A number, or the name of a container port (kept as written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(u16),
    String(String),
}

fn tcp() -> String {
    "TCP".into()
}

/// An EndpointSlice: the addresses behind (part of) a Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointSlice {
    pub meta: Meta,
    /// From the `kubernetes.io/service-name` label.
    pub service: Option<String>,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<SliceEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlicePort {
    #[serde(default)]
    pub name: String,
    pub port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SliceEndpoint {
    pub addresses: Vec<Ipv4Addr>,
    /// `conditions.ready`; Kubernetes says an absent value means ready.
    pub ready: bool,
    pub node_name: Option<String>,
    /// `targetRef` when it names a Pod: `namespace/name`.
    pub pod: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceAccount {
    pub meta: Meta,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    service_account_name: Option<String>,
    node_name: Option<String>,
    #[serde(default)]
    host_network: bool,
}

#[derive(Deserialize, Default)]
struct PodStatus {
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
    phase: Option<String>,
}

#[derive(Deserialize, Default)]
struct NodeStatus {
    #[serde(default)]
    addresses: Vec<NodeAddress>,
}

#[derive(Deserialize)]
struct NodeAddress {
    #[serde(rename = "type")]
    kind: String,
    address: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ServiceSpec {
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(default)]
    ports: Vec<ServicePort>,
    selector: Option<BTreeMap<String, String>>,
}

/// EndpointSlices keep their fields at the top level, not under `spec`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SliceDoc {
    #[serde(default)]
    metadata: super::Metadata,
    address_type: String,
    #[serde(default)]
    ports: Option<Vec<SlicePort>>,
    #[serde(default)]
    endpoints: Option<Vec<RawEndpoint>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEndpoint {
    addresses: Vec<String>,
    #[serde(default)]
    conditions: Conditions,
    node_name: Option<String>,
    target_ref: Option<TargetRef>,
}

#[derive(Deserialize, Default)]
struct Conditions {
    ready: Option<bool>,
}

#[derive(Deserialize)]
struct TargetRef {
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

fn ipv4(field: &str, value: &str) -> Result<Ipv4Addr, String> {
    value
        .parse()
        .map_err(|_| format!("{field} {value:?} is not an IPv4 address (Trellis captures IPv4 only)"))
}

/// Parses a core kind; `None` for kinds that are not core kinds Trellis reads.
pub(super) fn parse(kind: &str, value: serde_yaml_ng::Value, order: usize) -> Option<Result<Object, String>> {
    Some(match kind {
        "Namespace" => typed::<Doc<Ignored, Ignored>>(value).map(|doc| {
            Object::Namespace(Namespace {
                name: doc.metadata.name.unwrap_or_default(),
                labels: doc.metadata.labels,
            })
        }),
        "Pod" => typed::<Doc<PodSpec, PodStatus>>(value).and_then(pod),
        "Node" => typed::<Doc<Ignored, NodeStatus>>(value).and_then(|doc| {
            let internal_ip = doc
                .status
                .addresses
                .iter()
                .find(|a| a.kind == "InternalIP")
                .map(|a| ipv4("status.addresses InternalIP", &a.address))
                .transpose()?;
            Ok(Object::Node(Node {
                name: doc.metadata.name.unwrap_or_default(),
                internal_ip,
            }))
        }),
        "Service" => typed::<Doc<ServiceSpec, Ignored>>(value).and_then(|doc| {
            let cluster_ip = match doc.spec.cluster_ip.as_deref() {
                None | Some("" | "None") => None,
                Some(ip) => Some(ipv4("spec.clusterIP", ip)?),
            };
            Ok(Object::Service(Service {
                meta: meta(doc.metadata, order),
                cluster_ip,
                ports: doc.spec.ports,
                selector: doc.spec.selector,
            }))
        }),
        "EndpointSlice" => typed::<SliceDoc>(value).and_then(|doc| endpoint_slice(doc, order)),
        "ServiceAccount" => typed::<Doc<Ignored, Ignored>>(value).map(|doc| {
            Object::ServiceAccount(ServiceAccount {
                meta: meta(doc.metadata, order),
            })
        }),
        _ => return None,
    })
}

fn pod(doc: Doc<PodSpec, PodStatus>) -> Result<Object, String> {
    let ip = doc
        .status
        .pod_ip
        .map(|ip| ipv4("status.podIP", &ip))
        .transpose()?;
    let meta = doc.metadata;
    let netns = meta.annotations.get(NETNS_ANNOTATION).map(|v| netns_path(v));
    Ok(Object::Pod(Pod {
        namespace: meta.namespace.unwrap_or_else(|| "default".into()),
        name: meta.name.unwrap_or_default(),
        uid: meta.uid,
        labels: meta.labels,
        service_account: doc.spec.service_account_name.unwrap_or_else(|| "default".into()),
        node_name: doc.spec.node_name,
        host_network: doc.spec.host_network,
        ip,
        netns,
        phase: doc.status.phase,
    }))
}

fn endpoint_slice(doc: SliceDoc, order: usize) -> Result<Object, String> {
    let meta = meta(doc.metadata, order);
    let service = meta.labels.get(SERVICE_NAME_LABEL).cloned();
    let ports = doc.ports.unwrap_or_default();
    if doc.address_type != "IPv4" {
        // Kept (so the Service is known to have endpoints) but without addresses.
        return Ok(Object::EndpointSlice(EndpointSlice {
            meta,
            service,
            ports,
            endpoints: Vec::new(),
        }));
    }
    let mut endpoints = Vec::new();
    for (i, e) in doc.endpoints.unwrap_or_default().into_iter().enumerate() {
        let addresses = e
            .addresses
            .iter()
            .map(|a| ipv4(&format!("endpoints[{i}].addresses"), a))
            .collect::<Result<_, _>>()?;
        let pod = e.target_ref.and_then(|t| match (t.kind.as_deref(), t.name) {
            (Some("Pod"), Some(name)) => Some(format!(
                "{}/{name}",
                t.namespace.unwrap_or_else(|| meta.namespace.clone())
            )),
            _ => None,
        });
        endpoints.push(SliceEndpoint {
            addresses,
            ready: e.conditions.ready.unwrap_or(true),
            node_name: e.node_name,
            pod,
        });
    }
    Ok(Object::EndpointSlice(EndpointSlice {
        meta,
        service,
        ports,
        endpoints,
    }))
}

fn netns_path(value: &str) -> PathBuf {
    if value.starts_with('/') {
        PathBuf::from(value)
    } else {
        Path::new("/run/netns").join(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::parse_documents;

    #[test]
    fn services_and_endpoint_slices() {
        let objs = parse_documents(
            Path::new("svc.yaml"),
            r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, appProtocol: http}, {port: 9090, targetPort: metrics}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.1.1.2]
  nodeName: n1
  targetRef: {kind: Pod, name: web-1}
- addresses: [10.1.2.2]
  conditions: {ready: false}
"#,
        )
        .unwrap();
        let Object::Service(svc) = &objs[0] else { panic!() };
        assert_eq!(svc.cluster_ip, Some(Ipv4Addr::new(10, 96, 0, 10)));
        assert_eq!(svc.ports[0].target_port, Some(IntOrString::Int(8080)));
        assert_eq!(
            svc.ports[1].target_port,
            Some(IntOrString::String("metrics".into()))
        );
        assert_eq!(svc.ports[1].protocol, "TCP");
        let Object::EndpointSlice(slice) = &objs[1] else {
            panic!()
        };
        assert_eq!(slice.service.as_deref(), Some("web"));
        assert_eq!(slice.endpoints[0].pod.as_deref(), Some("shop/web-1"));
        assert!(slice.endpoints[0].ready && !slice.endpoints[1].ready);
    }

    #[test]
    fn bad_core_fields_are_named() {
        let err = parse_documents(
            Path::new("s.yaml"),
            "kind: Service\nmetadata: {name: web}\nspec: {clusterIP: 10.96.0.300}\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "s.yaml document 1 (Service web): spec.clusterIP \"10.96.0.300\" is not an IPv4 address (Trellis captures IPv4 only)"
        );
        let err = parse_documents(
            Path::new("s.yaml"),
            "kind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 70000}]}\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("spec.ports[0].port"), "{err}");
    }
}
