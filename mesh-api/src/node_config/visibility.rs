//! Who may use what: Istio's `exportTo` on services and configuration, Sidecar egress
//! scoping, and host names as Istio resolves and matches them.

use std::collections::{BTreeMap, BTreeSet};

use super::ServiceConfig;
use crate::{
    istio::{networking::SidecarSpec, Resource},
    objects::{Meta, Object},
};

/// Istio's `exportTo`: `*` every namespace (the default when empty), `.` the object's own,
/// `~` none, or namespace names. Returns namespace names, with `*` for all.
pub(crate) fn export_to(values: &[&str], own_namespace: &str) -> BTreeSet<String> {
    if values.is_empty() {
        return ["*".to_string()].into();
    }
    values
        .iter()
        .filter(|v| !v.is_empty() && **v != "~")
        .map(|v| {
            if *v == "." {
                own_namespace.to_string()
            } else {
                v.to_string()
            }
        })
        .collect()
}

/// Whether a set from [`export_to`] includes `namespace`.
pub(crate) fn exported_to(set: &BTreeSet<String>, namespace: &str) -> bool {
    set.contains("*") || set.contains(namespace)
}

/// Istio's `ResolveShortnameToFQDN`: a name without a dot is a Kubernetes short name in
/// `namespace`; anything with a dot (`reviews.shop` included), `*` and IP addresses are
/// taken as written. (The analysis is more lenient and also accepts `name.namespace`.)
pub(crate) fn fqdn(host: &str, namespace: &str, cluster_domain: &str) -> String {
    if host == "*" || host.contains('.') || host.contains(':') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.{cluster_domain}")
    }
}

/// Istio's `host.Name.Matches`: names are equal, or a wildcard (`*.example.com`, `*`) on
/// either side covers the other as a suffix (so `*.example.com` matches `a.b.example.com`
/// and `*.b.example.com`).
pub(crate) fn host_matches(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => sa.ends_with(sb) || sb.ends_with(sa),
        (Some(sa), None) => b.ends_with(sa),
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

/// The Sidecars that scope what workloads reach
/// (<https://istio.io/latest/docs/reference/config/networking/sidecar/>): a namespace's
/// Sidecar without `workloadSelector`, else the one in the root namespace, else none (every
/// exported service). Sidecars with a `workloadSelector` are not applied: a per-namespace
/// set cannot express them, and [`super::diagnostics`] says so.
pub(crate) struct Sidecars<'a> {
    by_namespace: BTreeMap<&'a str, &'a Resource<SidecarSpec>>,
    root: Option<&'a Resource<SidecarSpec>>,
}

impl<'a> Sidecars<'a> {
    pub(crate) fn new(objects: &'a [Object], root_namespace: &str) -> Self {
        let mut by_namespace: BTreeMap<&str, &Resource<SidecarSpec>> = BTreeMap::new();
        let mut all: Vec<&Resource<SidecarSpec>> = objects
            .iter()
            .filter_map(|o| match o {
                Object::Sidecar(s) if s.spec.workload_selector.is_none() => Some(s),
                _ => None,
            })
            .collect();
        // Several namespace-wide Sidecars are an error Istio leaves undefined (the analysis
        // reports it); take the oldest, as Istio does for its other singletons.
        all.sort_by(|a, b| age(&a.meta).cmp(&age(&b.meta)));
        for s in all {
            by_namespace.entry(s.meta.namespace.as_str()).or_insert(s);
        }
        let root = by_namespace.get(root_namespace).copied();
        Self { by_namespace, root }
    }

    /// The Sidecar that applies to the workloads of `namespace`.
    pub(crate) fn for_namespace(&self, namespace: &str) -> Option<&'a Resource<SidecarSpec>> {
        self.by_namespace.get(namespace).copied().or(self.root)
    }

    /// Whether workloads of `client` may reach `host` (a service's or a VirtualService's)
    /// defined in namespace `owner`: some egress listener lists `namespace/dnsName` with
    /// namespace `*`, `.` (the client's own, also for the root namespace's default) or
    /// `owner`, and dnsName matching `host`. `~/` lists no namespace. Listener ports are not
    /// distinguished: a service any listener imports is visible on all its ports.
    pub(crate) fn admits(&self, client: &str, owner: &str, host: &str) -> bool {
        let Some(sidecar) = self.for_namespace(client) else {
            return true;
        };
        sidecar.spec.egress.iter().flat_map(|e| &e.hosts).any(|entry| {
            let Some((namespace, dns)) = entry.split_once('/') else {
                return false;
            };
            let namespace_ok = match namespace {
                "*" => true,
                "~" => false,
                "." => client == owner,
                ns => ns == owner,
            };
            namespace_ok && host_matches(dns, host)
        })
    }

    /// Whether any of `namespaces` is scoped by a Sidecar.
    pub(crate) fn any_applies(&self, namespaces: &BTreeSet<String>) -> bool {
        namespaces.iter().any(|n| self.for_namespace(n).is_some())
    }
}

