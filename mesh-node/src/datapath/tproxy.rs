//! Non-mesh TCP that reaches an enrolled pod from the network — clients on other nodes,
//! NodePort and load-balancer traffic, and Service cluster IPs DNATed by kube-proxy — is
//! delivered to the inbound listener (15006) instead of the pod, so PeerAuthentication (and
//! later AuthorizationPolicy) decide for it as for node-local callers, with the real client
//! address. Node-local callers never pass here: connect4 captures them before a packet exists.
//!
//! How: an nftables chain on the prerouting hook *after* kube-proxy's DNAT (priority
//! `dstnat + 1`, so a NodePort or cluster IP has become the pod's address already) marks a
//! new connection to an enrolled pod IP and hands it to the transparent 15006 socket
//! (`tproxy`); a policy route sends marked packets to local delivery. The accepted socket's
//! local address is the pod's address and port: the original destination. The same skb
//! keeps its conntrack entry, so kube-proxy's reverse NAT still applies to the answers.
//! Connections opened before the pod was enrolled are left alone (only SYNs are matched; the
//! rest of a diverted connection follows its socket). With the agent gone, the rule finds
//! no listener and the next rule drops the SYN: fail closed.
//!
//! Ruleset changes are whole nftables transactions (`nft -f -`): the set of enrolled pod
//! addresses is replaced at once, never half-updated.

use std::{
    collections::BTreeSet,
    io::Write as _,
    net::Ipv4Addr,
    process::{Command, Stdio},
};

/// The nftables table Trellis owns.
pub const TABLE: &str = "trellis";
/// Packet mark of diverted connections, and the routing table that delivers them locally.
/// Distinct from the proxy mark, which the pod guards admit.
pub const DIVERT_MARK: u32 = 0x53a;
const ROUTE_TABLE: &str = "133";
const RULE_PRIORITY: &str = "133";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("running {command}: {source} (is nftables/iproute2 installed? cargo xtask setup installs them)")]
    Spawn { command: String, source: std::io::Error },
    #[error("{command} failed: {stderr}")]
    Failed { command: String, stderr: String },
}

/// Installs (or replaces) the table and the policy route, with `pods` as the enrolled set.
pub fn install(inbound_port: u16, pods: &BTreeSet<Ipv4Addr>) -> Result<(), Error> {
    nft(&ruleset(inbound_port, pods))?;
    // `ip rule add` is not idempotent: remove any previous copy first.
    let mark = format!("{DIVERT_MARK:#x}");
    while ip(&["rule", "del", "fwmark", &mark, "lookup", ROUTE_TABLE]).is_ok() {}
    ip(&[
        "rule",
        "add",
        "fwmark",
        &mark,
        "lookup",
        ROUTE_TABLE,
        "priority",
        RULE_PRIORITY,
    ])?;
    ip(&[
        "route",
        "replace",
        "local",
        "0.0.0.0/0",
        "dev",
        "lo",
        "table",
        ROUTE_TABLE,
    ])
}

/// Replaces the enrolled set in one transaction.
pub fn set_pods(pods: &BTreeSet<Ipv4Addr>) -> Result<(), Error> {
    nft(&format!(
        "flush set ip {TABLE} enrolled_pods\n{}",
        add_elements(pods)
    ))
}

/// Removes the table and the policy route (`mesh-node uninstall`).
pub fn uninstall() {
    let _ = nft(&format!("delete table ip {TABLE}\n"));
    let mark = format!("{DIVERT_MARK:#x}");
    while ip(&["rule", "del", "fwmark", &mark, "lookup", ROUTE_TABLE]).is_ok() {}
    let _ = ip(&["route", "flush", "table", ROUTE_TABLE]);
}

/// The table in one transaction: created if missing, its chain rewritten, its set kept (a
/// restarted agent must not empty it: until the first config arrives, diverted clients would
/// meet the to-pod guard instead) and completed with `pods`.
///
/// When no listener is there (agent stopped or restarting) `tproxy` ends the divert rule
/// early, the mark already set, and the next rule drops the SYN: without it, the mark would
/// route the SYN to the node's own services. The `socket transparent` rule follows packets
/// of connections that exist (diverted ones, whose last handshake ACK still finds a request
/// socket, and the answers to source-preserving upstreams); it never takes a SYN, which would
/// find the transparent listener for any address on its port.
fn ruleset(inbound_port: u16, pods: &BTreeSet<Ipv4Addr>) -> String {
    format!(
        "add table ip {TABLE}
add set ip {TABLE} enrolled_pods {{ type ipv4_addr; }}
add chain ip {TABLE} divert {{ type filter hook prerouting priority dstnat + 1; policy accept; }}
flush chain ip {TABLE} divert
add rule ip {TABLE} divert meta l4proto tcp tcp flags & (syn | ack) != syn socket transparent 1 meta mark set {DIVERT_MARK:#x} accept
add rule ip {TABLE} divert ip daddr @enrolled_pods tcp flags & (syn | ack) == syn meta mark set {DIVERT_MARK:#x} tproxy to :{inbound_port} accept
add rule ip {TABLE} divert ip daddr @enrolled_pods tcp flags & (syn | ack) == syn drop
{}",
        add_elements(pods)
    )
}

fn add_elements(pods: &BTreeSet<Ipv4Addr>) -> String {
    if pods.is_empty() {
        return String::new();
    }
    let list: Vec<String> = pods.iter().map(Ipv4Addr::to_string).collect();
    format!("add element ip {TABLE} enrolled_pods {{ {} }}\n", list.join(", "))
}

fn nft(script: &str) -> Result<(), Error> {
    run("nft", &["-f", "-"], Some(script))
}

fn ip(args: &[&str]) -> Result<(), Error> {
    run("ip", args, None)
}

/// Runs `program args` (with `stdin` written to it), failing with what it printed.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), Error> {
    let command = format!("{program} {}", args.join(" "));
    let spawn_error = |source| Error::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(mut pipe), Some(text)) = (child.stdin.take(), stdin) {
        pipe.write_all(text.as_bytes()).map_err(spawn_error)?;
    }
    let out = child.wait_with_output().map_err(spawn_error)?;
    if !out.status.success() {
        return Err(Error::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_rewrites_the_chain_keeps_the_set_and_fails_closed() {
        let pods: BTreeSet<Ipv4Addr> = ["10.1.1.2".parse().unwrap(), "10.1.2.2".parse().unwrap()].into();
        let r = ruleset(15006, &pods);
        assert!(r.starts_with("add table ip trellis\n"), "{r}");
        assert!(
            !r.contains("delete") && !r.contains("flush set"),
            "a re-install keeps the set: {r}"
        );
        assert!(r.contains("flush chain ip trellis divert"), "{r}");
        assert!(r.contains("priority dstnat + 1"), "after kube-proxy's DNAT: {r}");
        assert!(r.contains("tproxy to :15006 accept"), "{r}");
        let (divert, drop) = (r.find("tproxy to").unwrap(), r.find("== syn drop").unwrap());
        assert!(
            divert < drop,
            "no listener: the SYN falls through to the drop: {r}"
        );
        assert!(
            r.contains("!= syn socket transparent 1"),
            "no SYN follows a socket: {r}"
        );
        assert!(
            r.ends_with("add element ip trellis enrolled_pods { 10.1.1.2, 10.1.2.2 }\n"),
            "{r}"
        );
        assert!(!ruleset(15006, &BTreeSet::new()).contains("add element"));
    }
}
