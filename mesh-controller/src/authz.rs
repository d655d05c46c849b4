//! Who may obtain which identity. A node authenticates with its bootstrap token and may only
//! obtain identities of enrolled workloads scheduled on it: a compromised node cannot mint
//! certificates for workloads it does not run.

use std::{collections::BTreeMap, path::Path};

use mesh_api::{identity::Identity, objects::Object, selection::select};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node tokens file {path}: {message}")]
    Tokens { path: String, message: String },
}

/// Bootstrap tokens, by node name.
pub struct NodeTokens {
    by_node: BTreeMap<String, String>,
}

impl NodeTokens {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let err = |message: String| Error::Tokens {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let by_node: BTreeMap<String, String> = serde_yaml_ng::from_str(&text)
            .map_err(|e| err(format!("expected a YAML map of node name to token: {e}")))?;
        if let Some((node, _)) = by_node.iter().find(|(_, t)| t.len() < 16) {
            return Err(err(format!(
                "the token of node {node} is shorter than 16 characters"
            )));
        }
        Ok(Self { by_node })
    }

    /// The node a token belongs to. Compares every token in constant time.
    pub fn node_for(&self, token: &str) -> Option<&str> {
        let mut found = None;
        for (node, expected) in &self.by_node {
            if constant_time_eq(expected.as_bytes(), token.as_bytes()) {
                found = Some(node.as_str());
            }
        }
        found
    }
}

/// The node a request comes from, by its `authorization: Bearer <token>` metadata.
pub fn authenticate(
    tokens: &NodeTokens,
    metadata: &tonic::metadata::MetadataMap,
) -> Result<String, tonic::Status> {
    let token = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            tonic::Status::unauthenticated("missing `authorization: Bearer <node token>` metadata")
        })?;
    tokens
        .node_for(token)
        .map(str::to_string)
        .ok_or_else(|| tonic::Status::unauthenticated("unknown node token: check the node's --token-file"))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why `node` may not hold `identity`, or `Ok` when it may.
pub fn entitled(
    objects: &[Object],
    trust_domain: &str,
    node: &str,
    identity: &Identity,
) -> Result<(), String> {
    if identity.trust_domain != trust_domain {
        return Err(format!("{identity} is outside the trust domain {trust_domain}"));
    }
    let enrolled = select(objects, node).enrolled;
    if enrolled.iter().any(|w| w.identity(trust_domain) == *identity) {
        Ok(())
    } else {
        Err(format!(
            "node {node} runs no enrolled pod with service account {}/{}, so it may not obtain {identity}",
            identity.namespace, identity.service_account
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = r#"
kind: Namespace
metadata: {name: shop, labels: {trellis.dev/mesh: enabled}}
---
kind: Namespace
metadata: {name: legacy}
---
kind: Pod
metadata: {name: web, namespace: shop, annotations: {trellis.dev/netns: w}}
spec: {nodeName: n1, serviceAccountName: web-sa}
status: {podIP: 10.1.1.2}
---
kind: Pod
metadata: {name: db, namespace: shop, annotations: {trellis.dev/netns: d}}
spec: {nodeName: n2, serviceAccountName: db-sa}
status: {podIP: 10.2.1.2}
---
kind: Pod
metadata: {name: old, namespace: legacy, annotations: {trellis.dev/netns: o}}
spec: {nodeName: n1, serviceAccountName: old-sa}
status: {podIP: 10.1.2.2}
"#;

    fn check(node: &str, id: &str) -> Result<(), String> {
        let objects = mesh_api::objects::parse_documents(Path::new("c.yaml"), CLUSTER).unwrap();
        entitled(&objects, "cluster.local", node, &id.parse().unwrap())
    }

    #[test]
    fn a_node_gets_only_identities_of_its_own_enrolled_pods() {
        assert_eq!(check("n1", "spiffe://cluster.local/ns/shop/sa/web-sa"), Ok(()));
        assert!(check("n1", "spiffe://cluster.local/ns/shop/sa/db-sa")
            .unwrap_err()
            .contains("node n1 runs no enrolled pod"));
        assert!(check("n2", "spiffe://cluster.local/ns/shop/sa/web-sa").is_err());
        // Pods outside the mesh get no identity.
        assert!(check("n1", "spiffe://cluster.local/ns/legacy/sa/old-sa").is_err());
        assert!(check("n1", "spiffe://evil.org/ns/shop/sa/web-sa")
            .unwrap_err()
            .contains("trust domain"));
    }

    #[test]
    fn tokens_identify_nodes() {
        let path = std::env::temp_dir().join(format!("trellis-tokens-{}", std::process::id()));
        std::fs::write(&path, "n1: aaaaaaaaaaaaaaaaaaaa\nn2: bbbbbbbbbbbbbbbbbbbb\n").unwrap();
        let tokens = NodeTokens::load(&path).unwrap();
        assert_eq!(tokens.node_for("bbbbbbbbbbbbbbbbbbbb"), Some("n2"));
        assert_eq!(tokens.node_for("bbbbbbbbbbbbbbbbbbbX"), None);
        std::fs::write(&path, "n1: short\n").unwrap();
        assert!(NodeTokens::load(&path)
            .err()
            .unwrap()
            .to_string()
            .contains("shorter than 16"));
        let _ = std::fs::remove_file(&path);
    }
}
