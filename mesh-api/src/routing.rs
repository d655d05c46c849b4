//! Which route an HTTP request takes: Istio's `HTTPMatchRequest` semantics
//! (<https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMatchRequest>)
//! over the compiled `routes` section, as pure functions. Regexes are compiled once, when a
//! table is built, never per request.
//!
//! As Envoy evaluates what Istio generates:
//! - a host's rules are tried in order and the first that holds wins; a rule without matches
//!   takes every request; a rule holds when any one of its matches does, and a match holds
//!   when every condition it sets does;
//! - `uri`: `exact` and `regex` see the path without the query string, `prefix` sees the path
//!   as sent; `ignoreUriCase` makes `exact` and `prefix` ASCII case-insensitive (Envoy ignores
//!   it for regexes, so do we);
//! - regexes (RE2 syntax) must match the whole value;
//! - header names are case-insensitive, and a header sent several times is matched as its
//!   values joined with `,` (Envoy's rule); a missing header does not match;
//! - `withoutHeaders`: the match fails when any of those headers matches (a missing one does
//!   not);
//! - `queryParams`: the parameter's first value as sent (not percent-decoded); `?flag`
//!   without `=` has the empty value; a missing parameter does not match;
//! - `port`, `sourceLabels` and `sourceNamespace` are about the connection: its destination
//!   port and the calling workload.
//!
//! Hosts: the routes for the client's namespace and the destination host; a host without
//! routes of its own takes those of the most specific wildcard (`*.example.com`, then `*`).
//!
//! The node's proxy does not parse HTTP yet: nothing outside tests and the benchmark calls
//! this so far.

use std::collections::{BTreeMap, HashMap};

use regex::Regex;

use crate::node_config::{HttpMatch, HttpRouteConfig, RouteConfig, StringMatcher};

/// What routing looks at in a request and its connection.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    /// The Host header (HTTP/1) or `:authority` (HTTP/2), as sent.
    pub authority: &'a str,
    /// The request target's path and query, as sent (`/a/b?x=1`).
    pub path: &'a str,
    /// Header names and values, in the order received.
    pub headers: &'a [(&'a str, &'a str)],
    /// The destination port of the connection.
    pub port: u16,
    pub source_namespace: &'a str,
    pub source_labels: &'a BTreeMap<String, String>,
}

/// The route a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selected<'t> {
    pub routes: &'t RouteConfig,
    /// Index of the rule in `routes.http`.
    pub index: usize,
    pub rule: &'t HttpRouteConfig,
}

/// A regex of the routes section that does not compile (validation refuses those, so this
/// means the section was produced by something else).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("VirtualService {virtual_service}, host {host}, {field}: {message}")]
pub struct BuildError {
    pub virtual_service: String,
    pub host: String,
    /// Where in the host's rules, e.g. `http[2].match[0].headers.x-user`.
    pub field: String,
    pub message: String,
}

/// The routes of every (client namespace, host), ready to match.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_namespace: HashMap<String, Hosts>,
}

#[derive(Debug, Default)]
struct Hosts {
    exact: HashMap<String, HostRoutes>,
    /// Wildcard hosts by their suffix (`.example.com`; empty for `*`), longest first.
    wildcards: Vec<(String, HostRoutes)>,
}

#[derive(Debug)]
struct HostRoutes {
    config: RouteConfig,
    /// One per rule of `config.http`, in order.
    rules: Vec<Vec<Match>>,
}

/// An `HttpMatch` with its regexes compiled and its header names lower-cased.
#[derive(Debug)]
struct Match {
    uri: Option<Matcher>,
    ignore_uri_case: bool,
    scheme: Option<Matcher>,
    method: Option<Matcher>,
    authority: Option<Matcher>,
    headers: Vec<(String, Matcher)>,
    without_headers: Vec<(String, Matcher)>,
    query_params: Vec<(String, Matcher)>,
    port: Option<u16>,
    source_labels: BTreeMap<String, String>,
    source_namespace: Option<String>,
}

#[derive(Debug)]
enum Matcher {
    Exact(String),
    Prefix(String),
    /// Anchored at both ends.
    Regex(Regex),
}

impl RouteTable {
    /// Compiles a `routes` section. Refused whole if any regex does not compile.
    pub fn new(routes: &[RouteConfig]) -> Result<Self, BuildError> {
        let mut table = Self::default();
        for config in routes {
            let compiled = HostRoutes::new(config)?;
            let hosts = table.by_namespace.entry(config.namespace.clone()).or_default();
            match config.host.strip_prefix('*') {
                Some(suffix) => hosts.wildcards.push((suffix.to_string(), compiled)),
                None => {
                    hosts.exact.insert(config.host.clone(), compiled);
                }
            }
        }
        for hosts in table.by_namespace.values_mut() {
            hosts
                .wildcards
                .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        }
        Ok(table)
    }

    /// The route of `request` from a client in `namespace` to `host` (fully qualified), if
    /// any VirtualService routes it.
    pub fn select<'t>(&'t self, namespace: &str, host: &str, request: &Request<'_>) -> Option<Selected<'t>> {
        let hosts = self.by_namespace.get(namespace)?;
        let routes = hosts.exact.get(host).or_else(|| {
            hosts
                .wildcards
                .iter()
                .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
                .map(|(_, r)| r)
        })?;
        routes.select(request)
    }
}

