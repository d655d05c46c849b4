//! End-to-end tests of the data path: the real `mesh-node`, the real kernel programs, real
//! clients (curl) in network-namespace pods. Each test names the mechanism it checks; each
//! would fail if that mechanism were removed (noted per test).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, SocketAddrV4},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use tests::{eventually, field, ok_body, raw, servers, topology::Topology, upstream_src};

/// mesh-node's default proxy mark.
const MARK: u32 = 0x539;

fn peer_ip(p: SocketAddr) -> String {
    p.ip().to_string()
}

/// One node running mesh-node, enrolled pods `shop/a` and `shop/b`.
fn enrolled_pair(test: &str) -> Topology {
    let mut t = Topology::builder(test)
        .node("n1")
        .pod("n1", "shop/a")
        .pod("n1", "shop/b")
        .enrolled_namespace("shop")
        .build()
        .unwrap();
    t.start_all().unwrap();
    t
}

/// Enrolled pod -> enrolled pod: connect4 sends the connect to 15001, sockops records the
/// original destination, the proxy attributes it to the source workload and relays it; curl
/// gets the server's answer, which saw a's address (source preservation) on the proxy's own
/// connection (`upstream_src`). Without connect4 there would be no access-log line and the
/// server's peer would be a's own socket.
#[test]
fn enrolled_pod_to_pod_goes_through_the_outbound_listener() {
    let t = enrolled_pair("enrolled_pod_to_pod");
    let (a, b) = (t.pod("a"), t.pod("b"));
    let peers = servers::http(&b.netns, 8080);

    let body = ok_body(&a.curl(&format!("http://{}:8080/hello", b.addr)));

    let peer = peers.all()[0];
    assert_eq!(body, format!("peer={peer}\n"), "curl got the server's answer");
    let log = t.node("n1").mesh().wait_access_log(1);
    let e = &log[0];
    // The server was reached by the node proxy's connection, from a's own address.
    assert_eq!(peer, upstream_src(e), "connection bypassed the proxy");
    assert_eq!(
        peer_ip(peer),
        a.addr.to_string(),
        "the source address was not preserved"
    );
    assert_eq!(field(e, "listener"), "outbound");
    assert_eq!(field(e, "src_workload"), "shop/a");
    assert_eq!(field(e, "dst_workload"), "shop/b");
    assert_eq!(field(e, "orig_dst"), format!("{}:8080", b.addr));
    assert!(field(e, "src_addr").starts_with(&format!("{}:", a.addr)));
    assert_eq!(field(e, "result"), "ok");
    assert!(
        e["bytes_to_dst"].as_u64().unwrap() > 50,
        "request bytes counted: {e}"
    );
    assert!(
        e["bytes_from_dst"].as_u64().unwrap() > 50,
        "response bytes counted: {e}"
    );
    assert!(e["duration_ms"].as_f64().is_some());
    let mesh = t.node("n1").mesh();
    assert_eq!(mesh.counter("redirect_outbound"), 1);
    assert_eq!(mesh.counter("tuple_recorded"), 1);
}

/// The proxy's own connects are exempt by cgroup id. Without the exemption its dial to the
/// enrolled pod b would be captured again (to 15006), and again, in a loop.
#[test]
fn proxy_connections_are_not_captured_again() {
    let t = enrolled_pair("no_redirect_loop");
    let (a, b) = (t.pod("a"), t.pod("b"));
    let peers = servers::http(&b.netns, 8080);
    for _ in 0..5 {
        ok_body(&a.curl(&format!("http://{}:8080/", b.addr)));
    }
    let mesh = t.node("n1").mesh();
    let log = mesh.wait_access_log(5);
    std::thread::sleep(Duration::from_millis(300));
    let log_after = mesh.access_log();
    assert_eq!(
        log_after.len(),
        5,
        "exactly one access-log line per connection: {log:#?}"
    );
    assert!(log_after.iter().all(|e| field(e, "listener") == "outbound"));
    assert_eq!(peers.len(), 5, "the server saw one connection per request");
    assert_eq!(
        mesh.counter("redirect_inbound"),
        0,
        "the proxy's dial to b was captured"
    );
    assert_eq!(mesh.counter("redirect_outbound"), 5);
}

