//! Sidecar (<https://istio.io/latest/docs/reference/config/networking/sidecar/>) and Istio's
//! validation of it (`ValidateSidecar` in istio/istio `pkg/config/validation/validation.go`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    check_fqdn, check_ip, check_partial_wildcard, check_port, check_port_name, check_protocol,
    check_unix_address, check_wildcard_domain, check_workload_selector, is_dns1123_label, protocol, Errors,
    WorkloadSelector,
};
use super::destination_rule::{validate_connection_pool, ConnectionPoolSettings};
use super::gateway::{validate_server_tls, ServerTlsMode, ServerTlsSettings};
use super::virtual_service::{validate_destination, Destination};
use crate::istio::FieldError;

/// The spec of a Sidecar: which ports a workload's proxy listens on and what it can reach.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SidecarSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IstioIngressListener>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<IstioEgressListener>,
    /// Boxed: connection pool settings are large and rarely set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<Box<ConnectionPoolSettings>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// Istio's `IstioIngressListener`: an inbound port of the workload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IstioIngressListener {
    pub port: SidecarPort,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// Istio's `IstioEgressListener`: the hosts reachable (on a port, or on all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IstioEgressListener {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// Istio's `SidecarPort`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SidecarPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Deprecated by Istio; has no effect on sidecars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// Istio's `CaptureMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    Default,
    Iptables,
    None,
}

/// Istio's `OutboundTrafficPolicy`: what happens to traffic for unknown destinations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutboundTrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Destination>,
}

/// Istio's `OutboundTrafficPolicy.Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    RegistryOnly,
    AllowAny,
}

impl SidecarSpec {
    /// Istio's `ValidateSidecar`.
    pub fn field_errors(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        check_workload_selector(&mut e, "spec.workloadSelector", self.workload_selector.as_ref());
        if self.egress.is_empty()
            && self.ingress.is_empty()
            && self.outbound_traffic_policy.is_none()
            && self.inbound_connection_pool.is_none()
        {
            e.add("spec", "sidecar: empty configuration provided: set ingress, egress, outboundTrafficPolicy or inboundConnectionPool");
            return e.0;
        }
        let mut ports = std::collections::BTreeSet::new();
        for (i, l) in self.ingress.iter().enumerate() {
            let path = format!("spec.ingress[{i}]");
            let number = l.port.number.unwrap_or(0);
            validate_port(&mut e, &format!("{path}.port"), &l.port);
            e.check(format!("{path}.port.number"), check_port(number));
            if let Some(bind) = l.bind.as_deref().filter(|b| !b.is_empty()) {
                e.check(format!("{path}.bind"), check_ip(bind));
            }
            if !ports.insert(number) {
                e.add(
                    format!("{path}.port.number"),
                    "sidecar: ports on IP bound listeners must be unique",
                );
            }
            if let Some(ep) = l.default_endpoint.as_deref().filter(|d| !d.is_empty()) {
                e.check(format!("{path}.defaultEndpoint"), check_default_endpoint(ep));
            }
            if let Some(tls) = &l.tls {
                validate_ingress_tls(&mut e, &format!("{path}.tls"), tls, l.port.protocol.as_deref());
            }
            if let Some(pool) = &l.connection_pool {
                validate_connection_pool(&mut e, &format!("{path}.connectionPool"), pool);
            }
        }
        if let Some(pool) = &self.inbound_connection_pool {
            validate_connection_pool(&mut e, "spec.inboundConnectionPool", pool);
        }
        let mut ports = std::collections::BTreeSet::new();
        let mut sockets = std::collections::BTreeSet::new();
        let mut catch_all = false;
        for (i, l) in self.egress.iter().enumerate() {
            let path = format!("spec.egress[{i}]");
            match &l.port {
                None if catch_all => {
                    e.add(
                        &path,
                        "sidecar: egress can have only one listener with empty port",
                    );
                    continue;
                }
                None if i + 1 != self.egress.len() => {
                    e.add(&path, "sidecar: the egress listener with empty port should be the last listener in the list");
                }
                None => catch_all = true,
                Some(port) => {
                    let bind = l.bind.as_deref().unwrap_or("");
                    validate_egress_port(&mut e, &path, port, bind, l.capture_mode);
                    let number = port.number.unwrap_or(0);
                    if number == 0 {
                        if !sockets.insert(bind) {
                            e.add(
                                format!("{path}.bind"),
                                "sidecar: unix domain socket values for listeners must be unique",
                            );
                        }
                    } else if !ports.insert(number) {
                        e.add(
                            format!("{path}.port.number"),
                            "sidecar: ports on IP bound listeners must be unique",
                        );
                    }
                }
            }
            if l.hosts.is_empty() {
                e.add(format!("{path}.hosts"), "sidecar: egress listener must contain at least one host, e.g. \"./*\" or \"istio-system/*\"");
            }
            for (j, h) in l.hosts.iter().enumerate() {
                check_egress_host(&mut e, &format!("{path}.hosts[{j}]"), h);
            }
        }
        if let Some(tp) = &self.outbound_traffic_policy {
            if let Some(proxy) = &tp.egress_proxy {
                let path = "spec.outboundTrafficPolicy.egressProxy";
                if tp.mode != Some(OutboundMode::AllowAny) {
                    e.add(path, "sidecar: egressProxy must be set only with the ALLOW_ANY outbound traffic policy mode");
                } else {
                    e.check(format!("{path}.host"), check_fqdn(&proxy.host));
                    if proxy.port.is_none() {
                        e.add(format!("{path}.port"), "sidecar: egressProxy port must be set");
                    } else {
                        validate_destination(&mut e, path, proxy);
                    }
                }
            }
        }
        e.0
    }
}

