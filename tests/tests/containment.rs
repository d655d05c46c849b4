//! An enrolled pod talks to nothing except through its node proxy, and what worked before
//! enrollment still works: the holes a real cluster exposes (issue "Close the holes"). Each
//! test names the hole it closes and fails without the fix (noted per test).

use std::{
    net::{SocketAddr, SocketAddrV4, SocketAddrV6},
    time::Duration,
};

use tests::{
    eventually, field, ok_body,
    raw::{self, Ipv6Ext},
    servers,
    topology::Topology,
    upstream_src,
};

/// One node, enrolled pods `shop/a` and `shop/b`, and `extra` flags for mesh-node.
fn enrolled_pair(test: &str, extra: &[&str]) -> Topology {
    let mut t = Topology::builder(test)
        .node("n1")
        .pod("n1", "shop/a")
        .pod("n1", "shop/b")
        .enrolled_namespace("shop")
        .build()
        .unwrap();
    t.set_node_args("n1", extra);
    t.start_all().unwrap();
    t
}

fn curl_in(t: &Topology, pod: &str, args: &[&str]) -> std::process::Output {
    let p = t.pod(pod);
    p.netns
        .command("curl", &p.cgroup)
        .args(["-sS", "--max-time", "3"])
        .args(args)
        .output()
        .expect("running curl")
}

