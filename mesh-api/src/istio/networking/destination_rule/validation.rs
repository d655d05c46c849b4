//! Istio's validation of a DestinationRule: `ValidateDestinationRule` in istio/istio
//! `pkg/config/validation/validation.go`.

use super::*;
use crate::istio::networking::common::{
    check_export_to, check_fqdn, check_ip, check_labels, check_port, check_wildcard_domain, is_dns1123_label,
    Errors,
};
use crate::istio::FieldError;

impl DestinationRuleSpec {
    /// Istio's `ValidateDestinationRule`.
    pub fn field_errors(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        e.check("spec.host", check_wildcard_domain(&self.host));
        if let Some(tp) = &self.traffic_policy {
            validate_traffic_policy(&mut e, "spec.trafficPolicy", tp);
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.subsets.iter().enumerate() {
            let path = format!("spec.subsets[{i}]");
            if s.name.is_empty() {
                e.add(format!("{path}.name"), "subset name cannot be empty");
            } else if !is_dns1123_label(&s.name) {
                e.add(
                    format!("{path}.name"),
                    format!(
                        "subset name {:?} is invalid: use an RFC 1123 label such as v1",
                        s.name
                    ),
                );
            }
            if !names.insert(s.name.as_str()) {
                e.add(
                    format!("{path}.name"),
                    format!("duplicate subset names: {}", s.name),
                );
            }
            check_labels(&mut e, &format!("{path}.labels"), &s.labels);
            if let Some(tp) = &s.traffic_policy {
                validate_traffic_policy(&mut e, &format!("{path}.trafficPolicy"), tp);
            }
        }
        check_export_to(&mut e, "spec.exportTo", &self.export_to, false);
        if self.workload_selector.is_some() && self.export_to.iter().any(|x| x != ".") {
            e.add("spec.exportTo", "a destination rule with a workload selector cannot be exported beyond its namespace: use exportTo: [\".\"] or none");
        }
        if let Some(ws) = &self.workload_selector {
            for (k, v) in &ws.match_labels {
                if k.is_empty() || k.contains('*') || v.contains('*') {
                    e.add(
                        format!("spec.workloadSelector.matchLabels.{k}"),
                        "label keys must not be empty and selectors must not contain wildcards",
                    );
                }
            }
        }
        e.0
    }
}

/// Istio's `validateTrafficPolicy`.
fn validate_traffic_policy(e: &mut Errors, path: &str, tp: &TrafficPolicy) {
    if tp == &TrafficPolicy::default() {
        e.add(path, "traffic policy must have at least one field");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        e.add(path, "tunnel and proxyProtocol must not be set together");
        return;
    }
    validate_policies(
        e,
        path,
        tp.outlier_detection.as_ref(),
        tp.connection_pool.as_ref(),
        tp.load_balancer.as_ref(),
        tp.tls.as_ref(),
    );
    for (i, p) in tp.port_level_settings.iter().enumerate() {
        let ppath = format!("{path}.portLevelSettings[{i}]");
        if p.port.is_none() {
            e.add(
                format!("{ppath}.port"),
                "a port traffic policy needs a port: add port.number",
            );
        }
        if p.outlier_detection.is_none()
            && p.connection_pool.is_none()
            && p.load_balancer.is_none()
            && p.tls.is_none()
        {
            e.add(&ppath, "port traffic policy must have at least one field");
        }
        validate_policies(
            e,
            &ppath,
            p.outlier_detection.as_ref(),
            p.connection_pool.as_ref(),
            p.load_balancer.as_ref(),
            p.tls.as_ref(),
        );
    }
    if let Some(t) = &tp.tunnel {
        let tpath = format!("{path}.tunnel");
        if let Some(p) = t
            .protocol
            .as_deref()
            .filter(|p| !matches!(*p, "CONNECT" | "POST"))
        {
            e.add(
                format!("{tpath}.protocol"),
                format!("tunnel protocol {p:?} must be \"CONNECT\" or \"POST\""),
            );
        }
        if check_fqdn(&t.target_host).is_err() && check_ip(&t.target_host).is_err() {
            e.add(
                format!("{tpath}.targetHost"),
                format!(
                    "tunnel target host {:?} must be a valid FQDN or IP address",
                    t.target_host
                ),
            );
        }
        e.check(format!("{tpath}.targetPort"), check_port(t.target_port));
    }
    if let Some(rb) = &tp.retry_budget {
        if let Some(p) = rb
            .percent
            .as_ref()
            .map(Double::value)
            .filter(|p| !(0.0..=100.0).contains(p))
        {
            e.add(
                format!("{path}.retryBudget.percent"),
                format!("retry budget percent {p} must be in 0..100"),
            );
        }
        e.duration_format(
            format!("{path}.retryBudget.budgetInterval"),
            rb.budget_interval.as_ref(),
        );
    }
}

fn validate_policies(
    e: &mut Errors,
    path: &str,
    outlier: Option<&OutlierDetection>,
    pool: Option<&ConnectionPoolSettings>,
    lb: Option<&LoadBalancerSettings>,
    tls: Option<&ClientTlsSettings>,
) {
    if let Some(o) = outlier {
        validate_outlier_detection(e, &format!("{path}.outlierDetection"), o);
    }
    if let Some(p) = pool {
        validate_connection_pool(e, &format!("{path}.connectionPool"), p);
    }
    if let Some(lb) = lb {
        validate_load_balancer(e, &format!("{path}.loadBalancer"), lb);
    }
    if let Some(t) = tls {
        validate_client_tls(e, &format!("{path}.tls"), t);
    }
}

fn validate_outlier_detection(e: &mut Errors, path: &str, o: &OutlierDetection) {
    e.duration(format!("{path}.baseEjectionTime"), o.base_ejection_time.as_ref());
    e.duration(format!("{path}.interval"), o.interval.as_ref());
    if o.split_external_local_origin_errors != Some(true)
        && o.consecutive_local_origin_failures.unwrap_or(0) > 0
    {
        e.add(
            format!("{path}.consecutiveLocalOriginFailures"),
            "consecutiveLocalOriginFailures needs splitExternalLocalOriginErrors: true",
        );
    }
    for (field, v) in [
        ("maxEjectionPercent", o.max_ejection_percent),
        ("minHealthPercent", o.min_health_percent),
    ] {
        if let Some(v) = v.filter(|v| !(0..=100).contains(v)) {
            e.add(
                format!("{path}.{field}"),
                format!("percentage {v} is not in range 0..100"),
            );
        }
    }
    for (i, c) in o.outlier_detection_http_error_codes.iter().enumerate() {
        if !(100..=599).contains(c) {
            e.add(
                format!("{path}.outlierDetectionHttpErrorCodes[{i}]"),
                format!("HTTP status {c} must be in 100..599"),
            );
        }
    }
}

/// Istio's `validateConnectionPool` (also used by Sidecar).
pub(crate) fn validate_connection_pool(e: &mut Errors, path: &str, p: &ConnectionPoolSettings) {
    if p.tcp.is_none() && p.http.is_none() {
        e.add(path, "connection pool must have at least one field: tcp or http");
    }
    if let Some(h) = &p.http {
        let hpath = format!("{path}.http");
        for (field, v) in [
            ("http1MaxPendingRequests", h.http1_max_pending_requests),
            ("http2MaxRequests", h.http2_max_requests),
            ("maxRequestsPerConnection", h.max_requests_per_connection),
            ("maxRetries", h.max_retries),
            ("maxConcurrentStreams", h.max_concurrent_streams),
        ] {
            if v.is_some_and(|v| v < 0) {
                e.add(format!("{hpath}.{field}"), "must not be negative");
            }
        }
        e.duration(format!("{hpath}.idleTimeout"), h.idle_timeout.as_ref());
        if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) && h.use_client_protocol == Some(true) {
            e.add(
                format!("{hpath}.useClientProtocol"),
                "useClientProtocol must not be true when h2UpgradePolicy is UPGRADE",
            );
        }
        if let Some(ka) = &h.http2_keep_alive {
            for (field, d) in [("interval", &ka.interval), ("timeout", &ka.timeout)] {
                match d {
                    None => e.add(
                        format!("{hpath}.http2KeepAlive.{field}"),
                        format!("http2 keepalive {field} is required"),
                    ),
                    Some(d) => e.duration(format!("{hpath}.http2KeepAlive.{field}"), Some(d)),
                }
            }
        }
    }
    if let Some(t) = &p.tcp {
        let tpath = format!("{path}.tcp");
        if t.max_connections.is_some_and(|v| v < 0) {
            e.add(format!("{tpath}.maxConnections"), "must not be negative");
        }
        e.duration(format!("{tpath}.connectTimeout"), t.connect_timeout.as_ref());
        e.duration(
            format!("{tpath}.maxConnectionDuration"),
            t.max_connection_duration.as_ref(),
        );
        // `0s` disables the idle timeout.
        match &t.idle_timeout {
            Some(d) if d.nanos().is_ok_and(|n| (0..1_000_000).contains(&n)) => {}
            d => e.duration(format!("{tpath}.idleTimeout"), d.as_ref()),
        }
        if let Some(ka) = &t.tcp_keepalive {
            e.duration(format!("{tpath}.tcpKeepalive.time"), ka.time.as_ref());
            e.duration(format!("{tpath}.tcpKeepalive.interval"), ka.interval.as_ref());
        }
    }
}

fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x & 1 == 0 {
        return false;
    }
    (3..)
        .step_by(2)
        .take_while(|f| f * f <= x)
        .all(|f| !x.is_multiple_of(f))
}

fn validate_load_balancer(e: &mut Errors, path: &str, lb: &LoadBalancerSettings) {
    if let Some(LbPolicy::ConsistentHash(c)) = &lb.lb_policy {
        let cpath = format!("{path}.consistentHash");
        if let Some(HashKey::HttpCookie(cookie)) = &c.hash_key {
            if cookie.name.is_empty() {
                e.add(format!("{cpath}.httpCookie.name"), "name required for httpCookie");
            }
            e.duration_format(format!("{cpath}.httpCookie.ttl"), cookie.ttl.as_ref());
            let mut seen = std::collections::BTreeSet::new();
            for (i, a) in cookie.attributes.iter().enumerate() {
                let apath = format!("{cpath}.httpCookie.attributes[{i}].name");
                if a.name.is_empty() {
                    e.add(apath, "cookie attribute name cannot be empty");
                } else if !seen.insert(a.name.as_str()) {
                    e.add(apath, format!("duplicate cookie attribute name: {}", a.name));
                }
            }
        }
        if c.minimum_ring_size.is_some() && c.hash_algorithm.is_some() {
            e.add(
                format!("{cpath}.minimumRingSize"),
                "only one of minimumRingSize or maglev/ringHash can be specified: move it into ringHash",
            );
        }
        if let Some(HashAlgorithm::Maglev(m)) = &c.hash_algorithm {
            let size = m.table_size.unwrap_or(0);
            let mpath = format!("{cpath}.maglev.tableSize");
            if size == 0 {
                e.add(mpath, "tableSize must be set for maglev");
            } else if size >= 5_000_011 {
                e.add(mpath, "tableSize must be less than 5000011 for maglev");
            } else if !is_prime(size) {
                e.add(
                    mpath,
                    format!("tableSize {size} must be a prime number for maglev, e.g. 65537"),
                );
            }
        }
    }
    if lb.locality_lb_setting.is_some() && lb.zone_aware_lb_setting.is_some() {
        e.add(
            path,
            "only one of localityLbSetting and zoneAwareLbSetting can be set",
        );
    }
    if let Some(l) = &lb.locality_lb_setting {
        validate_locality(e, &format!("{path}.localityLbSetting"), l);
    }
    if let Some(z) = &lb.zone_aware_lb_setting {
        let zpath = format!("{path}.zoneAwareLbSetting");
        validate_failover(e, &zpath, &z.failover);
        for (i, p) in z.failover_priority.iter().enumerate() {
            if TOPOLOGY_LABELS.contains(&p.as_str()) {
                e.add(
                    format!("{zpath}.failoverPriority[{i}]"),
                    format!("{p} is implicit in zone-aware routing: remove it"),
                );
            }
        }
    }
    e.duration(
        format!("{path}.warmupDurationSecs"),
        lb.warmup_duration_secs.as_ref(),
    );
    if let Some(w) = &lb.warmup {
        e.duration(format!("{path}.warmup.duration"), Some(&w.duration));
        if w.minimum_percent.as_ref().is_some_and(|p| p.value() > 100.0) {
            e.add(
                format!("{path}.warmup.minimumPercent"),
                "minimumPercent must be at most 100",
            );
        }
        if w.aggression.as_ref().is_some_and(|a| a.value() <= 0.0) {
            e.add(
                format!("{path}.warmup.aggression"),
                "aggression must be greater than 0",
            );
        }
    }
}