fn validate_port(e: &mut Errors, path: &str, port: &SidecarPort) {
    if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
        e.check(format!("{path}.name"), check_port_name(name));
    }
    e.check(
        format!("{path}.protocol"),
        check_protocol(port.protocol.as_deref().unwrap_or("")),
    );
    if port.target_port.is_some_and(|t| t > 0) {
        e.add(
            format!("{path}.targetPort"),
            "targetPort has no impact on Sidecars: remove it",
        );
    }
}

fn validate_egress_port(
    e: &mut Errors,
    path: &str,
    port: &SidecarPort,
    bind: &str,
    capture: Option<CaptureMode>,
) {
    validate_port(e, &format!("{path}.port"), port);
    match port.number.unwrap_or(0) {
        0 => {
            // Port 0: a unix domain socket listener.
            match bind.strip_prefix("unix://") {
                Some(uds) => e.check(format!("{path}.bind"), check_unix_address(uds)),
                None => e.add(
                    format!("{path}.bind"),
                    "sidecar: ports with 0 value must have a unix domain socket bind address (unix://...)",
                ),
            }
            if capture.is_some_and(|c| c == CaptureMode::Iptables) {
                e.add(
                    format!("{path}.captureMode"),
                    "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
                );
            }
        }
        n => {
            e.check(format!("{path}.port.number"), check_port(n));
            if !bind.is_empty() {
                e.check(format!("{path}.bind"), check_ip(bind));
            }
        }
    }
}

/// `127.0.0.1:<port>`, `0.0.0.0:<port>`, `[::1]:<port>`, `[::]:<port>`, `:<port>` or `unix://<path>`.
fn check_default_endpoint(ep: &str) -> Result<(), String> {
    if let Some(uds) = ep.strip_prefix("unix://") {
        return check_unix_address(uds);
    }
    let form = "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port>, unix://<path> or unset";
    let (host, port) = ep.rsplit_once(':').ok_or_else(|| form.to_string())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if !["", "127.0.0.1", "0.0.0.0", "::1", "::"].contains(&host) {
        return Err(form.into());
    }
    let port: u32 = port
        .parse()
        .map_err(|_| format!("sidecar: defaultEndpoint port {port:?} is not a number"))?;
    check_port(port)
}

fn validate_ingress_tls(e: &mut Errors, path: &str, tls: &ServerTlsSettings, proto: Option<&str>) {
    for (set, field) in [
        (!tls.subject_alt_names.is_empty(), "subjectAltNames"),
        (tls.https_redirect == Some(true), "httpsRedirect"),
        (tls.credential_name.is_some(), "credentialName"),
        (!tls.credential_names.is_empty(), "credentialNames"),
        (!tls.tls_certificates.is_empty(), "tlsCertificates"),
    ] {
        if set {
            e.add(
                format!("{path}.{field}"),
                format!("sidecar: {field} is not supported in sidecar ingress tls"),
            );
        }
    }
    if let Some(mode @ (ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough)) = tls.mode {
        e.add(
            format!("{path}.mode"),
            format!("cannot set mode to {mode:?} in sidecar ingress tls: use SIMPLE or MUTUAL"),
        );
    }
    if !protocol(proto.unwrap_or("")).is_some_and(|p| p.is_tls()) {
        e.add(
            path,
            "server cannot have TLS settings for non HTTPS/TLS ports: set port.protocol to HTTPS or TLS",
        );
    }
    validate_server_tls(e, path, tls);
}