/// The node's own services are not reachable through the proxy. `0.0.0.0` and `127/8` stay
/// inside the pod (where they lead without the mesh: a server of the pod's own answers), and
/// the node's address is refused by the proxy (`denied_node_local`). Without the fix the
/// proxy dialled these from the node's namespace: `curl 0.0.0.0:15000` got the node's admin
/// API, and the node-IP server saw a connection.
#[test]
fn a_pod_cannot_reach_the_nodes_own_services_through_the_proxy() {
    let t = enrolled_pair("node_loopback", &[]);
    let n1 = t.node("n1");
    let own = servers::http(&t.pod("a").netns, 9000);
    let on_node = servers::http(&n1.netns, 9100);

    // The node's admin API on its loopback, by every spelling of "this host".
    for url in [
        "http://0.0.0.0:15000/ready",
        "http://0.1.2.3:15000/ready",
        "http://127.0.0.1:15000/ready",
        "http://[::]:15000/ready",
        "http://[::1]:15000/ready",
        "http://[::ffff:0.0.0.0]:15000/ready",
        "http://[::ffff:127.0.0.1]:15000/ready",
    ] {
        let out = curl_in(&t, "a", &[url]);
        assert!(
            !out.status.success(),
            "{url} reached the node's admin API: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // The same addresses reach the pod's own server, as without the mesh.
    for url in [
        "http://0.0.0.0:9000/",
        "http://[::ffff:0.0.0.0]:9000/",
        "http://[::]:9000/",
    ] {
        ok_body(&curl_in(&t, "a", &[url]));
    }
    assert_eq!(own.len(), 3);

    // The node's own address: captured, refused by the proxy, logged and counted.
    let out = curl_in(&t, "a", &[&format!("http://{}:9100/", n1.addr)]);
    assert!(
        !out.status.success(),
        "the node's address was dialled for the pod"
    );
    let log = n1.mesh().wait_access_log(1);
    assert_eq!(field(&log[0], "result"), "denied_node_local", "{}", log[0]);
    assert_eq!(field(&log[0], "src_workload"), "shop/a");
    assert!(on_node.is_empty(), "the node's server saw {:?}", on_node.all());
    assert_eq!(
        n1.mesh().admin("/stats")["proxy"]["refused_node_local"].as_u64(),
        Some(1)
    );
    assert_eq!(
        log.len(),
        1,
        "only the node-address connect was captured: {log:#?}"
    );
}

/// An IPv6 SYN whose TCP header sits behind extension headers is judged after walking them,
/// and one behind a fragment header (which may hide it) is dropped as unparseable, in both
/// directions. Without the fix the guards only read a TCP header right after the fixed
/// header: these SYNs passed and b's TCP stack answered them.
#[test]
fn ipv6_syns_behind_extension_headers_are_dropped_both_ways() {
    let t = enrolled_pair("ipv6_ext_headers", &[]);
    t.enable_ipv6().unwrap();
    let (a, b) = (t.pod("a"), t.pod("b"));
    let n1 = t.node("n1");
    let _server = servers::http(&b.netns, 8080);
    let target = SocketAddrV6::new(b.addr6(), 8080, 0, 0);
    let mesh = n1.mesh();
    let in_segs = b.netns.settled_tcp_counter("InSegs");

    // From the pod: the walk reaches TCP (a SYN, not to the proxy: dropped as such), or
    // cannot (fragment: dropped as unparseable). Towards the pod, from the node (no proxy
    // mark): the same.
    let node_side = std::net::Ipv6Addr::new(0xfd00, 1, b.index.into(), 0, 0, 0, 0, 1);
    let cases = [
        (
            "from the pod",
            &a.netns,
            a.addr6(),
            Ipv6Ext::None,
            "guard_from_pod_drop",
        ),
        (
            "from the pod",
            &a.netns,
            a.addr6(),
            Ipv6Ext::HopByHop,
            "guard_from_pod_drop",
        ),
        (
            "from the pod",
            &a.netns,
            a.addr6(),
            Ipv6Ext::DestinationAndRouting,
            "guard_from_pod_drop",
        ),
        (
            "from the pod",
            &a.netns,
            a.addr6(),
            Ipv6Ext::Fragment,
            "guard_unparseable_drop",
        ),
        (
            "towards the pod",
            &n1.netns,
            node_side,
            Ipv6Ext::HopByHop,
            "guard_to_pod_drop",
        ),
        (
            "towards the pod",
            &n1.netns,
            node_side,
            Ipv6Ext::Fragment,
            "guard_unparseable_drop",
        ),
    ];
    for (way, sender, src, ext, counter) in cases {
        let before = mesh.counter(counter);
        sender
            .run(move || raw::send_ipv6_syn(src, target, ext))
            .expect("raw IPv6 SYN sent");
        let counted = eventually(Duration::from_secs(2), || {
            (mesh.counter(counter) > before).then_some(())
        });
        assert!(counted.is_some(), "{ext:?} {way} was not dropped as {counter}");
    }
    assert_eq!(
        b.netns.tcp_counter("InSegs"),
        in_segs,
        "a SYN reached b's TCP stack"
    );
}

/// `AF_INET6` sockets (Java's and .NET's default) dialling an IPv4-mapped address are
/// captured like IPv4 connects; native IPv6 destinations, which the proxy does not carry
/// yet, are refused at connect time instead of timing out. Without connect6 the mapped
/// connect went around the proxy and its SYN was dropped by the guard: a timeout.
#[test]
fn dual_stack_sockets_are_captured_and_native_ipv6_is_refused_at_once() {
    let t = enrolled_pair("dual_stack", &[]);
    t.enable_ipv6().unwrap();
    let b = t.pod("b");
    let n1 = t.node("n1");
    let peers = servers::http(&b.netns, 8080);

    let body = ok_body(&curl_in(&t, "a", &[&format!("http://[::ffff:{}]:8080/", b.addr)]));
    let peer = peers.all()[0];
    assert_eq!(body, format!("peer={peer}\n"));
    let log = n1.mesh().wait_access_log(1);
    assert_eq!(
        peer,
        upstream_src(&log[0]),
        "the mapped connect bypassed the proxy"
    );
    assert_eq!(field(&log[0], "listener"), "outbound");
    assert_eq!(field(&log[0], "src_workload"), "shop/a");
    assert_eq!(field(&log[0], "dst_workload"), "shop/b");
    assert_eq!(field(&log[0], "orig_dst"), format!("{}:8080", b.addr));

    // Native IPv6: refused by connect6 (curl: "Couldn't connect", exit 7), not a timeout
    // (exit 28), and counted.
    let out = curl_in(&t, "a", &[&format!("http://[{}]:8080/", b.addr6())]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "expected an immediate refusal: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(n1.mesh().counter("connect6_refused") >= 1);
    assert_eq!(peers.len(), 1, "the IPv6 connect reached b");
}

/// Non-TCP traffic is not captured (STRICT covers TCP, as in Istio): it is counted per pod,
/// and `--drop-non-tcp` drops it except DNS with `--cluster-dns`. Without the counters
/// nothing said UDP went around the proxy.
#[test]
fn non_tcp_is_counted_per_pod_and_dropped_on_request() {
    let mut t = enrolled_pair("non_tcp", &[]);
    let n1_addr = t.node("n1").addr;
    let b_addr = t.pod("b").addr;
    // Bound to the address clients use, so answers come from it (as a resolver behind its
    // Service address does, once kube-proxy reverses the DNAT).
    let udp_echo = |ns: &tests::netns::Netns, addr: SocketAddr| {
        ns.run(move || {
            let s = std::net::UdpSocket::bind(addr).expect("udp bind");
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            });
        })
    };
    let b_udp = SocketAddr::from((b_addr, 5300));
    let dns = SocketAddr::from((n1_addr, 53));
    udp_echo(&t.pod("b").netns, b_udp);
    udp_echo(&t.node("n1").netns, dns);
    // One datagram from a, and whether its echo came back.
    let exchange = |t: &Topology, to: SocketAddr| -> bool {
        t.pod("a").netns.run(move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
            s.send_to(b"ping", to).unwrap();
            s.recv_from(&mut [0u8; 16]).is_ok()
        })
    };

    assert!(
        exchange(&t, b_udp),
        "UDP a -> b does not work without --drop-non-tcp"
    );
    let dp = t.node("n1").mesh().admin("/datapath");
    let (a_counts, b_counts) = (&dp["non_tcp"]["shop/a"], &dp["non_tcp"]["shop/b"]);
    for (counts, field) in [
        (a_counts, "udp_from_pod"),
        (a_counts, "udp_to_pod"),
        (b_counts, "udp_to_pod"),
        (b_counts, "udp_from_pod"),
    ] {
        assert_eq!(counts[field], 1, "one datagram each way: {}", dp["non_tcp"]);
    }
    assert_eq!(a_counts["dropped_from_pod"], 0, "{dp}");

    t.set_node_args("n1", &["--drop-non-tcp", "--cluster-dns", &n1_addr.to_string()]);
    t.node_mut("n1").mesh_mut().kill();
    t.start("n1").unwrap();
    assert!(!exchange(&t, b_udp), "UDP a -> b passed under --drop-non-tcp");
    assert!(
        exchange(&t, dns),
        "DNS to the cluster resolver was dropped: {}",
        t.node("n1").mesh().admin("/datapath")["non_tcp"]
    );
    let ping = t
        .pod("a")
        .netns
        .command("ping", &t.pod("a").cgroup)
        .args(["-c", "1", "-W", "1", &b_addr.to_string()])
        .output()
        .expect("ping");
    assert!(!ping.status.success(), "ICMP echo passed under --drop-non-tcp");
    let mesh = t.node("n1").mesh();
    let dp = mesh.admin("/datapath");
    assert!(
        dp["non_tcp"]["shop/a"]["dropped_from_pod"].as_u64() >= Some(2),
        "{dp}"
    );
    assert!(mesh.counter("guard_non_tcp_drop") >= 2);
    // TCP is untouched by the setting.
    let _http = servers::http(&t.pod("b").netns, 8080);
    ok_body(&t.pod("a").curl(&format!("http://{b_addr}:8080/")));
}

