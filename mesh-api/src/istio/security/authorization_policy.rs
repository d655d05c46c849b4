//! AuthorizationPolicy: which requests a workload allows, denies, audits or hands to an
//! external authorizer (<https://istio.io/latest/docs/reference/config/security/authorization-policy/>,
//! `security/v1beta1/authorization_policy.proto` in istio/api).
//!
//! `rules`, `from` and `to` are `Option<Vec>` because Istio tells an empty list from an absent
//! one (`from: []` is an error, `rules: []` differs from no rules); the string lists are plain
//! `Vec`s, where Istio treats empty and absent alike.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    check_attachment, check_ips, check_non_empty, check_ports, check_service_accounts, check_trust_domains,
    check_wildcards, PolicyTargetReference, WorkloadSelector,
};
use crate::istio::FieldError;

/// Configuration for access control on workloads. See more details at:
/// https://istio.io/docs/reference/config/security/authorization-policy.html
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// Workloads of this namespace (all namespaces from the root namespace) the policy applies
    /// to; all of them when unset. At most one of selector, targetRef and targetRefs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// A single resource the policy attaches to (hidden in Istio's docs; use targetRefs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Resources the policy attaches to: Gateway, GatewayClass, Service, ServiceEntry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// A request matches the policy when it matches any rule. No rules: an ALLOW policy
    /// allows nothing; `- {}` matches every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<Rule>>,
    /// What a match does; ALLOW when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// The external authorizer of a CUSTOM policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
}

impl AuthorizationPolicySpec {
    /// The action, ALLOW when unset.
    pub fn action(&self) -> Action {
        self.action.unwrap_or_default()
    }
}

/// Istio evaluates CUSTOM, then DENY, then ALLOW; AUDIT only marks requests for auditing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    /// Allow a request only if it matches the rules.
    #[default]
    Allow,
    /// Deny a request if it matches any of the rules.
    Deny,
    /// Audit a request if it matches any of the rules.
    Audit,
    /// Let an extension provider (`provider`) decide on requests that match the rules.
    Custom,
}

/// An extension provider defined in the mesh config (`extensionProviders`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtensionProvider {
    /// The name of the extension provider.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// A request matches a rule when it matches one `from`, one `to` and every `when`; an absent
/// field matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    /// Sources of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<RuleFrom>>,
    /// Operations of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<RuleTo>>,
    /// Further conditions on request attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// One entry of `from`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleFrom {
    /// Source specifies the source of a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// One entry of `to`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleTo {
    /// Operation specifies the operation of a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// Where a request comes from. Fields are ANDed; values of one field are ORed; `notX` fields
/// exclude. Values of principals, request principals, namespaces and trust domains match
/// exactly, by prefix (`abc*`), by suffix (`*abc`) or by presence (`*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Source {
    /// Peer identities from mTLS, `<trust-domain>/ns/<namespace>/sa/<service-account>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// Request identities from JWT, `<iss>/<sub>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    /// Namespaces of the peer identity (mTLS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// Service accounts, `name` or `namespace/name` (mTLS); not with principals or namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    /// Source IPs or CIDRs of the connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// Original client IPs or CIDRs (X-Forwarded-For, PROXY protocol).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
    /// Trust domains of the peer identity (mTLS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_trust_domains: Vec<String>,
}

/// What a request does. Fields are ANDed, values ORed; HTTP-only fields (hosts, methods, paths)
/// never match a TCP connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Operation {
    /// Hosts (`Host`/`:authority`), exact, prefix, suffix or presence match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Destination ports of the connection, as strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    /// HTTP methods (gRPC: always POST).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// Paths (gRPC: `/package.service/method`); exact, prefix, suffix, presence, or the
    /// `{*}`/`{**}` templates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// A condition on an Istio attribute
/// (<https://istio.io/latest/docs/reference/config/security/conditions/>).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Condition {
    /// The name of an Istio attribute.
    pub key: String,
    /// Values that match; at least one of values and notValues.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Values that do not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

impl Source {
    fn is_empty(&self) -> bool {
        self == &Source::default()
    }

