//! ServiceEntry (<https://istio.io/latest/docs/reference/config/networking/service-entry/>),
//! its endpoints (the WorkloadEntry spec) and Istio's validation (`ValidateServiceEntry` in
//! istio/istio `pkg/config/validation/validation.go`).

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    check_export_to, check_fqdn, check_ip_subnet, check_labels, check_port, check_port_name, check_protocol,
    check_unix_address, check_wildcard_domain, check_workload_selector, is_ip, protocol, Errors, Protocol,
    WorkloadSelector,
};
use crate::istio::FieldError;

/// The spec of a ServiceEntry: a service added to Istio's registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<WorkloadEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// Istio's `ServicePort`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    pub number: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// Istio's `ServiceEntry.Location`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    #[default]
    MeshExternal,
    MeshInternal,
}

/// Istio's `ServiceEntry.Resolution`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    #[default]
    None,
    Static,
    Dns,
    DnsRoundRobin,
    DynamicDns,
}

/// The spec of a WorkloadEntry: one endpoint (a VM, a pod outside the cluster, a hostname).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

impl ServiceEntrySpec {
    /// Istio's `ValidateServiceEntry`.
    pub fn field_errors(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        let resolution = self.resolution.unwrap_or_default();
        let endpoints = self.endpoints.as_deref().unwrap_or_default();
        check_workload_selector(&mut e, "spec.workloadSelector", self.workload_selector.as_ref());
        if self.workload_selector.is_some() && self.endpoints.is_some() {
            e.add(
                "spec",
                "only one of workloadSelector or endpoints is allowed in a service entry",
            );
        }
        if self.hosts.is_empty() {
            e.add("spec.hosts", "service entry must have at least one host");
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let path = format!("spec.hosts[{i}]");
            if h == "*" {
                e.add(path, "invalid host *: a service entry names its hosts");
            } else {
                // A partial wildcard such as `*x` is only a warning in Istio's
                // ValidateServiceEntry (`WrapWarning(ValidatePartialWildCard)`), so it is
                // accepted here; Sidecar and Gateway hosts still refuse it, as Istio does.
                e.check(&path, check_wildcard_domain(h));
            }
        }
        let mut cidr = false;
        for (i, a) in self.addresses.iter().enumerate() {
            cidr |= a.contains('/');
            e.check(format!("spec.addresses[{i}]"), check_ip_subnet(a));
        }
        if cidr && !matches!(resolution, Resolution::None | Resolution::Static) {
            e.add(
                "spec.addresses",
                "CIDR addresses are allowed only for NONE/STATIC resolution types",
            );
        }
        let mut names = BTreeSet::new();
        let mut numbers = BTreeSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            let path = format!("spec.ports[{i}]");
            if !names.insert(p.name.as_str()) {
                e.add(
                    format!("{path}.name"),
                    format!("service entry port name {:?} already defined", p.name),
                );
            }
            if !numbers.insert(p.number) {
                e.add(
                    format!("{path}.number"),
                    format!("service entry port {} already defined", p.number),
                );
            }
            if let Some(t) = p.target_port.filter(|t| *t != 0) {
                e.check(format!("{path}.targetPort"), check_port(t));
            }
            e.check(format!("{path}.name"), check_port_name(&p.name));
            e.check(
                format!("{path}.protocol"),
                check_protocol(p.protocol.as_deref().unwrap_or("")),
            );
            e.check(format!("{path}.number"), check_port(p.number));
        }
        match resolution {
            Resolution::None => {
                if !endpoints.is_empty() {
                    e.add(
                        "spec.endpoints",
                        "no endpoints should be provided for resolution type NONE: use STATIC or DNS",
                    );
                }
            }
            Resolution::Static => {
                for (i, ep) in endpoints.iter().enumerate() {
                    validate_endpoint(&mut e, &format!("spec.endpoints[{i}]"), ep, &names, false);
                }
            }
            Resolution::Dns | Resolution::DnsRoundRobin => {
                if endpoints.is_empty() {
                    if let Some((i, msg)) = self
                        .hosts
                        .iter()
                        .enumerate()
                        .find_map(|(i, h)| check_fqdn(h).err().map(|m| (i, m)))
                    {
                        e.add(
                            format!("spec.hosts[{i}]"),
                            format!("hosts must be FQDN (no wildcards) if no endpoints are provided for DNS resolution: {msg}"),
                        );
                    }
                }
                if resolution == Resolution::DnsRoundRobin && endpoints.len() > 1 {
                    e.add(
                        "spec.endpoints",
                        "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN",
                    );
                }
                for (i, ep) in endpoints.iter().enumerate() {
                    validate_endpoint(&mut e, &format!("spec.endpoints[{i}]"), ep, &names, true);
                }
            }
            Resolution::DynamicDns => {
                for (i, h) in self.hosts.iter().enumerate() {
                    if !h.starts_with('*') {
                        e.add(
                            format!("spec.hosts[{i}]"),
                            "host must be wildcarded (*.domain) for resolution mode DYNAMIC_DNS",
                        );
                    }
                }
                if !self.addresses.is_empty() {
                    e.add(
                        "spec.addresses",
                        "addresses cannot be set for resolution type DYNAMIC_DNS",
                    );
                }
                if !endpoints.is_empty() {
                    e.add(
                        "spec.endpoints",
                        "endpoints cannot be set for resolution type DYNAMIC_DNS",
                    );
                }
                for (i, p) in self.ports.iter().enumerate() {
                    let proto = protocol(p.protocol.as_deref().unwrap_or(""));
                    if !matches!(
                        proto,
                        Some(Protocol::Http | Protocol::Tls | Protocol::Grpc | Protocol::Http2)
                    ) {
                        e.add(format!("spec.ports[{i}].protocol"), "only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type DYNAMIC_DNS");
                    }
                }
            }
        }
        // Plain TCP cannot tell hosts apart, so several hosts need HTTP or TLS ports.
        if resolution != Resolution::None && self.hosts.len() > 1 {
            let opaque = self.ports.iter().position(|p| {
                protocol(p.protocol.as_deref().unwrap_or("")).is_none_or(|p| !p.is_http() && !p.is_tls())
            });
            if let Some(i) = opaque {
                e.add(format!("spec.ports[{i}]"), "multiple hosts provided with non-HTTP, non-TLS ports: use one host per service entry, or HTTP/TLS ports");
            }
        }
        check_export_to(&mut e, "spec.exportTo", &self.export_to, true);
        e.0
    }
}

