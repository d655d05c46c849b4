//! What the controller reports about itself and its nodes (`/debug/syncz`), shared with
//! `mesh-ctl status` so both ends read the same types.

use serde::{Deserialize, Serialize};

use crate::node_config::{Diagnostic, NodeConfig};

/// The controller and every node it has seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControllerStatus {
    /// Where objects come from: `directory <path>` or `kubernetes`.
    pub source: String,
    /// The source's revision compiled last.
    pub revision: u64,
    pub objects: usize,
    /// Inputs refused by the source (a broken file, an invalid object).
    pub problems: Vec<Problem>,
    /// What the compiler found (unsupported fields, dangling references).
    pub diagnostics: Vec<Diagnostic>,
    pub nodes: Vec<NodeSync>,
}

/// One refused input, said the way an operator finds it: file and document, or object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `pods.yaml document 2 (Pod web)` or `VirtualService shop/reviews`.
    pub origin: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// The config sync state of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSync {
    pub node: String,
    pub connected: bool,
    /// Unix seconds of the last connect or disconnect.
    pub since: u64,
    /// The version the node said it enforced when it connected (0: none).
    pub applied_at_connect: u64,
    pub version_sent: u64,
    pub version_acked: u64,
    /// Unix seconds of the last ACK.
    pub acked_at: Option<u64>,
    pub last_nack: Option<Nack>,
    /// What the node last said of its pods (`None`: nothing yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<Enrollment>,
}

/// How a node's CNI state starts when the plugin is in place.
pub const CNI_CHAINED: &str = "chained into";

/// Which pods of its config a node has enrolled, and why the others are not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// `namespace/name`.
    pub enrolled: Vec<String>,
    pub not_enrolled: Vec<crate::selection::Skipped>,
    /// Where the node's CNI plugin stands (`chained into <conflist>`, or why not); `None`
    /// when the node does not manage it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<String>,
    /// Unix seconds of the report.
    pub at: u64,
}

impl NodeSync {
    /// In sync: connected and the last version sent is the one acknowledged.
    pub fn in_sync(&self) -> bool {
        self.connected && self.version_sent == self.version_acked && self.version_acked > 0
    }

    /// Why the node's CNI plugin is not in place, when it manages one and it is not.
    pub fn cni_problem(&self) -> Option<&str> {
        let cni = self.enrollment.as_ref()?.cni.as_deref()?;
        (!cni.starts_with(CNI_CHAINED)).then_some(cni)
    }

    /// The pods the node should have enrolled and has not, with the reason.
    pub fn not_enrolled(&self) -> &[crate::selection::Skipped] {
        self.enrollment.as_ref().map_or(&[], |e| &e.not_enrolled)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    pub version: u64,
    pub reason: String,
    /// Unix seconds.
    pub at: u64,
}

/// `/debug/config_dump?node=<name>`: what a node acknowledged enforcing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigDump {
    pub node: String,
    pub version: u64,
    pub config: NodeConfig,
}

/// Seconds since the Unix epoch, for status timestamps.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
