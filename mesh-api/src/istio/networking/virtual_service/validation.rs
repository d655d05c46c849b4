//! Istio's validation of a VirtualService: `ValidateVirtualService` in istio/istio
//! `pkg/config/validation/validation.go` and `virtualservice.go`.

use std::collections::BTreeMap;

use super::*;
use crate::istio::networking::common::{
    check_export_to, check_fqdn, check_ip_subnet, check_labels, check_percentage, check_port, check_regex,
    check_string_match, check_wildcard_domain, is_dns1123_label, is_ip, Errors,
};
use crate::istio::FieldError;

mod http_policies;

use http_policies::{
    check_http_status, validate_cors, validate_fault, validate_headers, validate_redirect, validate_retry,
};

const JWT_CLAIM_PREFIX: &str = "@request.auth.claims";

impl VirtualServiceSpec {
    /// Istio's `ValidateVirtualService`.
    pub fn field_errors(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        if self.hosts.is_empty() {
            // No hosts: a delegate VirtualService, which only carries HTTP routes.
            if !self.gateways.is_empty() {
                e.add(
                    "spec.gateways",
                    "a delegate virtual service (no hosts) must have no gateways: remove them or add hosts",
                );
            }
            if !self.tls.is_empty() {
                e.add(
                    "spec.tls",
                    "a delegate virtual service (no hosts) must have no tls routes",
                );
            }
            if !self.tcp.is_empty() {
                e.add(
                    "spec.tcp",
                    "a delegate virtual service (no hosts) must have no tcp routes",
                );
            }
        }
        let applies_to_gateway = !self.gateways.is_empty() && !self.gateways.iter().any(|g| g == "mesh");
        let applies_to_mesh = !applies_to_gateway;
        for (i, g) in self.gateways.iter().enumerate() {
            e.check(format!("spec.gateways[{i}]"), check_gateway_name(g));
        }
        if !applies_to_gateway {
            for (i, http) in self.http.iter().enumerate() {
                for (j, m) in http.matches.iter().enumerate() {
                    for (field, map) in [("headers", &m.headers), ("withoutHeaders", &m.without_headers)] {
                        for key in map.keys().filter(|k| k.starts_with(JWT_CLAIM_PREFIX)) {
                            e.add(
                                format!("spec.http[{i}].match[{j}].{field}.{key}"),
                                "JWT claim based routing is only supported for gateways: bind the virtual service to a gateway",
                            );
                        }
                    }
                }
            }
        }
        let sni = self
            .tls
            .iter()
            .any(|t| t.matches.iter().any(|m| !m.sni_hosts.is_empty()));
        let mut all_hosts_valid = true;
        for (i, h) in self.hosts.iter().enumerate() {
            let path = format!("spec.hosts[{i}]");
            let result = if applies_to_gateway {
                check_gateway_bound_domain(sni, h)
            } else {
                check_wildcard_domain(h)
            };
            match result {
                Err(msg) if !is_ip(h) => {
                    e.add(path, msg);
                    all_hosts_valid = false;
                }
                Ok(()) if applies_to_mesh && h == "*" => {
                    e.add(path, "wildcard host * is not allowed for virtual services bound to the mesh gateway: name the hosts, or bind to a gateway only");
                    all_hosts_valid = false;
                }
                _ => {}
            }
        }
        if all_hosts_valid {
            for i in 0..self.hosts.len() {
                for j in i + 1..self.hosts.len() {
                    if host_matches(&self.hosts[i], &self.hosts[j]) {
                        e.add(
                            format!("spec.hosts[{j}]"),
                            format!(
                                "duplicate hosts in virtual service: {} & {}",
                                self.hosts[i], self.hosts[j]
                            ),
                        );
                    }
                }
            }
        }
        if self.http.is_empty() && self.tcp.is_empty() && self.tls.is_empty() {
            e.add("spec", "http, tcp or tls must be provided in virtual service");
        }
        let delegate = self.hosts.is_empty();
        for (i, http) in self.http.iter().enumerate() {
            validate_http_route(&mut e, &format!("spec.http[{i}]"), http, delegate);
        }
        for (i, tls) in self.tls.iter().enumerate() {
            let path = format!("spec.tls[{i}]");
            if tls.matches.is_empty() {
                e.add(
                    format!("{path}.match"),
                    "TLS route must have at least one match condition",
                );
            }
            for (j, m) in tls.matches.iter().enumerate() {
                let mpath = format!("{path}.match[{j}]");
                if m.sni_hosts.is_empty() {
                    e.add(
                        format!("{mpath}.sniHosts"),
                        "TLS match must have at least one SNI host",
                    );
                }
                for (k, s) in m.sni_hosts.iter().enumerate() {
                    self.validate_sni_host(&mut e, &format!("{mpath}.sniHosts[{k}]"), s, applies_to_gateway);
                }
                validate_l4_match(
                    &mut e,
                    &mpath,
                    &m.destination_subnets,
                    m.port,
                    &m.source_labels,
                    &m.gateways,
                );
            }
            if tls.route.is_empty() {
                e.add(
                    format!("{path}.route"),
                    "TLS route is required: add at least one destination",
                );
            }
            validate_route_destinations(&mut e, &path, &tls.route);
        }
        for (i, tcp) in self.tcp.iter().enumerate() {
            let path = format!("spec.tcp[{i}]");
            for (j, m) in tcp.matches.iter().enumerate() {
                validate_l4_match(
                    &mut e,
                    &format!("{path}.match[{j}]"),
                    &m.destination_subnets,
                    m.port,
                    &m.source_labels,
                    &m.gateways,
                );
            }
            if tcp.route.is_empty() {
                e.add(
                    format!("{path}.route"),
                    "TCP route is required: add at least one destination",
                );
            }
            validate_route_destinations(&mut e, &path, &tcp.route);
        }
        check_export_to(&mut e, "spec.exportTo", &self.export_to, false);
        e.0
    }

