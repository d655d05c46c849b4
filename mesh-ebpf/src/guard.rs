//! TC (TCX) guards on the host-side veth of every enrolled pod. They make the proxy
//! impossible to bypass, whatever a pod does with raw sockets or marks:
//!
//! - ingress (packets leaving the pod): a TCP SYN must be addressed to the proxy's outbound
//!   port or to an excluded prefix;
//! - egress (packets towards the pod): a TCP SYN must carry the proxy mark. Marks are
//!   scrubbed when a packet crosses network namespaces (`skb_scrub_packet`), so only the
//!   node proxy's own sockets can produce one here.
//!
//! Only connection openings (SYN without ACK) are judged among TCP packets, which keeps the
//! guards off the per-packet cost of established flows. What the guard cannot read is
//! dropped and counted in both directions (fail closed): an IPv6 packet whose TCP header sits
//! behind a fragment header, ESP or AH, or more extension headers than it walks. IPv6 is not
//! captured yet, so an IPv6 SYN is always dropped.
//!
//! Non-TCP packets (UDP, ICMP, SCTP, ...) are not captured: they are counted per pod in
//! `NON_TCP`, and dropped when the node runs with `--drop-non-tcp` (except DNS to and from
//! the cluster resolver, ARP, and ICMP errors, without which TCP path MTU discovery breaks).

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use mesh_common::{counters, NonTcpCounts, ProxyConfig};

use crate::maps::{count, is_excluded, proxy_config, NON_TCP};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_ESP: u8 = 50;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_NONE: u8 = 59;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_MH: u8 = 135;
const IPPROTO_HIP: u8 = 139;
const IPPROTO_SHIM6: u8 = 140;
/// Extension headers walked before giving up (RFC 8200 expects at most one of each of
/// hop-by-hop, destination options, routing, and destination options again).
const MAX_EXT_HEADERS: usize = 4;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const DNS_PORT: u16 = 53_u16.to_be();

/// What the guard sees in one packet.
enum Packet {
    /// ARP, or TCP that does not open a connection: passes.
    Pass,
    /// A TCP SYN without ACK (or an IPv4 TCP fragment, which Linux never sends: DF is set).
    Syn { dst_ip: u32, dst_port: u16, ipv6: bool },
    /// IP that is not TCP.
    NonTcp(NonTcp),
    /// IPv6 whose transport header could not be reached, or a frame that is neither IPv4,
    /// IPv6 nor ARP (VLAN-tagged, PPPoE, ...): dropped.
    Unparseable,
}

struct NonTcp {
    proto: u8,
    /// IPv4 source and destination, network order; 0 for IPv6.
    src_ip: u32,
    dst_ip: u32,
    /// UDP ports, network order (0 otherwise).
    src_port: u16,
    dst_port: u16,
    /// ICMP or ICMPv6 type (0 otherwise).
    icmp_type: u8,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    FromPod,
    ToPod,
}

#[classifier]
pub fn trellis_guard_from_pod(ctx: TcContext) -> i32 {
    // A packet too short for the headers we read cannot open a TCP connection: it passes.
    // A SYN we cannot judge (no config yet) is dropped: fail closed.
    match try_guard(&ctx, Direction::FromPod) {
        Ok(verdict) => verdict,
        Err(()) => TC_ACT_OK as i32,
    }
}

#[classifier]
pub fn trellis_guard_to_pod(ctx: TcContext) -> i32 {
    // As above: short packets pass, SYNs without the proxy mark are dropped.
    match try_guard(&ctx, Direction::ToPod) {
        Ok(verdict) => verdict,
        Err(()) => TC_ACT_OK as i32,
    }
}

