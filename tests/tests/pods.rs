//! Pods the way a kubelet makes them: sandboxes wired by the CNI reference plugins (bridge +
//! host-local) chained with `trellis-cni`, run as containerd runs them (`tests::cni`), and
//! pods that ran before the agent found through a kubelet's cgroup layout. The pods' YAML
//! carries a UID and no `trellis.dev/netns` annotation, as in a cluster.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;
use tests::{
    cni::{self, Runtime, Sandbox},
    eventually, field,
    netns::Netns,
    node::{self, built_binary},
    ok_body, servers,
    topology::{Node, Topology},
};

const WEB_UID: &str = "3c0e2b1a-7d7c-4c1e-9a55-0b6c1d2e3f40";
const OTHER_UID: &str = "5d1f3c2b-8e8d-4d2f-8b66-1c7d2e3f4a51";

/// The node's CNI directories (the runtime's `/etc/cni/net.d` and `/opt/cni/bin`), with a
/// primary CNI's configuration list in place: the bridge plugin on `cni0`.
struct CniDirs {
    conf: PathBuf,
    bin: PathBuf,
    primary: Value,
}

impl CniDirs {
    fn new(t: &Topology, node: &str) -> Self {
        let primary = cni::bridge_conflist("cni0", "10.1.200.0/24", &t.dir.join(format!("{node}-ipam")));
        Self::with_primary(t, node, primary)
    }

    fn with_primary(t: &Topology, node: &str, primary: Value) -> Self {
        let conf = t.dir.join(format!("{node}-net.d"));
        let bin = t.dir.join(format!("{node}-cni-bin"));
        std::fs::create_dir_all(&conf).unwrap();
        let me = Self { conf, bin, primary };
        me.write_primary();
        me
    }

    fn list(&self) -> PathBuf {
        self.conf.join("10-pods.conflist")
    }

    /// What the primary CNI writes when it (re)starts: its own list, without us.
    fn write_primary(&self) {
        std::fs::write(self.list(), serde_json::to_vec_pretty(&self.primary).unwrap()).unwrap();
    }

    fn current(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.list()).unwrap()).unwrap()
    }

    fn chains_us(&self) -> bool {
        let list = self.current();
        let types: Vec<&str> = list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["type"].as_str())
            .collect();
        types.len() == 2 && types[1] == "trellis-cni"
    }

    /// The node's container runtime: the reference plugins, and trellis-cni where the agent
    /// copied it.
    fn runtime<'a>(&self, node: &'a Node) -> Runtime<'a> {
        Runtime::new(
            &node.netns,
            &node.host_cgroup(),
            &self.conf,
            &[Path::new(cni::REFERENCE_PLUGINS), &self.bin],
        )
    }

    fn node_args(&self) -> Vec<String> {
        let mut args = vec!["--cni-conf-dir".to_string()];
        args.push(self.conf.display().to_string());
        args.push("--cni-bin-dir".into());
        args.push(self.bin.display().to_string());
        args.push("--cni-plugin".into());
        args.push(built_binary("trellis-cni").display().to_string());
        args
    }
}

fn pod_yaml(namespace: &str, name: &str, uid: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, uid: {uid}}}\nspec: {{nodeName: {node}, serviceAccountName: {name}-sa}}\n"
    )
}

/// n1 with the mesh pod `shop/b` (a server), `legacy` known but not enrolled, and the agent
/// chaining `trellis-cni` into the bridge CNI's list.
fn cni_node(test: &str) -> (Topology, CniDirs) {
    cni_node_with(test, |t| CniDirs::new(t, "n1"))
}

fn cni_node_with(test: &str, dirs: impl FnOnce(&Topology) -> CniDirs) -> (Topology, CniDirs) {
    let mut t = Topology::builder(test)
        .node("n1")
        .pod("n1", "shop/b")
        .pod("n1", "legacy/x")
        .enrolled_namespace("shop")
        .build()
        .unwrap();
    let dirs = dirs(&t);
    let args = dirs.node_args();
    t.set_node_args("n1", &args.iter().map(String::as_str).collect::<Vec<_>>());
    t.start("n1").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || dirs.chains_us().then_some(())).is_some(),
        "the agent did not chain trellis-cni into {}: {:#}",
        dirs.list().display(),
        dirs.current()
    );
    t.set_yaml(
        "kubelet-pods.yaml",
        Some(&format!(
            "{}---\n{}",
            pod_yaml("shop", "web", WEB_UID, "n1"),
            pod_yaml("legacy", "other", OTHER_UID, "n1")
        )),
    )
    .unwrap();
    (t, dirs)
}

