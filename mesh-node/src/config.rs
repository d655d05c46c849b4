//! The node's configuration: one struct, every field documented, dumped on `/config_dump`.

use std::{net::Ipv4Addr, path::PathBuf, str::FromStr, time::Duration};

use clap::{Args, ValueEnum};
use serde::Serialize;

/// Options of `mesh-node run`. Every flag has a `TRELLIS_*` environment fallback.
#[derive(Args, Debug, Clone, Serialize)]
pub struct Config {
    /// Name of this node: only pods whose `spec.nodeName` matches are enrolled here.
    #[arg(long, env = "TRELLIS_NODE_NAME")]
    pub node_name: String,

    /// The node's IPv4 address, which its pods route to. Captured connects are rewritten to
    /// this address and the proxy's ports.
    #[arg(long, env = "TRELLIS_NODE_IP")]
    pub node_ip: Ipv4Addr,

    /// Outbound capture listener port (Istio's 15001).
    #[arg(long, env = "TRELLIS_OUTBOUND_PORT", default_value_t = mesh_common::ports::OUTBOUND)]
    pub outbound_port: u16,

    /// Inbound plaintext listener port for node-local non-mesh callers (Istio's 15006).
    #[arg(long, env = "TRELLIS_INBOUND_PORT", default_value_t = mesh_common::ports::INBOUND_PLAINTEXT)]
    pub inbound_port: u16,

    /// Admin endpoint (JSON views of config, workloads and kernel maps). Keep it on loopback.
    #[arg(long, env = "TRELLIS_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    pub admin_addr: std::net::SocketAddr,

    /// `SO_MARK` set on every proxy socket; the pod guards only admit SYNs carrying it.
    #[arg(long, env = "TRELLIS_PROXY_MARK", default_value = "0x539", value_parser = parse_mark)]
    #[serde(serialize_with = "serialize_hex")]
    pub proxy_mark: u32,

    /// cgroup v2 directory the capture programs attach to. Default: the cgroup v2 root, which
    /// covers every process on the machine. Tests and the demo use a subtree per simulated node.
    #[arg(long, env = "TRELLIS_CGROUP")]
    pub cgroup: Option<PathBuf>,

    /// bpffs directory for pinned maps and links; what is pinned here survives restarts.
    #[arg(long, env = "TRELLIS_BPFFS_DIR", default_value = "/sys/fs/bpf/trellis")]
    pub bpffs_dir: PathBuf,

    /// IPv4 prefixes enrolled pods reach directly, never captured (e.g. the DNS service
    /// range). Repeat the flag or separate with commas.
    #[arg(long = "exclude-cidr", env = "TRELLIS_EXCLUDE_CIDRS", value_delimiter = ',')]
    pub exclude_cidrs: Vec<Ipv4Cidr>,

    /// Drop every non-TCP packet (UDP, ICMP, SCTP, ...) to and from enrolled pods, except
    /// UDP DNS with `--cluster-dns`, ARP and ICMP errors. Off by default: non-TCP traffic is
    /// not captured (STRICT covers TCP, as in Istio) and only counted per pod (`/datapath`).
    #[arg(long, env = "TRELLIS_DROP_NON_TCP")]
    pub drop_non_tcp: bool,

    /// The cluster DNS resolver's IPv4 address (e.g. the kube-dns Service IP): the one UDP
    /// destination enrolled pods keep under `--drop-non-tcp`.
    #[arg(long, env = "TRELLIS_CLUSTER_DNS")]
    pub cluster_dns: Option<Ipv4Addr>,

    /// Time allowed for the proxy to connect to an original destination, in milliseconds.
    #[arg(long, env = "TRELLIS_CONNECT_TIMEOUT_MS", default_value_t = 5_000)]
    pub connect_timeout_ms: u64,

    /// A relayed connection with no bytes in either direction for this long is reset, in
    /// seconds.
    #[arg(long, env = "TRELLIS_IDLE_TIMEOUT_SECS", default_value_t = 3_600)]
    pub idle_timeout_secs: u64,

    /// On SIGTERM or SIGINT the listeners close at once and established connections get
    /// this long to finish, in seconds.
    #[arg(long, env = "TRELLIS_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    pub drain_timeout_secs: u64,

    /// SPIFFE trust domain of workload identities.
    #[arg(long, env = "TRELLIS_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,

