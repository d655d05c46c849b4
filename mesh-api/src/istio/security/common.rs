//! What the security kinds share: where a policy applies (`selector`, `targetRef(s)`, from
//! `istio.type.v1beta1`) and the value checks of Istio's validation
//! (`pkg/config/validation/validation.go` and `pkg/config/security/security.go` in istio/istio).

use std::{collections::BTreeMap, net::IpAddr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::istio::FieldError;

/// Which workloads (pods, VMs) of the policy's namespace a policy applies to; in the root
/// namespace, workloads of every namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Labels a workload must all carry to be selected.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// Istio's `validateWorkloadSelector`: no empty keys, no wildcards. (An empty selector is
    /// only a warning in Istio, so it is accepted here.)
    pub(crate) fn check(&self, path: &str, errors: &mut Vec<FieldError>) {
        let path = format!("{path}.matchLabels");
        for (k, v) in &self.match_labels {
            if k.is_empty() {
                errors.push(FieldError::new(
                    &path,
                    format!("label key is empty (value {v:?})"),
                ));
            }
            if k.contains('*') || v.contains('*') {
                errors.push(FieldError::new(
                    &path,
                    format!("{k}={v}: wildcards are not supported in a selector; list exact labels"),
                ));
            }
            if v.len() > 63 {
                errors.push(FieldError::new(
                    format!("{path}.{k}"),
                    "a label value has at most 63 characters",
                ));
            }
        }
    }
}

/// A resource a policy attaches to instead of selecting workloads by label (Gateway API
/// policy attachment).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyTargetReference {
    /// Group of the target; empty (or `core`) for Kubernetes core kinds such as Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the target, e.g. `Gateway`.
    pub kind: String,
    /// Name of the target.
    pub name: String,
    /// Must be empty: cross-namespace references are not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The (group, kind) pairs Istio accepts as a policy target (`allowedTargetRefs`).