impl HostRoutes {
    fn new(config: &RouteConfig) -> Result<Self, BuildError> {
        let error = |field: String, message: String| BuildError {
            virtual_service: config.virtual_service.clone(),
            host: config.host.clone(),
            field,
            message,
        };
        let rules = config
            .http
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                rule.matches
                    .iter()
                    .enumerate()
                    .map(|(j, m)| {
                        Match::new(m).map_err(|(field, message)| {
                            error(format!("http[{i}].match[{j}].{field}"), message)
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            config: config.clone(),
            rules,
        })
    }

    fn select(&self, request: &Request<'_>) -> Option<Selected<'_>> {
        let parts = Parts::of(request);
        self.rules
            .iter()
            .position(|matches| matches.is_empty() || matches.iter().any(|m| m.holds(request, &parts)))
            .map(|index| Selected {
                routes: &self.config,
                index,
                rule: &self.config.http[index],
            })
    }
}

/// The request split once for every rule: path without query, and the query.
struct Parts<'a> {
    path_only: &'a str,
    query: &'a str,
}

impl<'a> Parts<'a> {
    fn of(request: &Request<'a>) -> Self {
        let (path_only, query) = request.path.split_once('?').unwrap_or((request.path, ""));
        Self { path_only, query }
    }
}

impl Match {
    /// Compiles one match; an error is (field, message).
    fn new(m: &HttpMatch) -> Result<Self, (String, String)> {
        let one = |field: &str, s: &Option<StringMatcher>| {
            s.as_ref()
                .map(|s| Matcher::new(s).map_err(|e| (field.to_string(), e)))
                .transpose()
        };
        let named = |field: &str, map: &BTreeMap<String, StringMatcher>, lower: bool| {
            map.iter()
                .map(|(name, s)| {
                    let key = if lower {
                        name.to_ascii_lowercase()
                    } else {
                        name.clone()
                    };
                    Matcher::new(s)
                        .map(|m| (key, m))
                        .map_err(|e| (format!("{field}.{name}"), e))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            uri: one("uri", &m.uri)?,
            ignore_uri_case: m.ignore_uri_case,
            scheme: one("scheme", &m.scheme)?,
            method: one("method", &m.method)?,
            authority: one("authority", &m.authority)?,
            headers: named("headers", &m.headers, true)?,
            without_headers: named("withoutHeaders", &m.without_headers, true)?,
            query_params: named("queryParams", &m.query_params, false)?,
            port: m.port,
            source_labels: m.source_labels.clone(),
            source_namespace: m.source_namespace.clone(),
        })
    }

    fn holds(&self, request: &Request<'_>, parts: &Parts<'_>) -> bool {
        let connection = self.port.is_none_or(|p| p == request.port)
            && self
                .source_namespace
                .as_deref()
                .is_none_or(|ns| ns == request.source_namespace)
            && self
                .source_labels
                .iter()
                .all(|(k, v)| request.source_labels.get(k) == Some(v));
        connection
            && self.uri.as_ref().is_none_or(|m| match m {
                Matcher::Prefix(_) => m.matches(request.path, self.ignore_uri_case),
                Matcher::Exact(_) => m.matches(parts.path_only, self.ignore_uri_case),
                Matcher::Regex(_) => m.matches(parts.path_only, false),
            })
            && self
                .method
                .as_ref()
                .is_none_or(|m| m.matches(request.method, false))
            && self
                .scheme
                .as_ref()
                .is_none_or(|m| m.matches(request.scheme, false))
            && self
                .authority
                .as_ref()
                .is_none_or(|m| m.matches(request.authority, false))
            && self
                .headers
                .iter()
                .all(|(name, m)| header(request, name).is_some_and(|v| m.matches(&v, false)))
            && !self
                .without_headers
                .iter()
                .any(|(name, m)| header(request, name).is_some_and(|v| m.matches(&v, false)))
            && self
                .query_params
                .iter()
                .all(|(name, m)| query_param(parts.query, name).is_some_and(|v| m.matches(v, false)))
    }
}

impl Matcher {
    fn new(s: &StringMatcher) -> Result<Self, String> {
        Ok(match s {
            StringMatcher::Exact(v) => Self::Exact(v.clone()),
            StringMatcher::Prefix(v) => Self::Prefix(v.clone()),
            StringMatcher::Regex(re) => {
                Self::Regex(Regex::new(&format!("^(?:{re})$")).map_err(|e| format!("regex {re:?}: {e}"))?)
            }
        })
    }

    fn matches(&self, value: &str, ignore_case: bool) -> bool {
        match self {
            Self::Exact(e) if ignore_case => value.eq_ignore_ascii_case(e),
            Self::Exact(e) => value == e,
            Self::Prefix(p) if ignore_case => value
                .as_bytes()
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes())),
            Self::Prefix(p) => value.starts_with(p.as_str()),
            Self::Regex(re) => re.is_match(value),
        }
    }
}

/// A header's value, its repeats joined with `,`; names compare case-insensitively.
fn header<'a>(request: &Request<'a>, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    let mut values = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v);
    let first = values.next()?;
    match values.next() {
        None => Some(std::borrow::Cow::Borrowed(first)),
        Some(second) => {
            let mut joined = format!("{first},{second}");
            for v in values {
                joined.push(',');
                joined.push_str(v);
            }
            Some(std::borrow::Cow::Owned(joined))
        }
    }
}

/// The first value of a query parameter, as sent.
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests;
