//! Node authentication by TokenReview (`--node-auth token-review`) against recorded API server
//! responses: the fake API server (`support/fake_api.rs`) answers each TokenReview with the
//! recorded review of the same token (`recordings/token-review/reviews/`) and serves the node
//! agents' pods (`recordings/token-review/pods/`). The CA and the config stream are called as
//! a node calls them, with the token as its bearer credential; which workloads run where comes
//! from a fixed snapshot.

#[path = "support/fake_api.rs"]
mod fake_api;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use clap::Parser;
use fake_api::{recording, FakeApiServer};
use mesh_api::{
    ca::{istio_certificate_service_server::IstioCertificateService, IstioCertificateRequest},
    config_stream::{
        config_discovery_client::ConfigDiscoveryClient, config_discovery_server::ConfigDiscoveryServer,
        node_message::Message, Hello, NodeMessage,
    },
    node_config::Options,
};
use mesh_controller::{
    ca::CertificateAuthority,
    config::Config,
    distribution::{ConfigService, SyncTable},
    node_auth::NodeAuthenticator,
    service::CaService,
    source::Snapshot,
};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_stream::StreamExt as _;
use tonic::{Code, Request, Status};

/// Which workloads run where: `web` (web-sa) on n1, `db` (db-sa) on n2, both enrolled.
const CLUSTER: &str = r#"
kind: Namespace
metadata: {name: shop, labels: {trellis.dev/mesh: enabled}}
---
kind: Pod
metadata: {name: web, namespace: shop, annotations: {trellis.dev/netns: web}}
spec: {nodeName: n1, serviceAccountName: web-sa}
status: {podIP: 10.244.1.2, phase: Running}
---
kind: Pod
metadata: {name: db, namespace: shop, annotations: {trellis.dev/netns: db}}
spec: {nodeName: n2, serviceAccountName: db-sa}
status: {podIP: 10.244.2.2, phase: Running}
"#;

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web-sa";
const DB: &str = "spiffe://cluster.local/ns/shop/sa/db-sa";

/// The node agents' pods, as the API server serves them.
const AGENT_N1: &str = "/api/v1/namespaces/trellis-system/pods/mesh-node-4xq7z";
const AGENT_N2: &str = "/api/v1/namespaces/trellis-system/pods/mesh-node-9wm2p";

/// A CA directory named after the test, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Controller {
    fake: FakeApiServer,
    ca: CaService,
    config: ConfigService,
    /// Keep the channels open: a config stream ends when either closes.
    _snapshot: watch::Sender<Arc<Snapshot>>,
    _stop: watch::Sender<bool>,
    _scratch: Scratch,
}

