//! `mesh-ctl` as a user runs it: the built binary against fixture files, a temporary config
//! directory, and a real `mesh-controller` with a node connected over the config stream.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    time::{Duration, Instant},
};

fn mesh_ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mesh-ctl"))
        .args(args)
        .env_remove("TRELLIS_CONTROLLER")
        .env_remove("TRELLIS_CONFIG_DIR")
        .output()
        .expect("running mesh-ctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fixture(path: &str) -> String {
    format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory named after the test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mesh-ctl-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.0.join(name)).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn validate_reports_each_document_with_its_line() {
    let good = mesh_ctl(&["validate", &fixture("validate/good.yaml")]);
    assert!(good.status.success(), "{}{}", stdout(&good), stderr(&good));
    let out = stdout(&good);
    assert!(out.contains("good.yaml:1 (Namespace shop): OK"), "{out}");
    assert!(
        out.contains("good.yaml:8 (PeerAuthentication shop/strict): OK"),
        "{out}"
    );

    let bad = mesh_ctl(&["validate", &fixture("validate")]);
    assert_eq!(bad.status.code(), Some(1), "{}", stdout(&bad));
    let out = stdout(&bad);
    assert!(out.contains("bad.yaml:2 (Pod shop/web): OK"), "{out}");
    assert!(
        out.contains("bad.yaml:6 (PeerAuthentication loose): spec.mtls.mode"),
        "{out}"
    );
    // serde_yaml_ng notices the unclosed mapping at the end of the file (line 16).
    assert!(out.contains("bad.yaml:16: YAML syntax:"), "{out}");
    assert!(out.contains("flow mapping at line 15 column 11"), "{out}");
    assert!(out.contains("2 of 5 documents invalid"), "{out}");

    let json = mesh_ctl(&["validate", "-o", "json", &fixture("validate/bad.yaml")]);
    let results: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let ok: Vec<bool> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ok"].as_bool().unwrap())
        .collect();
    assert_eq!(ok, [true, false, false]);
}