/// With a bridge CNI the route to a pod names the bridge; the guards must still sit on the
/// pod's own veth (found as the peer of the pod's interface). Without the fix they were
/// attached to the bridge, where the to-pod guard never runs for a pod-to-pod frame on the
/// same bridge: a raw SYN from b reached a.
#[test]
fn guards_land_on_the_pods_veth_with_a_bridge_cni() {
    let mut t = Topology::builder("bridge_cni")
        .bridge_cni()
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
    let workloads = n1.mesh().admin("/workloads");
    for pod in [a, b] {
        assert_eq!(
            workloads["workloads"][format!("shop/{}", pod.name)]["datapath"]["host_iface"],
            pod.host_if.as_str(),
            "{workloads}"
        );
    }

    // Mesh traffic works across the bridge. Answers between two pods of a bridge do not
    // cross the node's IP layer, so the proxy dials local pods from the node's (bridge)
    // address there.
    let peers = servers::http(&b.netns, 8080);
    ok_body(&a.curl(&format!("http://{}:8080/", b.addr)));
    let log = n1.mesh().wait_access_log(1);
    assert_eq!(
        peers.all()[0],
        upstream_src(&log[0]),
        "a reached b around the proxy"
    );
    assert_eq!(peers.all()[0].ip().to_string(), "10.1.0.1");

    // A non-mesh pod on the same bridge lands on the inbound listener; a raw SYN from it is
    // dropped by b's to-pod guard; a raw SYN from a by a's from-pod guard.
    ok_body(&c.curl(&format!("http://{}:8080/", b.addr)));
    let in_segs = b.netns.settled_tcp_counter("InSegs");
    let target = SocketAddrV4::new(b.addr, 8080);
    let (a_addr, c_addr) = (a.addr, c.addr);
    c.netns.run(move || raw::send_syn(c_addr, target, None)).unwrap();
    a.netns.run(move || raw::send_syn(a_addr, target, None)).unwrap();
    let mesh = n1.mesh();
    let dropped = eventually(Duration::from_secs(2), || {
        (mesh.counter("guard_to_pod_drop") >= 1 && mesh.counter("guard_from_pod_drop") >= 1).then_some(())
    });
    assert!(dropped.is_some(), "the guards did not drop the raw SYNs");
    assert_eq!(b.netns.tcp_counter("InSegs"), in_segs, "a raw SYN reached b");
    assert_eq!(peers.len(), 2);
}

