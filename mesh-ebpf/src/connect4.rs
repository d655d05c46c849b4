//! `cgroup/connect4`: capture TCP connects into the node proxy.
//!
//! - An enrolled pod (its netns cookie is in `ENROLLED_NETNS`) dialling anything but
//!   loopback, itself, an excluded prefix or the proxy's own ports goes to the outbound
//!   listener.
//! - A non-enrolled local caller (host process, non-mesh pod) dialling an enrolled pod IP goes
//!   to the inbound plaintext listener.
//!
//! The original destination and the caller's netns cookie are stored under the socket
//! cookie; `sockops` re-keys them by connection tuple once the kernel picks a source port.
//! The proxy's own cgroup is never touched, which is what keeps it from capturing itself.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use mesh_common::{counters, OrigDst, DIRECTION_INBOUND, DIRECTION_OUTBOUND};

use crate::maps::{count, is_excluded, proxy_config, ENROLLED_IPS, ENROLLED_NETNS, PENDING};

const ALLOW: i32 = 1;
/// The connect fails with EPERM.
const REJECT: i32 = 0;
const SOCK_STREAM: u32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn trellis_connect4(ctx: SockAddrContext) -> i32 {
    // Fail closed: a connect we decided to capture but could not record is refused rather
    // than let through around the proxy.
    match try_connect4(&ctx) {
        Ok(verdict) => verdict,
        Err(()) => {
            count(counters::REDIRECT_FAILED);
            REJECT
        }
    }
}

#[inline(always)]
fn try_connect4(ctx: &SockAddrContext) -> Result<i32, ()> {
    // SAFETY: the kernel hands a valid bpf_sock_addr to this program type.
    let addr = unsafe { &mut *ctx.sock_addr };
    if addr.type_ != SOCK_STREAM {
        return Ok(ALLOW);
    }
    // Before the agent wrote its config nothing is enrolled, so nothing is captured.
    let Some(cfg) = proxy_config() else {
        return Ok(ALLOW);
    };
    // SAFETY: helper without preconditions.
    if unsafe { bpf_get_current_cgroup_id() } == cfg.proxy_cgroup_id {
        return Ok(ALLOW);
    }
    let dst_ip = addr.user_ip4;
    // user_port holds the port in network order in its low 16 bits.
    let dst_port = addr.user_port as u16;
    if u32::from_be(dst_ip) >> 24 == 127 {
        return Ok(ALLOW);
    }

    // SAFETY: ctx is a sock_addr context, which both helpers accept.
    let netns = unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
    let (direction, port) = if let Some(pod) = unsafe { ENROLLED_NETNS.get(netns) } {
        let to_proxy =
            dst_ip == cfg.proxy_ip && (dst_port == cfg.outbound_port || dst_port == cfg.inbound_port);
        // A direct dial of the proxy port is left alone: it carries no original
        // destination, so the proxy resets it.
        if dst_ip == pod.pod_ip || to_proxy || is_excluded(dst_ip) {
            return Ok(ALLOW);
        }
        (DIRECTION_OUTBOUND, cfg.outbound_port)
    } else if unsafe { ENROLLED_IPS.get(dst_ip) }.is_some() {
        (DIRECTION_INBOUND, cfg.inbound_port)
    } else {
        return Ok(ALLOW);
    };

    let orig = OrigDst {
        src_netns_cookie: netns,
        dst_ip,
        dst_port,
        direction,
        _pad: 0,
    };
    // SAFETY: as above.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    PENDING.insert(cookie, orig, 0).map_err(|_| ())?;
    addr.user_ip4 = cfg.proxy_ip;
    addr.user_port = u32::from(port);
    count(if direction == DIRECTION_OUTBOUND {
        counters::REDIRECT_OUTBOUND
    } else {
        counters::REDIRECT_INBOUND
    });
    Ok(ALLOW)
}