#[inline(always)]
fn try_guard(ctx: &TcContext, direction: Direction) -> Result<i32, ()> {
    let cfg = proxy_config();
    let admitted = match classify(ctx)? {
        Packet::Pass => true,
        Packet::Unparseable => {
            count(counters::GUARD_UNPARSEABLE_DROP);
            return Ok(TC_ACT_SHOT);
        }
        Packet::NonTcp(p) => {
            let keep = non_tcp_admitted(cfg, &p, direction);
            count_non_tcp(ctx, &p, direction, keep);
            if !keep {
                count(counters::GUARD_NON_TCP_DROP);
            }
            keep
        }
        Packet::Syn {
            dst_ip,
            dst_port,
            ipv6,
        } => {
            let admitted = match (cfg, direction) {
                (Some(cfg), Direction::FromPod) => {
                    !ipv6
                        && ((dst_ip == cfg.proxy_ip && dst_port == cfg.outbound_port) || is_excluded(dst_ip))
                }
                (Some(cfg), Direction::ToPod) => {
                    // SAFETY: the kernel hands a valid __sk_buff to TC programs.
                    let mark = unsafe { (*ctx.skb.skb).mark };
                    mark == cfg.proxy_mark
                }
                (None, _) => false,
            };
            if !admitted {
                count(match direction {
                    Direction::FromPod => counters::GUARD_FROM_POD_DROP,
                    Direction::ToPod => counters::GUARD_TO_POD_DROP,
                });
            }
            admitted
        }
    };
    Ok(if admitted { TC_ACT_OK as i32 } else { TC_ACT_SHOT })
}

/// Under `--drop-non-tcp`, only DNS with the cluster resolver and ICMP errors pass.
#[inline(always)]
fn non_tcp_admitted(cfg: Option<&ProxyConfig>, p: &NonTcp, direction: Direction) -> bool {
    let Some(cfg) = cfg else { return true };
    if cfg.drop_non_tcp == 0 {
        return true;
    }
    match p.proto {
        IPPROTO_UDP => {
            let (peer, port) = match direction {
                Direction::FromPod => (p.dst_ip, p.dst_port),
                Direction::ToPod => (p.src_ip, p.src_port),
            };
            cfg.cluster_dns_ip != 0 && peer == cfg.cluster_dns_ip && port == DNS_PORT
        }
        // Destination unreachable (fragmentation needed) and time exceeded.
        IPPROTO_ICMP => p.icmp_type == 3 || p.icmp_type == 11,
        // Errors (< 128) and neighbour discovery (133-137), without which IPv6 has no link.
        IPPROTO_ICMPV6 => p.icmp_type < 128 || (133..=137).contains(&p.icmp_type),
        _ => false,
    }
}

#[inline(always)]
fn count_non_tcp(ctx: &TcContext, p: &NonTcp, direction: Direction, kept: bool) {
    // SAFETY: the kernel hands a valid __sk_buff to TC programs.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(c) = NON_TCP.get_ptr_mut(&ifindex) else {
        return;
    };
    // SAFETY: this CPU's value, valid for this program run, with no other writer on this CPU
    // while the program runs.
    let c: &mut NonTcpCounts = unsafe { &mut *c };
    let icmp = p.proto == IPPROTO_ICMP || p.proto == IPPROTO_ICMPV6;
    match direction {
        Direction::FromPod => {
            match p.proto {
                IPPROTO_UDP => c.udp_from_pod += 1,
                _ if icmp => c.icmp_from_pod += 1,
                _ => c.other_from_pod += 1,
            }
            if !kept {
                c.dropped_from_pod += 1;
            }
        }
        Direction::ToPod => {
            match p.proto {
                IPPROTO_UDP => c.udp_to_pod += 1,
                _ if icmp => c.icmp_to_pod += 1,
                _ => c.other_to_pod += 1,
            }
            if !kept {
                c.dropped_to_pod += 1;
            }
        }
    }
}

#[inline(always)]
fn classify(ctx: &TcContext) -> Result<Packet, ()> {
    let proto = u16::from_be(ctx.load::<u16>(12).map_err(|_| ())?);
    match proto {
        ETH_P_IP => classify_ipv4(ctx),
        ETH_P_IPV6 => classify_ipv6(ctx),
        ETH_P_ARP => Ok(Packet::Pass),
        // VLAN tags, PPPoE, anything else: IP inside would not be judged.
        _ => Ok(Packet::Unparseable),
    }
}

