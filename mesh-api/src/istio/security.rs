//! `security.istio.io`: PeerAuthentication, RequestAuthentication, AuthorizationPolicy
//! (v1beta1, v1), every field of the current Istio reference, with Istio's validation.

pub mod authorization_policy;
pub mod common;
pub mod request_authentication;

use super::kind;
pub use crate::peer_authentication::PeerAuthenticationSpec;
pub use authorization_policy::AuthorizationPolicySpec;
pub use common::{PolicyTargetReference, WorkloadSelector};
pub use request_authentication::RequestAuthenticationSpec;

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
    ["ra"],
    validate = RequestAuthenticationSpec::field_errors
);
kind!(
    AuthorizationPolicySpec,
    "security.istio.io",
    "AuthorizationPolicy",
    "authorizationpolicies",
    ["v1beta1", "v1"],
    ["ap"],
    validate = AuthorizationPolicySpec::field_errors
);
