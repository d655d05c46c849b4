//! Istio's request-routing and traffic-shifting tasks on Bookinfo, compiled end to end:
//! the sample objects as published (`fixtures/istio/valid`), applied in the order the task
//! pages apply them, compiled for the node that runs productpage.
//!
//! `fixtures/compile/bookinfo_routes.golden.json` is the routes section after the
//! "route jason to v2" step (`UPDATE_GOLDEN=1` rewrites it).

use std::path::{Path, PathBuf};

use mesh_api::{
    node_config::{compile, NodeConfig, Options, RouteConfig},
    objects::{parse_documents, Object},
};

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

fn read(path: &str) -> Vec<Object> {
    let file = fixture(path);
    let text = std::fs::read_to_string(&file).unwrap();
    parse_documents(&file, &text).unwrap()
}

/// `kind namespace/name`, what `kubectl apply` replaces by.
fn identity(o: &Object) -> String {
    let key = match o {
        Object::VirtualService(r) => r.key(),
        Object::DestinationRule(r) => r.key(),
        _ => format!("{o:?}"),
    };
    format!("{} {key}", o.kind())
}

/// The cluster after `kubectl apply -f` of each sample, in order.
fn apply(samples: &[&str]) -> NodeConfig {
    let mut objects = read("compile/bookinfo_cluster.yaml");
    for sample in samples {
        for o in read(&format!("istio/valid/{sample}.yaml")) {
            objects.retain(|old| identity(old) != identity(&o));
            objects.push(o);
        }
    }
    compile(&objects, "n1", &Options::default())
}

/// `host: [matches] -> subset{labels}*weight ...` per rule, for productpage's namespace.
fn table(routes: &[RouteConfig]) -> Vec<String> {
    routes
        .iter()
        .flat_map(|r| {
            assert_eq!(r.namespace, "default");
            r.http.iter().map(move |h| {
                let dests: Vec<String> = h
                    .destinations
                    .iter()
                    .map(|d| {
                        let labels = d
                            .subset_labels
                            .as_ref()
                            .map(|l| {
                                l.iter()
                                    .map(|(k, v)| format!("{k}={v}"))
                                    .collect::<Vec<_>>()
                                    .join(",")
                            })
                            .unwrap_or_default();
                        format!(
                            "{}/{}{{{labels}}}*{}",
                            d.host,
                            d.subset.as_deref().unwrap_or("-"),
                            d.weight
                        )
                    })
                    .collect();
                format!(
                    "{}: {} -> {}",
                    r.host,
                    serde_json::to_string(&h.matches).unwrap(),
                    dests.join(" ")
                )
            })
        })
        .collect()
}

const DR: &str = "destination_rule/bookinfo_destination_rule_all";
const ALL_V1: &str = "virtual_service/bookinfo_virtual_service_all_v1";

#[test]
fn every_service_routes_to_v1() {
    let config = apply(&[DR, ALL_V1]);
    assert_eq!(
        table(&config.routes),
        [
            "details.default.svc.cluster.local: [] -> details.default.svc.cluster.local/v1{version=v1}*100",
            "productpage.default.svc.cluster.local: [] -> productpage.default.svc.cluster.local/v1{version=v1}*100",
            "ratings.default.svc.cluster.local: [] -> ratings.default.svc.cluster.local/v1{version=v1}*100",
            "reviews.default.svc.cluster.local: [] -> reviews.default.svc.cluster.local/v1{version=v1}*100",
        ]
    );
    // The services n1's productpage uses, with the labels the subsets select.
    let reviews = config
        .services
        .iter()
        .find(|s| s.name == "default/reviews")
        .unwrap();
    let versions: Vec<&str> = reviews.ports[0]
        .endpoints
        .iter()
        .map(|e| e.labels["version"].as_str())
        .collect();
    assert_eq!(versions, ["v1", "v2", "v3"]);
}

#[test]
fn jason_goes_to_v2_and_everyone_else_to_v3() {
    let config = apply(&[
        DR,
        ALL_V1,
        "virtual_service/bookinfo_virtual_service_reviews_jason_v2_v3",
    ]);
    let reviews: Vec<String> = table(&config.routes)
        .into_iter()
        .filter(|r| r.starts_with("reviews."))
        .collect();
    assert_eq!(
        reviews,
        [
            r#"reviews.default.svc.cluster.local: [{"headers":{"end-user":{"exact":"jason"}}}] -> reviews.default.svc.cluster.local/v2{version=v2}*100"#,
            "reviews.default.svc.cluster.local: [] -> reviews.default.svc.cluster.local/v3{version=v3}*100",
        ]
    );

    let golden_path = fixture("compile/bookinfo_routes.golden.json");
    let golden = serde_json::to_string_pretty(&config.section("routes").unwrap()).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden_path, &golden).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&golden_path).unwrap(),
        golden,
        "{} differs (UPDATE_GOLDEN=1 to accept)",
        golden_path.display()
    );
}

#[test]
fn half_of_the_traffic_shifts_to_v3() {
    let config = apply(&[
        DR,
        ALL_V1,
        "virtual_service/bookinfo_virtual_service_reviews_50_v3",
    ]);
    let reviews: Vec<String> = table(&config.routes)
        .into_iter()
        .filter(|r| r.starts_with("reviews."))
        .collect();
    assert_eq!(
        reviews,
        ["reviews.default.svc.cluster.local: [] -> reviews.default.svc.cluster.local/v1{version=v1}*50 reviews.default.svc.cluster.local/v3{version=v3}*50"]
    );
}
