//! Node authentication in Kubernetes (`--node-auth token-review`), as istiod authenticates
//! its clients. The node agent presents its projected service-account token, which the
//! kubelet issues for the audience `--node-token-audience`, binds to the agent's pod and
//! rotates. A TokenReview asks the API server whether the token is genuine and whose it is;
//! the controller then requires:
//!
//! - the node agents' service account (`--node-service-account`), not any workload's;
//! - its audience among `status.audiences` (a review that names none comes from a reviewer
//!   that is not audience-aware, and then the token was only checked for the API server);
//! - a bound pod (`authentication.kubernetes.io/pod-name` and `pod-uid` in `user.extra`),
//!   which it reads back: the same UID (not a pod of the same name that replaced it), and
//!   scheduled. Its `spec.nodeName` is the node. Since Kubernetes 1.30 the review also names
//!   the node the token was issued on (`authentication.kubernetes.io/node-name`), which must
//!   agree.
//!
//! A successful review is cached for [`CACHE_TTL`], never past the token's expiry, so the
//! burst of certificate requests of a starting node costs one TokenReview and one pod read.
//! A token whose pod is deleted is therefore still accepted for up to that long. Refusals are
//! not cached: a fixed token is tried again at once.

use std::{
    collections::HashMap,
    fmt,
    str::FromStr,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus},
    core::v1::Pod,
};
use kube::{api::PostParams, Api};

use super::bootstrap::{digest, Digest};

/// The `user.extra` keys of a token bound to a pod.
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const POD_UID: &str = "authentication.kubernetes.io/pod-uid";
/// Since Kubernetes 1.30 (`ServiceAccountTokenPodNodeInfo`).
const NODE_NAME: &str = "authentication.kubernetes.io/node-name";

/// How long a successful review is trusted, at most.
pub const CACHE_TTL: Duration = Duration::from_secs(60);

/// Reviews cached at most: a node presents one token at a time (two around a rotation), so
/// this covers thousands of nodes; beyond it the entries closest to expiry make room.
const CACHE_ENTRIES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--node-service-account {0:?}: expected <namespace>/<name>, e.g. trellis-system/mesh-node")]
    ServiceAccount(String),
    #[error("token review refused: {error}: {hint}")]
    Unauthenticated { error: String, hint: String },
    #[error("token review refused: the token's audience is not {audience} (the review names {found}): is the node DaemonSet's projected token volume configured with audience {audience}?")]
    Audience { audience: String, found: String },
    #[error("token review refused: the token is {username}'s, not the node agents' service account {expected}: only the node agent authenticates as a node (the DaemonSet's serviceAccountName, --node-service-account)")]
    NotNodeAgent { username: String, expected: String },
    #[error("token review refused: the token of {username} is not bound to a pod: the node agent must present the projected token of its own pod (a serviceAccountToken volume), not one made by `kubectl create token`")]
    NotBound { username: String },
    #[error("token review refused: the token is bound to pod {pod}, which no longer exists: the token outlived its pod")]
    PodGone { pod: String },
    #[error("token review refused: the token is bound to pod {pod} with UID {token_uid}, but that pod has UID {pod_uid}: the token outlived its pod")]
    PodReplaced {
        pod: String,
        token_uid: String,
        pod_uid: String,
    },
    #[error("token review refused: the token's pod {pod} is not scheduled on a node (no spec.nodeName)")]
    NotScheduled { pod: String },
    #[error("token review refused: the token was issued on node {token_node}, but its pod {pod} runs on node {pod_node}")]
    NodeMismatch {
        pod: String,
        token_node: String,
        pod_node: String,
    },
    #[error("the controller may not {what}: {message}: its ClusterRole (deploy/rbac/controller.yaml) needs create on tokenreviews and get on pods")]
    Forbidden { what: String, message: String },
    #[error("could not {what}: {source}: is the API server reachable?")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// What the node is told: the token proves nothing (`UNAUTHENTICATED`), proves someone
    /// who is not a node agent (`PERMISSION_DENIED`), or could not be checked now
    /// (`UNAVAILABLE`, retried).
    pub fn status(&self) -> tonic::Status {
        match self {
            Self::Forbidden { .. } | Self::Api { .. } => tonic::Status::unavailable(self.to_string()),
            Self::NotNodeAgent { .. } => tonic::Status::permission_denied(self.to_string()),
            _ => tonic::Status::unauthenticated(self.to_string()),
        }
    }
}

fn api_error(what: String, error: kube::Error) -> Error {
    match error {
        kube::Error::Api(status) if status.is_forbidden() => Error::Forbidden {
            what,
            message: status.message.clone(),
        },
        source => Error::Api { what, source },
    }
}