    fn validate_sni_host(&self, e: &mut Errors, path: &str, sni: &str, gateway: bool) {
        let result = if gateway {
            check_gateway_bound_domain(true, sni)
        } else {
            check_wildcard_domain(sni)
        };
        if let Err(msg) = result {
            if !is_ip(sni) {
                e.add(path, msg);
            }
            return;
        }
        if !self.hosts.iter().any(|h| host_subset_of(sni, h)) {
            e.add(
                path,
                format!(
                    "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                    self.hosts.join(", ")
                ),
            );
        }
    }
}

/// Istio's `host.Name.Matches`: whether two (possibly wildcard) hosts overlap.
fn host_matches(a: &str, b: &str) -> bool {
    let covers = |wild: &str, other: &str| {
        wild.strip_prefix('*')
            .is_some_and(|suffix| other.ends_with(suffix) || other.strip_prefix('*') == Some(suffix))
    };
    a == b || covers(a, b) || covers(b, a)
}

/// Istio's `host.Name.SubsetOf`: whether every name `a` matches is matched by `b`.
fn host_subset_of(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (_, None) => false,
        (None, Some(suffix)) => a.ends_with(suffix),
        (Some(sa), Some(sb)) => sa.ends_with(sb),
    }
}

/// Istio's `ValidateWildcardDomainForVirtualServiceBoundToGateway`: also accepts the SNI names
/// of AUTO_PASSTHROUGH gateways (`outbound_.80_._.reviews.default.svc.cluster.local`).
fn check_gateway_bound_domain(sni: bool, host: &str) -> Result<(), String> {
    if sni && host.starts_with("outbound_") {
        let parts: Vec<&str> = host.split('_').collect();
        let ok = parts.len() >= 4
            && parts[0] == "outbound"
            && parts[1]
                .trim_matches('.')
                .starts_with(|c: char| c.is_ascii_digit())
            && parts[3]
                .trim_matches('.')
                .contains(|c: char| c.is_ascii_alphabetic());
        return if ok {
            Ok(())
        } else {
            Err(format!(
                "domain name {host:?} invalid: use outbound_.<port>_._.<hostname>"
            ))
        };
    }
    check_wildcard_domain(host)
}

/// Istio's `validateGatewayNames`: `namespace/name`, or a bare name (`mesh`, legacy FQDN).
fn check_gateway_name(g: &str) -> Result<(), String> {
    match g.split_once('/') {
        None => check_fqdn(g),
        Some((ns, name)) => {
            if ns.is_empty() || name.is_empty() {
                Err("config namespace and gateway name cannot be empty: use <namespace>/<name>".into())
            } else if !is_dns1123_label(ns) {
                Err(format!("invalid value for namespace: {ns:?}"))
            } else if !is_dns1123_label(name) {
                Err(format!("invalid value for gateway name: {name:?}"))
            } else {
                Ok(())
            }
        }
    }
}

