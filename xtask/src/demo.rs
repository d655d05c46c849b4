//! `cargo xtask demo`: two nodes and a controller on network namespaces, the real
//! mesh-node, mesh-controller and kernel programs, real traffic (curl), then what the
//! proxies saw.

use std::{net::SocketAddrV4, time::Duration};

use anyhow::Context as _;
use serde_json::Value;
use tests::{eventually, raw, servers, topology::Topology};

pub fn run(keep: bool) -> anyhow::Result<()> {
    crate::interrupt::install();
    println!("\n== topology: controller (CA); node n1 with shop/web, shop/client, legacy/batch; node n2 with shop/remote");
    println!("   namespace shop is enrolled (trellis.dev/mesh=enabled), legacy is not");
    let mut t = Topology::builder("demo")
        .node("n1")
        .node("n2")
        .pod("n1", "shop/web")
        .pod("n1", "shop/client")
        .pod("n1", "legacy/batch")
        .pod("n2", "shop/remote")
        .enrolled_namespace("shop")
        .build()
        .context("building the demo topology (needs root)")?;
    t.start_all()?;
    for node in ["n1", "n2"] {
        let ready = eventually(Duration::from_secs(10), || {
            let certs = t.node(node).mesh().admin("/certs");
            (!certs["certificates"].as_array()?.is_empty()).then_some(())
        });
        ready.with_context(|| format!("{node} obtained no workload certificate"))?;
    }
    let web = t.pod("web");
    let peers = servers::http(&web.netns, 8080);
    let url = format!("http://{}:8080/", web.addr);
    println!(
        "   mesh-node runs on n1 ({}) and n2 ({}); web serves HTTP on {}:8080",
        t.node("n1").addr,
        t.node("n2").addr,
        web.addr
    );

    println!("\n== traffic");
    let show = |who: &str, out: std::process::Output| {
        let body = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        let result = if out.status.success() {
            body.trim().to_string()
        } else {
            format!("failed: {}", err.trim())
        };
        println!("   {who:<38} -> {result}");
    };
    show("curl from shop/client (same node)", t.pod("client").curl(&url));
    show(
        "curl from shop/remote (n2, mTLS tunnel)",
        t.pod("remote").curl(&url),
    );
    show("curl from legacy/batch (not in mesh)", t.pod("batch").curl(&url));
    let n1 = t.node("n1");
    show(
        "curl from n1 itself (like a probe)",
        n1.netns
            .command("curl", &n1.host_cgroup())
            .args(["-sS", "--max-time", "5", &url])
            .output()?,
    );
    let client = t.pod("client");
    let (src, dst) = (client.addr, SocketAddrV4::new(web.addr, 8080));
    client.netns.run(move || raw::send_syn(src, dst, None))?;
    println!(
        "   {:<38} -> sent; the pod guard drops it",
        "raw SYN from shop/client"
    );
    std::thread::sleep(Duration::from_millis(300));
    println!(
        "   web saw peers: {:?} (each caller's own address, on connections the proxies made: \
         compare upstream_src below)",
        peers.all()
    );

    for node in ["n1", "n2"] {
        let mesh = t.node(node).mesh();
        println!("\n== {node} access log (one line per connection)");
        for e in mesh.access_log() {
            println!(
                "   {:<8} {:<12} {:<44} -> {:<16} {:<9} up {:>4} B down {:>4} B  {:<4} upstream_src {}",
                s(&e, "listener"),
                s(&e, "src_workload"),
                s(&e, "src_identity"),
                s(&e, "orig_dst"),
                s(&e, "dst_workload"),
                e["bytes_to_dst"],
                e["bytes_from_dst"],
                s(&e, "result"),
                s(&e, "upstream_src"),
            );
        }
        for l in mesh
            .log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "tls")
        {
            println!(
                "   tls: {} group {} cipher {}",
                s(&l, "message"),
                s(&l, "group"),
                s(&l, "cipher")
            );
        }
    }

    println!(
        "\n== control plane: the nodes run what the controller compiled from {}",
        t.config_dir().display()
    );
    let mesh_ctl = |args: &[&str]| -> anyhow::Result<()> {
        let out = t
            .fabric()
            .command(tests::controller::mesh_ctl(), &t.cgroup.join("controller"))
            .args(args)
            .output()
            .context("running mesh-ctl (cargo build -p mesh-ctl)")?;
        println!("   $ mesh-ctl {}", args.join(" "));
        for line in String::from_utf8_lossy(&out.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
        {
            println!("     {line}");
        }
        Ok(())
    };
    mesh_ctl(&["status"])?;
    mesh_ctl(&["proxy-config", "n1", "workloads"])?;
    let version = |t: &Topology| {
        t.node("n1").mesh().admin("/control")["version"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = version(&t);
    println!("   writing a STRICT PeerAuthentication for shop and a VirtualService into the directory ...");
    t.set_yaml(
        "policy.yaml",
        Some(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: shop}\nspec: {mtls: {mode: STRICT}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web, namespace: shop}\nspec:\n  hosts: [web]\n  http: [{timeout: 2s, route: [{destination: {host: web}}]}]\n",
        ),
    )?;
    let started = std::time::Instant::now();
    eventually(Duration::from_secs(5), || (version(&t) > before).then_some(()))
        .context("n1 did not receive the new config")?;
    println!(
        "   n1 applied config version {} {} ms after the file was written",
        version(&t),
        started.elapsed().as_millis()
    );
    show("curl from legacy/batch (not in mesh)", t.pod("batch").curl(&url));
    show("curl from shop/client (mesh)", t.pod("client").curl(&url));
    mesh_ctl(&["analyze", "--cluster"])?;

    println!("\n== n1 admin: workloads and certificates");
    let mesh = t.node("n1").mesh();
    if let Some(map) = mesh.admin("/workloads")["workloads"].as_object() {
        for (name, w) in map {
            println!(
                "   {name:<12} ip {:<10} veth {:<10} netns cookie {}",
                s(&w["workload"], "ip"),
                s(&w["datapath"], "host_iface"),
                w["datapath"]["netns_cookie"]
            );
        }
    }
    let certs = mesh.admin("/certs");
    for c in certs["certificates"].as_array().into_iter().flatten() {
        println!(
            "   cert {} serial {} issuer {}",
            s(c, "identity"),
            s(c, "serial"),
            s(c, "issuer")
        );
    }
    println!("   CA: {}", certs["ca"]);
    let dp = mesh.admin("/datapath");
    println!("   kernel counters: {}", dp["counters"]);
    println!("   pinned links:    {}", dp["links"]);

    if keep {
        println!("\n== the mesh keeps running; Ctrl-C tears it down. From another shell:");
        println!(
            "   ip netns exec {} curl -s localhost:15000/datapath   # live map contents",
            n1.netns.name
        );
        println!("   ip netns exec {} curl -s localhost:15000/certs", n1.netns.name);
        println!(
            "   tail -f {}                       # the node's JSON log",
            mesh.log.display()
        );
        println!("   clients must run in the node's cgroup to be captured, e.g.");
        println!(
            "   sh -c 'echo $$ > {}/cgroup.procs; exec nsenter --net=/run/netns/{} curl -s {url}'",
            client.cgroup.display(),
            client.netns.name
        );
        while !crate::interrupt::requested() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    println!("\n== tearing down");
    drop(t);
    Ok(())
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("-")
}
