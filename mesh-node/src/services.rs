//! Services as the outbound proxy sees them: the cluster IP and port a workload dials, the
//! ready endpoints behind it, and the choice of one endpoint per connection.
//!
//! The index is part of the [`Registry`](crate::workloads::enrollment::Registry), so a
//! connection resolves a VIP with the same config version it uses for everything else.
//!
//! Endpoint choice: round robin per service port, one atomic counter each. ztunnel picks a
//! random endpoint; round robin spreads a handful of connections evenly (a few long-lived
//! connections are the common case for a per-node L4 proxy, where random choice often piles
//! them onto one endpoint), costs one relaxed increment and needs no RNG. The counter
//! carries over config passes while the service port keeps its address. Every endpoint the
//! controller sends is ready (it drops the others); there is no locality, health checking or
//! outlier detection yet (those come with DestinationRule).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddrV4,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use mesh_api::node_config::{self, ServiceConfig, ServiceEndpoint, ServiceResolution};
use serde::Serialize;

/// Service ports by `vip:port`, for every TCP port of every service the controller sent.
///
/// Visibility (`exportTo`) is checked per connection against the caller's namespace, not
/// when the index is built: the same VIP may be usable by one local namespace and hidden from
/// another, and a hidden VIP is still worth naming in the access log.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct ServiceIndex {
    by_addr: BTreeMap<SocketAddrV4, ServicePort>,
}

/// One port of a service, with what the proxy needs to route a connection to it.
#[derive(Debug, Clone, Serialize)]
pub struct ServicePort {
    /// `namespace/name` of the service.
    pub service: String,
    pub hostname: String,
    pub port_name: String,
    /// Namespaces whose workloads may use it; `*` means all.
    pub visible_to: BTreeSet<String>,
    /// Ready endpoints, in the controller's order.
    pub endpoints: Vec<ServiceEndpoint>,
    /// Round-robin position, shared by the registry versions that keep this service port.
    #[serde(skip)]
    next: Arc<AtomicUsize>,
}

/// What an address means to a caller.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// Not a service VIP and port this node knows.
    NotAService,
    /// A service the caller's namespace may not use (`exportTo`).
    NotVisible(&'a ServicePort),
    /// A service the caller may use.
    Service(&'a ServicePort),
}

impl ServiceIndex {
    /// Indexes `services`, keeping the round-robin counters of `previous` for service ports
    /// that are still at the same address. Two services claiming one `vip:port` (which the
    /// compiler never produces) resolve to the first by name, with a warning.
    pub fn build(services: &[ServiceConfig], previous: &ServiceIndex) -> Self {
        let mut by_addr = BTreeMap::new();
        let mut sorted: Vec<&ServiceConfig> = services.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        // Passthrough entries (ServiceEntry `resolution: NONE`) and address ranges are not
        // load-balanced: the connection goes where the client dialled, like any address.
        for svc in sorted
            .into_iter()
            .filter(|s| s.vip_prefix_len == 32 && s.resolution != ServiceResolution::Passthrough)
        {
            // The proxy relays TCP only; a UDP or SCTP port of the same number is not this.
            for port in svc
                .ports
                .iter()
                .filter(|p| p.protocol.eq_ignore_ascii_case("TCP"))
            {
                let addr = SocketAddrV4::new(svc.vip, port.port);
                if let Some(first) = by_addr.get(&addr).map(|p: &ServicePort| &p.service) {
                    tracing::warn!(%addr, kept = %first, ignored = %svc.name, "two services claim one address");
                    continue;
                }
                let next = previous
                    .by_addr
                    .get(&addr)
                    .filter(|p| p.service == svc.name)
                    .map_or_else(Arc::default, |p| p.next.clone());
                by_addr.insert(
                    addr,
                    ServicePort {
                        service: svc.name.clone(),
                        hostname: svc.hostname.clone(),
                        port_name: port.name.clone(),
                        visible_to: svc.visible_to.clone(),
                        endpoints: port.endpoints.clone(),
                        next,
                    },
                );
            }
        }
        Self { by_addr }
    }

    /// What `addr` is for a caller in `namespace` (`None`: a caller the registry does not
    /// know, which sees only services exported to everyone).
    pub fn lookup(&self, namespace: Option<&str>, addr: SocketAddrV4) -> Lookup<'_> {
        let Some(port) = self.by_addr.get(&addr) else {
            return Lookup::NotAService;
        };
        let visible = match namespace {
            Some(ns) => node_config::visible(&port.visible_to, ns),
            None => port.visible_to.contains("*"),
        };
        if visible {
            Lookup::Service(port)
        } else {
            Lookup::NotVisible(port)
        }
    }

    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }
}