/// A standalone pod whose netns annotation names a FIFO (or anything but a network
/// namespace) is refused at once with the reason, and enrollment goes on: the open does not
/// block, so a pass never hangs on it (it used to, until a writer came), `/ready` stays
/// true, and a pod added after it is enrolled. (The readiness rule itself, a pass within 5 s,
/// is `admin::tests::ready_needs_a_config_and_a_recent_enrollment_pass`.)
#[test]
fn a_fifo_named_as_a_netns_is_refused_without_stalling_enrollment() {
    let t = enrolled_pair("fifo_netns", &[]);
    let mesh = t.node("n1").mesh();
    let fifo = t.dir.join("stall.fifo");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    t.set_yaml(
        "stall.yaml",
        Some(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: stall, namespace: shop, annotations: {{trellis.dev/netns: {}}}}}\nspec: {{nodeName: n1, serviceAccountName: stall}}\nstatus: {{podIP: 10.1.99.2}}\n",
            fifo.display()
        )),
    )
    .unwrap();
    let refused = eventually(Duration::from_secs(10), || {
        let failed = mesh.admin("/workloads")["failed"].to_string();
        (failed.contains("shop/stall") && failed.contains("not a namespace file")).then_some(())
    });
    assert!(refused.is_some(), "{:#}", mesh.admin("/workloads"));
    // Passes keep finishing: past the node's 5 s stall limit, it is still ready.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(mesh.admin_raw("/ready").unwrap().0, 200);
    assert!(!mesh.admin("/workloads")["workloads"]["shop/a"].is_null());
}

