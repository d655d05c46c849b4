//! End-to-end tests of workload identity and the mTLS tunnel: the real controller (CA), two
//! real nodes, real TLS (rustls on both ends, openssl s_client as an outside client), real
//! kernel capture.

use std::time::Duration;

use serde_json::Value;
use tests::{capture, controller, eventually, field, ok_body, servers, topology::Topology};

/// Two nodes with a controller: shop/a on n1, shop/e on n2 (HTTP on 8080).
fn two_nodes(test: &str, ttl: Option<u64>) -> Topology {
    let mut b = Topology::builder(test)
        .node("n1")
        .node("n2")
        .pod("n1", "shop/a")
        .pod("n2", "shop/e")
        .enrolled_namespace("shop");
    if let Some(ttl) = ttl {
        b = b.cert_ttl_secs(ttl);
    }
    let mut t = b.build().unwrap();
    t.start_all().unwrap();
    t
}

/// Both nodes with `--tunnel-security plaintext` (the benchmark's trellis-tcp arm): the same
/// HTTP/2 CONNECT between the nodes with no TLS on the wire, and what arrives through it is a
/// plaintext caller without identity, which STRICT PeerAuthentication refuses. Only mesh
/// nodes may open one: any other host is reset before a byte of HTTP/2.
#[test]
fn a_plaintext_tunnel_carries_no_identity_and_strict_refuses_it() {
    let mut t = Topology::builder("plaintext_tunnel")
        .node("n1")
        .node("n2")
        .pod("n1", "shop/a")
        .pod("n1", "legacy/c")
        .pod("n2", "shop/e")
        .enrolled_namespace("shop")
        .build()
        .unwrap();
    for node in ["n1", "n2"] {
        t.set_node_args(node, &["--tunnel-security", "plaintext"]);
    }
    t.start_all().unwrap();
    let e = t.pod("e");
    servers::http(&e.netns, 8080);
    let url = |marker: &str| format!("http://{}:8080/{marker}", e.addr);

    let capture = capture::Capture::start(&t.fabric().path()).unwrap();
    let marker = "plaintext-tunnel-marker-4b1d";
    let body = ok_body(&t.pod("a").curl(&url(marker)));
    std::thread::sleep(Duration::from_millis(200));
    let (_, wire) = capture.finish();
    assert!(body.starts_with("peer="), "{body}");
    assert!(
        capture::contains(&wire, marker.as_bytes()),
        "the request is on the wire in clear"
    );
    assert!(
        capture::contains(&wire, b"PRI * HTTP/2.0"),
        "the nodes speak HTTP/2 to each other"
    );
    let n2 = t.node("n2").mesh();
    let tunnel = n2.wait_access_log(1);
    assert_eq!(field(&tunnel[0], "listener"), "tunnel");
    assert_eq!(field(&tunnel[0], "src_identity"), "-");
    assert_eq!(field(&tunnel[0], "dst_workload"), "shop/e");
    assert!(
        field(&tunnel[0], "authn").starts_with("PERMISSIVE"),
        "{}",
        tunnel[0]
    );
    assert_eq!(field(&tunnel[0], "result"), "ok");

    // A host that is not a mesh node (a non-mesh pod on n1, with its own address) dialling
    // n2's 15008: reset, counted. Without the check it got n2's SETTINGS frame and could
    // CONNECT to any enrolled pod of n2.
    let tunnel_port = std::net::SocketAddrV4::new(t.node("n2").addr, 15008);
    let answer = t.pod("c").netns.run(move || -> std::io::Result<usize> {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect_timeout(&tunnel_port.into(), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")?;
        s.read(&mut [0u8; 64])
    });
    assert!(
        matches!(&answer, Ok(0))
            || answer
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "a non-node got an answer from the plaintext tunnel: {answer:?}"
    );
    assert_eq!(n2.admin("/stats")["proxy"]["tunnel_refused_not_a_node"], 1);

    t.set_yaml(
        "strict.yaml",
        Some(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
             metadata: {name: default, namespace: shop}\nspec: {mtls: {mode: STRICT}}\n",
        ),
    )
    .unwrap();
    let applied = eventually(Duration::from_secs(5), || {
        let w = t.node("n2").mesh().admin("/workloads");
        (w["peer_authentications"].as_array().map_or(0, Vec::len) == 1).then_some(())
    });
    assert!(applied.is_some(), "n2 did not pick up the STRICT policy");
    let refused = t.pod("a").curl(&url("under-strict"));
    assert!(!refused.status.success(), "STRICT let a plaintext tunnel through");
    let tunnel = n2.wait_access_log(2);
    assert_eq!(field(&tunnel[1], "result"), "denied_plaintext", "{}", tunnel[1]);
    let out = t.node("n1").mesh().wait_access_log(2);
    assert_eq!(field(&out[1], "result"), "tunnel_failed", "{}", out[1]);
}

/// Waits until `node` holds a certificate for every one of its workloads.
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

/// Pod on n1 -> pod on n2 goes through the mTLS tunnel: the link between the nodes carries
/// only TLS (no byte of the request or the response in clear), the answer arrives, and the
/// destination node saw the source pod's service-account identity. Without the tunnel the
/// remote guard drops the connection (see datapath.rs, two nodes without a controller).
#[test]
fn cross_node_traffic_is_mutual_tls() {
    let t = two_nodes("cross_node_mtls", None);
    wait_for_certs(&t, "n1", 1);
    wait_for_certs(&t, "n2", 1);
    let e = t.pod("e");
    let peers = servers::http(&e.netns, 8080);

    let capture = capture::Capture::start(&t.fabric().path()).unwrap();
    let marker = "plaintext-marker-7f3a9c";
    let body = ok_body(&t.pod("a").curl(&format!("http://{}:8080/{marker}", e.addr)));
    std::thread::sleep(Duration::from_millis(200));
    let (frames, wire) = capture.finish();

    assert!(body.starts_with("peer="), "{body}");
    assert_eq!(peers.len(), 1);
    assert!(frames > 5, "the capture saw the exchange ({frames} frames)");
    assert!(
        !capture::contains(&wire, marker.as_bytes()),
        "the request crossed the wire in clear"
    );
    assert!(
        !capture::contains(&wire, body.trim().as_bytes()),
        "the response crossed the wire in clear"
    );
    assert!(
        !capture::contains(&wire, b"HTTP/1.1"),
        "HTTP crossed the wire in clear"
    );
    assert!(
        capture::contains(&wire, &[0x17, 0x03, 0x03]),
        "no TLS application-data records on the wire"
    );

    let n1 = t.node("n1").mesh();
    let out = n1.wait_access_log(1);
    assert_eq!(field(&out[0], "listener"), "outbound");
    assert_eq!(field(&out[0], "result"), "ok");
    assert_eq!(
        field(&out[0], "dst_identity"),
        "spiffe://cluster.local/ns/shop/sa/e-sa"
    );
    let n2 = t.node("n2").mesh();
    let tunnel = n2.wait_access_log(1);
    assert_eq!(field(&tunnel[0], "listener"), "tunnel");
    assert_eq!(
        field(&tunnel[0], "src_identity"),
        "spiffe://cluster.local/ns/shop/sa/a-sa"
    );
    assert_eq!(field(&tunnel[0], "dst_workload"), "shop/e");
    assert_eq!(field(&tunnel[0], "result"), "ok");

    // The negotiated parameters, as the node logged them.
    let tls_line = n1
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["target"] == "tls")
        .expect("a tunnel connection log line");
    assert_eq!(field(&tls_line, "group"), "X25519MLKEM768", "{tls_line}");
    // Both ends offer TLS 1.3 suites only, AES-256-GCM first (mesh_api::crypto::provider).
    assert_eq!(
        field(&tls_line, "cipher"),
        "TLS13_AES_256_GCM_SHA384",
        "{tls_line}"
    );
    println!(
        "negotiated: group {} cipher {}",
        field(&tls_line, "group"),
        field(&tls_line, "cipher")
    );
}