const TARGET_KINDS: &[(&str, &str)] = &[
    ("core", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];

impl PolicyTargetReference {
    pub(crate) fn check(&self, path: &str, errors: &mut Vec<FieldError>) {
        if self.name.is_empty() {
            errors.push(FieldError::new(
                format!("{path}.name"),
                "name the target resource",
            ));
        }
        if self.namespace.as_deref().is_some_and(|ns| !ns.is_empty()) {
            errors.push(FieldError::new(
                format!("{path}.namespace"),
                "cross-namespace references are not supported: remove it and put the policy in the \
                 target's namespace",
            ));
        }
        let group = match self.group.as_deref() {
            None | Some("") => "core",
            Some(g) => g,
        };
        if !TARGET_KINDS.contains(&(group, self.kind.as_str())) {
            let allowed: Vec<String> = TARGET_KINDS.iter().map(|(g, k)| format!("{g}/{k}")).collect();
            errors.push(FieldError::new(
                format!("{path}.kind"),
                format!(
                    "{group}/{} cannot be a target: use one of {}",
                    self.kind,
                    allowed.join(", ")
                ),
            ));
        }
    }
}

/// `selector`, `targetRef` and `targetRefs` are mutually exclusive (Istio's
/// `validateOneOfSelectorType`), then each is checked.
pub(crate) fn check_attachment(
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
    errors: &mut Vec<FieldError>,
) {
    let set: Vec<&str> = [
        (selector.is_some(), "selector"),
        (target_ref.is_some(), "targetRef"),
        (!target_refs.is_empty(), "targetRefs"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    if set.len() > 1 {
        errors.push(FieldError::new(
            format!("spec.{}", set[1]),
            format!(
                "only one of selector, targetRef and targetRefs may be set, found {}: keep one",
                set.join(" and ")
            ),
        ));
    }
    if let Some(s) = selector {
        s.check("spec.selector", errors);
    }
    if let Some(t) = target_ref {
        t.check("spec.targetRef", errors);
    }
    if target_refs.len() > 16 {
        errors.push(FieldError::new("spec.targetRefs", "at most 16 targets"));
    }
    for (i, t) in target_refs.iter().enumerate() {
        t.check(&format!("spec.targetRefs[{i}]"), errors);
    }
}

/// The first empty string of `values`, as an error at `path[i]`.
pub(crate) fn check_non_empty(path: &str, values: &[String], errors: &mut Vec<FieldError>) {
    if let Some(i) = values.iter().position(String::is_empty) {
        errors.push(FieldError::new(
            format!("{path}[{i}]"),
            "empty value: remove it or fill it in",
        ));
    }
}

/// Non-empty, and at most one `*`, at the start or the end (prefix, suffix or presence match).
/// Istio applies this to trust domains; Trellis also applies it to principals and namespaces,
/// where Istio accepts a `*` in the middle but matches it literally, so `ns/*/sa/x` silently
/// never matches.
pub(crate) fn check_wildcards(path: &str, values: &[String], errors: &mut Vec<FieldError>) {
    for (i, v) in values.iter().enumerate() {
        let stars = v.matches('*').count();
        let message = if v.is_empty() {
            "empty value: remove it or fill it in".to_string()
        } else if stars > 1 {
            format!("{v:?} has {stars} wildcards: at most one `*` is allowed")
        } else if stars == 1 && !v.starts_with('*') && !v.ends_with('*') {
            format!("{v:?}: a `*` only matches at the start (suffix match) or the end (prefix match)")
        } else {
            continue;
        };
        errors.push(FieldError::new(format!("{path}[{i}]"), message));
    }
}

/// Service accounts as `name` or `namespace/name`, no wildcards (`CheckServiceAccount`).
pub(crate) fn check_service_accounts(path: &str, values: &[String], errors: &mut Vec<FieldError>) {
    if values.len() > 16 {
        errors.push(FieldError::new(path, "at most 16 service accounts"));
    }
    for (i, v) in values.iter().enumerate() {
        let bad = |m: &str| FieldError::new(format!("{path}[{i}]"), format!("{v:?}: {m}"));
        if v.is_empty() {
            errors.push(bad("empty value: remove it or fill it in"));
        } else if v.contains('*') {
            errors.push(bad("wildcards are not allowed in service accounts"));
        } else if v.len() > 320 {
            errors.push(bad("at most 320 characters"));
        } else if v.matches('/').count() > 1 || v.starts_with('/') || v.ends_with('/') {
            errors.push(bad("expected `serviceAccount` or `namespace/serviceAccount`"));
        }
    }
}

/// Trust domains: wildcard rules, and no `/` (`CheckTrustDomainValues`).
pub(crate) fn check_trust_domains(path: &str, values: &[String], errors: &mut Vec<FieldError>) {
    check_wildcards(path, values, errors);
    for (i, v) in values.iter().enumerate() {
        if v.contains('/') {
            errors.push(FieldError::new(
                format!("{path}[{i}]"),
                format!("{v:?}: a trust domain has no `/` (use e.g. `cluster.local`)"),
            ));
        }
    }
}

/// An IP address or a CIDR range (`ValidateIPs`).
pub(crate) fn parse_ip_or_cidr(value: &str) -> Result<(), String> {
    match value.split_once('/') {
        Some((addr, len)) => {
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("{value:?} is not a CIDR range: {addr:?} is not an IP address"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            match len.parse::<u8>() {
                Ok(l) if l <= max && !len.starts_with('+') => Ok(()),
                _ => Err(format!(
                    "{value:?} is not a CIDR range: the prefix length must be 0..={max}"
                )),
            }
        }
        None => value
            .parse::<IpAddr>()
            .map(drop)
            .map_err(|_| format!("{value:?} is not an IP address or CIDR range (e.g. 10.0.0.0/8)")),
    }
}

pub(crate) fn check_ips(path: &str, values: &[String], errors: &mut Vec<FieldError>) {
    for (i, v) in values.iter().enumerate() {
        if let Err(m) = parse_ip_or_cidr(v) {
            errors.push(FieldError::new(format!("{path}[{i}]"), m));
        }
    }
}

/// A port written as a decimal string. Istio lets `0` through; it can never match a
/// connection, so Trellis refuses it.
pub(crate) fn parse_port(value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(p) if p > 0 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(format!(
            "{value:?} is not a port: use a number in 1..=65535, as a string"
        )),
    }
}

pub(crate) fn check_ports(path: &str, values: &[String], errors: &mut Vec<FieldError>) {
    for (i, v) in values.iter().enumerate() {
        if let Err(m) = parse_port(v) {
            errors.push(FieldError::new(format!("{path}[{i}]"), m));
        }
    }
}

/// A duration as Kubernetes CEL and Go's `time.ParseDuration` read it (`5s`, `1.5s`,
/// `100ms`, `1m30s`), in nanoseconds.
pub(crate) fn parse_duration(value: &str) -> Result<u128, String> {
    let bad = || format!("{value:?} is not a duration: use e.g. `5s`, `1.5s` or `500ms`");
    let mut rest = value;
    let mut total: u128 = 0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && frac.is_empty() || frac.contains('.') {
            return Err(bad());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let mut nanos = whole.checked_mul(scale).ok_or_else(bad)?;
        let mut place = scale;
        for digit in frac.bytes() {
            place /= 10;
            nanos += u128::from(digit - b'0') * place;
        }
        total = total.checked_add(nanos).ok_or_else(bad)?;
        rest = tail;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("10.1.2.3" => true; "ipv4")]
    #[test_case("10.1.0.0/16" => true; "ipv4 cidr")]
    #[test_case("2001:db8::/32" => true; "ipv6 cidr")]
    #[test_case("::1" => true; "ipv6")]
    #[test_case("10.1.0.0/33" => false; "prefix too long")]
    #[test_case("10.1.0/16" => false; "short address")]
    #[test_case("example.com" => false; "a name")]
    #[test_case("10.0.0.0/" => false; "no prefix length")]
    fn ips(v: &str) -> bool {
        parse_ip_or_cidr(v).is_ok()
    }

    #[test_case("8080" => Some(8080); "a port")]
    #[test_case("65535" => Some(65535); "highest")]
    #[test_case("0" => None; "zero")]
    #[test_case("65536" => None; "too high")]
    #[test_case("+80" => None; "sign")]
    #[test_case("http" => None; "a name")]
    fn ports(v: &str) -> Option<u16> {
        parse_port(v).ok()
    }

    #[test_case("5s" => Some(5_000_000_000); "seconds")]
    #[test_case("1.5s" => Some(1_500_000_000); "fraction")]
    #[test_case("100ms" => Some(100_000_000); "millis")]
    #[test_case("1m30s" => Some(90_000_000_000); "compound")]
    #[test_case(".5s" => Some(500_000_000); "leading dot")]
    #[test_case("5" => None; "no unit")]
    #[test_case("5d" => None; "days")]
    #[test_case("" => None; "empty")]
    #[test_case("s" => None; "no number")]
    fn durations(v: &str) -> Option<u128> {
        parse_duration(v).ok()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test_case(&["*"] => 0; "presence")]
    #[test_case(&["cluster.local/ns/*"] => 0; "prefix")]
    #[test_case(&["*/sa/admin"] => 0; "suffix")]
    #[test_case(&["cluster.local/ns/*/sa/x"] => 1; "middle")]
    #[test_case(&["*a*"] => 1; "two")]
    #[test_case(&["", "a"] => 1; "empty")]
    fn wildcards(v: &[&str]) -> usize {
        let mut errors = Vec::new();
        check_wildcards("p", &strings(v), &mut errors);
        errors.len()
    }

    #[test_case(&["sa"] => 0; "name")]
    #[test_case(&["ns/sa"] => 0; "namespaced")]
    #[test_case(&["ns/sa/x"] => 1; "too many parts")]
    #[test_case(&["ns/"] => 1; "empty name")]
    #[test_case(&["ns/*"] => 1; "wildcard")]
    fn service_accounts(v: &[&str]) -> usize {
        let mut errors = Vec::new();
        check_service_accounts("p", &strings(v), &mut errors);
        errors.len()
    }

    #[test_case(None, Some(("gateway.networking.k8s.io", "Gateway")), 0 => Vec::<String>::new(); "target ref only")]
    #[test_case(Some("app"), Some(("gateway.networking.k8s.io", "Gateway")), 0 => vec!["spec.targetRef".to_string()]; "selector and targetRef")]
    #[test_case(Some("app"), None, 1 => vec!["spec.targetRefs".to_string()]; "selector and targetRefs")]
    #[test_case(None, Some(("", "Service")), 0 => Vec::<String>::new(); "core service")]
    #[test_case(None, Some(("apps", "Deployment")), 0 => vec!["spec.targetRef.kind".to_string()]; "unsupported kind")]
    #[test_case(Some("*"), None, 0 => vec!["spec.selector.matchLabels".to_string()]; "wildcard label")]
    fn attachment(selector: Option<&str>, target: Option<(&str, &str)>, refs: usize) -> Vec<String> {
        let selector = selector.map(|v| WorkloadSelector {
            match_labels: [("app".to_string(), v.to_string())].into(),
        });
        let make = |(group, kind): (&str, &str)| PolicyTargetReference {
            group: Some(group.into()),
            kind: kind.into(),
            name: "x".into(),
            namespace: None,
        };
        let target_ref = target.map(make);
        let target_refs = vec![make(("gateway.networking.k8s.io", "Gateway")); refs];
        let mut errors = Vec::new();
        check_attachment(selector.as_ref(), target_ref.as_ref(), &target_refs, &mut errors);
        errors.into_iter().map(|e| e.path).collect()
    }

    #[test]
    fn cross_namespace_targets_are_refused() {
        let mut errors = Vec::new();
        let t = PolicyTargetReference {
            group: None,
            kind: "Service".into(),
            name: "web".into(),
            namespace: Some("other".into()),
        };
        t.check("spec.targetRef", &mut errors);
        assert_eq!(errors[0].path, "spec.targetRef.namespace");
    }
}