fn sandbox(netns: &Netns, namespace: &str, name: &str, uid: &str, container_id: &str) -> Sandbox {
    Sandbox {
        container_id: container_id.into(),
        netns: netns.path(),
        namespace: namespace.into(),
        name: name.into(),
        uid: uid.into(),
    }
}

/// `curl` from a pod namespace in the node's pod cgroup: a process of the pod.
fn curl_from(t: &Topology, ns: &Netns, url: &str) -> std::process::Output {
    ns.command("curl", &t.node("n1").cgroup.join("pods"))
        .args(["-sS", "--max-time", "5", url])
        .output()
        .unwrap()
}

fn enrolled(t: &Topology, pod: &str) -> bool {
    !t.node("n1").mesh().admin("/workloads")["workloads"][pod].is_null()
}

/// ADD of a pod of an enrolled namespace returns only once the pod is captured, so its very
/// first connection goes through the proxy, under its own identity; the primary plugin's
/// result comes back unchanged; CHECK agrees; DEL releases the pod. A pod of a namespace
/// outside the mesh is passed through untouched and is not captured. Without the plugin's
/// wait, the first connect could leave uncaptured; without the sandbox hand-over, the node
/// would never find the pod (its YAML names no namespace).
#[test]
fn a_mesh_pod_is_captured_before_its_add_returns_and_released_by_its_del() {
    let (t, dirs) = cni_node("cni_add_check_del");
    let n1 = t.node("n1");
    let b = t.pod("b");
    let peers = servers::http(&b.netns, 8080);
    let mut runtime = dirs.runtime(n1);
    let web_ns = Netns::new(&format!("{}-web", t.tag)).unwrap();
    let web = sandbox(&web_ns, "shop", "web", WEB_UID, "sandbox-web-1");

    let results = runtime
        .add(&web)
        .unwrap()
        .unwrap_or_else(|e| panic!("ADD failed: {e}\n{}", n1.mesh().log_text()));
    assert_eq!(results.len(), 2, "bridge, then trellis-cni");
    assert_eq!(
        results[1], results[0],
        "trellis-cni passes the bridge's result on unchanged"
    );
    let web_ip = cni::result_ipv4(&results[1]).expect("an address from host-local");
    // The agent answered the ADD only once the pod was enrolled: its "enrolled" line comes
    // before its answer, and the answer was Enrolled (not "not in the mesh").
    let events: Vec<Value> = n1
        .mesh()
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let position = |what: &dyn Fn(&Value) -> bool| events.iter().position(what);
    let enrolled_at = position(&|e| e["message"] == "enrolled" && e["workload"] == "shop/web")
        .unwrap_or_else(|| panic!("no enrolled line for shop/web: {events:#?}"));
    let answered_at = position(&|e| e["message"] == "CNI request" && e["pod"] == "shop/web")
        .unwrap_or_else(|| panic!("no CNI request logged: {events:#?}"));
    assert_eq!(
        events[answered_at]["reply"], "Enrolled",
        "{:#}",
        events[answered_at]
    );
    assert!(
        enrolled_at < answered_at,
        "answered before enrolling: {events:#?}"
    );
    // The pod's first connection, right after ADD returned.
    let body = ok_body(&curl_from(&t, &web_ns, &format!("http://{}:8080/", b.addr)));
    assert!(body.starts_with("peer="), "{body}");
    let log = n1.mesh().wait_access_log(1);
    assert_eq!(field(&log[0], "src_workload"), "shop/web", "{log:#?}");
    assert!(field(&log[0], "src_addr").starts_with(&format!("{web_ip}:")));
    assert_eq!(peers.all().len(), 1);

    runtime
        .check(&web)
        .unwrap()
        .unwrap_or_else(|e| panic!("CHECK failed: {e}"));

    // A pod outside the mesh: untouched, not captured.
    let other_ns = Netns::new(&format!("{}-other", t.tag)).unwrap();
    let other = sandbox(&other_ns, "legacy", "other", OTHER_UID, "sandbox-other-1");
    let results = runtime
        .add(&other)
        .unwrap()
        .expect("a pod outside the mesh starts");
    assert_eq!(results[1], results[0]);
    ok_body(&curl_from(&t, &other_ns, &format!("http://{}:8080/", b.addr)));
    // It reaches the mesh pod b as any non-mesh client does: through b's inbound side, as
    // nobody's workload.
    let log = n1.mesh().wait_access_log(2);
    assert_eq!(field(&log[1], "listener"), "inbound", "{log:#?}");
    assert_eq!(field(&log[1], "src_workload"), "-", "{log:#?}");
    assert!(field(&log[1], "src_addr").starts_with("10.1.200."), "{log:#?}");
    assert!(!enrolled(&t, "legacy/other"));

    // DEL: the node forgets the sandbox, and the pod, still in the API, is no longer
    // enrolled: nothing is left pinned for it.
    assert!(runtime.del(&web).unwrap().is_empty(), "DEL never fails");
    assert!(
        eventually(Duration::from_secs(5), || (!enrolled(&t, "shop/web"))
            .then_some(()))
        .is_some(),
        "still enrolled after DEL: {:#}",
        n1.mesh().admin("/workloads")
    );
    let failed = n1.mesh().admin("/workloads")["failed"].to_string();
    assert!(
        failed.contains("shop/web") && failed.contains("no sandbox reported by trellis-cni"),
        "{failed}"
    );
    assert!(runtime.del(&other).unwrap().is_empty());
}

