//! The control plane end to end: the controller reads a directory of YAML, compiles each
//! node's config and streams it; nodes apply it whole, ACK or NACK, and keep the last good
//! config while the controller is away. `mesh-ctl` reads the real state.
//!
//! Enforcement is observed through PeerAuthentication: a non-mesh pod (`legacy/c`) reaches
//! `shop/b` in plaintext unless a STRICT policy is in force on the node.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{controller, eventually, ok_body, servers, topology::Topology};

const STRICT: &str = "
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
";

/// One node (or two) with shop/a, shop/b (HTTP on 8080) and the non-mesh legacy/c on n1.
fn cluster(test: &str, two_nodes: bool) -> Topology {
    let mut b = Topology::builder(test)
        .node("n1")
        .pod("n1", "shop/a")
        .pod("n1", "shop/b")
        .pod("n1", "legacy/c")
        .enrolled_namespace("shop");
    if two_nodes {
        b = b.node("n2").pod("n2", "shop/e");
    }
    let mut t = b.build().unwrap();
    t.start_all().unwrap();
    servers::http(&t.pod("b").netns, 8080);
    if two_nodes {
        servers::http(&t.pod("e").netns, 8080);
    }
    for node in ["n1", "n2"].iter().take(if two_nodes { 2 } else { 1 }) {
        let running = eventually(Duration::from_secs(5), || (version(&t, node) > 0).then_some(()));
        assert!(running.is_some(), "{node} has no config from the controller");
    }
    t
}

/// Whether the non-mesh pod gets an answer from b (PERMISSIVE) or is refused (STRICT).
fn plaintext_reaches_b(t: &Topology) -> bool {
    let url = format!("http://{}:8080/", t.pod("b").addr);
    t.pod("c").curl(&url).status.success()
}

fn control(t: &Topology, node: &str) -> Value {
    t.node(node).mesh().admin("/control")
}

fn version(t: &Topology, node: &str) -> u64 {
    control(t, node)["version"].as_u64().expect("version")
}

fn syncz(t: &Topology) -> Value {
    t.controller.as_ref().expect("controller").debug("/debug/syncz")
}

/// The controller's sync state of `node` (`null` until the node has connected once).
fn node_sync(t: &Topology, node: &str) -> Value {
    syncz(t)["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["node"] == node)
        .cloned()
        .unwrap_or(Value::Null)
}

fn in_sync(t: &Topology, node: &str) -> bool {
    let n = node_sync(t, node);
    n["connected"] == true && n["version_sent"] == n["version_acked"] && n["version_acked"].as_u64() > Some(0)
}

/// Waits until `node` runs a version newer than `than`; returns it and how long it took.
fn wait_version_above(t: &Topology, node: &str, than: u64, limit: Duration) -> Option<(u64, Duration)> {
    let start = Instant::now();
    eventually(limit, || {
        let v = version(t, node);
        (v > than).then(|| (v, start.elapsed()))
    })
}

#[test]
fn edits_apply_within_a_second_and_broken_files_change_nothing() {
    let t = cluster("cp_edits", false);
    assert!(plaintext_reaches_b(&t), "PERMISSIVE by default");
    let before = version(&t, "n1");
    assert!(before > 0, "the node runs a config from the controller");

    // An edit: enforced by the node within one second of the file landing.
    t.set_yaml("policy.yaml", Some(STRICT)).unwrap();
    let (after, took) = wait_version_above(&t, "n1", before, Duration::from_secs(5))
        .expect("the node never got the new config");
    eprintln!("config edit -> node applied in {} ms", took.as_millis());
    assert!(took <= Duration::from_secs(1), "took {took:?}");
    assert!(!plaintext_reaches_b(&t), "STRICT is not enforced");
    assert!(eventually(Duration::from_secs(3), || in_sync(&t, "n1").then_some(())).is_some());
    let metrics = t.node("n1").mesh().admin_text("/metrics");
    assert!(
        metrics.contains(&format!("trellis_config_version {after}\n")),
        "{metrics}"
    );

    // A broken file (an unknown field): reported with file, document, object and field;
    // nothing changes on the node.
    t.set_yaml(
        "broken.yaml",
        Some("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: typo, namespace: shop}\nspec: {mtls: {mod: DISABLE}}\n"),
    )
    .unwrap();
    let problem = eventually(Duration::from_secs(3), || {
        syncz(&t)["problems"].as_array().and_then(|p| p.first().cloned())
    })
    .expect("the controller did not report the broken file");
    assert!(
        problem["origin"]
            .as_str()
            .unwrap()
            .ends_with("broken.yaml document 1 (PeerAuthentication typo)"),
        "{problem}"
    );
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.mtls.mod: unknown field `mod`"),
        "{problem}"
    );
    // A YAML syntax error is reported with its line.
    t.set_yaml("broken.yaml", Some("kind: Namespace\nmetadata: {name: x\n"))
        .unwrap();
    let syntax = eventually(Duration::from_secs(3), || {
        let p = syncz(&t)["problems"][0]["message"].as_str()?.to_string();
        p.contains("line").then_some(p)
    });
    assert!(syntax.is_some(), "no line in {}", syncz(&t));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        version(&t, "n1"),
        after,
        "a broken directory changed the node's config"
    );
    assert!(
        !plaintext_reaches_b(&t),
        "the last good config (STRICT) must stay in force"
    );

    // Fixed: the next edit applies again.
    t.set_yaml("broken.yaml", None).unwrap();
    t.set_yaml("policy.yaml", None).unwrap();
    wait_version_above(&t, "n1", after, Duration::from_secs(5)).expect("no config after the fix");
    assert!(syncz(&t)["problems"].as_array().unwrap().is_empty());
    assert!(plaintext_reaches_b(&t), "STRICT removed, plaintext allowed again");
}

