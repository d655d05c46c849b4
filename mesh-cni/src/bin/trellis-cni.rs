//! `trellis-cni`: a chained CNI plugin (spec 1.0/1.1). It adds nothing to the pod's network;
//! it tells the Trellis node agent about the pod's sandbox so that a pod of an enrolled
//! namespace is captured before it starts, and passes the primary plugin's result on
//! unchanged.
//!
//! - ADD: the agent gets the pod's names, UID, addresses and network namespace (as an open
//!   descriptor). A pod it enrolls, or one outside the mesh, goes on; a pod of an enrolled
//!   namespace that is not captured yet fails with code 11 ("try again later") and the
//!   runtime retries. When the agent does not answer, the namespaces it last wrote to disk
//!   decide: a pod of an enrolled namespace waits, any other pod goes on.
//! - CHECK: the same question, without changing anything.
//! - DEL: the agent forgets the sandbox; never fails (DEL must succeed when things are
//!   gone already).
//! - VERSION, STATUS, GC: answered here. STATUS reports ready even with the agent down: pods
//!   outside the mesh must keep starting, and those inside wait in their own ADD.

use std::{
    collections::BTreeMap,
    io::Read as _,
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use mesh_cni::protocol::{self, Command, EnrolledNamespaces, PodRef, Reply, Request};
use serde::Deserialize;
use serde_json::{json, Value};

const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// How long an ADD waits for the agent (which itself waits a few seconds for the pod to be
/// enrolled).
const AGENT_TIMEOUT: Duration = Duration::from_secs(15);

/// CNI's well-known error codes (spec, "Error").
const INCOMPATIBLE_VERSION: u32 = 1;
const INVALID_ENV: u32 = 4;
const DECODE_ERROR: u32 = 6;
const INVALID_CONFIG: u32 = 7;
const TRY_AGAIN_LATER: u32 = 11;

/// The network configuration on stdin: the fields this plugin reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetConf {
    #[serde(default = "default_version")]
    cni_version: String,
    #[serde(default)]
    prev_result: Option<Value>,
    #[serde(default = "default_socket")]
    socket: PathBuf,
    #[serde(default = "default_namespaces_file")]
    enrolled_namespaces_file: PathBuf,
}

fn default_version() -> String {
    "1.0.0".into()
}
fn default_socket() -> PathBuf {
    protocol::DEFAULT_SOCKET.into()
}
fn default_namespaces_file() -> PathBuf {
    protocol::DEFAULT_NAMESPACES_FILE.into()
}

/// A CNI error: printed as the spec's error object on stdout.
struct Failure {
    code: u32,
    msg: String,
    details: String,
}

fn fail(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Failure {
    Failure {
        code,
        msg: msg.into(),
        details: details.into(),
    }
}

fn main() -> ExitCode {
    let env: BTreeMap<String, String> = std::env::vars().filter(|(k, _)| k.starts_with("CNI_")).collect();
    let mut stdin = Vec::new();
    let version = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => serde_json::from_slice::<Value>(&stdin)
            .ok()
            .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(String::from))
            .unwrap_or_else(default_version),
        Err(_) => default_version(),
    };
    match run(&env, &stdin) {
        Ok(Some(out)) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(f) => {
            println!(
                "{}",
                json!({"cniVersion": version, "code": f.code, "msg": f.msg, "details": f.details})
            );
            ExitCode::FAILURE
        }
    }
}

fn run(env: &BTreeMap<String, String>, stdin: &[u8]) -> Result<Option<Value>, Failure> {
    let command = env.get("CNI_COMMAND").map(String::as_str).unwrap_or_default();
    if command == "VERSION" {
        return Ok(Some(
            json!({"cniVersion": "1.1.0", "supportedVersions": SUPPORTED}),
        ));
    }
    let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
        fail(
            DECODE_ERROR,
            "the network configuration on stdin is not valid",
            e.to_string(),
        )
    })?;
    if !SUPPORTED.contains(&conf.cni_version.as_str()) {
        return Err(fail(
            INCOMPATIBLE_VERSION,
            format!("CNI version {} is not supported", conf.cni_version),
            format!("supported: {}", SUPPORTED.join(", ")),
        ));
    }
    match command {
        "ADD" | "CHECK" => {
            let prev = conf.prev_result.clone().ok_or_else(|| {
                fail(
                    INVALID_CONFIG,
                    "trellis-cni is a chained plugin and got no prevResult",
                    "list it after the primary plugin in the CNI configuration list",
                )
            })?;
            let kind = if command == "ADD" {
                Command::Add
            } else {
                Command::Check
            };
            admit(kind, env, &conf, &prev)?;
            Ok((kind == Command::Add).then(|| with_version(prev, &conf.cni_version)))
        }
        "DEL" => {
            // Best effort: the agent also drops a sandbox whose namespace is gone.
            if let Some((pod, container_id)) = pod_of(env)? {
                let request = Request {
                    command: Command::Del,
                    container_id,
                    pod,
                    ips: Vec::new(),
                    interface: env.get("CNI_IFNAME").cloned().unwrap_or_default(),
                };
                let _ = protocol::call(&conf.socket, &request, None, AGENT_TIMEOUT);
            }
            Ok(None)
        }
        "STATUS" | "GC" => Ok(None),
        other => Err(fail(INVALID_ENV, format!("unknown CNI_COMMAND {other:?}"), "")),
    }
}

