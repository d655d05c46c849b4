//! The Kubernetes and Istio objects Trellis reads, from a directory of YAML (standalone) —
//! every `.yaml`/`.yml` file, several documents per file. A directory with any invalid
//! document is rejected as a whole (the caller keeps its last good state), and the error
//! names the file, the document, the object and the field.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::istio::{
    networking::{DestinationRuleSpec, GatewaySpec, ServiceEntrySpec, SidecarSpec, VirtualServiceSpec},
    security::{AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec},
    Kind, Resource,
};

pub mod kubernetes;

pub use self::kubernetes::{
    EndpointSlice, IntOrString, Namespace, Node, Pod, Service, ServiceAccount, ServicePort, SliceEndpoint,
    SlicePort, NETNS_ANNOTATION,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    #[error("reading {}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    #[error("{} document {document}{object}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        document: usize,
        object: String,
        message: String,
    },
}

/// The objects Trellis understands. Other kinds are kept by name so they can be reported.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    Pod(Pod),
    Node(Node),
    Service(Service),
    EndpointSlice(EndpointSlice),
    ServiceAccount(ServiceAccount),
    VirtualService(Resource<VirtualServiceSpec>),
    DestinationRule(Resource<DestinationRuleSpec>),
    ServiceEntry(Resource<ServiceEntrySpec>),
    Gateway(Resource<GatewaySpec>),
    Sidecar(Resource<SidecarSpec>),
    PeerAuthentication(Resource<PeerAuthenticationSpec>),
    RequestAuthentication(Resource<RequestAuthenticationSpec>),
    AuthorizationPolicy(Resource<AuthorizationPolicySpec>),
    Other { kind: String, name: String },
}

impl Object {
    /// The kind, as in `kind:`.
    pub fn kind(&self) -> &str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::Pod(_) => "Pod",
            Object::Node(_) => "Node",
            Object::Service(_) => "Service",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::ServiceAccount(_) => "ServiceAccount",
            Object::VirtualService(_) => "VirtualService",
            Object::DestinationRule(_) => "DestinationRule",
            Object::ServiceEntry(_) => "ServiceEntry",
            Object::Gateway(_) => "Gateway",
            Object::Sidecar(_) => "Sidecar",
            Object::PeerAuthentication(_) => "PeerAuthentication",
            Object::RequestAuthentication(_) => "RequestAuthentication",
            Object::AuthorizationPolicy(_) => "AuthorizationPolicy",
            Object::Other { kind, .. } => kind,
        }
    }

    /// `namespace/name`, or `name` for cluster-scoped kinds.
    pub fn key(&self) -> String {
        match self {
            Object::Namespace(n) => n.name.clone(),
            Object::Node(n) => n.name.clone(),
            Object::Pod(p) => format!("{}/{}", p.namespace, p.name),
            Object::Service(s) => s.meta.key(),
            Object::EndpointSlice(s) => s.meta.key(),
            Object::ServiceAccount(s) => s.meta.key(),
            Object::VirtualService(r) => r.key(),
            Object::DestinationRule(r) => r.key(),
            Object::ServiceEntry(r) => r.key(),
            Object::Gateway(r) => r.key(),
            Object::Sidecar(r) => r.key(),
            Object::PeerAuthentication(r) => r.key(),
            Object::RequestAuthentication(r) => r.key(),
            Object::AuthorizationPolicy(r) => r.key(),
            Object::Other { name, .. } => name.clone(),
        }
    }

    /// The spec of an Istio object as it serialises back (for round trips and dumps).
    pub fn istio_spec(&self) -> Option<serde_json::Value> {
        let value = match self {
            Object::VirtualService(r) => serde_json::to_value(&r.spec),
            Object::DestinationRule(r) => serde_json::to_value(&r.spec),
            Object::ServiceEntry(r) => serde_json::to_value(&r.spec),
            Object::Gateway(r) => serde_json::to_value(&r.spec),
            Object::Sidecar(r) => serde_json::to_value(&r.spec),
            Object::PeerAuthentication(r) => serde_json::to_value(&r.spec),
            Object::RequestAuthentication(r) => serde_json::to_value(&r.spec),
            Object::AuthorizationPolicy(r) => serde_json::to_value(&r.spec),
            _ => return None,
        };
        Some(value.expect("Istio specs serialise to JSON"))
    }
}

