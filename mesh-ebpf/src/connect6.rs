//! `cgroup/connect6`: connects on `AF_INET6` sockets, the default of Java and .NET even on
//! IPv4-only clusters.
//!
//! - An IPv4-mapped destination (`::ffff:a.b.c.d`) is an IPv4 connect: captured exactly as
//!   `connect4` would, and rewritten to the proxy's IPv4-mapped address. `sockops` then sees
//!   the IPv4 tuple (the kernel connects a mapped socket with `tcp_v4_connect`).
//! - `::` and `::1` are the caller's own host: left alone, as `127.0.0.0/8` is.
//! - Any other (native IPv6) destination from an enrolled pod is refused at once: the proxy
//!   does not carry IPv6 yet, and the to-pod/from-pod guards would drop the SYN anyway; an
//!   immediate error lets dual-stack clients fall back to IPv4 without a timeout.

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use mesh_common::counters;

use crate::{
    capture::{caller_enrolled, capture},
    connect4::{ALLOW, REJECT, SOCK_STREAM},
    maps::count,
};

/// The third 32-bit word of an IPv4-mapped address, as it sits in memory (network order).
const MAPPED_TAG: u32 = 0x0000_ffff_u32.to_be();

#[cgroup_sock_addr(connect6)]
pub fn trellis_connect6(ctx: SockAddrContext) -> i32 {
    // Fail closed, as connect4.
    match try_connect6(&ctx) {
        Ok(verdict) => verdict,
        Err(()) => {
            count(counters::REDIRECT_FAILED);
            REJECT
        }
    }
}

#[inline(always)]
fn try_connect6(ctx: &SockAddrContext) -> Result<i32, ()> {
    // SAFETY: the kernel hands a valid bpf_sock_addr to this program type.
    let addr = unsafe { &mut *ctx.sock_addr };
    if addr.type_ != SOCK_STREAM {
        return Ok(ALLOW);
    }
    let ip6 = addr.user_ip6;
    if ip6[0] == 0 && ip6[1] == 0 && ip6[2] == MAPPED_TAG {
        if let Some(to) = capture(ctx.sock_addr, ip6[3], addr.user_port as u16)? {
            // Each word is written on its own: the verifier allows 4-byte stores to user_ip6.
            addr.user_ip6[3] = to.ip;
            addr.user_port = u32::from(to.port);
        }
        return Ok(ALLOW);
    }
    let own_host = ip6[0] == 0 && ip6[1] == 0 && ip6[2] == 0 && (ip6[3] == 0 || ip6[3] == 1u32.to_be());
    if own_host || !caller_enrolled(ctx.sock_addr) {
        return Ok(ALLOW);
    }
    count(counters::CONNECT6_REFUSED);
    Ok(REJECT)
}