/// While the agent is down, a pod of an enrolled namespace fails ADD with CNI's "try again
/// later" (code 11), from the namespaces the agent left on disk, and starts captured once the
/// agent is back; a pod of any other namespace starts meanwhile. Without the file the plugin
/// could not tell the two apart and would have to block everyone, or no one.
#[test]
fn with_the_agent_down_mesh_pods_wait_and_other_pods_start() {
    let (mut t, dirs) = cni_node("cni_agent_down");
    let peers = servers::http(&t.pod("b").netns, 8080);
    let b_addr = t.pod("b").addr;
    // The config naming both pods reached the node (so the file lists shop).
    assert!(eventually(Duration::from_secs(5), || {
        let w = t.node("n1").mesh().admin("/workloads");
        w["failed"].to_string().contains("shop/web").then_some(())
    })
    .is_some());
    t.node_mut("n1").mesh_mut().kill();

    let (web_ns, other_ns) = (
        Netns::new(&format!("{}-web", t.tag)).unwrap(),
        Netns::new(&format!("{}-other", t.tag)).unwrap(),
    );
    let web = sandbox(&web_ns, "shop", "web", WEB_UID, "sandbox-web-1");
    let other = sandbox(&other_ns, "legacy", "other", OTHER_UID, "sandbox-other-1");
    {
        let n1 = t.node("n1");
        let mut runtime = dirs.runtime(n1);
        let refused = runtime
            .add(&web)
            .unwrap()
            .expect_err("a mesh pod must wait for the agent");
        assert_eq!(
            (refused.plugin.as_str(), refused.code),
            ("trellis-cni", 11),
            "{refused}"
        );
        assert!(refused.msg.contains("does not answer"), "{refused}");
        runtime
            .add(&other)
            .unwrap()
            .expect("a pod outside the mesh starts without the agent");
        assert!(runtime.del(&other).unwrap().is_empty());
    }

    t.start("n1").unwrap();
    let n1 = t.node("n1");
    let mut runtime = dirs.runtime(n1);
    // The kubelet's retry.
    runtime
        .add(&web)
        .unwrap()
        .unwrap_or_else(|e| panic!("ADD after the agent came back: {e}\n{}", n1.mesh().log_text()));
    ok_body(&curl_from(&t, &web_ns, &format!("http://{b_addr}:8080/")));
    let log = n1.mesh().wait_access_log(1);
    assert_eq!(field(&log[0], "src_workload"), "shop/web");
    assert_eq!(peers.all().len(), 1);
    assert!(runtime.del(&web).unwrap().is_empty());
}

