//! `security.istio.io`: PeerAuthentication, RequestAuthentication, AuthorizationPolicy
//! (v1beta1, v1).
//!
//! RequestAuthentication and AuthorizationPolicy are placeholders until the full reference
//! lands: they accept any spec.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::kind;
pub use crate::peer_authentication::PeerAuthenticationSpec;

macro_rules! placeholder {
    ($($name:ident),*) => {$(
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $name(pub serde_json::Value);
    )*};
}
placeholder!(RequestAuthenticationSpec, AuthorizationPolicySpec);

kind!(
    PeerAuthenticationSpec,
    "security.istio.io",
    "PeerAuthentication",
    "peerauthentications",
    ["v1beta1", "v1"],
    ["pa"],
    validate = PeerAuthenticationSpec::field_errors
);
kind!(
    RequestAuthenticationSpec,
    "security.istio.io",
    "RequestAuthentication",
    "requestauthentications",
    ["v1beta1", "v1"],
    ["ra"]
);
kind!(
    AuthorizationPolicySpec,
    "security.istio.io",
    "AuthorizationPolicy",
    "authorizationpolicies",
    ["v1beta1", "v1"],
    ["ap"]
);
