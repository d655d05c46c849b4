//! A running `mesh-controller` (config stream and CA) in the fabric namespace, where every
//! node reaches it at [`ADDR`]; its debug endpoint is on the fabric's loopback.

use std::{
    path::{Path, PathBuf},
    process::Child,
    time::Duration,
};

use anyhow::{bail, Context as _};

use crate::{eventually, netns::Netns};

/// Where nodes reach the CA (the fabric bridge's address).
pub const ADDR: &str = "198.18.0.254:15012";

pub struct Controller {
    child: Option<Child>,
    pub log: PathBuf,
    pub ca_dir: PathBuf,
    pub tokens: PathBuf,
    config_dir: PathBuf,
    cgroup: PathBuf,
    fabric: String,
}

/// The `mesh-ctl` binary next to `mesh-node`.
pub fn mesh_ctl() -> PathBuf {
    crate::node::binary().with_file_name("mesh-ctl")
}

/// The `mesh-controller` binary next to `mesh-node`.
pub fn binary() -> PathBuf {
    crate::node::binary().with_file_name("mesh-controller")
}

impl Controller {
    pub fn new(scratch: &Path, config_dir: &Path, cgroup: &Path, fabric: &Netns) -> Self {
        Self {
            child: None,
            log: scratch.join("controller.log"),
            ca_dir: scratch.join("ca"),
            tokens: scratch.join("tokens.yaml"),
            config_dir: config_dir.into(),
            cgroup: cgroup.into(),
            fabric: fabric.name.clone(),
        }
    }

    /// Starts the controller and waits until it serves.
    pub fn start(&mut self, fabric: &Netns) -> anyhow::Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = fabric
            .command(binary(), &self.cgroup)
            .arg("run")
            .arg("--config-dir")
            .arg(&self.config_dir)
            .arg("--ca-dir")
            .arg(&self.ca_dir)
            .arg("--node-tokens")
            .arg(&self.tokens)
            .args(["--listen", ADDR, "--log-format", "json"])
            .env("TRELLIS_LOG", "info")
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawning mesh-controller")?;
        self.child = Some(child);
        let addr: std::net::SocketAddr = ADDR.parse()?;
        let up = eventually(Duration::from_secs(10), || {
            let listening = fabric
                .run(move || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok());
            (listening && self.ca_dir.join("root-cert.pem").exists()).then_some(())
        });
        if up.is_none() {
            bail!(
                "mesh-controller in {} did not come up; log:\n{}",
                self.fabric,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// GET on the debug endpoint (`/debug/syncz`, `/debug/config_dump?node=n1`) as JSON.
    pub fn debug(&self, path: &str) -> serde_json::Value {
        let ns = Netns::attach(&self.fabric).expect("fabric namespace");
        let (status, body) =
            crate::http_get(&ns, "127.0.0.1:15014", path).expect("controller debug endpoint");
        assert_eq!(status, 200, "controller {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("controller {path} is not JSON ({e}): {body}"))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM: the controller ends the config streams and exits.
    pub fn terminate(&mut self) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
        }
    }

    /// Waits for the process to exit by itself, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        eventually(limit, || child.try_wait().ok().flatten())
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn root_pem(&self) -> String {
        std::fs::read_to_string(self.ca_dir.join("root-cert.pem")).expect("root-cert.pem")
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}