/// The metadata Trellis uses, for every kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Meta {
    pub name: String,
    /// Empty for cluster-scoped kinds; `default` when a namespaced object names none.
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `metadata.creationTimestamp` (RFC 3339), when present.
    pub creation_timestamp: Option<String>,
    /// Position in the source, the tie-breaker when timestamps are absent or equal.
    pub order: usize,
}

impl Meta {
    /// A namespaced object's metadata with only its name.
    pub fn named(namespace: &str, name: &str) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            ..Self::default()
        }
    }

    /// `namespace/name` (just `name` for cluster-scoped kinds).
    pub fn key(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }
}

#[derive(Deserialize)]
struct Header {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Metadata {
    pub name: Option<String>,
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub creation_timestamp: Option<String>,
    pub uid: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct Doc<Spec, Status> {
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub spec: Spec,
    #[serde(default)]
    pub status: Status,
}

#[derive(Deserialize, Default)]
pub(crate) struct Ignored {}

/// Reads every YAML file in `dir` (not recursive), in name order.
pub fn read_dir(dir: &Path) -> Result<Vec<Object>, SourceError> {
    let io = |path: &Path, e: std::io::Error| SourceError::Io {
        path: path.into(),
        message: e.to_string(),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    let mut objects = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| io(&file, e))?;
        objects.extend(parse_documents(&file, &text)?);
    }
    Ok(objects)
}

/// Deserialises with the path of the failing field in the error ("spec.mtls.mode: ...").
pub(crate) fn typed<T: DeserializeOwned>(value: serde_yaml_ng::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })
}

/// Parses the documents of one file. `path` is only used in errors.
pub fn parse_documents(path: &Path, text: &str) -> Result<Vec<Object>, SourceError> {
    let mut objects = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let invalid = |e: ObjectError| SourceError::Invalid {
            path: path.into(),
            document: i + 1,
            object: e.object,
            message: e.message,
        };
        // Syntax errors carry their line here.
        let value = serde_yaml_ng::Value::deserialize(doc).map_err(|e| {
            invalid(ObjectError {
                object: String::new(),
                message: e.to_string(),
            })
        })?;
        if value.is_null() {
            continue; // an empty document, e.g. a trailing `---`
        }
        objects.push(parse_object(value, objects.len()).map_err(invalid)?);
    }
    Ok(objects)
}

/// Why one object was refused: `object` is ` (Kind name)` or empty when unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectError {
    pub object: String,
    pub message: String,
}

/// Parses one object, whatever its source (a YAML document, or the API server's JSON
/// converted with `serde_yaml_ng::to_value`). `order` is its position in the source.
pub fn parse_object(value: serde_yaml_ng::Value, order: usize) -> Result<Object, ObjectError> {
    let err = |object: String, message: String| ObjectError { object, message };
    let header: Header = typed(value.clone()).map_err(|e| err(String::new(), e))?;
    let kind = header
        .kind
        .ok_or_else(|| err(String::new(), "missing field `kind`".into()))?;
    let doc: Doc<Ignored, Ignored> = typed(value.clone()).map_err(|e| err(format!(" ({kind})"), e))?;
    let name = doc
        .metadata
        .name
        .ok_or_else(|| err(format!(" ({kind})"), "missing field `metadata.name`".into()))?;
    let object = format!(" ({kind} {name})");
    let api_version = header.api_version.unwrap_or_default();
    let fail = |message: String| err(object.clone(), message);
    Ok(match kind.as_str() {
        "VirtualService" => Object::VirtualService(istio(value, &api_version, order).map_err(fail)?),
        "DestinationRule" => Object::DestinationRule(istio(value, &api_version, order).map_err(fail)?),
        "ServiceEntry" => Object::ServiceEntry(istio(value, &api_version, order).map_err(fail)?),
        "Gateway" => Object::Gateway(istio(value, &api_version, order).map_err(fail)?),
        "Sidecar" => Object::Sidecar(istio(value, &api_version, order).map_err(fail)?),
        "PeerAuthentication" => Object::PeerAuthentication(istio(value, &api_version, order).map_err(fail)?),
        "RequestAuthentication" => {
            Object::RequestAuthentication(istio(value, &api_version, order).map_err(fail)?)
        }
        "AuthorizationPolicy" => {
            Object::AuthorizationPolicy(istio(value, &api_version, order).map_err(fail)?)
        }
        _ => match kubernetes::parse(&kind, value, order) {
            Some(parsed) => parsed.map_err(fail)?,
            None => Object::Other { kind, name },
        },
    })
}