fn validate_l4_match(
    e: &mut Errors,
    path: &str,
    subnets: &[String],
    port: Option<u32>,
    source_labels: &BTreeMap<String, String>,
    gateways: &[String],
) {
    for (k, s) in subnets.iter().enumerate() {
        e.check(format!("{path}.destinationSubnets[{k}]"), check_ip_subnet(s));
    }
    if let Some(p) = port {
        e.check(format!("{path}.port"), check_port(p));
    }
    check_labels(e, &format!("{path}.sourceLabels"), source_labels);
    for (k, g) in gateways.iter().enumerate() {
        e.check(format!("{path}.gateways[{k}]"), check_gateway_name(g));
    }
}

fn validate_http_route(e: &mut Errors, path: &str, http: &HttpRoute, delegate: bool) {
    // Conflicts between the ways of answering (`validateHTTPRouteConflict`).
    if http.delegate.is_some() && !delegate {
        if http.redirect.is_some() {
            e.add(
                format!("{path}.redirect"),
                "a root HTTP route (with delegate) must not specify redirect",
            );
        }
        if !http.route.is_empty() {
            e.add(
                format!("{path}.route"),
                "a root HTTP route (with delegate) must not specify route",
            );
        }
    } else {
        if delegate && http.delegate.is_some() {
            e.add(
                format!("{path}.delegate"),
                "a delegate HTTP route cannot itself delegate",
            );
        }
        let conflicts = |e: &mut Errors, what: &str| {
            if !http.route.is_empty() {
                e.add(
                    format!("{path}.route"),
                    format!("HTTP route cannot contain both route and {what}"),
                );
            }
            if http.fault.is_some() {
                e.add(
                    format!("{path}.fault"),
                    format!("HTTP route cannot contain both fault and {what}"),
                );
            }
            if http.rewrite.is_some() {
                e.add(
                    format!("{path}.rewrite"),
                    format!("HTTP route cannot contain both rewrite and {what}"),
                );
            }
        };
        if http.redirect.is_some() {
            conflicts(e, "redirect");
            if http.direct_response.is_some() {
                e.add(
                    format!("{path}.directResponse"),
                    "HTTP route cannot contain both directResponse and redirect",
                );
            }
        } else if http.direct_response.is_some() {
            conflicts(e, "directResponse");
        } else if http.route.is_empty() {
            e.add(path, "HTTP route, redirect or directResponse is required");
        }
    }
    if http.mirror.is_some() && !http.mirrors.is_empty() {
        e.add(
            format!("{path}.mirrors"),
            "HTTP route cannot contain both mirror and mirrors: move mirror into mirrors",
        );
    }

    for (j, m) in http.matches.iter().enumerate() {
        validate_http_match(e, &format!("{path}.match[{j}]"), m);
    }
    validate_headers(e, &format!("{path}.headers"), http.headers.as_ref());
    if let Some(cors) = &http.cors_policy {
        validate_cors(e, &format!("{path}.corsPolicy"), cors);
    }
    if let Some(fault) = &http.fault {
        validate_fault(e, &format!("{path}.fault"), fault);
    }
    for (field, value) in [
        ("mirrorPercent", http.mirror_percent),
        ("mirror_percent", http.mirror_percent_legacy),
    ] {
        if let Some(p) = value.filter(|p| *p > 100) {
            e.add(
                format!("{path}.{field}"),
                format!("{field} must be at most 100 (it is {p}): prefer mirrorPercentage"),
            );
        }
    }
    if let Some(p) = &http.mirror_percentage {
        if !(0.0..=100.0).contains(&p.value()) {
            e.add(
                format!("{path}.mirrorPercentage.value"),
                format!("mirrorPercentage must be in 0..100 (it is {})", p.value()),
            );
        }
    }
    if let Some(m) = &http.mirror {
        validate_destination(e, &format!("{path}.mirror"), m);
    }
    for (k, m) in http.mirrors.iter().enumerate() {
        let mpath = format!("{path}.mirrors[{k}]");
        validate_destination(e, &format!("{mpath}.destination"), &m.destination);
        if let Some(p) = &m.percentage {
            if !(0.0..=100.0).contains(&p.value()) {
                e.add(
                    format!("{mpath}.percentage.value"),
                    format!("mirror percentage must be in 0..100 (it is {})", p.value()),
                );
            }
        }
    }
    if let Some(r) = &http.redirect {
        validate_redirect(e, &format!("{path}.redirect"), r, &http.matches);
    }
    if let Some(d) = &http.direct_response {
        if let Some(HttpBody::String(s) | HttpBody::Bytes(s)) = &d.body {
            if s.len() > 1 << 20 {
                e.add(
                    format!("{path}.directResponse.body"),
                    "direct responses must be smaller than 1MB",
                );
            }
        }
        e.check(
            format!("{path}.directResponse.status"),
            check_http_status(i64::from(d.status)),
        );
    }
    if let Some(r) = &http.retries {
        validate_retry(e, &format!("{path}.retries"), r);
    }
    if let Some(r) = &http.rewrite {
        let rpath = format!("{path}.rewrite");
        if r.uri.is_some() && r.uri_regex_rewrite.is_some() {
            e.add(&rpath, "rewrite may only contain one of uri or uriRegexRewrite");
        }
        if r.uri.is_none() && r.uri_regex_rewrite.is_none() && r.authority.is_none() {
            e.add(
                &rpath,
                "rewrite must specify at least one of uri, uriRegexRewrite or authority",
            );
        }
        if let Some(rr) = &r.uri_regex_rewrite {
            match (&rr.regex, &rr.rewrite) {
                (Some(m), Some(w)) if !m.is_empty() && !w.is_empty() => {
                    e.check(format!("{rpath}.uriRegexRewrite.match"), check_regex(m));
                }
                _ => e.add(
                    format!("{rpath}.uriRegexRewrite"),
                    "uriRegexRewrite requires both match and rewrite",
                ),
            }
        }
    }
    // Authority may be rewritten in one place only (`validateAuthorityRewrite`).
    let request = http.headers.as_ref().and_then(|h| h.request.as_ref());
    let authority_sets = request
        .into_iter()
        .flat_map(|r| r.set.keys().chain(r.add.keys()))
        .filter(|k| k.eq_ignore_ascii_case(":authority") || k.eq_ignore_ascii_case("host"))
        .count()
        + usize::from(http.rewrite.as_ref().is_some_and(|r| r.authority.is_some()));
    if authority_sets > 1 {
        e.add(
            format!("{path}.headers.request"),
            "the authority header cannot be set multiple times (rewrite.authority and headers)",
        );
    }
    let mut total = 0i64;
    for (k, d) in http.route.iter().enumerate() {
        let dpath = format!("{path}.route[{k}]");
        validate_headers(e, &format!("{dpath}.headers"), d.headers.as_ref());
        validate_destination(e, &format!("{dpath}.destination"), &d.destination);
        total += validate_weight(e, &dpath, d.weight);
    }
    if http.route.len() > 1 && total == 0 {
        e.add(
            format!("{path}.route"),
            "total destination weight = 0: give at least one destination a weight",
        );
    }
    e.duration(format!("{path}.timeout"), http.timeout.as_ref());
}

