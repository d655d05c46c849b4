//! The controller's configuration: one struct, every field documented.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, ValueEnum};
use serde::Serialize;

#[derive(Args, Debug, Clone, Serialize)]
pub struct Config {
    /// Where the objects (Namespaces, Pods, Services, Istio resources...) come from: a
    /// directory of YAML (standalone) or the Kubernetes API (in-cluster service account, or
    /// KUBECONFIG).
    #[arg(long, env = "TRELLIS_SOURCE", value_enum, default_value_t = SourceKind::Directory)]
    pub source: SourceKind,

    /// Directory of Kubernetes-shaped YAML (Namespaces, Pods): which workloads run on which
    /// node, i.e. which identities each node may obtain. Needed by `--source directory`.
    #[arg(long, env = "TRELLIS_CONFIG_DIR", required_if_eq("source", "directory"))]
    pub config_dir: Option<PathBuf>,

    /// CA directory, Istio `cacerts` layout: `ca-cert.pem` + `ca-key.pem` sign,
    /// `root-cert.pem` is the trust bundle (several roots during a rotation),
    /// `cert-chain.pem` the chain from `ca-cert.pem` up to the root. When the directory has no
    /// `ca-key.pem`, a self-signed root is generated and written there (standalone).
    #[arg(long, env = "TRELLIS_CA_DIR")]
    pub ca_dir: PathBuf,

    /// SPIFFE trust domain of issued identities.
    #[arg(long, env = "TRELLIS_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,

    /// Where the config stream and the CA service listen (Istio's istiod port).
    #[arg(long, env = "TRELLIS_CA_ADDR", default_value = "0.0.0.0:15012")]
    pub listen: SocketAddr,

    /// DNS name in the CA service's serving certificate; nodes verify it.
    #[arg(
        long,
        env = "TRELLIS_CA_SERVER_NAME",
        default_value = "mesh-controller.trellis-system.svc"
    )]
    pub server_name: String,

    /// How a node proves which node it is, on the config stream and to the CA:
    /// `bootstrap-tokens` (a token per node from `--node-tokens`; standalone) or
    /// `token-review` (the node agent's projected service-account token, checked by a
    /// TokenReview and bound to the agent's pod, whose `spec.nodeName` is the node; needs
    /// `--source kubernetes`).
    #[arg(long, env = "TRELLIS_NODE_AUTH", value_enum, default_value_t = NodeAuth::BootstrapTokens)]
    pub node_auth: NodeAuth,

    /// YAML map of node name to bootstrap token (`n1: <token>`): a node proves who it is
    /// with its token. Tokens must be at least 16 characters. Needed by `--node-auth
    /// bootstrap-tokens`, refused with `token-review`.
    #[arg(long, env = "TRELLIS_NODE_TOKENS")]
    pub node_tokens: Option<PathBuf>,

    /// `--node-auth token-review`: the audience node agents' tokens must be issued for (the
    /// `audience` of the node DaemonSet's projected `serviceAccountToken` volume). A token
    /// for the API server, or for anything else, is refused.
    #[arg(
        long,
        env = "TRELLIS_NODE_TOKEN_AUDIENCE",
        default_value = "trellis-controller"
    )]
    pub node_token_audience: String,

    /// `--node-auth token-review`: the node agents' service account, `<namespace>/<name>`
    /// (the node DaemonSet's `serviceAccountName`). Tokens of any other account are refused.
    #[arg(
        long,
        env = "TRELLIS_NODE_SERVICE_ACCOUNT",
        default_value = "trellis-system/mesh-node"
    )]
    pub node_service_account: String,

    /// Workload certificate lifetime when the request asks for none, in seconds (24h).
    #[arg(long, env = "TRELLIS_CERT_TTL_SECS", default_value_t = 86_400)]
    pub default_ttl_secs: u64,

    /// Longest lifetime granted, whatever the request asks, in seconds (90 days).
    #[arg(long, env = "TRELLIS_MAX_CERT_TTL_SECS", default_value_t = 90 * 86_400)]
    pub max_ttl_secs: u64,

    /// Debug endpoint (`/debug/syncz`, `/debug/config_dump?node=`) read by `mesh-ctl status`
    /// and `proxy-config` (Istio's istiod uses 15014).
    #[arg(long, env = "TRELLIS_DEBUG_ADDR", default_value = "127.0.0.1:15014")]
    pub debug_addr: SocketAddr,

    /// Istio's root namespace: policies there without a selector apply mesh-wide.
    #[arg(long, env = "TRELLIS_ROOT_NAMESPACE", default_value = "istio-system")]
    pub root_namespace: String,

    /// Kubernetes cluster domain, for service host names (`name.namespace.svc.<domain>`).
    #[arg(long, env = "TRELLIS_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Log format: human text or one JSON object per line.
    #[arg(long, env = "TRELLIS_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

#[derive(ValueEnum, Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// `--config-dir`, re-read when it changes.
    Directory,
    /// Watches of the API server.
    Kubernetes,
}

#[derive(ValueEnum, Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NodeAuth {
    /// `--node-tokens`: a token per node, provisioned by the operator.
    BootstrapTokens,
    /// Projected service-account tokens checked with the API server's TokenReview.
    TokenReview,
}
