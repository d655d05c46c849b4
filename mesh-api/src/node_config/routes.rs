//! VirtualServices compiled into plain route tables, per namespace of this node's workloads
//! and host, as Istio builds a sidecar's routes
//! (<https://istio.io/latest/docs/reference/config/networking/virtual-service/>):
//!
//! - a VirtualService applies to mesh traffic when it names no `gateways` or names `mesh`;
//!   a match naming only other gateways is dropped, and a rule left without matches too;
//! - it is visible to a namespace through its `exportTo` and that namespace's Sidecar;
//! - hosts and destinations are resolved as Istio resolves short names (relative to the
//!   VirtualService's namespace);
//! - for one host and namespace the oldest VirtualService wins: Istio merges
//!   VirtualServices only on gateways ([`conflicts`] reports the others);
//! - a destination's subset is resolved to labels through the DestinationRule on Istio's
//!   lookup path: the client's namespace, then the service's, then the root namespace
//!   (<https://istio.io/latest/docs/ops/best-practices/traffic-management/#cross-namespace-configuration>).
//!
//! The node does not enforce these routes yet (the analysis keeps saying so).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{
    destination_rules::DestinationRules,
    visibility::{age, export_to, exported_to, fqdn, Sidecars},
    Diagnostic, Options, Severity,
};
use crate::{
    istio::{
        networking::{
            common::{Duration, StringMatch},
            virtual_service::{Destination, HttpMatchRequest, HttpRoute, RouteDestination},
            VirtualServiceSpec,
        },
        Resource,
    },
    objects::Object,
};

/// The routes of one host, for the workloads of one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteConfig {
    /// The namespace of the clients these routes are for (DestinationRule lookup and
    /// VirtualService visibility depend on it).
    pub namespace: String,
    /// Fully qualified host, or a wildcard (`*.example.com`, `*`).
    pub host: String,
    /// `namespace/name` of the VirtualService.
    pub virtual_service: String,
    /// HTTP rules, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRouteConfig>,
    /// TLS rules (by SNI), first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<L4RouteConfig>,
    /// TCP rules, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<L4RouteConfig>,
}

/// One HTTP rule: its conditions and where matching requests go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRouteConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Any one must hold; none means every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatch>,
    pub destinations: Vec<WeightedDestination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryConfig>,
    /// Fields of the rule that are set but not compiled yet (`fault`, `mirror`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_compiled: Vec<String>,
}

/// Istio's `HTTPMatchRequest`: every condition set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatcher>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatcher>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatcher>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatcher>,
    /// By lower-case header name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatcher>,
    /// Headers that must not match.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatcher>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatcher>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ignore_uri_case: bool,
    /// The destination port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Labels the source workload must have (the node checks per workload).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// Istio's `StringMatch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StringMatcher {
    Exact(String),
    Prefix(String),
    /// RE2 syntax, whole string.
    Regex(String),
}

/// A TCP or TLS rule: Istio's `L4MatchAttributes` / `TLSMatchAttributes` and destinations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct L4RouteConfig {
    /// Any one must hold; none means every connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<L4Match>,
    pub destinations: Vec<WeightedDestination>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct L4Match {
    /// TLS only: the SNI names (may be wildcards).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
    /// Destination IPs or CIDRs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// Where a share of the matching traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedDestination {
    /// Fully qualified host.
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// The labels the subset selects, from the DestinationRule on the lookup path; `None`
    /// with a `subset` means no such subset: Istio then has no endpoints (503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset_labels: Option<BTreeMap<String, String>>,
    /// Relative weight: 100 for a lone destination, else as written (unset is 0).
    pub weight: u32,
}

/// Istio's `HTTPRetry`, as written (unset fields take Istio's defaults at the node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u64>,
    /// Envoy retry conditions (`5xx`, `connect-failure`, status codes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<String>,
}

/// One VirtualService host that a namespace sees.
struct Selected<'a> {
    namespace: &'a str,
    host: String,
    vs: &'a Resource<VirtualServiceSpec>,
}

