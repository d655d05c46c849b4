//! The addresses the node's kernel delivers to itself. The proxy runs in the node's network
//! namespace, so a captured connect to one of them (or to `0.0.0.0/8`, `127.0.0.0/8`) would
//! reach the node's own services — the admin API on 127.0.0.1:15000, the kubelet — on a
//! pod's behalf, from the node's address. The proxy refuses those destinations; connect4
//! already leaves `127.0.0.0/8` and `0.0.0.0/8` inside the pod, where they belong.

use std::{collections::HashSet, net::IpAddr};

use arc_swap::ArcSwap;

/// The node's interface addresses, refreshed by every enrollment pass (500 ms).
#[derive(Default)]
pub struct NodeAddresses {
    addresses: ArcSwap<HashSet<IpAddr>>,
}

impl NodeAddresses {
    /// Whether a connection to `ip` from the node's namespace stays on the node.
    pub fn is_node_local(&self, ip: IpAddr) -> bool {
        is_host_local(ip) || self.addresses.load().contains(&ip)
    }

    /// Re-reads the interface addresses; keeps the previous set if that fails.
    pub fn refresh(&self) {
        match interface_addresses() {
            Ok(now) => {
                if **self.addresses.load() != now {
                    self.addresses.store(now.into());
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the node's addresses"),
        }
    }
}

/// Addresses that are the caller's own host whatever the interfaces say.
pub fn is_host_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 0 || v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.to_ipv4_mapped().is_some_and(|v4| is_host_local(v4.into()))
        }
    }
}

fn interface_addresses() -> std::io::Result<HashSet<IpAddr>> {
    let mut found = HashSet::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below; every node is read while
    // the list is alive and its address pointer is checked for null and family first.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut cur = head;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        found.insert(IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        found.insert(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_own_ranges_are_local_whatever_the_interfaces() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.9.9.9",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:0.0.0.0",
        ] {
            assert!(is_host_local(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.1.1.2", "198.18.0.1", "fd00::1", "::ffff:10.0.0.1"] {
            assert!(!is_host_local(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn interface_addresses_include_loopback_and_are_refreshed() {
        let a = NodeAddresses::default();
        assert!(!a.addresses.load().contains(&IpAddr::from([127, 0, 0, 1])));
        a.refresh();
        assert!(a.addresses.load().contains(&IpAddr::from([127, 0, 0, 1])));
        assert!(a.is_node_local("127.0.0.1".parse().unwrap()));
    }
}