/// Istio's `ValidateNamespaceSlashWildcardHostname` for sidecars: `namespace/dnsName`.
fn check_egress_host(e: &mut Errors, path: &str, host: &str) {
    let Some((ns, name)) = host.split_once('/') else {
        e.add(path, format!("host {host:?} must be of form namespace/dnsName, e.g. \"./*\" or \"istio-system/*.example.com\""));
        return;
    };
    if ns.is_empty() || name.is_empty() {
        e.add(path, "config namespace and dnsName in host entry cannot be empty");
    }
    let bare = ns.strip_prefix('~').unwrap_or(ns);
    if !bare.is_empty() && bare != "*" && bare != "." && !is_dns1123_label(bare) {
        e.add(
            path,
            format!("invalid namespace value {ns:?} in sidecar: use *, ., ~ or a namespace name"),
        );
    }
    if name != "*" && !name.contains('.') {
        e.add(path, format!("short names (non FQDN) are not allowed: {name:?}"));
    }
    e.check(path, check_wildcard_domain(name));
    e.check(path, check_partial_wildcard(name));
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn errors(yaml: &str) -> Vec<String> {
        let spec: SidecarSpec = serde_yaml_ng::from_str(yaml).unwrap();
        spec.field_errors().iter().map(ToString::to_string).collect()
    }

    #[test_case("{egress: [{hosts: ['./*', 'istio-system/*']}]}" => Vec::<String>::new(); "default egress")]
    #[test_case("{}" => matches v if v[0].contains("empty configuration"); "empty")]
    #[test_case("{egress: [{hosts: ['reviews.default.svc.cluster.local']}]}" => matches v if v[0].contains("namespace/dnsName"); "host without namespace")]
    #[test_case("{egress: [{hosts: ['ns/reviews']}]}" => matches v if v[0].contains("short names"); "short name")]
    #[test_case("{egress: [{hosts: ['n_s/*']}]}" => matches v if v[0].contains("invalid namespace"); "namespace")]
    #[test_case("{egress: [{hosts: ['./*']}, {hosts: ['./*']}]}" => matches v if v[0].starts_with("spec.egress[0]: sidecar: the egress listener with empty port should be the last"); "catch-all not last")]
    #[test_case("{egress: [{port: {number: 80, protocol: HTTP, name: h}, hosts: ['./*']}, {port: {number: 80, protocol: HTTP, name: h2}, hosts: ['./*']}]}" => matches v if v[0].contains("must be unique"); "duplicate egress ports")]
    #[test_case("{egress: [{port: {number: 0, protocol: HTTP, name: h}, hosts: ['./*']}]}" => matches v if v[0].contains("unix domain socket"); "port zero without socket")]
    #[test_case("{ingress: [{port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: '127.0.0.1:8080'}]}" => Vec::<String>::new(); "ingress")]
    #[test_case("{ingress: [{port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: '10.0.0.1:8080'}]}" => matches v if v[0].starts_with("spec.ingress[0].defaultEndpoint: sidecar: defaultEndpoint must be of form"); "default endpoint host")]
    #[test_case("{ingress: [{port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: 'unix:///var/run/app.sock'}]}" => Vec::<String>::new(); "default endpoint socket")]
    #[test_case("{ingress: [{port: {protocol: HTTP, name: http}}]}" => matches v if v[0].contains("1..65535"); "ingress without number")]
    #[test_case("{ingress: [{port: {number: 8443, protocol: HTTP, name: http}, tls: {mode: SIMPLE, serverCertificate: a, privateKey: b}}]}" => matches v if v[0].contains("non HTTPS/TLS"); "tls on http ingress")]
    #[test_case("{outboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: {host: egress.example.com, port: {number: 80}}}}" => matches v if v[0].contains("ALLOW_ANY"); "egress proxy without allow any")]
    #[test_case("{workloadSelector: {labels: {app: '*'}}, egress: [{hosts: ['./*']}]}" => matches v if v[0].contains("wildcard"); "selector wildcard")]
    fn validation(yaml: &str) -> Vec<String> {
        errors(yaml)
    }
}