    /// The fields that only exist with mTLS peer identities, which CUSTOM cannot use.
    fn identity_fields(&self) -> [(&'static str, &[String]); 10] {
        [
            ("principals", &self.principals),
            ("notPrincipals", &self.not_principals),
            ("requestPrincipals", &self.request_principals),
            ("notRequestPrincipals", &self.not_request_principals),
            ("namespaces", &self.namespaces),
            ("notNamespaces", &self.not_namespaces),
            ("serviceAccounts", &self.service_accounts),
            ("notServiceAccounts", &self.not_service_accounts),
            ("trustDomains", &self.trust_domains),
            ("notTrustDomains", &self.not_trust_domains),
        ]
    }

    fn check(&self, path: &str, errors: &mut Vec<FieldError>) {
        if self.is_empty() {
            errors.push(FieldError::new(
                path,
                "empty source: set at least one field, or remove the `from` entry to match any source",
            ));
            return;
        }
        let identity = !(self.principals.is_empty()
            && self.not_principals.is_empty()
            && self.namespaces.is_empty()
            && self.not_namespaces.is_empty());
        if identity && !(self.service_accounts.is_empty() && self.not_service_accounts.is_empty()) {
            errors.push(FieldError::new(
                format!("{path}.serviceAccounts"),
                "serviceAccounts cannot be combined with principals or namespaces: use one or the other",
            ));
        }
        let at = |field: &str| format!("{path}.{field}");
        for (field, values) in [
            ("principals", &self.principals),
            ("notPrincipals", &self.not_principals),
            ("requestPrincipals", &self.request_principals),
            ("notRequestPrincipals", &self.not_request_principals),
            ("namespaces", &self.namespaces),
            ("notNamespaces", &self.not_namespaces),
        ] {
            check_wildcards(&at(field), values, errors);
        }
        check_service_accounts(&at("serviceAccounts"), &self.service_accounts, errors);
        check_service_accounts(&at("notServiceAccounts"), &self.not_service_accounts, errors);
        check_trust_domains(&at("trustDomains"), &self.trust_domains, errors);
        check_trust_domains(&at("notTrustDomains"), &self.not_trust_domains, errors);
        for (field, values) in [
            ("ipBlocks", &self.ip_blocks),
            ("notIpBlocks", &self.not_ip_blocks),
            ("remoteIpBlocks", &self.remote_ip_blocks),
            ("notRemoteIpBlocks", &self.not_remote_ip_blocks),
        ] {
            check_non_empty(&at(field), values, errors);
            check_ips(&at(field), values, errors);
        }
    }
}

impl Operation {
    fn check(&self, path: &str, errors: &mut Vec<FieldError>) {
        if self == &Operation::default() {
            errors.push(FieldError::new(
                path,
                "empty operation: set at least one field, or remove the `to` entry to match any operation",
            ));
            return;
        }
        let at = |field: &str| format!("{path}.{field}");
        for (field, values) in [
            ("hosts", &self.hosts),
            ("notHosts", &self.not_hosts),
            ("methods", &self.methods),
            ("notMethods", &self.not_methods),
            ("paths", &self.paths),
            ("notPaths", &self.not_paths),
        ] {
            check_non_empty(&at(field), values, errors);
        }
        check_ports(&at("ports"), &self.ports, errors);
        check_ports(&at("notPorts"), &self.not_ports, errors);
        check_path_templates(&at("paths"), &self.paths, errors);
        check_path_templates(&at("notPaths"), &self.not_paths, errors);
    }
}

/// `{*}` matches one path segment, `{**}` the rest; a template path has only these and plain
/// literals (Istio's `CheckValidPathTemplate`).
fn check_path_templates(path: &str, values: &[String], errors: &mut Vec<FieldError>) {
    for (i, value) in values.iter().enumerate() {
        let templated = value.contains("{*}") || value.contains("{**}");
        let mut seen_any = false;
        let problem = value.trim_matches('/').split('/').find_map(|segment| {
            match segment {
                "{*}" | "{**}" if seen_any => return Some("`{**}` must be the last segment".to_string()),
                "{*}" => return None,
                "{**}" => {
                    seen_any = true;
                    return None;
                }
                _ => {}
            }
            if segment.contains(['{', '}']) {
                Some(format!(
                    "segment {segment:?}: only `{{*}}` and `{{**}}` are supported templates"
                ))
            } else if templated
                && !segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b))
            {
                Some(format!(
                    "segment {segment:?} has characters a path template does not allow"
                ))
            } else {
                None
            }
        });
        if let Some(p) = problem {
            errors.push(FieldError::new(format!("{path}[{i}]"), format!("{value:?}: {p}")));
        }
    }
}

