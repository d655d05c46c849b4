//! Which identities a node may obtain: those of enrolled workloads scheduled on it, so a
//! compromised node cannot mint certificates for workloads it does not run. Who the node is
//! was settled before, by `node_auth`.

use mesh_api::{identity::Identity, objects::Object, selection::select};

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
    use std::path::Path;

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
}