#[test]
fn nodes_keep_enforcing_while_the_controller_is_away_then_resync() {
    let mut t = cluster("cp_controller_down", true);
    let e_url = format!("http://{}:8080/", t.pod("e").addr);
    let before = version(&t, "n1");
    t.set_yaml("policy.yaml", Some(STRICT)).unwrap();
    let strict_version = wait_version_above(&t, "n1", before, Duration::from_secs(5))
        .map(|(v, _)| v)
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || (!plaintext_reaches_b(&t))
        .then_some(()))
    .is_some());

    t.controller.as_mut().unwrap().kill();
    assert!(
        eventually(Duration::from_secs(5), || (control(&t, "n1")["connected"]
            == false)
            .then_some(()))
        .is_some(),
        "the node did not notice the controller is gone"
    );
    // Edits while the controller is down reach nobody; the nodes keep what they have.
    t.set_yaml("policy.yaml", None).unwrap();
    ok_body(&t.pod("a").curl(&e_url));
    assert!(
        !plaintext_reaches_b(&t),
        "STRICT must stay in force without a controller"
    );
    assert_eq!(version(&t, "n1"), strict_version);

    // The controller returns: nodes reconnect (backoff), get a full snapshot, converge.
    t.restart_controller().unwrap();
    assert!(
        eventually(Duration::from_secs(20), || (in_sync(&t, "n1")
            && in_sync(&t, "n2"))
        .then_some(()))
        .is_some(),
        "nodes did not resync: {}",
        syncz(&t)
    );
    assert!(
        eventually(Duration::from_secs(5), || plaintext_reaches_b(&t).then_some(())).is_some(),
        "the edit made while the controller was down was not applied after it returned"
    );
    ok_body(&t.pod("a").curl(&e_url));
    let n1 = node_sync(&t, "n1");
    assert_eq!(
        n1["applied_at_connect"], strict_version,
        "the node said what it ran: {n1}"
    );
}

