//! The deploy manifests agree with the code: the controller's ClusterRole grants list and watch
//! on exactly the kinds the Kubernetes source watches, the Deployment's arguments are flags
//! `mesh-controller run` accepts, and a node agent is given its own projected token only, for
//! the audience and service account the controller expects. (No cluster here to apply them
//! to.)

use std::collections::BTreeSet;

use clap::Parser;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::ServiceAccount,
    rbac::v1::ClusterRole,
};
use mesh_controller::{
    config::{Config, NodeAuth, SourceKind},
    source::kubernetes,
};
use serde::Deserialize;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

/// The documents of `file` (under deploy/) of the given kind.
fn documents<T: serde::de::DeserializeOwned>(file: &str, kind: &str) -> Vec<T> {
    let path = format!("{DEPLOY}/{file}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).unwrap())
        .filter(|v| v.get("kind").and_then(|k| k.as_str()) == Some(kind))
        .map(|v| serde_yaml_ng::from_value(v).unwrap_or_else(|e| panic!("{path}: {kind}: {e}")))
        .collect()
}

#[test]
fn the_cluster_role_lets_the_controller_watch_exactly_what_it_watches() {
    let [role] = documents::<ClusterRole>("rbac/controller.yaml", "ClusterRole")
        .try_into()
        .expect("one ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap_or_default() {
        let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
        if !(verbs.contains("list") && verbs.contains("watch")) {
            continue;
        }
        for group in rule.api_groups.unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                granted.insert((group.clone(), resource));
            }
        }
    }
    let watched: BTreeSet<(String, String)> = kubernetes::resources()
        .into_iter()
        .map(|r| (r.group, r.plural))
        .collect();
    assert_eq!(granted, watched);
}

/// The controller's configuration, from the Deployment's arguments.
fn controller_config() -> Config {
    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        config: Config,
    }
    let [deployment] = documents::<Deployment>("controller.yaml", "Deployment")
        .try_into()
        .expect("one Deployment");
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let args = pod.containers[0].args.clone().unwrap();
    assert_eq!(args[0], "run");
    let run =
        Run::try_parse_from(std::iter::once("mesh-controller".to_string()).chain(args[1..].iter().cloned()))
            .unwrap_or_else(|e| panic!("{e}"));
    run.config
}

#[test]
fn the_deployment_passes_flags_the_controller_accepts() {
    let config = controller_config();
    assert_eq!(config.source, SourceKind::Kubernetes);
    assert_eq!(config.listen.port(), 15012);
    assert_eq!(config.node_auth, NodeAuth::TokenReview);
    assert_eq!(config.node_tokens, None, "no bootstrap tokens in a cluster");
    let [deployment] = documents::<Deployment>("controller.yaml", "Deployment")
        .try_into()
        .expect("one Deployment");
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    for v in pod.volumes.iter().flatten() {
        let secret = v.secret.as_ref().and_then(|s| s.secret_name.as_deref());
        assert!(
            v.secret.is_none() || secret == Some("cacerts"),
            "volume {}: the controller mounts no Secret but the CA's",
            v.name
        );
    }
}

/// A DaemonSet gives every pod the same volumes: a Secret (or ConfigMap) mounted in the node
/// agent would be every node's, so the agent's credential is its own pod's projected token,
/// for the controller's audience only, of the service account the controller accepts.
#[test]
fn a_node_agent_is_given_its_own_projected_token_only() {
    let controller = controller_config();
    let [daemon_set] = documents::<DaemonSet>("node.yaml", "DaemonSet")
        .try_into()
        .expect("one DaemonSet");
    let namespace = daemon_set.metadata.namespace.clone().unwrap();
    let pod = daemon_set.spec.unwrap().template.spec.unwrap();
    let account = pod.service_account_name.clone().unwrap();
    assert_eq!(controller.node_service_account, format!("{namespace}/{account}"));
    assert_eq!(
        pod.automount_service_account_token,
        Some(false),
        "no token for the API server"
    );
    let [sa] = documents::<ServiceAccount>("rbac/node.yaml", "ServiceAccount")
        .try_into()
        .expect("one ServiceAccount");
    assert_eq!(sa.metadata.name.as_deref(), Some(account.as_str()));
    assert_eq!(sa.metadata.namespace.as_deref(), Some(namespace.as_str()));
    assert_eq!(sa.automount_service_account_token, Some(false));

    let volumes = pod.volumes.unwrap_or_default();
    for v in &volumes {
        assert!(
            v.secret
                .as_ref()
                .is_none_or(|s| s.secret_name.as_deref() == Some("cacerts")),
            "the node mounts Secret volume {}: only the CA's root may come from a Secret",
            v.name
        );
        if let Some(s) = &v.secret {
            let keys: Vec<&str> = s.items.iter().flatten().map(|i| i.key.as_str()).collect();
            assert_eq!(keys, ["root-cert.pem"], "only the root, never the CA key");
        }
        assert!(v.config_map.is_none(), "{}", v.name);
    }

    let container = &pod.containers[0];
    let token_file = container
        .args
        .iter()
        .flatten()
        .find_map(|a| a.strip_prefix("--token-file="))
        .expect("the node agent is given --token-file");
    let (dir, file) = token_file.rsplit_once('/').unwrap();
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == dir)
        .expect("the token file's directory is a mount of its own");
    let volume = volumes.iter().find(|v| v.name == mount.name).unwrap();
    let sources = &volume
        .projected
        .as_ref()
        .expect("the token is a projected volume")
        .sources;
    let [source] = sources.as_deref().unwrap_or_default() else {
        panic!("the token volume projects the token and nothing else: {sources:?}");
    };
    let token = source
        .service_account_token
        .as_ref()
        .expect("a serviceAccountToken");
    assert_eq!(token.path, file);
    assert_eq!(
        token.audience.as_deref(),
        Some(controller.node_token_audience.as_str())
    );
    assert_eq!(token.expiration_seconds, Some(3600));
    // The only projected volume, and no host file or Secret in the environment either.
    assert_eq!(volumes.iter().filter(|v| v.projected.is_some()).count(), 1);
    assert!(volumes
        .iter()
        .filter_map(|v| v.host_path.as_ref())
        .all(|h| !h.path.contains("token")));
    assert!(container
        .env
        .iter()
        .flatten()
        .all(|e| e.value_from.as_ref().is_none_or(|v| v.secret_key_ref.is_none())));
}