/// A VirtualService host that lost to an older one, for some namespaces.
struct Shadowed<'a> {
    loser: &'a Resource<VirtualServiceSpec>,
    host_index: usize,
    host: String,
    winner: &'a Resource<VirtualServiceSpec>,
    namespace: &'a str,
}

/// The VirtualServices applying to mesh traffic, oldest first.
fn mesh_virtual_services(objects: &[Object]) -> Vec<&Resource<VirtualServiceSpec>> {
    let mut out: Vec<_> = objects
        .iter()
        .filter_map(|o| match o {
            Object::VirtualService(v) if binds_mesh(&v.spec.gateways) => Some(v),
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| age(&a.meta).cmp(&age(&b.meta)));
    out
}

/// No gateways means `mesh` only; otherwise `mesh` must be named.
fn binds_mesh(gateways: &[String]) -> bool {
    gateways.is_empty() || gateways.iter().any(|g| g == "mesh")
}

/// Which VirtualService routes each host for each of `namespaces`, and what lost.
fn select<'a>(
    objects: &'a [Object],
    options: &Options,
    sidecars: &Sidecars,
    namespaces: &'a BTreeSet<String>,
) -> (Vec<Selected<'a>>, Vec<Shadowed<'a>>) {
    let virtual_services = mesh_virtual_services(objects);
    let mut selected: Vec<Selected> = Vec::new();
    let mut shadowed = Vec::new();
    for namespace in namespaces {
        let mut taken: BTreeMap<String, &Resource<VirtualServiceSpec>> = BTreeMap::new();
        for vs in &virtual_services {
            let ns = vs.meta.namespace.as_str();
            let export: Vec<&str> = vs.spec.export_to.iter().map(String::as_str).collect();
            if !exported_to(&export_to(&export, ns), namespace) {
                continue;
            }
            let hosts: Vec<String> = vs
                .spec
                .hosts
                .iter()
                .map(|h| fqdn(h, ns, &options.cluster_domain))
                .collect();
            // Istio imports a VirtualService whole when a Sidecar egress host matches any
            // of its hosts.
            if !hosts.iter().any(|h| sidecars.admits(namespace, ns, h)) {
                continue;
            }
            for (host_index, host) in hosts.into_iter().enumerate() {
                if let Some(winner) = taken.get(&host) {
                    if winner.key() != vs.key() {
                        shadowed.push(Shadowed {
                            loser: vs,
                            host_index,
                            host,
                            winner,
                            namespace,
                        });
                    }
                    continue;
                }
                taken.insert(host.clone(), vs);
                selected.push(Selected { namespace, host, vs });
            }
        }
    }
    (selected, shadowed)
}

