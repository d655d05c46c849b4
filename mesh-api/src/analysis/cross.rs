//! Problems that only show across objects, in the spirit of `istioctl analyze`: references
//! to hosts, subsets, gateways and namespaces that do not exist; objects that conflict; and
//! selectors that match no pod.
//!
//! The networking kinds are read through their JSON form (`Object::istio_spec`), so these
//! checks read the same fields whatever the Rust shape of the spec types.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::{
    node_config::{Diagnostic, Options, Severity},
    objects::{Meta, Object},
};

/// Every cross-object problem of `objects`, in object order.
pub fn cross_object(objects: &[Object], options: &Options) -> Vec<Diagnostic> {
    let index = Index::new(objects, options);
    let mut out = Vec::new();
    for object in objects {
        let Some(spec) = object.istio_spec() else {
            continue;
        };
        let Some(meta) = istio_meta(object) else {
            continue;
        };
        let mut report = |severity, field: String, message: String| {
            out.push(Diagnostic {
                severity,
                object: format!("{} {}", object.kind(), object.key()),
                field,
                message,
            })
        };
        match object {
            Object::VirtualService(_) => virtual_service(&index, meta, &spec, &mut report),
            Object::DestinationRule(_) => {
                if let Some(host) = spec["host"].as_str() {
                    if !index.host_exists(host, &meta.namespace) {
                        report(
                            Severity::Warning,
                            "spec.host".into(),
                            format!(
                                "host {host} is neither a Service ({}) nor a ServiceEntry host: the rule applies to nothing; check the spelling",
                                index.fqdn(host, &meta.namespace)
                            ),
                        );
                    }
                }
            }
            Object::Sidecar(_) => {
                sidecar_egress(&index, &spec, &mut report);
                selects_a_pod(
                    &index,
                    meta,
                    &spec["workloadSelector"]["labels"],
                    "spec.workloadSelector.labels",
                    &mut report,
                );
            }
            Object::PeerAuthentication(_)
            | Object::RequestAuthentication(_)
            | Object::AuthorizationPolicy(_) => selects_a_pod(
                &index,
                meta,
                &spec["selector"]["matchLabels"],
                "spec.selector.matchLabels",
                &mut report,
            ),
            _ => {}
        }
    }
    conflicts(objects, &index, &mut out);
    out
}

/// What the checks look things up in.
struct Index<'a> {
    cluster_domain: &'a str,
    root_namespace: &'a str,
    /// `name.namespace.svc.<domain>` of every Service.
    services: BTreeSet<String>,
    /// Every ServiceEntry host, as written (may be `*.example.com`).
    entry_hosts: BTreeSet<String>,
    /// `namespace/name` of every Gateway.
    gateways: BTreeSet<String>,
    /// Subsets by the fully qualified host of their DestinationRule.
    subsets: BTreeMap<String, BTreeSet<String>>,
    /// Namespaces that exist: a Namespace object or any object in them.
    namespaces: BTreeSet<String>,
    /// Pods' namespace and labels.
    pods: Vec<(&'a str, &'a BTreeMap<String, String>)>,
}

impl<'a> Index<'a> {
    fn new(objects: &'a [Object], options: &'a Options) -> Self {
        let mut index = Index {
            cluster_domain: &options.cluster_domain,
            root_namespace: &options.root_namespace,
            services: BTreeSet::new(),
            entry_hosts: BTreeSet::new(),
            gateways: BTreeSet::new(),
            subsets: BTreeMap::new(),
            namespaces: BTreeSet::new(),
            pods: Vec::new(),
        };
        for object in objects {
            match object {
                Object::Namespace(n) => {
                    index.namespaces.insert(n.name.clone());
                }
                Object::Pod(p) => {
                    index.namespaces.insert(p.namespace.clone());
                    index.pods.push((&p.namespace, &p.labels));
                }
                Object::Service(s) => {
                    let fqdn = index.fqdn(&format!("{}.{}", s.meta.name, s.meta.namespace), "");
                    index.services.insert(fqdn);
                }
                Object::Gateway(g) => {
                    index.gateways.insert(g.key());
                }
                _ => {}
            }
            if let Some(meta) = istio_meta(object).or(match object {
                Object::Service(s) => Some(&s.meta),
                Object::EndpointSlice(s) => Some(&s.meta),
                Object::ServiceAccount(s) => Some(&s.meta),
                _ => None,
            }) {
                index.namespaces.insert(meta.namespace.clone());
            }
            let spec = object.istio_spec().unwrap_or_default();
            match object {
                Object::ServiceEntry(_) => {
                    for host in strings(&spec["hosts"]) {
                        index.entry_hosts.insert(host.to_string());
                    }
                }
                Object::DestinationRule(r) => {
                    let Some(host) = spec["host"].as_str() else {
                        continue;
                    };
                    let fqdn = index.fqdn(host, &r.meta.namespace);
                    let names = spec["subsets"].as_array().into_iter().flatten();
                    let set = index.subsets.entry(fqdn).or_default();
                    set.extend(names.filter_map(|s| s["name"].as_str()).map(str::to_string));
                }
                _ => {}
            }
        }
        index
    }