/// Istio's order of age: oldest creationTimestamp, then name, then namespace; objects without
/// a timestamp (a YAML directory) after, in source order.
pub(crate) fn age(m: &Meta) -> (bool, Option<&str>, Option<(&str, &str)>, usize) {
    let tie = m
        .creation_timestamp
        .as_ref()
        .map(|_| (m.name.as_str(), m.namespace.as_str()));
    (
        m.creation_timestamp.is_none(),
        m.creation_timestamp.as_deref(),
        tie,
        m.order,
    )
}

/// Narrows each service's `visible_to` to what `exportTo` and the Sidecars allow, then keeps
/// only services some workload of this node (in `node_namespaces`) may use.
///
/// Without a Sidecar for any of the node's namespaces `visible_to` stays the export set
/// (`*` stays `*`). Otherwise it becomes the node's namespaces that may use the service:
/// "everyone but a Sidecar-scoped namespace" has no shorter form. `extra` adds hosts a
/// namespace reaches besides its Sidecar's (destinations of VirtualServices it imports,
/// which Istio adds to a Sidecar's scope), as `(namespace, hostname)`.
pub(crate) fn restrict(
    services: &mut Vec<ServiceConfig>,
    sidecars: &Sidecars,
    node_namespaces: &BTreeSet<String>,
    extra: &BTreeSet<(String, String)>,
) {
    let scoped = sidecars.any_applies(node_namespaces);
    services.retain_mut(|s| {
        let owner = s.name.split_once('/').map_or("", |(ns, _)| ns);
        let usable: BTreeSet<String> = node_namespaces
            .iter()
            .filter(|n| {
                exported_to(&s.visible_to, n)
                    && (sidecars.admits(n, owner, &s.hostname)
                        || extra.contains(&((*n).clone(), s.hostname.clone())))
            })
            .cloned()
            .collect();
        if scoped {
            s.visible_to = usable.clone();
        }
        !usable.is_empty()
    });
}

#[cfg(test)]
mod tests {
    use test_case::test_case;

    use super::*;
    use crate::node_config::services::tests::compile_n1;

    /// `name=visible_to` of every service shipped to node n1 (shop and books workloads).
    fn visible(extra: &str) -> Vec<String> {
        compile_n1(extra)
            .services
            .iter()
            .map(|s| {
                let to: Vec<&str> = s.visible_to.iter().map(String::as_str).collect();
                format!("{}={}", s.name, to.join(","))
            })
            .collect()
    }

    const ALL: [&str; 4] = [
        "billing/ledger=*",
        "books/catalog=*",
        "istio-system/istiod=*",
        "shop/reviews=*",
    ];

    fn svc(name: &str, export: &str) -> String {
        let meta = format!(
            "{{name: {name}, namespace: shop, annotations: {{networking.istio.io/exportTo: \"{export}\"}}}}"
        );
        format!("apiVersion: v1\nkind: Service\nmetadata: {meta}\nspec: {{clusterIP: 10.96.1.1, ports: [{{name: http, port: 80}}]}}\n")
    }

