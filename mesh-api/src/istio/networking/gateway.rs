//! Gateway (<https://istio.io/latest/docs/reference/config/networking/gateway/>) and Istio's
//! validation of it (`ValidateGateway` in istio/istio `pkg/config/validation/validation.go`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    check_ip, check_partial_wildcard, check_port, check_unix_address, check_wildcard_domain,
    is_dns1123_label, is_ip, protocol, Errors,
};
use crate::istio::FieldError;

/// The spec of a Gateway: the listeners of a gateway proxy selected by labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewaySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
}

/// Istio's `Server`: one listener (port, hosts, TLS).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Server {
    pub port: Port,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Istio's `Port` of a gateway server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Port {
    pub number: u32,
    pub protocol: String,
    pub name: String,
    /// Deprecated by Istio; has no effect on gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// Istio's `ServerTLSSettings`: TLS termination of a gateway server or sidecar ingress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerTlsSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServerTlsMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_credential_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_certificates: Vec<TlsCertificate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<TlsProtocol>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// Istio's `ServerTLSSettings.TLSCertificate`: one of several server certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsCertificate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
}

/// Istio's `ServerTLSSettings.TLSmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

/// Istio's `ServerTLSSettings.TLSProtocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TlsProtocol {
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    #[serde(rename = "TLSV1_0")]
    TlsV1_0,
    #[serde(rename = "TLSV1_1")]
    TlsV1_1,
    #[serde(rename = "TLSV1_2")]
    TlsV1_2,
    #[serde(rename = "TLSV1_3")]
    TlsV1_3,
}

impl GatewaySpec {
    /// Istio's `ValidateGateway` (the object's name is checked by the Kubernetes API).
    pub fn field_errors(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        if self.servers.is_empty() {
            e.add("spec.servers", "gateway must have at least one server");
        }
        let mut port_names = std::collections::BTreeSet::new();
        for (i, s) in self.servers.iter().enumerate() {
            let path = format!("spec.servers[{i}]");
            validate_server(&mut e, &path, s);
            if !port_names.insert(s.port.name.as_str()) {
                e.add(
                    format!("{path}.port.name"),
                    format!(
                        "port names in servers must be unique: duplicate name {}",
                        s.port.name
                    ),
                );
            }
        }
        e.0
    }
}

fn validate_server(e: &mut Errors, path: &str, s: &Server) {
    if s.hosts.is_empty() {
        e.add(
            format!("{path}.hosts"),
            "server config must contain at least one host",
        );
    }
    for (i, h) in s.hosts.iter().enumerate() {
        check_gateway_host(e, &format!("{path}.hosts[{i}]"), h);
    }
    let bind = s.bind.as_deref().unwrap_or("");
    let p = &s.port;
    let proto = protocol(&p.protocol);
    let mut port_ok = true;
    if proto.is_none() {
        e.add(
            format!("{path}.port.protocol"),
            format!("invalid protocol {:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, HTTPS, TLS, MONGO, REDIS, MYSQL, TCP", p.protocol),
        );
        port_ok = false;
    }
    if p.number > 0 || !bind.starts_with("unix://") {
        if let Err(msg) = check_port(p.number) {
            e.add(format!("{path}.port.number"), msg);
            port_ok = false;
        }
    }
    if p.target_port.is_some_and(|t| t > 0) {
        e.add(
            format!("{path}.port.targetPort"),
            "targetPort has no impact on Gateways: remove it",
        );
        port_ok = false;
    }
    if p.name.is_empty() {
        e.add(format!("{path}.port.name"), "port name must be set");
        port_ok = false;
    }
    if let Some(uds) = bind.strip_prefix("unix://") {
        e.check(format!("{path}.bind"), check_unix_address(uds));
        if p.number != 0 {
            e.add(
                format!("{path}.port.number"),
                "port number must be 0 for a unix domain socket bind",
            );
        }
    } else if !bind.is_empty() {
        e.check(format!("{path}.bind"), check_ip(bind));
    }
    if let Some(tls) = &s.tls {
        validate_server_tls(e, &format!("{path}.tls"), tls);
    }
    if let (true, Some(proto)) = (port_ok, proto) {
        match &s.tls {
            None if proto.is_tls() => e.add(
                format!("{path}.tls"),
                "server must have TLS settings for HTTPS/TLS protocols: add tls.mode and credentialName",
            ),
            Some(tls) if !proto.is_tls() => {
                // On a plain HTTP port only `httpsRedirect` makes sense.
                let redirect_only = tls.mode.is_none_or(|m| m == ServerTlsMode::Passthrough)
                    && tls.ca_certificates.is_none()
                    && tls.private_key.is_none()
                    && tls.server_certificate.is_none();
                if !proto.is_http() {
                    e.add(
                        format!("{path}.tls"),
                        "server cannot have TLS settings for non HTTPS/TLS ports",
                    );
                } else if !redirect_only {
                    e.add(
                        format!("{path}.tls"),
                        "server cannot have TLS settings for plain text HTTP ports",
                    );
                }
            }
            _ => {}
        }
    }
}