/// The controller's CA and config stream with `--node-auth token-review` and its defaults,
/// against the fake API server.
async fn controller(test: &str) -> Controller {
    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        config: Config,
    }
    let scratch =
        Scratch(std::env::temp_dir().join(format!("mesh-controller-{test}-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&scratch.0);
    let run = Run::try_parse_from([
        "mesh-controller",
        "--source=kubernetes",
        "--node-auth=token-review",
        "--ca-dir",
        scratch.0.to_str().unwrap(),
    ])
    .unwrap();
    let fake = FakeApiServer::start().await;
    for path in [AGENT_N1, AGENT_N2] {
        let name = path.rsplit('/').next().unwrap();
        fake.serve(path, &format!("token-review/pods/{name}.json"));
    }
    let node_auth = Arc::new(NodeAuthenticator::from_config(&run.config, Some(fake.client())).unwrap());
    let objects = mesh_api::objects::parse_documents(Path::new("cluster.yaml"), CLUSTER).unwrap();
    let (snapshot, snapshots) = watch::channel(Arc::new(Snapshot {
        objects,
        revision: 1,
        ..Snapshot::default()
    }));
    let ca = CaService {
        ca: Arc::new(CertificateAuthority::load_or_generate(&scratch.0).unwrap()),
        node_auth: node_auth.clone(),
        snapshots: snapshots.clone(),
        trust_domain: "cluster.local".into(),
        default_ttl: Duration::from_secs(3600),
        max_ttl: Duration::from_secs(86_400),
    };
    let (stop, stopping) = watch::channel(false);
    let config = ConfigService {
        node_auth,
        snapshots,
        options: Options {
            trust_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            cluster_domain: "cluster.local".into(),
        },
        table: SyncTable::default(),
        stopping,
    };
    Controller {
        fake,
        ca,
        config,
        _snapshot: snapshot,
        _stop: stop,
        _scratch: scratch,
    }
}

/// The token of a recorded review (`token-review/reviews/<name>.json`).
fn token(review: &str) -> String {
    let recorded: Value =
        serde_json::from_str(&recording(&format!("token-review/reviews/{review}.json"))).unwrap();
    recorded["spec"]["token"].as_str().unwrap().to_string()
}

fn csr_for(identity: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(identity.try_into().unwrap())];
    params.serialize_request(&key).unwrap().pem().unwrap()
}

/// Asks the CA for `identity` with `token`, as a node does.
async fn certificate(controller: &Controller, token: &str, identity: &str) -> Result<Vec<String>, Status> {
    let mut request = Request::new(IstioCertificateRequest {
        csr: csr_for(identity),
        validity_duration: 3600,
        metadata: None,
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    controller
        .ca
        .create_certificate(request)
        .await
        .map(|r| r.into_inner().cert_chain)
}

/// The refusal of a request that must be refused, checked for its code.
fn refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> String {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    status.message().to_string()
}

#[tokio::test]
async fn a_node_agent_gets_its_own_nodes_workload_certificates_and_no_others() {
    let controller = controller("own-node").await;
    let n1 = token("mesh-node-n1");

    let chain = certificate(&controller, &n1, WEB)
        .await
        .expect("web-sa runs on n1");
    assert!(chain[0].contains("BEGIN CERTIFICATE"), "{chain:?}");
    let message = refused(certificate(&controller, &n1, DB).await, Code::PermissionDenied);
    assert!(
        message.contains("node n1 runs no enrolled pod with service account shop/db-sa"),
        "{message}"
    );

    // The review asked for our audience, as the API server's v1 API has it.
    assert_eq!(
        controller.fake.reviews()[0],
        json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "metadata": {},
            "spec": {"token": n1, "audiences": ["trellis-controller"]},
        })
    );

    // n2's agent, the other way round.
    let n2 = token("mesh-node-n2");
    certificate(&controller, &n2, DB).await.expect("db-sa runs on n2");
    let message = refused(certificate(&controller, &n2, WEB).await, Code::PermissionDenied);
    assert!(message.contains("node n2 runs no enrolled pod"), "{message}");
}

#[tokio::test]
async fn the_config_stream_is_for_the_node_of_the_tokens_pod_only() {
    let controller = controller("config-stream").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = ConfigDiscoveryServer::new(controller.config);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let stream = |token: String, node: &str| {
        let hello = NodeMessage {
            message: Some(Message::Hello(Hello {
                node: node.into(),
                applied_version: 0,
            })),
        };
        async move {
            let mut client = ConfigDiscoveryClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            let mut request = Request::new(tokio_stream::iter([hello]).chain(tokio_stream::pending()));
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            let mut updates = client.stream_config(request).await?.into_inner();
            Ok::<_, Status>(updates.message().await?.expect("a first update"))
        }
    };

    // n2's agent saying it is n1 is refused; as n2 it gets n2's workloads.
    let message = refused(stream(token("mesh-node-n2"), "n1").await, Code::PermissionDenied);
    assert_eq!(message, "this token belongs to node n2, not n1");
    let update = stream(token("mesh-node-n2"), "n2").await.unwrap();
    assert!(update.full);
    let workloads = update.sections.iter().find(|s| s.name == "workloads").unwrap();
    let workloads: Value = serde_json::from_slice(&workloads.json).unwrap();
    assert_eq!(workloads.as_array().map(Vec::len), Some(1), "{workloads}");
    assert_eq!(workloads[0]["name"], "db", "{workloads}");
}

#[tokio::test]
async fn a_token_that_names_another_node_than_its_pods_is_refused() {
    let controller = controller("node-mismatch").await;
    // The review says the token was issued on n1; its pod, mesh-node-9wm2p, runs on n2.
    let message = refused(
        certificate(&controller, &token("node-name-mismatch"), WEB).await,
        Code::Unauthenticated,
    );
    assert_eq!(
        message,
        "token review refused: the token was issued on node n1, but its pod trellis-system/mesh-node-9wm2p runs on node n2"
    );
    assert_eq!(controller.fake.requests(AGENT_N2), 1, "the pod was read");
}

#[tokio::test]
async fn a_token_bound_to_an_earlier_pod_of_the_same_name_is_refused() {
    let controller = controller("replaced-pod").await;
    let message = refused(
        certificate(&controller, &token("replaced-pod"), WEB).await,
        Code::Unauthenticated,
    );
    assert_eq!(
        message,
        "token review refused: the token is bound to pod trellis-system/mesh-node-4xq7z with UID \
         1c6e9a27-4f3b-4b8d-9e2a-0d5f7b3c8e61, but that pod has UID 9f2c4e71-8a3b-4d6e-b1f0-5c7d2e9a4b13: \
         the token outlived its pod"
    );
}

#[tokio::test]
async fn an_unauthenticated_token_is_refused_with_the_api_servers_error_every_time() {
    let controller = controller("expired").await;
    let expired = token("expired");
    for _ in 0..2 {
        let message = refused(
            certificate(&controller, &expired, WEB).await,
            Code::Unauthenticated,
        );
        assert!(
            message.starts_with(
                "token review refused: [invalid bearer token, service account token has expired]: \
                 is the node's --token-file the projected service-account token"
            ),
            "{message}"
        );
    }
    assert_eq!(controller.fake.reviews().len(), 2, "refusals are not cached");
    assert_eq!(
        controller.fake.requests(AGENT_N1),
        0,
        "no pod read for a refused token"
    );
}

#[tokio::test]
async fn a_workloads_token_is_refused_whatever_its_audience() {
    let controller = controller("workload").await;
    // A workload given a projected token for the controller's audience, on n1.
    let message = refused(
        certificate(&controller, &token("workload-account"), WEB).await,
        Code::PermissionDenied,
    );
    assert!(
        message.starts_with(
            "token review refused: the token is system:serviceaccount:shop:bookinfo-reviews's, not the node \
             agents' service account system:serviceaccount:trellis-system:mesh-node"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused_saying_which_to_configure() {
    let controller = controller("audience").await;
    // The agent's token for the API server: Kubernetes refuses it for our audience.
    let message = refused(
        certificate(&controller, &token("api-server-audience"), WEB).await,
        Code::Unauthenticated,
    );
    assert_eq!(
        message,
        "token review refused: [invalid bearer token, token audiences \
         [\"https://kubernetes.default.svc.cluster.local\"] is invalid for the target audiences \
         [\"trellis-controller\"]]: is the node DaemonSet's projected token volume configured with \
         audience trellis-controller?"
    );
    // A reviewer that is not audience-aware authenticates it without naming an audience.
    let message = refused(
        certificate(&controller, &token("audience-unaware"), WEB).await,
        Code::Unauthenticated,
    );
    assert_eq!(
        message,
        "token review refused: the token's audience is not trellis-controller (the review names none: \
         the reviewer is not audience-aware): is the node DaemonSet's projected token volume configured \
         with audience trellis-controller?"
    );
}

#[tokio::test]
async fn a_successful_review_is_cached() {
    let controller = controller("cache").await;
    let n1 = token("mesh-node-n1");
    certificate(&controller, &n1, WEB).await.unwrap();
    certificate(&controller, &n1, WEB).await.unwrap();
    refused(certificate(&controller, &n1, DB).await, Code::PermissionDenied);
    assert_eq!(
        controller.fake.reviews().len(),
        1,
        "one TokenReview for three requests"
    );
    assert_eq!(
        controller.fake.requests(AGENT_N1),
        1,
        "one read of the agent's pod"
    );

    // Another token is reviewed on its own.
    certificate(&controller, &token("mesh-node-n2"), DB)
        .await
        .unwrap();
    assert_eq!(controller.fake.reviews().len(), 2);
}