#[test]
fn a_restarted_node_gets_the_snapshot_again_and_mesh_ctl_shows_it() {
    let mut t = cluster("cp_node_restart", false);
    assert!(eventually(Duration::from_secs(5), || in_sync(&t, "n1").then_some(())).is_some());
    t.node_mut("n1").mesh_mut().terminate();
    assert!(
        eventually(Duration::from_secs(5), || (node_sync(&t, "n1")["connected"]
            == false)
            .then_some(()))
        .is_some()
    );
    t.start("n1").unwrap();
    assert!(eventually(Duration::from_secs(10), || in_sync(&t, "n1").then_some(())).is_some());
    assert!(version(&t, "n1") > 0);
    ok_body(&t.pod("a").curl(&format!("http://{}:8080/", t.pod("b").addr)));

    // mesh-ctl, run where the controller's debug endpoint is (the fabric namespace).
    let fabric = t.fabric();
    let cgroup = t.cgroup.join("controller");
    let mesh_ctl = |args: &[&str]| {
        fabric
            .command(controller::mesh_ctl(), &cgroup)
            .args(args)
            .output()
            .expect("mesh-ctl runs")
    };
    let status = mesh_ctl(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "mesh-ctl status: {text}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(text.contains("n1"), "{text}");
    let dump = mesh_ctl(&["proxy-config", "n1", "workloads", "-o", "json"]);
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let dump: Value = serde_json::from_slice(&dump.stdout).expect("proxy-config -o json");
    let text = dump.to_string();
    assert!(
        text.contains("\"shop\"") && text.contains(&t.pod("b").addr.to_string()),
        "{text}"
    );

    // A pod of the mesh the node cannot find (no sandbox from the CNI plugin, no kubelet
    // cgroup): status says which and why, and fails, instead of the pod silently running
    // outside the mesh.
    t.set_yaml(
        "ghost.yaml",
        Some("apiVersion: v1\nkind: Pod\nmetadata: {name: ghost, namespace: shop, uid: 9a8b7c6d-1111-2222-3333-444455556666}\nspec: {nodeName: n1}\nstatus: {podIP: 10.1.99.2}\n"),
    )
    .unwrap();
    let shown = eventually(Duration::from_secs(10), || {
        let out = mesh_ctl(&["status"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("shop/ghost")
            .then_some((out.status.success(), text))
    });
    let (succeeded, text) = shown.unwrap_or_else(|| panic!("status never named shop/ghost: {}", syncz(&t)));
    assert!(!succeeded, "status succeeded with a pod not enrolled: {text}");
    assert!(text.contains("NOT ENROLLED"), "{text}");
    assert!(
        text.contains("no kubelet cgroup for pod UID 9a8b7c6d-1111-2222-3333-444455556666"),
        "{text}"
    );
    assert!(text.contains("2/3"), "two of three pods enrolled: {text}");
}

/// `mesh-ctl` run where the controller's debug endpoint is (the fabric namespace).
fn mesh_ctl(t: &Topology, args: &[&str]) -> std::process::Output {
    t.fabric()
        .command(controller::mesh_ctl(), &t.cgroup.join("controller"))
        .args(args)
        .output()
        .expect("mesh-ctl runs")
}

#[test]
fn a_pod_claiming_another_pods_address_is_skipped_with_a_reason_and_the_rest_applies() {
    let t = cluster("cp_clash", false);
    let before = version(&t, "n1");
    let workloads = |t: &Topology| -> Vec<String> {
        let w = t.node("n1").mesh().admin("/workloads");
        w["workloads"]
            .as_object()
            .expect("workloads")
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(workloads(&t), ["shop/a", "shop/b"]);
    // A running pod claiming b's address, and a completed one that used to have a's (as a
    // finished Job's pod keeps it). Before: the node refused the whole version.
    let clash = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: impostor, namespace: shop, annotations: {{trellis.dev/netns: {}}}}}\nspec: {{nodeName: n1}}\nstatus: {{podIP: {}, phase: Running}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: job, namespace: shop, annotations: {{trellis.dev/netns: {}}}}}\nspec: {{nodeName: n1}}\nstatus: {{podIP: {}, phase: Succeeded}}\n",
        t.pod("b").netns.name,
        t.pod("b").addr,
        t.pod("a").netns.name,
        t.pod("a").addr,
    );
    t.set_yaml("clash.yaml", Some(&clash)).unwrap();
    let (applied, _) = wait_version_above(&t, "n1", before, Duration::from_secs(5))
        .expect("the node did not apply the config with the clash");
    assert!(
        eventually(Duration::from_secs(5), || in_sync(&t, "n1").then_some(())).is_some(),
        "{}",
        syncz(&t)
    );
    assert!(node_sync(&t, "n1")["last_nack"].is_null(), "{}", syncz(&t));
    assert!(control(&t, "n1")["last_nack"].is_null());
    // a stays enrolled (the completed pod does not count); b and the impostor are out.
    assert!(
        eventually(Duration::from_secs(5), || (workloads(&t) == ["shop/a"])
            .then_some(()))
        .is_some(),
        "{:?}",
        workloads(&t)
    );
    ok_body(&t.pod("a").curl(&format!("http://{}:8080/", t.pod("b").addr)));

    // proxy-config shows the skipped pods with the reason; the completed pod is not there.
    let dump = mesh_ctl(&t, &["proxy-config", "n1", "skipped", "-o", "json"]);
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let skipped: Value = serde_json::from_slice(&dump.stdout).expect("proxy-config -o json");
    let mut reasons: Vec<(String, String)> = skipped
        .as_array()
        .expect("skipped is a list")
        .iter()
        .map(|s| {
            (
                s["pod"].as_str().unwrap().into(),
                s["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    reasons.sort();
    let b_addr = t.pod("b").addr.to_string();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, "shop/b");
    assert_eq!(reasons[1].0, "shop/impostor");
    assert!(
        reasons[0].1.contains(&format!(
            "address {b_addr} is also claimed by running pod shop/impostor"
        )),
        "{reasons:?}"
    );
    // analyze shows it too, from the controller's view.
    let analyze = mesh_ctl(&t, &["analyze", "--cluster"]);
    let text = String::from_utf8_lossy(&analyze.stdout);
    assert!(
        text.contains("Pod shop/b status.podIP: left out of the mesh"),
        "{text}"
    );

    // Fixed: b is enrolled again.
    t.set_yaml("clash.yaml", None).unwrap();
    wait_version_above(&t, "n1", applied, Duration::from_secs(5)).expect("no config after the fix");
    assert!(
        eventually(Duration::from_secs(5), || (workloads(&t) == ["shop/a", "shop/b"])
            .then_some(()))
        .is_some(),
        "{:?}",
        workloads(&t)
    );
    assert!(eventually(Duration::from_secs(5), || in_sync(&t, "n1").then_some(())).is_some());
}

#[test]
fn sigterm_ends_the_config_streams_and_the_controller_exits_while_traffic_flows() {
    let mut t = cluster("cp_sigterm", true);
    let e_url = format!("http://{}:8080/", t.pod("e").addr);
    let b_url = format!("http://{}:8080/", t.pod("b").addr);
    assert!(
        eventually(Duration::from_secs(5), || (in_sync(&t, "n1")
            && in_sync(&t, "n2"))
        .then_some(()))
        .is_some(),
        "{}",
        syncz(&t)
    );
    let before = [version(&t, "n1"), version(&t, "n2")];

    // SIGTERM while both nodes hold their streams: the controller must be gone within 5 s (a
    // bounded wait, polled every 50 ms), while a client in a keeps requesting e, on the
    // other node, through the tunnel.
    let mut controller = t.controller.take().expect("controller");
    let stop = AtomicBool::new(false);
    let (exited, requests) = std::thread::scope(|s| {
        let traffic = s.spawn(|| {
            let mut outputs = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                outputs.push(t.pod("a").curl(&e_url));
                std::thread::sleep(Duration::from_millis(50));
            }
            outputs
        });
        controller.terminate();
        let exited = controller.wait_exit(Duration::from_secs(5));
        stop.store(true, Ordering::Relaxed);
        (exited, traffic.join().expect("traffic thread"))
    });
    let log = std::fs::read_to_string(&controller.log).unwrap_or_default();
    t.controller = Some(controller);
    let status =
        exited.unwrap_or_else(|| panic!("the controller was still running 5 s after SIGTERM; log:\n{log}"));
    assert!(
        status.success(),
        "the controller exited with {status}; log:\n{log}"
    );
    assert!(log.contains("ending the config stream"), "{log}");
    assert!(!requests.is_empty());
    for out in &requests {
        ok_body(out);
    }
    eprintln!(
        "controller exited after SIGTERM; {} requests through the mesh meanwhile, all answered",
        requests.len()
    );

    // The nodes saw their streams end cleanly (not break), and keep their config.
    for (node, before) in ["n1", "n2"].into_iter().zip(before) {
        assert!(
            eventually(Duration::from_secs(5), || (control(&t, node)["connected"]
                == false)
                .then_some(()))
            .is_some(),
            "{node} did not notice the end of its stream"
        );
        assert_eq!(version(&t, node), before, "{node} kept its config");
        let node_log = t.node(node).mesh().log_text();
        assert!(
            !node_log.contains("config stream broke"),
            "{node}: the stream should end, not break:\n{node_log}"
        );
    }
    ok_body(&t.pod("a").curl(&e_url));
    ok_body(&t.pod("a").curl(&b_url));

    // The next controller: both nodes reconnect, say what they run, and get a full snapshot
    // (a newer version).
    t.restart_controller().unwrap();
    assert!(
        eventually(Duration::from_secs(20), || (in_sync(&t, "n1")
            && in_sync(&t, "n2"))
        .then_some(()))
        .is_some(),
        "nodes did not reconnect: {}",
        syncz(&t)
    );
    for (node, before) in ["n1", "n2"].into_iter().zip(before) {
        let c = control(&t, node);
        assert_eq!(c["connected"], true, "{c}");
        assert!(c["version"].as_u64().unwrap() > before, "{node}: {c}");
        assert_eq!(node_sync(&t, node)["applied_at_connect"], before);
    }
    ok_body(&t.pod("a").curl(&e_url));
}
