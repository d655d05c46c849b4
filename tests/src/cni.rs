//! A container runtime's CNI half, as containerd drives it through libcni: the first
//! configuration list by name in the configuration directory, each plugin run in turn from
//! the plugin directories with the spec's environment and its network configuration on stdin
//! (the list's `name` and `cniVersion` added, the previous plugin's result as `prevResult`),
//! the result cached per sandbox for CHECK and DEL (which runs the list backwards). The
//! plugins are the real ones: Debian's containernetworking-plugins and `trellis-cni`.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::netns::Netns;

/// Where Debian installs the reference plugins.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// A pod sandbox as the runtime describes it to the plugins.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub container_id: String,
    pub netns: PathBuf,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Sandbox {
    /// What containerd passes in `CNI_ARGS` for a Kubernetes pod.
    fn args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.namespace, self.name, self.container_id, self.uid
        )
    }
}

/// A plugin's failure: the spec's error object.
#[derive(Debug, Clone)]
pub struct CniError {
    pub plugin: String,
    pub code: u64,
    pub msg: String,
    pub details: String,
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: code {}: {} ({})",
            self.plugin, self.code, self.msg, self.details
        )
    }
}

/// The runtime of one node: it runs the plugins in the node's network namespace (the host
/// side of every pod), in the node's host cgroup.
pub struct Runtime<'a> {
    pub node: &'a Netns,
    pub cgroup: PathBuf,
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    /// Results of ADD by container id, as libcni keeps them.
    results: BTreeMap<String, Value>,
}

impl<'a> Runtime<'a> {
    pub fn new(node: &'a Netns, cgroup: &Path, conf_dir: &Path, bin_dirs: &[&Path]) -> Self {
        Self {
            node,
            cgroup: cgroup.to_owned(),
            conf_dir: conf_dir.to_owned(),
            bin_dirs: bin_dirs.iter().map(|d| d.to_path_buf()).collect(),
            results: BTreeMap::new(),
        }
    }

    /// The configuration list the runtime uses now (the first file by name).
    pub fn conflist(&self) -> anyhow::Result<(PathBuf, Value)> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.conf_dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conflist"))
            .collect();
        files.sort();
        let path = files
            .into_iter()
            .next()
            .context("no .conflist in the CNI configuration directory")?;
        let list = serde_json::from_slice(&std::fs::read(&path)?)?;
        Ok((path, list))
    }

    /// ADD: the list in order; each plugin's result (the last is the sandbox's). An error
    /// stops the list, and the sandbox's network is torn down again, as containerd does
    /// before the kubelet retries.
    pub fn add(&mut self, sandbox: &Sandbox) -> anyhow::Result<Result<Vec<Value>, CniError>> {
        let (_, list) = self.conflist()?;
        let mut results: Vec<Value> = Vec::new();
        for plugin in plugins(&list)? {
            match self.exec("ADD", &list, plugin, results.last(), sandbox)? {
                Ok(result) => results.push(result),
                Err(e) => {
                    let partial = results.pop().unwrap_or(json!({}));
                    self.results.insert(sandbox.container_id.clone(), partial);
                    self.del(sandbox)?;
                    return Ok(Err(e));
                }
            }
        }
        let result = results.last().context("an empty plugin list")?;
        self.results.insert(sandbox.container_id.clone(), result.clone());
        Ok(Ok(results))
    }

    /// CHECK: the list in order, each given the cached ADD result.
    pub fn check(&self, sandbox: &Sandbox) -> anyhow::Result<Result<(), CniError>> {
        let (_, list) = self.conflist()?;
        let cached = self
            .results
            .get(&sandbox.container_id)
            .context("CHECK before ADD")?;
        for plugin in plugins(&list)? {
            if let Err(e) = self.exec("CHECK", &list, plugin, Some(cached), sandbox)? {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }

    /// DEL: the list backwards, each given the cached ADD result. Errors are returned but
    /// the rest of the list still runs.
    pub fn del(&mut self, sandbox: &Sandbox) -> anyhow::Result<Vec<CniError>> {
        let (_, list) = self.conflist()?;
        let cached = self.results.remove(&sandbox.container_id);
        let mut errors = Vec::new();
        for plugin in plugins(&list)?.iter().rev() {
            if let Err(e) = self.exec("DEL", &list, plugin, cached.as_ref(), sandbox)? {
                errors.push(e);
            }
        }
        Ok(errors)
    }

    fn exec(
        &self,
        command: &str,
        list: &Value,
        plugin: &Value,
        prev: Option<&Value>,
        sandbox: &Sandbox,
    ) -> anyhow::Result<Result<Value, CniError>> {
        let kind = plugin["type"].as_str().context("a plugin without a type")?;
        let binary = self
            .bin_dirs
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.is_file())
            .with_context(|| format!("plugin {kind} is in none of {:?}", self.bin_dirs))?;
        let mut conf = plugin.clone();
        conf["name"] = list["name"].clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        let cni_path = std::env::join_paths(&self.bin_dirs)?;
        let mut child = self
            .node
            .command(&binary, &self.cgroup)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &sandbox.container_id)
            .env("CNI_NETNS", &sandbox.netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_ARGS", sandbox.args())
            .env("CNI_PATH", cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", binary.display()))?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(&serde_json::to_vec(&conf)?)?;
        let out = child.wait_with_output()?;
        let stdout: Value = if out.stdout.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&out.stdout).with_context(|| {
                format!(
                    "{kind} {command} printed no JSON: {:?} (stderr {:?})",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            })?
        };
        if out.status.success() {
            return Ok(Ok(stdout));
        }
        if stdout.get("code").is_none() {
            bail!(
                "{kind} {command} failed without an error object: {:?}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Err(CniError {
            plugin: kind.into(),
            code: stdout["code"].as_u64().unwrap_or(0),
            msg: stdout["msg"].as_str().unwrap_or_default().into(),
            details: stdout["details"].as_str().unwrap_or_default().into(),
        }))
    }
}

fn plugins(list: &Value) -> anyhow::Result<&Vec<Value>> {
    list["plugins"]
        .as_array()
        .context("a configuration list without plugins")
}

/// The IPv4 address a result gives the pod.
pub fn result_ipv4(result: &Value) -> Option<std::net::Ipv4Addr> {
    result["ips"]
        .as_array()?
        .iter()
        .find_map(|ip| ip["address"].as_str()?.split('/').next()?.parse().ok())
}

/// A primary CNI's configuration list: the reference bridge plugin on `bridge` with
/// host-local addresses from `subnet` (gateway on the bridge, default route through it),
/// leases kept in `data_dir`.
pub fn bridge_conflist(bridge: &str, subnet: &str, data_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "pods",
        "plugins": [{
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "subnet": subnet,
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": data_dir,
            }
        }]
    })
}