fn validate_weight(e: &mut Errors, path: &str, weight: Option<i32>) -> i64 {
    let w = weight.unwrap_or(0);
    if w < 0 {
        e.add(
            format!("{path}.weight"),
            format!("weight {w} must not be negative"),
        );
    }
    i64::from(w)
}

fn validate_route_destinations(e: &mut Errors, path: &str, route: &[RouteDestination]) {
    let mut total = 0;
    for (k, d) in route.iter().enumerate() {
        let dpath = format!("{path}.route[{k}]");
        validate_destination(e, &format!("{dpath}.destination"), &d.destination);
        total += validate_weight(e, &dpath, d.weight);
    }
    if route.len() > 1 && total == 0 {
        e.add(
            format!("{path}.route"),
            "total destination weight = 0: give at least one destination a weight",
        );
    }
}

/// Istio's `validateDestination`.
pub(crate) fn validate_destination(e: &mut Errors, path: &str, d: &Destination) {
    if d.host == "*" {
        e.add(
            format!("{path}.host"),
            "invalid destination host *: name a service",
        );
    } else {
        e.check(format!("{path}.host"), check_wildcard_domain(&d.host));
    }
    if let Some(s) = &d.subset {
        if !is_dns1123_label(s) {
            e.add(
                format!("{path}.subset"),
                format!("subset name {s:?} is invalid: use an RFC 1123 label"),
            );
        }
    }
    if let Some(p) = &d.port {
        e.check(format!("{path}.port.number"), check_port(p.number.unwrap_or(0)));
    }
}