/// A non-enrolled pod and a node-local host process calling an enrolled pod land on 15006.
/// Without the ENROLLED_IPS rule they would connect directly and the to-pod guard would drop
/// them (curl would time out).
#[test]
fn non_enrolled_callers_land_on_the_inbound_listener() {
    let mut t = Topology::builder("non_enrolled_callers")
        .node("n1")
        .pod("n1", "shop/b")
        .pod("n1", "legacy/c")
        .enrolled_namespace("shop")
        .build()
        .unwrap();
    t.start_all().unwrap();
    let (b, c) = (t.pod("b"), t.pod("c"));
    let n1 = t.node("n1");
    let peers = servers::http(&b.netns, 8080);
    let url = format!("http://{}:8080/", b.addr);

    ok_body(&c.curl(&url));
    let host = n1
        .netns
        .command("curl", &n1.host_cgroup())
        .args(["-sS", "--max-time", "5", &url])
        .output()
        .unwrap();
    ok_body(&host);

    let log = n1.mesh().wait_access_log(2);
    for (e, src) in log.iter().zip([c.addr, n1.addr]) {
        assert_eq!(field(e, "listener"), "inbound");
        assert_eq!(field(e, "src_workload"), "-", "non-mesh callers have no workload");
        assert!(field(e, "src_addr").starts_with(&format!("{src}:")), "{e}");
        assert_eq!(field(e, "dst_workload"), "shop/b");
        assert_eq!(field(e, "result"), "ok");
    }
    for (e, peer) in log.iter().zip(peers.all()) {
        assert_eq!(peer, upstream_src(e), "a caller reached b directly");
    }
    assert_eq!(n1.mesh().counter("redirect_inbound"), 2);
}

