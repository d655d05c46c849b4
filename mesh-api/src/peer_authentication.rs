//! PeerAuthentication (`security.istio.io` v1beta1 and v1): which traffic a workload accepts
//! in plaintext. Plain data plus one pure function, [`effective_mode`], used by the node to
//! enforce and by tests (and later `mesh-ctl explain`) to explain.
//!
//! Semantics follow the Istio reference
//! (<https://istio.io/latest/docs/reference/config/security/peer_authentication/>):
//! - scopes: mesh-wide (root namespace, no selector), namespace-wide (no selector), workload
//!   (selector); the most specific one that exists applies;
//! - several policies at one scope: the oldest wins (creationTimestamp, then name, then
//!   namespace; in a YAML directory without timestamps, the one that appears first);
//! - `UNSET` inherits from the parent scope; with nothing set anywhere the mode is PERMISSIVE;
//! - `portLevelMtls` (keyed by the workload's port) needs a selector and overrides the
//!   workload's mode for that port; an `UNSET` port entry inherits the workload's mode.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

pub use crate::istio::security::common::WorkloadSelector;
use crate::istio::{FieldError, Resource};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Mode {
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

impl Mode {
    /// Whether a plaintext (non-mTLS) connection is accepted.
    pub fn allows_plaintext(self) -> bool {
        !matches!(self, Mode::Strict)
    }
}

/// PeerAuthentication defines how traffic will be tunneled (or not) to the sidecar. See more
/// details at: https://istio.io/docs/reference/config/security/peer_authentication.html
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    /// Workloads of this namespace (all namespaces from the root namespace) the policy applies
    /// to; all of them when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Mutual TLS settings for the workload; inherited from the parent scope when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    /// Per-port mutual TLS settings, keyed by the workload's (not the Service's) port; only
    /// with a selector.
    #[serde(
        default,
        deserialize_with = "port_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub port_level_mtls: BTreeMap<u32, MutualTls>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MutualTls {
    /// The mTLS mode; UNSET inherits from the parent scope.
    #[serde(default)]
    pub mode: Mode,
}

/// Port keys arrive as YAML integers (`8080:`) or, from the Kubernetes API, strings.
fn port_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, MutualTls>, D::Error> {
    #[derive(Deserialize, PartialEq, Eq, PartialOrd, Ord)]
    #[serde(untagged)]
    enum Key {
        Int(u64),
        Str(String),
    }
    let raw = BTreeMap::<Key, MutualTls>::deserialize(d)?;
    if raw.is_empty() {
        // Istio: "port level mTLS, if defined, must have at least one element".
        return Err(serde::de::Error::custom(
            "portLevelMtls is empty: list at least one port or remove it",
        ));
    }
    raw.into_iter()
        .map(|(k, v)| {
            let port = match k {
                Key::Int(p) => u32::try_from(p).map_err(|_| format!("port {p} is out of range")),
                Key::Str(s) => s
                    .parse::<u32>()
                    .map_err(|_| format!("port key {s:?} is not a number")),
            };
            port.map(|p| (p, v)).map_err(serde::de::Error::custom)
        })
        .collect()
}

/// One PeerAuthentication object.
pub type PeerAuthentication = Resource<PeerAuthenticationSpec>;

impl PeerAuthenticationSpec {
    /// Istio's own validation rules for this kind.
    pub fn field_errors(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        // Istio counts a selector without labels as no selector here.
        let selects = self.selector.as_ref().is_some_and(|s| !s.match_labels.is_empty());
        if !self.port_level_mtls.is_empty() && !selects {
            errors.push(FieldError::new(
                "spec.portLevelMtls",
                "requires spec.selector with matchLabels (Istio applies port-level mTLS to selected workloads only)",
            ));
        }
        if let Some(p) = self.port_level_mtls.keys().find(|p| **p == 0 || **p > 65_535) {
            errors.push(FieldError::new(
                "spec.portLevelMtls",
                format!("port {p} must be in 1..=65535"),
            ));
        }
        if let Some(s) = &self.selector {
            s.check("spec.selector", &mut errors);
        }
        errors
    }
}

impl PeerAuthentication {
    /// Istio: oldest creationTimestamp, then name, then namespace. Policies without a
    /// timestamp (a YAML directory) sort after those with one, in source order.
    fn age_key(&self) -> (bool, Option<&str>, Option<(&str, &str)>, usize) {
        let m = &self.meta;
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

    fn reference(&self) -> String {
        self.meta.key()
    }
}

/// The decision for one (workload, port), with the policy that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Effective {
    /// Never `Unset`.
    pub mode: Mode,
    /// `namespace/name` of the deciding policy; `None` for the built-in PERMISSIVE default.
    pub policy: Option<String>,
    /// "port", "workload", "namespace", "mesh" or "default".
    pub scope: &'static str,
}

/// The workload being decided for.
pub struct Target<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub port: u16,
}

/// Every PeerAuthentication of the cluster, grouped by namespace and ordered oldest first,
/// so a decision looks at two short lists instead of the whole cluster (built once per
/// config change, consulted once per plaintext connection).
#[derive(Debug, Clone, Default)]
pub struct PeerAuthentications {
    by_namespace: std::collections::HashMap<String, Vec<PeerAuthentication>>,
}

