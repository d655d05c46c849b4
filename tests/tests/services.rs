//! End-to-end Service routing: an enrolled pod dials a Service's cluster IP, the kernel sends
//! the connect to its node's proxy, and the proxy relays it to one of the service's
//! endpoints (round robin): a local pod directly, a pod on another node through the mTLS
//! tunnel. The controller compiles the Service and its selector from the same YAML a
//! Kubernetes user writes; relabelling pods changes the endpoints while traffic flows.
//!
//! Layout: n1 runs shop/client, shop/web1 and shop2/other; n2 runs shop/web2. web1 and
//! web2 serve HTTP on 8080 behind `shop/web` (10.96.0.10:80) and `shop/private`
//! (10.96.0.11:80, `exportTo: "."`). Nothing in the test namespaces routes 10.96.0.0/16,
//! so a VIP the proxy does not resolve cannot be reached at all.

use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{eventually, field, ok_body, servers, topology::Topology};

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: private
  namespace: shop
  annotations: {networking.istio.io/exportTo: "."}
spec:
  clusterIP: 10.96.0.11
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

const WEB: &str = "http://10.96.0.10/";
const PRIVATE: &str = "http://10.96.0.11/";

/// Waits (at most 10 s) until n1 routes `vip_port` to `n` endpoints; returns how long it took.
fn wait_for_endpoints(t: &Topology, vip_port: &str, n: usize) -> Duration {
    let start = Instant::now();
    let seen = eventually(Duration::from_secs(10), || {
        let w = t.node("n1").mesh().admin("/workloads");
        let eps = w["services"][vip_port]["endpoints"].as_array().map(Vec::len);
        (eps == Some(n)).then_some(())
    });
    assert!(
        seen.is_some(),
        "n1 does not route {vip_port} to {n} endpoints: {}",
        t.node("n1").mesh().admin("/workloads")["services"]
    );
    start.elapsed()
}

/// Waits until `node` holds a certificate for each of its `n` workloads (the tunnel needs
/// the client's).
fn wait_for_certs(t: &Topology, node: &str, n: usize) {
    let ok = eventually(Duration::from_secs(10), || {
        let certs = t.node(node).mesh().admin("/certs");
        (certs["certificates"].as_array().map_or(0, Vec::len) >= n).then_some(())
    });
    assert!(
        ok.is_some(),
        "{node} got no certificates: {}",
        t.node(node).mesh().admin("/certs")
    );
}

/// The access-log events of `node` after the first `skip`, once there are `n` of them.
fn new_events(t: &Topology, node: &str, skip: usize, n: usize) -> Vec<Value> {
    t.node(node).mesh().wait_access_log(skip + n).split_off(skip)
}

/// The first access-log event of `node` after the first `skip` ones that `pred` accepts.
/// Lines are written when a connection ends, which may be after the client exits, so a
/// count taken right after a request may still miss that request's own line.
fn event_after(t: &Topology, node: &str, skip: usize, pred: impl Fn(&Value) -> bool) -> Value {
    let found = eventually(Duration::from_secs(5), || {
        t.node(node)
            .mesh()
            .access_log()
            .into_iter()
            .skip(skip)
            .find(|e| pred(e))
    });
    found.unwrap_or_else(|| {
        panic!(
            "no such access-log event on {node}: {:?}",
            t.node(node).mesh().access_log()
        )
    })
}

