//! Network namespace cookies: the kernel's identity for a netns, what `connect4` sees through
//! `bpf_get_netns_cookie`. User space learns a namespace's cookie by opening a socket inside
//! it (`SO_NETNS_COOKIE`, Linux 5.14). The same visit finds the pod's host-side interface
//! (`super::veth`).

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io,
    net::Ipv4Addr,
    os::{
        fd::AsRawFd as _,
        unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    },
    path::Path,
    sync::OnceLock,
};

const SO_NETNS_COOKIE: libc::c_int = 71;

/// `statfs.f_type` of the namespace filesystem (`NSFS_MAGIC`, linux/magic.h).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// The cookie of the network namespace at `path` (e.g. `/run/netns/pod-a` or
/// `/proc/<pid>/ns/net`).
pub fn cookie(path: &Path) -> io::Result<u64> {
    cookie_of(&File::open(path)?)
}

/// Opens what `path` names as a pod's network namespace, refusing anything else: the open
/// does not block (a FIFO there would hang enrollment), and the file must be a network
/// namespace other than the node's own (a pod "in" the node's namespace would capture the
/// node).
pub fn open_pod_netns(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    check_pod_netns(&file)?;
    Ok(file)
}

/// Whether `file` is a network namespace, and not the node's.
pub fn check_pod_netns(file: &File) -> io::Result<()> {
    // SAFETY: fstatfs fills the zeroed struct; the result is checked.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if fs.f_type as i64 != NSFS_MAGIC {
        return Err(io::Error::other("not a namespace file"));
    }
    let meta = file.metadata()?;
    if own_netns_id().is_some_and(|own| own == (meta.dev(), meta.ino())) {
        return Err(io::Error::other("this is the node's own network namespace"));
    }
    Ok(())
}

/// (device, inode) of the node's network namespace (the process's), read once.
fn own_netns_id() -> Option<(u64, u64)> {
    static OWN: OnceLock<Option<(u64, u64)>> = OnceLock::new();
    *OWN.get_or_init(|| {
        std::fs::metadata("/proc/self/ns/net")
            .ok()
            .map(|m| (m.dev(), m.ino()))
    })
}

/// What enrollment found in the namespaces of enrolled pods, by workload, remembered between
/// passes. Learning a cookie costs a thread and a `setns`; checking that the pod is still in
/// the same namespace costs an `fstat` of the descriptor the pass opened. The descriptor
/// kept with each entry pins its namespace, so the namespace's inode number cannot be handed
/// to a new namespace (a recreated pod sandbox) while the entry exists.
#[derive(Default)]
pub struct Cookies {
    known: HashMap<String, Known>,
}

struct Known {
    _pinned: File,
    dev: u64,
    ino: u64,
    found: Pod,
}

/// What a visit to a pod's namespace finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pod {
    pub netns_cookie: u64,
    /// The interface holding the pod's IP and its claimed node-side peer, `None` for a
    /// namespace looked up without an IP.
    pub link: Option<super::veth::PodSide>,
}

impl Cookies {
    /// The cookie of the namespace `ns` (workload `key`'s now).
    pub fn get(&mut self, key: &str, ns: File) -> io::Result<u64> {
        self.lookup(key, ns, None).map(|p| p.netns_cookie)
    }

    /// The cookie of the namespace `ns` and the host-side peer of its interface holding
    /// `ip`: an error until an interface holds it, or when that interface has no peer.
    pub fn pod(&mut self, key: &str, ns: File, ip: Ipv4Addr) -> io::Result<Pod> {
        self.lookup(key, ns, Some(ip))
    }

    fn lookup(&mut self, key: &str, ns: File, ip: Option<Ipv4Addr>) -> io::Result<Pod> {
        let now = ns.metadata()?;
        if let Some(k) = self.known.get(key) {
            if (k.dev, k.ino) == (now.dev(), now.ino()) && (ip.is_none() || k.found.link.is_some()) {
                return Ok(k.found);
            }
        }
        // Another namespace (or a first look): unpin the old one before visiting the new.
        self.known.remove(key);
        let found = visit(&ns, ip)?;
        self.known.insert(
            key.to_owned(),
            Known {
                dev: now.dev(),
                ino: now.ino(),
                found,
                _pinned: ns,
            },
        );
        Ok(found)
    }

    /// Forgets what was found for `key`, so the next lookup visits the namespace again.
    pub fn forget(&mut self, key: &str) {
        self.known.remove(key);
    }

    /// Forgets (and unpins) every namespace whose workload is not in `keys`.
    pub fn retain(&mut self, keys: &HashSet<String>) {
        self.known.retain(|key, _| keys.contains(key));
    }
}