/// Serialised as the plain list of policies (by namespace, oldest first).
impl Serialize for PeerAuthentications {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut namespaces: Vec<&String> = self.by_namespace.keys().collect();
        namespaces.sort();
        s.collect_seq(namespaces.into_iter().flat_map(|ns| &self.by_namespace[ns]))
    }
}

impl PeerAuthentications {
    pub fn new(policies: impl IntoIterator<Item = PeerAuthentication>) -> Self {
        let mut by_namespace: std::collections::HashMap<String, Vec<PeerAuthentication>> = Default::default();
        for p in policies {
            by_namespace.entry(p.meta.namespace.clone()).or_default().push(p);
        }
        for list in by_namespace.values_mut() {
            list.sort_by(|a, b| a.age_key().cmp(&b.age_key()));
        }
        Self { by_namespace }
    }

    pub fn len(&self) -> usize {
        self.by_namespace.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn namespace(&self, ns: &str) -> &[PeerAuthentication] {
        self.by_namespace.get(ns).map_or(&[], Vec::as_slice)
    }

    /// Which mode applies to `target`.
    pub fn effective(&self, root_namespace: &str, target: &Target<'_>) -> Effective {
        // Lists are oldest first, so the first match at a scope is the one that applies.
        let mesh = self
            .namespace(root_namespace)
            .iter()
            .find(|p| p.spec.selector.is_none());
        let local = self.namespace(target.namespace);
        let namespace = local.iter().find(|p| p.spec.selector.is_none());
        let workload = local
            .iter()
            .find(|p| p.spec.selector.as_ref().is_some_and(|s| s.matches(target.labels)));

        let mut effective = Effective {
            mode: Mode::Permissive,
            policy: None,
            scope: "default",
        };
        let mut apply = |policy: Option<&PeerAuthentication>, mode: Option<Mode>, scope: &'static str| {
            if let (Some(p), Some(m)) = (policy, mode) {
                if m != Mode::Unset {
                    effective = Effective {
                        mode: m,
                        policy: Some(p.reference()),
                        scope,
                    };
                }
            }
        };
        let mode_of = |p: Option<&PeerAuthentication>| p.and_then(|p| p.spec.mtls).map(|m| m.mode);
        apply(mesh, mode_of(mesh), "mesh");
        apply(namespace, mode_of(namespace), "namespace");
        apply(workload, mode_of(workload), "workload");
        let port_mode = workload
            .and_then(|w| w.spec.port_level_mtls.get(&u32::from(target.port)))
            .map(|m| m.mode);
        apply(workload, port_mode, "port");
        effective
    }
}