#[test]
fn validate_reads_stdin() {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh-ctl"))
        .args(["validate", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"kind: Namespace\nmetadata: {name: a}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&out), "<stdin>:1 (Namespace a): OK\n");
}

const OTHER_DOCS: &str = "\
# services, hand-formatted
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}   # keep this comment
";

#[test]
fn enroll_edits_only_the_namespace_document() {
    let dir = Scratch::new("enroll");
    let original = format!(
        "{OTHER_DOCS}---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n{OTHER_DOCS}"
    );
    dir.write("all.yaml", &original);
    dir.write("z.yaml", OTHER_DOCS);
    let d = dir.0.to_str().unwrap();

    let out = mesh_ctl(&["enroll", "shop", "--config-dir", d]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("namespace shop enrolled"),
        "{}",
        stdout(&out)
    );
    let edited = dir.read("all.yaml");
    let docs: Vec<&str> = edited.split("---\n").collect();
    assert_eq!(docs.len(), 3, "{edited}");
    assert_eq!(docs[0], OTHER_DOCS);
    assert_eq!(docs[2], OTHER_DOCS);
    let ns: serde_yaml_ng::Value = serde_yaml_ng::from_str(docs[1]).unwrap();
    assert_eq!(
        ns["metadata"]["labels"]["trellis.dev/mesh"].as_str(),
        Some("enabled")
    );
    assert_eq!(dir.read("z.yaml"), OTHER_DOCS);

    let again = mesh_ctl(&["enroll", "shop", "--config-dir", d]);
    assert!(stdout(&again).contains("already enrolled"), "{}", stdout(&again));

    let out = mesh_ctl(&["unenroll", "shop", "--config-dir", d]);
    assert!(out.status.success(), "{}", stderr(&out));
    let edited = dir.read("all.yaml");
    assert!(!edited.contains("trellis.dev/mesh"), "{edited}");
    assert!(
        edited.starts_with(OTHER_DOCS) && edited.ends_with(OTHER_DOCS),
        "{edited}"
    );

    // No Namespace object: enroll creates one, unenroll says so.
    let out = mesh_ctl(&["unenroll", "books", "--config-dir", d]);
    assert!(
        stdout(&out).contains("namespace books is not enrolled"),
        "{}",
        stdout(&out)
    );
    let out = mesh_ctl(&["enroll", "books", "--config-dir", d]);
    assert!(out.status.success(), "{}", stderr(&out));
    let created: serde_yaml_ng::Value = serde_yaml_ng::from_str(&dir.read("namespace-books.yaml")).unwrap();
    assert_eq!(created["metadata"]["name"].as_str(), Some("books"));
    assert_eq!(
        created["metadata"]["labels"]["trellis.dev/mesh"].as_str(),
        Some("enabled")
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn enroll_refuses_a_directory_that_does_not_parse() {
    let dir = Scratch::new("enroll-broken");
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";
    let broken = "kind: Pod\nmetadata: {name: web\n";
    dir.write("ns.yaml", ns);
    dir.write("pods.yaml", broken);
    let out = mesh_ctl(&["enroll", "shop", "--config-dir", dir.0.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("refusing to edit"), "{}", stderr(&out));
    assert!(stderr(&out).contains("pods.yaml"), "{}", stderr(&out));
    assert_eq!(dir.read("ns.yaml"), ns);
    assert_eq!(dir.read("pods.yaml"), broken);
}

#[test]
fn status_without_a_controller_says_what_to_do() {
    let port = free_port();
    let out = mesh_ctl(&["status", "--controller", &format!("127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach the controller's debug endpoint"),
        "{err}"
    );
    assert!(err.contains("TRELLIS_CONTROLLER"), "{err}");
}

#[test]
fn completions_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = mesh_ctl(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        assert!(stdout(&out).contains("proxy-config"), "{shell}");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `mesh-controller` child process, killed on drop.
struct Controller {
    child: Child,
    debug: String,
    listen: String,
    log: PathBuf,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Controller {
    fn start(scratch: &Scratch, config_dir: &Path, tokens: &Path) -> Self {
        let bin = Path::new(env!("CARGO_BIN_EXE_mesh-ctl")).with_file_name("mesh-controller");
        assert!(
            bin.is_file(),
            "{} is missing: run `cargo build -p mesh-controller` first",
            bin.display()
        );
        let listen = format!("127.0.0.1:{}", free_port());
        let debug = format!("127.0.0.1:{}", free_port());
        let log = scratch.0.join("controller.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg("run")
            .arg("--config-dir")
            .arg(config_dir)
            .arg("--ca-dir")
            .arg(scratch.0.join("ca"))
            .arg("--node-tokens")
            .arg(tokens)
            .args(["--listen", &listen, "--debug-addr", &debug])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawning mesh-controller");
        let controller = Self {
            child,
            debug,
            listen,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&controller.listen).is_err()
            || std::net::TcpStream::connect(&controller.debug).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "mesh-controller did not come up; log:\n{}",
                std::fs::read_to_string(&controller.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        controller
    }

    fn ctl(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--controller", &self.debug]);
        mesh_ctl(&all)
    }
}

const TOKEN: &str = "n1-token-0123456789abcdef";

const CLUSTER: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {trellis.dev/mesh: enabled}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  annotations: {trellis.dev/netns: /var/run/netns/web}
spec: {nodeName: n1, serviceAccountName: web}
status: {podIP: 10.1.1.5}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_proxy_config_read_a_real_controller() {
    use mesh_api::config_stream::{
        config_discovery_client::ConfigDiscoveryClient, node_message::Message, Ack, Hello, NodeMessage,
    };

    let scratch = Scratch::new("controller");
    let config = scratch.0.join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("cluster.yaml"), CLUSTER).unwrap();
    let tokens = scratch.write("tokens.yaml", &format!("n1: {TOKEN}\n"));
    let controller = Controller::start(&scratch, &config, &tokens);

    // Before any node: status is fine (no problems, no nodes), proxy-config has nothing.
    let out = controller.ctl(&["status"]);
    assert!(
        stdout(&out).contains("no node has connected"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let out = controller.ctl(&["proxy-config", "n1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("has not acknowledged"), "{}", stderr(&out));

    // Connect as node n1, exactly as mesh-node does, and ACK the first update.
    let root = std::fs::read_to_string(scratch.0.join("ca/root-cert.pem")).unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(root))
        .domain_name("mesh-controller.trellis-system.svc");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", controller.listen))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("connecting to the controller");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(NodeMessage {
        message: Some(Message::Hello(Hello {
            node: "n1".into(),
            applied_version: 0,
        })),
    })
    .await
    .unwrap();
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let mut updates = ConfigDiscoveryClient::new(channel)
        .stream_config(request)
        .await
        .expect("config stream")
        .into_inner();
    let first = updates.message().await.unwrap().expect("a first update");
    assert!(first.full);

    // Sent but not acknowledged yet: STALE, exit 1.
    let out = tokio::task::block_in_place(|| controller.ctl(&["status"]));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("STALE"), "{}", stdout(&out));

    tx.send(NodeMessage {
        message: Some(Message::Ack(Ack {
            version: first.version,
        })),
    })
    .await
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = tokio::task::block_in_place(|| controller.ctl(&["status"]));
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("source:      directory"), "{text}");
    let n1 = text.lines().find(|l| l.starts_with("n1 ")).expect(&text);
    assert!(n1.contains("yes") && n1.contains("in sync"), "{text}");

    let json = tokio::task::block_in_place(|| controller.ctl(&["status", "-o", "json"]));
    let status: mesh_api::status::ControllerStatus = serde_json::from_slice(&json.stdout).unwrap();
    assert!(status.nodes[0].in_sync());

    let out =
        tokio::task::block_in_place(|| controller.ctl(&["proxy-config", "n1", "workloads", "-o", "json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let workloads: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(workloads[0]["name"], "web");
    assert_eq!(workloads[0]["ip"], "10.1.1.5");
    assert_eq!(workloads[0]["netns"], "/var/run/netns/web");

    let out = tokio::task::block_in_place(|| controller.ctl(&["proxy-config", "n1"]));
    let text = stdout(&out);
    assert!(text.contains("node n1 enforces version"), "{text}");
    let web = text.lines().find(|l| l.starts_with("shop/web")).expect(&text);
    assert!(
        web.contains("10.1.1.5") && web.contains("/var/run/netns/web"),
        "{text}"
    );

    let yaml = tokio::task::block_in_place(|| controller.ctl(&["proxy-config", "n1", "all", "-o", "yaml"]));
    let dump: mesh_api::status::ConfigDump = serde_yaml_ng::from_slice(&yaml.stdout).unwrap();
    assert_eq!(dump.config.workloads.len(), 1);

    let out = tokio::task::block_in_place(|| controller.ctl(&["analyze", "--cluster"]));
    assert!(out.status.success(), "{}", stdout(&out));
    drop(updates);
}

#[test]
fn analyze_reports_invalid_documents_and_cross_object_problems() {
    let out = mesh_ctl(&["analyze", &fixture("analyze")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "error: ",
        "istio.yaml:22 (PeerAuthentication broken): spec.mtls.mode",
        "error: VirtualService shop/reviews spec.http[0].route[0].destination.subset: subset v2 is not defined",
        "error: VirtualService shop/reviews spec.http[0].route[1].destination.host: host ratings is neither a Service",
        "error: VirtualService shop/reviews spec.gateways[0]: Gateway shop/public does not exist",
        "warning: AuthorizationPolicy shop/deny-ratings spec.selector.matchLabels: no pod in namespace shop has the labels app=ratings",
        "warning: AuthorizationPolicy shop/deny-ratings spec.action: not enforced by Trellis yet",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }

    let json = mesh_ctl(&["analyze", "-o", "json", &fixture("analyze")]);
    let findings: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(findings["invalid"].as_array().unwrap().len(), 1);
    assert!(findings["diagnostics"].as_array().unwrap().len() >= 5);

    let clean = mesh_ctl(&["analyze", &fixture("analyze/cluster.yaml")]);
    assert!(clean.status.success(), "{}", stdout(&clean));
    assert!(stdout(&clean).contains("no issues found"));
}
