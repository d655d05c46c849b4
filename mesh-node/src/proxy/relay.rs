//! Moving bytes between two TCP connections the way a transparent proxy must: each side sees
//! what the other did. A FIN becomes a FIN (half-close), a reset becomes a reset, silence
//! longer than the idle timeout resets both.

use std::{
    os::fd::AsRawFd,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use serde::Serialize;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

/// One side of a relay: a TCP connection, or a tunnel stream.
pub trait Side: AsyncRead + AsyncWrite + Unpin {
    /// Makes the close of this side an abort (a TCP RST, an HTTP/2 stream reset) rather
    /// than an orderly end.
    fn abort(&self);
}

impl Side for TcpStream {
    fn abort(&self) {
        reset(self);
    }
}

/// A tunnel stream: dropping it without a shutdown resets the HTTP/2 stream.
impl Side for hyper_util::rt::TokioIo<hyper::upgrade::Upgraded> {
    fn abort(&self) {}
}

/// An outbound tunnel stream, likewise.
impl Side for super::tunnel::Tunnel {
    fn abort(&self) {}
}

/// How a relayed connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// Both sides closed cleanly.
    Closed,
    /// The client reset (or failed); the upstream was reset in turn.
    ClientReset,
    /// The upstream reset (or failed); the client was reset in turn.
    UpstreamReset,
    /// Nothing moved for the idle timeout; both were reset.
    IdleTimeout,
    /// The proxy is shutting down and the drain period ran out; both were reset.
    Drained,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Bytes from the client delivered to the upstream.
    pub bytes_up: u64,
    /// Bytes from the upstream delivered to the client.
    pub bytes_down: u64,
    pub ending: Ending,
}

/// Which side a failed pump was reading from.
enum Failure {
    Read,
    Write,
}

/// The shortest idle-timer period, so a connection active just before the deadline does not
/// spin on the timer.
const MIN_IDLE_CHECK: Duration = Duration::from_millis(10);

/// Relays until both directions finished, one side failed, the connection idled out, or
/// `drained` resolves.
pub async fn relay<C: Side, U: Side>(
    mut client: C,
    mut upstream: U,
    idle_timeout: Duration,
    drained: impl std::future::Future<Output = ()>,
) -> Outcome {
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    // Seconds since `start` of the last byte moved, for the idle check.
    let start = Instant::now();
    let last_activity = AtomicU64::new(0);

    let ending = {
        let (mut client_rd, mut client_wr) = tokio::io::split(&mut client);
        let (mut upstream_rd, mut upstream_wr) = tokio::io::split(&mut upstream);
        let upwards = pump(&mut client_rd, &mut upstream_wr, &up, &last_activity, start);
        let downwards = pump(&mut upstream_rd, &mut client_wr, &down, &last_activity, start);
        tokio::pin!(upwards, downwards, drained);
        let mut up_done = false;
        let mut down_done = false;
        // Woken only when the connection may have idled out: the timer is set for the rest of
        // the idle timeout since the last byte, not polled every second.
        let mut idle_check = idle_timeout.max(MIN_IDLE_CHECK);
        loop {
            if up_done && down_done {
                break Ending::Closed;
            }
            tokio::select! {
                r = &mut upwards, if !up_done => match r {
                    Ok(()) => up_done = true,
                    Err(Failure::Read) => break Ending::ClientReset,
                    Err(Failure::Write) => break Ending::UpstreamReset,
                },
                r = &mut downwards, if !down_done => match r {
                    Ok(()) => down_done = true,
                    Err(Failure::Read) => break Ending::UpstreamReset,
                    Err(Failure::Write) => break Ending::ClientReset,
                },
                () = &mut drained => break Ending::Drained,
                () = tokio::time::sleep(idle_check) => {
                    let idle_for = start.elapsed().saturating_sub(Duration::from_millis(last_activity.load(Ordering::Relaxed)));
                    if idle_for >= idle_timeout {
                        break Ending::IdleTimeout;
                    }
                    idle_check = (idle_timeout - idle_for).max(MIN_IDLE_CHECK);
                }
            }
        }
    };
    match ending {
        Ending::Closed => {}
        Ending::ClientReset => upstream.abort(),
        Ending::UpstreamReset => client.abort(),
        Ending::IdleTimeout | Ending::Drained => {
            client.abort();
            upstream.abort();
        }
    }
    Outcome {
        bytes_up: up.into_inner(),
        bytes_down: down.into_inner(),
        ending,
    }
}

/// Copies one direction; on EOF passes the FIN on (half-close) and returns.
async fn pump(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    counter: &AtomicU64,
    last_activity: &AtomicU64,
    start: Instant,
) -> Result<(), Failure> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await.map_err(|_| Failure::Read)?;
        if n == 0 {
            // Shutdown of an already-reset peer fails; that surfaces on the other pump.
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..n]).await.map_err(|_| Failure::Write)?;
        counter.fetch_add(n as u64, Ordering::Relaxed);
        last_activity.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Makes the close of `stream` send a RST instead of a FIN (SO_LINGER with a zero timeout),
/// so the peer learns the connection failed rather than ended.
pub fn reset(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a live socket with a correctly sized value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// client <-> relay <-> server on loopback; returns the client, the server side and the
    /// relay's outcome future.
    async fn setup(idle: Duration) -> (TcpStream, TcpStream, tokio::task::JoinHandle<Outcome>) {
        let server_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(proxy_l.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = proxy_l.accept().await.unwrap();
        let upstream = TcpStream::connect(server_l.local_addr().unwrap()).await.unwrap();
        let (server, _) = server_l.accept().await.unwrap();
        let task = tokio::spawn(relay(accepted, upstream, idle, std::future::pending()));
        (client, server, task)
    }

    #[tokio::test]
    async fn half_close_lets_the_server_answer_after_the_client_finished_sending() {
        let (mut client, mut server, task) = setup(Duration::from_secs(30)).await;
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        server.write_all(b"response after FIN").await.unwrap();
        server.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"response after FIN");
        let outcome = task.await.unwrap();
        assert_eq!(
            outcome,
            Outcome {
                bytes_up: 7,
                bytes_down: 18,
                ending: Ending::Closed
            }
        );
    }

    #[tokio::test]
    async fn an_upstream_reset_reaches_the_client_as_a_reset() {
        let (mut client, server, task) = setup(Duration::from_secs(30)).await;
        reset(&server);
        drop(server);
        let mut buf = [0u8; 8];
        let err = client
            .read(&mut buf)
            .await
            .expect_err("the client must see the reset");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        assert_eq!(task.await.unwrap().ending, Ending::UpstreamReset);
    }

    #[tokio::test]
    async fn a_client_reset_reaches_the_server_as_a_reset() {
        let (client, mut server, task) = setup(Duration::from_secs(30)).await;
        reset(&client);
        drop(client);
        let mut buf = [0u8; 8];
        let err = server
            .read(&mut buf)
            .await
            .expect_err("the server must see the reset");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        assert_eq!(task.await.unwrap().ending, Ending::ClientReset);
    }

    #[tokio::test]
    async fn idle_connections_are_reset_on_both_sides() {
        let (mut client, mut server, task) = setup(Duration::from_millis(200)).await;
        assert_eq!(task.await.unwrap().ending, Ending::IdleTimeout);
        let mut buf = [0u8; 8];
        assert_eq!(
            client.read(&mut buf).await.unwrap_err().kind(),
            std::io::ErrorKind::ConnectionReset
        );
        assert_eq!(
            server.read(&mut buf).await.unwrap_err().kind(),
            std::io::ErrorKind::ConnectionReset
        );
    }
}
