//! Istio's match semantics, one condition at a time, then hosts and namespaces. Routes are
//! written as the node receives them (the JSON of the `routes` section).

use std::collections::BTreeMap;

use serde_json::json;
use test_case::test_case;

use super::*;

/// One host (`web.shop.svc.cluster.local` for clients in `shop`) with rules named
/// `r0`, `r1`, ... whose matches are given as JSON.
fn host(rules: &[serde_json::Value]) -> RouteConfig {
    host_named("shop", "web.shop.svc.cluster.local", rules)
}

fn host_named(namespace: &str, name: &str, rules: &[serde_json::Value]) -> RouteConfig {
    let http: Vec<serde_json::Value> = rules
        .iter()
        .enumerate()
        .map(|(i, matches)| {
            json!({
                "name": format!("r{i}"),
                "matches": matches,
                "destinations": [{"host": format!("{name}-{i}"), "weight": 100}],
            })
        })
        .collect();
    serde_json::from_value(json!({
        "namespace": namespace,
        "host": name,
        "virtual_service": format!("{namespace}/vs"),
        "http": http,
    }))
    .expect("a valid routes section")
}

struct Req {
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    port: u16,
    source_namespace: &'static str,
    source_labels: BTreeMap<String, String>,
}

impl Default for Req {
    fn default() -> Self {
        Self {
            method: "GET",
            path: "/",
            headers: Vec::new(),
            port: 8080,
            source_namespace: "shop",
            source_labels: [("app".to_string(), "client".to_string())].into(),
        }
    }
}

/// The name of the rule `req` takes on the host, if any.
fn route(config: RouteConfig, req: &Req) -> Option<String> {
    let table = RouteTable::new(&[config]).unwrap();
    let request = Request {
        method: req.method,
        scheme: "http",
        authority: "web.shop:8080",
        path: req.path,
        headers: &req.headers,
        port: req.port,
        source_namespace: req.source_namespace,
        source_labels: &req.source_labels,
    };
    table
        .select("shop", "web.shop.svc.cluster.local", &request)
        .map(|s| s.rule.name.clone().unwrap())
}

fn path(p: &'static str) -> Req {
    Req {
        path: p,
        ..Req::default()
    }
}

#[test]
fn the_first_rule_that_holds_wins_and_a_rule_without_matches_takes_everything() {
    let rules = [
        json!([{"uri": {"prefix": "/api"}}, {"uri": {"exact": "/admin"}}]),
        json!([{"uri": {"prefix": "/api/v2"}}]),
        json!([]),
    ];
    assert_eq!(route(host(&rules), &path("/api/v2/x")).as_deref(), Some("r0"));
    assert_eq!(
        route(host(&rules), &path("/admin")).as_deref(),
        Some("r0"),
        "any one match"
    );
    assert_eq!(route(host(&rules), &path("/other")).as_deref(), Some("r2"));
    assert_eq!(route(host(&rules[..2]), &path("/other")), None, "no rule holds");
}

#[test_case(json!({"exact": "/a"}), false, "/a?x=1", true ; "exact ignores the query")]
#[test_case(json!({"exact": "/a"}), false, "/a/", false ; "exact is exact")]
#[test_case(json!({"exact": "/a"}), false, "/A", false ; "exact is case sensitive")]
#[test_case(json!({"exact": "/a"}), true, "/A?q", true ; "exact ignoring case")]
#[test_case(json!({"prefix": "/api"}), false, "/apiary", true ; "prefix is a string prefix")]
#[test_case(json!({"prefix": "/api"}), false, "/ap", false ; "shorter than the prefix")]
#[test_case(json!({"prefix": "/api"}), true, "/API/x", true ; "prefix ignoring case")]
#[test_case(json!({"prefix": "/a?x"}), false, "/a?x=1", true ; "prefix sees the query")]
#[test_case(json!({"regex": "/users/[0-9]+"}), false, "/users/42?full=1", true ; "regex without the query")]
#[test_case(json!({"regex": "/users/[0-9]+"}), false, "/users/42/orders", false ; "regex matches the whole path")]
#[test_case(json!({"regex": "/users/[0-9]+"}), false, "/x/users/42", false ; "regex is anchored at the start")]
#[test_case(json!({"regex": "/users"}), true, "/USERS", false ; "ignoreUriCase does not apply to regex")]
fn uri(matcher: serde_json::Value, ignore_case: bool, p: &'static str, want: bool) {
    let rules = [json!([{"uri": matcher, "ignore_uri_case": ignore_case}])];
    assert_eq!(route(host(&rules), &path(p)).is_some(), want);
}

#[test]
fn method() {
    let rules = [json!([{"method": {"exact": "POST"}}])];
    let post = Req {
        method: "POST",
        ..Req::default()
    };
    assert!(route(host(&rules), &post).is_some());
    assert!(route(host(&rules), &Req::default()).is_none());
}

#[test_case(&[("X-User", "jason")], true ; "names are case insensitive")]
#[test_case(&[("x-user", "mike")], false ; "another value")]
#[test_case(&[], false ; "a missing header does not match")]
#[test_case(&[("x-user", "ja"), ("x-user", "son")], false ; "repeats are joined with commas")]
fn headers(headers: &[(&'static str, &'static str)], want: bool) {
    let rules = [json!([{"headers": {"x-user": {"exact": "jason"}}}])];
    let req = Req {
        headers: headers.to_vec(),
        ..Req::default()
    };
    assert_eq!(route(host(&rules), &req).is_some(), want);
}