/// The attributes a `when` key may name and how their values are checked (Istio's
/// `ValidateAttribute`; <https://istio.io/latest/docs/reference/config/security/conditions/>).
fn check_condition(path: &str, c: &Condition, errors: &mut Vec<FieldError>) {
    let key = c.key.as_str();
    if key.is_empty() {
        errors.push(FieldError::new(
            format!("{path}.key"),
            "name an attribute, e.g. `source.ip`",
        ));
        return;
    }
    if c.values.is_empty() && c.not_values.is_empty() {
        errors.push(FieldError::new(
            path,
            format!("{key}: set values or notValues (or both)"),
        ));
        return;
    }
    // `name[entry]`: for request headers and claims `name` is the attribute itself; for the
    // experimental Envoy filter attributes it is the filter's metadata namespace.
    let map_key = |name_len: Option<usize>| {
        let open = key.find('[');
        key.ends_with(']') && open.is_some_and(|o| o + 2 < key.len() && name_len.is_none_or(|n| n == o))
    };
    enum Check {
        Any,
        Ips,
        Ports,
        ServiceAccounts,
        Wildcards,
    }
    let check = match key {
        "source.ip" | "remote.ip" | "destination.ip" => Check::Ips,
        "destination.port" => Check::Ports,
        "source.serviceAccount" => Check::ServiceAccounts,
        "source.trustDomain" => Check::Wildcards,
        "source.namespace" | "source.principal" | "request.auth.principal" | "request.auth.audiences"
        | "request.auth.presenter" | "connection.sni" => Check::Any,
        _ if key.starts_with("request.headers")
            || key.starts_with("request.auth.claims")
            || key.starts_with("experimental.envoy.filters.") =>
        {
            let name = ["request.headers", "request.auth.claims"]
                .into_iter()
                .find(|n| key.starts_with(n));
            if !map_key(name.map(str::len)) {
                let example = name.unwrap_or("experimental.envoy.filters.<filter>");
                errors.push(FieldError::new(
                    format!("{path}.key"),
                    format!("{key:?}: name the entry in brackets, e.g. `{example}[name]`"),
                ));
                return;
            }
            Check::Any
        }
        "destination.namespace" => {
            return errors.push(FieldError::new(
                format!("{path}.key"),
                "destination.namespace is not supported: the policy's own namespace is the destination",
            ))
        }
        _ if key.starts_with("destination.labels") => {
            return errors.push(FieldError::new(
                format!("{path}.key"),
                "destination.labels is not supported: use spec.selector",
            ))
        }
        "destination.name" | "destination.user" => {
            return errors.push(FieldError::new(
                format!("{path}.key"),
                format!("{key} was only supported by the removed v1alpha1 API"),
            ))
        }
        _ => {
            return errors.push(FieldError::new(
                format!("{path}.key"),
                format!(
                    "unknown attribute {key:?}: see https://istio.io/latest/docs/reference/config/security/conditions/"
                ),
            ))
        }
    };
    for (field, values) in [("values", &c.values), ("notValues", &c.not_values)] {
        let at = format!("{path}.{field}");
        check_non_empty(&at, values, errors);
        match check {
            Check::Any => {}
            Check::Ips => check_ips(&at, values, errors),
            Check::Ports => check_ports(&at, values, errors),
            Check::ServiceAccounts => check_service_accounts(&at, values, errors),
            Check::Wildcards => check_wildcards(&at, values, errors),
        }
    }
}