#[inline(always)]
fn classify_ipv4(ctx: &TcContext) -> Result<Packet, ()> {
    let ver_ihl: u8 = ctx.load(ETH_HLEN).map_err(|_| ())?;
    let ihl = usize::from(ver_ihl & 0x0f) * 4;
    let proto: u8 = ctx.load(ETH_HLEN + 9).map_err(|_| ())?;
    let src_ip: u32 = ctx.load(ETH_HLEN + 12).map_err(|_| ())?;
    let dst_ip: u32 = ctx.load(ETH_HLEN + 16).map_err(|_| ())?;
    let frag = u16::from_be(ctx.load::<u16>(ETH_HLEN + 6).map_err(|_| ())?);
    let fragmented = frag & 0x3fff != 0;
    if proto != IPPROTO_TCP {
        let l4 = ETH_HLEN + ihl;
        // Ports and types are only in the first fragment: later ones match no DNS rule.
        let first = frag & 0x1fff == 0 && ihl >= 20;
        let (src_port, dst_port, icmp_type) = match proto {
            IPPROTO_UDP if first => (
                ctx.load::<u16>(l4).unwrap_or(0),
                ctx.load::<u16>(l4 + 2).unwrap_or(0),
                0,
            ),
            IPPROTO_ICMP if first => (0, 0, ctx.load::<u8>(l4).unwrap_or(0)),
            _ => (0, 0, 0),
        };
        return Ok(Packet::NonTcp(NonTcp {
            proto,
            src_ip,
            dst_ip,
            src_port,
            dst_port,
            icmp_type,
        }));
    }
    if ihl < 20 || fragmented {
        return Ok(Packet::Syn {
            dst_ip,
            dst_port: 0,
            ipv6: false,
        });
    }
    let tcp = ETH_HLEN + ihl;
    let flags: u8 = ctx.load(tcp + 13).map_err(|_| ())?;
    if flags & TCP_SYN == 0 || flags & TCP_ACK != 0 {
        return Ok(Packet::Pass);
    }
    let dst_port: u16 = ctx.load(tcp + 2).map_err(|_| ())?;
    Ok(Packet::Syn {
        dst_ip,
        dst_port,
        ipv6: false,
    })
}

/// Walks the IPv6 extension headers (RFC 8200 section 4) to the transport header.
#[inline(always)]
fn classify_ipv6(ctx: &TcContext) -> Result<Packet, ()> {
    let mut next: u8 = ctx.load(ETH_HLEN + 6).map_err(|_| ())?;
    let mut offset = ETH_HLEN + 40;
    // One more turn than headers: the last reads the transport header.
    for _ in 0..=MAX_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_MH | IPPROTO_HIP
            | IPPROTO_SHIM6 => {
                // Next header, then the length in 8-octet units, not counting the first 8.
                let hdr: [u8; 2] = ctx.load(offset).map_err(|_| ())?;
                next = hdr[0];
                offset += (usize::from(hdr[1]) + 1) * 8;
            }
            // A fragment's TCP header may be in another fragment, and ESP/AH hide or shift
            // it: nothing here proves the packet harmless, unless it is not TCP at all.
            IPPROTO_FRAGMENT => {
                let inner: u8 = ctx.load(offset).map_err(|_| ())?;
                return Ok(if inner == IPPROTO_TCP || is_ext_header(inner) {
                    Packet::Unparseable
                } else {
                    non_tcp6(inner, 0)
                });
            }
            IPPROTO_ESP | IPPROTO_AH => return Ok(Packet::Unparseable),
            IPPROTO_TCP => {
                let flags: u8 = ctx.load(offset + 13).map_err(|_| ())?;
                if flags & TCP_SYN == 0 || flags & TCP_ACK != 0 {
                    return Ok(Packet::Pass);
                }
                return Ok(Packet::Syn {
                    dst_ip: 0,
                    dst_port: 0,
                    ipv6: true,
                });
            }
            IPPROTO_NONE => return Ok(Packet::Pass),
            IPPROTO_ICMPV6 => {
                let icmp_type: u8 = ctx.load(offset).map_err(|_| ())?;
                return Ok(non_tcp6(next, icmp_type));
            }
            other => return Ok(non_tcp6(other, 0)),
        }
    }
    // Still inside extension headers: give up, fail closed.
    Ok(Packet::Unparseable)
}

#[inline(always)]
fn is_ext_header(proto: u8) -> bool {
    matches!(
        proto,
        IPPROTO_HOPOPTS
            | IPPROTO_ROUTING
            | IPPROTO_FRAGMENT
            | IPPROTO_ESP
            | IPPROTO_AH
            | IPPROTO_DSTOPTS
            | IPPROTO_MH
            | IPPROTO_HIP
            | IPPROTO_SHIM6
    )
}

#[inline(always)]
fn non_tcp6(proto: u8, icmp_type: u8) -> Packet {
    // IPv6 peers never match the (IPv4) cluster resolver, so DNS over IPv6 counts as other
    // UDP and is dropped under --drop-non-tcp.
    Packet::NonTcp(NonTcp {
        proto,
        src_ip: 0,
        dst_ip: 0,
        src_port: 0,
        dst_port: 0,
        icmp_type,
    })
}