    /// Kubernetes short names as Istio resolves them: `web` in the object's namespace,
    /// `web.shop`, `web.shop.svc`, and the full `web.shop.svc.<domain>`.
    fn fqdn(&self, host: &str, namespace: &str) -> String {
        let domain = self.cluster_domain;
        match host.split('.').count() {
            1 => format!("{host}.{namespace}.svc.{domain}"),
            2 => format!("{host}.svc.{domain}"),
            3 if host.ends_with(".svc") => format!("{host}.{domain}"),
            _ => host.to_string(),
        }
    }

    /// A Service, a ServiceEntry host (wildcards included), or a wildcard itself.
    fn host_exists(&self, host: &str, namespace: &str) -> bool {
        if host.contains('*')
            || self.entry_hosts.contains(host)
            || self.services.contains(&self.fqdn(host, namespace))
        {
            return true;
        }
        self.entry_hosts
            .iter()
            .filter_map(|h| h.strip_prefix('*'))
            .any(|suffix| host.ends_with(suffix))
    }

    fn pod_matches(&self, namespace: &str, selector: &serde_json::Map<String, Value>) -> bool {
        // A policy in the root namespace selects workloads of every namespace.
        let all = namespace == self.root_namespace;
        self.pods.iter().any(|(ns, labels)| {
            (all || *ns == namespace)
                && selector.iter().all(|(k, v)| {
                    v.as_str()
                        .is_some_and(|v| labels.get(k).map(String::as_str) == Some(v))
                })
        })
    }
}

fn istio_meta(object: &Object) -> Option<&Meta> {
    Some(match object {
        Object::VirtualService(r) => &r.meta,
        Object::DestinationRule(r) => &r.meta,
        Object::ServiceEntry(r) => &r.meta,
        Object::Gateway(r) => &r.meta,
        Object::Sidecar(r) => &r.meta,
        Object::PeerAuthentication(r) => &r.meta,
        Object::RequestAuthentication(r) => &r.meta,
        Object::AuthorizationPolicy(r) => &r.meta,
        _ => return None,
    })
}

fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

fn array(v: &Value) -> impl Iterator<Item = (usize, &Value)> {
    v.as_array().into_iter().flatten().enumerate()
}

type Report<'r> = dyn FnMut(Severity, String, String) + 'r;