/// The primary CNI rewriting its list (as it does on every restart) drops our entry; the
/// agent puts it back within seconds. `mesh-node uninstall` takes it out and leaves the list
/// as the primary CNI wrote it, and removes the plugin and the namespaces file.
#[test]
fn the_conflist_is_repaired_after_a_rewrite_and_uninstall_restores_it() {
    let (mut t, dirs) = cni_node("cni_conflist_repair");
    assert!(dirs.bin.join("trellis-cni").is_file(), "the plugin was copied");
    dirs.write_primary();
    assert!(!dirs.chains_us());
    assert!(
        eventually(Duration::from_secs(5), || dirs.chains_us().then_some(())).is_some(),
        "not repaired: {:#}",
        dirs.current()
    );
    let log = t.node("n1").mesh().log_text();
    assert!(
        log.contains("trellis-cni chained into the CNI configuration"),
        "{log}"
    );
    // And the controller (mesh-ctl status) hears where the plugin stands.
    let cni_state = || {
        let syncz = t.controller.as_ref().unwrap().debug("/debug/syncz");
        syncz["nodes"][0]["enrollment"]["cni"].as_str().map(String::from)
    };
    let reported = eventually(Duration::from_secs(5), || {
        cni_state().filter(|c| c.starts_with("chained into"))
    });
    assert!(
        reported
            .as_deref()
            .is_some_and(|c| c.ends_with("10-pods.conflist")),
        "{:?}",
        cni_state()
    );

    t.node_mut("n1").mesh_mut().kill();
    let namespaces_file = t.dir.join("n1-enrolled-namespaces.json");
    assert!(namespaces_file.is_file());
    let n1 = t.node("n1");
    let out = n1
        .netns
        .command(node::binary(), &n1.host_cgroup())
        .arg("uninstall")
        .arg("--bpffs-dir")
        .arg(t.bpffs.join("n1"))
        .arg("--cni-conf-dir")
        .arg(&dirs.conf)
        .arg("--cni-bin-dir")
        .arg(&dirs.bin)
        .arg("--cni-namespaces-file")
        .arg(&namespaces_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        dirs.current(),
        dirs.primary,
        "the list is as the primary CNI wrote it"
    );
    assert!(!dirs.bin.join("trellis-cni").exists());
    assert!(!namespaces_file.exists());
}