pub(crate) fn meta(m: Metadata, order: usize) -> Meta {
    Meta {
        name: m.name.unwrap_or_default(),
        namespace: m.namespace.unwrap_or_else(|| "default".into()),
        labels: m.labels,
        annotations: m.annotations,
        creation_timestamp: m.creation_timestamp,
        order,
    }
}

/// An Istio object of kind `S`, typed and validated as Istio validates it.
fn istio<S: Kind>(
    value: serde_yaml_ng::Value,
    api_version: &str,
    order: usize,
) -> Result<Resource<S>, String> {
    if !S::accepts(api_version) {
        let versions: Vec<String> = S::VERSIONS.iter().map(|v| format!("{}/{v}", S::GROUP)).collect();
        return Err(format!(
            "apiVersion {api_version:?} is not one of {}: use one of {}",
            S::KIND,
            versions.join(", ")
        ));
    }
    let doc: Doc<S, Ignored> = typed(value)?;
    let errors = doc.spec.validate();
    if !errors.is_empty() {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return Err(lines.join("; "));
    }
    Ok(Resource {
        meta: meta(doc.metadata, order),
        spec: doc.spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse_documents(Path::new("pods.yaml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_file_document_object_and_field() {
        assert_eq!(
            err("kind: Namespace\nmetadata: {name: a}\n---\nmetadata: {name: b}\n"),
            "pods.yaml document 2: missing field `kind`"
        );
        assert_eq!(
            err("kind: Pod\nmetadata: {}\n"),
            "pods.yaml document 1 (Pod): missing field `metadata.name`"
        );
        assert_eq!(
            err("kind: Pod\nmetadata: {name: web}\nstatus: {podIP: 10.1.1.300}\n"),
            "pods.yaml document 1 (Pod web): status.podIP \"10.1.1.300\" is not an IPv4 address (Trellis captures IPv4 only)"
        );
        assert_eq!(
            err("kind: Pod\nmetadata: {name: web}\nspec: {hostNetwork: maybe}\n"),
            "pods.yaml document 1 (Pod web): spec.hostNetwork: invalid type: string \"maybe\", expected a boolean"
        );
        let syntax = err("kind: Pod\nmetadata: {name: web\n");
        assert!(
            syntax.starts_with("pods.yaml document 1: ") && syntax.contains("line"),
            "{syntax}"
        );
    }

    #[test]
    fn nodes_carry_their_internal_address() {
        let objs = parse_documents(
            Path::new("n.yaml"),
            "kind: Node\nmetadata: {name: n2}\nstatus: {addresses: [{type: Hostname, address: n2}, {type: InternalIP, address: 198.18.0.2}]}\n",
        )
        .unwrap();
        assert_eq!(
            objs,
            [Object::Node(Node {
                name: "n2".into(),
                internal_ip: Some(std::net::Ipv4Addr::new(198, 18, 0, 2))
            })]
        );
    }

    #[test]
    fn other_kinds_and_empty_documents_are_accepted() {
        let objs = parse_documents(
            Path::new("x.yaml"),
            "---\nkind: ConfigMap\nmetadata: {name: web}\n---\n",
        )
        .unwrap();
        assert_eq!(
            objs,
            [Object::Other {
                kind: "ConfigMap".into(),
                name: "web".into()
            }]
        );
    }
}
