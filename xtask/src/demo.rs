//! `cargo xtask demo`: one node with three pods on network namespaces, the real mesh-node and
//! kernel programs, real traffic (curl), then what the proxy saw.

use std::{
    net::SocketAddrV4,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::Context as _;
use serde_json::Value;
use tests::{raw, servers, topology::Topology};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn run(keep: bool) -> anyhow::Result<()> {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_interrupt as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_interrupt as *const () as libc::sighandler_t);
    }
    println!(
        "\n== building the topology: node n1; pods shop/web, shop/client (enrolled), legacy/batch (not)"
    );
    let mut t = Topology::builder("demo")
        .node("n1")
        .pod("n1", "shop/web")
        .pod("n1", "shop/client")
        .pod("n1", "legacy/batch")
        .enrolled_namespace("shop")
        .build()
        .context("building the demo topology (needs root)")?;
    t.start_all()?;
    let (web, client, batch) = (t.pod("web"), t.pod("client"), t.pod("batch"));
    let peers = servers::http(&web.netns, 8080);
    let url = format!("http://{}:8080/", web.addr);
    println!(
        "   mesh-node is up on n1 ({}); web serves HTTP on {}:8080",
        t.node("n1").addr,
        web.addr
    );

    println!("\n== traffic");
    let show = |who: &str, out: std::process::Output| {
        let body = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        println!(
            "   {who:<32} -> {}",
            if out.status.success() {
                body.trim().to_string()
            } else {
                format!("failed: {}", err.trim())
            }
        );
    };
    show("curl from shop/client (enrolled)", client.curl(&url));
    show("curl from legacy/batch (not)", batch.curl(&url));
    let n1 = t.node("n1");
    show(
        "curl from the node itself",
        n1.netns
            .command("curl", &n1.host_cgroup())
            .args(["-sS", "--max-time", "5", &url])
            .output()?,
    );
    let (src, dst) = (client.addr, SocketAddrV4::new(web.addr, 8080));
    client.netns.run(move || raw::send_syn(src, dst, None))?;
    println!(
        "   {:<32} -> sent; the pod guard should drop it",
        "raw SYN from shop/client"
    );
    std::thread::sleep(Duration::from_millis(300));
    println!(
        "   web saw peers: {:?} (the node proxy, never the callers directly)",
        peers.all()
    );

    let mesh = n1.mesh();
    println!("\n== access log (one line per connection)");
    for e in mesh.access_log() {
        println!(
            "   {:<8} {:<14} {:<21} -> {:<17} {:<10} up {:>4} B  down {:>4} B  {}",
            s(&e, "listener"),
            s(&e, "src_workload"),
            s(&e, "src_addr"),
            s(&e, "orig_dst"),
            s(&e, "dst_workload"),
            e["bytes_to_dst"],
            e["bytes_from_dst"],
            s(&e, "result"),
        );
    }
    println!("\n== admin: enrolled workloads");
    let workloads = mesh.admin("/workloads");
    if let Some(map) = workloads["workloads"].as_object() {
        for (name, w) in map {
            println!(
                "   {name:<14} ip {:<10} sa {:<12} veth {} netns cookie {}",
                s(&w["workload"], "ip"),
                s(&w["workload"], "service_account"),
                s(&w["datapath"], "host_iface"),
                w["datapath"]["netns_cookie"]
            );
        }
    }
    println!("\n== admin: kernel counters and pinned links");
    let dp = mesh.admin("/datapath");
    println!("   counters: {}", dp["counters"]);
    println!("   links:    {}", dp["links"]);

    if keep {
        println!("\n== the mesh keeps running; Ctrl-C tears it down. From another shell:");
        println!(
            "   ip netns exec {} curl -s localhost:15000/datapath   # live map contents",
            n1.netns.name
        );
        println!(
            "   ip netns exec {} curl -s localhost:15000/workloads",
            n1.netns.name
        );
        println!(
            "   tail -f {}                       # the node's JSON log",
            mesh.log.display()
        );
        println!("   note: run clients in the node's cgroup to be captured, e.g.");
        println!(
            "   sh -c 'echo $$ > {}/cgroup.procs; exec nsenter --net=/run/netns/{} curl -s {url}'",
            client.cgroup.display(),
            client.netns.name
        );
        while !INTERRUPTED.load(Ordering::SeqCst) {
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