    /// The controller (host:port): the node's config stream and its CA. The node enforces
    /// nothing but what the controller sends (and keeps the last of it while the controller
    /// is away).
    #[arg(long, env = "TRELLIS_CONTROLLER_ADDR")]
    pub controller_addr: std::net::SocketAddr,

    /// DNS name in the controller's serving certificate.
    #[arg(
        long,
        env = "TRELLIS_CONTROLLER_SERVER_NAME",
        default_value = "mesh-controller.trellis-system.svc"
    )]
    pub controller_server_name: String,

    /// PEM bundle of the mesh's root(s), to trust the controller before the first CA response.
    #[arg(long, env = "TRELLIS_CONTROLLER_ROOT")]
    pub controller_root: PathBuf,

    /// File holding this node's credential towards the controller, read at every use: its
    /// bootstrap token (standalone), or in Kubernetes its pod's projected service-account token
    /// (audience `trellis-controller`), which the kubelet replaces before it expires.
    #[arg(long, env = "TRELLIS_TOKEN_FILE")]
    #[serde(skip_serializing)]
    pub token_file: PathBuf,

    /// Lifetime of workload certificates asked from the CA, in seconds; they are renewed at
    /// about half of it.
    #[arg(long, env = "TRELLIS_CERT_TTL_SECS", default_value_t = 86_400)]
    pub cert_ttl_secs: u64,

    /// Node-to-node tunnel port (Istio's HBONE port).
    #[arg(long, env = "TRELLIS_TUNNEL_PORT", default_value_t = 15_008)]
    pub tunnel_port: u16,

    /// How node-to-node tunnels are carried. `mtls`: HTTP/2 CONNECT inside mutual TLS 1.3
    /// (the default; the only mode for production). `plaintext`: the same HTTP/2 CONNECT over
    /// plain TCP, to measure what mTLS costs (the benchmark's trellis-tcp arm). A plaintext
    /// tunnel carries no identity: what arrives through it is plaintext traffic, which STRICT
    /// PeerAuthentication refuses, and it is accepted only from the addresses of the other
    /// mesh nodes in the controller's config. Every node must use the same mode.
    #[arg(long, env = "TRELLIS_TUNNEL_SECURITY", value_enum, default_value_t = TunnelSecurity::Mtls)]
    pub tunnel_security: TunnelSecurity,

    /// Istio's root namespace: PeerAuthentications there without a selector are mesh-wide.
    #[arg(long, env = "TRELLIS_ROOT_NAMESPACE", default_value = "istio-system")]
    pub root_namespace: String,

    /// Let processes in the node's own network namespace (kubelet health probes, node
    /// agents) reach enrolled pods in plaintext even under STRICT, as Istio's probe rewrite
    /// and ambient's node-address exemption do. Non-mesh pods and other hosts are never
    /// exempt. `--strict-exempt-node=false` turns it off.
    #[arg(long, env = "TRELLIS_STRICT_EXEMPT_NODE", default_value_t = true, action = clap::ArgAction::Set)]
    pub strict_exempt_node: bool,

    /// Dial destinations from the client's own address (transparent sockets), so servers,
    /// NetworkPolicy and address allow-lists see the client pod, not the node; across nodes
    /// the destination node dials from the address the tunnel names (`Forwarded: for=`) when
    /// it belongs to the identity the caller proved. `=false`: from the node's address.
    #[arg(long, env = "TRELLIS_PRESERVE_SOURCE_ADDRESS", default_value_t = true, action = clap::ArgAction::Set)]
    pub preserve_source_address: bool,

    /// Connections one pod may hold through this node's proxy at once (outbound from it, or
    /// inbound from a node-local non-mesh caller); more are reset and counted, so one pod
    /// cannot exhaust the proxy for the others.
    #[arg(long, env = "TRELLIS_MAX_CONNECTIONS_PER_POD", default_value_t = 16_384,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_pod: u32,

    /// TLS handshakes in flight on the tunnel listener; connections beyond are reset and
    /// counted rather than queued behind the CPU.
    #[arg(long, env = "TRELLIS_MAX_TLS_HANDSHAKES", default_value_t = 512,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_tls_handshakes: u64,

    /// Proxy worker threads (1 to 1024). Default: one per CPU this process may run on.
    #[arg(long, env = "TRELLIS_WORKER_THREADS", value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub worker_threads: Option<u64>,

    /// The unix socket `trellis-cni` reports pod sandboxes on (root only; one per node).
    #[arg(long, env = "TRELLIS_CNI_SOCKET", default_value = mesh_cni::protocol::DEFAULT_SOCKET)]
    pub cni_socket: PathBuf,

    /// Where the node leaves the enrolled namespaces for `trellis-cni`, which decides by them
    /// while the node agent does not answer (pods of enrolled namespaces wait for it).
    #[arg(long, env = "TRELLIS_CNI_NAMESPACES_FILE", default_value = mesh_cni::protocol::DEFAULT_NAMESPACES_FILE)]
    pub cni_namespaces_file: PathBuf,

    /// The container runtime's CNI configuration directory (e.g. `/etc/cni/net.d`): when
    /// set, `trellis-cni` is chained into the primary configuration list there, and put back
    /// whenever the primary CNI rewrites it.
    #[arg(long, env = "TRELLIS_CNI_CONF_DIR")]
    pub cni_conf_dir: Option<PathBuf>,

    /// The runtime's CNI plugin directory (e.g. `/opt/cni/bin`), where `trellis-cni` is
    /// copied with `--cni-conf-dir`.
    #[arg(long, env = "TRELLIS_CNI_BIN_DIR")]
    pub cni_bin_dir: Option<PathBuf>,

    /// The `trellis-cni` binary copied to `--cni-bin-dir`. Default: beside this executable.
    #[arg(long, env = "TRELLIS_CNI_PLUGIN")]
    pub cni_plugin: Option<PathBuf>,

    /// The kubelet's cgroup root (holding `kubepods.slice` or `kubepods`), where pods that
    /// ran before this agent started are found by their UID.
    #[arg(long, env = "TRELLIS_KUBELET_CGROUP_ROOT", default_value = "/sys/fs/cgroup")]
    pub kubelet_cgroup_root: PathBuf,

    /// Log format: human text or one JSON object per line.
    #[arg(long, env = "TRELLIS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Config {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
    pub fn cert_ttl(&self) -> Duration {
        Duration::from_secs(self.cert_ttl_secs)
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TunnelSecurity {
    Mtls,
    Plaintext,
}

#[derive(ValueEnum, Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// An IPv4 prefix such as `10.96.0.0/12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR: expected ADDRESS/PREFIX, e.g. 10.96.0.0/12"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|e| format!("{s:?}: address {addr:?} is not IPv4: {e}"))?;
        let prefix_len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("{s:?}: prefix length {len:?} must be 0..=32"))?;
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0);
        if u32::from(addr) & !mask != 0 {
            return Err(format!(
                "{s:?}: host bits are set; did you mean {}/{prefix_len}?",
                Ipv4Addr::from(u32::from(addr) & mask)
            ));
        }
        Ok(Self { addr, prefix_len })
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn parse_mark(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    match parsed {
        Ok(0) => Err("the proxy mark must be non-zero: unmarked packets are what the guards drop".into()),
        Ok(mark) => Ok(mark),
        Err(e) => Err(format!("{s:?} is not a mark (decimal or 0x-prefixed hex): {e}")),
    }
}

