//! `sockops`: when a captured socket sends its SYN (`TCP_CONNECT_CB`) the source port is
//! known, so the pending entry moves from the socket cookie to the connection tuple, the key
//! the proxy can compute after `accept()`. The socket is then watched until its handshake
//! ends (`STATE_CB`): if it failed, its tuple entry, which no proxy will ever take, is removed.

use aya_ebpf::{
    bindings::{BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB},
    helpers::bpf_get_socket_cookie,
    macros::sock_ops,
    programs::SockOpsContext,
};
use mesh_common::{counters, SockTuple};

use crate::maps::{count, ORIG_DST, PENDING};

/// Linux TCP states (include/net/tcp_states.h).
const TCP_SYN_SENT: u32 = 2;
const TCP_CLOSE: u32 = 7;

#[sock_ops]
pub fn trellis_sockops(ctx: SockOpsContext) -> u32 {
    // Fail closed by omission: when the move fails the proxy finds no entry and resets the
    // connection. The return value of this callback is ignored by the kernel.
    let _ = match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => try_connect(&ctx),
        BPF_SOCK_OPS_STATE_CB => try_state(&ctx),
        _ => Ok(()),
    };
    1
}

#[inline(always)]
fn try_connect(ctx: &SockOpsContext) -> Result<(), ()> {
    // SAFETY: sock_ops contexts are accepted by this helper.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    // SAFETY: read-only copy out of an LRU map; a racing eviction only loses this entry.
    let Some(orig) = (unsafe { PENDING.get(cookie) }).copied() else {
        return Ok(());
    };
    let _ = PENDING.remove(cookie);
    // Watch the handshake's end (a failure to ask only leaves a failed connect's entry to
    // the LRU, as before).
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
    ORIG_DST.insert(tuple(ctx), orig, 0).map_err(|_| ())?;
    count(counters::TUPLE_RECORDED);
    Ok(())
}

/// A captured socket left SYN_SENT: established (the proxy will take its entry), or failed,
/// and then no proxy will ever take its entry: remove it rather than leave it to age out of
/// the LRU, where it would push out the entries of connects still in flight.
#[inline(always)]
fn try_state(ctx: &SockOpsContext) -> Result<(), ()> {
    let (old, new) = (ctx.arg(0), ctx.arg(1));
    if old != TCP_SYN_SENT {
        return Ok(());
    }
    if new == TCP_CLOSE {
        let _ = ORIG_DST.remove(&tuple(ctx));
    }
    // Nothing more to watch on this socket (other programs' flags stay).
    let _ = ctx.set_cb_flags((ctx.cb_flags() & !BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
    Ok(())
}

#[inline(always)]
fn tuple(ctx: &SockOpsContext) -> SockTuple {
    SockTuple {
        src_ip: ctx.local_ip4(),
        dst_ip: ctx.remote_ip4(),
        // local_port is in host order; remote_port carries the network-order port in its
        // upper 16 bits on little-endian hosts (the kernel shifts skc_dport left by 16).
        src_port: (ctx.local_port() as u16).to_be(),
        dst_port: remote_port_be(ctx.remote_port()),
    }
}

#[inline(always)]
fn remote_port_be(raw: u32) -> u16 {
    if cfg!(target_endian = "little") {
        (raw >> 16) as u16
    } else {
        raw as u16
    }
}
