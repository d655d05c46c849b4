//! What `trellis-cni` tells the node agent, and the answer: one JSON request per connection
//! on the agent's unix socket, the pod's network namespace attached as an open descriptor
//! (`SCM_RIGHTS`), then one JSON reply. The agent never opens a path: the descriptor comes
//! from the container runtime's `CNI_NETNS`, which only the runtime writes.

use std::{
    io::{self, Read as _, Write as _},
    net::IpAddr,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::net::UnixStream,
    },
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// Where the node agent listens for the plugin.
pub const DEFAULT_SOCKET: &str = "/var/run/trellis/cni.sock";

/// The enrolled namespaces, as the agent last knew them: what the plugin decides by when the
/// agent does not answer (a pod of an enrolled namespace waits for it; others go on). On
/// disk, not in `/var/run` (tmpfs): after a reboot the plugin is still chained and the agent
/// not yet running, and mesh pods must wait for it then too.
pub const DEFAULT_NAMESPACES_FILE: &str = "/var/lib/trellis/enrolled-namespaces.json";

/// The largest request: a pod's names, UID and a few addresses fit many times over.
const MAX_REQUEST: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    Add,
    Check,
    Del,
}

/// A pod as the runtime names it in `CNI_ARGS` (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`,
/// `K8S_POD_UID`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    /// Older runtimes do not pass it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl PodRef {
    /// `namespace/name`, as the mesh names workloads.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub command: Command,
    /// `CNI_CONTAINERID`: the sandbox. A DEL only forgets the sandbox it names, so a late DEL
    /// of a pod's old sandbox leaves its new one alone.
    pub container_id: String,
    pub pod: PodRef,
    /// The pod's addresses from the primary plugin's result.
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    /// `CNI_IFNAME`, the pod-side interface.
    #[serde(default)]
    pub interface: String,
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    /// The pod is captured: its traffic goes through the node proxy from its first packet.
    Enrolled,
    /// The pod is not in the mesh (its namespace is not enrolled, or it opts out): the
    /// plugin passes the result on untouched.
    NotInMesh { reason: String },
    /// The pod belongs in the mesh but is not captured yet: the plugin fails the ADD with
    /// CNI's "try again later", and the runtime retries, so the pod never starts uncaptured.
    Retry { reason: String },
    /// Done with (a DEL).
    Forgotten,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to the node agent at {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("talking to the node agent: {0}")]
    Io(#[from] io::Error),
    #[error("the node agent's answer is not understood ({0}): is it older or newer than this plugin?")]
    Reply(serde_json::Error),
    #[error("the plugin's request is not understood: {0}")]
    Request(serde_json::Error),
}

