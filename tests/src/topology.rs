//! The builder for a test's cluster: nodes (a netns each, joined by a fabric bridge) and pods
//! (a netns each, wired to their node by a veth pair), the cgroups their processes run in,
//! and the YAML directory every node reads.
//!
//! Addressing (only inside the test's own namespaces):
//! - node i: `198.18.0.i/24` on its uplink; routes `10.j.0.0/16 via 198.18.0.j` to node j;
//! - pod k on node i: `10.i.k.2/30`, the host side of its veth `10.i.k.1/30`, default route
//!   through it (a ptp CNI); the host side is named `v<tag>p<k>`;
//! - with [`TopologyBuilder::bridge_cni`], as a bridge CNI wires them: every pod's veth is a
//!   port of the node's bridge `cni0` (`10.i.0.1/16`), pod k is `10.i.k.2/16` with its default
//!   route through the bridge, and no route names the pod's veth;
//! - [`Topology::enable_ipv6`] adds `fd00:i:k::2/64` to pod k (host side `fd00:i:k::1/64`).
//!
//! cgroups: `<cgroup2>/trellis-tests/<tag>/<node>/{proxy,pods,host}`. The node's programs
//! attach at `<node>`; `proxy` holds mesh-node, `pods` the pods' processes, `host` the
//! node-local processes. The test process itself is in none of them, so its in-process
//! clients are never captured (they stand for remote hosts and raw attackers).

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};

use crate::{
    controller::{self, Controller},
    netns::{ip, Netns},
    node::MeshNode,
};

pub struct NodeSpec {
    name: String,
}

pub struct PodSpec {
    node: String,
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
    uid: Option<String>,
}

/// Collects the shape of the cluster; [`TopologyBuilder::build`] creates it.
pub struct TopologyBuilder {
    test: String,
    nodes: Vec<NodeSpec>,
    pods: Vec<PodSpec>,
    enrolled: Vec<String>,
    cert_ttl_secs: Option<u64>,
    bridge_cni: bool,
}

impl TopologyBuilder {
    /// Wires pods as a bridge CNI does (see the module docs).
    pub fn bridge_cni(mut self) -> Self {
        self.bridge_cni = true;
        self
    }

    pub fn node(mut self, name: &str) -> Self {
        self.nodes.push(NodeSpec { name: name.into() });
        self
    }

    /// A pod `namespace/name` on `node`.
    pub fn pod(mut self, node: &str, namespace_name: &str) -> Self {
        let (namespace, name) = namespace_name.split_once('/').expect("pod as namespace/name");
        self.pods.push(PodSpec {
            node: node.into(),
            namespace: namespace.into(),
            name: name.into(),
            labels: BTreeMap::new(),
            uid: None,
        });
        self
    }

    /// A pod `namespace/name` on `node` as a cluster has it: with a UID and no netns
    /// annotation, so the node has to find its namespace itself (the kubelet's cgroups).
    pub fn kubelet_pod(mut self, node: &str, namespace_name: &str, uid: &str) -> Self {
        self = self.pod(node, namespace_name);
        self.pods.last_mut().expect("just added").uid = Some(uid.into());
        self
    }

    /// Labels the namespace `trellis.dev/mesh=enabled`.
    pub fn enrolled_namespace(mut self, namespace: &str) -> Self {
        self.enrolled.push(namespace.into());
        self
    }

    /// Lifetime of workload certificates the nodes ask for (short ones exercise renewal).
    pub fn cert_ttl_secs(mut self, secs: u64) -> Self {
        self.cert_ttl_secs = Some(secs);
        self
    }

    pub fn build(self) -> anyhow::Result<Topology> {
        crate::require_privileges();
        let tag = tag(&self.test);
        let cgroup = cgroup2_root()?.join("trellis-tests").join(&tag);
        let dir = std::env::temp_dir().join("trellis-tests").join(&tag);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("config"))?;
        let mut topo = Topology {
            tag: tag.clone(),
            dir,
            cgroup,
            bpffs: PathBuf::from("/sys/fs/bpf/trellis-tests").join(&tag),
            fabric: None,
            nodes: Vec::new(),
            pods: Vec::new(),
            namespaces: BTreeMap::new(),
            controller: None,
            cert_ttl_secs: self.cert_ttl_secs,
            extra_args: BTreeMap::new(),
        };
        std::fs::create_dir_all(&topo.cgroup).context("creating the test cgroup")?;
        let fabric = Netns::new(&format!("{tag}-fabric"))?;
        ip(&["-n", &fabric.name, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &fabric.name, "link", "set", "br0", "up"])?;
        topo.fabric = Some(fabric);

