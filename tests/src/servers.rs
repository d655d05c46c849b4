//! Servers that run inside pod namespaces and remember who connected, so a test can tell a
//! proxied connection (peer = the node) from a direct one (peer = the client pod).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Response};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

use crate::netns::Netns;

/// Peers a server accepted, in order.
#[derive(Clone, Default)]
pub struct Peers(Arc<Mutex<Vec<SocketAddr>>>);

impl Peers {
    pub fn all(&self) -> Vec<SocketAddr> {
        self.0.lock().expect("peers").clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().expect("peers").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&self, peer: SocketAddr) {
        self.0.lock().expect("peers").push(peer);
    }
}

/// Listens on `[::]:port`, which takes IPv4 too (a dual-stack socket, as most servers).
fn bind(ns: &Netns, port: u16) -> TcpListener {
    ns.run(move || {
        let std = std::net::TcpListener::bind(("::", port)).expect("bind in pod");
        std.set_nonblocking(true).expect("nonblocking");
        TcpListener::from_std(std).expect("tokio listener")
    })
}

/// Accepts on `port` inside `ns`, records each peer and hands the connection to `handle`.
fn serve<F, Fut>(ns: &Netns, port: u16, handle: F) -> Peers
where
    F: Fn(tokio::net::TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let peers = Peers::default();
    let listener = bind(ns, port);
    let seen = peers.clone();
    ns.spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            // IPv4 clients of the dual-stack socket show as ::ffff:a.b.c.d: record a.b.c.d.
            let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
            seen.push(peer);
            let _ = stream.set_nodelay(true);
            tokio::spawn(handle(stream, peer));
        }
    });
    peers
}

/// An HTTP/1.1 server (hyper) on `port` answering every request with `peer=<addr>`.
pub fn http(ns: &Netns, port: u16) -> Peers {
    serve(ns, port, |stream, peer| async move {
        let service = service_fn(move |_req| async move {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("peer={peer}\n")))))
        });
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    })
}

/// A line echo server on `port`.
pub fn echo(ns: &Netns, port: u16) -> Peers {
    serve(ns, port, |stream, _| async move {
        let (rd, mut wr) = stream.into_split();
        let mut lines = BufReader::new(rd).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if wr.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                break;
            }
        }
    })
}

/// An HTTP/1.1 server answering every request with `size` bytes (the benchmarks' 1 KB body).
pub fn http_body(ns: &Netns, port: u16, size: usize) -> Peers {
    let body = Bytes::from(vec![b'x'; size]);
    serve(ns, port, move |stream, _| {
        let body = body.clone();
        async move {
            let service = service_fn(move |_req| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
}

/// Echoes every byte back (the connection-rate benchmark sends one).
pub fn byte_echo(ns: &Netns, port: u16) -> Peers {
    serve(ns, port, |mut stream, _| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = [0u8; 512];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    })
}
