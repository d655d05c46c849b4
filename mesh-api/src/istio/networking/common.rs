//! Types shared by the networking kinds (Istio's `PortSelector`, `StringMatch`, `Percent`,
//! `Headers`, `WorkloadSelector`, durations and doubles) and the checks Istio's validation
//! applies to them (`pkg/config/validation`: ports, hostnames, durations, regexes, labels).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::istio::FieldError;

/// A `google.protobuf.Duration` as written in YAML ("1s", "0.5s", "100ms", "1m30s"); kept as
/// written so a round trip reproduces it, checked by [`Duration::nanos`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Duration(pub String);

impl Duration {
    /// The duration in nanoseconds, parsed as Go's `time.ParseDuration` (what Istio accepts):
    /// an optional sign, then one or more `<decimal><unit>` with units ns, us, µs, ms, s, m, h.
    pub fn nanos(&self) -> Result<i128, String> {
        let bad = || {
            format!(
                "{:?} is not a duration: write a number and a unit, e.g. \"1s\", \"0.5s\", \"100ms\", \"1m30s\"",
                self.0
            )
        };
        let s = self.0.as_str();
        let (negative, mut rest) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        if rest == "0" {
            return Ok(0);
        }
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total: i128 = 0;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            let (number, tail) = rest.split_at(digits);
            let (int, frac) = number.split_once('.').unwrap_or((number, ""));
            if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
                return Err(bad());
            }
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let scale: i128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => return Err(bad()),
            };
            let int: i128 = if int.is_empty() {
                0
            } else {
                int.parse().map_err(|_| bad())?
            };
            let mut value = int.checked_mul(scale).ok_or_else(bad)?;
            let mut place = scale;
            for d in frac.bytes() {
                place /= 10;
                value += i128::from(d - b'0') * place;
            }
            total = total.checked_add(value).ok_or_else(bad)?;
            rest = tail;
        }
        Ok(if negative { -total } else { total })
    }
}

/// A `double` (or `google.protobuf.DoubleValue`) kept as written, so `50` stays `50` and
/// `0.5` stays `0.5` through a round trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Double(pub serde_json::Number);

impl Double {
    pub fn value(&self) -> f64 {
        self.0.as_f64().unwrap_or(f64::NAN)
    }
}

impl From<f64> for Double {
    fn from(v: f64) -> Self {
        Double(serde_json::Number::from_f64(v).unwrap_or_else(|| 0.into()))
    }
}

/// Istio's `Percent`: a percentage as a double, e.g. `{value: 0.1}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Percent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Double>,
}

impl Percent {
    pub fn value(&self) -> f64 {
        self.value.as_ref().map_or(0.0, Double::value)
    }
}

/// Istio's `PortSelector`: a port of the destination service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
}

/// Istio's `StringMatch`: one of `{exact: ..}`, `{prefix: ..}`, `{regex: ..}` (RE2 syntax).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StringMatchFields", into = "StringMatchFields")]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

/// `StringMatch` as written. (A plain externally tagged enum would do for JSON, but
/// serde_yaml_ng reads enums from YAML tags, `!exact x`, not from one-key maps.)
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(rename = "StringMatch")]
struct StringMatchFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
}

impl TryFrom<StringMatchFields> for StringMatch {
    type Error = String;
    fn try_from(f: StringMatchFields) -> Result<Self, String> {
        match (f.exact, f.prefix, f.regex) {
            (Some(s), None, None) => Ok(Self::Exact(s)),
            (None, Some(s), None) => Ok(Self::Prefix(s)),
            (None, None, Some(s)) => Ok(Self::Regex(s)),
            (None, None, None) => Err("a string match needs one of exact, prefix or regex".into()),
            _ => Err("only one of exact, prefix or regex may be set".into()),
        }
    }
}

impl From<StringMatch> for StringMatchFields {
    fn from(m: StringMatch) -> Self {
        let (exact, prefix, regex) = match m {
            StringMatch::Exact(s) => (Some(s), None, None),
            StringMatch::Prefix(s) => (None, Some(s), None),
            StringMatch::Regex(s) => (None, None, Some(s)),
        };
        Self { exact, prefix, regex }
    }
}
super::schema_as!(StringMatch, StringMatchFields);

/// Istio's `WorkloadSelector` of the networking API: the pods' labels (`labels:`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `istio.type.v1beta1.WorkloadSelector`, used by DestinationRule: `matchLabels:`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MatchLabels {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

