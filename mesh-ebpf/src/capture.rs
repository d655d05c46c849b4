//! The capture decision shared by `connect4` and `connect6` (an IPv4-mapped address on an
//! `AF_INET6` socket is an IPv4 connect): which listener, if any, a TCP connect goes to, and
//! the original destination recorded for it under the socket cookie.

use aya_ebpf::helpers::{bpf_get_current_cgroup_id, bpf_get_netns_cookie, bpf_get_socket_cookie};
use mesh_common::{counters, OrigDst, DIRECTION_INBOUND, DIRECTION_OUTBOUND};

use crate::maps::{count, is_excluded, proxy_config, ENROLLED_IPS, ENROLLED_NETNS, PENDING};

/// Where a captured connect is sent: the proxy's address and listener port, network order.
pub struct Redirect {
    pub ip: u32,
    pub port: u16,
}

/// Whether the connect from the socket behind `sock_addr` to `dst_ip:dst_port` (IPv4, both
/// network order) is captured. `Ok(None)`: leave it alone. `Err`: capture was decided but
/// the original destination could not be recorded; the caller refuses the connect.
#[inline(always)]
pub fn capture(
    sock_addr: *mut aya_ebpf::bindings::bpf_sock_addr,
    dst_ip: u32,
    dst_port: u16,
) -> Result<Option<Redirect>, ()> {
    // Before the agent wrote its config nothing is enrolled, so nothing is captured.
    let Some(cfg) = proxy_config() else {
        return Ok(None);
    };
    // SAFETY: helper without preconditions.
    if unsafe { bpf_get_current_cgroup_id() } == cfg.proxy_cgroup_id {
        return Ok(None);
    }
    // 127.0.0.0/8 and 0.0.0.0/8 are the caller's own host: inside a pod, the pod itself.
    // Captured, the proxy (in the node's namespace) would dial the node's loopback for it.
    let first_octet = u32::from_be(dst_ip) >> 24;
    if first_octet == 127 || first_octet == 0 {
        return Ok(None);
    }

    // SAFETY: a sock_addr context, which both helpers accept.
    let netns = unsafe { bpf_get_netns_cookie(sock_addr.cast()) };
    let (direction, port) = if let Some(pod) = unsafe { ENROLLED_NETNS.get(netns) } {
        let to_proxy =
            dst_ip == cfg.proxy_ip && (dst_port == cfg.outbound_port || dst_port == cfg.inbound_port);
        // A direct dial of the proxy port is left alone: it carries no original
        // destination, so the proxy resets it.
        if dst_ip == pod.pod_ip || to_proxy || is_excluded(dst_ip) {
            return Ok(None);
        }
        (DIRECTION_OUTBOUND, cfg.outbound_port)
    } else if unsafe { ENROLLED_IPS.get(dst_ip) }.is_some() {
        (DIRECTION_INBOUND, cfg.inbound_port)
    } else {
        return Ok(None);
    };

    let orig = OrigDst {
        src_netns_cookie: netns,
        dst_ip,
        dst_port,
        direction,
        _pad: 0,
    };
    // SAFETY: as above.
    let cookie = unsafe { bpf_get_socket_cookie(sock_addr.cast()) };
    PENDING.insert(cookie, orig, 0).map_err(|_| ())?;
    count(if direction == DIRECTION_OUTBOUND {
        counters::REDIRECT_OUTBOUND
    } else {
        counters::REDIRECT_INBOUND
    });
    Ok(Some(Redirect {
        ip: cfg.proxy_ip,
        port,
    }))
}

/// Whether the caller's network namespace is an enrolled pod's.
#[inline(always)]
pub fn caller_enrolled(sock_addr: *mut aya_ebpf::bindings::bpf_sock_addr) -> bool {
    // SAFETY: a sock_addr context.
    let netns = unsafe { bpf_get_netns_cookie(sock_addr.cast()) };
    proxy_config().is_some() && unsafe { ENROLLED_NETNS.get(netns) }.is_some()
}