fn validate_http_match(e: &mut Errors, path: &str, m: &HttpMatchRequest) {
    for (name, sm) in &m.headers {
        e.check(format!("{path}.headers.{name}"), check_match_header_name(name));
        e.check(format!("{path}.headers.{name}"), check_string_match(sm, false));
    }
    for (name, sm) in &m.without_headers {
        e.check(
            format!("{path}.withoutHeaders.{name}"),
            check_match_header_name(name),
        );
        // `regex: "*"` is not a regex: Istio reads it as "present".
        if sm != &StringMatch::Regex("*".into()) {
            e.check(
                format!("{path}.withoutHeaders.{name}"),
                check_string_match(sm, false),
            );
        }
    }
    if let Some(uri) = &m.uri {
        e.check(format!("{path}.uri"), check_string_match(uri, true));
    }
    for (field, sm) in [
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            e.check(format!("{path}.{field}"), check_string_match(sm, false));
        }
    }
    for (name, sm) in &m.query_params {
        e.check(
            format!("{path}.queryParams.{name}"),
            check_string_match(sm, false),
        );
    }
    if let Some(p) = m.port {
        e.check(format!("{path}.port"), check_port(p));
    }
    check_labels(e, &format!("{path}.sourceLabels"), &m.source_labels);
    for (k, g) in m.gateways.iter().enumerate() {
        e.check(format!("{path}.gateways[{k}]"), check_gateway_name(g));
    }
    if let Some(ns) = m.source_namespace.as_deref().filter(|ns| !ns.is_empty()) {
        if !is_dns1123_label(ns) {
            e.add(
                format!("{path}.sourceNamespace"),
                format!("sourceNamespace {ns:?} is not a namespace name"),
            );
        }
    }
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

