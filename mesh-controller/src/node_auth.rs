//! Which node a request comes from. A node sends `authorization: Bearer <token>` on the
//! config stream and with every certificate request; [`NodeAuthenticator`] turns the token
//! into the node's name, in one of two ways (`--node-auth`):
//!
//! - `bootstrap` (standalone): a token per node, from a file the operator writes;
//! - `token_review` (Kubernetes): the node agent's projected service-account token, checked
//!   by the API server and bound to the agent's pod, whose `spec.nodeName` is the node (as
//!   istiod authenticates its clients).
//!
//! What the node may then obtain does not depend on how it authenticated (`authz`).

pub mod bootstrap;
pub mod token_review;

use crate::config::{Config, NodeAuth, SourceKind};
pub use bootstrap::NodeTokens;
pub use token_review::TokenReviewer;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--node-auth bootstrap-tokens needs --node-tokens (TRELLIS_NODE_TOKENS): the file of node name to token")]
    NoTokensFile,
    #[error("--node-tokens is only read with --node-auth bootstrap-tokens; with token-review nodes present their service-account tokens: remove it")]
    TokensFileUnused,
    #[error("--node-auth token-review needs --source kubernetes: it asks the API server about the token and the node agent's pod")]
    ReviewWithoutKubernetes,
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::Error),
    #[error(transparent)]
    TokenReview(#[from] token_review::Error),
}

/// One of the two ways to authenticate nodes; the config stream and the CA call
/// [`NodeAuthenticator::authenticate`] and do not care which.
pub enum NodeAuthenticator {
    BootstrapTokens(NodeTokens),
    /// Boxed: a kube client and a cache are much larger than a token table.
    TokenReview(Box<TokenReviewer>),
}

impl NodeAuthenticator {
    /// The authenticator `config` asks for. `client` is the Kubernetes client, there with
    /// `--source kubernetes`.
    pub fn from_config(config: &Config, client: Option<kube::Client>) -> Result<Self, Error> {
        match config.node_auth {
            NodeAuth::BootstrapTokens => {
                let path = config.node_tokens.as_ref().ok_or(Error::NoTokensFile)?;
                Ok(Self::BootstrapTokens(NodeTokens::load(path)?))
            }
            NodeAuth::TokenReview => {
                if config.node_tokens.is_some() {
                    return Err(Error::TokensFileUnused);
                }
                if config.source != SourceKind::Kubernetes {
                    return Err(Error::ReviewWithoutKubernetes);
                }
                let service_account = config.node_service_account.parse()?;
                let client = client.ok_or(Error::ReviewWithoutKubernetes)?;
                Ok(Self::TokenReview(Box::new(TokenReviewer::new(
                    client,
                    config.node_token_audience.clone(),
                    service_account,
                ))))
            }
        }
    }

    /// The node a request comes from, by its `authorization: Bearer <token>` metadata.
    pub async fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<String, tonic::Status> {
        let token = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                tonic::Status::unauthenticated("missing `authorization: Bearer <node token>` metadata")
            })?;
        match self {
            Self::BootstrapTokens(tokens) => tokens.node_for(token).map(str::to_string).ok_or_else(|| {
                tonic::Status::unauthenticated("unknown node token: check the node's --token-file")
            }),
            Self::TokenReview(reviewer) => reviewer.node_for(token).await.map_err(|e| {
                tracing::warn!(error = %e, "node authentication failed");
                e.status()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config(args: &[&str]) -> Config {
        #[derive(Parser)]
        struct Run {
            #[command(flatten)]
            config: Config,
        }
        let base = [
            "mesh-controller",
            "--ca-dir=/nonexistent",
            "--config-dir=/nonexistent",
        ];
        Run::try_parse_from(base.iter().chain(args)).unwrap().config
    }

    fn refusal(args: &[&str]) -> String {
        match NodeAuthenticator::from_config(&config(args), None) {
            Ok(_) => panic!("{args:?} accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_flags_choose_one_way_and_say_what_is_missing() {
        // Bootstrap tokens are the default, and need their file.
        assert!(refusal(&[]).starts_with("--node-auth bootstrap-tokens needs --node-tokens"));
        // A tokens file that would not be read is refused, not ignored.
        let err = refusal(&[
            "--source=kubernetes",
            "--node-auth=token-review",
            "--node-tokens=t.yaml",
        ]);
        assert!(
            err.starts_with("--node-tokens is only read with --node-auth bootstrap-tokens"),
            "{err}"
        );
        let err = refusal(&["--node-auth=token-review"]);
        assert!(
            err.starts_with("--node-auth token-review needs --source kubernetes"),
            "{err}"
        );
        let err = refusal(&[
            "--source=kubernetes",
            "--node-auth=token-review",
            "--node-service-account=mesh-node",
        ]);
        assert!(err.contains("expected <namespace>/<name>"), "{err}");
    }

    #[test]
    fn the_choice_and_its_settings_are_in_the_config_dump() {
        let dump =
            serde_json::to_value(config(&["--source=kubernetes", "--node-auth=token-review"])).unwrap();
        assert_eq!(dump["node_auth"], "token-review");
        assert_eq!(dump["node_token_audience"], "trellis-controller");
        assert_eq!(dump["node_service_account"], "trellis-system/mesh-node");
        assert_eq!(dump["node_tokens"], serde_json::Value::Null);
        let dump = serde_json::to_value(config(&["--node-tokens=/etc/trellis/tokens.yaml"])).unwrap();
        assert_eq!(dump["node_auth"], "bootstrap-tokens");
        assert_eq!(dump["node_tokens"], "/etc/trellis/tokens.yaml");
    }
}
