//! Network namespace cookies: the kernel's identity for a netns, what `connect4` sees through
//! `bpf_get_netns_cookie`. User space learns a namespace's cookie by opening a socket inside
//! it (`SO_NETNS_COOKIE`, Linux 5.14).

use std::{fs::File, io, os::fd::AsRawFd as _, path::Path};

const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of the network namespace at `path` (e.g. `/run/netns/pod-a` or
/// `/proc/<pid>/ns/net`).
pub fn cookie(path: &Path) -> io::Result<u64> {
    let ns = File::open(path)?;
    // setns moves only the calling thread, so a short-lived thread does the work and the
    // rest of the process never leaves the node's namespace.
    std::thread::scope(|s| s.spawn(|| cookie_inside(&ns)).join())
        .map_err(|_| io::Error::other("netns cookie thread panicked"))?
}

fn cookie_inside(ns: &File) -> io::Result<u64> {
    // SAFETY: plain syscalls on descriptors we own; results are checked.
    unsafe {
        if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
            return Err(io::Error::last_os_error());
        }
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
    #[test]
    fn own_namespace_has_a_stable_nonzero_cookie() {
        let a = super::own_cookie().expect("SO_NETNS_COOKIE needs Linux 5.14");
        assert_ne!(a, 0);
        assert_eq!(a, super::own_cookie().unwrap());
    }
}
