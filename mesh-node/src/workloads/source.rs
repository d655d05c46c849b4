//! Reading the YAML directory: every `.yaml`/`.yml` file, several documents per file. A
//! directory with any invalid document is rejected as a whole (the caller keeps the last
//! good state), and the error names the file, the document and the field.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::NETNS_ANNOTATION;

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

/// The objects this node understands. Other kinds are accepted and left alone: they belong
/// to the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Namespace(Namespace),
    Pod(Pod),
    Other { kind: String, name: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub node_name: Option<String>,
    pub host_network: bool,
    pub ip: Option<Ipv4Addr>,
    pub netns: Option<PathBuf>,
}

/// One YAML document, typed as far as this node reads it. Deserialised straight from the
/// document (not through `serde_yaml::Value`) so errors carry the field path and line.
/// Other kinds' `spec` and `status` share no field names with the ones read here.
#[derive(Deserialize)]
struct RawDoc {
    kind: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: PodSpec,
    #[serde(default)]
    status: PodStatus,
}

#[derive(Deserialize, Default)]
struct Metadata {
    name: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
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
#[serde(rename_all = "camelCase")]
struct PodStatus {
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
}

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

/// Parses the documents of one file. `path` is only used in errors.
pub fn parse_documents(path: &Path, text: &str) -> Result<Vec<Object>, SourceError> {
    let mut objects = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let invalid = |object: String, message: String| SourceError::Invalid {
            path: path.into(),
            document,
            object,
            message,
        };
        let Some(raw) =
            Option::<RawDoc>::deserialize(doc).map_err(|e| invalid(String::new(), e.to_string()))?
        else {
            continue; // an empty document, e.g. a trailing `---`
        };
        let kind = raw
            .kind
            .ok_or_else(|| invalid(String::new(), "missing field `kind`".into()))?;
        let meta = raw.metadata;
        let name = meta
            .name
            .ok_or_else(|| invalid(format!(" ({kind})"), "missing field `metadata.name`".into()))?;
        let object = format!(" ({kind} {name})");
        objects.push(match kind.as_str() {
            "Namespace" => Object::Namespace(Namespace {
                name,
                labels: meta.labels,
            }),
            "Pod" => {
                let ip = raw
                    .status
                    .pod_ip
                    .map(|ip| {
                        ip.parse::<Ipv4Addr>().map_err(|_| {
                            invalid(
                                object.clone(),
                                format!("status.podIP {ip:?} is not an IPv4 address"),
                            )
                        })
                    })
                    .transpose()?;
                let netns = meta.annotations.get(NETNS_ANNOTATION).map(|v| netns_path(v));
                Object::Pod(Pod {
                    namespace: meta.namespace.unwrap_or_else(|| "default".into()),
                    name,
                    labels: meta.labels,
                    service_account: raw.spec.service_account_name.unwrap_or_else(|| "default".into()),
                    node_name: raw.spec.node_name,
                    host_network: raw.spec.host_network,
                    ip,
                    netns,
                })
            }
            _ => Object::Other { kind, name },
        });
    }
    Ok(objects)
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
            "pods.yaml document 1 (Pod web): status.podIP \"10.1.1.300\" is not an IPv4 address"
        );
        let bad_type = err("kind: Pod\nmetadata: {name: web}\nspec: {hostNetwork: maybe}\n");
        assert!(
            bad_type.starts_with("pods.yaml document 1: spec.hostNetwork: invalid type"),
            "{bad_type}"
        );
        assert!(bad_type.contains("line 3"), "{bad_type}");
        let syntax = err("kind: Pod\nmetadata: {name: web\n");
        assert!(
            syntax.starts_with("pods.yaml document 1: ") && syntax.contains("line"),
            "{syntax}"
        );
    }

    #[test]
    fn other_kinds_and_empty_documents_are_accepted() {
        let objs = parse_documents(
            Path::new("x.yaml"),
            "---\nkind: Service\nmetadata: {name: web}\n---\n",
        )
        .unwrap();
        assert_eq!(
            objs,
            [Object::Other {
                kind: "Service".into(),
                name: "web".into()
            }]
        );
    }
}