/// A service account, `<namespace>/<name>` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccount {
    /// The user name its tokens authenticate as.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

impl FromStr for ServiceAccount {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self {
                    namespace: namespace.into(),
                    name: name.into(),
                })
            }
            _ => Err(Error::ServiceAccount(s.into())),
        }
    }
}

impl fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Authenticates node agents by TokenReview.
pub struct TokenReviewer {
    reviews: Api<TokenReview>,
    /// In the service account's namespace, where its pods are.
    pods: Api<Pod>,
    audience: String,
    service_account: ServiceAccount,
    cache: Mutex<Cache>,
}

impl TokenReviewer {
    pub fn new(client: kube::Client, audience: String, service_account: ServiceAccount) -> Self {
        Self {
            reviews: Api::all(client.clone()),
            pods: Api::namespaced(client, &service_account.namespace),
            audience,
            service_account,
            cache: Mutex::new(Cache::new(CACHE_ENTRIES)),
        }
    }

    /// The node whose agent `token` belongs to.
    pub async fn node_for(&self, token: &str) -> Result<String, Error> {
        let key = digest(token);
        if let Some(node) = self.cache().get(&key, Instant::now()) {
            return Ok(node);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.into()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let reviewed = self
            .reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| api_error("create a TokenReview".into(), e))?;
        let bound = self.bound_pod(reviewed.status.unwrap_or_default())?;
        let pod = self
            .pods
            .get_opt(&bound.name)
            .await
            .map_err(|e| api_error(format!("read pod {bound}"), e))?;
        let node = bound.node(pod.as_ref())?;
        tracing::debug!(%node, pod = %bound, "node agent authenticated by TokenReview");
        let now = Instant::now();
        let lifetime = cache_lifetime(token, SystemTime::now());
        if !lifetime.is_zero() {
            self.cache().insert(key, node.clone(), now + lifetime, now);
        }
        Ok(node)
    }

