//! Network namespace cookies: the kernel's identity for a netns, what `connect4` sees through
//! `bpf_get_netns_cookie`. User space learns a namespace's cookie by opening a socket inside
//! it (`SO_NETNS_COOKIE`, Linux 5.14). The same visit finds the pod's host-side interface
//! (`super::veth`).

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io,
    net::Ipv4Addr,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of the network namespace at `path` (e.g. `/run/netns/pod-a` or
/// `/proc/<pid>/ns/net`).
pub fn cookie(path: &Path) -> io::Result<u64> {
    cookie_of(&File::open(path)?)
}

/// The cookies of the namespaces enrolled pods live in, remembered between enrollment
/// passes. Learning a cookie costs a thread and a `setns`; checking that a path still names
/// the same namespace costs one `stat`. The open descriptor kept with each entry pins its
/// namespace, so the namespace's inode number cannot be handed to a new namespace (a pod
/// recreated under the same path) while the entry exists.
#[derive(Default)]
pub struct Cookies {
    known: HashMap<PathBuf, Known>,
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
    /// The cookie of the namespace at `path` now.
    pub fn get(&mut self, path: &Path) -> io::Result<u64> {
        self.lookup(path, None).map(|p| p.netns_cookie)
    }

    /// The cookie of the namespace at `path` and the host-side peer of its interface holding
    /// `ip`: an error until an interface holds it, or when that interface has no peer.
    pub fn pod(&mut self, path: &Path, ip: Ipv4Addr) -> io::Result<Pod> {
        self.lookup(path, Some(ip))
    }

    fn lookup(&mut self, path: &Path, ip: Option<Ipv4Addr>) -> io::Result<Pod> {
        let now = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) => {
                // Gone (the pod was deleted): unpin at once, or its namespace, and the
                // host end of its veth, would live on while the pod is still in the config.
                self.known.remove(path);
                return Err(e);
            }
        };
        if let Some(k) = self.known.get(path) {
            if (k.dev, k.ino) == (now.dev(), now.ino()) && (ip.is_none() || k.found.link.is_some()) {
                return Ok(k.found);
            }
        }
        let ns = File::open(path)?;
        let opened = ns.metadata()?;
        let found = visit(&ns, ip)?;
        self.known.insert(
            path.to_owned(),
            Known {
                dev: opened.dev(),
                ino: opened.ino(),
                found,
                _pinned: ns,
            },
        );
        Ok(found)
    }

    /// Forgets what was found at `path`, so the next lookup visits the namespace again.
    pub fn forget(&mut self, path: &Path) {
        self.known.remove(path);
    }

    /// Forgets (and unpins) every namespace whose path is not in `paths`.
    pub fn retain(&mut self, paths: &HashSet<&Path>) {
        self.known.retain(|path, _| paths.contains(path.as_path()));
    }
}

fn cookie_of(ns: &File) -> io::Result<u64> {
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
    fn remembered_cookies_are_checked_against_the_path_and_forgotten_on_request() {
        let mut cookies = super::Cookies::default();
        let own = Path::new("/proc/self/ns/net");
        let first = cookies.get(own).unwrap();
        assert_eq!(first, super::own_cookie().unwrap());
        assert_eq!(cookies.get(own).unwrap(), first, "the remembered cookie");
        assert_eq!(cookies.known.len(), 1);

        // Another path naming another namespace kind: a fresh lookup, which fails for a
        // non-network namespace instead of returning a remembered value.
        assert!(cookies.get(Path::new("/proc/self/ns/uts")).is_err());
        assert!(cookies.get(Path::new("/nonexistent/netns")).is_err());

        cookies.retain(&HashSet::new());
        assert_eq!(cookies.known.len(), 0);
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
        ip(&["netns", "add", &ns.0]);
        let first = cookies.get(&path).unwrap();
        // Deleted and recreated between two passes.
        ip(&["netns", "del", &ns.0]);
        ip(&["netns", "add", &ns.0]);
        let second = cookies.get(&path).unwrap();
        assert_ne!(first, second);
        assert_eq!(second, super::cookie(&path).unwrap());
        // Deleted and seen gone by a pass: unpinned at once.
        ip(&["netns", "del", &ns.0]);
        assert!(cookies.get(&path).is_err(), "the path is gone");
        assert!(cookies.known.is_empty(), "a vanished namespace stays pinned");
    }
}
