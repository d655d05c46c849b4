//! End-to-end PeerAuthentication: which plaintext callers reach an enrolled pod, decided by
//! the node from the same YAML Istio users write. Each mode and scope has a positive and a
//! negative case; the table-driven precedence rules are unit-tested in mesh-api.
//!
//! Plaintext callers: `legacy/c`, a non-mesh pod on the node, and a host process of the node
//! (what kubelet probes are). Mesh callers (`shop/a`) are unaffected by any mode.

use std::time::Duration;

use serde_json::Value;
use tests::{eventually, servers, topology::Topology};

const STRICT_NS: &str = "
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
";

const WEB_PERMISSIVE: &str = "
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: PERMISSIVE}
";

const WEB_STRICT_8081_PERMISSIVE: &str = "
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: STRICT}
  portLevelMtls:
    8081: {mode: PERMISSIVE}
";

const MESH_STRICT: &str = "
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
";

const NS_DISABLE: &str = "
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: DISABLE}}
";

#[derive(Clone, Copy, Debug)]
enum Caller {
    NonMeshPod,
    Node,
    MeshPod,
}

struct Setup {
    t: Topology,
    /// Access-log lines expected once the last request's line is written.
    expected: std::cell::Cell<usize>,
}

impl Setup {
    fn new(test: &str, node_args: &[&str]) -> Self {
        let mut t = Topology::builder(test)
            .node("n1")
            .pod("n1", "shop/a")
            .pod("n1", "shop/b")
            .pod("n1", "legacy/c")
            .enrolled_namespace("shop")
            .build()
            .unwrap();
        t.set_pod_label("b", "app", Some("web")).unwrap();
        t.set_node_args("n1", node_args);
        t.start_all().unwrap();
        servers::http(&t.pod("b").netns, 8080);
        servers::http(&t.pod("b").netns, 8081);
        Self {
            t,
            expected: std::cell::Cell::new(0),
        }
    }

    /// Replaces every PeerAuthentication and waits until the node enforces the new set: a
    /// config version after the edit, with as many policies. (Waiting on the count alone
    /// passes at once when one policy replaces another.)
    fn policies(&self, docs: &[&str]) {
        let mesh = self.t.node("n1").mesh();
        let before = mesh.admin("/workloads")["config_version"].as_u64().unwrap_or(0);
        let yaml = docs.join("---\n");
        self.t
            .set_yaml("policies.yaml", (!docs.is_empty()).then_some(yaml.as_str()))
            .unwrap();
        let want = docs.len();
        let applied = eventually(Duration::from_secs(5), || {
            let w = mesh.admin("/workloads");
            let version = w["config_version"].as_u64().unwrap_or(0);
            (version > before && w["peer_authentications"].as_array().map_or(0, Vec::len) == want)
                .then_some(())
        });
        assert!(
            applied.is_some(),
            "the node did not pick up {want} policies after version {before}"
        );
    }

    /// Whether `caller` gets an HTTP answer from b on `port`.
    fn reaches(&self, caller: Caller, port: u16) -> bool {
        let url = format!("http://{}:{port}/", self.t.pod("b").addr);
        let n1 = self.t.node("n1");
        let mut cmd = match caller {
            Caller::NonMeshPod => self.t.pod("c").netns.command("curl", &self.t.pod("c").cgroup),
            Caller::MeshPod => self.t.pod("a").netns.command("curl", &self.t.pod("a").cgroup),
            Caller::Node => n1.netns.command("curl", &n1.host_cgroup()),
        };
        self.expected.set(n1.mesh().access_log().len() + 1);
        cmd.args(["-sS", "--max-time", "3", &url])
            .output()
            .expect("curl")
            .status
            .success()
    }

    fn last_log(&self) -> Value {
        // The line is written when the connection ends, which may be just after curl exits.
        self.t
            .node("n1")
            .mesh()
            .wait_access_log(self.expected.get())
            .pop()
            .expect("an access-log line")
    }
}

#[test]
fn modes_scopes_and_ports() {
    use Caller::*;
    let s = Setup::new("peer_authentication", &[]);

    // No policy: PERMISSIVE by default.
    assert!(s.reaches(NonMeshPod, 8080), "default must accept plaintext");

    // Namespace STRICT: plaintext refused; mesh traffic and node-local probes still pass.
    s.policies(&[STRICT_NS]);
    assert!(!s.reaches(NonMeshPod, 8080), "STRICT accepted a plaintext caller");
    let denied = s.last_log();
    assert_eq!(denied["result"], "denied_plaintext", "{denied}");
    assert!(
        denied["authn"]
            .as_str()
            .unwrap()
            .contains("STRICT (NAMESPACE SCOPE, SHOP/DEFAULT)"),
        "{denied}"
    );
    assert!(s.reaches(Node, 8080), "node-local probe refused under STRICT");
    assert!(s.last_log()["authn"]
        .as_str()
        .unwrap()
        .contains("NODE-LOCAL CALLER EXEMPT"));
    assert!(s.reaches(MeshPod, 8080), "mesh traffic refused under STRICT");

    // A workload policy overrides the namespace: PERMISSIVE for app=web.
    s.policies(&[STRICT_NS, WEB_PERMISSIVE]);
    assert!(
        s.reaches(NonMeshPod, 8080),
        "workload PERMISSIVE did not override namespace STRICT"
    );
    assert!(s.last_log()["authn"]
        .as_str()
        .unwrap()
        .contains("WORKLOAD SCOPE, SHOP/WEB"));

    // Port level: STRICT for the workload, PERMISSIVE on 8081 only.
    s.policies(&[WEB_STRICT_8081_PERMISSIVE]);
    assert!(s.reaches(NonMeshPod, 8081), "port-level PERMISSIVE not applied");
    assert!(
        !s.reaches(NonMeshPod, 8080),
        "the workload's STRICT not applied on other ports"
    );

    // Mesh-wide STRICT in the root namespace; a namespace DISABLE overrides it.
    s.policies(&[MESH_STRICT]);
    assert!(!s.reaches(NonMeshPod, 8080), "mesh-wide STRICT not applied");
    s.policies(&[MESH_STRICT, NS_DISABLE]);
    assert!(
        s.reaches(NonMeshPod, 8080),
        "namespace DISABLE did not override mesh STRICT"
    );
    assert!(s.last_log()["authn"].as_str().unwrap().starts_with("DISABLE"));

    // Back to nothing.
    s.policies(&[]);
    assert!(s.reaches(NonMeshPod, 8080));
}

/// `--strict-exempt-node=false`: node-local callers get no exemption.
#[test]
fn node_exemption_can_be_turned_off() {
    let s = Setup::new("no_node_exemption", &["--strict-exempt-node=false"]);
    assert!(s.reaches(Caller::Node, 8080), "PERMISSIVE must accept the node");
    s.policies(&[STRICT_NS]);
    assert!(
        !s.reaches(Caller::Node, 8080),
        "the node was exempt although the exemption is off"
    );
    assert_eq!(s.last_log()["result"], "denied_plaintext");
}