/// Istio's `validateWorkloadEntry` as used for service entry endpoints.
fn validate_endpoint(
    e: &mut Errors,
    path: &str,
    ep: &WorkloadEntry,
    service_ports: &BTreeSet<&str>,
    dns: bool,
) {
    let addr = ep.address.as_deref().unwrap_or("");
    if addr.is_empty() {
        if ep.network.is_none() {
            e.add(format!("{path}.address"), "address is required (or a network)");
        }
    } else if let Some(uds) = addr.strip_prefix("unix://") {
        e.check(format!("{path}.address"), check_unix_address(uds));
        if !ep.ports.is_empty() {
            e.add(
                format!("{path}.ports"),
                format!("unix endpoint {addr} must not include ports"),
            );
        }
        if service_ports.len() != 1 {
            e.add(path, "exactly 1 service port required for unix endpoints");
        }
    } else if !is_ip(addr) {
        if !dns {
            e.add(format!("{path}.address"), format!("endpoint address {addr:?} is not a valid IP address (STATIC resolution): use DNS resolution for host names"));
        } else if check_fqdn(addr).is_err() {
            e.add(
                format!("{path}.address"),
                format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
            );
        }
    }
    for (name, port) in &ep.ports {
        let p = format!("{path}.ports.{name}");
        if !service_ports.contains(name.as_str()) {
            e.add(
                &p,
                format!("endpoint port {name:?} is not defined by the service entry's ports"),
            );
        }
        e.check(&p, check_port_name(name));
        e.check(&p, check_port(*port));
    }
    check_labels(e, &format!("{path}.labels"), &ep.labels);
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn errors(yaml: &str) -> Vec<String> {
        let spec: ServiceEntrySpec = serde_yaml_ng::from_str(yaml).unwrap();
        spec.field_errors().iter().map(ToString::to_string).collect()
    }

    #[test_case("{hosts: [api.example.com], ports: [{number: 443, name: https, protocol: TLS}], resolution: DNS}" => Vec::<String>::new(); "dns")]
    #[test_case("{ports: [{number: 80, name: http}]}" => vec!["spec.hosts: service entry must have at least one host".to_string()]; "no hosts")]
    #[test_case("{hosts: ['*']}" => matches v if v[0].starts_with("spec.hosts[0]: invalid host *"); "star host")]
    #[test_case("{hosts: ['*x']}" => Vec::<String>::new(); "partial wildcard is only a warning in Istio")]
    #[test_case("{hosts: [a.com], ports: [{number: 80, name: http}, {number: 80, name: http}]}" => matches v if v.len() == 2 && v[0].contains("already defined"); "duplicate ports")]
    #[test_case("{hosts: [a.com], ports: [{number: 80, name: Http_1}]}" => matches v if v[0].contains("invalid port name"); "port name")]
    #[test_case("{hosts: [a.com], addresses: [10.0.0.0/8], resolution: DNS}" => matches v if v[0].contains("CIDR addresses"); "cidr with dns")]
    #[test_case("{hosts: [a.com], resolution: NONE, endpoints: [{address: 1.1.1.1}]}" => matches v if v[0].contains("resolution type NONE"); "endpoints with none")]
    #[test_case("{hosts: [a.com], resolution: STATIC, endpoints: [{address: foo.com}]}" => matches v if v[0].starts_with("spec.endpoints[0].address"); "static hostname")]
    #[test_case("{hosts: ['*.a.com'], resolution: DNS}" => matches v if v[0].contains("must be FQDN"); "dns wildcard without endpoints")]
    #[test_case("{hosts: [a.com], resolution: DNS_ROUND_ROBIN, endpoints: [{address: b.com}, {address: c.com}]}" => matches v if v[0].contains("0 or 1 endpoint"); "round robin endpoints")]
    #[test_case("{hosts: [a.com], ports: [{number: 80, name: http}], resolution: STATIC, endpoints: [{address: 1.1.1.1, ports: {grpc: 90}}]}" => matches v if v[0].contains("not defined by the service entry"); "endpoint port name")]
    #[test_case("{hosts: [a.com, b.com], ports: [{number: 3306, name: db, protocol: TCP}], resolution: DNS}" => matches v if v[0].contains("multiple hosts"); "tcp with several hosts")]
    #[test_case("{hosts: [a.com], workloadSelector: {labels: {app: x}}, endpoints: []}" => matches v if v[0].contains("only one of workloadSelector"); "selector and endpoints")]
    #[test_case("{hosts: [a.com], exportTo: ['~', 'ns']}" => matches v if v[0].contains("no one (~)"); "export to no one and someone")]
    #[test_case("{hosts: [a.com], resolution: DYNAMIC_DNS}" => matches v if v[0].contains("wildcarded"); "dynamic dns without wildcard")]
    fn validation(yaml: &str) -> Vec<String> {
        errors(yaml)
    }
}