/// A pod that ran before the agent (an upgrade, a crash, a reboot) is found from the
/// kubelet's cgroup layout (systemd driver): the pod's UID in its slice, the oldest process
/// there in a namespace other than the node's as its sandbox, that process's network
/// namespace (not a newer container's, which may have moved). A restarted agent finds it again;
/// once the pod's processes are gone it is dropped. Its YAML names no namespace: without the
/// cgroup walk it would never be enrolled.
#[test]
fn pods_that_ran_before_the_agent_are_found_through_the_kubelets_cgroups() {
    let mut t = Topology::builder("kubelet_cgroups")
        .node("n1")
        .kubelet_pod("n1", "shop/web", WEB_UID)
        .pod("n1", "shop/b")
        .enrolled_namespace("shop")
        .build()
        .unwrap();
    let root = t.node("n1").cgroup.join("pods");
    let pod_slice = root.join(format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
        WEB_UID.replace('-', "_")
    ));
    let (monitor_scope, sandbox_scope, app_scope) = (
        pod_slice.join("crio-conmon-aaaa.scope"),
        pod_slice.join("cri-containerd-aaaa.scope"),
        pod_slice.join("cri-containerd-bbbb.scope"),
    );
    for scope in [&monitor_scope, &sandbox_scope, &app_scope] {
        std::fs::create_dir_all(scope).unwrap();
    }
    let web = t.pod("web");
    let n1 = t.node("n1");
    // Oldest first: a runtime monitor in the node's namespace (CRI-O's conmon can sit in the
    // pod's cgroup), the pause container in the pod's, then an application container that
    // moved itself to a namespace of its own. Only the pause container's is the pod's.
    let mut monitor = n1
        .netns
        .command("sleep", &monitor_scope)
        .arg("600")
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let mut pause = web
        .netns
        .command("sleep", &sandbox_scope)
        .arg("600")
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let decoy = Netns::new(&format!("{}-decoy", t.tag)).unwrap();
    let mut app = decoy.command("sleep", &app_scope).arg("600").spawn().unwrap();
    let root_arg = root.display().to_string();
    t.set_node_args("n1", &["--kubelet-cgroup-root", &root_arg]);
    t.start("n1").unwrap();
    let peers = servers::http(&t.pod("b").netns, 8080);
    let b_addr = t.pod("b").addr;

    let is_enrolled = |t: &Topology| enrolled(t, "shop/web");
    assert!(
        eventually(Duration::from_secs(5), || is_enrolled(&t).then_some(())).is_some(),
        "{:#}",
        t.node("n1").mesh().admin("/workloads")
    );
    let curl = |t: &Topology| {
        t.pod("web")
            .netns
            .command("curl", &app_scope)
            .args(["-sS", "--max-time", "5", &format!("http://{b_addr}:8080/")])
            .output()
            .unwrap()
    };
    ok_body(&curl(&t));
    let log = t.node("n1").mesh().wait_access_log(1);
    assert_eq!(field(&log[0], "src_workload"), "shop/web");

    // A new agent finds it again, with nothing from the old one.
    t.node_mut("n1").mesh_mut().kill();
    t.start("n1").unwrap();
    assert!(eventually(Duration::from_secs(5), || is_enrolled(&t).then_some(())).is_some());
    ok_body(&curl(&t));
    assert_eq!(peers.all().len(), 2);

    // The pod's processes end (the pod is gone): it is dropped.
    for p in [&mut app, &mut pause, &mut monitor] {
        let _ = p.kill();
        let _ = p.wait();
    }
    assert!(
        eventually(Duration::from_secs(5), || (!is_enrolled(&t)).then_some(())).is_some(),
        "still enrolled with no process left: {:#}",
        t.node("n1").mesh().admin("/workloads")
    );
    let failed = t.node("n1").mesh().admin("/workloads")["failed"].to_string();
    assert!(failed.contains("has no process yet"), "{failed}");
}

/// A pod of an enrolled namespace that the node cannot capture as it is (macvlan: its
/// interface hangs off the node's uplink, there is no veth to guard) starts anyway, outside
/// the mesh, and the node says why; it is not held back for ever with "try again later".
#[test]
fn a_mesh_pod_that_cannot_be_captured_starts_outside_the_mesh_with_the_reason() {
    let (t, dirs) = cni_node_with("cni_macvlan", |t| {
        let primary = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "pods",
            "plugins": [{
                "type": "macvlan",
                "master": "eth0",
                "mode": "bridge",
                "ipam": {
                    "type": "host-local",
                    "subnet": "198.18.0.0/24",
                    "rangeStart": "198.18.0.100",
                    "rangeEnd": "198.18.0.120",
                    "dataDir": t.dir.join("n1-ipam"),
                }
            }]
        });
        CniDirs::with_primary(t, "n1", primary)
    });
    let n1 = t.node("n1");
    let mut runtime = dirs.runtime(n1);
    let web_ns = Netns::new(&format!("{}-web", t.tag)).unwrap();
    let web = sandbox(&web_ns, "shop", "web", WEB_UID, "sandbox-web-1");
    let started = std::time::Instant::now();
    runtime
        .add(&web)
        .unwrap()
        .unwrap_or_else(|e| panic!("a pod the mesh cannot capture must still start: {e}"));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "it waited for the full ADD timeout"
    );
    assert!(!enrolled(&t, "shop/web"));
    let workloads = n1.mesh().admin("/workloads");
    assert!(
        workloads["unsupported"].to_string().contains("shop/web"),
        "{workloads:#}"
    );
    assert!(
        workloads["failed"]
            .to_string()
            .contains("only veth-attached pods are supported"),
        "{workloads:#}"
    );
    assert!(runtime.del(&web).unwrap().is_empty());
}
