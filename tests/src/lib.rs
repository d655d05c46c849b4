//! The network-namespace harness: simulated nodes and pods built from network namespaces,
//! veth pairs and cgroups, with the real `mesh-node` binary and the real kernel programs.
//!
//! - [`netns`]: a namespace with one OS thread (and a tokio runtime) living inside it;
//! - [`topology`]: the builder for nodes and pods, the YAML the nodes read, and cleanup;
//! - [`node`]: a running `mesh-node` and how to read its admin endpoint and access log;
//! - [`controller`]: a running `mesh-controller` (the CA) reachable from every node;
//! - [`servers`] and [`raw`]: what runs inside pods (HTTP and echo servers, raw SYNs);
//! - [`hbone`]: a bare tunnel client, to play a misbehaving mesh node.
//!
//! Everything is named after the test (plus the process id), so tests run in parallel, and
//! everything is undone in `Drop`, so a failing test leaves nothing behind.

pub mod capture;
pub mod cni;
pub mod controller;
pub mod hbone;
pub mod netns;
pub mod node;
pub mod raw;
pub mod servers;
pub mod topology;

use std::time::{Duration, Instant};

/// The body a successful client printed, failing the test with its stderr otherwise.
pub fn ok_body(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "client failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A string field of an access-log event, failing the test when it is missing.
pub fn field<'a>(event: &'a serde_json::Value, name: &str) -> &'a str {
    event[name]
        .as_str()
        .unwrap_or_else(|| panic!("access log without {name}: {event}"))
}

/// The address the proxy dialled from (`upstream_src` of an access-log event): the peer a
/// server saw when the connection went through the proxy. With source preservation it is
/// the client's own address, on a port of the proxy's choosing.
pub fn upstream_src(event: &serde_json::Value) -> std::net::SocketAddr {
    field(event, "upstream_src")
        .parse()
        .unwrap_or_else(|e| panic!("upstream_src of {event}: {e}"))
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `limit`.
pub fn eventually<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fails with a reason when the test cannot run here (not root, no bpffs, no cgroup v2).
/// Privileged tests never pass silently.
pub fn require_privileges() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests create network namespaces and load eBPF: run them as root (cargo xtask test)"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(" /sys/fs/bpf ") && l.contains(" - bpf ")),
        "bpffs is not mounted at /sys/fs/bpf: run `cargo xtask setup`"
    );
}

/// `GET path` over HTTP/1.0 to `addr` inside `ns`: status and body.
pub fn http_get(ns: &netns::Netns, addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let addr: std::net::SocketAddr = addr.parse().expect("a socket address");
    ns.run(move || {
        let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        s.write_all(request.as_bytes())?;
        let mut response = String::new();
        s.read_to_string(&mut response)?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    })
}