fn virtual_service(index: &Index, meta: &Meta, spec: &Value, report: &mut Report) {
    let ns = &meta.namespace;
    // Every destination: route destinations of http, tcp and tls rules, and HTTP mirrors.
    let mut destinations: Vec<(String, &Value)> = Vec::new();
    for protocol in ["http", "tcp", "tls"] {
        for (i, rule) in array(&spec[protocol]) {
            for (j, route) in array(&rule["route"]) {
                destinations.push((
                    format!("spec.{protocol}[{i}].route[{j}].destination"),
                    &route["destination"],
                ));
            }
            if protocol == "http" {
                if rule["mirror"].is_object() {
                    destinations.push((format!("spec.http[{i}].mirror"), &rule["mirror"]));
                }
                for (k, mirror) in array(&rule["mirrors"]) {
                    destinations.push((
                        format!("spec.http[{i}].mirrors[{k}].destination"),
                        &mirror["destination"],
                    ));
                }
            }
        }
    }
    for (path, destination) in destinations {
        let Some(host) = destination["host"].as_str() else {
            continue;
        };
        if !index.host_exists(host, ns) {
            report(
                Severity::Error,
                format!("{path}.host"),
                format!(
                    "host {host} is neither a Service ({}) nor a ServiceEntry host: create the Service or a ServiceEntry, or fix the host",
                    index.fqdn(host, ns)
                ),
            );
            continue;
        }
        let Some(subset) = destination["subset"].as_str() else {
            continue;
        };
        let fqdn = index.fqdn(host, ns);
        if !index.subsets.get(&fqdn).is_some_and(|s| s.contains(subset)) {
            let hint = match index.subsets.get(&fqdn) {
                Some(known) if !known.is_empty() => format!(
                    "the DestinationRule for {fqdn} defines {}",
                    known.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
                Some(_) => format!("the DestinationRule for {fqdn} defines no subsets"),
                None => format!("no DestinationRule has host {fqdn}"),
            };
            report(
                Severity::Error,
                format!("{path}.subset"),
                format!(
                    "subset {subset} is not defined ({hint}): add it to the DestinationRule's spec.subsets"
                ),
            );
        }
    }
    for (i, gateway) in array(&spec["gateways"]) {
        let Some(gateway) = gateway.as_str() else { continue };
        if gateway == "mesh" {
            continue; // the reserved name for all sidecars / node proxies
        }
        let key = if gateway.contains('/') {
            gateway.to_string()
        } else {
            format!("{ns}/{gateway}")
        };
        if !index.gateways.contains(&key) {
            report(
                Severity::Error,
                format!("spec.gateways[{i}]"),
                format!("Gateway {key} does not exist: create it or name an existing one (`namespace/name`)"),
            );
        }
    }
}

fn sidecar_egress(index: &Index, spec: &Value, report: &mut Report) {
    for (i, egress) in array(&spec["egress"]) {
        for (j, host) in array(&egress["hosts"]) {
            let Some((namespace, _)) = host.as_str().and_then(|h| h.split_once('/')) else {
                continue;
            };
            // `*` any namespace, `.` the Sidecar's own, `~` none.
            if matches!(namespace, "*" | "." | "~") || index.namespaces.contains(namespace) {
                continue;
            }
            report(
                Severity::Warning,
                format!("spec.egress[{i}].hosts[{j}]"),
                format!(
                    "namespace {namespace} has no objects: check its spelling, or use */ for any namespace"
                ),
            );
        }
    }
}

fn selects_a_pod(index: &Index, meta: &Meta, selector: &Value, field: &str, report: &mut Report) {
    let Some(selector) = selector.as_object().filter(|s| !s.is_empty()) else {
        return;
    };
    if index.pod_matches(&meta.namespace, selector) {
        return;
    }
    let labels: Vec<String> = selector
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    report(
        Severity::Warning,
        field.into(),
        format!(
            "no pod in namespace {} has the labels {}: the object applies to nothing; check the labels",
            meta.namespace,
            labels.join(",")
        ),
    );
}

/// Objects that fight over the same thing: Istio picks one (or merges) and the others are
/// easy to miss.
fn conflicts(objects: &[Object], index: &Index, out: &mut Vec<Diagnostic>) {
    let mut groups: BTreeMap<(&str, String, String), Vec<&Object>> = BTreeMap::new();
    for object in objects {
        let (Some(meta), Some(spec)) = (istio_meta(object), object.istio_spec()) else {
            continue;
        };
        let key = match object {
            Object::DestinationRule(_) => match spec["host"].as_str() {
                // Rules scoped to different workloads do not conflict.
                Some(host) if spec["workloadSelector"].is_null() => index.fqdn(host, &meta.namespace),
                _ => continue,
            },
            Object::PeerAuthentication(_) if no_labels(&spec["selector"]["matchLabels"]) => String::new(),
            Object::Sidecar(_) if no_labels(&spec["workloadSelector"]["labels"]) => String::new(),
            _ => continue,
        };
        groups
            .entry((object.kind(), meta.namespace.clone(), key))
            .or_default()
            .push(object);
    }
    for ((kind, namespace, host), group) in groups {
        if group.len() < 2 {
            continue;
        }
        let names: Vec<String> = group
            .iter()
            .filter_map(|o| istio_meta(o))
            .map(|m| m.name.clone())
            .collect();
        let names = names.join(", ");
        let (severity, field, message) = match kind {
            "DestinationRule" => (
                Severity::Warning,
                "spec.host",
                format!("{} DestinationRules in namespace {namespace} have host {host} ({names}): Istio merges them unpredictably; keep one", group.len()),
            ),
            "PeerAuthentication" => (
                Severity::Warning,
                "spec.selector",
                format!("{} namespace-wide PeerAuthentications in namespace {namespace} ({names}): only the oldest applies; delete the others", group.len()),
            ),
            _ => (
                Severity::Error,
                "spec.workloadSelector",
                format!("{} Sidecars without workloadSelector in namespace {namespace} ({names}): Istio cannot pick one; keep one or add selectors", group.len()),
            ),
        };
        for object in group {
            out.push(Diagnostic {
                severity,
                object: format!("{kind} {}", object.key()),
                field: field.into(),
                message: message.clone(),
            });
        }
    }
}

fn no_labels(labels: &Value) -> bool {
    labels.as_object().is_none_or(|l| l.is_empty())
}

#[cfg(test)]
mod tests {
    use test_case::test_case;

    use super::*;

    const BASE: &str = include_str!("testdata/base.yaml");

    /// The cross-object diagnostics of the base cluster plus `extra`, as text.
    fn analyze(extra: &str) -> Vec<String> {
        let text = format!("{BASE}---\n{extra}");
        let objects = crate::objects::parse_documents(std::path::Path::new("t.yaml"), &text).unwrap();
        cross_object(&objects, &Options::default())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const VS: &str =
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: shop}\n";

    #[test]
    fn the_base_cluster_is_clean() {
        assert_eq!(analyze(""), Vec::<String>::new());
    }

    // References that resolve.
    #[test_case("spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v1}}]}]}" ; "short name in the same namespace")]
    #[test_case("spec: {hosts: [x], http: [{route: [{destination: {host: reviews.shop}}]}]}" ; "name dot namespace")]
    #[test_case("spec: {hosts: [x], http: [{route: [{destination: {host: reviews.shop.svc}}]}]}" ; "name namespace svc")]
    #[test_case("spec: {hosts: [x], tcp: [{route: [{destination: {host: reviews.shop.svc.cluster.local, subset: v1}}]}]}" ; "fqdn")]
    #[test_case("spec: {hosts: [x], http: [{route: [{destination: {host: api.example.com}}]}]}" ; "service entry host")]
    #[test_case("spec: {hosts: [x], http: [{route: [{destination: {host: a.wild.example.com}}]}]}" ; "service entry wildcard")]
    #[test_case("spec: {hosts: [x], http: [{route: [{destination: {host: \"*.example.com\"}}]}]}" ; "wildcard destination")]
    #[test_case("spec: {hosts: [x], gateways: [mesh, public, shop/public], http: [{route: [{destination: {host: reviews}}]}]}" ; "gateways")]
    fn virtual_service_references_that_resolve(spec: &str) {
        assert_eq!(analyze(&format!("{VS}{spec}")), Vec::<String>::new());
    }

    // One row per problem: the objects added, and the diagnostic expected.
    #[test_case(
        &format!("{VS}spec: {{hosts: [x], http: [{{route: [{{destination: {{host: ratings}}}}]}}]}}"),
        "error: VirtualService shop/vs spec.http[0].route[0].destination.host: host ratings is neither a Service (ratings.shop.svc.cluster.local) nor a ServiceEntry host: create the Service or a ServiceEntry, or fix the host"
        ; "route host missing")]
    #[test_case(
        &format!("{VS}spec: {{hosts: [x], http: [{{mirror: {{host: reviews.books}}, route: [{{destination: {{host: reviews}}}}]}}]}}"),
        "error: VirtualService shop/vs spec.http[0].mirror.host: host reviews.books is neither a Service (reviews.books.svc.cluster.local) nor a ServiceEntry host: create the Service or a ServiceEntry, or fix the host"
        ; "mirror host in another namespace")]
    #[test_case(
        &format!("{VS}spec: {{hosts: [x], http: [{{route: [{{destination: {{host: reviews, subset: v2}}}}]}}]}}"),
        "error: VirtualService shop/vs spec.http[0].route[0].destination.subset: subset v2 is not defined (the DestinationRule for reviews.shop.svc.cluster.local defines v1): add it to the DestinationRule's spec.subsets"
        ; "subset missing")]
    #[test_case(
        &format!("{VS}spec: {{hosts: [api.example.com], tls: [{{match: [{{sniHosts: [api.example.com]}}], route: [{{destination: {{host: api.example.com, subset: eu}}}}]}}]}}"),
        "error: VirtualService shop/vs spec.tls[0].route[0].destination.subset: subset eu is not defined (no DestinationRule has host api.example.com): add it to the DestinationRule's spec.subsets"
        ; "subset without destination rule")]
    #[test_case(
        &format!("{VS}spec: {{hosts: [x], gateways: [private], http: [{{route: [{{destination: {{host: reviews}}}}]}}]}}"),
        "error: VirtualService shop/vs spec.gateways[0]: Gateway shop/private does not exist: create it or name an existing one (`namespace/name`)"
        ; "gateway missing")]
    #[test_case(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings, namespace: shop}\nspec: {host: ratings}\n",
        "warning: DestinationRule shop/ratings spec.host: host ratings is neither a Service (ratings.shop.svc.cluster.local) nor a ServiceEntry host: the rule applies to nothing; check the spelling"
        ; "destination rule host unknown")]
    #[test_case(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: shop}\nspec: {egress: [{hosts: [./*, istio-system/*, bookz/*]}]}\n",
        "warning: Sidecar shop/default spec.egress[0].hosts[2]: namespace bookz has no objects: check its spelling, or use */ for any namespace"
        ; "sidecar egress namespace")]
    #[test_case(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews-tls, namespace: shop}\nspec: {host: reviews.shop.svc.cluster.local}\n",
        "warning: DestinationRule shop/reviews-tls spec.host: 2 DestinationRules in namespace shop have host reviews.shop.svc.cluster.local (reviews, reviews-tls): Istio merges them unpredictably; keep one"
        ; "two destination rules for one host")]
    #[test_case(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a, namespace: shop}\nspec: {mtls: {mode: STRICT}}\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: b, namespace: shop}\nspec: {mtls: {mode: PERMISSIVE}}\n",
        "warning: PeerAuthentication shop/b spec.selector: 2 namespace-wide PeerAuthentications in namespace shop (a, b): only the oldest applies; delete the others"
        ; "two namespace-wide peer authentications")]
    #[test_case(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: a, namespace: shop}\nspec: {egress: [{hosts: [./*]}]}\n---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: b, namespace: shop}\nspec: {workloadSelector: {labels: {}}, egress: [{hosts: [./*]}]}\n",
        "error: Sidecar shop/a spec.workloadSelector: 2 Sidecars without workloadSelector in namespace shop (a, b): Istio cannot pick one; keep one or add selectors"
        ; "two sidecars without selector")]
    #[test_case(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny, namespace: shop}\nspec: {selector: {matchLabels: {app: ratings}}, action: DENY, rules: [{}]}\n",
        "warning: AuthorizationPolicy shop/deny spec.selector.matchLabels: no pod in namespace shop has the labels app=ratings: the object applies to nothing; check the labels"
        ; "authorization policy selects nothing")]
    #[test_case(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: shop}\nspec: {selector: {matchLabels: {app: reviews, version: v2}}, mtls: {mode: STRICT}}\n",
        "warning: PeerAuthentication shop/p spec.selector.matchLabels: no pod in namespace shop has the labels app=reviews,version=v2: the object applies to nothing; check the labels"
        ; "peer authentication selects nothing")]
    #[test_case(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt, namespace: books}\nspec: {selector: {matchLabels: {app: reviews}}}\n",
        "warning: RequestAuthentication books/jwt spec.selector.matchLabels: no pod in namespace books has the labels app=reviews: the object applies to nothing; check the labels"
        ; "request authentication selects only in its namespace")]
    #[test_case(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s, namespace: shop}\nspec: {workloadSelector: {labels: {app: web}}, egress: [{hosts: [./*]}]}\n",
        "warning: Sidecar shop/s spec.workloadSelector.labels: no pod in namespace shop has the labels app=web: the object applies to nothing; check the labels"
        ; "sidecar selects nothing")]
    fn problems(extra: &str, expected: &str) {
        let found = analyze(extra);
        assert!(
            found.iter().any(|d| d == expected),
            "expected\n  {expected}\nin\n  {}",
            found.join("\n  ")
        );
    }

    #[test_case("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow, namespace: istio-system}\nspec: {selector: {matchLabels: {app: reviews}}}\n" ; "root namespace selects in every namespace")]
    #[test_case("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow, namespace: shop}\nspec: {selector: {matchLabels: {version: v1}}}\n" ; "subset of a pod's labels")]
    #[test_case("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r2, namespace: shop}\nspec: {host: reviews, workloadSelector: {matchLabels: {app: reviews}}}\n" ; "destination rules for different workloads")]
    fn no_problem(extra: &str) {
        assert_eq!(analyze(extra), Vec::<String>::new());
    }
}