fn serialize_hex<S: serde::Serializer>(mark: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{mark:#x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_reject_with_reasons() {
        assert_eq!(
            "10.96.0.0/12".parse::<Ipv4Cidr>().unwrap(),
            Ipv4Cidr {
                addr: Ipv4Addr::new(10, 96, 0, 0),
                prefix_len: 12
            }
        );
        assert_eq!("0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().prefix_len, 0);
        assert!("10.96.0.1/12"
            .parse::<Ipv4Cidr>()
            .unwrap_err()
            .contains("did you mean 10.96.0.0/12"));
        assert!("10.0.0.0/33".parse::<Ipv4Cidr>().unwrap_err().contains("0..=32"));
        assert!("10.0.0.0"
            .parse::<Ipv4Cidr>()
            .unwrap_err()
            .contains("ADDRESS/PREFIX"));
        assert!("fd00::/8".parse::<Ipv4Cidr>().unwrap_err().contains("not IPv4"));
    }

    #[test]
    fn marks_parse_in_hex_or_decimal_and_never_zero() {
        assert_eq!(parse_mark("0x539"), Ok(0x539));
        assert_eq!(parse_mark("1337"), Ok(1337));
        assert!(parse_mark("0").unwrap_err().contains("non-zero"));
        assert!(parse_mark("0xzz").is_err());
    }
}
