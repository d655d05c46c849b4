//! The host-side interface of a pod: the peer of the interface that holds the pod's address
//! inside its network namespace. The route to a pod names a bridge with bridge-based CNIs,
//! so the guards would land on the bridge; the veth peer is right for bridge, ptp and routed
//! CNIs alike. Read inside the pod's namespace: the interface with the pod's IP, then its
//! `IFLA_LINK` (the peer's ifindex in the other namespace) over rtnetlink.

use std::{io, net::Ipv4Addr};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

/// The pod's end of its link to the node, as seen inside the pod's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodSide {
    /// The interface holding the pod's IP, in the pod's namespace.
    pub ifindex: u32,
    /// Its `IFLA_LINK`: for a veth, the peer's ifindex in the node's namespace. A claim of the
    /// pod's (it controls its namespace): [`HostSide::links_back_to`] checks it.
    pub peer: u32,
}

/// Inside the pod's namespace: the interface holding `pod_ip` and the ifindex of its peer.
/// `Ok(None)` when no interface holds the address yet (the CNI is still configuring the pod).
pub fn pod_side_inside(pod_ip: Ipv4Addr) -> io::Result<Option<PodSide>> {
    let Some(ifindex) = interface_with(pod_ip)? else {
        return Ok(None);
    };
    let peer = get_link(ifindex)?.and_then(|l| l.link).ok_or_else(|| {
        io::Error::other(format!(
            "the pod's interface (ifindex {ifindex}) has no peer: not a veth, or its peer is gone"
        ))
    })?;
    Ok(Some(PodSide { ifindex, peer }))
}

/// The index of the interface holding `ip` in this thread's namespace.
fn interface_with(ip: Ipv4Addr) -> io::Result<Option<u32>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    let mut found = None;
    // SAFETY: getifaddrs fills `head` with a list freed below; every node is read while the
    // list is alive, its address pointer checked for null and family first.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cur = head;
        while !cur.is_null() && found.is_none() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() && i32::from((*addr).sa_family) == libc::AF_INET {
                let sin = &*(addr as *const libc::sockaddr_in);
                if Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)) == ip {
                    let index = libc::if_nametoindex((*cur).ifa_name);
                    found = (index != 0).then_some(index);
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    Ok(found)
}

/// What the node's namespace says about a pod's host-side interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSide {
    pub name: String,
    /// A port of a bridge (it has a master): frames between two pods of the bridge are
    /// switched without reaching the node's IP layer.
    pub bridged: bool,
    /// `IFLA_INFO_KIND` ("veth", "macvlan", ...).
    pub kind: Option<String>,
    /// Its own `IFLA_LINK`: for a veth, the peer's ifindex in the pod's namespace.
    pub link: Option<u32>,
}

impl HostSide {
    /// Whether this is the node's end of the pod's veth: a veth whose peer is the pod's
    /// interface. Anything else (the parent NIC of a macvlan or ipvlan pod, an interface a
    /// pod named by building its own veth pair) must not get the pod's guards.
    pub fn links_back_to(&self, pod: &PodSide) -> bool {
        self.kind.as_deref() == Some("veth") && self.link == Some(pod.ifindex)
    }
}

