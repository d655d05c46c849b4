//! A raw packet capture (AF_PACKET, every interface of one namespace): what crossed the
//! wire between nodes, to prove it was encrypted.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
};

pub struct Capture {
    stop: Arc<AtomicBool>,
    bytes: Arc<Mutex<Vec<u8>>>,
    frames: Arc<Mutex<usize>>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing in the namespace at `netns` (e.g. `/run/netns/x`).
    pub fn start(netns: &std::path::Path) -> anyhow::Result<Self> {
        let ns = File::open(netns)?;
        let stop = Arc::new(AtomicBool::new(false));
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let frames = Arc::new(Mutex::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (stop, bytes, frames) = (stop.clone(), bytes.clone(), frames.clone());
            std::thread::spawn(move || {
                // SAFETY: setns on this thread; a packet socket with a receive timeout so the
                // loop notices `stop`.
                let fd = unsafe {
                    if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        let _ = ready_tx.send(Err(std::io::Error::last_os_error()));
                        return;
                    }
                    let fd = libc::socket(
                        libc::AF_PACKET,
                        libc::SOCK_RAW,
                        i32::from((libc::ETH_P_ALL as u16).to_be()),
                    );
                    if fd < 0 {
                        let _ = ready_tx.send(Err(std::io::Error::last_os_error()));
                        return;
                    }
                    let tv = libc::timeval {
                        tv_sec: 0,
                        tv_usec: 100_000,
                    };
                    libc::setsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        libc::SO_RCVTIMEO,
                        (&tv as *const libc::timeval).cast(),
                        std::mem::size_of::<libc::timeval>() as u32,
                    );
                    fd
                };
                let _ = ready_tx.send(Ok(()));
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::SeqCst) {
                    // SAFETY: reading into our buffer.
                    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                    if n > 0 {
                        bytes
                            .lock()
                            .expect("capture")
                            .extend_from_slice(&buf[..n as usize]);
                        *frames.lock().expect("capture") += 1;
                    }
                }
                // SAFETY: closing our socket.
                unsafe { libc::close(fd) };
            })
        };
        ready_rx.recv()??;
        Ok(Self {
            stop,
            bytes,
            frames,
            thread: Some(thread),
        })
    }

    /// Stops and returns (frames, all captured bytes).
    pub fn finish(mut self) -> (usize, Vec<u8>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let frames = *self.frames.lock().expect("capture");
        (frames, std::mem::take(&mut *self.bytes.lock().expect("capture")))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
