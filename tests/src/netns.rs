//! A network namespace with a thread inside it. Work for the namespace (servers, in-process
//! clients, reading its counters) runs on that thread, the ztunnel test-helper way: setns
//! moves only the calling thread, so the rest of the test process stays where it was.

use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::PathBuf,
    process::Command,
    thread::JoinHandle,
};

use anyhow::{bail, Context as _};
use tokio::sync::mpsc;

type Job = Box<dyn FnOnce() + Send>;

pub struct Netns {
    pub name: String,
    jobs: Option<mpsc::UnboundedSender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// Created (and so deleted) by this handle.
    owned: bool,
}

/// Runs `ip` with arguments, failing with its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Netns {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        // A leftover from a killed run with the same name would make `add` fail.
        let _ = ip(&["netns", "del", name]);
        ip(&["netns", "add", name])?;
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        let mut ns = Self::attach(name)?;
        ns.owned = true;
        Ok(ns)
    }

    /// A second thread inside an existing namespace, which it does not delete on drop.
    pub fn attach(name: &str) -> anyhow::Result<Self> {
        let file = File::open(format!("/run/netns/{name}")).context("opening the new netns")?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let thread = std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(move || {
                // SAFETY: setns on this thread with a valid namespace fd.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    panic!("setns: {}", std::io::Error::last_os_error());
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    while let Some(job) = rx.recv().await {
                        job();
                        // Let spawned tasks (servers) make progress between jobs.
                        tokio::task::yield_now().await;
                    }
                });
            })?;
        Ok(Self {
            name: name.to_string(),
            jobs: Some(tx),
            thread: Some(thread),
            owned: false,
        })
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// Runs `f` on the namespace's thread and returns its result. `f` may `tokio::spawn`
    /// tasks, which keep running on that thread.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs
            .as_ref()
            .expect("netns alive")
            .send(job)
            .expect("netns thread alive");
        rx.recv().expect("netns job panicked")
    }

    /// Runs a future on the namespace's runtime and waits for its output.
    pub fn run_async<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        self.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().expect("netns task panicked")
    }

    /// Starts a future on the namespace's runtime.
    pub fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.run(move || {
            tokio::spawn(fut);
        });
    }

    /// A command that runs inside this namespace and in the given cgroup (joined before the
    /// namespace, as the kernel programs select by cgroup).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>, cgroup: &std::path::Path) -> Command {
        NetnsPath(self.path()).command(program, cgroup)
    }

    /// Applies an nftables script inside this namespace (`nft -f -`), failing with nft's
    /// complaint.
    pub fn nft(&self, script: &str) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| anyhow::anyhow!("running nft (cargo xtask setup installs nftables): {e}"))?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "nft in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// A TCP counter once it stopped moving (unchanged over 300 ms, for at most 3 s): the
    /// baseline for "nothing more arrives", after the last segments of earlier connections.
    pub fn settled_tcp_counter(&self, name: &'static str) -> u64 {
        let mut last = self.tcp_counter(name);
        let mut still_since = std::time::Instant::now();
        let deadline = still_since + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let now = self.tcp_counter(name);
            if now != last {
                (last, still_since) = (now, std::time::Instant::now());
            } else if still_since.elapsed() >= std::time::Duration::from_millis(300) {
                break;
            }
        }
        last
    }

    /// A TCP counter of this namespace from `/proc/net/snmp` (e.g. "InSegs").
    pub fn tcp_counter(&self, name: &'static str) -> u64 {
        self.run(move || {
            // thread-self: the namespace of this thread, not of the process.
            let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("snmp");
            let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
            let (names, values) = (tcp.next().expect("Tcp header"), tcp.next().expect("Tcp values"));
            let i = names
                .split_whitespace()
                .position(|n| n == name)
                .expect("counter name");
            values
                .split_whitespace()
                .nth(i)
                .and_then(|v| v.parse().ok())
                .expect("counter value")
        })
    }
}

/// A namespace known only by its path, for spawning commands from any thread.
pub struct NetnsPath(pub PathBuf);

impl NetnsPath {
    /// A command that joins `cgroup`, then this network namespace, before exec.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>, cgroup: &std::path::Path) -> Command {
        let mut cmd = Command::new(program);
        let ns = File::open(&self.0).expect("netns file");
        let procs =
            std::ffi::CString::new(cgroup.join("cgroup.procs").to_string_lossy().as_bytes()).expect("path");
        // SAFETY: only async-signal-safe calls (open, write, close, setns) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if self.owned {
            let _ = ip(&["netns", "del", &self.name]);
        }
    }
}
