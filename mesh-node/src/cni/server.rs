//! The unix socket `trellis-cni` calls on every pod sandbox: ADD enrolls a pod of the mesh
//! before the runtime starts it (the ADD waits for the enrollment pass, a few seconds at
//! most, then asks the runtime to retry), CHECK says whether it still is, DEL forgets the
//! sandbox.
//!
//! The decision ([`admission`]) is a pure function of the published registry; the socket,
//! the descriptors and the waiting are the I/O around it.

use std::{
    collections::BTreeSet,
    fs::File,
    os::unix::{
        fs::{FileTypeExt as _, PermissionsExt as _},
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use mesh_cni::protocol::{self, Command, EnrolledNamespaces, PodRef, Reply, Request};
use tokio::sync::Notify;

use super::Error;
use crate::{
    datapath::netns,
    workloads::{
        enrollment::Registry,
        sandboxes::{Sandbox, Sandboxes},
    },
};

/// How long an ADD waits for its pod to be enrolled before the runtime is asked to retry.
pub const ADD_WAIT: Duration = Duration::from_secs(5);
/// How often a waiting ADD looks at the registry again.
const POLL: Duration = Duration::from_millis(50);
/// ADDs waiting for their pod's enrollment at once; more are asked to retry at once (a node
/// starts pods a few at a time). DELs and pods outside the mesh never wait.
const MAX_WAITING: usize = 64;

/// What the CNI plugin's requests are answered from.
pub struct CniServer {
    pub registry: Arc<ArcSwap<Registry>>,
    pub sandboxes: Arc<Mutex<Sandboxes>>,
    /// Wakes the enrollment loop for a pass now, instead of at its next tick.
    pub kick: Arc<Notify>,
    /// The enrolled namespaces a previous agent left, for the time before the first config.
    pub namespaces_file: PathBuf,
    waiting: AtomicUsize,
}

/// Whether a pod may start, from what the node knows now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Enrolled in this very namespace (cookie).
    Enrolled,
    /// Not part of the mesh; the reason.
    NotInMesh(String),
    /// Part of the mesh, not captured yet; the reason.
    Pending(String),
}

/// The decision for a pod sandbox whose network namespace has `cookie`. `persisted` is the
/// last agent's list of enrolled namespaces, used before this agent has a config.
pub fn admission(
    reg: &Registry,
    persisted: Option<&BTreeSet<String>>,
    pod: &PodRef,
    cookie: u64,
) -> Admission {
    let key = pod.key();
    if let Some(e) = reg.workloads.get(&key) {
        let same_pod = pod.uid.is_none() || e.workload.uid.is_none() || pod.uid == e.workload.uid;
        if same_pod && e.datapath.netns_cookie == cookie {
            return Admission::Enrolled;
        }
        return Admission::Pending("its previous sandbox is enrolled; enrolling this one".into());
    }
    if let Some(f) = reg.failed.iter().find(|f| f.pod == key) {
        if reg.unsupported.contains(&key) {
            return Admission::NotInMesh(f.reason.clone());
        }
        return Admission::Pending(f.reason.clone());
    }
    if let Some(s) = reg.skipped.iter().find(|s| s.pod == key) {
        return Admission::NotInMesh(s.reason.clone());
    }
    let (namespaces, whose) = if reg.config_version > 0 {
        (Some(&reg.enrolled_namespaces), "the controller's config")
    } else {
        (
            persisted,
            "the last config this node had (none from the controller yet)",
        )
    };
    if namespaces.is_some_and(|n| n.contains(&pod.namespace)) {
        Admission::Pending(format!(
            "namespace {} is in the mesh by {whose}, which does not list pod {key} yet",
            pod.namespace
        ))
    } else {
        Admission::NotInMesh(format!("namespace {} is not in the mesh", pod.namespace))
    }
}

impl CniServer {
    pub fn new(
        registry: Arc<ArcSwap<Registry>>,
        sandboxes: Arc<Mutex<Sandboxes>>,
        kick: Arc<Notify>,
        namespaces_file: PathBuf,
    ) -> Self {
        Self {
            registry,
            sandboxes,
            kick,
            namespaces_file,
            waiting: AtomicUsize::new(0),
        }
    }

    /// Binds the socket (root only: what comes in is trusted to be the runtime's), replacing
    /// a stale one a previous agent left.
    pub fn bind(path: &Path) -> Result<UnixListener, Error> {
        let err = |source| Error::Listen {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            std::fs::remove_file(path).map_err(err)?;
        }
        let listener = UnixListener::bind(path).map_err(err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        Ok(listener)
    }

    /// Serves until the process ends, a thread per request.
    pub fn serve(self: Arc<Self>, listener: UnixListener) {
        for stream in listener.incoming() {
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a CNI plugin connection");
                    std::thread::sleep(POLL);
                    continue;
                }
            };
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name("cni-request".into())
                .spawn(move || me.handle(stream));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "starting a thread for a CNI request");
            }
        }
    }

    fn handle(&self, mut stream: UnixStream) {
        // The socket is root's only (mode 0600); a process that got hold of it otherwise
        // (a descriptor passed on) is still refused.
        match protocol::peer_uid(&stream) {
            Ok(0) => {}
            Ok(uid) => {
                tracing::warn!(uid, "a CNI request from a process not running as root: refused");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the CNI plugin's credentials");
                return;
            }
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let (request, fd) = match protocol::receive(&mut stream) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable request from the CNI plugin");
                return;
            }
        };
        let reply = self.reply(&request, fd.map(File::from));
        tracing::info!(
            command = ?request.command,
            pod = %request.pod.key(),
            container_id = %request.container_id,
            reply = ?reply,
            "CNI request"
        );
        if let Err(e) = protocol::answer(&mut stream, &reply) {
            tracing::warn!(pod = %request.pod.key(), error = %e, "answering the CNI plugin");
        }
    }

    fn reply(&self, request: &Request, netns: Option<File>) -> Reply {
        if request.command == Command::Del {
            let forgot = self.lock().remove(&request.pod.key(), &request.container_id);
            if forgot {
                self.kick.notify_one();
            }
            return Reply::Forgotten;
        }
        let Some(netns) = netns else {
            return Reply::Retry {
                reason: "the request came without the pod's network namespace".into(),
            };
        };
        let cookie = match netns::check_pod_netns(&netns).and_then(|()| netns::cookie_of(&netns)) {
            Ok(c) => c,
            Err(e) => {
                return Reply::Retry {
                    reason: format!("the descriptor passed as the pod's network namespace: {e}"),
                }
            }
        };
        // The file is only consulted before the first config (`admission`); with one, the
        // registry's namespaces decide and the file is not read.
        let persisted = (self.registry.load().config_version == 0)
            .then(|| EnrolledNamespaces::read(&self.namespaces_file).ok().flatten())
            .flatten()
            .map(|n| n.namespaces.into_iter().collect::<BTreeSet<_>>());
        let decide = || admission(&self.registry.load(), persisted.as_ref(), &request.pod, cookie);
        match (request.command, decide()) {
            (_, Admission::Enrolled) => return Reply::Enrolled,
            (_, Admission::NotInMesh(reason)) => return Reply::NotInMesh { reason },
            (Command::Check, Admission::Pending(reason)) => return Reply::Retry { reason },
            _ => {}
        }
        let Some(_slot) = WaitSlot::take(&self.waiting) else {
            return Reply::Retry {
                reason: format!("the node agent is already waiting on {MAX_WAITING} pods"),
            };
        };
        self.lock().add(
            request.pod.key(),
            Sandbox {
                container_id: request.container_id.clone(),
                uid: request.pod.uid.clone(),
                ips: request.ips.clone(),
                netns,
                reported_at: Instant::now(),
            },
        );
        self.kick.notify_one();
        let deadline = Instant::now() + ADD_WAIT;
        loop {
            std::thread::sleep(POLL);
            match decide() {
                Admission::Enrolled => return Reply::Enrolled,
                Admission::NotInMesh(reason) => {
                    self.lock().remove(&request.pod.key(), &request.container_id);
                    return Reply::NotInMesh { reason };
                }
                // The sandbox stays: the runtime's retry, or the next pass, finds it.
                Admission::Pending(reason) if Instant::now() >= deadline => return Reply::Retry { reason },
                Admission::Pending(_) => {}
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sandboxes> {
        self.sandboxes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One of the [`MAX_WAITING`] places, given back when dropped (also on a panic).
struct WaitSlot<'a>(&'a AtomicUsize);

impl<'a> WaitSlot<'a> {
    fn take(count: &'a AtomicUsize) -> Option<Self> {
        if count.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(count))
    }
}

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        datapath::PodDatapath,
        workloads::{enrollment::EnrolledWorkload, Skipped, Workload},
    };

    fn pod(namespace: &str, name: &str, uid: Option<&str>) -> PodRef {
        PodRef {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.map(String::from),
        }
    }

    fn registry() -> Registry {
        let mut reg = Registry::default();
        reg.config_version = 3;
        reg.enrolled_namespaces = ["shop".to_string()].into();
        reg.workloads.insert(
            "shop/web".into(),
            EnrolledWorkload {
                workload: Workload {
                    namespace: "shop".into(),
                    name: "web".into(),
                    uid: Some("u1".into()),
                    service_account: "web".into(),
                    ip: None,
                    netns: None,
                    labels: Default::default(),
                },
                datapath: PodDatapath {
                    netns_cookie: 7,
                    ip: "10.1.1.2".parse().unwrap(),
                    host_iface: "veth1".into(),
                    host_ifindex: 9,
                    bridged: false,
                },
            },
        );
        reg.failed.push(Skipped {
            pod: "shop/db".into(),
            reason: "no address yet".into(),
        });
        reg.failed.push(Skipped {
            pod: "shop/macvlan".into(),
            reason: "not a veth".into(),
        });
        reg.unsupported.insert("shop/macvlan".into());
        reg.skipped.push(Skipped {
            pod: "shop/batch".into(),
            reason: "pod label trellis.dev/mesh=disabled opts it out".into(),
        });
        reg
    }

    #[test]
    fn a_sandbox_is_admitted_once_its_own_namespace_is_enrolled() {
        let reg = registry();
        let decide = |p: PodRef, cookie| admission(&reg, None, &p, cookie);
        assert_eq!(decide(pod("shop", "web", Some("u1")), 7), Admission::Enrolled);
        assert!(
            matches!(decide(pod("shop", "web", Some("u1")), 8), Admission::Pending(_)),
            "a new sandbox"
        );
        assert!(
            matches!(decide(pod("shop", "web", Some("u2")), 7), Admission::Pending(_)),
            "a new pod"
        );
        assert_eq!(
            decide(pod("shop", "db", None), 1),
            Admission::Pending("no address yet".into())
        );
        assert!(
            matches!(decide(pod("shop", "batch", None), 1), Admission::NotInMesh(r) if r.contains("opts it out"))
        );
        assert!(
            matches!(decide(pod("shop", "new", None), 1), Admission::Pending(r) if r.contains("does not list pod shop/new yet"))
        );
        assert!(
            matches!(decide(pod("legacy", "old", None), 1), Admission::NotInMesh(r) if r.contains("legacy is not in the mesh"))
        );
    }

    #[test]
    fn waiting_places_are_bounded_and_given_back() {
        let count = AtomicUsize::new(0);
        let slots: Vec<WaitSlot> = (0..MAX_WAITING).map_while(|_| WaitSlot::take(&count)).collect();
        assert_eq!(slots.len(), MAX_WAITING);
        assert!(WaitSlot::take(&count).is_none());
        drop(slots);
        assert_eq!(count.load(Ordering::Acquire), 0);
        assert!(WaitSlot::take(&count).is_some());
    }

    #[test]
    fn before_the_first_config_the_last_known_namespaces_decide() {
        let reg = Registry::default();
        let known: BTreeSet<String> = ["shop".to_string()].into();
        assert!(matches!(
            admission(&reg, Some(&known), &pod("shop", "web", None), 1),
            Admission::Pending(r) if r.contains("none from the controller yet")
        ));
        assert!(matches!(
            admission(&reg, Some(&known), &pod("legacy", "a", None), 1),
            Admission::NotInMesh(_)
        ));
        assert!(matches!(
            admission(&reg, None, &pod("shop", "web", None), 1),
            Admission::NotInMesh(_)
        ));
    }
}