#[test]
fn repeated_headers_match_as_one_joined_value() {
    let rules = [json!([{"headers": {"accept": {"exact": "text/html,application/json"}}}])];
    let req = Req {
        headers: vec![("accept", "text/html"), ("Accept", "application/json")],
        ..Req::default()
    };
    assert!(route(host(&rules), &req).is_some());
}

#[test_case(&[("x-canary", "true")], false ; "a matching header excludes")]
#[test_case(&[("x-canary", "false")], true ; "another value does not")]
#[test_case(&[], true ; "a missing header does not")]
fn without_headers(headers: &[(&'static str, &'static str)], want: bool) {
    let rules = [json!([{"without_headers": {"x-canary": {"exact": "true"}}}])];
    let req = Req {
        headers: headers.to_vec(),
        ..Req::default()
    };
    assert_eq!(route(host(&rules), &req).is_some(), want);
}

#[test_case("/?debug=1&x=2", true ; "exact value")]
#[test_case("/?x=2&debug=1&debug=2", true ; "the first value counts")]
#[test_case("/?debug=2&debug=1", false ; "a later value does not")]
#[test_case("/?debug", false ; "no equals sign is the empty value")]
#[test_case("/?nodebug=1", false ; "names are whole")]
#[test_case("/", false ; "missing")]
fn query_params(p: &'static str, want: bool) {
    let rules = [json!([{"query_params": {"debug": {"exact": "1"}}}])];
    assert_eq!(route(host(&rules), &path(p)).is_some(), want);
}

#[test]
fn an_empty_query_value_can_be_matched() {
    let rules = [json!([{"query_params": {"debug": {"regex": ".*"}}}])];
    assert!(route(host(&rules), &path("/?debug")).is_some());
    assert!(route(host(&rules), &path("/")).is_none());
}

#[test]
fn connection_conditions_port_source_namespace_and_labels() {
    let rules = [json!([{
        "port": 8080,
        "source_namespace": "shop",
        "source_labels": {"app": "client"},
    }])];
    assert!(route(host(&rules), &Req::default()).is_some());
    let other_port = Req {
        port: 9090,
        ..Req::default()
    };
    assert!(route(host(&rules), &other_port).is_none());
    let other_namespace = Req {
        source_namespace: "legacy",
        ..Req::default()
    };
    assert!(route(host(&rules), &other_namespace).is_none());
    let unlabelled = Req {
        source_labels: BTreeMap::new(),
        ..Req::default()
    };
    assert!(route(host(&rules), &unlabelled).is_none());
}

#[test]
fn every_condition_of_a_match_must_hold() {
    let rules = [json!([{
        "uri": {"prefix": "/api"},
        "method": {"exact": "GET"},
        "headers": {"x-user": {"prefix": "ja"}},
    }])];
    let all = Req {
        path: "/api/x",
        headers: vec![("x-user", "jason")],
        ..Req::default()
    };
    assert!(route(host(&rules), &all).is_some());
    let no_header = Req {
        path: "/api/x",
        ..Req::default()
    };
    assert!(route(host(&rules), &no_header).is_none());
}

#[test]
fn hosts_exact_then_the_longest_wildcard_per_client_namespace() {
    let routes = [
        host_named("shop", "web.shop.svc.cluster.local", &[json!([])]),
        host_named("shop", "*.svc.cluster.local", &[json!([])]),
        host_named("shop", "*.shop.svc.cluster.local", &[json!([])]),
        host_named("shop", "*", &[json!([])]),
        host_named("legacy", "web.shop.svc.cluster.local", &[json!([])]),
    ];
    let table = RouteTable::new(&routes).unwrap();
    let labels = BTreeMap::new();
    let request = Request {
        method: "GET",
        scheme: "http",
        authority: "x",
        path: "/",
        headers: &[],
        port: 80,
        source_namespace: "shop",
        source_labels: &labels,
    };
    let host_for = |namespace: &str, host: &str| {
        table
            .select(namespace, host, &request)
            .map(|s| s.routes.host.clone())
    };
    assert_eq!(
        host_for("shop", "web.shop.svc.cluster.local").as_deref(),
        Some("web.shop.svc.cluster.local")
    );
    assert_eq!(
        host_for("shop", "db.shop.svc.cluster.local").as_deref(),
        Some("*.shop.svc.cluster.local")
    );
    assert_eq!(
        host_for("shop", "db.other.svc.cluster.local").as_deref(),
        Some("*.svc.cluster.local")
    );
    assert_eq!(host_for("shop", "example.com").as_deref(), Some("*"));
    assert_eq!(
        host_for("legacy", "web.shop.svc.cluster.local").as_deref(),
        Some("web.shop.svc.cluster.local")
    );
    assert_eq!(host_for("legacy", "db.shop.svc.cluster.local"), None);
    assert_eq!(host_for("payments", "web.shop.svc.cluster.local"), None);
}

#[test]
fn a_regex_that_does_not_compile_refuses_the_table_and_says_where() {
    let rules = [
        json!([]),
        json!([{"uri": {"prefix": "/"}}, {"headers": {"X-Id": {"regex": "([a-z]"}}}]),
    ];
    let err = RouteTable::new(&[host(&rules)]).unwrap_err();
    assert_eq!(err.field, "http[1].match[1].headers.X-Id");
    let text = err.to_string();
    assert!(
        text.starts_with("VirtualService shop/vs, host web.shop.svc.cluster.local, http[1].match[1].headers.X-Id: regex \"([a-z]\""),
        "{text}"
    );
}
