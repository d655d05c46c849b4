//! The config stream in process: the whole controller (`app::run`) on loopback, and a node
//! played with the generated gRPC client, as `mesh-node` connects.

use std::{
    fmt::Write as _,
    net::TcpListener,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use clap::Parser;
use mesh_api::config_stream::{
    config_discovery_client::ConfigDiscoveryClient, node_message::Message, ConfigUpdate, Hello, NodeMessage,
    MAX_MESSAGE_BYTES,
};
use mesh_controller::config::Config;

const TOKEN: &str = "n1-token-0123456789abcdef";

/// tonic's default decoding limit, which a node had before `MAX_MESSAGE_BYTES`.
const TONIC_DEFAULT_LIMIT: usize = 4 * 1024 * 1024;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scratch directory named after the test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mesh-controller-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("config")).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `pods` enrolled pods on n1, each with a few long labels, and a Service with two ports that
/// selects them all (its endpoints carry the labels again): a snapshot of several MiB.
fn large_cluster(pods: usize) -> String {
    let mut yaml = String::from(
        "kind: Namespace\nmetadata: {name: shop, labels: {trellis.dev/mesh: enabled}}\n---\n\
         kind: Service\nmetadata: {name: web, namespace: shop}\n\
         spec: {clusterIP: 10.96.0.10, selector: {app: web}, ports: [{name: http, port: 80}, {name: grpc, port: 9090}]}\n",
    );
    for i in 0..pods {
        let labels: String = (0..8)
            .map(|l| format!(", label-{l}: value-{l}-{i:05}-{}", "x".repeat(40)))
            .collect();
        write!(
            yaml,
            "---\nkind: Pod\nmetadata: {{name: web-{i:05}, namespace: shop, labels: {{app: web{labels}}}, \
             annotations: {{trellis.dev/netns: web-{i:05}}}}}\nspec: {{nodeName: n1}}\n\
             status: {{podIP: 10.{}.{}.{}, phase: Running}}\n",
            1 + i / 65536,
            (i / 256) % 256,
            i % 256
        )
        .unwrap();
    }
    yaml
}

async fn start_controller(scratch: &Path) -> (String, tokio::task::JoinHandle<anyhow::Result<()>>) {
    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        config: Config,
    }
    let tokens = scratch.join("tokens.yaml");
    std::fs::write(&tokens, format!("n1: {TOKEN}\n")).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let debug = format!("127.0.0.1:{}", free_port());
    let dir = |p: &Path| p.to_str().unwrap().to_string();
    let run = Run::try_parse_from([
        "mesh-controller".to_string(),
        "--config-dir".into(),
        dir(&scratch.join("config")),
        "--ca-dir".into(),
        dir(&scratch.join("ca")),
        "--node-tokens".into(),
        dir(&tokens),
        "--listen".into(),
        listen.clone(),
        "--debug-addr".into(),
        debug,
    ])
    .unwrap();
    let server = tokio::spawn(mesh_controller::app::run(run.config));
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(&listen).await.is_err() {
        assert!(!server.is_finished(), "the controller stopped");
        assert!(Instant::now() < deadline, "the controller did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (listen, server)
}

/// Opens n1's config stream with a decoding limit and returns its first message.
async fn first_update(scratch: &Path, listen: &str, limit: usize) -> Result<ConfigUpdate, tonic::Status> {
    let root = std::fs::read_to_string(scratch.join("ca/root-cert.pem")).unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(root))
        .domain_name("mesh-controller.trellis-system.svc");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{listen}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("connecting to the controller");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(NodeMessage {
        message: Some(Message::Hello(Hello {
            node: "n1".into(),
            applied_version: 0,
        })),
    })
    .await
    .unwrap();
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let mut updates = ConfigDiscoveryClient::new(channel)
        .max_decoding_message_size(limit)
        .stream_config(request)
        .await?
        .into_inner();
    let update = updates.message().await?.expect("a first update");
    drop(tx);
    Ok(update)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_larger_than_4_mib_reaches_the_node() {
    let scratch = Scratch::new("large");
    let pods = 3000;
    std::fs::write(scratch.0.join("config/cluster.yaml"), large_cluster(pods)).unwrap();
    let (listen, server) = start_controller(&scratch.0).await;

    // With tonic's default limit (what a node had before), the snapshot cannot be read.
    let refused = first_update(&scratch.0, &listen, TONIC_DEFAULT_LIMIT)
        .await
        .expect_err("a 4 MiB client must refuse the snapshot");
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused}");

    // With the limit both ends use now, it arrives whole.
    let update = first_update(&scratch.0, &listen, MAX_MESSAGE_BYTES)
        .await
        .expect("the snapshot");
    let bytes: usize = update.sections.iter().map(|s| s.json.len()).sum();
    assert!(
        bytes > TONIC_DEFAULT_LIMIT,
        "only {bytes} bytes: make the cluster larger"
    );
    assert!(update.full);
    let mut config = mesh_api::node_config::NodeConfig::default();
    for s in &update.sections {
        config.set_section(&s.name, &s.json).unwrap();
    }
    assert_eq!(config.workloads.len(), pods);
    assert_eq!(config.services[0].ports[1].endpoints.len(), pods);
    eprintln!("snapshot of {pods} pods: {bytes} bytes of sections in one message");
    server.abort();
}
