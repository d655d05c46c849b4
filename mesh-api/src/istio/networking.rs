//! `networking.istio.io`: VirtualService, DestinationRule, ServiceEntry, Gateway, Sidecar
//! (v1alpha3, v1beta1, v1).
//!
//! Placeholder types until the full reference lands: they accept any spec.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::kind;

macro_rules! placeholder {
    ($($name:ident),*) => {$(
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $name(pub serde_json::Value);
    )*};
}
placeholder!(
    VirtualServiceSpec,
    DestinationRuleSpec,
    ServiceEntrySpec,
    GatewaySpec,
    SidecarSpec
);

kind!(
    VirtualServiceSpec,
    "networking.istio.io",
    "VirtualService",
    "virtualservices",
    ["v1alpha3", "v1beta1", "v1"],
    ["vs"]
);
kind!(
    DestinationRuleSpec,
    "networking.istio.io",
    "DestinationRule",
    "destinationrules",
    ["v1alpha3", "v1beta1", "v1"],
    ["dr"]
);
kind!(
    ServiceEntrySpec,
    "networking.istio.io",
    "ServiceEntry",
    "serviceentries",
    ["v1alpha3", "v1beta1", "v1"],
    ["se"]
);
kind!(
    GatewaySpec,
    "networking.istio.io",
    "Gateway",
    "gateways",
    ["v1alpha3", "v1beta1", "v1"],
    ["gw"]
);
kind!(
    SidecarSpec,
    "networking.istio.io",
    "Sidecar",
    "sidecars",
    ["v1alpha3", "v1beta1", "v1"],
    []
);
