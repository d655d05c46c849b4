//! The Kubernetes source against recorded API server responses.
//!
//! No cluster here: an in-process fake API server (`support/fake_api.rs`) answers kube-rs with
//! the files under `tests/recordings/` — List objects for lists (`cluster/<plural>.json`), and
//! for watches a stream the test feeds with newline-delimited watch events (`watch/*.jsonl`)
//! and closes when it wants the connection dropped. The recordings are written in the API
//! server's format: list items without apiVersion/kind for core kinds,
//! `metadata.resourceVersion` on lists, BOOKMARK events, and the `410 Gone` ERROR event ("too
//! old resource version") that forces a relist. Status writes (`PATCH …/<name>/status`) are
//! answered 200 and their bodies kept, so the tests can read what the controller wrote and
//! feed it back as a `MODIFIED` event, as the API server would.

#[path = "support/fake_api.rs"]
mod fake_api;

use std::{sync::Arc, time::Duration};

use fake_api::{
    recording, FakeApiServer, Seen, PEER_AUTHENTICATIONS, PODS, REQUEST_AUTHENTICATIONS, RESOURCES, WAIT,
};
use mesh_api::{istio::Resource, objects::Object, peer_authentication::Mode};
use mesh_controller::{
    source::{kubernetes, Problem, Snapshot, Snapshots},
    status_writer,
};
use serde_json::{json, Value};
use tokio::{net::TcpListener, time::timeout};

fn key(object: &Object) -> String {
    fn istio<S>(r: &Resource<S>) -> String {
        r.key()
    }
    match object {
        Object::Namespace(n) => n.name.clone(),
        Object::Node(n) => n.name.clone(),
        Object::Pod(p) => format!("{}/{}", p.namespace, p.name),
        Object::Service(s) => s.meta.key(),
        Object::EndpointSlice(s) => s.meta.key(),
        Object::ServiceAccount(s) => s.meta.key(),
        Object::VirtualService(r) => istio(r),
        Object::DestinationRule(r) => istio(r),
        Object::ServiceEntry(r) => istio(r),
        Object::Gateway(r) => istio(r),
        Object::Sidecar(r) => istio(r),
        Object::PeerAuthentication(r) => istio(r),
        Object::RequestAuthentication(r) => istio(r),
        Object::AuthorizationPolicy(r) => istio(r),
        Object::Other { name, .. } => name.clone(),
    }
}

/// `Kind namespace/name` of every object, in snapshot order.
fn summary(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .objects
        .iter()
        .map(|o| format!("{} {}", o.kind(), key(o)))
        .collect()
}

fn names(snapshot: &Snapshot, kind: &str) -> Vec<String> {
    snapshot
        .objects
        .iter()
        .filter(|o| o.kind() == kind)
        .map(key)
        .collect()
}

