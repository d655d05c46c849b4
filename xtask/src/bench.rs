//! `cargo xtask bench`: Trellis against the direct path and a standard proxy (HAProxy), on
//! one network-namespace topology, every arm in the same run, interleaved, several rounds.
//!
//! Topology: node n1 with a client pod, node n2 with a server pod, joined by veths through a
//! fabric bridge (198.18.0.0/15 only). Two pairs of pods: `mesh/*` (enrolled: the
//! trellis-mtls arm) and `plain/*` (not enrolled: the direct and HAProxy arms). Arms that
//! vary a node setting get a pair of nodes of their own with the same placement
//! ([`PAIR_ARMS`]): trellis-tcp (n3, n4: `--tunnel-security plaintext`, pods `meshtcp/*`) and
//! trellis-mtls-node-src (n5, n6: `--preserve-source-address=false`, pods `meshsrc/*`).
//!
//! CPU discipline on 2 cores: this process (servers) and the load generator run on CPU 0,
//! the proxies (mesh-node, HAProxy) on CPU 1. A run whose generator used most of its core is
//! marked `generator_saturated` and left out of the summary.

pub mod loadgen;
mod procfs;
mod summary;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use serde::Serialize;
use tests::{eventually, topology::Topology};

use crate::cargo;
pub use procfs::process_cpu_secs;
use procfs::{context_switches, pin_to_cpu, rss_kib};
use summary::summarize;

#[derive(Args)]
pub struct BenchArgs {
    /// A smoke-test profile (well under five minutes).
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Every rate, connection count and workload, three rounds.
    #[arg(long)]
    full: bool,
    /// Arms to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    arms: Vec<Arm>,
    /// Where results.jsonl and summary.md go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Overrides for a focused run (profiling, an experiment): the profile's request rates,
    #[arg(long, value_delimiter = ',')]
    rates: Vec<u32>,
    /// connection counts,
    #[arg(long, value_delimiter = ',')]
    connections: Vec<u32>,
    /// seconds per run,
    #[arg(long)]
    duration_secs: Option<u64>,
    /// rounds,
    #[arg(long)]
    rounds: Option<u32>,
    /// and workload kinds (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    workloads: Vec<WorkloadKind>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    /// HTTP/1.1 keep-alive at fixed rates.
    Http,
    /// A new connection per request.
    Connect,
    /// iperf3 streams.
    Bulk,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arm {
    /// Client to server over the veths, no proxy: the floor.
    Direct,
    /// Through both node proxies, the tunnel in plain TCP (no TLS): what mTLS costs.
    TrellisTcp,
    /// Through both node proxies and the mTLS tunnel.
    TrellisMtls,
    /// As trellis-mtls, the proxies dialling from the node's address instead of the client's
    /// (`--preserve-source-address=false`): what source preservation costs.
    TrellisMtlsNodeSrc,
    /// HAProxy on both nodes, plain TCP between them.
    HaproxyTcp,
    /// HAProxy on both nodes, TLS between them.
    HaproxyTls,
}

impl Arm {
    fn name(self) -> &'static str {
        match self {
            Arm::Direct => "direct",
            Arm::TrellisTcp => "trellis-tcp",
            Arm::TrellisMtls => "trellis-mtls",
            Arm::TrellisMtlsNodeSrc => "trellis-mtls-node-src",
            Arm::HaproxyTcp => "haproxy-tcp",
            Arm::HaproxyTls => "haproxy-tls",
        }
    }
}

/// A Trellis arm on its own pair of nodes, because what it varies is a node setting.
struct PairArm {
    arm: Arm,
    nodes: [&'static str; 2],
    namespace: &'static str,
    client: &'static str,
    server: &'static str,
    node_args: &'static [&'static str],
}

const PAIR_ARMS: [PairArm; 2] = [
    PairArm {
        arm: Arm::TrellisTcp,
        nodes: ["n3", "n4"],
        namespace: "meshtcp",
        client: "tclient",
        server: "tserver",
        node_args: &["--tunnel-security", "plaintext"],
    },
    PairArm {
        arm: Arm::TrellisMtlsNodeSrc,
        nodes: ["n5", "n6"],
        namespace: "meshsrc",
        client: "sclient",
        server: "sserver",
        node_args: &["--preserve-source-address=false"],
    },
];