impl AuthorizationPolicySpec {
    /// Istio's `ValidateAuthorizationPolicy`.
    pub fn field_errors(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_attachment(
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
            &mut errors,
        );
        let action = self.action();
        match (action, &self.provider, &self.rules) {
            (Action::Custom, _, None) => errors.push(FieldError::new(
                "spec.rules",
                "a CUSTOM policy without rules never applies: add `rules: [{}]` to send every request \
                 to the provider",
            )),
            (Action::Custom, None, Some(_)) => errors.push(FieldError::new(
                "spec.provider",
                "a CUSTOM policy needs provider.name (an extension provider of the mesh config)",
            )),
            (Action::Custom, Some(p), Some(_)) if p.name.is_empty() => errors.push(FieldError::new(
                "spec.provider.name",
                "name the extension provider (from the mesh config's extensionProviders)",
            )),
            (Action::Deny, _, None) => errors.push(FieldError::new(
                "spec.rules",
                "a DENY policy without rules never applies: add `rules: [{}]` to deny every request",
            )),
            _ => {}
        }
        if self.provider.is_some() && action != Action::Custom {
            errors.push(FieldError::new(
                "spec.provider",
                format!("provider is only used with action CUSTOM, not {action:?}: remove it or set action: CUSTOM"),
            ));
        }
        for (i, rule) in self.rules.iter().flatten().enumerate() {
            let path = format!("spec.rules[{i}]");
            match &rule.from {
                Some(from) if from.is_empty() => errors.push(FieldError::new(
                    format!("{path}.from"),
                    "empty list: remove `from` to match any source",
                )),
                _ => {}
            }
            for (j, from) in rule.from.iter().flatten().enumerate() {
                let at = format!("{path}.from[{j}].source");
                match &from.source {
                    None => errors.push(FieldError::new(at, "missing: give each `from` entry a `source`")),
                    Some(source) => {
                        source.check(&at, &mut errors);
                        if action == Action::Custom {
                            for (field, values) in source.identity_fields() {
                                if !values.is_empty() {
                                    errors.push(FieldError::new(
                                        format!("{at}.{field}"),
                                        format!("{field} is not supported with action CUSTOM"),
                                    ));
                                }
                            }
                        }
                    }
                }
            }
            match &rule.to {
                Some(to) if to.is_empty() => errors.push(FieldError::new(
                    format!("{path}.to"),
                    "empty list: remove `to` to match any operation",
                )),
                _ => {}
            }
            for (j, to) in rule.to.iter().flatten().enumerate() {
                let at = format!("{path}.to[{j}].operation");
                match &to.operation {
                    None => errors.push(FieldError::new(
                        at,
                        "missing: give each `to` entry an `operation`",
                    )),
                    Some(op) => op.check(&at, &mut errors),
                }
            }
            for (j, condition) in rule.when.iter().enumerate() {
                let at = format!("{path}.when[{j}]");
                check_condition(&at, condition, &mut errors);
                let key = condition.key.as_str();
                if action == Action::Custom
                    && (matches!(
                        key,
                        "source.namespace"
                            | "source.serviceAccount"
                            | "source.trustDomain"
                            | "source.principal"
                    ) || key.starts_with("request.auth."))
                {
                    errors.push(FieldError::new(
                        format!("{at}.key"),
                        format!("{key} is not supported with action CUSTOM"),
                    ));
                }
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn errors(spec: &str) -> Vec<String> {
        let spec: AuthorizationPolicySpec = serde_yaml_ng::from_str(spec).expect("parses");
        spec.field_errors().into_iter().map(|e| e.path).collect()
    }

    const OK: &[&str] = &[];

    // Actions and providers.
    #[test_case("{}" => OK; "allow nothing")]
    #[test_case("{rules: [{}]}" => OK; "allow all")]
    #[test_case("{action: DENY}" => ["spec.rules"]; "deny without rules")]
    #[test_case("{action: DENY, rules: [{}]}" => OK; "deny all")]
    #[test_case("{action: AUDIT, rules: [{to: [{operation: {methods: [GET]}}]}]}" => OK; "audit")]
    #[test_case("{action: CUSTOM, provider: {name: ext}}" => ["spec.rules"]; "custom without rules")]
    #[test_case("{action: CUSTOM, rules: [{}]}" => ["spec.provider"]; "custom without provider")]
    #[test_case("{action: CUSTOM, provider: {}, rules: [{}]}" => ["spec.provider.name"]; "custom with empty provider")]
    #[test_case("{action: CUSTOM, provider: {name: ext}, rules: [{}]}" => OK; "custom")]
    #[test_case("{action: DENY, provider: {name: ext}, rules: [{}]}" => ["spec.provider"]; "provider without custom")]
    #[test_case("{provider: {name: ext}}" => ["spec.provider"]; "provider with default action")]
    #[test_case("{action: CUSTOM, provider: {name: ext}, rules: [{from: [{source: {principals: [a]}}]}]}"
        => ["spec.rules[0].from[0].source.principals"]; "custom with principals")]
    #[test_case("{action: CUSTOM, provider: {name: ext}, rules: [{when: [{key: 'request.auth.claims[iss]', values: [a]}]}]}"
        => ["spec.rules[0].when[0].key"]; "custom with jwt claims")]
    #[test_case("{action: CUSTOM, provider: {name: ext}, rules: [{from: [{source: {ipBlocks: [10.0.0.0/8]}}]}]}"
        => OK; "custom with ip blocks")]
    // Attachment.
    #[test_case("{selector: {matchLabels: {app: a}}, targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: g}]}"
        => ["spec.targetRefs"]; "selector and targetRefs")]
    #[test_case("{targetRefs: [{kind: Service, group: '', name: s}]}" => OK; "target a service")]
    // from / source.
    #[test_case("{rules: [{from: []}]}" => ["spec.rules[0].from"]; "empty from")]
    #[test_case("{rules: [{from: [{}]}]}" => ["spec.rules[0].from[0].source"]; "from without source")]
    #[test_case("{rules: [{from: [{source: {}}]}]}" => ["spec.rules[0].from[0].source"]; "empty source")]
    #[test_case("{rules: [{from: [{source: {principals: ['']}}]}]}" => ["spec.rules[0].from[0].source.principals[0]"]; "empty principal")]
    #[test_case("{rules: [{from: [{source: {principals: ['cluster.local/ns/*/sa/x']}}]}]}" => ["spec.rules[0].from[0].source.principals[0]"]; "wildcard in the middle")]
    #[test_case("{rules: [{from: [{source: {namespaces: ['prod-*'], notNamespaces: ['*-test']}}]}]}" => OK; "namespace prefix and suffix")]
    #[test_case("{rules: [{from: [{source: {requestPrincipals: ['*']}}]}]}" => OK; "any request principal")]
    #[test_case("{rules: [{from: [{source: {ipBlocks: ['10.0.0.0/8', '1.2.3.4', '2001:db8::/32']}}]}]}" => OK; "ip blocks")]
    #[test_case("{rules: [{from: [{source: {ipBlocks: ['10.0.0.0/40']}}]}]}" => ["spec.rules[0].from[0].source.ipBlocks[0]"]; "bad cidr")]
    #[test_case("{rules: [{from: [{source: {notRemoteIpBlocks: ['localhost']}}]}]}" => ["spec.rules[0].from[0].source.notRemoteIpBlocks[0]"]; "name as ip")]
    #[test_case("{rules: [{from: [{source: {serviceAccounts: ['ns/sa'], principals: [x]}}]}]}" => ["spec.rules[0].from[0].source.serviceAccounts"]; "service accounts with principals")]
    #[test_case("{rules: [{from: [{source: {serviceAccounts: ['a/b/c']}}]}]}" => ["spec.rules[0].from[0].source.serviceAccounts[0]"]; "bad service account")]
    #[test_case("{rules: [{from: [{source: {trustDomains: ['td/x']}}]}]}" => ["spec.rules[0].from[0].source.trustDomains[0]"]; "trust domain with slash")]
    // to / operation.
    #[test_case("{rules: [{to: []}]}" => ["spec.rules[0].to"]; "empty to")]
    #[test_case("{rules: [{to: [{}]}]}" => ["spec.rules[0].to[0].operation"]; "to without operation")]
    #[test_case("{rules: [{to: [{operation: {}}]}]}" => ["spec.rules[0].to[0].operation"]; "empty operation")]
    #[test_case("{rules: [{to: [{operation: {ports: ['8080'], notPorts: ['9000']}}]}]}" => OK; "ports")]
    #[test_case("{rules: [{to: [{operation: {ports: ['http']}}]}]}" => ["spec.rules[0].to[0].operation.ports[0]"]; "named port")]
    #[test_case("{rules: [{to: [{operation: {notPorts: ['70000']}}]}]}" => ["spec.rules[0].to[0].operation.notPorts[0]"]; "port out of range")]
    #[test_case("{rules: [{to: [{operation: {ports: ['0']}}]}]}" => ["spec.rules[0].to[0].operation.ports[0]"]; "port zero")]
    #[test_case("{rules: [{to: [{operation: {methods: ['']}}]}]}" => ["spec.rules[0].to[0].operation.methods[0]"]; "empty method")]
    #[test_case("{rules: [{to: [{operation: {paths: ['/foo/{*}/bar/{**}']}}]}]}" => OK; "path template")]
    #[test_case("{rules: [{to: [{operation: {paths: ['/foo/{**}/bar']}}]}]}" => OK; "any segments then literal")]
    #[test_case("{rules: [{to: [{operation: {paths: ['/foo/{**}/{*}']}}]}]}" => ["spec.rules[0].to[0].operation.paths[0]"]; "template after match any")]
    #[test_case("{rules: [{to: [{operation: {notPaths: ['/foo/{id}']}}]}]}" => ["spec.rules[0].to[0].operation.notPaths[0]"]; "unsupported template")]
    // when / condition.
    #[test_case("{rules: [{when: [{key: 'request.headers[x-token]', values: [a]}]}]}" => OK; "header")]
    #[test_case("{rules: [{when: [{key: request.headers, values: [a]}]}]}" => ["spec.rules[0].when[0].key"]; "header without name")]
    #[test_case("{rules: [{when: [{key: 'request.auth.claims[iss]', notValues: [a]}]}]}" => OK; "claim")]
    #[test_case("{rules: [{when: [{key: 'request.auth.claims[]', values: [a]}]}]}" => ["spec.rules[0].when[0].key"]; "empty claim")]
    #[test_case("{rules: [{when: [{key: source.ip, values: [10.0.0.0/8]}]}]}" => OK; "source ip")]
    #[test_case("{rules: [{when: [{key: remote.ip, values: [nope]}]}]}" => ["spec.rules[0].when[0].values[0]"]; "bad remote ip")]
    #[test_case("{rules: [{when: [{key: destination.port, notValues: ['99999']}]}]}" => ["spec.rules[0].when[0].notValues[0]"]; "bad destination port")]
    #[test_case("{rules: [{when: [{key: destination.ip, values: [1.2.3.4]}, {key: connection.sni, values: [a.com]}]}]}" => OK; "destination ip and sni")]
    #[test_case("{rules: [{when: [{key: source.namespace, values: [a]}, {key: source.principal, values: [b]}]}]}" => OK; "source namespace and principal")]
    #[test_case("{rules: [{when: [{key: 'experimental.envoy.filters.network.mysql_proxy[db.table]', values: ['[update]']}]}]}" => OK; "experimental")]
    #[test_case("{rules: [{when: [{key: source.ip}]}]}" => ["spec.rules[0].when[0]"]; "no values")]
    #[test_case("{rules: [{when: [{key: source.ip, values: ['']}]}]}" => ["spec.rules[0].when[0].values[0]", "spec.rules[0].when[0].values[0]"]; "empty value")]
    #[test_case("{rules: [{when: [{key: request.size, values: ['1']}]}]}" => ["spec.rules[0].when[0].key"]; "unknown attribute")]
    #[test_case("{rules: [{when: [{key: 'destination.labels[app]', values: [a]}]}]}" => ["spec.rules[0].when[0].key"]; "destination labels")]
    #[test_case("{rules: [{when: [{key: destination.namespace, values: [a]}]}]}" => ["spec.rules[0].when[0].key"]; "destination namespace")]
    #[test_case("{rules: [{when: [{key: '', values: [a]}]}]}" => ["spec.rules[0].when[0].key"]; "empty key")]
    fn validation(spec: &str) -> Vec<String> {
        errors(spec)
    }

    #[test]
    fn messages_say_what_to_do() {
        let spec: AuthorizationPolicySpec = serde_yaml_ng::from_str("{action: DENY}").unwrap();
        assert!(spec.field_errors()[0].message.contains("add `rules: [{}]`"));
    }

    #[test]
    fn action_defaults_to_allow_and_round_trips_absent() {
        let spec: AuthorizationPolicySpec = serde_yaml_ng::from_str("{rules: [{}]}").unwrap();
        assert_eq!(spec.action(), Action::Allow);
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            serde_json::json!({"rules": [{}]})
        );
    }

    #[test]
    fn unknown_actions_and_fields_are_refused() {
        let e = serde_yaml_ng::from_str::<AuthorizationPolicySpec>("{action: allow}").unwrap_err();
        assert!(e.to_string().contains("unknown variant `allow`"), "{e}");
        let e = serde_yaml_ng::from_str::<AuthorizationPolicySpec>(
            "{rules: [{from: [{source: {principal: [a]}}]}]}",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `principal`"), "{e}");
    }
}
