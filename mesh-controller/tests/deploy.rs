//! The deploy manifests agree with the code: the controller's ClusterRole grants list and watch
//! on exactly the kinds the Kubernetes source watches, and the Deployment's arguments are
//! flags `mesh-controller run` accepts, and a node agent is given its own token only. (No
//! cluster here to apply them to.)

use std::collections::BTreeSet;

use clap::Parser;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    rbac::v1::ClusterRole,
};
use mesh_controller::{config::Config, source::kubernetes};
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

#[test]
fn the_deployment_passes_flags_the_controller_accepts() {
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
    assert_eq!(run.config.source, mesh_controller::config::SourceKind::Kubernetes);
    assert_eq!(run.config.listen.port(), 15012);
}

/// A DaemonSet gives every pod the same volumes: a Secret (or ConfigMap) mounted in the node
/// agent would be every node's, so the node's token must come from its own host, and the
/// controller's token list must not be mounted there.
#[test]
fn a_node_agent_gets_only_its_own_token() {
    let [daemon_set] = documents::<DaemonSet>("node.yaml", "DaemonSet")
        .try_into()
        .expect("one DaemonSet");
    let pod = daemon_set.spec.unwrap().template.spec.unwrap();
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
        assert!(v.projected.is_none() && v.config_map.is_none(), "{}", v.name);
    }
    let container = &pod.containers[0];
    let token_file = container
        .args
        .iter()
        .flatten()
        .find_map(|a| a.strip_prefix("--token-file="))
        .expect("the node agent is given --token-file");
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == token_file)
        .expect("the token file is a mount of its own");
    let volume = volumes.iter().find(|v| v.name == mount.name).unwrap();
    let host = volume
        .host_path
        .as_ref()
        .expect("the token comes from the node's host");
    assert_eq!(
        host.type_.as_deref(),
        Some("File"),
        "a missing token stops the pod"
    );
    assert!(container
        .env
        .iter()
        .flatten()
        .all(|e| e.value_from.as_ref().is_none_or(|v| v.secret_key_ref.is_none())));
}