/// Going around connect() does not get past the proxy, and every drop is counted:
/// - a raw SYN from an enrolled pod (from-pod guard; without it b's TCP stack sees the SYN);
/// - a connect carrying a forged proxy mark from a caller connect4 does not see (the mark is
///   scrubbed crossing namespaces; the divert rule hands it to the inbound listener like any
///   client from the network, so b sees the proxy, never c; the to-pod guard is the second
///   line, see containment.rs for a bridge CNI, where pod-to-pod frames skip the host's IP
///   layer);
/// - a direct connect to 15001 has no original destination and is reset by the proxy.
#[test]
fn bypass_attempts_are_dropped_and_counted() {
    let mut t = Topology::builder("bypass_attempts")
        .node("n1")
        .pod("n1", "shop/a")
        .pod("n1", "shop/b")
        .pod("n1", "legacy/c")
        .enrolled_namespace("shop")
        .build()
        .unwrap();
    t.start_all().unwrap();
    let (a, b, c) = (t.pod("a"), t.pod("b"), t.pod("c"));
    let n1 = t.node("n1");
    let peers = servers::http(&b.netns, 8080);
    let target = SocketAddrV4::new(b.addr, 8080);

    // 1. Raw SYN from the enrolled pod a, with the proxy mark on the socket for good measure.
    let in_segs = b.netns.settled_tcp_counter("InSegs");
    let src = a.addr;
    a.netns
        .run(move || raw::send_syn(src, target, Some(MARK)))
        .expect("raw SYN sent");
    let dropped = eventually(Duration::from_secs(2), || {
        (n1.mesh().counter("guard_from_pod_drop") >= 1).then_some(())
    });
    // Counted means dropped at a's veth: it can no longer reach b.
    assert!(dropped.is_some(), "the from-pod guard did not count the raw SYN");
    assert_eq!(b.netns.tcp_counter("InSegs"), in_segs, "the raw SYN reached b");

    // 2. Forged mark from c, a caller outside the node's cgroup (like a remote host): it
    //    reaches the inbound listener, which relays it to b as a plaintext client.
    let forged = c
        .netns
        .run(move || raw::connect_with_mark(target, MARK, Duration::from_secs(1)));
    drop(forged.expect("the inbound listener accepts a client from the network"));
    let inbound = n1.mesh().wait_access_log(1);
    assert_eq!(field(&inbound[0], "listener"), "inbound", "{}", inbound[0]);
    assert!(field(&inbound[0], "src_addr").starts_with(&format!("{}:", c.addr)));

    // 3. Direct connects to the outbound listener: no original destination, so the proxy
    //    resets them. From the captured pod (curl fails, whichever moment the reset lands)...
    let out = a.curl(&format!("http://{}:15001/", n1.addr));
    assert!(!out.status.success(), "a direct connect to 15001 was served");
    // ...and from a plain client, which sees the handshake complete and then the reset.
    let listener = SocketAddrV4::new(n1.addr, 15001);
    let read = a.netns.run(move || -> std::io::Result<usize> {
        use std::io::Read as _;
        let mut s = std::net::TcpStream::connect_timeout(&listener.into(), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.read(&mut [0u8; 16])
    });
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    let log = n1.mesh().wait_access_log(3);
    assert!(
        log.iter()
            .filter(|e| field(e, "listener") == "outbound")
            .all(|e| field(e, "result") == "no_original_destination"),
        "{log:#?}"
    );

    let relayed: Vec<_> = log
        .iter()
        .filter(|e| field(e, "upstream_src") != "-")
        .map(upstream_src)
        .collect();
    assert_eq!(peers.all(), relayed, "an attempt reached the server directly");
}

/// Restarting the agent keeps the pinned datapath: a connection established through the old
/// process keeps working while it drains, new connects fail closed while no listener is
/// there, and work again through the new process, which swapped its programs into the
/// pinned links. Without pinning the programs would detach on exit and the new connect would
/// go straight to b.
#[test]
fn agent_restart_keeps_established_and_new_connections_working() {
    let mut t = enrolled_pair("agent_restart");
    let b_addr = t.pod("b").addr;
    let echo_peers = servers::echo(&t.pod("b").netns, 7000);
    let http_peers = servers::http(&t.pod("b").netns, 8080);

    let probe = env!("CARGO_BIN_EXE_probe");
    let mut held = t
        .pod("a")
        .netns
        .command(probe, &t.pod("a").cgroup)
        .args(["echo", &format!("{b_addr}:7000")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_held = held.stdin.take().unwrap();
    let mut from_held = BufReader::new(held.stdout.take().unwrap());
    let mut exchange = |word: &str| {
        writeln!(to_held, "{word}").unwrap();
        let mut back = String::new();
        from_held.read_line(&mut back).unwrap();
        back
    };
    assert_eq!(exchange("before"), "before\n");
    assert_eq!(echo_peers.len(), 1);
    assert_eq!(
        t.node("n1").mesh().admin("/stats")["proxy"]["active"],
        1,
        "the held connection bypassed the proxy"
    );

    t.node_mut("n1").mesh_mut().terminate();
    let closed = eventually(Duration::from_secs(5), || {
        t.node("n1")
            .mesh()
            .log_text()
            .contains("shutting down")
            .then_some(())
    });
    assert!(closed.is_some(), "mesh-node did not start shutting down");

    // No agent listening: a new connect is refused, not sent around the proxy.
    let out = t.pod("a").curl(&format!("http://{b_addr}:8080/"));
    assert!(!out.status.success(), "connected with no proxy listening");
    assert!(http_peers.is_empty(), "the connect went around the proxy");
    assert_eq!(
        exchange("draining"),
        "draining\n",
        "the established connection broke"
    );

    t.start("n1").unwrap();
    assert!(
        t.node("n1").mesh().log_text().contains("kept pinned link"),
        "links were not reused"
    );
    ok_body(&t.pod("a").curl(&format!("http://{b_addr}:8080/")));
    assert_eq!(http_peers.len(), 1);
    let log = t.node("n1").mesh().wait_access_log(1);
    let after = log
        .iter()
        .find(|e| field(e, "result") == "ok")
        .expect("an access-log line after restart");
    assert_eq!(
        http_peers.all()[0],
        upstream_src(after),
        "after restart the connect bypassed the proxy"
    );
    assert_eq!(
        exchange("after"),
        "after\n",
        "the established connection broke after restart"
    );

    // The old process exits once its last connection is done.
    drop(to_held);
    let _ = held.wait();
    assert!(
        t.node_mut("n1").mesh_mut().wait_drained(Duration::from_secs(10)),
        "the old agent did not finish draining"
    );
    // Kernel counters live in pinned maps: they survived the restart.
    assert!(t.node("n1").mesh().counter("redirect_outbound") >= 3);
}

/// With the proxy killed, enrolled pods' connects still go to 15001, where nothing listens:
/// refused, fail closed. Without pinned links the programs would vanish with the process.
#[test]
fn killed_proxy_fails_closed() {
    let mut t = enrolled_pair("killed_proxy");
    let peers = servers::http(&t.pod("b").netns, 8080);
    let url = format!("http://{}:8080/", t.pod("b").addr);
    ok_body(&t.pod("a").curl(&url));

    t.node_mut("n1").mesh_mut().kill();
    let out = t.pod("a").curl(&url);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Couldn't connect") || err.contains("refused"),
        "expected a refusal: {err}"
    );
    assert_eq!(peers.len(), 1, "a connect went around the dead proxy");

    t.start("n1").unwrap();
    ok_body(&t.pod("a").curl(&url));
    assert_eq!(peers.len(), 2);
}

/// Editing the YAML unenrolls: the namespace label removed, a's connects go straight to b
/// (the server sees a's own address), the capture entries and guards are gone. Re-enrolled
/// with a pod-level opt-out, a is a non-mesh caller of b again (inbound listener).
#[test]
fn unenrolled_pods_are_no_longer_captured() {
    let mut t = enrolled_pair("unenroll");
    let peers = servers::http(&t.pod("b").netns, 8080);
    let (a_addr, url) = (t.pod("a").addr, format!("http://{}:8080/", t.pod("b").addr));
    ok_body(&t.pod("a").curl(&url));
    assert_eq!(
        peers.all()[0],
        upstream_src(&t.node("n1").mesh().wait_access_log(1)[0])
    );

    t.set_namespace_enrolled("shop", false).unwrap();
    let unenrolled = eventually(Duration::from_secs(5), || {
        let w = t.node("n1").mesh().admin("/workloads");
        w["workloads"]
            .as_object()
            .is_some_and(|m| m.is_empty())
            .then_some(())
    });
    assert!(unenrolled.is_some(), "workloads still enrolled");
    let dp = t.node("n1").mesh().admin("/datapath");
    assert_eq!(dp["enrolled_netns"], Value::Array(vec![]), "{dp}");
    assert!(
        !dp["links"].to_string().contains("guard-"),
        "guards still attached: {dp}"
    );

    ok_body(&t.pod("a").curl(&url));
    assert_eq!(
        peers.all()[1].ip(),
        a_addr,
        "a is still captured after unenrollment"
    );
    assert_eq!(
        t.node("n1").mesh().access_log().len(),
        1,
        "the proxy saw the direct connection"
    );

    t.set_pod_label("a", "trellis.dev/mesh", Some("disabled"))
        .unwrap();
    t.set_namespace_enrolled("shop", true).unwrap();
    let back = eventually(Duration::from_secs(5), || {
        let w = t.node("n1").mesh().admin("/workloads");
        w["workloads"].get("shop/b").is_some().then_some(w)
    })
    .expect("b re-enrolled");
    assert!(
        back["workloads"].get("shop/a").is_none(),
        "opted-out pod enrolled: {back}"
    );
    assert!(back["skipped"].to_string().contains("opts it out"), "{back}");
    ok_body(&t.pod("a").curl(&url));
    let log = t.node("n1").mesh().wait_access_log(2);
    assert_eq!(
        field(&log[1], "listener"),
        "inbound",
        "opted-out a is a non-mesh caller of b"
    );
}

/// Two nodes: each node's programs act only on its own pods and callers.
/// - d -> e on n2 is captured by n2's proxy; n1's proxy never sees it;
/// - a host process on n1 calling e (a pod of n2) is not redirected by n1: it reaches e as
///   a client from the network, through n2's inbound listener (containment.rs covers how);
/// - a (n1) -> e (n2) is captured by n1's proxy and reaches e only through the tunnel to
///   n2 (identity.rs covers the tunnel itself).
#[test]
fn programs_act_only_on_their_own_node() {
    let mut t = Topology::builder("two_nodes")
        .node("n1")
        .node("n2")
        .pod("n1", "shop/a")
        .pod("n2", "shop/d")
        .pod("n2", "shop/e")
        .enrolled_namespace("shop")
        .build()
        .unwrap();
    t.start_all().unwrap();
    let peers = servers::http(&t.pod("e").netns, 8080);
    let url = format!("http://{}:8080/", t.pod("e").addr);

    ok_body(&t.pod("d").curl(&url));
    let n2_log = t.node("n2").mesh().wait_access_log(1);
    assert_eq!(field(&n2_log[0], "src_workload"), "shop/d");
    assert_eq!(
        t.node("n1").mesh().access_log().len(),
        0,
        "n1 saw n2's connection"
    );
    assert_eq!(t.node("n1").mesh().counter("redirect_outbound"), 0);

    let n1 = t.node("n1");
    let host = n1
        .netns
        .command("curl", &n1.host_cgroup())
        .args(["-sS", "--max-time", "2", &url])
        .output()
        .unwrap();
    ok_body(&host);
    assert_eq!(
        n1.mesh().counter("redirect_inbound"),
        0,
        "n1 captured a connect to n2's pod"
    );
    let n2_log = t.node("n2").mesh().wait_access_log(2);
    assert_eq!(field(&n2_log[1], "listener"), "inbound", "{}", n2_log[1]);
    assert!(field(&n2_log[1], "src_addr").starts_with(&format!("{}:", n1.addr)));

    ok_body(&t.pod("a").curl(&url));
    let n1_log = n1.mesh().wait_access_log(1);
    assert_eq!(field(&n1_log[0], "src_workload"), "shop/a");
    let n2_log = t.node("n2").mesh().wait_access_log(3);
    assert_eq!(field(&n2_log[2], "listener"), "tunnel");
    assert_eq!(
        peers.len(),
        3,
        "d's, n1's and a's connections reached e, all through n2's proxy"
    );
}