/// Istio's `ValidateNamespaceSlashWildcardHostname` for gateways: `[namespace/]dnsName`.
fn check_gateway_host(e: &mut Errors, path: &str, host: &str) {
    let name = match host.split_once('/') {
        None => host,
        Some((ns, name)) => {
            if ns.is_empty() || name.is_empty() {
                e.add(path, "config namespace and dnsName in host entry cannot be empty");
            }
            if ns != "*" && ns != "." && !is_dns1123_label(ns) {
                e.add(
                    path,
                    format!("invalid namespace value {ns:?} in gateway: use *, . or a namespace name"),
                );
            }
            name
        }
    };
    if name != "*" && !name.contains('.') {
        e.add(path, format!("short names (non FQDN) are not allowed: {name:?}"));
    }
    if let Err(msg) = check_wildcard_domain(name) {
        if !is_ip(name) {
            e.add(path, msg);
        }
    }
    e.check(path, check_partial_wildcard(name));
}

/// Istio's `validateTLSOptions` (also used for Sidecar ingress TLS).
pub(crate) fn validate_server_tls(e: &mut Errors, path: &str, tls: &ServerTlsSettings) {
    let mode = tls.mode.unwrap_or(ServerTlsMode::Passthrough);
    if mode == ServerTlsMode::IstioMutual {
        for (set, field) in [
            (tls.server_certificate.is_some(), "serverCertificate"),
            (tls.private_key.is_some(), "privateKey"),
            (tls.ca_certificates.is_some(), "caCertificates"),
            (!tls.tls_certificates.is_empty(), "tlsCertificates"),
            (tls.credential_name.is_some(), "credentialName"),
            (!tls.credential_names.is_empty(), "credentialNames"),
        ] {
            if set {
                e.add(
                    format!("{path}.{field}"),
                    format!("ISTIO_MUTUAL TLS cannot have {field}: Istio provides the certificates"),
                );
            }
        }
        return;
    }
    let sources = usize::from(tls.server_certificate.is_some() && tls.private_key.is_some())
        + usize::from(tls.credential_name.is_some())
        + usize::from(!tls.credential_names.is_empty())
        + usize::from(!tls.tls_certificates.is_empty());
    if sources > 1 {
        e.add(
            path,
            "only one of credentialName, credentialNames, serverCertificate/privateKey, tlsCertificates should be specified",
        );
    }
    let terminating = matches!(
        mode,
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    );
    if terminating && (tls.credential_name.is_some() || !tls.credential_names.is_empty()) {
        // The certificates come from the credential.
        return;
    }
    if terminating {
        let what = if mode == ServerTlsMode::Simple {
            "SIMPLE TLS"
        } else {
            "MUTUAL TLS"
        };
        if mode != ServerTlsMode::Simple && tls.ca_certificates.is_none() {
            e.add(
                format!("{path}.caCertificates"),
                format!("{what} requires a client CA bundle (or a credentialName)"),
            );
        }
        let certs: Vec<(Option<&String>, Option<&String>)> = if tls.tls_certificates.is_empty() {
            vec![(tls.server_certificate.as_ref(), tls.private_key.as_ref())]
        } else {
            tls.tls_certificates
                .iter()
                .map(|c| (c.server_certificate.as_ref(), c.private_key.as_ref()))
                .collect()
        };
        for (cert, key) in certs {
            if cert.is_none() {
                e.add(
                    path,
                    format!("{what} requires a server certificate: set credentialName or serverCertificate"),
                );
            }
            if key.is_none() {
                e.add(
                    path,
                    format!("{what} requires a private key: set credentialName or privateKey"),
                );
            }
        }
    }
    if tls.ca_crl.is_some() {
        if tls.credential_name.is_some() {
            e.add(
                format!("{path}.caCrl"),
                "CRL is not supported with credentialName: put the CRL in the credential",
            );
        }
        if mode == ServerTlsMode::Simple {
            e.add(format!("{path}.caCrl"), "CRL is not supported with SIMPLE TLS");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn errors(servers: &str) -> Vec<String> {
        let spec: GatewaySpec =
            serde_yaml_ng::from_str(&format!("{{selector: {{app: gw}}, servers: {servers}}}")).unwrap();
        spec.field_errors().iter().map(ToString::to_string).collect()
    }

    const HTTP: &str = "port: {number: 80, name: http, protocol: HTTP}";

    #[test_case(&format!("[{{{HTTP}, hosts: ['*']}}]") => Vec::<String>::new(); "plain http")]
    #[test_case("[]" => vec!["spec.servers: gateway must have at least one server".to_string()]; "no servers")]
    #[test_case(&format!("[{{{HTTP}}}]") => vec!["spec.servers[0].hosts: server config must contain at least one host".to_string()]; "no hosts")]
    #[test_case(&format!("[{{{HTTP}, hosts: [reviews]}}]") => matches v if v[0].contains("short names"); "short name")]
    #[test_case(&format!("[{{{HTTP}, hosts: ['foo*.com']}}]") => matches v if v.iter().any(|e| e.contains("partial wildcard")); "partial wildcard")]
    #[test_case(&format!("[{{{HTTP}, hosts: ['ns1/*.example.com', './foo.com']}}]") => Vec::<String>::new(); "namespaced hosts")]
    #[test_case("[{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*']}]" => matches v if v[0].starts_with("spec.servers[0].tls: server must have TLS settings"); "https without tls")]
    #[test_case("[{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE}}]" => matches v if v[0].contains("requires a server certificate"); "simple without certificate")]
    #[test_case("[{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: c}}]" => Vec::<String>::new(); "simple with credential")]
    #[test_case("[{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: PASSTHROUGH}}]" => Vec::<String>::new(); "passthrough")]
    #[test_case("[{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: MUTUAL, serverCertificate: a, privateKey: b}}]" => matches v if v[0].contains("client CA bundle"); "mutual without ca")]
    #[test_case("[{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: ISTIO_MUTUAL, credentialName: c}}]" => matches v if v[0].starts_with("spec.servers[0].tls.credentialName: ISTIO_MUTUAL"); "istio mutual with credential")]
    #[test_case(&format!("[{{{HTTP}, hosts: ['*'], tls: {{httpsRedirect: true}}}}]") => Vec::<String>::new(); "https redirect")]
    #[test_case("[{port: {number: 31400, name: tcp, protocol: TCP}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: c}}]" => matches v if v[0].contains("non HTTPS/TLS"); "tls on tcp")]
    #[test_case("[{port: {number: 0, name: http, protocol: HTTP}, hosts: ['*']}]" => matches v if v[0].contains("1..65535"); "port zero")]
    #[test_case("[{port: {number: 80, name: http, protocol: HTTPX}, hosts: ['*']}]" => matches v if v[0].contains("invalid protocol"); "protocol")]
    #[test_case(&format!("[{{{HTTP}, hosts: ['*']}}, {{{HTTP}, hosts: ['*']}}]") => matches v if v[0].contains("must be unique"); "duplicate port names")]
    fn validation(servers: &str) -> Vec<String> {
        errors(servers)
    }
}