        for (i, spec) in self.nodes.iter().enumerate() {
            let index = i as u8 + 1;
            let ns = Netns::new(&format!("{tag}-{}", spec.name))?;
            let up = format!("f{tag}n{index}");
            ip(&[
                "link",
                "add",
                "eth0",
                "netns",
                &ns.name,
                "type",
                "veth",
                "peer",
                "name",
                &up,
                "netns",
                &format!("{tag}-fabric"),
            ])?;
            ip(&[
                "-n",
                &format!("{tag}-fabric"),
                "link",
                "set",
                &up,
                "master",
                "br0",
                "up",
            ])?;
            let addr = Ipv4Addr::new(198, 18, 0, index);
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns.name, "link", "set", "eth0", "up"])?;
            ns.run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
                .context("enabling forwarding")?;
            let cgroup = topo.cgroup.join(&spec.name);
            for sub in ["proxy", "pods", "host"] {
                std::fs::create_dir_all(cgroup.join(sub))?;
            }
            topo.nodes.push(Node {
                name: spec.name.clone(),
                index,
                addr,
                netns: ns,
                cgroup,
                mesh: None,
            });
        }
        for node in &topo.nodes {
            for other in &topo.nodes {
                if other.index != node.index {
                    ip(&[
                        "-n",
                        &node.netns.name,
                        "route",
                        "add",
                        &format!("10.{}.0.0/16", other.index),
                        "via",
                        &other.addr.to_string(),
                    ])?;
                }
            }
        }
        for (k, spec) in self.pods.into_iter().enumerate() {
            let k = k as u8 + 1;
            let node = topo
                .nodes
                .iter()
                .find(|n| n.name == spec.node)
                .with_context(|| format!("no node {}", spec.node))?;
            let ns = Netns::new(&format!("{tag}-{}", spec.name))?;
            let host_if = format!("v{tag}p{k}");
            ip(&[
                "link",
                "add",
                &host_if,
                "netns",
                &node.netns.name,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns.name,
            ])?;
            let addr = Ipv4Addr::new(10, node.index, k, 2);
            let (gateway, prefix) = if self.bridge_cni {
                let bridge_addr = Ipv4Addr::new(10, node.index, 0, 1);
                if ip(&["-n", &node.netns.name, "link", "show", "cni0"]).is_err() {
                    ip(&["-n", &node.netns.name, "link", "add", "cni0", "type", "bridge"])?;
                    ip(&[
                        "-n",
                        &node.netns.name,
                        "addr",
                        "add",
                        &format!("{bridge_addr}/16"),
                        "dev",
                        "cni0",
                    ])?;
                    ip(&["-n", &node.netns.name, "link", "set", "cni0", "up"])?;
                }
                ip(&["-n", &node.netns.name, "link", "set", &host_if, "master", "cni0"])?;
                (bridge_addr, 16)
            } else {
                let host_addr = Ipv4Addr::new(10, node.index, k, 1);
                ip(&[
                    "-n",
                    &node.netns.name,
                    "addr",
                    "add",
                    &format!("{host_addr}/30"),
                    "dev",
                    &host_if,
                ])?;
                (host_addr, 30)
            };
            ip(&["-n", &node.netns.name, "link", "set", &host_if, "up"])?;
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{addr}/{prefix}"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns.name, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &ns.name,
                "route",
                "add",
                "default",
                "via",
                &gateway.to_string(),
            ])?;
            topo.pods.push(Pod {
                namespace: spec.namespace.clone(),
                name: spec.name,
                node: spec.node,
                node_index: node.index,
                index: k,
                host_if,
                addr,
                labels: spec.labels,
                uid: spec.uid,
                netns: ns,
                cgroup: node.cgroup.join("pods"),
            });
            topo.namespaces.entry(spec.namespace).or_insert(false);
        }
        for ns in self.enrolled {
            topo.namespaces.insert(ns, true);
        }
        topo.write_config()?;
        // Every topology runs a controller: nodes get their config and identities from it.
        {
            let fabric = topo.fabric.as_ref().expect("fabric");
            ip(&["-n", &fabric.name, "addr", "add", "198.18.0.254/24", "dev", "br0"])?;
            let mut tokens = String::new();
            for n in &topo.nodes {
                let token = random_token()?;
                tokens += &format!("{}: {token}\n", n.name);
                std::fs::write(topo.dir.join(format!("{}.token", n.name)), token)?;
            }
            let cgroup = topo.cgroup.join("controller");
            std::fs::create_dir_all(&cgroup)?;
            let mut c = Controller::new(&topo.dir, &topo.config_dir(), &cgroup, fabric);
            std::fs::write(&c.tokens, tokens)?;
            c.start(fabric)?;
            topo.controller = Some(c);
        }
        Ok(topo)
    }
}