const TOPOLOGY_LABELS: &[&str] = &[
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

fn validate_failover(e: &mut Errors, path: &str, failover: &[Failover]) {
    for (i, f) in failover.iter().enumerate() {
        let (from, to) = (f.from.as_deref().unwrap_or(""), f.to.as_deref().unwrap_or(""));
        let fpath = format!("{path}.failover[{i}]");
        if from == to {
            e.add(&fpath, "failover must go from one region to a different one");
        }
        if from.contains('/') || to.contains('/') {
            e.add(&fpath, "failover names regions only (no zone/subzone)");
        }
        if from.contains('*') || to.contains('*') {
            e.add(&fpath, "failover regions must not contain the '*' wildcard");
        }
    }
}

/// Istio's `ValidateLocalityLbSetting` (without the overlap analysis of localities).
fn validate_locality(e: &mut Errors, path: &str, l: &LocalityLoadBalancerSetting) {
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        e.add(path, "can not simultaneously specify 'distribute' and 'failover'");
        return;
    }
    if !l.failover.is_empty() {
        if let Some((i, p)) = l
            .failover_priority
            .iter()
            .enumerate()
            .find(|(_, p)| TOPOLOGY_LABELS.contains(&p.as_str()))
        {
            e.add(
                format!("{path}.failoverPriority[{i}]"),
                format!(
                    "can not simultaneously set 'failover' and topology label {p:?} in 'failoverPriority'"
                ),
            );
            return;
        }
    }
    for (i, d) in l.distribute.iter().enumerate() {
        let dpath = format!("{path}.distribute[{i}]");
        if d.to.values().any(|w| *w == 0 || *w > 100) {
            e.add(format!("{dpath}.to"), "locality weight must be in range [1, 100]");
            continue;
        }
        let total: u32 = d.to.values().sum();
        if total != 100 {
            e.add(
                format!("{dpath}.to"),
                format!("total locality weight {total} != 100"),
            );
        }
        for loc in d.from.iter().chain(d.to.keys()) {
            if let Err(msg) = check_locality(loc) {
                e.add(&dpath, msg);
            }
        }
    }
    validate_failover(e, path, &l.failover);
}

