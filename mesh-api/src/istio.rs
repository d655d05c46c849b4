//! Istio's configuration APIs as Rust types: every field of the current Istio reference, for
//! the API versions people still have in their repositories. Istio serves all versions of a
//! kind with one schema (no conversion), so one spec type serves them all; the versions only
//! matter for parsing (`apiVersion`) and for the CRD manifests.
//!
//! Each spec type implements [`Kind`]: where it lives in the Kubernetes API and Istio's own
//! validation of it (what `istioctl validate` and Istio's webhook reject).

pub mod crd;
pub mod networking;
pub mod security;

use std::fmt;

use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::objects::Meta;

/// A kind of Istio resource: its place in the API and its validation.
pub trait Kind: Serialize + DeserializeOwned + JsonSchema + Clone + fmt::Debug + PartialEq + Default {
    /// API group, e.g. `networking.istio.io`.
    const GROUP: &'static str;
    /// e.g. `VirtualService`.
    const KIND: &'static str;
    /// Resource name in the API path, e.g. `virtualservices`.
    const PLURAL: &'static str;
    /// Served versions, oldest first. The CRD stores the newest (last) one, as Istio's do
    /// (`kubernetes/customresourcedefinitions.gen.yaml` in istio/api stores v1).
    const VERSIONS: &'static [&'static str];
    /// `kubectl get vs`.
    const SHORT_NAMES: &'static [&'static str] = &[];

    /// Istio's validation of the spec. Paths are relative to the object (`spec.http[0]...`).
    fn validate(&self) -> Vec<FieldError> {
        Vec::new()
    }

    /// Whether `api_version` (`group/version`) is one of this kind's.
    fn accepts(api_version: &str) -> bool {
        api_version
            .strip_prefix(Self::GROUP)
            .and_then(|v| v.strip_prefix('/'))
            .is_some_and(|v| Self::VERSIONS.contains(&v))
    }
}

/// One invalid field: `path` as written in YAML from the object's root (`spec.mtls.mode`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// An object of kind `S`: the metadata Trellis uses and the typed spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource<S> {
    pub meta: Meta,
    pub spec: S,
}

impl<S> Resource<S> {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        self.meta.key()
    }
}

/// Implements [`Kind`] for a spec type; validation comes from a `fn validate(&self)` of the
/// type when given.
macro_rules! kind {
    ($spec:ty, $group:literal, $kind:literal, $plural:literal, [$($version:literal),+], [$($short:literal),*] $(, validate = $validate:path)?) => {
        impl $crate::istio::Kind for $spec {
            const GROUP: &'static str = $group;
            const KIND: &'static str = $kind;
            const PLURAL: &'static str = $plural;
            const VERSIONS: &'static [&'static str] = &[$($version),+];
            const SHORT_NAMES: &'static [&'static str] = &[$($short),*];
            $(fn validate(&self) -> Vec<$crate::istio::FieldError> {
                $validate(self)
            })?
        }
    };
}
pub(crate) use kind;