/// Which mode applies to `target`, given every PeerAuthentication in the cluster (builds the
/// index; hold a [`PeerAuthentications`] when deciding repeatedly).
pub fn effective_mode(
    policies: &[PeerAuthentication],
    root_namespace: &str,
    target: &Target<'_>,
) -> Effective {
    PeerAuthentications::new(policies.iter().cloned()).effective(root_namespace, target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    /// Builds a policy from a compact spec: `ns/name`, optional selector label, mode, ports.
    fn policy(
        reference: &str,
        selector: Option<(&str, &str)>,
        mode: Mode,
        ports: &[(u32, Mode)],
    ) -> PeerAuthentication {
        let (namespace, name) = reference.split_once('/').unwrap();
        PeerAuthentication {
            meta: crate::objects::Meta::named(namespace, name),
            spec: PeerAuthenticationSpec {
                selector: selector.map(|(k, v)| WorkloadSelector {
                    match_labels: [(k.to_string(), v.to_string())].into(),
                }),
                mtls: Some(MutualTls { mode }),
                port_level_mtls: ports.iter().map(|(p, m)| (*p, MutualTls { mode: *m })).collect(),
            },
        }
    }

    fn decide(policies: &[PeerAuthentication], port: u16) -> (Mode, Option<String>, &'static str) {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let e = effective_mode(
            policies,
            "istio-system",
            &Target {
                namespace: "shop",
                labels: &labels,
                port,
            },
        );
        (e.mode, e.policy, e.scope)
    }

    use Mode::*;

    #[test_case(vec![], 80 => (Permissive, None, "default"); "nothing set: permissive")]
    #[test_case(vec![policy("istio-system/mesh", None, Strict, &[])], 80
        => (Strict, Some("istio-system/mesh".into()), "mesh"); "mesh-wide strict")]
    #[test_case(vec![policy("other/ns", None, Strict, &[])], 80
        => (Permissive, None, "default"); "another namespace's policy does not apply")]
    #[test_case(vec![policy("istio-system/mesh", None, Strict, &[]), policy("shop/ns", None, Permissive, &[])], 80
        => (Permissive, Some("shop/ns".into()), "namespace"); "namespace overrides mesh")]
    #[test_case(vec![policy("istio-system/mesh", None, Strict, &[]), policy("shop/ns", None, Unset, &[])], 80
        => (Strict, Some("istio-system/mesh".into()), "mesh"); "namespace UNSET inherits mesh")]
    #[test_case(vec![policy("shop/ns", None, Strict, &[]), policy("shop/web", Some(("app", "web")), Disable, &[])], 80
        => (Disable, Some("shop/web".into()), "workload"); "workload overrides namespace")]
    #[test_case(vec![policy("shop/ns", None, Strict, &[]), policy("shop/db", Some(("app", "db")), Disable, &[])], 80
        => (Strict, Some("shop/ns".into()), "namespace"); "non-matching selector ignored")]
    #[test_case(vec![policy("shop/ns", None, Strict, &[]), policy("shop/web", Some(("app", "web")), Unset, &[])], 80
        => (Strict, Some("shop/ns".into()), "namespace"); "workload UNSET inherits namespace")]
    #[test_case(vec![policy("shop/web", Some(("app", "web")), Strict, &[(8080, Permissive)])], 8080
        => (Permissive, Some("shop/web".into()), "port"); "port-level overrides workload")]
    #[test_case(vec![policy("shop/web", Some(("app", "web")), Strict, &[(8080, Permissive)])], 9090
        => (Strict, Some("shop/web".into()), "workload"); "other ports keep the workload mode")]
    #[test_case(vec![policy("shop/ns", None, Strict, &[]), policy("shop/web", Some(("app", "web")), Unset, &[(8080, Unset)])], 8080
        => (Strict, Some("shop/ns".into()), "namespace"); "port UNSET inherits all the way up")]
    fn precedence(policies: Vec<PeerAuthentication>, port: u16) -> (Mode, Option<String>, &'static str) {
        decide(&policies, port)
    }

    #[test]
    fn the_oldest_policy_at_a_scope_wins() {
        let mut older = policy("shop/a", None, Strict, &[]);
        let mut newer = policy("shop/b", None, Disable, &[]);
        older.meta.creation_timestamp = Some("2024-01-01T00:00:00Z".into());
        newer.meta.creation_timestamp = Some("2025-01-01T00:00:00Z".into());
        assert_eq!(decide(&[newer.clone(), older.clone()], 80).0, Strict);
        // Without timestamps, source order decides.
        older.meta.creation_timestamp = None;
        newer.meta.creation_timestamp = None;
        newer.meta.order = 0;
        older.meta.order = 1;
        assert_eq!(decide(&[older, newer], 80).0, Disable);
    }

    #[test]
    fn validation_follows_istio() {
        let mut p = policy("shop/x", None, Strict, &[(8080, Disable)]);
        assert!(p.spec.field_errors()[0]
            .message
            .contains("requires spec.selector"));
        p.spec.selector = Some(WorkloadSelector::default());
        assert!(p.spec.field_errors()[0]
            .message
            .contains("requires spec.selector"));
        p.spec.selector = Some(WorkloadSelector {
            match_labels: [("app".to_string(), "web".to_string())].into(),
        });
        assert_eq!(p.spec.field_errors(), []);
        p.spec.port_level_mtls.insert(0, MutualTls { mode: Strict });
        assert!(p.spec.field_errors()[0].message.contains("1..=65535"));
    }

    #[test]
    fn parses_istio_reference_examples() {
        let yaml = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: foo
spec:
  selector:
    matchLabels:
      app: finance
  mtls:
    mode: STRICT
  portLevelMtls:
    8080:
      mode: DISABLE
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: PERMISSIVE
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: keyed-by-string, namespace: foo}
spec:
  selector: {matchLabels: {app: finance}}
  portLevelMtls: {"9090": {mode: STRICT}}
"#;
        let objs = crate::objects::parse_documents(std::path::Path::new("pa.yaml"), yaml).unwrap();
        let pas: Vec<&PeerAuthentication> = objs
            .iter()
            .filter_map(|o| match o {
                crate::objects::Object::PeerAuthentication(p) => Some(p),
                _ => None,
            })
            .collect();
        assert_eq!(pas.len(), 3);
        assert_eq!(pas[0].spec.port_level_mtls[&8080].mode, Disable);
        assert_eq!(pas[1].spec.mtls.unwrap().mode, Permissive);
        assert_eq!(pas[2].spec.port_level_mtls[&9090].mode, Strict);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_reported_with_their_path() {
        let parse = |spec: &str| {
            let yaml = format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: p, namespace: shop}}\nspec: {spec}\n");
            crate::objects::parse_documents(std::path::Path::new("pa.yaml"), &yaml)
                .unwrap_err()
                .to_string()
        };
        let e = parse("{mtls: {mode: STRCT}}");
        assert!(
            e.starts_with(
                "pa.yaml document 1 (PeerAuthentication p): spec.mtls.mode: unknown variant `STRCT`"
            ),
            "{e}"
        );
        let e = parse("{mtls: {mode: STRICT}, portLevelMTLS: {}}");
        assert!(
            e.contains("spec.portLevelMTLS: unknown field `portLevelMTLS`"),
            "{e}"
        );
        let e = parse("{portLevelMtls: {8080: {mode: STRICT}}}");
        assert!(e.contains("requires spec.selector"), "{e}");
    }
}
