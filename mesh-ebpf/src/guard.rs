//! TC (TCX) guards on the host-side veth of every enrolled pod. They make the proxy
//! impossible to bypass, whatever a pod does with raw sockets or marks:
//!
//! - ingress (packets leaving the pod): a TCP SYN must be addressed to the proxy's outbound
//!   port or to an excluded prefix;
//! - egress (packets towards the pod): a TCP SYN must carry the proxy mark. Marks are
//!   scrubbed when a packet crosses network namespaces (`skb_scrub_packet`), so only the
//!   node proxy's own sockets can produce one here.
//!
//! Only connection openings (SYN without ACK) are judged; everything else passes, which keeps
//! the guards off the per-packet cost of established flows. IPv6 is not captured yet, so an
//! IPv6 SYN is always dropped: fail closed.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use mesh_common::counters;

use crate::maps::{count, is_excluded, proxy_config};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// What the guard needs to know about a packet that opens a TCP connection.
struct Syn {
    /// IPv4 destination, network order; 0 for IPv6.
    dst_ip: u32,
    /// Destination port, network order.
    dst_port: u16,
    ipv6: bool,
}

#[classifier]
pub fn trellis_guard_from_pod(ctx: TcContext) -> i32 {
    // A packet too short for the headers we read cannot open a TCP connection: it passes.
    // A SYN we cannot judge (no config yet) is dropped: fail closed.
    match try_guard_from_pod(&ctx) {
        Ok(verdict) => verdict,
        Err(()) => TC_ACT_OK as i32,
    }
}

#[classifier]
pub fn trellis_guard_to_pod(ctx: TcContext) -> i32 {
    // As above: unparseable packets pass, SYNs without the proxy mark are dropped.
    match try_guard_to_pod(&ctx) {
        Ok(verdict) => verdict,
        Err(()) => TC_ACT_OK as i32,
    }
}

#[inline(always)]
fn try_guard_from_pod(ctx: &TcContext) -> Result<i32, ()> {
    let Some(syn) = parse_syn(ctx)? else {
        return Ok(TC_ACT_OK as i32);
    };
    let allowed = match proxy_config() {
        Some(cfg) if !syn.ipv6 => {
            (syn.dst_ip == cfg.proxy_ip && syn.dst_port == cfg.outbound_port) || is_excluded(syn.dst_ip)
        }
        _ => false,
    };
    if allowed {
        return Ok(TC_ACT_OK as i32);
    }
    count(counters::GUARD_FROM_POD_DROP);
    Ok(TC_ACT_SHOT)
}

#[inline(always)]
fn try_guard_to_pod(ctx: &TcContext) -> Result<i32, ()> {
    if parse_syn(ctx)?.is_none() {
        return Ok(TC_ACT_OK as i32);
    }
    // SAFETY: the kernel hands a valid __sk_buff to TC programs.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if proxy_config().is_some_and(|cfg| mark == cfg.proxy_mark) {
        return Ok(TC_ACT_OK as i32);
    }
    count(counters::GUARD_TO_POD_DROP);
    Ok(TC_ACT_SHOT)
}

/// `Some` when the packet opens a TCP connection (SYN without ACK). IPv4 fragments of TCP
/// are treated as SYNs: TCP on Linux sets DF, so a fragment is crafted and must be judged.
#[inline(always)]
fn parse_syn(ctx: &TcContext) -> Result<Option<Syn>, ()> {
    let proto = u16::from_be(ctx.load::<u16>(12).map_err(|_| ())?);
    match proto {
        ETH_P_IP => {
            let ver_ihl: u8 = ctx.load(ETH_HLEN).map_err(|_| ())?;
            let ihl = usize::from(ver_ihl & 0x0f) * 4;
            if ctx.load::<u8>(ETH_HLEN + 9).map_err(|_| ())? != IPPROTO_TCP {
                return Ok(None);
            }
            let dst_ip: u32 = ctx.load(ETH_HLEN + 16).map_err(|_| ())?;
            let frag = u16::from_be(ctx.load::<u16>(ETH_HLEN + 6).map_err(|_| ())?);
            let fragmented = frag & 0x3fff != 0;
            if ihl < 20 || fragmented {
                return Ok(Some(Syn {
                    dst_ip,
                    dst_port: 0,
                    ipv6: false,
                }));
            }
            let tcp = ETH_HLEN + ihl;
            let flags: u8 = ctx.load(tcp + 13).map_err(|_| ())?;
            if flags & TCP_SYN == 0 || flags & TCP_ACK != 0 {
                return Ok(None);
            }
            let dst_port: u16 = ctx.load(tcp + 2).map_err(|_| ())?;
            Ok(Some(Syn {
                dst_ip,
                dst_port,
                ipv6: false,
            }))
        }
        ETH_P_IPV6 => {
            // Fixed 40-byte header; TCP behind extension headers is not inspected.
            if ctx.load::<u8>(ETH_HLEN + 6).map_err(|_| ())? != IPPROTO_TCP {
                return Ok(None);
            }
            let flags: u8 = ctx.load(ETH_HLEN + 40 + 13).map_err(|_| ())?;
            if flags & TCP_SYN == 0 || flags & TCP_ACK != 0 {
                return Ok(None);
            }
            Ok(Some(Syn {
                dst_ip: 0,
                dst_port: 0,
                ipv6: true,
            }))
        }
        _ => Ok(None),
    }
}