/// One pod cannot take every connection the proxy can hold: over
/// `--max-connections-per-pod` its connects are reset (`pod_connection_limit`, counted)
/// while another pod still gets through. Without the bound the sixth connection was held.
#[test]
fn one_pod_cannot_exhaust_the_proxy() {
    let t = enrolled_pair("pod_connection_limit", &["--max-connections-per-pod", "5"]);
    let (a, b) = (t.pod("a"), t.pod("b"));
    servers::echo(&b.netns, 7000);
    let _http_a = servers::http(&a.netns, 8080);
    let _http_b = servers::http(&b.netns, 8080);
    let mut held = a.hold(5, (b.addr, 7000).into()).unwrap();

    // The sixth from a is refused; b, another pod, is not affected.
    let out = a.curl(&format!("http://{}:7000/", b.addr));
    assert!(!out.status.success(), "a sixth connection from a was relayed");
    ok_body(&b.curl(&format!("http://{}:8080/", a.addr)));
    let mesh = t.node("n1").mesh();
    assert_eq!(mesh.admin("/stats")["proxy"]["refused_pod_limit"], 1);
    // The held connections log when they end; the refused one and b's now.
    let log = mesh.wait_access_log(2);
    assert!(
        log.iter()
            .any(|e| field(e, "result") == "pod_connection_limit" && field(e, "src_workload") == "shop/a"),
        "{log:#?}"
    );

    // Its connections closed, a gets its slots back.
    drop(held.stdin.take());
    let _ = held.wait();
    let freed = eventually(Duration::from_secs(5), || {
        a.curl(&format!("http://{}:8080/", b.addr))
            .status
            .success()
            .then_some(())
    });
    assert!(freed.is_some(), "a got no slot back: {:#?}", mesh.access_log());
}

/// Waits until `node` applied a config version after `before`.
fn wait_for_new_config(t: &Topology, node: &str, before: u64) {
    let applied = eventually(Duration::from_secs(5), || {
        let v = t.node(node).mesh().admin("/workloads")["config_version"]
            .as_u64()
            .unwrap_or(0);
        (v > before).then_some(())
    });
    assert!(
        applied.is_some(),
        "{node} applied no config after version {before}"
    );
}