/// Client certificates for the s_client checks, issued by the mesh CA (read from the
/// controller's CA directory) or by a stranger.
mod certs {
    use rcgen::{
        CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
    };
    use time::{Duration, OffsetDateTime};

    pub struct Pair {
        pub cert: String,
        pub key: String,
    }

    pub fn issue(issuer: &Issuer<'_, KeyPair>, spiffe: &str, expired: bool) -> Pair {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = vec![SanType::URI(spiffe.try_into().unwrap())];
        p.is_ca = IsCa::ExplicitNoCa;
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = OffsetDateTime::now_utc();
        (p.not_before, p.not_after) = if expired {
            (now - Duration::days(2), now - Duration::days(1))
        } else {
            (now - Duration::minutes(1), now + Duration::hours(1))
        };
        let cert = p.signed_by(&key, issuer).unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    pub fn mesh_issuer(ca_dir: &std::path::Path) -> Issuer<'static, KeyPair> {
        let cert = std::fs::read_to_string(ca_dir.join("ca-cert.pem")).unwrap();
        let key = KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("ca-key.pem")).unwrap()).unwrap();
        Issuer::from_ca_cert_pem(&cert, key).unwrap()
    }

    pub fn stranger_issuer() -> Issuer<'static, KeyPair> {
        let (cert, key) = mesh_controller::ca::generate_root("Someone else's CA").unwrap();
        Issuer::from_ca_cert_pem(&cert, KeyPair::from_pem(&key).unwrap()).unwrap()
    }
}