/// ADD or CHECK: whether the pod may go on.
fn admit(
    command: Command,
    env: &BTreeMap<String, String>,
    conf: &NetConf,
    prev: &Value,
) -> Result<(), Failure> {
    // Not a Kubernetes pod (no K8S_POD_NAMESPACE): nothing of the mesh's.
    let Some((pod, container_id)) = pod_of(env)? else {
        return Ok(());
    };
    let netns = env.get("CNI_NETNS").filter(|p| !p.is_empty()).ok_or_else(|| {
        fail(
            INVALID_ENV,
            "CNI_NETNS is not set",
            "the runtime must name the pod's network namespace",
        )
    })?;
    let ns_file = open_netns(Path::new(netns)).map_err(|e| {
        fail(
            INVALID_ENV,
            format!("opening the pod's network namespace {netns}"),
            e.to_string(),
        )
    })?;
    let request = Request {
        command,
        container_id,
        ips: addresses(prev),
        interface: env.get("CNI_IFNAME").cloned().unwrap_or_default(),
        pod,
    };
    match protocol::call(&conf.socket, &request, Some(ns_file.as_fd()), AGENT_TIMEOUT) {
        Ok(Reply::Enrolled | Reply::NotInMesh { .. } | Reply::Forgotten) => Ok(()),
        Ok(Reply::Retry { reason }) => Err(fail(
            TRY_AGAIN_LATER,
            format!("pod {} is not in the mesh yet", request.pod.key()),
            reason,
        )),
        Err(e) => agent_unreachable(&request.pod, conf, &e.to_string()),
    }
}

/// The agent did not answer: the namespaces it last wrote decide.
fn agent_unreachable(pod: &PodRef, conf: &NetConf, error: &str) -> Result<(), Failure> {
    let file = &conf.enrolled_namespaces_file;
    let enrolled = match EnrolledNamespaces::read(file) {
        Ok(Some(known)) => known.namespaces.contains(&pod.namespace),
        // No agent ever ran here (or it was uninstalled): nothing is enrolled.
        Ok(None) => false,
        Err(e) => {
            return Err(fail(
                TRY_AGAIN_LATER,
                format!(
                    "the Trellis node agent does not answer and {} is unreadable",
                    file.display()
                ),
                format!("{error}; {e}"),
            ))
        }
    };
    if enrolled {
        Err(fail(
            TRY_AGAIN_LATER,
            format!(
                "namespace {} is in the mesh and the Trellis node agent does not answer: pod {} waits for it",
                pod.namespace,
                pod.key()
            ),
            format!("{error}: is the Trellis node agent (DaemonSet) running on this node?"),
        ))
    } else {
        Ok(())
    }
}

/// The pod named in `CNI_ARGS`, with the sandbox id; `None` for a sandbox that is not a
/// Kubernetes pod.
fn pod_of(env: &BTreeMap<String, String>) -> Result<Option<(PodRef, String)>, Failure> {
    let args: BTreeMap<&str, &str> = env
        .get("CNI_ARGS")
        .map(|a| a.split(';').filter_map(|kv| kv.split_once('=')).collect())
        .unwrap_or_default();
    let (Some(namespace), Some(name)) = (args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME")) else {
        return Ok(None);
    };
    let container_id = env
        .get("CNI_CONTAINERID")
        .filter(|c| !c.is_empty())
        .cloned()
        .ok_or_else(|| fail(INVALID_ENV, "CNI_CONTAINERID is not set", ""))?;
    Ok(Some((
        PodRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: args.get("K8S_POD_UID").map(|u| u.to_string()),
        },
        container_id,
    )))
}

/// The addresses of the primary plugin's result (`ips[].address`, CIDR notation); results of
/// CNI 0.3/0.4 have the same field.
fn addresses(result: &Value) -> Vec<std::net::IpAddr> {
    result
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.get("address")?.as_str()?.split('/').next()?.parse().ok())
        .collect()
}

/// The result passed on, in the configuration's version.
fn with_version(mut result: Value, version: &str) -> Value {
    if let Some(obj) = result.as_object_mut() {
        obj.insert("cniVersion".into(), version.into());
    }
    result
}

/// Opens the namespace without blocking (a FIFO at that path would otherwise hang the ADD).
fn open_netns(path: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    Ok(file.into())
}
