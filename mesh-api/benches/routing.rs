//! Route matching: one request against a host with 100 HTTP rules (prefix, header and regex
//! conditions), in a table of 10,000 hosts; the request takes the last rule, so every rule is
//! tried. `cargo bench -p mesh-api --bench routing`.

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, Criterion};
use mesh_api::{
    node_config::RouteConfig,
    routing::{Request, RouteTable},
};
use serde_json::json;

fn host(name: &str, rules: usize) -> RouteConfig {
    let http: Vec<serde_json::Value> = (0..rules)
        .map(|i| {
            let uri = if i % 10 == 0 {
                json!({"regex": format!("/svc-{i}/[a-z]+/[0-9]+")})
            } else {
                json!({"prefix": format!("/svc-{i}/")})
            };
            json!({
                "name": format!("r{i}"),
                "matches": [{"uri": uri, "headers": {"x-tenant": {"exact": format!("t-{i}")}}}],
                "destinations": [{"host": name, "subset": format!("v{i}"), "weight": 100}],
            })
        })
        .collect();
    serde_json::from_value(json!({
        "namespace": "shop",
        "host": name,
        "virtual_service": format!("shop/{name}"),
        "http": http,
    }))
    .unwrap()
}

fn matching(c: &mut Criterion) {
    let mut routes: Vec<RouteConfig> = (0..9_999)
        .map(|i| host(&format!("svc-{i}.shop.svc.cluster.local"), 3))
        .collect();
    routes.push(host("web.shop.svc.cluster.local", 100));
    let table = RouteTable::new(&routes).unwrap();
    let labels = BTreeMap::new();
    let headers = [
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("x-tenant", "t-99"),
    ];
    let request = Request {
        method: "GET",
        scheme: "http",
        authority: "web.shop:8080",
        path: "/svc-99/orders/42?expand=1",
        headers: &headers,
        port: 8080,
        source_namespace: "shop",
        source_labels: &labels,
    };
    let selected = table
        .select("shop", "web.shop.svc.cluster.local", &request)
        .expect("the last rule matches");
    assert_eq!(selected.index, 99);
    c.bench_function("route match, last of 100 rules, 10k hosts", |b| {
        b.iter(|| {
            std::hint::black_box(&table).select(
                "shop",
                std::hint::black_box("web.shop.svc.cluster.local"),
                std::hint::black_box(&request),
            )
        })
    });
}

criterion_group!(benches, matching);
criterion_main!(benches);