/// `openssl s_client` against n2:15008 from the fabric, naming e's pod in SNI; returns
/// (handshake completed and the server kept talking, s_client output).
fn s_client(t: &Topology, pair: Option<&certs::Pair>, tag: &str) -> (bool, String) {
    let dir = t.dir.join(format!("s_client-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let root = dir.join("root.pem");
    std::fs::write(&root, t.controller.as_ref().unwrap().root_pem()).unwrap();
    let mut cmd = t.fabric().command("openssl", &t.cgroup.join("controller"));
    cmd.args(["s_client", "-connect", &format!("{}:15008", t.node("n2").addr)])
        .args([
            "-servername",
            &format!("{}.pod.trellis", t.pod("e").addr.to_string().replace('.', "-")),
        ])
        .args(["-tls1_3", "-alpn", "h2", "-showcerts", "-verify_return_error"])
        .arg("-CAfile")
        .arg(&root);
    if let Some(p) = pair {
        std::fs::write(dir.join("cert.pem"), &p.cert).unwrap();
        std::fs::write(dir.join("key.pem"), &p.key).unwrap();
        cmd.arg("-cert")
            .arg(dir.join("cert.pem"))
            .arg("-key")
            .arg(dir.join("key.pem"));
    }
    // Send the HTTP/2 preface and wait a moment: a rejected client is cut off by then.
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        std::thread::sleep(Duration::from_millis(700));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let accepted =
        text.contains("Verify return code: 0 (ok)") && !text.contains("alert") && !text.contains("errno");
    (accepted, text)
}

/// `openssl x509 -text` of the first certificate in s_client's output.
fn leaf_text(s_client_output: &str) -> String {
    let begin = s_client_output
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate in the output");
    let end = s_client_output[begin..]
        .find("-----END CERTIFICATE-----")
        .expect("end of certificate")
        + begin
        + 25;
    let mut child = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl x509");
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&s_client_output.as_bytes()[begin..end])
            .unwrap();
    }
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
}

fn handshake_failures(t: &Topology, reason: &str) -> u64 {
    t.node("n2").mesh().admin("/certs")["stats"]["handshake_failures"][reason]
        .as_u64()
        .unwrap_or(0)
}

