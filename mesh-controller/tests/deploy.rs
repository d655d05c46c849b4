//! The deploy manifests agree with the code: the controller's ClusterRole grants list and watch
//! on exactly the kinds the Kubernetes source watches, the Deployment's arguments are flags
//! `mesh-controller run` accepts, and a node agent is given its own projected token only, for
//! the audience and service account the controller expects. (No cluster here to apply them
//! to.)
//!
//! And the two ways to install agree: the Helm chart (`deploy/helm/trellis`) rendered by a
//! real `helm` gives the objects `kubectl kustomize deploy` gives, its values change only the
//! fields they name, and every rendered object passes Kubernetes' own schemas
//! (`kubernetes-validate --strict`). helm, kubectl and kubernetes-validate are installed by
//! `cargo xtask setup`; without them these tests fail and say so.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    process::{Command, Output, Stdio},
};

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
use serde_json::{json, Value};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
/// The chart, relative to ROOT.
const CHART: &str = "deploy/helm/trellis";
/// The Kubernetes version whose schemas the objects must pass: the one k8s-openapi is built
/// for (`v1_33`), and the kubectl `cargo xtask setup` installs.
const KUBERNETES_VERSION: &str = "1.33.0";

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

// The Helm chart.

/// Runs `program` from the workspace root with `stdin` as its input.
fn tool(program: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(ROOT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{program}`: {e}. The deploy tests need helm, kubectl and \
                 kubernetes-validate in PATH: `cargo xtask setup` installs them"
            )
        });
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_owned();
    // A thread of its own: the tool may fill its output pipe before it reads all its input.
    let writer = std::thread::spawn(move || input.write_all(stdin.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    output
}

/// The standard output of a tool that must succeed.
fn rendered(program: &str, args: &[&str], stdin: &str) -> String {
    let out = tool(program, args, stdin);
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Rendered objects by `Kind namespace/name`, each as plain JSON.
type Objects = BTreeMap<String, Value>;

fn objects(yaml: &str, source: &str) -> Objects {
    let mut out = Objects::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{source}: {e}"));
        if value.is_null() {
            continue;
        }
        let field = |pointer: &str| value.pointer(pointer).and_then(Value::as_str).unwrap_or("");
        let key = format!(
            "{} {}/{}",
            field("/kind"),
            field("/metadata/namespace"),
            field("/metadata/name")
        );
        assert!(
            out.insert(key.clone(), value).is_none(),
            "{source} renders {key} twice"
        );
    }
    out
}

fn kustomize() -> (String, Objects) {
    let yaml = rendered("kubectl", &["kustomize", "deploy"], "");
    let objects = objects(&yaml, "kubectl kustomize deploy");
    (yaml, objects)
}

/// `helm template` of the chart, CRDs included, in release namespace `namespace`, with
/// `values` (a values file's text) over the defaults.
fn helm(namespace: &str, values: &str) -> (String, Objects) {
    let args = [
        "template",
        "trellis",
        CHART,
        "--namespace",
        namespace,
        "--include-crds",
        "--values",
        "-",
    ];
    let yaml = rendered("helm", &args, values);
    let objects = objects(&yaml, &format!("helm template {CHART}"));
    (yaml, objects)
}

/// Where two JSON values differ, by JSON pointer; `None` is a field one side lacks.
fn differences(path: &str, left: Option<&Value>, right: Option<&Value>, out: &mut Vec<String>) {
    match (left, right) {
        (Some(Value::Object(l)), Some(Value::Object(r))) => {
            let keys: BTreeSet<&String> = l.keys().chain(r.keys()).collect();
            for k in keys {
                differences(&format!("{path}/{k}"), l.get(k), r.get(k), out);
            }
        }
        (Some(Value::Array(l)), Some(Value::Array(r))) if l.len() == r.len() => {
            for (i, (l, r)) in l.iter().zip(r).enumerate() {
                differences(&format!("{path}/{i}"), Some(l), Some(r), out);
            }
        }
        (l, r) if l == r => {}
        (l, r) => {
            let show = |v: Option<&Value>| v.map_or("nothing".to_string(), Value::to_string);
            out.push(format!("{path}: {} against {}", show(l), show(r)));
        }
    }
}

/// Fails, naming every object and field that differs, unless `actual` is `expected`.
fn assert_same(expected: &Objects, expected_from: &str, actual: &Objects, actual_from: &str) {
    let mut problems = Vec::new();
    let keys: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    for key in keys {
        match (expected.get(key), actual.get(key)) {
            (Some(_), None) => problems.push(format!("{key}: from {expected_from}, not {actual_from}")),
            (None, Some(_)) => problems.push(format!("{key}: from {actual_from}, not {expected_from}")),
            (l, r) => {
                let mut fields = Vec::new();
                differences("", l, r, &mut fields);
                problems.extend(fields.into_iter().map(|f| format!("{key} {f}")));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{expected_from} (first) and {actual_from} (second) differ; a change to deploy/ needs \
         the same change in deploy/helm/trellis/templates/:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_chart_with_its_defaults_renders_the_kustomize_base() {
    let (_, base) = kustomize();
    // Helm installs into a namespace that exists (the cacerts Secret goes there first), so by
    // default the chart leaves out the Namespace the base creates...
    let (_, chart) = helm("trellis-system", "");
    let mut without_namespace = base.clone();
    without_namespace
        .remove("Namespace /trellis-system")
        .expect("the kustomize base creates its Namespace");
    assert_same(
        &without_namespace,
        "kubectl kustomize deploy",
        &chart,
        "helm template",
    );
    // ...and renders it as the base does when asked.
    let (_, chart) = helm("trellis-system", "namespace: {create: true}");
    assert_same(
        &base,
        "kubectl kustomize deploy",
        &chart,
        "helm template (namespace.create)",
    );
}

/// Values other than the defaults, and what they must change in the base's objects.
const VALUES: &str = r#"
namespace: {create: true}
image: {tag: "0.2.0-rc.1"}
trustDomain: mesh.example
controller:
  image: {repository: registry.example/trellis/controller}
  logLevel: mesh_controller=debug,info
  resources: {requests: {cpu: 1, memory: 1Gi}}
  nodeSelector: {node-role.kubernetes.io/control-plane: ""}
  tolerations: [{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}]
node:
  image: {repository: registry.example/trellis/node}
  logLevel: debug
  cniConfDir: /var/lib/rancher/k3s/agent/etc/cni/net.d
  cniBinDir: /var/lib/rancher/k3s/data/current/bin
  resources: {limits: {memory: 2Gi}}
  nodeSelector: {trellis.dev/node: "true"}
  tolerations: []
"#;

/// The base's objects as VALUES should leave them, in release namespace `mesh`.
fn base_with_values(mut base: Objects) -> Objects {
    // The release namespace replaces trellis-system wherever it appears: object namespaces,
    // the binding's subject, the controller's TLS server name on both sides.
    fn rename(v: &mut Value) {
        match v {
            Value::String(s) => *s = s.replace("trellis-system", "mesh"),
            Value::Array(a) => a.iter_mut().for_each(rename),
            Value::Object(o) => o.values_mut().for_each(rename),
            _ => {}
        }
    }
    let mut renamed = Objects::new();
    for (key, mut object) in std::mem::take(&mut base) {
        rename(&mut object);
        renamed.insert(key.replace("trellis-system", "mesh"), object);
    }
    // Helm merges maps of values into the defaults' (resources keep the keys VALUES does not
    // set) and replaces lists (the node's tolerations go).
    let workloads = [
        (
            "Deployment mesh/mesh-controller",
            "registry.example/trellis/controller:0.2.0-rc.1",
            "mesh_controller=debug,info",
            json!({"requests": {"cpu": 1, "memory": "1Gi"}, "limits": {"memory": "512Mi"}}),
            Some(json!({"node-role.kubernetes.io/control-plane": ""})),
            Some(json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])),
        ),
        (
            "DaemonSet mesh/mesh-node",
            "registry.example/trellis/node:0.2.0-rc.1",
            "debug",
            json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "2Gi"}}),
            Some(json!({"trellis.dev/node": "true"})),
            None,
        ),
    ];
    for (key, image, log, resources, node_selector, tolerations) in workloads {
        let spec = renamed
            .get_mut(key)
            .and_then(|o| o.pointer_mut("/spec/template/spec"))
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("the base has {key}"));
        match node_selector {
            Some(s) => spec.insert("nodeSelector".into(), s),
            None => spec.remove("nodeSelector"),
        };
        match tolerations {
            Some(t) => spec.insert("tolerations".into(), t),
            None => spec.remove("tolerations"),
        };
        let container = &mut spec["containers"][0];
        container["image"] = json!(image);
        container["resources"] = resources;
        for arg in container["args"].as_array_mut().unwrap() {
            if arg.as_str().unwrap().starts_with("--trust-domain=") {
                *arg = json!("--trust-domain=mesh.example");
            }
        }
        for env in container["env"].as_array_mut().unwrap() {
            if env["name"] == "TRELLIS_LOG" {
                env["value"] = json!(log);
            }
        }
    }
    // The host's CNI directories move; inside the container they stay where the flags say.
    let volumes = renamed
        .get_mut("DaemonSet mesh/mesh-node")
        .and_then(|o| o.pointer_mut("/spec/template/spec/volumes"))
        .and_then(Value::as_array_mut)
        .expect("the base's DaemonSet has volumes");
    for (name, path) in [
        ("cni-conf", "/var/lib/rancher/k3s/agent/etc/cni/net.d"),
        ("cni-bin", "/var/lib/rancher/k3s/data/current/bin"),
    ] {
        let volume = volumes
            .iter_mut()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("the base's DaemonSet has volume {name}"));
        volume["hostPath"]["path"] = json!(path);
    }
    renamed
}

#[test]
fn the_charts_values_change_only_what_they_name() {
    let (_, base) = kustomize();
    let (_, chart) = helm("mesh", VALUES);
    assert_same(
        &base_with_values(base),
        "kubectl kustomize deploy, edited as VALUES say",
        &chart,
        "helm template with VALUES",
    );
}

#[test]
fn every_rendered_object_passes_the_kubernetes_schemas() {
    let (base_yaml, base) = kustomize();
    let (chart_yaml, chart) = helm("mesh", VALUES);
    for (yaml, objects, from) in [
        (base_yaml, base, "kubectl kustomize deploy"),
        (chart_yaml, chart, "helm template with VALUES"),
    ] {
        let args = ["--kubernetes-version", KUBERNETES_VERSION, "--strict", "-"];
        let out = tool("kubernetes-validate", &args, &yaml);
        let report =
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        // One "passed" line per object: an object whose kind the validator has no schema for
        // (a custom resource) only gets a warning, and must not slip through as a pass.
        let passed = report
            .lines()
            .filter(|l| l.contains(" passed for resource "))
            .count();
        assert!(
            out.status.success() && passed == objects.len(),
            "{from}: {passed} of {} objects pass Kubernetes {KUBERNETES_VERSION}'s schemas \
             (kubernetes-validate --strict, {}):\n{report}",
            objects.len(),
            out.status
        );
    }
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    let files = |dir: &str| -> BTreeMap<String, String> {
        std::fs::read_dir(format!("{ROOT}/{dir}"))
            .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap() != "kustomization.yaml")
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                (p.file_name().unwrap().to_string_lossy().into_owned(), text)
            })
            .collect()
    };
    let base = files("deploy/crds");
    let chart = files("deploy/helm/trellis/crds");
    assert_eq!(
        base.keys().collect::<Vec<_>>(),
        chart.keys().collect::<Vec<_>>(),
        "deploy/crds and the chart's crds/ hold different files: run `cargo xtask codegen`"
    );
    for (name, text) in &base {
        assert!(
            chart[name] == *text,
            "deploy/helm/trellis/crds/{name} differs from deploy/crds/{name}: run `cargo xtask codegen`"
        );
    }
}

#[test]
fn the_chart_version_is_the_workspace_version() {
    let path = format!("{ROOT}/{CHART}/Chart.yaml");
    let chart: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(chart["version"], version, "{path}: version");
    assert_eq!(chart["appVersion"], version, "{path}: appVersion");
}

/// `cargo xtask image` tags the images with the workspace version, so the manifests must name
/// exactly that tag: a version bump that leaves them behind fails here. (The chart's defaults
/// render these same images: see the_chart_with_its_defaults_renders_the_kustomize_base.)
#[test]
fn the_manifests_name_the_images_of_the_workspace_version() {
    let version = env!("CARGO_PKG_VERSION");
    for (file, kind, name) in [
        ("controller.yaml", "Deployment", "mesh-controller"),
        ("node.yaml", "DaemonSet", "mesh-node"),
    ] {
        let images: Vec<Value> = documents::<Value>(file, kind)
            .iter()
            .flat_map(|o| {
                o["spec"]["template"]["spec"]["containers"]
                    .as_array()
                    .unwrap()
                    .clone()
            })
            .map(|c| c["image"].clone())
            .collect();
        assert_eq!(
            images,
            [json!(format!("ghcr.io/trellis-mesh/{name}:{version}"))],
            "deploy/{file}: the images are tagged with the workspace version ({version})"
        );
    }
    let path = format!("{ROOT}/{CHART}/values.yaml");
    let values: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(values["image"]["tag"], version, "{path}: image.tag");
}
