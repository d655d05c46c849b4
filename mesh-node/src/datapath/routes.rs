//! Which interface leads to a pod: the node's own routing table (`/proc/self/net/route`),
//! as a CNI leaves it (a connected or /32 route per pod veth). The guards attach there.

use std::net::Ipv4Addr;

/// Longest-prefix match over the text of `/proc/net/route`, ignoring routes through a
/// gateway (the pod's veth is a directly connected route, never the default route).
pub fn pick_interface(table: &str, ip: Ipv4Addr) -> Option<String> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    let ip = u32::from(ip);
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| f.get(i).and_then(|v| u32::from_str_radix(v, 16).ok());
            // Addresses are printed as the in-memory (network order) u32 read on this host.
            let dest = u32::from_be_bytes(hex(1)?.to_ne_bytes());
            let flags = hex(3)?;
            let mask = u32::from_be_bytes(hex(7)?.to_ne_bytes());
            let usable = flags & RTF_UP != 0 && flags & RTF_GATEWAY == 0;
            (usable && ip & mask == dest).then(|| (mask.count_ones(), f[0].to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, iface)| iface)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t020012C6\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000012C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
vpod1\t0001010A\t00000000\t0001\t0\t0\t0\tFCFFFFFF\t0\t0\t0
vpod2\t0501010A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0
";

    #[test]
    fn longest_connected_prefix_wins() {
        assert_eq!(
            pick_interface(TABLE, Ipv4Addr::new(10, 1, 1, 2)).as_deref(),
            Some("vpod1")
        );
        assert_eq!(
            pick_interface(TABLE, Ipv4Addr::new(10, 1, 1, 5)).as_deref(),
            Some("vpod2")
        );
        assert_eq!(
            pick_interface(TABLE, Ipv4Addr::new(198, 18, 0, 7)).as_deref(),
            Some("eth0")
        );
        // Only the default route (via a gateway) matches: not a local pod.
        assert_eq!(pick_interface(TABLE, Ipv4Addr::new(8, 8, 8, 8)), None);
    }
}