/// Istio's `Headers`: changes to request and response headers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Headers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// Istio's `Headers.HeaderOperations`: headers to set, add and remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderOperations {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// The errors of one object, each with its full path.
#[derive(Debug, Default)]
pub(crate) struct Errors(pub Vec<FieldError>);

impl Errors {
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(path, message));
    }

    /// Records `result`'s error, if any, at `path`.
    pub fn check(&mut self, path: impl Into<String>, result: Result<(), String>) {
        if let Err(message) = result {
            self.add(path, message);
        }
    }

    /// Istio's `ValidateDuration`: at least 1ms, in whole milliseconds.
    pub fn duration(&mut self, path: impl Into<String>, d: Option<&Duration>) {
        if let Some(d) = d {
            self.check(path, check_duration(d));
        }
    }

    /// Only the format, for durations Istio takes as they are (e.g. `0s` cookie TTLs).
    pub fn duration_format(&mut self, path: impl Into<String>, d: Option<&Duration>) {
        if let Some(d) = d {
            self.check(path, d.nanos().map(drop));
        }
    }
}

pub(crate) fn check_duration(d: &Duration) -> Result<(), String> {
    let nanos = d.nanos()?;
    if nanos < 1_000_000 {
        return Err(format!("duration {:?} must be at least 1ms", d.0));
    }
    if nanos % 1_000_000 != 0 {
        return Err(format!(
            "duration {:?} must be in whole milliseconds (Istio supports ms precision only)",
            d.0
        ));
    }
    Ok(())
}

pub(crate) fn check_port(port: u32) -> Result<(), String> {
    if (1..=65_535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port number {port} must be in the range 1..65535"))
    }
}

pub(crate) fn check_percentage(p: &Percent) -> Result<(), String> {
    let v = p.value();
    if !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
        return Err(format!("percentage {v} must be 0 or in the range 0.0001..100"));
    }
    Ok(())
}

/// A DNS label as Istio checks it (`labels.IsDNS1123Label`, which also accepts upper case):
/// alphanumerics and '-', starting and ending alphanumeric, at most 63.
pub(crate) fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS label that may be `*` or start with `*` (`*-foo`), as Istio's first host label.
fn is_wildcard_dns1123_label(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    match s.strip_prefix('*') {
        Some(rest) => is_dns1123_label(&format!("a{rest}")),
        None => is_dns1123_label(s),
    }
}

fn check_dns_preconditions(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(
            "empty domain name not allowed: set a host name such as reviews.default.svc.cluster.local".into(),
        );
    }
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    Ok(())
}

fn check_dns_labels(domain: &str, all: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts[parts.len() - 1];
    if !tld.is_empty() && tld.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "domain name {all:?} invalid (top level domain {tld:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            break; // a trailing dot: `istio.io.`
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {all:?} invalid (label {label:?} is not an RFC 1123 label)"
            ));
        }
    }
    Ok(())
}

/// Istio's `ValidateFQDN`.
pub(crate) fn check_fqdn(name: &str) -> Result<(), String> {
    check_dns_preconditions(name)?;
    check_dns_labels(name, name)
}

/// Istio's `ValidateWildcardDomain`: a DNS name whose first label may be a wildcard.
pub(crate) fn check_wildcard_domain(name: &str) -> Result<(), String> {
    check_dns_preconditions(name)?;
    let (first, rest) = match name.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (name, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!(
            "domain name {name:?} invalid (label {first:?} invalid; a wildcard is only allowed as the prefix of the first label, e.g. *.example.com)"
        ));
    }
    match rest {
        Some(rest) => check_dns_labels(rest, name),
        None => Ok(()),
    }
}

/// Istio's `ValidatePartialWildCard`: `*` or `*.foo`, never `foo*`.
pub(crate) fn check_partial_wildcard(host: &str) -> Result<(), String> {
    if host.contains('*') && host != "*" && !host.starts_with("*.") {
        return Err(format!(
            "partial wildcard {host:?} not allowed: use \"*\" or \"*.domain\""
        ));
    }
    Ok(())
}

pub(crate) fn is_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

pub(crate) fn check_ip(s: &str) -> Result<(), String> {
    if is_ip(s) {
        Ok(())
    } else {
        Err(format!("{s} is not a valid IP address"))
    }
}