#[test]
fn cluster_ip_routes_to_endpoints_and_follows_changes() {
    let mut t = Topology::builder("services")
        .node("n1")
        .node("n2")
        .pod("n1", "shop/client")
        .pod("n1", "shop/web1")
        .pod("n1", "shop2/other")
        .pod("n2", "shop/web2")
        .enrolled_namespace("shop")
        .enrolled_namespace("shop2")
        .build()
        .unwrap();
    t.set_pod_label("web1", "app", Some("web")).unwrap();
    t.set_pod_label("web2", "app", Some("web")).unwrap();
    t.set_yaml("services.yaml", Some(SERVICES)).unwrap();
    t.start_all().unwrap();
    let web1 = servers::http(&t.pod("web1").netns, 8080);
    let web2 = servers::http(&t.pod("web2").netns, 8080);
    wait_for_certs(&t, "n1", 3);
    wait_for_certs(&t, "n2", 1);
    wait_for_endpoints(&t, "10.96.0.10:80", 2);
    let web1_addr = format!("{}:8080", t.pod("web1").addr);
    let web2_addr = format!("{}:8080", t.pod("web2").addr);

    // Six connections to the VIP: round robin gives each endpoint three, the remote one
    // through n2's tunnel.
    let (n1_before, n2_before) = (
        t.node("n1").mesh().access_log().len(),
        t.node("n2").mesh().access_log().len(),
    );
    for _ in 0..6 {
        let body = ok_body(&t.pod("client").curl(WEB));
        assert!(body.starts_with("peer="), "{body}");
    }
    assert_eq!(
        (web1.len(), web2.len()),
        (3, 3),
        "round robin over both endpoints"
    );
    let out = new_events(&t, "n1", n1_before, 6);
    let mut endpoints: Vec<&str> = out.iter().map(|e| field(e, "dst_endpoint")).collect();
    for e in &out {
        assert_eq!(field(e, "listener"), "outbound", "{e}");
        assert_eq!(field(e, "result"), "ok", "{e}");
        assert_eq!(field(e, "orig_dst"), "10.96.0.10:80", "{e}");
        assert_eq!(field(e, "dst_service"), "shop/web", "{e}");
        assert_eq!(field(e, "lb"), "round_robin", "{e}");
        assert_eq!(field(e, "src_workload"), "shop/client", "{e}");
    }
    endpoints.sort_unstable();
    endpoints.dedup();
    assert_eq!(endpoints, [web1_addr.as_str(), web2_addr.as_str()]);
    let remote = out
        .iter()
        .find(|e| field(e, "dst_endpoint") == web2_addr)
        .unwrap();
    assert_eq!(field(remote, "dst_workload"), "shop/web2");
    assert_eq!(
        field(remote, "dst_identity"),
        "spiffe://cluster.local/ns/shop/sa/web2-sa"
    );
    let tunnel = new_events(&t, "n2", n2_before, 3);
    for e in &tunnel {
        assert_eq!(field(e, "listener"), "tunnel", "{e}");
        assert_eq!(field(e, "dst_workload"), "shop/web2", "{e}");
        assert_eq!(
            field(e, "src_identity"),
            "spiffe://cluster.local/ns/shop/sa/client-sa",
            "{e}"
        );
        assert_eq!(field(e, "result"), "ok", "{e}");
    }

    // exportTo ".": shop's own client uses shop/private, shop2's does not. The proxy dials
    // the VIP as it is (Istio's passthrough), which nothing here answers.
    ok_body(&t.pod("client").curl(PRIVATE));
    let before = (web1.len(), web2.len());
    let n1_before = t.node("n1").mesh().access_log().len();
    let out = t.pod("other").curl(PRIVATE);
    assert!(
        !out.status.success(),
        "shop2 reached a service exported to shop only"
    );
    assert_eq!(
        (web1.len(), web2.len()),
        before,
        "a backend saw shop2's connection"
    );
    let e = &event_after(&t, "n1", n1_before, |e| field(e, "src_workload") == "shop2/other");
    assert_eq!(field(e, "dst_service"), "shop/private", "{e}");
    assert_eq!(field(e, "lb"), "service_not_visible", "{e}");
    assert_eq!(field(e, "dst_endpoint"), "-", "{e}");
    assert_eq!(field(e, "result"), "upstream_unreachable", "{e}");
    // shop/web is exported everywhere: shop2 may use it.
    ok_body(&t.pod("other").curl(WEB));

    // Scale to one pod: web2 loses its label; new connections all go to web1.
    t.set_pod_label("web2", "app", None).unwrap();
    let took = wait_for_endpoints(&t, "10.96.0.10:80", 1);
    println!("one endpoint left after {took:?}");
    let before = (web1.len(), web2.len());
    for _ in 0..4 {
        ok_body(&t.pod("client").curl(WEB));
    }
    assert_eq!(
        (web1.len(), web2.len()),
        (before.0 + 4, before.1),
        "traffic still reaches the relabelled pod"
    );

    // No pods left: the VIP refuses, and says why.
    t.set_pod_label("web1", "app", None).unwrap();
    wait_for_endpoints(&t, "10.96.0.10:80", 0);
    let n1_before = t.node("n1").mesh().access_log().len();
    let out = t.pod("client").curl(WEB);
    assert!(!out.status.success(), "a service without endpoints answered");
    let e = &event_after(&t, "n1", n1_before, |e| field(e, "result") != "ok");
    assert_eq!(field(e, "result"), "no_healthy_endpoint", "{e}");
    assert_eq!(field(e, "dst_service"), "shop/web", "{e}");
    assert_eq!(field(e, "lb"), "no_endpoint", "{e}");
}