pub struct Node {
    pub name: String,
    pub index: u8,
    pub addr: Ipv4Addr,
    pub netns: Netns,
    /// Where this node's programs attach.
    pub cgroup: PathBuf,
    pub mesh: Option<MeshNode>,
}

impl Node {
    /// cgroup for node-local (host) processes.
    pub fn host_cgroup(&self) -> PathBuf {
        self.cgroup.join("host")
    }

    pub fn mesh(&self) -> &MeshNode {
        self.mesh.as_ref().expect("mesh-node started")
    }

    pub fn mesh_mut(&mut self) -> &mut MeshNode {
        self.mesh.as_mut().expect("mesh-node started")
    }
}

pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub node: String,
    /// The node's index (i in the addressing scheme) and the pod's (k).
    pub node_index: u8,
    pub index: u8,
    /// The host side of the pod's veth, in its node's namespace.
    pub host_if: String,
    pub addr: Ipv4Addr,
    pub labels: BTreeMap<String, String>,
    /// Set for a [`TopologyBuilder::kubelet_pod`].
    pub uid: Option<String>,
    pub netns: Netns,
    /// cgroup the pod's processes run in (inside its node's subtree).
    pub cgroup: PathBuf,
}

impl Pod {
    /// The pod's IPv6 address once [`Topology::enable_ipv6`] ran.
    pub fn addr6(&self) -> std::net::Ipv6Addr {
        std::net::Ipv6Addr::new(0xfd00, self.node_index.into(), self.index.into(), 0, 0, 0, 0, 2)
    }