    fn entry(namespace: &str, host: &str, export: &str) -> String {
        let spec = format!("{{hosts: [\"{host}\"], addresses: [240.0.0.1], ports: [{{number: 80, name: http}}], resolution: NONE{export}}}");
        format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: se, namespace: {namespace}}}\nspec: {spec}\n")
    }

    fn sidecar(namespace: &str, hosts: &str) -> String {
        format!("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: {namespace}}}\nspec: {{egress: [{{hosts: [{hosts}]}}]}}\n")
    }

    #[test]
    fn without_sidecars_everything_exported_is_visible() {
        assert_eq!(visible(""), ALL);
    }

    // exportTo, one row per form of the reference, on a Service (annotation) and a
    // ServiceEntry (spec.exportTo): the row expected for the new object, or none when node
    // n1 (shop, books) must not get it.
    #[test_case(&svc("cart", "."), Some("shop/cart=shop") ; "service dot is its namespace")]
    #[test_case(&svc("cart", "*"), Some("shop/cart=*") ; "service star")]
    #[test_case(&svc("cart", "books, billing"), Some("shop/cart=billing,books") ; "service names")]
    #[test_case(&svc("cart", "~"), None ; "service tilde is nobody")]
    #[test_case(&svc("cart", "billing"), None ; "service only for namespaces without workloads here")]
    #[test_case(&entry("shop", "api.example.com", ""), Some("shop/se=*") ; "entry default everyone")]
    #[test_case(&entry("billing", "api.example.com", ", exportTo: [.]"), None ; "entry dot in another namespace")]
    #[test_case(&entry("books", "api.example.com", ", exportTo: [.]"), Some("books/se=books") ; "entry dot")]
    #[test_case(&entry("billing", "api.example.com", ", exportTo: [shop]"), Some("billing/se=shop") ; "entry names")]
    #[test_case(&entry("shop", "api.example.com", ", exportTo: [\"~\"]"), None ; "entry tilde")]
    fn export_to(extra: &str, expected: Option<&str>) {
        let found = visible(extra);
        let new: Vec<&str> = found
            .iter()
            .map(String::as_str)
            .filter(|r| !ALL.contains(r))
            .collect();
        assert_eq!(new, expected.into_iter().collect::<Vec<_>>(), "{found:?}");
    }

    // Sidecar egress: the namespace's own Sidecar, else the root namespace's.
    #[test_case(&sidecar("shop", "./*"),
        &["billing/ledger=books", "books/catalog=books", "istio-system/istiod=books", "shop/reviews=books,shop"]
        ; "own namespace only and books is unscoped")]
    #[test_case(&sidecar("istio-system", "./*, istio-system/*"),
        &["books/catalog=books", "istio-system/istiod=books,shop", "shop/reviews=shop"]
        ; "root default where dot is each workload's namespace")]
    #[test_case(&format!("{}---\n{}", sidecar("istio-system", "\"*/foo.example.com\""), entry("billing", "foo.example.com", "")),
        &["billing/se=books,shop"]
        ; "any namespace exact host")]
    #[test_case(&format!("{}---\n{}", sidecar("istio-system", "\"*/*.example.com\""), entry("billing", "a.b.example.com", "")),
        &["billing/se=books,shop"]
        ; "wildcard host is a suffix")]
    #[test_case(&sidecar("istio-system", "\"~/*\""), &[] ; "tilde imports nothing")]
    #[test_case(&format!("{}---\n{}", sidecar("istio-system", "\"~/*\""), sidecar("shop", "books/*")),
        &["books/catalog=shop"]
        ; "a namespace sidecar overrides the root default")]
    #[test_case(&sidecar("shop", "istio-system/istiod.istio-system.svc.cluster.local"),
        &["billing/ledger=books", "books/catalog=books", "istio-system/istiod=books,shop", "shop/reviews=books"]
        ; "exact fqdn in a named namespace")]
    #[test_case("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: web, namespace: shop}\nspec: {workloadSelector: {labels: {app: web}}, egress: [{hosts: [\"~/*\"]}]}\n",
        &ALL
        ; "workload specific sidecars are not applied")]
    fn sidecar_egress(extra: &str, expected: &[&str]) {
        assert_eq!(visible(extra), expected);
    }

    #[test]
    fn workload_specific_sidecars_are_reported() {
        let objects = crate::objects::parse_documents(
            std::path::Path::new("t.yaml"),
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: web, namespace: shop}\nspec: {workloadSelector: {labels: {app: web}}, egress: [{hosts: [\"./*\"]}]}\n",
        )
        .unwrap();
        let found: Vec<String> = crate::node_config::diagnostics(&objects, &Default::default())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with(
                "warning: Sidecar shop/web spec.workloadSelector: Trellis scopes egress per namespace"
            ),
            "{found:?}"
        );
    }

    #[test_case("reviews", "shop", "reviews.shop.svc.cluster.local" ; "short name")]
    #[test_case("reviews.shop", "books", "reviews.shop" ; "a dot means as written")]
    #[test_case("*", "shop", "*" ; "star")]
    #[test_case("*.example.com", "shop", "*.example.com" ; "wildcard")]
    fn short_names(host: &str, namespace: &str, expected: &str) {
        assert_eq!(fqdn(host, namespace, "cluster.local"), expected);
    }

    #[test_case("a.example.com", "a.example.com", true ; "equal")]
    #[test_case("*.example.com", "a.b.example.com", true ; "wildcard covers deeper names")]
    #[test_case("a.example.com", "*.example.com", true ; "either side")]
    #[test_case("*.example.com", "*.b.example.com", true ; "wildcards nest")]
    #[test_case("*", "anything.at.all", true ; "star")]
    #[test_case("*.example.com", "example.com", false ; "not the bare domain")]
    #[test_case("a.example.com", "b.example.com", false ; "different")]
    fn hosts_match(a: &str, b: &str, expected: bool) {
        assert_eq!(host_matches(a, b), expected);
    }
}