/// Istio's `ValidateIPSubnet`: an address or a CIDR block.
pub(crate) fn check_ip_subnet(s: &str) -> Result<(), String> {
    match s.split_once('/') {
        Some((ip, bits)) => {
            let max = match ip.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(_)) => 32,
                Ok(std::net::IpAddr::V6(_)) => 128,
                Err(_) => return Err(format!("{s} is not a valid CIDR block")),
            };
            match bits.parse::<u8>() {
                Ok(b) if b <= max && !bits.starts_with('+') => Ok(()),
                _ => Err(format!("{s} is not a valid CIDR block")),
            }
        }
        None => check_ip(s),
    }
}

/// Istio's `ValidateUnixAddress` (the part after `unix://`).
pub(crate) fn check_unix_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("unix address must not be empty".into());
    }
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr} is not an absolute path to a file"));
    }
    Ok(())
}

/// Istio's RE2 regexes; Rust's `regex` accepts the same syntax (no backreferences or
/// look-around), so what it refuses Envoy would refuse too.
pub(crate) fn check_regex(re: &str) -> Result<(), String> {
    if re.is_empty() {
        return Err("regex string match should not be empty".into());
    }
    if re.len() > 1024 {
        return Err("regex is too large, max length allowed is 1024".into());
    }
    regex::Regex::new(re).map(drop).map_err(|e| {
        format!("{e}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)")
    })
}

/// Istio's `validateStringMatch`: no empty prefix, valid regex.
pub(crate) fn check_string_match(m: &StringMatch, allow_empty_prefix: bool) -> Result<(), String> {
    match m {
        StringMatch::Prefix(p) if p.is_empty() && !allow_empty_prefix => {
            Err("prefix string match should not be empty".into())
        }
        StringMatch::Regex(re) => check_regex(re),
        _ => Ok(()),
    }
}

/// Kubernetes label keys and values, as Istio's `labels.Instance.Validate`.
pub(crate) fn check_labels(errs: &mut Errors, path: &str, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        let (prefix, name) = match k.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, k.as_str()),
        };
        if prefix.is_some_and(|p| check_fqdn(p).is_err()) || !is_label_value(name) || name.is_empty() {
            errs.add(
                format!("{path}.{k}"),
                format!("invalid label key {k:?}: use [prefix/]name with name made of alphanumerics, '-', '_', '.' (≤ 63)"),
            );
        }
        if !is_label_value(v) {
            errs.add(
                format!("{path}.{k}"),
                format!("invalid label value {v:?}: alphanumerics, '-', '_', '.' (≤ 63), starting and ending alphanumeric"),
            );
        }
    }
}

fn is_label_value(v: &str) -> bool {
    let b = v.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric())
}

/// Istio's `ValidateAlphaWorkloadSelector`: no empty keys, no wildcards.
pub(crate) fn check_workload_selector(errs: &mut Errors, path: &str, selector: Option<&WorkloadSelector>) {
    for (k, v) in selector.map(|s| &s.labels).into_iter().flatten() {
        if k.is_empty() {
            errs.add(format!("{path}.labels"), "empty key is not supported in selector");
        }
        if k.contains('*') || v.contains('*') {
            errs.add(
                format!("{path}.labels.{k}"),
                format!("wildcard is not supported in selector: \"{k}={v}\""),
            );
        }
    }
}

/// Istio's `validateExportTo` without the namespace of the object (not known here): no
/// duplicates, namespaces are DNS labels, `*` alone, `~` alone and only for ServiceEntry.
pub(crate) fn check_export_to(errs: &mut Errors, path: &str, export_to: &[String], service_entry: bool) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, e) in export_to.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if !seen.insert(e.as_str()) {
            errs.add(p, format!("duplicate entries in exportTo for entry {e}"));
            continue;
        }
        let ok = e == "." || e == "*" || (e == "~" && service_entry) || is_dns1123_label(e);
        if !ok {
            errs.add(
                p,
                format!(
                    "{e:?} is not a valid exportTo value: use \".\", \"*\", a namespace name{}",
                    if service_entry { " or \"~\"" } else { "" }
                ),
            );
        }
    }
    if export_to.len() > 1 && seen.contains("*") {
        errs.add(path, "cannot have both public (*) and non-public exportTo values");
    }
    if export_to.len() > 1 && seen.contains("~") {
        errs.add(path, "cannot export service entry to no one (~) and someone");
    }
}