    /// The pod the reviewed token is bound to, once the review shows a token of the node
    /// agents' service account for our audience.
    fn bound_pod(&self, status: TokenReviewStatus) -> Result<BoundPod, Error> {
        if status.authenticated != Some(true) {
            let error = status
                .error
                .unwrap_or_else(|| "the API server did not authenticate the token".into());
            let hint = if error.contains("audiences") {
                format!(
                    "is the node DaemonSet's projected token volume configured with audience {}?",
                    self.audience
                )
            } else {
                "is the node's --token-file the projected service-account token the kubelet keeps \
                 fresh (deploy/node.yaml), and is its pod still running?"
                    .into()
            };
            return Err(Error::Unauthenticated { error, hint });
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let expected = self.service_account.username();
        if username != expected {
            return Err(Error::NotNodeAgent { username, expected });
        }
        let audiences = status.audiences.unwrap_or_default();
        if !audiences.contains(&self.audience) {
            return Err(Error::Audience {
                audience: self.audience.clone(),
                found: if audiences.is_empty() {
                    "none: the reviewer is not audience-aware".into()
                } else {
                    audiences.join(", ")
                },
            });
        }
        let extra = user.extra.unwrap_or_default();
        let one = |key: &str| match extra.get(key).map(Vec::as_slice) {
            Some([value]) if !value.is_empty() => Some(value.clone()),
            _ => None,
        };
        let (Some(name), Some(uid)) = (one(POD_NAME), one(POD_UID)) else {
            return Err(Error::NotBound { username });
        };
        Ok(BoundPod {
            namespace: self.service_account.namespace.clone(),
            name,
            uid,
            node: one(NODE_NAME),
        })
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The pod a token is bound to, as the review says.
struct BoundPod {
    namespace: String,
    name: String,
    uid: String,
    /// The node the token was issued on, when the API server says (1.30+).
    node: Option<String>,
}

impl BoundPod {
    /// The node `pod` (this pod as the API server has it now) runs on.
    fn node(&self, pod: Option<&Pod>) -> Result<String, Error> {
        let Some(pod) = pod else {
            return Err(Error::PodGone {
                pod: self.to_string(),
            });
        };
        let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
        if pod_uid != self.uid {
            return Err(Error::PodReplaced {
                pod: self.to_string(),
                token_uid: self.uid.clone(),
                pod_uid,
            });
        }
        let Some(pod_node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            return Err(Error::NotScheduled {
                pod: self.to_string(),
            });
        };
        match &self.node {
            Some(token_node) if *token_node != pod_node => Err(Error::NodeMismatch {
                pod: self.to_string(),
                token_node: token_node.clone(),
                pod_node,
            }),
            _ => Ok(pod_node),
        }
    }
}

impl fmt::Display for BoundPod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How long a review of `token` may be trusted at `now`: [`CACHE_TTL`], or less when the
/// token expires sooner (zero once it has). The expiry is read from the JWT's `exp` claim
/// without checking the signature: the API server has just checked it, and this only keeps
/// a cache entry from outliving the token.
fn cache_lifetime(token: &str, now: SystemTime) -> Duration {
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: u64,
    }
    let exp = token
        .split('.')
        .nth(1)
        .and_then(|payload| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
        })
        .and_then(|json| serde_json::from_slice::<Claims>(&json).ok())
        .map(|claims| UNIX_EPOCH + Duration::from_secs(claims.exp));
    match exp {
        Some(exp) => exp.duration_since(now).unwrap_or_default().min(CACHE_TTL),
        None => CACHE_TTL,
    }
}

/// Nodes of recently reviewed tokens, by the token's SHA-256, each until a deadline.
struct Cache {
    limit: usize,
    entries: HashMap<Digest, (String, Instant)>,
}

impl Cache {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            entries: HashMap::new(),
        }
    }

    fn get(&mut self, key: &Digest, now: Instant) -> Option<String> {
        match self.entries.get(key) {
            Some((node, until)) if *until > now => Some(node.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&mut self, key: Digest, node: String, until: Instant, now: Instant) {
        if self.entries.len() >= self.limit && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, u)| *u > now);
            if self.entries.len() >= self.limit {
                let soonest = self.entries.iter().min_by_key(|(_, (_, u))| *u).map(|(k, _)| *k);
                if let Some(soonest) = soonest {
                    self.entries.remove(&soonest);
                }
            }
        }
        self.entries.insert(key, (node, until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(exp: SystemTime) -> String {
        let secs = exp.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
            r#"{{"aud":["trellis-controller"],"exp":{secs},"sub":"x"}}"#
        ));
        format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2lnbmF0dXJl")
    }

    #[test]
    fn a_review_is_trusted_for_a_minute_and_never_past_the_tokens_expiry() {
        let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let in_ = |secs| now + Duration::from_secs(secs);
        assert_eq!(cache_lifetime(&jwt(in_(3600)), now), CACHE_TTL);
        assert_eq!(cache_lifetime(&jwt(in_(20)), now), Duration::from_secs(20));
        assert_eq!(
            cache_lifetime(&jwt(now - Duration::from_secs(5)), now),
            Duration::ZERO
        );
        // Not a JWT, or one without `exp`: the default.
        assert_eq!(cache_lifetime("opaque-token", now), CACHE_TTL);
        assert_eq!(cache_lifetime("a.e30.b", now), CACHE_TTL);
    }

    #[test]
    fn cache_entries_expire_and_the_cache_stays_bounded() {
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut cache = Cache::new(2);
        cache.insert(digest("a"), "n1".into(), at(60), t0);
        assert_eq!(cache.get(&digest("a"), at(59)), Some("n1".into()));
        assert_eq!(cache.get(&digest("a"), at(60)), None, "expired");
        assert!(cache.entries.is_empty(), "an expired entry is dropped when found");

        // Full: the entry closest to expiry makes room.
        cache.insert(digest("a"), "n1".into(), at(30), t0);
        cache.insert(digest("b"), "n2".into(), at(60), t0);
        cache.insert(digest("c"), "n3".into(), at(60), at(1));
        assert_eq!(cache.entries.len(), 2);
        assert_eq!(cache.get(&digest("a"), at(2)), None);
        assert_eq!(cache.get(&digest("b"), at(2)), Some("n2".into()));
        assert_eq!(cache.get(&digest("c"), at(2)), Some("n3".into()));
        // Expired entries go first.
        cache.insert(digest("d"), "n4".into(), at(120), at(61));
        assert_eq!(cache.entries.len(), 1);
    }

    #[test]
    fn the_node_service_account_is_namespace_slash_name() {
        let sa: ServiceAccount = "trellis-system/mesh-node".parse().unwrap();
        assert_eq!(sa.username(), "system:serviceaccount:trellis-system:mesh-node");
        for bad in ["mesh-node", "/mesh-node", "trellis-system/", "a/b/c"] {
            let err = bad.parse::<ServiceAccount>().unwrap_err().to_string();
            assert!(err.contains("expected <namespace>/<name>"), "{bad}: {err}");
        }
    }
}