    /// `probe hold n addr` in the pod (its cgroup: captured like its workload): `n`
    /// connections to a line echo server at `addr`, each checked with one exchange, held
    /// until the returned process's stdin closes. Fails with the probe's complaint when it
    /// could not open them all.
    pub fn hold(&self, n: usize, addr: std::net::SocketAddr) -> anyhow::Result<std::process::Child> {
        use std::io::{BufRead as _, BufReader};
        let mut held = self
            .netns
            .command(crate::node::built_binary("probe"), &self.cgroup)
            .args(["hold", &n.to_string(), &addr.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(held.stdout.take().expect("piped stdout")).read_line(&mut line)?;
        if line != format!("held {n}\n") {
            let _ = held.kill();
            let out = held.wait_with_output()?;
            bail!(
                "probe hold {n} {addr}: {line:?} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(held)
    }

    /// `curl` from inside the pod, as a captured process would run it.
    pub fn curl(&self, url: &str) -> std::process::Output {
        self.netns
            .command("curl", &self.cgroup)
            .args(["-sS", "--max-time", "5", url])
            .output()
            .expect("running curl")
    }
}

pub struct Topology {
    pub tag: String,
    /// Scratch directory: YAML config, node logs.
    pub dir: PathBuf,
    pub cgroup: PathBuf,
    pub bpffs: PathBuf,
    fabric: Option<Netns>,
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    /// Namespace -> enrolled.
    namespaces: BTreeMap<String, bool>,
    pub controller: Option<Controller>,
    cert_ttl_secs: Option<u64>,
    /// Extra `mesh-node run` flags per node.
    extra_args: BTreeMap<String, Vec<String>>,
}

impl Topology {
    /// Starts describing a topology; `test` names everything it creates.
    pub fn builder(test: &str) -> TopologyBuilder {
        TopologyBuilder {
            test: test.into(),
            nodes: Vec::new(),
            pods: Vec::new(),
            enrolled: Vec::new(),
            cert_ttl_secs: None,
            bridge_cni: false,
        }
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).expect("node")
    }

    pub fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name == name).expect("node")
    }

    pub fn pod(&self, name: &str) -> &Pod {
        self.pods.iter().find(|p| p.name == name).expect("pod")
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("config")
    }

    /// Starts `mesh-node` on every node and waits until each is ready.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        for name in names {
            self.start(&name)?;
        }
        Ok(())
    }

    /// Starts (or restarts) `mesh-node` on one node. A previous process that is still
    /// draining keeps running until it exits by itself or the topology is dropped.
    pub fn start(&mut self, node: &str) -> anyhow::Result<()> {
        let dir = self.dir.clone();
        let bpffs = self.bpffs.join(node);
        let mut args = self.extra_args.get(node).cloned().unwrap_or_default();
        if let Some(c) = &self.controller {
            args.extend([
                "--controller-addr".into(),
                controller::ADDR.into(),
                "--controller-root".into(),
            ]);
            args.push(c.ca_dir.join("root-cert.pem").display().to_string());
            args.push("--token-file".into());
            args.push(dir.join(format!("{node}.token")).display().to_string());
            if let Some(ttl) = self.cert_ttl_secs {
                args.extend(["--cert-ttl-secs".into(), ttl.to_string()]);
            }
        }
        let n = self.node_mut(node);
        let previous = n.mesh.take();
        let mesh = MeshNode::start(n, &dir, &bpffs, previous, &args)?;
        n.mesh = Some(mesh);
        Ok(())
    }

    /// Extra flags for a node's next start (e.g. `--strict-exempt-node=false`).
    pub fn set_node_args(&mut self, node: &str, args: &[&str]) {
        self.extra_args
            .insert(node.into(), args.iter().map(|a| a.to_string()).collect());
    }

    /// The fabric namespace (where the controller runs; no node captures anything there).
    pub fn fabric(&self) -> &Netns {
        self.fabric.as_ref().expect("fabric")
    }

    /// Restarts the controller (after changing its CA files, say).
    pub fn restart_controller(&mut self) -> anyhow::Result<()> {
        let fabric = self.fabric.as_ref().expect("fabric");
        let c = self.controller.as_mut().expect("every topology has a controller");
        c.kill();
        c.start(fabric)
    }

    /// Gives every pod (ptp wiring) an IPv6 address and route next to its IPv4 one, and the
    /// nodes IPv6 forwarding: what a dual-stack CNI does. Addresses skip duplicate address
    /// detection, so they are usable at once.
    pub fn enable_ipv6(&self) -> anyhow::Result<()> {
        for node in &self.nodes {
            node.netns
                .run(|| std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1"))
                .context("enabling IPv6 forwarding")?;
        }
        for p in &self.pods {
            let node = self.node(&p.node);
            let host = std::net::Ipv6Addr::new(0xfd00, p.node_index.into(), p.index.into(), 0, 0, 0, 0, 1);
            ip(&[
                "-n",
                &node.netns.name,
                "-6",
                "addr",
                "add",
                &format!("{host}/64"),
                "dev",
                &p.host_if,
                "nodad",
            ])?;
            ip(&[
                "-n",
                &p.netns.name,
                "-6",
                "addr",
                "add",
                &format!("{}/64", p.addr6()),
                "dev",
                "eth0",
                "nodad",
            ])?;
            ip(&[
                "-n",
                &p.netns.name,
                "-6",
                "route",
                "add",
                "default",
                "via",
                &host.to_string(),
            ])?;
        }
        Ok(())
    }

    /// What kube-proxy (nftables mode) does for a Service: on every node, connections to
    /// `vip` (from pods, forwarded, or from the node itself) are DNATed to `backend`.
    pub fn kube_proxy_service(
        &self,
        vip: std::net::SocketAddrV4,
        backend: std::net::SocketAddrV4,
    ) -> anyhow::Result<()> {
        for node in &self.nodes {
            kube_proxy_dnat(&node.netns, *vip.ip(), vip.port(), backend)?;
        }
        Ok(())
    }

    /// What kube-proxy does for a NodePort whose endpoint runs on `node`: connections to the
    /// node's address and `port` are DNATed to `backend`.
    pub fn kube_proxy_node_port(
        &self,
        node: &str,
        port: u16,
        backend: std::net::SocketAddrV4,
    ) -> anyhow::Result<()> {
        let n = self.node(node);
        kube_proxy_dnat(&n.netns, n.addr, port, backend)
    }

    /// Writes (or, with `None`, removes) an extra YAML file in the config directory,
    /// atomically.
    pub fn set_yaml(&self, name: &str, yaml: Option<&str>) -> anyhow::Result<()> {
        let path = self.config_dir().join(name);
        match yaml {
            Some(text) => {
                let tmp = self.config_dir().join(format!(".{name}.tmp"));
                std::fs::write(&tmp, text)?;
                std::fs::rename(&tmp, &path)?;
            }
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(())
    }

    /// Enrolls or unenrolls a namespace by rewriting the YAML the nodes watch.
    pub fn set_namespace_enrolled(&mut self, namespace: &str, enrolled: bool) -> anyhow::Result<()> {
        self.namespaces.insert(namespace.into(), enrolled);
        self.write_config()
    }

    /// Sets or removes a pod label (e.g. `trellis.dev/mesh=disabled`).
    pub fn set_pod_label(&mut self, pod: &str, key: &str, value: Option<&str>) -> anyhow::Result<()> {
        let p = self.pods.iter_mut().find(|p| p.name == pod).expect("pod");
        match value {
            Some(v) => p.labels.insert(key.into(), v.into()),
            None => p.labels.remove(key),
        };
        self.write_config()
    }

    /// The cluster as Kubernetes YAML, written atomically (temp file + rename) so a node
    /// never reads half a file.
    fn write_config(&self) -> anyhow::Result<()> {
        let mut yaml = String::new();
        for n in &self.nodes {
            yaml += &format!(
                "apiVersion: v1\nkind: Node\nmetadata: {{name: {}}}\nstatus: {{addresses: [{{type: InternalIP, address: {}}}]}}\n---\n",
                n.name, n.addr
            );
        }
        for (ns, enrolled) in &self.namespaces {
            let labels = if *enrolled {
                "{trellis.dev/mesh: enabled}"
            } else {
                "{}"
            };
            yaml += &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {labels}}}\n---\n"
            );
        }
        for p in &self.pods {
            let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let found_by = match &p.uid {
                Some(uid) => format!("uid: {uid}"),
                None => format!("annotations: {{trellis.dev/netns: {}}}", p.netns.name),
            };
            yaml += &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\n  labels: {{{}}}\n  {found_by}\nspec: {{nodeName: {}, serviceAccountName: {}-sa}}\nstatus: {{podIP: {}}}\n---\n",
                p.name, p.namespace, labels.join(", "), p.node, p.name, p.addr
            );
        }
        let tmp = self.config_dir().join(".cluster.yaml.tmp");
        std::fs::write(&tmp, yaml)?;
        std::fs::rename(&tmp, self.config_dir().join("cluster.yaml"))?;
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Processes first (they hold namespaces and pins), then the programs' pins, then the
        // namespaces (deleting a veth detaches its guards), then the cgroups.
        for n in &mut self.nodes {
            n.mesh.take();
        }
        self.controller.take();
        let _ = std::fs::write(self.cgroup.join("cgroup.kill"), "1");
        let _ = std::fs::remove_dir_all(&self.bpffs);
        self.pods.clear();
        self.nodes.clear();
        self.fabric.take();
        remove_cgroup_tree(&self.cgroup);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One DNAT rule in a `kube-proxy` table of `ns` (prerouting for forwarded and incoming
/// traffic, output for the node's own processes), as kube-proxy's nftables mode installs.
fn kube_proxy_dnat(
    ns: &Netns,
    ip: Ipv4Addr,
    port: u16,
    backend: std::net::SocketAddrV4,
) -> anyhow::Result<()> {
    ns.nft(&format!(
        "table ip kube-proxy {{
  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}
  chain output {{ type nat hook output priority -100; policy accept; }}
}}
add rule ip kube-proxy prerouting ip daddr {ip} tcp dport {port} dnat to {backend}
add rule ip kube-proxy output ip daddr {ip} tcp dport {port} dnat to {backend}
"
    ))
}

/// Removes a cgroup directory tree bottom-up (cgroupfs only allows rmdir of empty groups).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(Result::ok) {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            // Busy until the killed processes are reaped.
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

fn random_token() -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A short tag from the test name and the process id: interface names have 15 bytes.
fn tag(test: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    test.hash(&mut h);
    std::process::id().hash(&mut h);
    format!("{:05x}", h.finish() & 0xfffff)
}

pub fn cgroup2_root() -> anyhow::Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    for line in mountinfo.lines() {
        if let Some((before, after)) = line.split_once(" - ") {
            if after.starts_with("cgroup2 ") {
                if let Some(mp) = before.split_whitespace().nth(4) {
                    return Ok(PathBuf::from(mp));
                }
            }
        }
    }
    bail!("no cgroup2 mount found")
}