/// In the node's namespace: the interface `index`, `None` when it is gone.
pub fn host_side(index: u32) -> io::Result<Option<HostSide>> {
    match get_link(index) {
        Ok(Some(l)) => Ok(Some(HostSide {
            name: l.name.unwrap_or_default(),
            bridged: l.master.is_some(),
            kind: l.kind,
            link: l.link,
        })),
        Ok(None) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The attributes of one interface that matter here.
#[derive(Debug, Default, PartialEq, Eq)]
struct Link {
    name: Option<String>,
    /// `IFLA_LINK`: the peer of a veth (an ifindex of the peer's namespace).
    link: Option<u32>,
    /// `IFLA_MASTER`: the bridge (or bond) it is a port of.
    master: Option<u32>,
    /// `IFLA_LINKINFO` / `IFLA_INFO_KIND`.
    kind: Option<String>,
}

/// Interface `index` by RTM_GETLINK over NETLINK_ROUTE.
fn get_link(index: u32) -> io::Result<Option<Link>> {
    const LEN: usize = NLMSG_HDRLEN + IFINFOMSG_LEN;
    let mut request = [0u8; LEN];
    request[0..4].copy_from_slice(&(LEN as u32).to_ne_bytes());
    request[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
    request[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    request[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence
                                                         // ifinfomsg: family AF_UNSPEC, type 0, index, flags 0, change 0.
    request[NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 8].copy_from_slice(&(index as i32).to_ne_bytes());
    let mut reply = vec![0u8; 16 * 1024];
    // SAFETY: a netlink socket we own and close; buffers are valid for their lengths.
    let received = unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sent = libc::send(fd, request.as_ptr().cast(), request.len(), 0);
        let received = if sent < 0 {
            -1
        } else {
            libc::recv(fd, reply.as_mut_ptr().cast(), reply.len(), 0)
        };
        let err = io::Error::last_os_error();
        libc::close(fd);
        if received < 0 {
            return Err(err);
        }
        received as usize
    };
    parse_link(&reply[..received]).map(Some)
}

/// The attributes of an RTM_NEWLINK reply.
fn parse_link(msg: &[u8]) -> io::Result<Link> {
    let u16_at = |at: usize| msg.get(at..at + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let u32_at = |at: usize| {
        msg.get(at..at + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let truncated = || io::Error::other("truncated rtnetlink reply");
    let len = u32_at(0).ok_or_else(truncated)? as usize;
    match u16_at(4).ok_or_else(truncated)? {
        RTM_NEWLINK => {}
        NLMSG_ERROR => {
            let errno = u32_at(NLMSG_HDRLEN).ok_or_else(truncated)? as i32;
            return Err(io::Error::from_raw_os_error(-errno));
        }
        other => {
            return Err(io::Error::other(format!(
                "unexpected rtnetlink message type {other}"
            )))
        }
    }
    let mut link = Link::default();
    let mut at = NLMSG_HDRLEN + IFINFOMSG_LEN;
    while at + 4 <= len.min(msg.len()) {
        let attr_len = usize::from(u16_at(at).ok_or_else(truncated)?);
        let kind = u16_at(at + 2).ok_or_else(truncated)? & 0x3fff; // without NLA_F_* bits
        if attr_len < 4 {
            break;
        }
        match kind {
            IFLA_LINK => link.link = u32_at(at + 4),
            IFLA_MASTER => link.master = u32_at(at + 4),
            IFLA_IFNAME => link.name = Some(string_at(msg, at, attr_len)),
            IFLA_LINKINFO => {
                // Nested attributes; walk them all for the kind.
                let end = (at + attr_len).min(msg.len());
                let mut inner = at + 4;
                while inner + 4 <= end {
                    let len = usize::from(u16_at(inner).ok_or_else(truncated)?);
                    if len < 4 {
                        break;
                    }
                    if u16_at(inner + 2).ok_or_else(truncated)? & 0x3fff == IFLA_INFO_KIND {
                        link.kind = Some(string_at(msg, inner, len.min(end - inner)));
                    }
                    inner += (len + 3) & !3;
                }
            }
            _ => {}
        }
        at += (attr_len + 3) & !3;
    }
    Ok(link)
}

/// The NUL-terminated string value of the attribute at `at` (header included in `len`).
fn string_at(msg: &[u8], at: usize, len: usize) -> String {
    let value = msg.get(at + 4..(at + len).min(msg.len())).unwrap_or_default();
    let text = value.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HDRLEN];
        m.extend_from_slice(body);
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m[4..6].copy_from_slice(&kind.to_ne_bytes());
        m
    }

    #[test]
    fn the_link_attribute_is_found_among_others() {
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body.extend(attr(IFLA_IFNAME, b"eth0\0"));
        body.extend(attr(IFLA_LINK, &42u32.to_ne_bytes()));
        body.extend(attr(IFLA_MASTER, &7u32.to_ne_bytes()));
        body.extend(attr(IFLA_LINKINFO, &attr(IFLA_INFO_KIND, b"veth\0")));
        let link = parse_link(&message(RTM_NEWLINK, &body)).unwrap();
        assert_eq!(link.kind.as_deref(), Some("veth"));
        assert_eq!(
            (link.name.as_deref(), link.link, link.master),
            (Some("eth0"), Some(42), Some(7))
        );

        let mut lo = vec![0u8; IFINFOMSG_LEN];
        lo.extend(attr(IFLA_IFNAME, b"lo\0"));
        assert_eq!(parse_link(&message(RTM_NEWLINK, &lo)).unwrap().link, None);
    }

    #[test]
    fn errors_and_garbage_are_errors() {
        let enodev = message(NLMSG_ERROR, &(-libc::ENODEV).to_ne_bytes());
        assert_eq!(
            parse_link(&enodev).unwrap_err().raw_os_error(),
            Some(libc::ENODEV)
        );
        assert!(parse_link(&[1, 2, 3]).is_err());
        assert!(parse_link(&message(99, &[])).is_err());
    }

    #[test]
    fn loopback_has_no_peer() {
        // In the test's own namespace: 127.0.0.1 is on lo, which links to nothing.
        let lo = interface_with(Ipv4Addr::LOCALHOST)
            .unwrap()
            .expect("lo holds 127.0.0.1");
        let link = get_link(lo).unwrap().unwrap();
        assert_eq!((link.name.as_deref(), link.link), (Some("lo"), None));
        let lo_side = host_side(lo).unwrap().unwrap();
        assert_eq!(
            (lo_side.name.as_str(), lo_side.bridged, lo_side.link),
            ("lo", false, None)
        );
        assert!(
            !lo_side.links_back_to(&PodSide {
                ifindex: lo,
                peer: lo
            }),
            "lo is no veth"
        );
        assert_eq!(
            host_side(999_999).unwrap(),
            None,
            "a missing interface is gone, not an error"
        );
    }
}