/// The client pod, server pod and (for Trellis) the proxy nodes of an arm.
fn placement(arm: Arm) -> (&'static str, &'static str, &'static [&'static str]) {
    match arm {
        Arm::Direct | Arm::HaproxyTcp | Arm::HaproxyTls => ("pclient", "pserver", &[]),
        Arm::TrellisMtls => ("mclient", "mserver", &["n1", "n2"]),
        _ => PAIR_ARMS
            .iter()
            .find(|p| p.arm == arm)
            .map(|p| (p.client, p.server, &p.nodes[..]))
            .expect("every other arm is a pair arm"),
    }
}

struct Profile {
    rates: Vec<u32>,
    connections: Vec<u32>,
    duration_secs: u64,
    rounds: u32,
    bulk_streams: Vec<u32>,
    kinds: Vec<WorkloadKind>,
}

impl Profile {
    fn with_overrides(mut self, args: &BenchArgs) -> Self {
        if !args.rates.is_empty() {
            self.rates = args.rates.clone();
        }
        if !args.connections.is_empty() {
            self.connections = args.connections.clone();
        }
        self.duration_secs = args.duration_secs.unwrap_or(self.duration_secs);
        self.rounds = args.rounds.unwrap_or(self.rounds);
        if !args.workloads.is_empty() {
            self.kinds = args.workloads.clone();
        }
        self
    }

    fn workloads(&self) -> Vec<Workload> {
        let mut workloads = Vec::new();
        if self.kinds.contains(&WorkloadKind::Http) {
            for &rate in &self.rates {
                for &connections in &self.connections {
                    workloads.push(Workload::Http { rate, connections });
                }
            }
        }
        if self.kinds.contains(&WorkloadKind::Connect) {
            workloads.push(Workload::Connect { connections: 4 });
        }
        if self.kinds.contains(&WorkloadKind::Bulk) {
            for &streams in &self.bulk_streams {
                workloads.push(Workload::Bulk { streams });
            }
        }
        workloads
    }
}

#[derive(Serialize)]
struct Row {
    arm: &'static str,
    workload: String,
    round: u32,
    #[serde(flatten)]
    measured: loadgen::Measured,
    /// Proxy CPU over the window, in cores (both proxies together).
    proxy_cpu: f64,
    /// Context switches of the proxies' threads per second over the window (both proxies):
    /// each is a sleep and a wakeup, the main cost of a request at moderate rates.
    proxy_switches_per_sec: f64,
    /// Proxy resident memory after the run, KiB, per proxy.
    proxy_rss_kib: Vec<u64>,
    generator_saturated: bool,
    /// Bulk runs only.
    gbit_per_sec: Option<f64>,
    kernel: String,
    cpu_model: String,
    git_rev: String,
}

const ALL_KINDS: [WorkloadKind; 3] = [WorkloadKind::Http, WorkloadKind::Connect, WorkloadKind::Bulk];

/// How long the idle proxies are watched before the first run.
const IDLE_WINDOW: Duration = Duration::from_secs(5);

/// The mesh-node proxies before any load: n1, n2.
struct Idle {
    rss_kib: Vec<u64>,
    switches_per_sec: Vec<f64>,
}