/// The routes of every host the workloads of `namespaces` see.
pub(super) fn compile(
    objects: &[Object],
    options: &Options,
    sidecars: &Sidecars,
    namespaces: &BTreeSet<String>,
) -> Vec<RouteConfig> {
    let (selected, _) = select(objects, options, sidecars, namespaces);
    let rules = DestinationRules::new(objects, options);
    let mut out: Vec<RouteConfig> = selected
        .into_iter()
        .map(|s| {
            let vs = s.vs;
            let ns = &vs.meta.namespace;
            let destination = |d: &Destination, weight: Option<i32>, lone: bool| {
                let host = fqdn(&d.host, ns, &options.cluster_domain);
                let subset_labels = d
                    .subset
                    .as_deref()
                    .and_then(|subset| rules.subset(s.namespace, &host, subset));
                WeightedDestination {
                    port: d.port.as_ref().and_then(|p| p.number).and_then(port),
                    subset: d.subset.clone(),
                    subset_labels,
                    // Istio: a lone destination takes all traffic whatever its weight.
                    weight: if lone {
                        100
                    } else {
                        weight.and_then(|w| u32::try_from(w).ok()).unwrap_or(0)
                    },
                    host,
                }
            };
            let http = vs
                .spec
                .http
                .iter()
                .filter_map(|rule| {
                    let matches = mesh_matches(&rule.matches, |m| &m.gateways)?;
                    let lone = rule.route.len() == 1;
                    Some(HttpRouteConfig {
                        name: rule.name.clone(),
                        matches: matches.into_iter().map(http_match).collect(),
                        destinations: rule
                            .route
                            .iter()
                            .map(|r| destination(&r.destination, r.weight, lone))
                            .collect(),
                        timeout_ms: rule.timeout.as_ref().and_then(millis),
                        retries: rule.retries.as_ref().map(|r| RetryConfig {
                            attempts: r.attempts.and_then(|a| u32::try_from(a).ok()),
                            per_try_timeout_ms: r.per_try_timeout.as_ref().and_then(millis),
                            retry_on: r
                                .retry_on
                                .iter()
                                .flat_map(|s| s.split(','))
                                .map(str::trim)
                                .filter(|s| !s.is_empty())
                                .map(str::to_string)
                                .collect(),
                        }),
                        not_compiled: not_compiled(rule),
                    })
                })
                .collect();
            let l4 = |matches: Vec<L4Match>, route: &[RouteDestination]| {
                let lone = route.len() == 1;
                L4RouteConfig {
                    matches,
                    destinations: route
                        .iter()
                        .map(|r| destination(&r.destination, r.weight, lone))
                        .collect(),
                }
            };
            let tls = vs
                .spec
                .tls
                .iter()
                .filter_map(|rule| {
                    let matches = mesh_matches(&rule.matches, |m| &m.gateways)?;
                    let matches = matches
                        .into_iter()
                        .map(|m| L4Match {
                            sni_hosts: m.sni_hosts.clone(),
                            destination_subnets: m.destination_subnets.clone(),
                            port: m.port.and_then(port),
                            source_labels: m.source_labels.clone(),
                            source_namespace: m.source_namespace.clone(),
                        })
                        .collect();
                    Some(l4(matches, &rule.route))
                })
                .collect();
            let tcp = vs
                .spec
                .tcp
                .iter()
                .filter_map(|rule| {
                    let matches = mesh_matches(&rule.matches, |m| &m.gateways)?;
                    let matches = matches
                        .into_iter()
                        .map(|m| L4Match {
                            sni_hosts: Vec::new(),
                            destination_subnets: m.destination_subnets.clone(),
                            port: m.port.and_then(port),
                            source_labels: m.source_labels.clone(),
                            source_namespace: m.source_namespace.clone(),
                        })
                        .collect();
                    Some(l4(matches, &rule.route))
                })
                .collect();
            RouteConfig {
                namespace: s.namespace.to_string(),
                host: s.host,
                virtual_service: vs.key(),
                http,
                tls,
                tcp,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.host).cmp(&(&b.namespace, &b.host)));
    out
}

/// The matches of a rule that apply to mesh traffic; `None` when the rule had matches and
/// all of them name only other gateways (Istio then leaves the rule out).
fn mesh_matches<M>(matches: &[M], gateways: impl Fn(&M) -> &Vec<String>) -> Option<Vec<&M>> {
    let kept: Vec<&M> = matches.iter().filter(|m| binds_mesh(gateways(m))).collect();
    if !matches.is_empty() && kept.is_empty() {
        None
    } else {
        Some(kept)
    }
}

fn http_match(m: &HttpMatchRequest) -> HttpMatch {
    let map = |h: &BTreeMap<String, StringMatch>, lower: bool| {
        h.iter()
            .map(|(k, v)| {
                let k = if lower { k.to_ascii_lowercase() } else { k.clone() };
                (k, matcher(v))
            })
            .collect()
    };
    HttpMatch {
        name: m.name.clone(),
        uri: m.uri.as_ref().map(matcher),
        scheme: m.scheme.as_ref().map(matcher),
        method: m.method.as_ref().map(matcher),
        authority: m.authority.as_ref().map(matcher),
        headers: map(&m.headers, true),
        without_headers: map(&m.without_headers, true),
        query_params: map(&m.query_params, false),
        ignore_uri_case: m.ignore_uri_case.unwrap_or(false),
        port: m.port.and_then(port),
        source_labels: m.source_labels.clone(),
        source_namespace: m.source_namespace.clone(),
    }
}

fn matcher(m: &StringMatch) -> StringMatcher {
    match m {
        StringMatch::Exact(s) => StringMatcher::Exact(s.clone()),
        StringMatch::Prefix(s) => StringMatcher::Prefix(s.clone()),
        StringMatch::Regex(s) => StringMatcher::Regex(s.clone()),
    }
}

fn port(p: u32) -> Option<u16> {
    u16::try_from(p).ok()
}

fn millis(d: &Duration) -> Option<u64> {
    d.nanos().ok().and_then(|n| u64::try_from(n / 1_000_000).ok())
}

/// The set fields of an HTTP rule this compiler leaves out (for now).
fn not_compiled(rule: &HttpRoute) -> Vec<String> {
    let set = [
        ("redirect", rule.redirect.is_some()),
        ("directResponse", rule.direct_response.is_some()),
        ("delegate", rule.delegate.is_some()),
        ("rewrite", rule.rewrite.is_some()),
        ("fault", rule.fault.is_some()),
        ("mirror", rule.mirror.is_some()),
        ("mirrors", !rule.mirrors.is_empty()),
        (
            "mirrorPercentage",
            rule.mirror_percentage.is_some()
                || rule.mirror_percent.is_some()
                || rule.mirror_percent_legacy.is_some(),
        ),
        ("corsPolicy", rule.cors_policy.is_some()),
        (
            "headers",
            rule.headers.is_some() || rule.route.iter().any(|r| r.headers.is_some()),
        ),
    ];
    set.into_iter()
        .filter(|(_, is_set)| *is_set)
        .map(|(f, _)| f.to_string())
        .collect()
}

/// Hosts a namespace reaches through the VirtualServices it sees: Istio adds the
/// destinations of imported VirtualServices to a Sidecar's scope.
pub(super) fn destination_hosts(routes: &[RouteConfig]) -> BTreeSet<(String, String)> {
    routes
        .iter()
        .flat_map(|r| {
            let all = r.http.iter().flat_map(|h| &h.destinations);
            let l4 = r.tls.iter().chain(&r.tcp).flat_map(|t| &t.destinations);
            all.chain(l4).map(|d| (r.namespace.clone(), d.host.clone()))
        })
        .collect()
}

/// VirtualServices that lose a host to an older one for some namespace: Istio merges
/// VirtualServices only for gateways; for mesh traffic the oldest wins and the others'
/// rules for that host are ignored. One warning per losing host. Pure.
pub fn conflicts(objects: &[Object], options: &Options) -> Vec<Diagnostic> {
    let mut namespaces: BTreeSet<String> = BTreeSet::new();
    for o in objects {
        match o {
            Object::Namespace(n) => {
                namespaces.insert(n.name.clone());
            }
            Object::Pod(p) => {
                namespaces.insert(p.namespace.clone());
            }
            Object::VirtualService(v) => {
                namespaces.insert(v.meta.namespace.clone());
            }
            _ => {}
        }
    }
    let sidecars = Sidecars::new(objects, &options.root_namespace);
    let (_, shadowed) = select(objects, options, &sidecars, &namespaces);
    type Key = (String, usize, String, String);
    let mut grouped: BTreeMap<Key, (usize, Vec<&str>)> = BTreeMap::new();
    for s in &shadowed {
        let key = (s.loser.key(), s.host_index, s.host.clone(), s.winner.key());
        grouped
            .entry(key)
            .or_insert((s.loser.meta.order, Vec::new()))
            .1
            .push(s.namespace);
    }
    let mut out: Vec<(usize, Diagnostic)> = grouped
        .into_iter()
        .map(|((loser, index, host, winner), (order, namespaces))| {
            (
                order,
                Diagnostic {
                    severity: Severity::Warning,
                    object: format!("VirtualService {loser}"),
                    field: format!("spec.hosts[{index}]"),
                    message: format!(
                        "host {host} is also routed by VirtualService {winner}, which is older and wins for workloads in {}: Istio merges VirtualServices only on gateways; move these rules into {winner}",
                        namespaces.join(", ")
                    ),
                },
            )
        })
        .collect();
    out.sort_by_key(|(order, _)| *order);
    out.into_iter().map(|(_, d)| d).collect()
}

#[cfg(test)]
mod tests {
    use test_case::test_case;

    use super::*;
    use crate::node_config::services::tests::compile_n1;

    /// One line per compiled host: `namespace host <- vs: rule | rule`, each rule its matches
    /// and `host[:port][/subset{labels}]*weight` destinations.
    pub(crate) fn rows(routes: &[RouteConfig]) -> Vec<String> {
        fn dest(d: &WeightedDestination) -> String {
            let mut s = d.host.clone();
            if let Some(p) = d.port {
                s += &format!(":{p}");
            }
            if let Some(subset) = &d.subset {
                let labels = d.subset_labels.as_ref().map_or("?".to_string(), |l| {
                    let l: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    l.join(",")
                });
                s += &format!("/{subset}{{{labels}}}");
            }
            format!("{s}*{}", d.weight)
        }
        routes
            .iter()
            .map(|r| {
                let mut rules: Vec<String> = Vec::new();
                for h in &r.http {
                    let matches = serde_json::to_string(&h.matches).unwrap();
                    let dests: Vec<String> = h.destinations.iter().map(dest).collect();
                    let mut rule = format!("http {matches} {}", dests.join(" "));
                    if let Some(t) = h.timeout_ms {
                        rule += &format!(" timeout={t}ms");
                    }
                    if let Some(r) = &h.retries {
                        rule += &format!(" retries={}", serde_json::to_string(r).unwrap());
                    }
                    rules.push(rule);
                }
                for (kind, l4) in [("tls", &r.tls), ("tcp", &r.tcp)] {
                    for t in l4 {
                        let matches = serde_json::to_string(&t.matches).unwrap();
                        let dests: Vec<String> = t.destinations.iter().map(dest).collect();
                        rules.push(format!("{kind} {matches} {}", dests.join(" ")));
                    }
                }
                format!(
                    "{} {} <- {}: {}",
                    r.namespace,
                    r.host,
                    r.virtual_service,
                    rules.join(" | ")
                )
            })
            .collect()
    }

    fn vs(namespace: &str, name: &str, spec: &str) -> String {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n")
    }

    fn dr(namespace: &str, name: &str, spec: &str) -> String {
        format!("---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n")
    }

    const R: &str = "reviews.shop.svc.cluster.local";

    // One row per rule of the VirtualService and DestinationRule references.
    #[test_case(
        &vs("shop", "r", "{hosts: [reviews], http: [{route: [{destination: {host: reviews}}]}]}"),
        &[
            &format!("books {R} <- shop/r: http [] {R}*100"),
            &format!("shop {R} <- shop/r: http [] {R}*100"),
        ]
        ; "short names resolve in the virtual service namespace")]
    #[test_case(
        &vs("books", "r", "{hosts: [reviews.shop.svc.cluster.local], http: [{route: [{destination: {host: reviews.shop.svc.cluster.local, port: {number: 9080}}, weight: 80}, {destination: {host: reviews.shop.svc.cluster.local}, weight: 20}]}]}"),
        &[
            &format!("books {R} <- books/r: http [] {R}:9080*80 {R}*20"),
            &format!("shop {R} <- books/r: http [] {R}:9080*80 {R}*20"),
        ]
        ; "weights and ports")]
    #[test_case(
        &format!("{}{}", vs("shop", "r", "{hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v1}, weight: 90}, {destination: {host: reviews, subset: v9}, weight: 10}]}]}"),
            dr("shop", "reviews", "{host: reviews, subsets: [{name: v1, labels: {version: v1}}]}")),
        &[
            &format!("books {R} <- shop/r: http [] {R}/v1{{version=v1}}*90 {R}/v9{{?}}*10"),
            &format!("shop {R} <- shop/r: http [] {R}/v1{{version=v1}}*90 {R}/v9{{?}}*10"),
        ]
        ; "subsets resolve through the destination rule")]
    #[test_case(
        &format!("{}{}{}{}", vs("shop", "r", "{hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v1}}]}]}"),
            dr("shop", "reviews", "{host: reviews, exportTo: [.], subsets: [{name: v1, labels: {version: v1}}]}"),
            dr("books", "mine", "{host: reviews.shop.svc.cluster.local, subsets: [{name: v1, labels: {track: books}}]}"),
            dr("istio-system", "mesh", "{host: \"*.svc.cluster.local\", subsets: [{name: v1, labels: {track: root}}]}")),
        &[
            &format!("books {R} <- shop/r: http [] {R}/v1{{track=books}}*100"),
            &format!("shop {R} <- shop/r: http [] {R}/v1{{version=v1}}*100"),
        ]
        ; "client namespace rule first")]
    #[test_case(
        &format!("{}{}{}", vs("shop", "r", "{hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v1}}]}]}"),
            dr("shop", "reviews", "{host: reviews, exportTo: [.], subsets: [{name: v1, labels: {version: v1}}]}"),
            dr("istio-system", "mesh", "{host: \"*.svc.cluster.local\", subsets: [{name: v1, labels: {track: root}}]}")),
        &[
            &format!("books {R} <- shop/r: http [] {R}/v1{{track=root}}*100"),
            &format!("shop {R} <- shop/r: http [] {R}/v1{{version=v1}}*100"),
        ]
        ; "unexported service namespace rule falls back to the root namespace")]
    #[test_case(
        &vs("shop", "r", "{hosts: [reviews], exportTo: [.], http: [{route: [{destination: {host: reviews}}]}]}"),
        &[&format!("shop {R} <- shop/r: http [] {R}*100")]
        ; "export to own namespace")]
    #[test_case(
        &vs("shop", "r", "{hosts: [reviews], exportTo: [billing], http: [{route: [{destination: {host: reviews}}]}]}"),
        &[]
        ; "export to a namespace without workloads here")]
    #[test_case(
        &vs("shop", "r", "{hosts: [reviews], gateways: [public], http: [{route: [{destination: {host: reviews}}]}]}"),
        &[]
        ; "gateway only virtual service is not for the mesh")]
    #[test_case(
        &vs("shop", "r", "{hosts: [reviews], gateways: [public, mesh], exportTo: [.], http: [{match: [{gateways: [public], uri: {prefix: /a}}], route: [{destination: {host: reviews, subset: a}}]}, {match: [{gateways: [public], uri: {prefix: /b}}, {gateways: [mesh], uri: {prefix: /b}, headers: {End-User: {exact: jason}}}], route: [{destination: {host: reviews}}]}]}"),
        &[&format!("shop {R} <- shop/r: http [{{\"uri\":{{\"prefix\":\"/b\"}},\"headers\":{{\"end-user\":{{\"exact\":\"jason\"}}}}}}] {R}*100")]
        ; "matches bound to other gateways are dropped")]
    #[test_case(
        &vs("shop", "r", "{hosts: [reviews], exportTo: [.], http: [{match: [{port: 9080, method: {exact: GET}, sourceLabels: {app: web}}], timeout: 1.5s, retries: {attempts: 3, perTryTimeout: 500ms, retryOn: \"5xx,connect-failure\"}, route: [{destination: {host: reviews}}]}]}"),
        &[&format!("shop {R} <- shop/r: http [{{\"method\":{{\"exact\":\"GET\"}},\"port\":9080,\"source_labels\":{{\"app\":\"web\"}}}}] {R}*100 timeout=1500ms retries={{\"attempts\":3,\"per_try_timeout_ms\":500,\"retry_on\":[\"5xx\",\"connect-failure\"]}}")]
        ; "matches timeouts and retries are plain data")]
    #[test_case(
        &vs("shop", "db", "{hosts: [db.corp], exportTo: [.], tcp: [{match: [{port: 5432, destinationSubnets: [192.168.0.0/16]}], route: [{destination: {host: db.corp}}]}], tls: [{match: [{sniHosts: [db.corp], port: 443}], route: [{destination: {host: db.corp, port: {number: 443}}}]}]}"),
        &["shop db.corp <- shop/db: tls [{\"sni_hosts\":[\"db.corp\"],\"port\":443}] db.corp:443*100 | tcp [{\"destination_subnets\":[\"192.168.0.0/16\"],\"port\":5432}] db.corp*100"]
        ; "tcp and tls rules")]
    fn virtual_services(extra: &str, expected: &[&str]) {
        assert_eq!(rows(&compile_n1(extra).routes), expected);
    }

    const OLD: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: old, namespace: books, creationTimestamp: \"2024-01-01T00:00:00Z\"}\nspec: {hosts: [reviews.shop.svc.cluster.local], http: [{route: [{destination: {host: reviews.shop.svc.cluster.local, subset: old}}]}]}\n";
    const NEW: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: new, namespace: shop, creationTimestamp: \"2025-01-01T00:00:00Z\"}\nspec: {hosts: [web, reviews], http: [{route: [{destination: {host: reviews, subset: new}}]}]}\n";

    #[test]
    fn the_oldest_virtual_service_wins_a_host_and_the_other_is_reported() {
        // The newer one comes first in the source: age decides, not position.
        let c = compile_n1(&format!("{NEW}---\n{OLD}"));
        let found: Vec<(&str, &str, &str)> = c
            .routes
            .iter()
            .map(|r| (r.namespace.as_str(), r.host.as_str(), r.virtual_service.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("books", R, "books/old"),
                ("books", "web.shop.svc.cluster.local", "shop/new"),
                ("shop", R, "books/old"),
                ("shop", "web.shop.svc.cluster.local", "shop/new"),
            ]
        );
        let text = format!(
            "{}---\n{NEW}---\n{OLD}",
            crate::node_config::services::tests::MESH
        );
        let objects = crate::objects::parse_documents(std::path::Path::new("t.yaml"), &text).unwrap();
        let found: Vec<String> = conflicts(&objects, &Options::default())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [format!("warning: VirtualService shop/new spec.hosts[1]: host {R} is also routed by VirtualService books/old, which is older and wins for workloads in billing, books, shop: Istio merges VirtualServices only on gateways; move these rules into books/old")]
        );
    }

    #[test]
    fn gateway_virtual_services_do_not_conflict_with_mesh_ones() {
        let gw = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: gw, namespace: shop}\nspec: {hosts: [reviews], gateways: [public], http: [{route: [{destination: {host: reviews}}]}]}\n";
        let text = format!("{}---\n{OLD}---\n{gw}", crate::node_config::services::tests::MESH);
        let objects = crate::objects::parse_documents(std::path::Path::new("t.yaml"), &text).unwrap();
        assert_eq!(conflicts(&objects, &Options::default()), []);
    }

    #[test]
    fn a_sidecar_scopes_virtual_services_and_their_destinations_stay_reachable() {
        // books may only reach its own namespace, but its VirtualService sends
        // catalog.books.svc traffic to shop's reviews: Istio adds that destination to the
        // Sidecar's scope. shop's VirtualService is not imported into books.
        let extra = format!(
            "{}---\n{}---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: books}}\nspec: {{egress: [{{hosts: [./*]}}]}}\n",
            vs("books", "c", "{hosts: [catalog], http: [{route: [{destination: {host: reviews.shop.svc.cluster.local}}]}]}"),
            vs("shop", "w", "{hosts: [web], http: [{route: [{destination: {host: web}}]}]}"),
        );
        let c = compile_n1(&extra);
        let routes: Vec<(&str, &str)> = c
            .routes
            .iter()
            .map(|r| (r.namespace.as_str(), r.virtual_service.as_str()))
            .collect();
        assert_eq!(
            routes,
            [("books", "books/c"), ("shop", "books/c"), ("shop", "shop/w")]
        );
        let reviews = c.services.iter().find(|s| s.name == "shop/reviews").unwrap();
        assert_eq!(
            reviews.visible_to,
            BTreeSet::from(["books".to_string(), "shop".to_string()])
        );
    }
}