/// Istio's protocol names (`protocol.Parse`, case-insensitive); `None` when unsupported.
pub(crate) fn protocol(name: &str) -> Option<Protocol> {
    Some(match name.to_ascii_lowercase().as_str() {
        "http" => Protocol::Http,
        "http2" => Protocol::Http2,
        "http_proxy" => Protocol::HttpProxy,
        "grpc" => Protocol::Grpc,
        "grpc-web" => Protocol::GrpcWeb,
        "https" => Protocol::Https,
        "tls" => Protocol::Tls,
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "mongo" => Protocol::Mongo,
        "redis" => Protocol::Redis,
        "mysql" => Protocol::Mysql,
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http,
    Http2,
    HttpProxy,
    Grpc,
    GrpcWeb,
    Https,
    Tls,
    Tcp,
    Udp,
    Mongo,
    Redis,
    Mysql,
}

impl Protocol {
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Self::Http | Self::Http2 | Self::HttpProxy | Self::Grpc | Self::GrpcWeb
        )
    }
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Https | Self::Tls)
    }
}

pub(crate) fn check_protocol(name: &str) -> Result<(), String> {
    if name.is_empty() || protocol(name).is_some() {
        Ok(())
    } else {
        Err(format!(
            "unsupported protocol {name:?}: use HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TLS, TCP, UDP, MONGO, REDIS or MYSQL"
        ))
    }
}

pub(crate) fn check_port_name(name: &str) -> Result<(), String> {
    if is_dns1123_label(name) {
        Ok(())
    } else {
        Err(format!(
            "invalid port name {name:?}: use an RFC 1123 label such as http-web"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("1s" => Ok(1_000_000_000); "seconds")]
    #[test_case("0.5s" => Ok(500_000_000); "fraction")]
    #[test_case("100ms" => Ok(100_000_000); "millis")]
    #[test_case("1h" => Ok(3_600_000_000_000); "hours")]
    #[test_case("1m30s" => Ok(90_000_000_000); "compound")]
    #[test_case("0" => Ok(0); "bare zero")]
    #[test_case("-1.5s" => Ok(-1_500_000_000); "negative")]
    #[test_case("10" => matches Err(_); "no unit")]
    #[test_case("1d" => matches Err(_); "unknown unit")]
    #[test_case("" => matches Err(_); "empty")]
    #[test_case("s" => matches Err(_); "no number")]
    fn durations_parse_as_go_does(s: &str) -> Result<i128, String> {
        Duration(s.into()).nanos()
    }

    #[test_case("1ms" => true; "one millisecond")]
    #[test_case("0.5ms" => false; "below 1ms")]
    #[test_case("1.0005s" => false; "sub-millisecond precision")]
    #[test_case("0s" => false; "zero")]
    fn istio_durations(s: &str) -> bool {
        check_duration(&Duration(s.into())).is_ok()
    }

    #[test_case("reviews" => true; "short name")]
    #[test_case("reviews.default.svc.cluster.local" => true; "fqdn")]
    #[test_case("*.example.com" => true; "wildcard prefix")]
    #[test_case("*" => true; "wildcard")]
    #[test_case("*foo.example.com" => true; "wildcard prefix of the first label")]
    #[test_case("foo.*.com" => false; "wildcard in the middle")]
    #[test_case("Foo.com" => true; "upper case, as Istio allows")]
    #[test_case("foo_bar.com" => false; "underscore")]
    #[test_case("example.123" => false; "numeric tld")]
    #[test_case("" => false; "empty")]
    fn wildcard_domains(host: &str) -> bool {
        check_wildcard_domain(host).is_ok()
    }

    #[test_case("10.0.0.0/8" => true; "v4 cidr")]
    #[test_case("2001:db8::/32" => true; "v6 cidr")]
    #[test_case("10.1.2.3" => true; "address")]
    #[test_case("10.0.0.0/33" => false; "prefix too long")]
    #[test_case("example.com" => false; "name")]
    fn subnets(s: &str) -> bool {
        check_ip_subnet(s).is_ok()
    }

    #[test]
    fn doubles_keep_their_written_form() {
        let p: Percent = serde_json::from_str(r#"{"value": 50}"#).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"value":50}"#);
        assert_eq!(p.value(), 50.0);
        let p: Percent = serde_json::from_str(r#"{"value": 0.1}"#).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"value":0.1}"#);
    }

    #[test]
    fn string_match_is_a_one_key_map() {
        let m: StringMatch = serde_yaml_ng::from_str("{prefix: /api}").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"prefix":"/api"}"#);
        assert_eq!(m, StringMatch::Prefix("/api".into()));
        assert!(serde_json::from_str::<StringMatch>(r#"{"exact": "a", "prefix": "b"}"#).is_err());
        assert!(serde_json::from_str::<StringMatch>(r#"{"suffix": "a"}"#).is_err());
    }
}