fn pod<'a>(snapshot: &'a Snapshot, name: &str) -> &'a mesh_api::objects::Pod {
    snapshot
        .objects
        .iter()
        .find_map(|o| match o {
            Object::Pod(p) if p.name == name => Some(p),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no pod {name} in {:?}", summary(snapshot)))
}

/// The first snapshot from now on for which `done` holds.
async fn until(rx: &mut Snapshots, what: &str, done: impl Fn(&Snapshot) -> bool) -> Arc<Snapshot> {
    let found = timeout(WAIT, async {
        loop {
            let snapshot = rx.borrow_and_update().clone();
            if done(&snapshot) {
                return snapshot;
            }
            rx.changed().await.expect("the source stopped");
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        let last = rx.borrow();
        panic!(
            "timed out waiting for {what}; last snapshot (revision {}): {:?}, problems {:?}",
            last.revision,
            summary(&last),
            last.problems
        )
    })
}

async fn start(fake: &FakeApiServer) -> Snapshots {
    timeout(WAIT, kubernetes::watch(fake.client()))
        .await
        .expect("the first snapshot took too long")
        .expect("the source started")
}

#[tokio::test]
async fn the_initial_lists_become_one_snapshot_of_every_kind_in_a_stable_order() {
    let fake = FakeApiServer::start().await;
    let rx = start(&fake).await;
    let snapshot = rx.borrow().clone();

    assert_eq!(snapshot.revision, 1);
    assert_eq!(snapshot.problems, []);
    assert_eq!(
        summary(&snapshot),
        [
            "Namespace default",
            "Namespace shop",
            "Node n1",
            "Node n2",
            "ServiceAccount shop/default",
            "ServiceAccount shop/bookinfo-reviews",
            // Oldest first, whatever the order of the list.
            "Pod shop/reviews-v1-7d9f8-fghij",
            "Pod shop/reviews-v1-7d9f8-abcde",
            "Pod shop/ratings-v1-5c6d7-klmno",
            "Service shop/reviews",
            "EndpointSlice shop/reviews-x7k2p",
            "VirtualService shop/reviews",
            "DestinationRule shop/reviews",
            "PeerAuthentication istio-system/default",
            "PeerAuthentication shop/reviews-permissive",
            "AuthorizationPolicy shop/reviews-from-productpage",
        ]
    );

    // The objects went through parse_object: typed, with their position as `order`.
    let reviews = pod(&snapshot, "reviews-v1-7d9f8-abcde");
    assert_eq!(reviews.service_account, "bookinfo-reviews");
    assert_eq!(reviews.node_name.as_deref(), Some("n1"));
    assert_eq!(reviews.ip, Some("10.244.1.5".parse().unwrap()));
    assert_eq!(
        reviews.uid.as_deref(),
        Some("6b1f0c2e-1741-4a55-9c1e-429715659400")
    );
    // A pod's owner wrote a path for the node to open (the host's own namespace): in a
    // cluster the annotation never reaches the compiler, and so never a node.
    let ratings = pod(&snapshot, "ratings-v1-5c6d7-klmno");
    assert_eq!(ratings.netns, None);
    let Some(Object::Namespace(shop)) = snapshot.objects.get(1) else {
        panic!("{:?}", snapshot.objects[1]);
    };
    assert_eq!(
        shop.labels.get("trellis.dev/mesh").map(String::as_str),
        Some("enabled")
    );
    let Some(Object::Service(service)) = snapshot.objects.get(9) else {
        panic!("{:?}", snapshot.objects[9]);
    };
    assert_eq!(service.meta.order, 9);
    assert_eq!(service.cluster_ip, Some("10.96.0.20".parse().unwrap()));
    let Some(Object::EndpointSlice(slice)) = snapshot.objects.get(10) else {
        panic!("{:?}", snapshot.objects[10]);
    };
    assert_eq!(slice.service.as_deref(), Some("reviews"));
    assert_eq!(slice.endpoints.len(), 2);
    let Some(Object::PeerAuthentication(mesh_wide)) = snapshot.objects.get(13) else {
        panic!("{:?}", snapshot.objects[13]);
    };
    assert_eq!(mesh_wide.spec.mtls.map(|m| m.mode), Some(Mode::Strict));
    assert_eq!(
        mesh_wide.meta.creation_timestamp.as_deref(),
        Some("2025-05-01T09:20:00Z")
    );
    let Some(Object::PeerAuthentication(ports)) = snapshot.objects.get(14) else {
        panic!("{:?}", snapshot.objects[14]);
    };
    assert_eq!(ports.spec.port_level_mtls[&9080].mode, Mode::Permissive);

    // Each kind: one consistent list (no resourceVersion: a quorum read, not the watch
    // cache), then a watch from the list's resourceVersion with bookmarks.
    for (path, _) in RESOURCES {
        let list = fake.request(path, 0).await;
        assert!(!list.watch, "{path}: {list:?}");
        assert_eq!(list.resource_version, None, "{path}");
        let watch = fake.request(path, 1).await;
        assert_eq!(
            watch,
            Seen {
                watch: true,
                resource_version: Some("1040".into()),
                bookmarks: true
            },
            "{path}"
        );
    }
}

#[tokio::test]
async fn added_modified_and_deleted_events_change_the_snapshot() {
    let fake = FakeApiServer::start().await;
    let mut rx = start(&fake).await;

    // ADDED (pending, no IP yet), MODIFIED (running), MODIFIED another pod's labels, DELETED
    // a third, then a BOOKMARK.
    fake.send(PODS, "watch/pods-added-modified-deleted.jsonl").await;
    let snapshot = until(&mut rx, "the pod events", |s| {
        names(s, "Pod")
            == [
                "shop/reviews-v1-7d9f8-fghij",
                "shop/reviews-v1-7d9f8-abcde",
                "shop/reviews-v2-8e0a9-pqrst",
            ]
            && pod(s, "reviews-v2-8e0a9-pqrst").ip.is_some()
            && pod(s, "reviews-v1-7d9f8-abcde").labels.contains_key("canary")
    })
    .await;
    assert!(snapshot.revision > 1);
    assert_eq!(
        pod(&snapshot, "reviews-v2-8e0a9-pqrst").ip,
        Some("10.244.1.9".parse().unwrap())
    );
    assert_eq!(snapshot.problems, []);
    // The other kinds are untouched.
    assert_eq!(names(&snapshot, "Service"), ["shop/reviews"]);
    assert_eq!(snapshot.objects.len(), 16);
}

#[tokio::test]
async fn a_dropped_watch_resumes_and_410_gone_relists_without_what_was_deleted_meanwhile() {
    let fake = FakeApiServer::start().await;
    let mut rx = start(&fake).await;
    assert_eq!(names(&rx.borrow(), "Pod").len(), 3);

    // The API server moves the watch on with a bookmark, then drops the connection: the
    // watcher resumes from the bookmark, without a relist.
    fake.send(PODS, "watch/pods-bookmark.jsonl").await;
    fake.close(PODS).await;
    assert_eq!(
        fake.request(PODS, 2).await,
        Seen {
            watch: true,
            resource_version: Some("2000".into()),
            bookmarks: true
        }
    );

    // While it was away, reviews-...-fghij was deleted and the API server compacted past
    // 2000: the resumed watch gets 410 Gone and the watcher relists.
    fake.lists(PODS, &[(200, "cluster/pods-relisted.json")]);
    fake.send(PODS, "watch/gone.jsonl").await;
    fake.close(PODS).await;
    let relist = fake.request(PODS, 3).await;
    assert!(!relist.watch, "{relist:?}");
    let snapshot = until(&mut rx, "the relisted pods", |s| {
        names(s, "Pod") == ["shop/reviews-v1-7d9f8-abcde", "shop/ratings-v1-5c6d7-klmno"]
    })
    .await;
    assert_eq!(snapshot.problems, [], "a relist is not a problem");
    assert_eq!(
        fake.request(PODS, 4).await,
        Seen {
            watch: true,
            resource_version: Some("2100".into()),
            bookmarks: true
        }
    );
}

#[tokio::test]
async fn an_invalid_istio_object_is_reported_with_its_field_and_the_others_apply() {
    let fake = FakeApiServer::start().await;
    let mut rx = start(&fake).await;

    // Two PeerAuthentications arrive; one has a typo in spec.mtls.
    fake.send(PEER_AUTHENTICATIONS, "watch/peerauthentications-invalid.jsonl")
        .await;
    let snapshot = until(&mut rx, "the new PeerAuthentications", |s| {
        names(s, "PeerAuthentication").contains(&"shop/shop-strict".to_string()) && !s.problems.is_empty()
    })
    .await;
    assert_eq!(
        names(&snapshot, "PeerAuthentication"),
        [
            "istio-system/default",
            "shop/reviews-permissive",
            "shop/shop-strict"
        ]
    );
    assert_eq!(snapshot.problems.len(), 1, "{:?}", snapshot.problems);
    let problem = &snapshot.problems[0];
    assert_eq!(problem.origin, "PeerAuthentication shop/typo");
    assert!(
        problem.message.starts_with("spec.mtls") && problem.message.contains("unknown field `mod`"),
        "{problem}"
    );

    // Deleting it clears the problem.
    fake.send(
        PEER_AUTHENTICATIONS,
        "watch/peerauthentications-invalid-deleted.jsonl",
    )
    .await;
    let snapshot = until(&mut rx, "the typo's deletion", |s| s.problems.is_empty()).await;
    assert_eq!(names(&snapshot, "PeerAuthentication").len(), 3);
}

#[tokio::test]
async fn a_missing_crd_is_reported_and_does_not_hold_back_the_other_kinds() {
    let fake = FakeApiServer::start().await;
    // RequestAuthentication's CRD is not installed (404), then it is.
    fake.lists(
        REQUEST_AUTHENTICATIONS,
        &[
            (404, "not-found.json"),
            (200, "cluster/requestauthentications-installed.json"),
        ],
    );
    let mut rx = start(&fake).await;
    let snapshot = rx.borrow_and_update().clone();
    assert_eq!(
        snapshot.problems,
        [Problem {
            origin: "security.istio.io/v1 RequestAuthentication".into(),
            message: "not served by the API server: install the CRDs (deploy/crds)".into(),
        }]
    );
    assert_eq!(snapshot.objects.len(), 16, "{:?}", summary(&snapshot));
    assert_eq!(names(&snapshot, "Pod").len(), 3);

    // The source retries with backoff and picks the kind up once it is served.
    let snapshot = until(&mut rx, "the installed CRD", |s| {
        !names(s, "RequestAuthentication").is_empty()
    })
    .await;
    assert_eq!(names(&snapshot, "RequestAuthentication"), ["shop/jwt"]);
    assert_eq!(snapshot.problems, []);
}

#[tokio::test]
async fn an_unreachable_api_server_is_an_error_that_says_so() {
    // A port that was just free: nothing listens there.
    let url = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let error = timeout(WAIT, kubernetes::watch(client))
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("cannot reach the Kubernetes API server"),
        "{error}"
    );
}

const VIRTUAL_SERVICES: &str = "/apis/networking.istio.io/v1/virtualservices";
const REVIEWS_STATUS: &str = "/apis/networking.istio.io/v1/namespaces/shop/virtualservices/reviews/status";
const TYPO_STATUS: &str = "/apis/security.istio.io/v1/namespaces/shop/peerauthentications/typo/status";

/// Starts the source and the status writer on it.
async fn start_with_status(fake: &FakeApiServer) -> Snapshots {
    let rx = start(fake).await;
    tokio::spawn(status_writer::run(fake.client(), rx.clone()));
    rx
}

/// `object` as the API server holds it once `patch` (a status merge patch) applied, at
/// `resource_version`: a `MODIFIED` event.
fn modified(mut object: Value, patch: &Value, resource_version: &str) -> Value {
    object["status"] = patch["status"].clone();
    object["metadata"]["resourceVersion"] = resource_version.into();
    json!({"type": "MODIFIED", "object": object})
}

fn our_condition(status: &Value) -> &Value {
    let conditions = status["conditions"].as_array().expect("conditions");
    assert_eq!(conditions.len(), 1, "{status:#}");
    assert_eq!(conditions[0]["type"], status_writer::CONDITION);
    &conditions[0]
}

#[tokio::test]
async fn a_virtual_service_with_unsupported_fields_gets_a_condition_and_messages_once() {
    let fake = FakeApiServer::start().await;
    let _rx = start_with_status(&fake).await;

    // Trellis enforces no VirtualService field yet: both set fields are findings.
    let patch = fake.patch(REVIEWS_STATUS, 0).await;
    assert_eq!(
        patch["metadata"],
        json!({"resourceVersion": "600"}),
        "conditional on the version analysed"
    );
    let status = &patch["status"];
    assert_eq!(status["observedGeneration"], 1);
    let condition = our_condition(status);
    assert_eq!(condition["status"], "True", "{condition:#}");
    assert_eq!(condition["reason"], "AcceptedWithWarnings");
    let message = condition["message"].as_str().unwrap();
    assert!(
        message.starts_with("accepted with 2 warnings: ")
            && message.contains("spec.hosts: not enforced by Trellis yet")
            && message.contains("spec.http: not enforced by Trellis yet"),
        "{message}"
    );
    assert!(condition["lastTransitionTime"].is_string(), "{condition:#}");
    let warning = json!({"type": {"code": "TRE0003", "name": "AnalysisWarning"}, "level": "WARNING"});
    assert_eq!(status["validationMessages"], json!([warning, warning]));

    // The API server applies it and the watch reports it: the object has its status, no
    // second write. A later change elsewhere (two PeerAuthentications arrive) is written, and
    // as the writer goes in snapshot order (VirtualServices first), a write of the
    // VirtualService would have come before.
    let listed: Value = serde_json::from_str(&recording("cluster/virtualservices.json")).unwrap();
    fake.send_event(
        VIRTUAL_SERVICES,
        modified(listed["items"][0].clone(), &patch, "1500"),
    )
    .await;
    fake.send(PEER_AUTHENTICATIONS, "watch/peerauthentications-invalid.jsonl")
        .await;
    fake.patch(TYPO_STATUS, 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.patches(REVIEWS_STATUS).len(),
        1,
        "{:#?}",
        fake.patches(REVIEWS_STATUS)
    );
}

#[tokio::test]
async fn an_invalid_object_is_not_accepted_with_its_field_and_is_accepted_once_fixed() {
    let fake = FakeApiServer::start().await;
    let _rx = start_with_status(&fake).await;

    // `spec.mtls.mod`: refused by the source, and said so on the object.
    fake.send(PEER_AUTHENTICATIONS, "watch/peerauthentications-invalid.jsonl")
        .await;
    let refused = fake.patch(TYPO_STATUS, 0).await;
    assert_eq!(refused["metadata"], json!({"resourceVersion": "1300"}));
    assert_eq!(refused["status"]["observedGeneration"], 1);
    let condition = our_condition(&refused["status"]);
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "Invalid");
    let message = condition["message"].as_str().unwrap();
    assert!(
        message.starts_with("refused, not applied: spec.mtls") && message.contains("unknown field `mod`"),
        "{message}"
    );
    assert_eq!(
        refused["status"]["validationMessages"],
        json!([{"type": {"code": "TRE0001", "name": "InvalidObject"}, "level": "ERROR"}])
    );

    // The operator fixes the spec (generation 2); the status written before is still there.
    let line = recording("watch/peerauthentications-typo-fixed.jsonl");
    let mut fixed: Value = serde_json::from_str(line.trim()).unwrap();
    fixed["object"]["status"] = refused["status"].clone();
    fake.send_event(PEER_AUTHENTICATIONS, fixed).await;
    let accepted = fake.patch(TYPO_STATUS, 1).await;
    assert_eq!(accepted["metadata"], json!({"resourceVersion": "1310"}));
    assert_eq!(accepted["status"]["observedGeneration"], 2);
    let condition = our_condition(&accepted["status"]);
    assert_eq!(condition["status"], "True", "{condition:#}");
    assert_eq!(condition["reason"], "Accepted");
    assert_eq!(accepted["status"]["validationMessages"], json!([]));
    // The shop-strict PeerAuthentication that came with it, valid from the start, is
    // accepted too.
    let strict = fake
        .patch(
            "/apis/security.istio.io/v1/namespaces/shop/peerauthentications/shop-strict/status",
            0,
        )
        .await;
    assert_eq!(our_condition(&strict["status"])["status"], "True");
}