fn check_locality(loc: &str) -> Result<(), String> {
    let stars = loc.matches('*').count();
    if stars > 1 || (stars == 1 && !loc.ends_with('*')) {
        return Err(format!("locality {loc} may contain one '*' wildcard, at the end"));
    }
    if loc.splitn(3, '/').any(str::is_empty) {
        return Err(format!(
            "locality {loc} must not contain empty region/zone/subzone info"
        ));
    }
    Ok(())
}

/// Istio's `ValidateTLS` for upstream TLS settings.
fn validate_client_tls(e: &mut Errors, path: &str, t: &ClientTlsSettings) {
    let mode = t.mode.unwrap_or(ClientTlsMode::Disable);
    if t.insecure_skip_verify == Some(true) {
        if mode == ClientTlsMode::Simple
            && (t.ca_certificates.is_some() || t.credential_name.is_some() || !t.subject_alt_names.is_empty())
        {
            e.add(path, "cannot specify caCertificates, credentialName or subjectAltNames when insecureSkipVerify is true");
        }
        if mode == ClientTlsMode::Mutual && (t.ca_certificates.is_some() || !t.subject_alt_names.is_empty()) {
            e.add(
                path,
                "cannot specify caCertificates or subjectAltNames when insecureSkipVerify is true",
            );
        }
    }
    if matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual) && t.credential_name.is_some() {
        if t.client_certificate.is_some()
            || t.ca_certificates.is_some()
            || t.private_key.is_some()
            || t.ca_crl.is_some()
        {
            e.add(path, "cannot specify clientCertificate, privateKey, caCertificates or caCrl when credentialName is set");
        }
        return;
    }
    if mode == ClientTlsMode::Mutual {
        if t.client_certificate.is_none() {
            e.add(
                format!("{path}.clientCertificate"),
                "client certificate required for mutual tls (or set credentialName)",
            );
        }
        if t.private_key.is_none() {
            e.add(
                format!("{path}.privateKey"),
                "private key required for mutual tls (or set credentialName)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn errors(yaml: &str) -> Vec<String> {
        let spec: DestinationRuleSpec = serde_yaml_ng::from_str(yaml).unwrap();
        spec.field_errors().iter().map(ToString::to_string).collect()
    }

    #[test_case("{host: reviews}" => Vec::<String>::new(); "minimal")]
    #[test_case("{host: ''}" => matches v if v[0].starts_with("spec.host: empty domain name"); "empty host")]
    #[test_case("{host: a, subsets: [{name: v1}, {name: v1}]}" => vec!["spec.subsets[1].name: duplicate subset names: v1".to_string()]; "duplicate subsets")]
    #[test_case("{host: a, subsets: [{name: V_1}]}" => matches v if v[0].starts_with("spec.subsets[0].name: subset name"); "subset name")]
    #[test_case("{host: a, trafficPolicy: {}}" => vec!["spec.trafficPolicy: traffic policy must have at least one field".to_string()]; "empty policy")]
    #[test_case("{host: a, trafficPolicy: {outlierDetection: {maxEjectionPercent: 150}}}" => matches v if v[0].starts_with("spec.trafficPolicy.outlierDetection.maxEjectionPercent"); "ejection percent")]
    #[test_case("{host: a, trafficPolicy: {outlierDetection: {consecutiveLocalOriginFailures: 3}}}" => matches v if v[0].contains("splitExternalLocalOriginErrors"); "local origin without split")]
    #[test_case("{host: a, trafficPolicy: {outlierDetection: {interval: 1.5ms}}}" => matches v if v[0].contains("whole milliseconds"); "sub-ms interval")]
    #[test_case("{host: a, trafficPolicy: {connectionPool: {}}}" => matches v if v[0].contains("at least one field"); "empty pool")]
    #[test_case("{host: a, trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}}}" => matches v if v[0].contains("useClientProtocol"); "upgrade and client protocol")]
    #[test_case("{host: a, trafficPolicy: {connectionPool: {tcp: {idleTimeout: 0s}}}}" => Vec::<String>::new(); "zero idle timeout disables")]
    #[test_case("{host: a, trafficPolicy: {loadBalancer: {consistentHash: {maglev: {tableSize: 1000}}}}}" => matches v if v[0].contains("prime"); "maglev prime")]
    #[test_case("{host: a, trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: a/*, to: {b/*: 60}}]}}}}" => matches v if v[0].contains("!= 100"); "distribute total")]
    #[test_case("{host: a, trafficPolicy: {loadBalancer: {localityLbSetting: {failover: [{from: a, to: a}]}}}}" => matches v if v[0].contains("different one"); "failover same region")]
    #[test_case("{host: a, trafficPolicy: {tls: {mode: MUTUAL}}}" => matches v if v.len() == 2 && v[0].contains("clientCertificate"); "mutual without certs")]
    #[test_case("{host: a, trafficPolicy: {tls: {mode: SIMPLE, credentialName: c, caCertificates: x}}}" => matches v if v[0].contains("credentialName is set"); "credential and files")]
    #[test_case("{host: a, trafficPolicy: {tunnel: {protocol: GET, targetHost: x.com, targetPort: 8080}}}" => matches v if v[0].contains("CONNECT"); "tunnel protocol")]
    #[test_case("{host: a, trafficPolicy: {portLevelSettings: [{tls: {mode: SIMPLE}}]}}" => matches v if v[0].starts_with("spec.trafficPolicy.portLevelSettings[0].port"); "port level without port")]
    #[test_case("{host: a, workloadSelector: {matchLabels: {app: x}}, exportTo: ['*']}" => matches v if v[0].contains("workload selector"); "selector exported")]
    fn validation(yaml: &str) -> Vec<String> {
        errors(yaml)
    }

    #[test]
    fn oneofs_refuse_two_members() {
        let e = serde_yaml_ng::from_str::<LoadBalancerSettings>(
            "{simple: ROUND_ROBIN, consistentHash: {useSourceIp: true}}",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("only one of simple or consistentHash"),
            "{e}"
        );
        let e = serde_yaml_ng::from_str::<ConsistentHashLb>("{useSourceIp: true, httpHeaderName: x}")
            .unwrap_err();
        assert!(e.to_string().contains("only one of httpHeaderName"), "{e}");
        let lb: LoadBalancerSettings = serde_yaml_ng::from_str(
            "{consistentHash: {httpCookie: {name: user, ttl: 0s}, ringHash: {minimumRingSize: 1024}}}",
        )
        .unwrap();
        let Some(LbPolicy::ConsistentHash(c)) = lb.lb_policy else {
            panic!()
        };
        assert!(matches!(c.hash_key, Some(HashKey::HttpCookie(_))));
        assert!(matches!(c.hash_algorithm, Some(HashAlgorithm::RingHash(_))));
    }

    #[test_case(65537 => true)]
    #[test_case(1000 => false)]
    #[test_case(2 => true)]
    fn primes(x: u64) -> bool {
        is_prime(x)
    }
}
