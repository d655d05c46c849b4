//! The one definition of everything the kernel programs and user space share: map names,
//! map key and value layouts, counter indices, ports and marks.
//!
//! Rules for every type here (the verifier and two compilers must agree on the bytes):
//! `#[repr(C)]`, `Copy`, no `bool`/enum/`Option`, explicit named padding, a compile-time size
//! assertion, and the byte order of every address and port written next to the field.
#![no_std]

/// Names of the maps as they appear in the object file and as pin files under bpffs.
pub mod maps {
    /// netns cookie (u64) -> [`crate::EnrolledPod`]: network namespaces whose TCP connects
    /// are captured to the outbound listener.
    pub const ENROLLED_NETNS: &str = "ENROLLED_NETNS";
    /// pod IPv4 (u32, network order) -> [`crate::EnrolledIp`]: connects from non-enrolled
    /// local callers to these addresses go to the inbound plaintext listener.
    pub const ENROLLED_IPS: &str = "ENROLLED_IPS";
    /// socket cookie (u64) -> [`crate::OrigDst`]: written by connect4, read by sockops.
    pub const PENDING: &str = "PENDING";
    /// [`crate::SockTuple`] -> [`crate::OrigDst`]: written by sockops, read and deleted by
    /// the proxy after `accept()`.
    pub const ORIG_DST: &str = "ORIG_DST";
    /// LPM trie of IPv4 prefixes that enrolled pods reach directly (never captured).
    pub const EXCLUDED: &str = "EXCLUDED";
    /// One [`crate::ProxyConfig`] at index 0.
    pub const PROXY_CONFIG: &str = "PROXY_CONFIG";
    /// Per-CPU u64 counters indexed by [`crate::counters`].
    pub const COUNTERS: &str = "COUNTERS";
    /// Per-CPU, host-side veth ifindex (u32) -> [`crate::NonTcpCounts`]: the non-TCP packets
    /// of each enrolled pod, which are not captured. The agent creates an entry when it
    /// enrolls a pod and removes it with the pod; the guards only count into existing ones.
    pub const NON_TCP: &str = "NON_TCP";

    /// Every map, for pin cleanup and the admin view.
    pub const ALL: [&str; 8] = [
        ENROLLED_NETNS,
        ENROLLED_IPS,
        PENDING,
        ORIG_DST,
        EXCLUDED,
        PROXY_CONFIG,
        COUNTERS,
        NON_TCP,
    ];
}

/// Program names (the function names in `mesh-ebpf`).
pub mod programs {
    pub const CONNECT4: &str = "trellis_connect4";
    pub const CONNECT6: &str = "trellis_connect6";
    pub const SOCKOPS: &str = "trellis_sockops";
    pub const GUARD_FROM_POD: &str = "trellis_guard_from_pod";
    pub const GUARD_TO_POD: &str = "trellis_guard_to_pod";
}

/// Indices into the `COUNTERS` per-CPU array.
pub mod counters {
    /// connect4 sent an enrolled pod's connect to the outbound listener.
    pub const REDIRECT_OUTBOUND: u32 = 0;
    /// connect4 sent a non-enrolled local caller's connect to the inbound listener.
    pub const REDIRECT_INBOUND: u32 = 1;
    /// connect4 could not record the original destination and refused the connect.
    pub const REDIRECT_FAILED: u32 = 2;
    /// sockops moved a pending entry to the tuple map.
    pub const TUPLE_RECORDED: u32 = 3;
    /// Guard dropped a SYN leaving an enrolled pod that was not addressed to the proxy.
    pub const GUARD_FROM_POD_DROP: u32 = 4;
    /// Guard dropped a SYN towards an enrolled pod that did not carry the proxy mark.
    pub const GUARD_TO_POD_DROP: u32 = 5;
    /// Guard dropped an IPv6 packet (either direction) whose TCP header it could not reach
    /// (behind a fragment header, ESP/AH, or more extension headers than it walks), or a frame
    /// that is neither IPv4, IPv6 nor ARP (VLAN-tagged, PPPoE, ...).
    pub const GUARD_UNPARSEABLE_DROP: u32 = 6;
    /// connect6 refused a native IPv6 connect from an enrolled pod: IPv6 is not carried by
    /// the proxy yet, and refusing at once beats a SYN the guard drops (a timeout).
    pub const CONNECT6_REFUSED: u32 = 7;
    /// Guard dropped a non-TCP packet of an enrolled pod (`--drop-non-tcp`).
    pub const GUARD_NON_TCP_DROP: u32 = 8;
    /// Number of counters.
    pub const COUNT: u32 = 9;
    /// Names in index order, for the admin view and metrics.
    pub const NAMES: [&str; COUNT as usize] = [
        "redirect_outbound",
        "redirect_inbound",
        "redirect_failed",
        "tuple_recorded",
        "guard_from_pod_drop",
        "guard_to_pod_drop",
        "guard_unparseable_drop",
        "connect6_refused",
        "guard_non_tcp_drop",
    ];
}