pub fn cookie_of(ns: &File) -> io::Result<u64> {
    visit(ns, None).map(|p| p.netns_cookie)
}

/// Enters the namespace on a short-lived thread (setns moves only the calling thread, so the
/// rest of the process never leaves the node's namespace) and reads what it needs there.
fn visit(ns: &File, ip: Option<Ipv4Addr>) -> io::Result<Pod> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a descriptor we own; the result is checked.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let netns_cookie = cookie_inside()?;
            let link = match ip {
                None => None,
                Some(ip) => Some(
                    super::veth::pod_side_inside(ip)?
                        .ok_or_else(|| io::Error::other(format!("no interface in the pod holds {ip} yet")))?,
                ),
            };
            Ok(Pod { netns_cookie, link })
        })
        .join()
    })
    .map_err(|_| io::Error::other("netns visiting thread panicked"))?
}

/// The cookie of the calling thread's network namespace.
fn cookie_inside() -> io::Result<u64> {
    // SAFETY: plain syscalls on descriptors we own; results are checked.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let ret = libc::getsockopt(
            sock,
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        );
        let err = io::Error::last_os_error();
        libc::close(sock);
        if ret != 0 {
            return Err(err);
        }
        Ok(cookie)
    }
}

/// The cookie of the namespace this process runs in.
pub fn own_cookie() -> io::Result<u64> {
    cookie(Path::new("/proc/thread-self/ns/net"))
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, path::Path};

    #[test]
    fn own_namespace_has_a_stable_nonzero_cookie() {
        let a = super::own_cookie().expect("SO_NETNS_COOKIE needs Linux 5.14");
        assert_ne!(a, 0);
        assert_eq!(a, super::own_cookie().unwrap());
    }

    #[test]
    fn remembered_cookies_are_checked_against_the_descriptor_and_forgotten_on_request() {
        let mut cookies = super::Cookies::default();
        let open = |p: &str| std::fs::File::open(p).unwrap();
        let first = cookies.get("shop/a", open("/proc/self/ns/net")).unwrap();
        assert_eq!(first, super::own_cookie().unwrap());
        assert_eq!(
            cookies.get("shop/a", open("/proc/self/ns/net")).unwrap(),
            first,
            "the remembered cookie"
        );
        assert_eq!(cookies.known.len(), 1);

        // Another namespace kind: a fresh lookup, which fails for a non-network namespace
        // instead of returning a remembered value, and unpins the old one.
        assert!(cookies.get("shop/a", open("/proc/self/ns/uts")).is_err());
        assert!(cookies.known.is_empty());

        cookies.get("shop/a", open("/proc/self/ns/net")).unwrap();
        cookies.retain(&HashSet::new());
        assert_eq!(cookies.known.len(), 0);
    }

    #[test]
    fn only_a_network_namespace_other_than_the_nodes_is_a_pods() {
        let refused = |p: &str| super::open_pod_netns(Path::new(p)).unwrap_err().to_string();
        assert!(refused("/proc/self/ns/net").contains("node's own"));
        assert!(refused("/etc/hostname").contains("not a namespace"));
        // A FIFO is refused at once rather than hanging the open.
        let fifo = std::env::temp_dir().join(format!("trellis-fifo-{}", std::process::id()));
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = refused(fifo.to_str().unwrap());
        std::fs::remove_file(&fifo).unwrap();
        assert!(err.contains("not a namespace"), "{err}");
    }

    /// A pod recreated under the same netns path is a new namespace with a new cookie, even
    /// though the kernel may reuse a freed namespace's inode number.
    #[test]
    fn a_namespace_recreated_under_the_same_path_gets_its_new_cookie() {
        struct Netns(String);
        impl Drop for Netns {
            fn drop(&mut self) {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", &self.0])
                    .status();
            }
        }
        let ip = |args: &[&str]| {
            let status = std::process::Command::new("ip")
                .args(args)
                .status()
                .expect("iproute2");
            assert!(status.success(), "ip {args:?} (this test needs root)");
        };
        let ns = Netns(format!("trellis-cookie-test-{}", std::process::id()));
        let path = Path::new("/run/netns").join(&ns.0);
        let mut cookies = super::Cookies::default();
        let open = || super::open_pod_netns(&path);
        ip(&["netns", "add", &ns.0]);
        let first = cookies.get("shop/a", open().unwrap()).unwrap();
        // Deleted and recreated between two passes.
        ip(&["netns", "del", &ns.0]);
        ip(&["netns", "add", &ns.0]);
        let second = cookies.get("shop/a", open().unwrap()).unwrap();
        assert_ne!(first, second);
        assert_eq!(second, super::cookie(&path).unwrap());
    }
}
