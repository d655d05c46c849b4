//! A running `mesh-node`: started inside its node's namespace and `proxy` cgroup, logging
//! JSON to a file, with helpers to read its admin endpoint and access log.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::{eventually, netns::Netns, topology::Node};

pub struct MeshNode {
    child: Child,
    /// Earlier processes of this node that were asked to stop and may still be draining.
    draining: Vec<Child>,
    pub log: PathBuf,
    /// The namespace's name, for admin requests.
    netns: String,
    admin: Netns,
}

/// The `mesh-node` binary: `$TRELLIS_NODE_BIN`, or the one built next to the running
/// executable (see [`built_binary`]). `cargo xtask test` builds it first.
pub fn binary() -> PathBuf {
    match std::env::var_os("TRELLIS_NODE_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => built_binary("mesh-node"),
    }
}

/// A binary of the workspace built in the same target directory as the running executable
/// (a test in `target/<profile>/deps/`, or xtask in `target/<profile>/`).
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("running executable");
    let candidates: Vec<PathBuf> = exe.ancestors().skip(1).take(2).map(|d| d.join(name)).collect();
    candidates
        .iter()
        .find(|b| b.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{name} is not built next to {}: run `cargo build --bins` (or `cargo xtask test`)",
                exe.display()
            )
        })
}

impl MeshNode {
    pub fn start(
        node: &Node,
        scratch: &Path,
        bpffs: &Path,
        previous: Option<MeshNode>,
        extra_args: &[String],
    ) -> anyhow::Result<Self> {
        let log = scratch.join(format!("{}.log", node.name));
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let child = node
            .netns
            .command(binary(), &node.cgroup.join("proxy"))
            .args([
                "run",
                "--node-name",
                &node.name,
                "--node-ip",
                &node.addr.to_string(),
            ])
            .arg("--cgroup")
            .arg(&node.cgroup)
            .arg("--bpffs-dir")
            .arg(bpffs)
            .args(["--log-format", "json", "--connect-timeout-ms", "1000"])
            .args(["--drain-timeout-secs", "20"])
            // Every simulated node has a CNI socket of its own (one machine, many nodes).
            .arg("--cni-socket")
            .arg(scratch.join(format!("{}-cni.sock", node.name)))
            .arg("--cni-namespaces-file")
            .arg(scratch.join(format!("{}-enrolled-namespaces.json", node.name)))
            .args(extra_args)
            .env("TRELLIS_LOG", "info")
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawning mesh-node")?;
        let mut draining = Vec::new();
        if let Some(mut prev) = previous {
            draining.append(&mut prev.draining);
            // Keep the old process; Drop of `prev` must not kill it.
            let old = std::mem::replace(&mut prev.child, dummy_child()?);
            draining.push(old);
        }
        let mut me = Self {
            child,
            draining,
            log,
            netns: node.netns.name.clone(),
            admin: Netns::attach(&node.netns.name)?,
        };
        let ready = eventually(Duration::from_secs(15), || {
            if let Ok(Some(status)) = me.child.try_wait() {
                return Some(Err(anyhow::anyhow!("mesh-node exited with {status}")));
            }
            match me.admin_raw("/ready") {
                Ok((200, _)) => Some(Ok(())),
                _ => None,
            }
        });
        match ready {
            Some(Ok(())) => Ok(me),
            Some(Err(e)) => bail!("{e}; log:\n{}", me.log_text()),
            None => bail!(
                "mesh-node on {} not ready after 15s; log:\n{}",
                me.netns,
                me.log_text()
            ),
        }
    }

    /// GET on the admin endpoint; the body as JSON.
    pub fn admin(&self, path: &str) -> Value {
        let (status, body) = self.admin_raw(path).expect("admin endpoint reachable");
        assert_eq!(status, 200, "admin {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("admin {path} is not JSON ({e}): {body}"))
    }

    /// GET on the admin endpoint, as text (e.g. `/metrics`).
    pub fn admin_text(&self, path: &str) -> String {
        let (status, body) = self.admin_raw(path).expect("admin endpoint reachable");
        assert_eq!(status, 200, "admin {path}: {body}");
        body
    }

    /// GET on the admin endpoint: status and body, whatever the status.
    pub fn admin_raw(&self, path: &str) -> std::io::Result<(u16, String)> {
        crate::http_get(&self.admin, "127.0.0.1:15000", path)
    }

    /// A kernel counter summed over CPUs (see `mesh_common::counters::NAMES`).
    pub fn counter(&self, name: &str) -> u64 {
        self.admin("/stats")["kernel"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no kernel counter {name}"))
    }

    /// Every access-log event so far, oldest first (all processes of this node).
    pub fn access_log(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "access")
            .collect()
    }

    /// Waits until the access log has at least `n` events and returns them.
    pub fn wait_access_log(&self, n: usize) -> Vec<Value> {
        eventually(Duration::from_secs(5), || {
            let log = self.access_log();
            (log.len() >= n).then_some(log)
        })
        .unwrap_or_else(|| panic!("expected {n} access-log events, got {:#?}", self.access_log()))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM: listeners close, established connections drain.
    pub fn terminate(&mut self) {
        signal(&self.child, libc::SIGTERM);
    }

    /// SIGKILL: the proxy dies at once; the pinned datapath stays.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id of the running mesh-node.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the main process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit by itself, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        eventually(limit, || self.child.try_wait().ok().flatten())
    }

    /// Waits for earlier (draining) processes to exit by themselves.
    pub fn wait_drained(&mut self, limit: Duration) -> bool {
        eventually(limit, || {
            self.draining
                .iter_mut()
                .all(|c| matches!(c.try_wait(), Ok(Some(_))))
                .then_some(())
        })
        .is_some()
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// A placeholder child that has already exited, so a moved-out handle can be dropped.
fn dummy_child() -> anyhow::Result<Child> {
    let mut c = std::process::Command::new("true").stdin(Stdio::null()).spawn()?;
    let _ = c.wait();
    Ok(c)
}

impl Drop for MeshNode {
    fn drop(&mut self) {
        for c in std::iter::once(&mut self.child).chain(self.draining.iter_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
