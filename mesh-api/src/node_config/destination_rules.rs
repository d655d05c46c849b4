//! DestinationRule subsets as a client namespace sees them, on Istio's lookup path
//! (<https://istio.io/latest/docs/ops/best-practices/traffic-management/#cross-namespace-configuration>).

use std::collections::{BTreeMap, BTreeSet};

use super::{
    visibility::{age, export_to, exported_to, fqdn},
    Options,
};
use crate::{
    istio::{networking::DestinationRuleSpec, Resource},
    objects::Object,
};

/// DestinationRules by namespace, with the subsets of each host merged oldest first (Istio
/// merges rules of one host and namespace; a subset defined twice keeps the first).
pub(super) struct DestinationRules {
    root_namespace: String,
    /// namespace -> host -> (export set, subsets)
    by_namespace: BTreeMap<String, BTreeMap<String, Rule>>,
    /// The namespace each service host is defined in.
    service_namespace: BTreeMap<String, String>,
}

#[derive(Default)]
struct Rule {
    exported: BTreeSet<String>,
    subsets: BTreeMap<String, BTreeMap<String, String>>,
}

impl DestinationRules {
    pub(super) fn new(objects: &[Object], options: &Options) -> Self {
        let mut rules: Vec<&Resource<DestinationRuleSpec>> = objects
            .iter()
            .filter_map(|o| match o {
                // Rules for selected workloads only cannot be shared by a namespace; the
                // analysis lists workloadSelector as not enforced.
                Object::DestinationRule(r) if r.spec.workload_selector.is_none() => Some(r),
                _ => None,
            })
            .collect();
        rules.sort_by(|a, b| age(&a.meta).cmp(&age(&b.meta)));
        let mut by_namespace: BTreeMap<String, BTreeMap<String, Rule>> = BTreeMap::new();
        for r in rules {
            let ns = &r.meta.namespace;
            let host = fqdn(&r.spec.host, ns, &options.cluster_domain);
            let rule = by_namespace
                .entry(ns.clone())
                .or_default()
                .entry(host)
                .or_default();
            let export: Vec<&str> = r.spec.export_to.iter().map(String::as_str).collect();
            rule.exported.extend(export_to(&export, ns));
            for subset in &r.spec.subsets {
                rule.subsets
                    .entry(subset.name.clone())
                    .or_insert_with(|| subset.labels.clone());
            }
        }
        let mut service_namespace = BTreeMap::new();
        for o in objects {
            match o {
                Object::Service(s) => {
                    let host = format!(
                        "{}.{}.svc.{}",
                        s.meta.name, s.meta.namespace, options.cluster_domain
                    );
                    service_namespace.entry(host).or_insert(s.meta.namespace.clone());
                }
                Object::ServiceEntry(e) => {
                    for h in &e.spec.hosts {
                        service_namespace
                            .entry(h.clone())
                            .or_insert(e.meta.namespace.clone());
                    }
                }
                _ => {}
            }
        }
        Self {
            root_namespace: options.root_namespace.clone(),
            by_namespace,
            service_namespace,
        }
    }

    /// The labels of `subset` of `host` for clients in `client`: the rule of the client's
    /// namespace (exported or not), else the service namespace's, else the root
    /// namespace's, if exported to the client.
    pub(super) fn subset(&self, client: &str, host: &str, subset: &str) -> Option<BTreeMap<String, String>> {
        let mut path = vec![(client, false)];
        if let Some(ns) = self.service_namespace.get(host) {
            path.push((ns.as_str(), true));
        }
        path.push((self.root_namespace.as_str(), true));
        for (namespace, needs_export) in path {
            let Some(rule) = self.most_specific(namespace, host) else {
                continue;
            };
            if needs_export && namespace != client && !exported_to(&rule.exported, client) {
                continue;
            }
            // The first rule on the path decides, whether or not it defines the subset.
            return rule.subsets.get(subset).cloned();
        }
        None
    }

    /// Istio's `MostSpecificHostMatch`: the exact host, else the longest wildcard covering it.
    fn most_specific(&self, namespace: &str, host: &str) -> Option<&Rule> {
        let rules = self.by_namespace.get(namespace)?;
        if let Some(rule) = rules.get(host) {
            return Some(rule);
        }
        rules
            .iter()
            .filter(|(h, _)| h.strip_prefix('*').is_some_and(|suffix| host.ends_with(suffix)))
            .max_by_key(|(h, _)| h.len())
            .map(|(_, r)| r)
    }
}