const HTTP_PORT: u16 = 8080;
const ECHO_PORT: u16 = 7000;
const IPERF_PORT: u16 = 5201;

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    crate::interrupt::install();
    // The servers run in this process and the load generator is this binary: measure
    // optimised code, whatever profile `cargo xtask` was built with.
    if cfg!(debug_assertions) {
        cargo::run("cargo", &["build", "--release", "--bins"])?;
        let release = cargo::workspace_root().join("target/release/xtask");
        let status = Command::new(release)
            .arg("bench")
            .args(std::env::args().skip(2))
            .status()?;
        if !status.success() {
            bail!("the release benchmark run failed: {status}");
        }
        return Ok(());
    }
    // Before any thread exists, so every thread of this process (the servers) inherits it.
    pin_to_cpu(0, 0)?;
    let profile = if args.full {
        Profile {
            rates: vec![100, 1000, 5000],
            connections: vec![1, 4, 16],
            duration_secs: 10,
            rounds: 3,
            bulk_streams: vec![1, 4],
            kinds: ALL_KINDS.to_vec(),
        }
    } else if args.quick {
        Profile {
            rates: vec![1000],
            connections: vec![1],
            duration_secs: 3,
            rounds: 1,
            bulk_streams: vec![1],
            kinds: ALL_KINDS.to_vec(),
        }
    } else {
        Profile {
            rates: vec![1000, 5000],
            connections: vec![1, 4],
            duration_secs: 5,
            rounds: 2,
            bulk_streams: vec![1],
            kinds: ALL_KINDS.to_vec(),
        }
    };
    let profile = profile.with_overrides(&args);
    let arms: Vec<Arm> = if args.arms.is_empty() {
        vec![
            Arm::Direct,
            Arm::TrellisTcp,
            Arm::TrellisMtls,
            Arm::TrellisMtlsNodeSrc,
            Arm::HaproxyTcp,
            Arm::HaproxyTls,
        ]
    } else {
        args.arms.clone()
    };
    install_tools()?;
    let release = cargo::workspace_root().join("target/release");
    // The harness starts this mesh-node (and the controller next to it).
    std::env::set_var("TRELLIS_NODE_BIN", release.join("mesh-node"));

    let pair_arms: Vec<&PairArm> = PAIR_ARMS.iter().filter(|p| arms.contains(&p.arm)).collect();
    let mut builder = Topology::builder("bench")
        .node("n1")
        .node("n2")
        .pod("n1", "mesh/mclient")
        .pod("n2", "mesh/mserver")
        .pod("n1", "plain/pclient")
        .pod("n2", "plain/pserver")
        .enrolled_namespace("mesh");
    for p in &pair_arms {
        builder = builder
            .node(p.nodes[0])
            .node(p.nodes[1])
            .pod(p.nodes[0], &format!("{}/{}", p.namespace, p.client))
            .pod(p.nodes[1], &format!("{}/{}", p.namespace, p.server))
            .enrolled_namespace(p.namespace);
    }
    let mut t = builder.build()?;
    let mut nodes = vec!["n1", "n2"];
    nodes.extend(pair_arms.iter().flat_map(|p| p.nodes));
    // One data-plane worker per proxy, as HAProxy's nbthread 1: per-core figures.
    for &node in &nodes {
        let mut node_args = vec!["--worker-threads", "1"];
        if let Some(p) = pair_arms.iter().find(|p| p.nodes.contains(&node)) {
            node_args.extend(p.node_args);
        }
        t.set_node_args(node, &node_args);
    }
    t.start_all()?;
    for &node in &nodes {
        eventually(Duration::from_secs(10), || {
            (!t.node(node).mesh().admin("/certs")["certificates"]
                .as_array()?
                .is_empty())
            .then_some(())
        })
        .with_context(|| format!("{node} got no certificate"))?;
    }
    let pids = |nodes: &[&str]| -> Vec<u32> { nodes.iter().map(|n| t.node(n).mesh().pid()).collect() };
    let mesh_pids = pids(&["n1", "n2"]);
    for pid in pids(&nodes) {
        pin_to_cpu(pid, 1)?;
    }
    let mut servers = vec!["mserver", "pserver"];
    servers.extend(pair_arms.iter().map(|p| p.server));
    for server in servers {
        let ns = &t.pod(server).netns;
        tests::servers::http_body(ns, HTTP_PORT, 1024);
        tests::servers::byte_echo(ns, ECHO_PORT);
    }
    let haproxy = if arms
        .iter()
        .any(|a| matches!(a, Arm::HaproxyTcp | Arm::HaproxyTls))
    {
        start_haproxy(&t, &args.out)?
    } else {
        Vec::new()
    };
    let haproxy_pids: Vec<u32> = haproxy.iter().map(Child::id).collect();

    let env = Environment::read();
    std::fs::create_dir_all(&args.out)?;
    let mut jsonl = std::fs::File::create(args.out.join("results.jsonl"))?;
    let mut rows = Vec::new();
    let idle_rss: Vec<u64> = mesh_pids.iter().map(|p| rss_kib(*p)).collect();
    // Wakeups of an idle proxy: what it costs a node with no traffic.
    let before: Vec<u64> = mesh_pids.iter().map(|p| context_switches(*p)).collect();
    std::thread::sleep(IDLE_WINDOW);
    let idle_switches: Vec<f64> = mesh_pids
        .iter()
        .zip(before)
        .map(|(p, b)| context_switches(*p).saturating_sub(b) as f64 / IDLE_WINDOW.as_secs_f64())
        .collect();

    for round in 1..=profile.rounds {
        for workload in &profile.workloads() {
            for &arm in &arms {
                if crate::interrupt::requested() {
                    bail!("interrupted: tearing the topology down");
                }
                let proxies = match arm {
                    Arm::HaproxyTcp | Arm::HaproxyTls => haproxy_pids.clone(),
                    _ => pids(placement(arm).2),
                };
                let row = measure(&t, arm, workload, profile.duration_secs, &proxies, round, &env)?;
                println!(
                    "bench: round {round} {:<13} {:<28} p50 {:>6} us p99 {:>6} us {:>9.0}/s cpu {:.3} switches/s {:>6.0}{}",
                    arm.name(),
                    row.workload,
                    row.measured.p50_us,
                    row.measured.p99_us,
                    row.measured.achieved_per_sec,
                    row.proxy_cpu,
                    row.proxy_switches_per_sec,
                    row.gbit_per_sec
                        .map(|g| format!(" {g:.2} Gbit/s"))
                        .unwrap_or_default()
                );
                writeln!(jsonl, "{}", serde_json::to_string(&row)?)?;
                rows.push(row);
            }
        }
    }
    let synthetic = synthetic_rss(&t, mesh_pids[0])?;
    let idle = Idle {
        rss_kib: idle_rss,
        switches_per_sec: idle_switches,
    };
    let summary = summarize(&rows, &idle, &synthetic, &env, &profile_name());
    std::fs::write(args.out.join("summary.md"), &summary)?;
    println!("\n{summary}");
    println!("results: {}", args.out.join("results.jsonl").display());
    drop(haproxy);
    Ok(())
}

