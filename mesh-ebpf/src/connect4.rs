//! `cgroup/connect4`: capture TCP connects into the node proxy.
//!
//! - An enrolled pod (its netns cookie is in `ENROLLED_NETNS`) dialling anything but its own
//!   host (`127.0.0.0/8`, `0.0.0.0/8`), itself, an excluded prefix or the proxy's own ports
//!   goes to the outbound listener.
//! - A non-enrolled local caller (host process, non-mesh pod) dialling an enrolled pod IP goes
//!   to the inbound plaintext listener.
//!
//! The original destination and the caller's netns cookie are stored under the socket
//! cookie; `sockops` re-keys them by connection tuple once the kernel picks a source port.
//! The proxy's own cgroup is never touched, which is what keeps it from capturing itself.

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use mesh_common::counters;

use crate::{capture::capture, maps::count};

pub const ALLOW: i32 = 1;
/// The connect fails with EPERM.
pub const REJECT: i32 = 0;
pub const SOCK_STREAM: u32 = 1;

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
    // user_port holds the port in network order in its low 16 bits.
    if let Some(to) = capture(ctx.sock_addr, addr.user_ip4, addr.user_port as u16)? {
        addr.user_ip4 = to.ip;
        addr.user_port = u32::from(to.port);
    }
    Ok(ALLOW)
}
