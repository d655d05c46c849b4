//! Attacks that go around `connect()`: a hand-built TCP SYN on a raw socket (IPv4, or IPv6
//! with the TCP header behind extension headers), and a normal connect carrying a forged
//! proxy mark.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6, TcpStream},
    os::fd::AsRawFd,
    time::Duration,
};

/// Sends one TCP SYN from `src` to `dst` on a raw socket (the kernel adds the IP header).
/// Must run inside the source namespace.
pub fn send_syn(src: Ipv4Addr, dst: SocketAddrV4, mark: Option<u32>) -> io::Result<()> {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&40_000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    tcp[12] = 5 << 4; // data offset: 5 words
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64_240u16.to_be_bytes());
    let sum = checksum(src, *dst.ip(), &tcp);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());

    // SAFETY: plain socket syscalls with checked results.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_TCP,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(mark) = mark {
            set_mark_fd(fd, mark)?;
        }
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(*dst.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let sent = libc::sendto(
            fd,
            tcp.as_ptr().cast(),
            tcp.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let err = io::Error::last_os_error();
        libc::close(fd);
        if sent < 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// What sits between the IPv6 header and the TCP SYN in [`send_ipv6_syn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6Ext {
    /// Nothing: a plain IPv6 SYN.
    None,
    /// A hop-by-hop options header (8 bytes of padding options).
    HopByHop,
    /// A destination options header, then a routing header (type 0 segments left 0).
    DestinationAndRouting,
    /// An atomic fragment header (offset 0, no more fragments: RFC 6946).
    Fragment,
}

/// Sends one TCP SYN over IPv6 from `src` to `dst`, the whole packet built here (IPPROTO_RAW,
/// so the kernel adds nothing), with `ext` between the IPv6 and TCP headers. Must run
/// inside the source namespace.
pub fn send_ipv6_syn(src: Ipv6Addr, dst: SocketAddrV6, ext: Ipv6Ext) -> io::Result<()> {
    const TCP: u8 = 6;
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&40_001u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64_240u16.to_be_bytes());
    let sum = checksum_words(&[
        &src.octets(),
        &dst.ip().octets(),
        &(tcp.len() as u32).to_be_bytes(),
        &[0, 0, 0, TCP],
        &tcp,
    ]);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());

    // Each extension header: next header, length in 8-octet units beyond the first 8, data.
    let (first, headers): (u8, Vec<u8>) = match ext {
        Ipv6Ext::None => (TCP, Vec::new()),
        // PadN option covering the 6 bytes after the two header bytes.
        Ipv6Ext::HopByHop => (0, vec![TCP, 0, 1, 4, 0, 0, 0, 0]),
        Ipv6Ext::DestinationAndRouting => (60, vec![43, 0, 1, 4, 0, 0, 0, 0, TCP, 0, 0, 0, 0, 0, 0, 0]),
        Ipv6Ext::Fragment => (44, vec![TCP, 0, 0, 0, 0, 0, 0x42, 0x42]),
    };
    let mut packet = Vec::with_capacity(40 + headers.len() + tcp.len());
    packet.extend_from_slice(&0x6000_0000u32.to_be_bytes());
    packet.extend_from_slice(&((headers.len() + tcp.len()) as u16).to_be_bytes());
    packet.push(first);
    packet.push(64); // hop limit
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.ip().octets());
    packet.extend_from_slice(&headers);
    packet.extend_from_slice(&tcp);

    // SAFETY: plain socket syscalls with checked results.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET6,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_in6 = std::mem::zeroed();
        addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        addr.sin6_addr.s6_addr = dst.ip().octets();
        let sent = libc::sendto(
            fd,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&addr as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        );
        let err = io::Error::last_os_error();
        libc::close(fd);
        if sent < 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// The Internet checksum over the concatenation of `parts` (each of even length but the last).
fn checksum_words(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for chunk in part.chunks(2) {
            sum += u32::from(u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// RFC 793 checksum over the IPv4 pseudo-header and the TCP segment.
fn checksum(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for chunk in bytes.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&[0, libc::IPPROTO_TCP as u8]);
    add(&(segment.len() as u16).to_be_bytes());
    add(segment);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A plain `connect()` whose socket carries `mark`, with a timeout. Must run inside the
/// source namespace.
pub fn connect_with_mark(dst: SocketAddrV4, mark: u32, timeout: Duration) -> io::Result<TcpStream> {
    // SAFETY: socket setup with checked results; the fd is handed to TcpStream.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    set_mark_fd(fd, mark)?;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: dst.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*dst.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // Bounded: a SYN that is dropped would otherwise retry for two minutes.
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: as above.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        let stream = <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd);
        if libc::connect(
            stream.as_raw_fd(),
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(stream)
    }
}

fn set_mark_fd(fd: libc::c_int, mark: u32) -> io::Result<()> {
    // SAFETY: setsockopt with a u32 on a live fd.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_segment() {
        // A segment whose checksum field holds the right value sums to zero.
        let src = Ipv4Addr::new(10, 1, 1, 2);
        let dst = Ipv4Addr::new(10, 1, 2, 2);
        let mut seg = [0u8; 20];
        seg[13] = 0x02;
        seg[12] = 0x50;
        let sum = checksum(src, dst, &seg);
        seg[16..18].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(checksum(src, dst, &seg), 0);
    }
}
