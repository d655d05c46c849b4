//! `sockops`: when a captured socket sends its SYN (`TCP_CONNECT_CB`) the source port is
//! known, so the pending entry moves from the socket cookie to the connection tuple, the key
//! the proxy can compute after `accept()`.

use aya_ebpf::{
    bindings::BPF_SOCK_OPS_TCP_CONNECT_CB, helpers::bpf_get_socket_cookie, macros::sock_ops,
    programs::SockOpsContext,
};
use mesh_common::{counters, SockTuple};

use crate::maps::{count, ORIG_DST, PENDING};

#[sock_ops]
pub fn trellis_sockops(ctx: SockOpsContext) -> u32 {
    // Fail closed by omission: when the move fails the proxy finds no entry and resets the
    // connection. The return value of this callback is ignored by the kernel.
    let _ = try_sockops(&ctx);
    1
}

#[inline(always)]
fn try_sockops(ctx: &SockOpsContext) -> Result<(), ()> {
    if ctx.op() != BPF_SOCK_OPS_TCP_CONNECT_CB {
        return Ok(());
    }
    // SAFETY: sock_ops contexts are accepted by this helper.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    // SAFETY: read-only copy out of an LRU map; a racing eviction only loses this entry.
    let Some(orig) = (unsafe { PENDING.get(cookie) }).copied() else {
        return Ok(());
    };
    let tuple = SockTuple {
        src_ip: ctx.local_ip4(),
        dst_ip: ctx.remote_ip4(),
        // local_port is in host order; remote_port carries the network-order port in its
        // upper 16 bits on little-endian hosts (the kernel shifts skc_dport left by 16).
        src_port: (ctx.local_port() as u16).to_be(),
        dst_port: remote_port_be(ctx.remote_port()),
    };
    let _ = PENDING.remove(cookie);
    ORIG_DST.insert(tuple, orig, 0).map_err(|_| ())?;
    count(counters::TUPLE_RECORDED);
    Ok(())
}

#[inline(always)]
fn remote_port_be(raw: u32) -> u16 {
    if cfg!(target_endian = "little") {
        (raw >> 16) as u16
    } else {
        raw as u16
    }
}