/// Non-mesh clients that arrive from the network — a pod on another node dialling the pod
/// directly or through a Service cluster IP (DNATed by kube-proxy on its node), a client
/// outside the cluster through a NodePort (DNATed on the pod's node), another node's host —
/// reach an enrolled pod through the destination node's inbound listener with their real
/// address under PERMISSIVE, and are refused with a reset (not a timeout) under STRICT.
/// Without the divert rule the to-pod guard dropped them all, whatever the policy.
#[test]
fn non_mesh_clients_from_the_network_go_through_the_destination_proxy() {
    let mut t = Topology::builder("from_the_network")
        .node("n1")
        .node("n2")
        .pod("n1", "legacy/c")
        .pod("n2", "shop/e")
        .enrolled_namespace("shop")
        .build()
        .unwrap();
    t.start_all().unwrap();
    let (c, e) = (t.pod("c"), t.pod("e"));
    let (n1, n2) = (t.node("n1"), t.node("n2"));
    let backend = SocketAddrV4::new(e.addr, 8080);
    t.kube_proxy_service("10.96.0.20:80".parse().unwrap(), backend)
        .unwrap();
    t.kube_proxy_node_port("n2", 30080, backend).unwrap();
    let peers = servers::http(&e.netns, 8080);
    let outside = |url: &str| {
        t.fabric()
            .command("curl", &t.cgroup.join("controller"))
            .args(["-sS", "--max-time", "3", url])
            .output()
            .expect("curl")
    };
    let node_host = |url: &str| {
        n1.netns
            .command("curl", &n1.host_cgroup())
            .args(["-sS", "--max-time", "3", url])
            .output()
            .expect("curl")
    };
    let direct = format!("http://{}:8080/", e.addr);
    let node_port = format!("http://{}:30080/", n2.addr);

    let cases: [(&str, std::process::Output, String); 4] = [
        ("a pod on another node", c.curl(&direct), c.addr.to_string()),
        (
            "a Service cluster IP",
            c.curl("http://10.96.0.20/"),
            c.addr.to_string(),
        ),
        (
            "a NodePort from outside",
            outside(&node_port),
            "198.18.0.254".into(),
        ),
        ("another node's host", node_host(&direct), n1.addr.to_string()),
    ];
    let log = n2.mesh().wait_access_log(cases.len());
    for (i, (what, out, client)) in cases.iter().enumerate() {
        ok_body(out);
        let line = &log[i];
        assert_eq!(field(line, "listener"), "inbound", "{what}: {line}");
        assert!(
            field(line, "src_addr").starts_with(&format!("{client}:")),
            "{what}: {line}"
        );
        assert_eq!(field(line, "orig_dst"), backend.to_string(), "{what}: {line}");
        assert_eq!(field(line, "dst_workload"), "shop/e", "{what}: {line}");
        assert_eq!(field(line, "result"), "ok", "{what}: {line}");
        assert!(field(line, "authn").starts_with("PERMISSIVE"), "{what}: {line}");
    }
    // e saw each client's own address, on the connection n2's proxy made.
    for (i, (what, _, client)) in cases.iter().enumerate() {
        assert_eq!(
            peers.all()[i],
            upstream_src(&log[i]),
            "{what} reached e around n2's proxy"
        );
        assert_eq!(peers.all()[i].ip().to_string(), *client, "{what}");
    }
    assert_eq!(
        n1.mesh().counter("redirect_inbound"),
        0,
        "n1 captured a connect to n2's pod"
    );

    // STRICT: refused with a reset, logged.
    let before = n2.mesh().admin("/workloads")["config_version"].as_u64().unwrap();
    t.set_yaml(
        "strict.yaml",
        Some(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
             metadata: {name: default, namespace: shop}\nspec: {mtls: {mode: STRICT}}\n",
        ),
    )
    .unwrap();
    wait_for_new_config(&t, "n2", before);
    let served = peers.len();
    for (what, out) in [
        ("a pod on another node", c.curl(&direct)),
        ("a NodePort from outside", outside(&node_port)),
    ] {
        assert!(!out.status.success(), "{what}: STRICT let plaintext through");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The reset lands right after the handshake: curl says it could not connect (7), or
        // that the connection was reset while it sent (55) or waited for the answer (56);
        // 28 would be a timeout.
        assert!(
            matches!(out.status.code(), Some(7 | 55 | 56)),
            "{what}: not a refusal by reset ({:?}): {stderr}",
            out.status.code()
        );
    }
    let log = n2.mesh().wait_access_log(cases.len() + 2);
    for line in &log[cases.len()..] {
        assert_eq!(field(line, "result"), "denied_plaintext", "{line}");
    }
    assert_eq!(peers.len(), served, "a refused client reached e");

    // With n2's agent gone the divert rule finds no listener: the SYN is dropped, never
    // delivered to the node's own services on the pod's address (its mark routes locally).
    let on_node = servers::http(&t.node("n2").netns, 9100);
    t.node_mut("n2").mesh_mut().kill();
    let out = t.pod("c").curl(&format!("http://{}:9100/", t.pod("e").addr));
    assert!(
        !out.status.success(),
        "reached a node service with the agent gone"
    );
    assert!(
        on_node.is_empty(),
        "the node's own server saw {:?}",
        on_node.all()
    );
}