/// The command that reproduces this run, for the summary.
fn profile_name() -> String {
    let words: Vec<String> = ["cargo", "xtask", "bench"]
        .into_iter()
        .map(String::from)
        .chain(std::env::args().skip(2))
        .collect();
    format!("`{}`", words.join(" "))
}

enum Workload {
    Http { rate: u32, connections: u32 },
    Connect { connections: u32 },
    Bulk { streams: u32 },
}

/// Where a client reaches the server on `port` in each arm.
fn target(t: &Topology, arm: Arm, port: u16) -> (String, std::net::SocketAddr) {
    let n1 = t.node("n1").addr;
    let (client, server, _) = placement(arm);
    match arm {
        Arm::HaproxyTcp => (client.into(), (n1, 20_000 + port % 1000).into()),
        Arm::HaproxyTls => (client.into(), (n1, 21_000 + port % 1000).into()),
        _ => (client.into(), (t.pod(server).addr, port).into()),
    }
}

fn measure(
    t: &Topology,
    arm: Arm,
    workload: &Workload,
    secs: u64,
    proxies: &[u32],
    round: u32,
    env: &Environment,
) -> anyhow::Result<Row> {
    let xtask = std::env::current_exe()?;
    let cpu_before: f64 = proxies.iter().map(|p| process_cpu_secs(*p).unwrap_or(0.0)).sum();
    let switches_before: u64 = proxies.iter().map(|p| context_switches(*p)).sum();
    let started = std::time::Instant::now();
    let (name, measured, gbit) = match workload {
        Workload::Http { rate, connections } => {
            let (client, addr) = target(t, arm, HTTP_PORT);
            let out = pod_output(
                t,
                &client,
                &xtask,
                &[
                    "loadgen",
                    "http",
                    "--target",
                    &addr.to_string(),
                    "--rate",
                    &rate.to_string(),
                    "--connections",
                    &connections.to_string(),
                    "--duration-secs",
                    &secs.to_string(),
                ],
            )?;
            (
                format!("http {rate}/s x{connections} conn"),
                serde_json::from_str(&out)?,
                None,
            )
        }
        Workload::Connect { connections } => {
            let (client, addr) = target(t, arm, ECHO_PORT);
            let out = pod_output(
                t,
                &client,
                &xtask,
                &[
                    "loadgen",
                    "connect",
                    "--target",
                    &addr.to_string(),
                    "--connections",
                    &connections.to_string(),
                    "--duration-secs",
                    &secs.to_string(),
                ],
            )?;
            (
                format!("connect+1B x{connections}"),
                serde_json::from_str(&out)?,
                None,
            )
        }
        Workload::Bulk { streams } => {
            let server = placement(arm).1;
            let (client, addr) = target(t, arm, IPERF_PORT);
            let s = t.pod(server);
            let mut iperf_server = s
                .netns
                .command("iperf3", &t.cgroup.join("controller"))
                .args(["-s", "-1", "-p", &IPERF_PORT.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            std::thread::sleep(Duration::from_millis(300));
            let out = pod_output(
                t,
                &client,
                Path::new("iperf3"),
                &[
                    "-c",
                    &addr.ip().to_string(),
                    "-p",
                    &addr.port().to_string(),
                    "-t",
                    &secs.to_string(),
                    "-P",
                    &streams.to_string(),
                    "-J",
                ],
            );
            let _ = iperf_server.kill();
            let _ = iperf_server.wait();
            let json: serde_json::Value = serde_json::from_str(&out?)?;
            let bps = json["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0);
            (
                format!("bulk x{streams} stream"),
                loadgen::Measured::default(),
                Some(bps / 1e9),
            )
        }
    };
    let measured: loadgen::Measured = measured;
    let cpu_after: f64 = proxies.iter().map(|p| process_cpu_secs(*p).unwrap_or(0.0)).sum();
    let switches_after: u64 = proxies.iter().map(|p| context_switches(*p)).sum();
    Ok(Row {
        arm: arm.name(),
        workload: name,
        round,
        generator_saturated: measured.generator_cpu > 0.9,
        measured,
        proxy_cpu: (cpu_after - cpu_before) / started.elapsed().as_secs_f64(),
        proxy_switches_per_sec: switches_after.saturating_sub(switches_before) as f64
            / started.elapsed().as_secs_f64(),
        proxy_rss_kib: proxies.iter().map(|p| rss_kib(*p)).collect(),
        gbit_per_sec: gbit,
        kernel: env.kernel.clone(),
        cpu_model: env.cpu_model.clone(),
        git_rev: env.git_rev.clone(),
    })
}

/// Runs a program inside a client pod (its namespace and cgroup) and returns its stdout.
fn pod_output(t: &Topology, pod: &str, program: &Path, args: &[&str]) -> anyhow::Result<String> {
    let p = t.pod(pod);
    let out = p
        .netns
        .command(program, &p.cgroup)
        .args(args)
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} {:?} in {pod}: {}",
            program.display(),
            args,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// HAProxy on both nodes: n1 listens on 20xxx (TCP) and 21xxx (to n2 over TLS), n2 forwards
/// to the plain server. Ports: xxx = the server port modulo 1000.
fn start_haproxy(t: &Topology, out: &Path) -> anyhow::Result<Vec<Child>> {
    let dir = out.join("haproxy");
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = mesh_controller::ca::generate_root("haproxy-bench")?;
    std::fs::write(dir.join("server.pem"), format!("{cert}{key}"))?;
    let (n1, n2, server) = (t.node("n1").addr, t.node("n2").addr, t.pod("pserver").addr);
    let mut first = String::from("global\n  maxconn 4000\n  nbthread 1\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n");
    let mut second = first.clone();
    for port in [HTTP_PORT, ECHO_PORT, IPERF_PORT] {
        let p = port % 1000;
        first += &format!(
            "listen tcp{p}\n  bind {n1}:{}\n  server s {n2}:{}\n",
            20_000 + p,
            20_500 + p
        );
        first += &format!(
            "listen tls{p}\n  bind {n1}:{}\n  server s {n2}:{} ssl verify none\n",
            21_000 + p,
            21_500 + p
        );
        second += &format!(
            "listen tcp{p}\n  bind {n2}:{}\n  server s {server}:{port}\n",
            20_500 + p
        );
        second += &format!(
            "listen tls{p}\n  bind {n2}:{} ssl crt {}\n  server s {server}:{port}\n",
            21_500 + p,
            dir.join("server.pem").display()
        );
    }
    let mut children = Vec::new();
    for (node, config) in [("n1", first), ("n2", second)] {
        let path = dir.join(format!("{node}.cfg"));
        std::fs::write(&path, config)?;
        let n = t.node(node);
        let child = n
            .netns
            .command("haproxy", &n.host_cgroup())
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{node}.log")))?)
            .spawn()
            .context("starting haproxy")?;
        std::thread::sleep(Duration::from_millis(200));
        pin_to_cpu(child.id(), 1)?;
        children.push(child);
    }
    Ok(children)
}

fn install_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = ["haproxy", "iperf3"]
        .into_iter()
        .filter(|t| which(t).is_none())
        .collect();
    if !missing.is_empty() {
        cargo::run("apt-get", &["update", "-qq"])?;
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(&missing);
        cargo::run("apt-get", &args)?;
    }
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

struct Environment {
    kernel: String,
    cpu_model: String,
    git_rev: String,
}

impl Environment {
    fn read() -> Self {
        let cmd = |p: &str, a: &[&str]| {
            Command::new(p)
                .args(a)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default()
        };
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            })
            .unwrap_or_default();
        Self {
            kernel: cmd("uname", &["-r"]),
            cpu_model,
            git_rev: cmd("git", &["rev-parse", "--short", "HEAD"]),
        }
    }
}

/// mesh-node's resident memory with 1k and 10k synthetic workloads in the config: enrolled
/// pods on a node that does not exist, which every real node keeps as tunnel endpoints.
fn synthetic_rss(t: &Topology, pid: u32) -> anyhow::Result<Vec<(usize, u64)>> {
    let mut out = Vec::new();
    for n in [1_000usize, 10_000] {
        let mut yaml = String::from("apiVersion: v1\nkind: Node\nmetadata: {name: synthetic}\nstatus: {addresses: [{type: InternalIP, address: 198.18.0.99}]}\n");
        for i in 0..n {
            yaml += &format!(
                // Each its own netns path: pods naming one namespace are skipped as clashing.
                "---\nkind: Pod\nmetadata: {{name: s{i}, namespace: mesh, annotations: {{trellis.dev/netns: s{i}}}}}\nspec: {{nodeName: synthetic, serviceAccountName: sa{}}}\nstatus: {{podIP: 10.200.{}.{}}}\n",
                i % 50,
                i / 250,
                i % 250 + 1
            );
        }
        t.set_yaml("synthetic.yaml", Some(&yaml))?;
        let loaded = eventually(Duration::from_secs(30), || {
            let w = t.node("n1").mesh().admin("/workloads");
            (w["remote_endpoints"].as_object()?.len() > n).then_some(())
        });
        loaded.with_context(|| format!("n1 did not load {n} synthetic workloads"))?;
        std::thread::sleep(Duration::from_millis(500));
        out.push((n, rss_kib(pid)));
    }
    t.set_yaml("synthetic.yaml", None)?;
    Ok(out)
}