impl ServicePort {
    /// The endpoint for the next connection, round robin; `None` when there is none.
    pub fn pick(&self) -> Option<&ServiceEndpoint> {
        if self.endpoints.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.endpoints.get(n % self.endpoints.len())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use mesh_api::node_config::ServicePortConfig;

    use super::*;

    fn endpoint(last: u8) -> ServiceEndpoint {
        ServiceEndpoint {
            ip: Ipv4Addr::new(10, 1, last, 2),
            port: 8080,
            pod: None,
            identity: None,
            labels: Default::default(),
        }
    }

    fn service(name: &str, vip: [u8; 4], visible_to: &[&str], endpoints: &[u8]) -> ServiceConfig {
        ServiceConfig {
            name: name.into(),
            hostname: format!("{name}.svc"),
            vip: vip.into(),
            vip_prefix_len: 32,
            source: Default::default(),
            location: Default::default(),
            resolution: Default::default(),
            ports: vec![
                ServicePortConfig {
                    name: "http".into(),
                    port: 80,
                    protocol: "TCP".into(),
                    app_protocol: None,
                    endpoints: endpoints.iter().copied().map(endpoint).collect(),
                },
                ServicePortConfig {
                    name: "dns".into(),
                    port: 53,
                    protocol: "UDP".into(),
                    app_protocol: None,
                    endpoints: endpoints.iter().copied().map(endpoint).collect(),
                },
            ],
            visible_to: visible_to.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn addr(vip: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(vip.into(), port)
    }

    #[test]
    fn round_robin_covers_every_endpoint_and_survives_a_rebuild() {
        let config = [service("shop/web", [10, 96, 0, 10], &["*"], &[1, 2, 3])];
        let index = ServiceIndex::build(&config, &ServiceIndex::default());
        let Lookup::Service(web) = index.lookup(Some("shop"), addr([10, 96, 0, 10], 80)) else {
            panic!("not found")
        };
        let picks: Vec<u8> = (0..6).map(|_| web.pick().unwrap().ip.octets()[2]).collect();
        assert_eq!(picks, [1, 2, 3, 1, 2, 3]);

        let index = ServiceIndex::build(&config, &index);
        let Lookup::Service(web) = index.lookup(Some("shop"), addr([10, 96, 0, 10], 80)) else {
            panic!("not found")
        };
        assert_eq!(web.pick().unwrap().ip.octets()[2], 1, "the counter carried over");
    }

    #[test]
    fn lookup_honours_visibility_port_and_protocol() {
        let config = [
            service("shop/web", [10, 96, 0, 10], &["shop"], &[1]),
            service("shop/empty", [10, 96, 0, 11], &["*"], &[]),
        ];
        let index = ServiceIndex::build(&config, &ServiceIndex::default());
        assert_eq!(index.len(), 2, "UDP ports are not indexed");
        let web = addr([10, 96, 0, 10], 80);
        assert!(matches!(index.lookup(Some("shop"), web), Lookup::Service(p) if p.service == "shop/web"));
        assert!(matches!(index.lookup(Some("shop2"), web), Lookup::NotVisible(_)));
        assert!(matches!(index.lookup(None, web), Lookup::NotVisible(_)));
        assert!(matches!(
            index.lookup(Some("shop"), addr([10, 96, 0, 10], 53)),
            Lookup::NotAService
        ));
        assert!(matches!(
            index.lookup(Some("shop"), addr([10, 96, 0, 10], 81)),
            Lookup::NotAService
        ));
        let Lookup::Service(empty) = index.lookup(None, addr([10, 96, 0, 11], 80)) else {
            panic!("exported to everyone")
        };
        assert!(empty.pick().is_none());
    }

    #[test]
    fn a_second_claim_on_an_address_is_ignored() {
        let config = [
            service("shop/b", [10, 96, 0, 10], &["*"], &[2]),
            service("shop/a", [10, 96, 0, 10], &["*"], &[1]),
        ];
        let index = ServiceIndex::build(&config, &ServiceIndex::default());
        let Lookup::Service(p) = index.lookup(None, addr([10, 96, 0, 10], 80)) else {
            panic!()
        };
        assert_eq!(p.service, "shop/a");
    }

    #[test]
    fn serialises_by_address() {
        let index = ServiceIndex::build(
            &[service("shop/web", [10, 96, 0, 10], &["*"], &[1])],
            &ServiceIndex::default(),
        );
        let json = serde_json::to_value(&index).unwrap();
        assert_eq!(json["10.96.0.10:80"]["service"], "shop/web");
        assert_eq!(json["10.96.0.10:80"]["endpoints"][0]["ip"], "10.1.1.2");
    }
}