/// Servers see the client pod's address, not the node's, on the same node and across nodes
/// (the destination node dials from the address the tunnel names), so an allow-list in the
/// destination pod that admits only the client works. The access log's `upstream_src` is the
/// peer the server saw: the connection is the proxy's (a bypass would show a's own port and
/// no log line). Without source preservation the servers saw the node's addresses and the
/// allow-list refused a.
#[test]
fn servers_see_the_client_pods_address() {
    let mut t = Topology::builder("source_address")
        .node("n1")
        .node("n2")
        .pod("n1", "shop/a")
        .pod("n1", "shop/b")
        .pod("n1", "legacy/c")
        .pod("n2", "shop/e")
        .enrolled_namespace("shop")
        .build()
        .unwrap();
    t.start_all().unwrap();
    let (a, b, c, e) = (t.pod("a"), t.pod("b"), t.pod("c"), t.pod("e"));
    // b and e admit only a on 8080, as a NetworkPolicy or an application allow-list would.
    for pod in [b, e] {
        let rules = format!(
            "table ip allow {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  \
             tcp dport 8080 ip saddr != {} drop\n }}\n}}\n",
            a.addr
        );
        pod.netns.nft(&rules).unwrap();
    }
    let (b_peers, e_peers) = (servers::http(&b.netns, 8080), servers::http(&e.netns, 8080));

    ok_body(&a.curl(&format!("http://{}:8080/", b.addr)));
    let n1_log = t.node("n1").mesh().wait_access_log(1);
    assert_eq!(b_peers.all()[0].ip(), a.addr, "b saw {:?}", b_peers.all());
    assert_eq!(
        field(&n1_log[0], "upstream_src"),
        b_peers.all()[0].to_string(),
        "{}",
        n1_log[0]
    );

    ok_body(&a.curl(&format!("http://{}:8080/", e.addr)));
    let n2_log = t.node("n2").mesh().wait_access_log(1);
    assert_eq!(field(&n2_log[0], "listener"), "tunnel");
    assert_eq!(e_peers.all()[0].ip(), a.addr, "e saw {:?}", e_peers.all());
    assert_eq!(
        field(&n2_log[0], "upstream_src"),
        e_peers.all()[0].to_string(),
        "{}",
        n2_log[0]
    );

    // A non-mesh pod is relayed with its own address too, and the allow-list refuses it.
    let out = c.curl(&format!("http://{}:8080/", b.addr));
    assert!(!out.status.success(), "b's allow-list admitted c");
    assert_eq!(b_peers.len(), 1);
}

/// A captured connect whose handshake fails (here the proxy's SYN-ACKs never reach the pod)
/// leaves no original-destination entry behind: the kernel removes it when the socket gives
/// up, instead of leaving it in the LRU shared by every pod, where entries of failed connects
/// pushed out those of connects still in flight. Without the STATE_CB cleanup the entry
/// stayed until evicted.
#[test]
fn failed_connects_leave_no_in_flight_entry() {
    let t = enrolled_pair("failed_connect_cleanup", &[]);
    let (a, b) = (t.pod("a"), t.pod("b"));
    let n1 = t.node("n1");
    let rules = format!(
        "table ip drop_synack {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  \
         ip saddr {} tcp sport 15001 drop\n }}\n}}\n",
        n1.addr
    );
    a.netns.nft(&rules).unwrap();

    let out = curl_in(
        &t,
        "a",
        &["--connect-timeout", "1", &format!("http://{}:8080/", b.addr)],
    );
    assert!(!out.status.success());
    let mesh = n1.mesh();
    assert!(
        mesh.counter("tuple_recorded") >= 1,
        "the connect was not captured"
    );
    let gone = eventually(Duration::from_secs(3), || {
        let dp = mesh.admin("/datapath");
        dp["orig_dst"].as_array().is_some_and(Vec::is_empty).then_some(())
    });
    assert!(
        gone.is_some(),
        "the failed connect's entry stayed: {}",
        mesh.admin("/datapath")["orig_dst"]
    );
}
