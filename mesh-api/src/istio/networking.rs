//! `networking.istio.io`: VirtualService, DestinationRule, ServiceEntry, Gateway, Sidecar
//! (v1alpha3, v1beta1, v1), every field of the current Istio reference
//! (<https://istio.io/latest/docs/reference/config/networking/>), with Istio's validation.
//!
//! Conventions: unknown fields are errors; fields not written stay absent through a round
//! trip (proto3 scalars are `Option`s); proto enums keep Istio's spelling; a proto `oneof`
//! is a Rust enum, written in YAML as Istio writes it (sibling fields, at most one set).

pub mod common;
pub mod destination_rule;
pub mod gateway;
pub mod service_entry;
pub mod sidecar;
pub mod virtual_service;

pub use destination_rule::DestinationRuleSpec;
pub use gateway::GatewaySpec;
pub use service_entry::ServiceEntrySpec;
pub use sidecar::SidecarSpec;
pub use virtual_service::VirtualServiceSpec;

use super::kind;

/// A type whose YAML form (and so its schema) is another, flatter type: used for messages
/// with a oneof among sibling fields.
macro_rules! schema_as {
    ($ty:ty, $fields:ty) => {
        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                <$fields as schemars::JsonSchema>::schema_name()
            }
            fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                <$fields as schemars::JsonSchema>::json_schema(generator)
            }
        }
    };
}
use schema_as;

kind!(
    VirtualServiceSpec,
    "networking.istio.io",
    "VirtualService",
    "virtualservices",
    ["v1alpha3", "v1beta1", "v1"],
    ["vs"],
    validate = VirtualServiceSpec::field_errors
);
kind!(
    DestinationRuleSpec,
    "networking.istio.io",
    "DestinationRule",
    "destinationrules",
    ["v1alpha3", "v1beta1", "v1"],
    ["dr"],
    validate = DestinationRuleSpec::field_errors
);
kind!(
    ServiceEntrySpec,
    "networking.istio.io",
    "ServiceEntry",
    "serviceentries",
    ["v1alpha3", "v1beta1", "v1"],
    ["se"],
    validate = ServiceEntrySpec::field_errors
);
kind!(
    GatewaySpec,
    "networking.istio.io",
    "Gateway",
    "gateways",
    ["v1alpha3", "v1beta1", "v1"],
    ["gw"],
    validate = GatewaySpec::field_errors
);
kind!(
    SidecarSpec,
    "networking.istio.io",
    "Sidecar",
    "sidecars",
    ["v1alpha3", "v1beta1", "v1"],
    [],
    validate = SidecarSpec::field_errors
);