fn check_match_header_name(name: &str) -> Result<(), String> {
    if name.starts_with(JWT_CLAIM_PREFIX)
        || [":method", ":scheme", ":authority", ":path", ":status"].contains(&name)
        || is_token(name)
    {
        Ok(())
    } else {
        Err(format!("header name {name:?} is not a valid header name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn errors(yaml: &str) -> Vec<String> {
        let spec: VirtualServiceSpec = serde_yaml_ng::from_str(yaml).unwrap();
        spec.field_errors().iter().map(ToString::to_string).collect()
    }

    const ROUTE: &str = "http: [{route: [{destination: {host: reviews}}]}]";

    #[test_case(&format!("{{hosts: [reviews], {ROUTE}}}") => Vec::<String>::new(); "minimal")]
    #[test_case("{hosts: [reviews]}" => vec!["spec: http, tcp or tls must be provided in virtual service".to_string()]; "no routes")]
    #[test_case(&format!("{{hosts: ['*'], {ROUTE}}}") => vec!["spec.hosts[0]: wildcard host * is not allowed for virtual services bound to the mesh gateway: name the hosts, or bind to a gateway only".to_string()]; "star on the mesh")]
    #[test_case(&format!("{{hosts: ['*'], gateways: [gw], {ROUTE}}}") => Vec::<String>::new(); "star on a gateway")]
    #[test_case(&format!("{{hosts: ['foo.*.com'], {ROUTE}}}") => matches v if v[0].starts_with("spec.hosts[0]: domain name"); "wildcard in the middle")]
    #[test_case(&format!("{{hosts: ['*.foo.com', 'a.foo.com'], {ROUTE}}}") => matches v if v[0].contains("duplicate hosts"); "overlapping hosts")]
    #[test_case(&format!("{{gateways: [gw], {ROUTE}}}") => matches v if v[0].starts_with("spec.gateways: a delegate"); "delegate with gateways")]
    #[test_case("{hosts: [a], http: [{route: [{destination: {host: a}, weight: -1}]}]}" => vec!["spec.http[0].route[0].weight: weight -1 must not be negative".to_string()]; "negative weight")]
    #[test_case("{hosts: [a], http: [{route: [{destination: {host: a}}, {destination: {host: b}}]}]}" => matches v if v[0].contains("total destination weight = 0"); "zero total weight")]
    #[test_case("{hosts: [a], http: [{route: [{destination: {host: '*'}}]}]}" => matches v if v[0].starts_with("spec.http[0].route[0].destination.host"); "star destination")]
    #[test_case("{hosts: [a], http: [{route: [{destination: {host: a, port: {number: 70000}}}]}]}" => vec!["spec.http[0].route[0].destination.port.number: port number 70000 must be in the range 1..65535".to_string()]; "port range")]
    #[test_case("{hosts: [a], http: [{redirect: {uri: /x}, route: [{destination: {host: a}}]}]}" => vec!["spec.http[0].route: HTTP route cannot contain both route and redirect".to_string()]; "redirect and route")]
    #[test_case("{hosts: [a], http: [{directResponse: {status: 503}, redirect: {uri: /x}}]}" => matches v if v[0].contains("both directResponse and redirect"); "redirect and direct response")]
    #[test_case("{hosts: [a], http: [{match: [{uri: {regex: '(a'}}], route: [{destination: {host: a}}]}]}" => matches v if v[0].starts_with("spec.http[0].match[0].uri: "); "bad regex")]
    #[test_case("{hosts: [a], http: [{timeout: 10, route: [{destination: {host: a}}]}]}" => matches v if v[0].starts_with("spec.http[0].timeout: \"10\" is not a duration"); "timeout without unit")]
    #[test_case("{hosts: [a], http: [{retries: {attempts: 3, perTryTimeout: 0.5ms}, route: [{destination: {host: a}}]}]}" => matches v if v[0].starts_with("spec.http[0].retries.perTryTimeout"); "per try timeout below 1ms")]
    #[test_case("{hosts: [a], http: [{retries: {attempts: 3, retryOn: 'gateway-error,bogus'}, route: [{destination: {host: a}}]}]}" => matches v if v[0].contains("\"bogus\" is not a valid retryOn"); "retry on")]
    #[test_case("{hosts: [a], http: [{mirror: {host: b}, mirrorPercentage: {value: 101}, route: [{destination: {host: a}}]}]}" => matches v if v[0].starts_with("spec.http[0].mirrorPercentage.value"); "mirror percentage")]
    #[test_case("{hosts: [a], http: [{fault: {abort: {httpStatus: 700}}, route: [{destination: {host: a}}]}]}" => matches v if v[0].starts_with("spec.http[0].fault.abort.httpStatus"); "abort status")]
    #[test_case("{http: [{route: [{destination: {host: a}}]}], tcp: [{route: [{destination: {host: a}}]}]}" => matches v if v[0].starts_with("spec.tcp: a delegate"); "delegate with tcp")]
    #[test_case("{hosts: [a], http: [{delegate: {name: b}, route: [{destination: {host: a}}]}]}" => matches v if v[0].contains("root HTTP route"); "root route with route")]
    #[test_case("{hosts: ['*.com'], gateways: [gw], tls: [{match: [{sniHosts: [foo.org]}], route: [{destination: {host: a}}]}]}" => matches v if v[0].contains("not a compatible subset"); "sni outside hosts")]
    #[test_case("{hosts: [a], http: [{match: [{headers: {'@request.auth.claims.group': {exact: x}}}], route: [{destination: {host: a}}]}]}" => matches v if v[0].contains("only supported for gateways"); "jwt claims on the mesh")]
    #[test_case("{hosts: [a], exportTo: ['*', '.'], http: [{route: [{destination: {host: a}}]}]}" => matches v if v[0].contains("public (*)"); "export to star and more")]
    fn validation(yaml: &str) -> Vec<String> {
        errors(yaml)
    }

    #[test]
    fn oneofs_refuse_two_members() {
        let e = serde_yaml_ng::from_str::<HttpRedirect>("{port: 8080, derivePort: FROM_REQUEST_PORT}")
            .unwrap_err();
        assert!(e.to_string().contains("only one of port or derivePort"), "{e}");
        let e = serde_yaml_ng::from_str::<Abort>("{httpStatus: 500, grpcStatus: UNAVAILABLE}").unwrap_err();
        assert!(e.to_string().contains("only one of httpStatus"), "{e}");
        let d: Delay = serde_yaml_ng::from_str("{fixedDelay: 5s, percentage: {value: 10}}").unwrap();
        assert_eq!(d.delay, Some(DelayType::FixedDelay(Duration("5s".into()))));
    }

    #[test_case("a.b.com", "*.com" => true; "wildcard covers")]
    #[test_case("*.b.com", "*.com" => true; "narrower wildcard")]
    #[test_case("*.com", "*.b.com" => false; "wider wildcard")]
    #[test_case("a.org", "*.com" => false; "other domain")]
    fn subsets(a: &str, b: &str) -> bool {
        host_subset_of(a, b)
    }
}