/// 15008 accepts only clients with a valid workload certificate of our CA and trust domain;
/// what it presents is the destination workload's identity.
#[test]
fn the_tunnel_refuses_untrusted_clients() {
    let t = two_nodes("tunnel_refusals", None);
    wait_for_certs(&t, "n2", 1);
    let ca_dir = t.controller.as_ref().unwrap().ca_dir.clone();
    let mesh = certs::mesh_issuer(&ca_dir);

    // Positive control: a proper workload certificate.
    let good = certs::issue(&mesh, "spiffe://cluster.local/ns/shop/sa/a-sa", false);
    let (ok, text) = s_client(&t, Some(&good), "good");
    assert!(ok, "a valid client was refused:\n{text}");
    let presented = leaf_text(&text);
    assert!(
        presented.contains("URI:spiffe://cluster.local/ns/shop/sa/e-sa"),
        "the server did not present e's identity:\n{presented}"
    );
    assert!(text.contains("TLSv1.3"), "{text}");

    let cases: [(&str, Option<certs::Pair>, &str); 4] = [
        ("no client certificate", None, "no_client_certificate"),
        (
            "another CA",
            Some(certs::issue(
                &certs::stranger_issuer(),
                "spiffe://cluster.local/ns/shop/sa/a-sa",
                false,
            )),
            "unknown_issuer",
        ),
        (
            "expired",
            Some(certs::issue(
                &mesh,
                "spiffe://cluster.local/ns/shop/sa/a-sa",
                true,
            )),
            "expired_certificate",
        ),
        (
            "wrong trust domain",
            Some(certs::issue(
                &mesh,
                "spiffe://evil.example/ns/shop/sa/a-sa",
                false,
            )),
            "wrong_trust_domain",
        ),
    ];
    for (what, pair, reason) in cases {
        let before = handshake_failures(&t, reason);
        let (ok, text) = s_client(&t, pair.as_ref(), reason);
        assert!(!ok, "{what}: accepted\n{text}");
        let counted = eventually(Duration::from_secs(3), || {
            (handshake_failures(&t, reason) > before).then_some(())
        });
        assert!(
            counted.is_some(),
            "{what}: not counted as {reason}: {}",
            t.node("n2").mesh().admin("/certs")
        );
    }
}

/// A node may obtain certificates only for enrolled workloads scheduled on it.
#[test]
fn a_node_cannot_obtain_a_foreign_identity() {
    let t = two_nodes("foreign_identity", None);
    let token_n1 = std::fs::read_to_string(t.dir.join("n1.token")).unwrap();
    let root = t.controller.as_ref().unwrap().root_pem();
    let ask = |token: String, identity: &'static str| {
        let root = root.clone();
        t.fabric().run_async(async move {
            use mesh_api::ca::{
                istio_certificate_service_client::IstioCertificateServiceClient, IstioCertificateRequest,
            };
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::default();
            p.subject_alt_names = vec![rcgen::SanType::URI(identity.try_into().unwrap())];
            let csr = p.serialize_request(&key).unwrap().pem().unwrap();
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(root))
                .domain_name("mesh-controller.trellis-system.svc");
            let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", controller::ADDR))
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut req = tonic::Request::new(IstioCertificateRequest {
                csr,
                validity_duration: 600,
                metadata: None,
            });
            req.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            IstioCertificateServiceClient::new(channel)
                .create_certificate(req)
                .await
                .map(|r| r.into_inner().cert_chain)
        })
    };
    mesh_api::crypto::install_default();
    let own = ask(token_n1.clone(), "spiffe://cluster.local/ns/shop/sa/a-sa");
    assert!(
        own.is_ok_and(|chain| chain.len() == 2),
        "n1 could not get its own pod's identity"
    );
    let foreign = ask(token_n1.clone(), "spiffe://cluster.local/ns/shop/sa/e-sa").unwrap_err();
    assert_eq!(foreign.code(), tonic::Code::PermissionDenied);
    assert!(
        foreign.message().contains("node n1 runs no enrolled pod"),
        "{}",
        foreign.message()
    );
    let unknown = ask(
        "0123456789abcdef0123".into(),
        "spiffe://cluster.local/ns/shop/sa/a-sa",
    )
    .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
}