/// Sends `request` (and the namespace descriptor) to the agent at `socket` and waits up to
/// `timeout` for its answer.
pub fn call(
    socket: &Path,
    request: &Request,
    netns: Option<BorrowedFd<'_>>,
    timeout: Duration,
) -> Result<Reply, Error> {
    let stream = UnixStream::connect(socket).map_err(|source| Error::Connect {
        path: socket.to_owned(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = serde_json::to_vec(request).map_err(Error::Request)?;
    send_with_fd(&stream, &body, netns)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = Vec::new();
    stream.take(MAX_REQUEST as u64).read_to_end(&mut answer)?;
    serde_json::from_slice(&answer).map_err(Error::Reply)
}

/// Reads one request and the descriptor that came with it (the agent's side).
pub fn receive(stream: &mut UnixStream) -> Result<(Request, Option<OwnedFd>), Error> {
    let mut body = vec![0u8; MAX_REQUEST];
    let (mut len, fd) = recv_with_fd(stream, &mut body)?;
    // The rest, if the request came in more than one piece.
    loop {
        if len == body.len() {
            return Err(Error::Io(io::Error::other("request larger than 64 KiB")));
        }
        match stream.read(&mut body[len..])? {
            0 => break,
            n => len += n,
        }
    }
    let request = serde_json::from_slice(&body[..len]).map_err(Error::Request)?;
    Ok((request, fd))
}

/// Answers a request (the agent's side).
pub fn answer(stream: &mut UnixStream, reply: &Reply) -> io::Result<()> {
    let body = serde_json::to_vec(reply).expect("replies serialise");
    stream.write_all(&body)
}

/// The uid of the process at the other end (`SO_PEERCRED`), as the kernel recorded it at
/// connect.
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    // SAFETY: getsockopt fills the ucred of the given size; the result is checked.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    let ret = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

// The only unsafe code of the crate: sendmsg/recvmsg with a control message, which std does
// not offer on stable, and getsockopt above.

/// Room for one descriptor's control message, aligned as `cmsghdr` needs.
#[repr(C)]
union ControlBuffer {
    _align: libc::cmsghdr,
    bytes: [u8; 64],
}

fn send_with_fd(stream: &UnixStream, body: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let mut control = ControlBuffer { bytes: [0; 64] };
    let mut iov = libc::iovec {
        iov_base: body.as_ptr() as *mut libc::c_void,
        iov_len: body.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        let raw = fd.as_raw_fd();
        // SAFETY: CMSG_SPACE of one int fits the 64-byte buffer; CMSG_FIRSTHDR of a msghdr
        // whose control buffer is that large is non-null and points into it.
        unsafe {
            msg.msg_control = control.bytes.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), raw);
        }
    }
    // SAFETY: msg points at live buffers; the result is checked.
    let sent = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stream = stream;
    stream.write_all(&body[sent as usize..])
}

fn recv_with_fd(stream: &UnixStream, body: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut control = ControlBuffer { bytes: [0; 64] };
    let mut iov = libc::iovec {
        iov_base: body.as_mut_ptr().cast(),
        iov_len: body.len(),
    };
    // SAFETY: as in send_with_fd.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: the control buffer outlives the call.
    msg.msg_control = unsafe { control.bytes.as_mut_ptr() }.cast();
    msg.msg_controllen = size_of::<ControlBuffer>() as _;
    // SAFETY: msg points at live buffers; MSG_CMSG_CLOEXEC so a received descriptor never
    // leaks into a child process.
    let read = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if read < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fd = None;
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_FIRSTHDR/NXTHDR walk it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                let count =
                    ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / size_of::<libc::c_int>();
                for i in 0..count {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    // Own every descriptor received, so extras are closed, not leaked; keep
                    // the first.
                    let owned = OwnedFd::from_raw_fd(raw);
                    if fd.is_none() {
                        fd = Some(owned);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other(
            "more descriptors than one came with the request",
        ));
    }
    Ok((read as usize, fd))
}

/// The enrolled namespaces the agent leaves on disk for the plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolledNamespaces {
    pub namespaces: Vec<String>,
}

impl EnrolledNamespaces {
    /// The file's content; `None` when there is none (no agent ever ran here, or it was
    /// uninstalled).
    pub fn read(path: &Path) -> io::Result<Option<Self>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(io::Error::other),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the file whole (a temporary file renamed over it), so the plugin never reads
    /// half of it.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        crate::write_atomically(path, &serde_json::to_vec_pretty(self).expect("serialises"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd as _;

    #[test]
    fn a_request_and_its_descriptor_cross_the_socket() {
        let (mut plugin, mut agent) = UnixStream::pair().unwrap();
        // SAFETY: getuid has no preconditions.
        assert_eq!(peer_uid(&agent).unwrap(), unsafe { libc::getuid() });
        let request = Request {
            command: Command::Add,
            container_id: "c0ffee".into(),
            pod: PodRef {
                namespace: "shop".into(),
                name: "web-1".into(),
                uid: Some("0b6c1d2e".into()),
            },
            ips: vec!["10.1.1.2".parse().unwrap()],
            interface: "eth0".into(),
        };
        let file = std::fs::File::open("/proc/self/ns/net").unwrap();
        let body = serde_json::to_vec(&request).unwrap();
        send_with_fd(&plugin, &body, Some(file.as_fd())).unwrap();
        plugin.shutdown(std::net::Shutdown::Write).unwrap();
        let (got, fd) = receive(&mut agent).unwrap();
        assert_eq!(got, request);
        let fd = fd.expect("the descriptor came along");
        let link = |p: String| std::fs::read_link(p).unwrap();
        assert_eq!(
            link(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            link("/proc/self/ns/net".into())
        );
        answer(&mut agent, &Reply::Enrolled).unwrap();
        drop(agent);
        let mut text = String::new();
        plugin.read_to_string(&mut text).unwrap();
        assert_eq!(text, r#"{"result":"enrolled"}"#);
    }

    #[test]
    fn a_request_without_a_descriptor_is_read_whole() {
        let (plugin, mut agent) = UnixStream::pair().unwrap();
        let body = br#"{"command":"DEL","container_id":"c0ffee","pod":{"namespace":"shop","name":"web-1"}}"#;
        send_with_fd(&plugin, body, None).unwrap();
        drop(plugin);
        let (got, fd) = receive(&mut agent).unwrap();
        assert_eq!(got.command, Command::Del);
        assert!(got.ips.is_empty() && fd.is_none());
    }
}