/// Default ports, Istio's numbers so operators recognise them.
pub mod ports {
    pub const OUTBOUND: u16 = 15001;
    pub const INBOUND_PLAINTEXT: u16 = 15006;
    pub const ADMIN: u16 = 15000;
}

/// Default `SO_MARK` carried by every proxy socket.
pub const DEFAULT_PROXY_MARK: u32 = 0x539;

/// Value of `ENROLLED_NETNS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnrolledPod {
    /// The pod's IPv4 address, network byte order. Connects to it are not captured.
    pub pod_ip: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<EnrolledPod>() == 8);

/// Value of `ENROLLED_IPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnrolledIp {
    /// Cookie of the pod's network namespace (host order, as the kernel hands it out).
    pub netns_cookie: u64,
}
const _: () = assert!(core::mem::size_of::<EnrolledIp>() == 8);

/// The destination a captured connect asked for, and who asked.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrigDst {
    /// Network namespace cookie of the caller (host order). Written by the kernel, so a pod
    /// cannot claim to be another workload.
    pub src_netns_cookie: u64,
    /// Original destination IPv4, network byte order.
    pub dst_ip: u32,
    /// Original destination port, network byte order.
    pub dst_port: u16,
    /// Which listener the connect was sent to: [`DIRECTION_OUTBOUND`] or
    /// [`DIRECTION_INBOUND`].
    pub direction: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<OrigDst>() == 16);

pub const DIRECTION_OUTBOUND: u8 = 1;
pub const DIRECTION_INBOUND: u8 = 2;

/// Key of `ORIG_DST`: the connection as the proxy sees it after `accept()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockTuple {
    /// Client (pod) IPv4, network byte order.
    pub src_ip: u32,
    /// Proxy listener IPv4 the client connected to, network byte order.
    pub dst_ip: u32,
    /// Client port, network byte order.
    pub src_port: u16,
    /// Proxy listener port, network byte order.
    pub dst_port: u16,
}
const _: () = assert!(core::mem::size_of::<SockTuple>() == 12);

/// Key of the `EXCLUDED` LPM trie's data part (the trie key is `Key<u32>`): IPv4 prefix in
/// network byte order.
pub type Ipv4Prefix = u32;

/// Value of `PROXY_CONFIG[0]`, written by the agent before any program is attached.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// cgroup v2 id of the proxy; its connects are never redirected.
    pub proxy_cgroup_id: u64,
    /// Address pods use to reach the proxy (the node address), network byte order.
    pub proxy_ip: u32,
    /// `SO_MARK` of proxy sockets; SYNs towards enrolled pods must carry it.
    pub proxy_mark: u32,
    /// Outbound capture port, network byte order.
    pub outbound_port: u16,
    /// Inbound plaintext port, network byte order.
    pub inbound_port: u16,
    /// Non-zero once user space has filled the config; programs fail closed until then.
    pub ready: u32,
    /// Non-zero: the guards drop every non-TCP packet of enrolled pods except UDP DNS (port
    /// 53) with `cluster_dns_ip`, ARP, and ICMP errors. TCP is captured whatever this says.
    pub drop_non_tcp: u32,
    /// The cluster resolver's IPv4 address, network byte order (0: none).
    pub cluster_dns_ip: u32,
}
const _: () = assert!(core::mem::size_of::<ProxyConfig>() == 32);

/// Value of `NON_TCP` (per CPU): packets that are not TCP, by protocol and direction. They
/// are not captured (STRICT covers TCP, as in Istio); these counters make them visible.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct NonTcpCounts {
    pub udp_from_pod: u64,
    pub icmp_from_pod: u64,
    /// SCTP and every other IP protocol.
    pub other_from_pod: u64,
    pub udp_to_pod: u64,
    pub icmp_to_pod: u64,
    pub other_to_pod: u64,
    /// Of the above, dropped by `--drop-non-tcp`.
    pub dropped_from_pod: u64,
    pub dropped_to_pod: u64,
}
const _: () = assert!(core::mem::size_of::<NonTcpCounts>() == 64);

impl NonTcpCounts {
    /// Adds another CPU's counts (user space sums the per-CPU values).
    pub fn add(&mut self, o: &Self) {
        self.udp_from_pod += o.udp_from_pod;
        self.icmp_from_pod += o.icmp_from_pod;
        self.other_from_pod += o.other_from_pod;
        self.udp_to_pod += o.udp_to_pod;
        self.icmp_to_pod += o.icmp_to_pod;
        self.other_to_pod += o.other_to_pod;
        self.dropped_from_pod += o.dropped_from_pod;
        self.dropped_to_pod += o.dropped_to_pod;
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type is repr(C), Copy, with all padding named, so any byte pattern is
    // valid and no byte is uninitialised.
    unsafe impl aya::Pod for super::EnrolledPod {}
    unsafe impl aya::Pod for super::EnrolledIp {}
    unsafe impl aya::Pod for super::OrigDst {}
    unsafe impl aya::Pod for super::SockTuple {}
    unsafe impl aya::Pod for super::ProxyConfig {}
    unsafe impl aya::Pod for super::NonTcpCounts {}
}