/// Sends a request a -> e every 100 ms on a background thread until stopped; returns
/// (successes, failures with their stderr).
struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<(u32, Vec<String>)>>,
}

impl Traffic {
    fn start(t: &Topology) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let a = t.pod("a");
        let cmd = {
            let mut c = a.netns.command("curl", &a.cgroup);
            c.args([
                "-sS",
                "--max-time",
                "3",
                &format!("http://{}:8080/", t.pod("e").addr),
            ]);
            c
        };
        let program = cmd.get_program().to_owned();
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        let (netns, cgroup) = (a.netns.path(), a.cgroup.clone());
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let ns = tests::netns::NetnsPath(netns);
            let (mut ok, mut failed) = (0, Vec::new());
            for _ in 0..600 {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let out = ns.command(&program, &cgroup).args(&args).output().expect("curl");
                if out.status.success() {
                    ok += 1;
                } else {
                    failed.push(String::from_utf8_lossy(&out.stderr).into_owned());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (ok, failed)
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> (u32, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn cert_of(t: &Topology, node: &str) -> Value {
    t.node(node).mesh().admin("/certs")["certificates"][0].clone()
}

/// Certificates are renewed (at about half their life) under a steady stream of requests
/// across nodes without a single failed request.
#[test]
fn certificates_rotate_without_failed_requests() {
    let t = two_nodes("cert_rotation", Some(4));
    wait_for_certs(&t, "n1", 1);
    wait_for_certs(&t, "n2", 1);
    servers::http(&t.pod("e").netns, 8080);
    let first = (
        cert_of(&t, "n1")["serial"].clone(),
        cert_of(&t, "n2")["serial"].clone(),
    );
    let traffic = Traffic::start(&t);
    std::thread::sleep(Duration::from_secs(9));
    let (ok, failed) = traffic.finish();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during rotation: {failed:?}",
        failed.len(),
        ok as usize + failed.len()
    );
    assert!(ok >= 40, "only {ok} requests went through");
    for (node, serial) in [("n1", &first.0), ("n2", &first.1)] {
        let certs = t.node(node).mesh().admin("/certs");
        assert!(
            certs["stats"]["renewals"].as_u64().unwrap() >= 2,
            "{node}: {certs}"
        );
        assert_ne!(
            &certs["certificates"][0]["serial"], serial,
            "{node} still serves its first certificate"
        );
    }
    let took: Vec<u64> = t
        .node("n1")
        .mesh()
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "certificate obtained" && v["renewal"] == true)
        .filter_map(|v| v["took_ms"].as_u64())
        .collect();
    println!("{ok} requests, 0 failed; renewals on n1 took {took:?} ms");
    // Connections made with a certificate that expired were closed by n2 (after their
    // streams drained: no request failed above).
    assert!(
        t.node("n2")
            .mesh()
            .log_text()
            .contains("the client certificate expired"),
        "n2 kept serving a tunnel connection past its client certificate"
    );
}

/// A tunnel connection served for a workload the node no longer runs is closed (new streams
/// to it were refused already; this lets go of the connection).
#[test]
fn a_tunnel_connection_closes_when_its_identity_leaves_the_node() {
    let mut t = two_nodes("tunnel_identity_gone", None);
    servers::http(&t.pod("e").netns, 8080);
    ok_body(&t.pod("a").curl(&format!("http://{}:8080/", t.pod("e").addr)));
    t.set_pod_label("e", "trellis.dev/mesh", Some("disabled"))
        .unwrap();
    let closed = eventually(Duration::from_secs(25), || {
        t.node("n2")
            .mesh()
            .log_text()
            .contains("no longer runs the identity it was served for")
            .then_some(())
    });
    assert!(
        closed.is_some(),
        "n2 kept the tunnel connection of a workload it dropped"
    );
}

/// Rotating the CA root with an overlap: (1) the bundle gains the new root, (2) the new
/// root signs, (3) the old root leaves the bundle. Cross-node requests never fail, although
/// for a while one node holds a certificate from the old root and the other from the new.
#[test]
fn ca_root_rotation_with_overlap() {
    let mut t = two_nodes("root_rotation", Some(4));
    wait_for_certs(&t, "n1", 1);
    wait_for_certs(&t, "n2", 1);
    servers::http(&t.pod("e").netns, 8080);
    let ca = t.controller.as_ref().unwrap().ca_dir.clone();
    let old_root = std::fs::read_to_string(ca.join("root-cert.pem")).unwrap();
    let (new_root, new_key) = mesh_controller::ca::generate_root("Trellis root CA 2").unwrap();
    let traffic = Traffic::start(&t);
    let both_nodes = |t: &Topology, what: &str, check: &dyn Fn(&Value) -> bool| {
        let ok = eventually(Duration::from_secs(20), || {
            ["n1", "n2"]
                .iter()
                .all(|n| check(&t.node(n).mesh().admin("/certs")))
                .then_some(())
        });
        assert!(
            ok.is_some(),
            "{what}: n1 {} n2 {}",
            t.node("n1").mesh().admin("/certs"),
            t.node("n2").mesh().admin("/certs")
        );
    };

    // 1. Trust both roots, still signing with the old one.
    std::fs::write(ca.join("root-cert.pem"), format!("{old_root}{new_root}")).unwrap();
    t.restart_controller().unwrap();
    both_nodes(&t, "both roots trusted", &|c| {
        c["trust_bundle"].as_array().is_some_and(|b| b.len() == 2)
    });

    // 2. Sign with the new root.
    std::fs::write(ca.join("ca-cert.pem"), &new_root).unwrap();
    std::fs::write(ca.join("ca-key.pem"), &new_key).unwrap();
    std::fs::write(ca.join("cert-chain.pem"), &new_root).unwrap();
    t.restart_controller().unwrap();
    both_nodes(&t, "certificates from the new root", &|c| {
        c["certificates"][0]["issuer"]
            .as_str()
            .is_some_and(|i| i.contains("Trellis root CA 2"))
    });

    // 3. Retire the old root.
    std::fs::write(ca.join("root-cert.pem"), &new_root).unwrap();
    t.restart_controller().unwrap();
    both_nodes(&t, "only the new root trusted", &|c| {
        c["trust_bundle"]
            .as_array()
            .is_some_and(|b| b.len() == 1 && b[0].as_str().unwrap().contains("CA 2"))
    });
    std::thread::sleep(Duration::from_secs(1));
    let (ok, failed) = traffic.finish();
    assert!(
        failed.is_empty(),
        "{} requests failed during the root rotation: {failed:?}",
        failed.len()
    );
    assert!(ok > 20, "only {ok} requests");
}

/// With the controller gone, cached certificates keep serving; the node reports the CA as
/// unreachable, and recovers when it returns.
#[test]
fn controller_down_keeps_certificates_serving() {
    let mut t = two_nodes("controller_down", Some(20));
    wait_for_certs(&t, "n1", 1);
    wait_for_certs(&t, "n2", 1);
    servers::http(&t.pod("e").netns, 8080);
    let url = format!("http://{}:8080/", t.pod("e").addr);
    ok_body(&t.pod("a").curl(&url));

    t.controller.as_mut().unwrap().kill();
    // The next renewal (at about half of 20 s) fails and is reported.
    let down = eventually(Duration::from_secs(20), || {
        let ca = t.node("n1").mesh().admin("/certs")["ca"].clone();
        (ca["reachable"] == false).then_some(ca)
    })
    .expect("n1 never reported the CA as unreachable");
    assert!(
        down["last_error"].as_str().unwrap().contains("CA unreachable"),
        "{down}"
    );
    ok_body(&t.pod("a").curl(&url));
    let certs = t.node("n1").mesh().admin("/certs");
    assert!(certs["stats"]["failures"].as_u64().unwrap() >= 1, "{certs}");

    t.restart_controller().unwrap();
    let back = eventually(Duration::from_secs(15), || {
        (t.node("n1").mesh().admin("/certs")["ca"]["reachable"] == true).then_some(())
    });
    assert!(back.is_some(), "n1 never reconnected to the CA");
    ok_body(&t.pod("a").curl(&url));
}

/// A pod holding more long-lived connections to another node than one tunnel connection
/// carries (a database pool) gets another tunnel connection instead of waiting for a free
/// HTTP/2 stream. Without the fix the 257th connection waited forever (the destination
/// allows 256 concurrent streams per connection) and the probe's exchange on it timed out.
#[test]
fn a_full_tunnel_connection_opens_another_instead_of_waiting() {
    let t = two_nodes("tunnel_pool_full", None);
    let (a, e) = (t.pod("a"), t.pod("e"));
    servers::echo(&e.netns, 7000);
    servers::http(&e.netns, 8080);
    let mut held = a.hold(260, (e.addr, 7000).into()).unwrap();
    let stats = t.node("n1").mesh().admin("/stats");
    assert_eq!(
        stats["proxy"]["tunnel_connections_opened"], 2,
        "260 tunnels take two connections of at most 200: {stats}"
    );
    // And a new connection still goes through while they are held.
    ok_body(&a.curl(&format!("http://{}:8080/", e.addr)));
    drop(held.stdin.take());
    let _ = held.wait();
}

/// A tunnel stream may only reach a local workload with the identity the connection's
/// server certificate was chosen for (by SNI), and only a pod of this node. Played by a
/// client holding a valid mesh certificate: SNI naming e, then CONNECT to f (another identity
/// on the same node: 403 `identity_mismatch`) and to a (a pod of another node: 404
/// `not_local`); CONNECT to e itself is the positive control. Without the checks the node
/// relayed both.
#[test]
fn tunnel_streams_reach_only_the_identity_and_node_the_connection_was_made_for() {
    let mut t = Topology::builder("tunnel_stream_checks")
        .node("n1")
        .node("n2")
        .pod("n1", "shop/a")
        .pod("n2", "shop/e")
        .pod("n2", "shop/f")
        .enrolled_namespace("shop")
        .build()
        .unwrap();
    t.start_all().unwrap();
    wait_for_certs(&t, "n2", 2);
    let (a, e, f) = (t.pod("a"), t.pod("e"), t.pod("f"));
    let (e_peers, f_peers) = (servers::http(&e.netns, 8080), servers::http(&f.netns, 8080));
    let mesh = certs::mesh_issuer(&t.controller.as_ref().unwrap().ca_dir);
    let client = certs::issue(&mesh, "spiffe://cluster.local/ns/shop/sa/a-sa", false);
    let sni = format!("{}.pod.trellis", e.addr.to_string().replace('.', "-"));
    let n2 = std::net::SocketAddr::from((t.node("n2").addr, 15008));
    let status = |target: std::net::Ipv4Addr| {
        tests::hbone::connect_status(
            t.fabric(),
            n2,
            &client.cert,
            &client.key,
            &sni,
            (target, 8080).into(),
        )
        .unwrap()
    };

    assert_eq!(status(e.addr), 200, "the positive control was refused");
    assert_eq!(
        status(f.addr),
        403,
        "a stream reached another identity than the one presented"
    );
    assert_eq!(
        status(a.addr),
        404,
        "a stream was relayed to a pod of another node"
    );
    let log = t.node("n2").mesh().wait_access_log(3);
    let results: Vec<&str> = log.iter().map(|l| field(l, "result")).collect();
    assert!(results.contains(&"identity_mismatch"), "{log:#?}");
    assert!(results.contains(&"not_local"), "{log:#?}");
    assert!(f_peers.is_empty(), "f was reached");
    assert_eq!(e_peers.len(), 1, "the positive control did not reach e");
}
