//! The controller's debug endpoint (`/debug/syncz`, `/debug/config_dump`), over plain
//! HTTP/1.0 on a std `TcpStream`: it listens on localhost and answers small JSON documents,
//! so a blocking GET is all `mesh-ctl` needs (no async runtime for these commands).

use std::{
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs},
    time::Duration,
};

use anyhow::{bail, Context as _};
use serde::de::DeserializeOwned;

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
    /// The controller's debug endpoint, host:port.
    #[arg(long, env = "TRELLIS_CONTROLLER", default_value = "127.0.0.1:15014")]
    pub controller: String,
}

impl ControllerArgs {
    /// GET `path` and decode its JSON body. A non-200 answer is an error carrying the
    /// controller's own text (it says what is wrong, e.g. "node n1 has not acknowledged…").
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let (status, body) = self.get_raw(path)?;
        if status != 200 {
            bail!(
                "the controller at {} answered {status} to {path}: {}",
                self.controller,
                body.trim()
            );
        }
        serde_json::from_str(&body).with_context(|| {
            format!(
                "the controller at {} sent {path} in a shape this mesh-ctl does not read: are both the same version?",
                self.controller
            )
        })
    }

    fn get_raw(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let unreachable = || {
            format!(
                "cannot reach the controller's debug endpoint at {}: is mesh-controller running? set --controller or TRELLIS_CONTROLLER",
                self.controller
            )
        };
        let addr = self
            .controller
            .to_socket_addrs()
            .with_context(unreachable)?
            .next()
            .with_context(unreachable)?;
        let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).with_context(unreachable)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n\r\n",
            self.controller
        )
        .with_context(unreachable)?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .with_context(|| format!("reading {path} from the controller at {}", self.controller))?;
        parse_response(&response).with_context(|| {
            format!(
                "the controller at {} sent a malformed HTTP answer",
                self.controller
            )
        })
    }
}

/// Status code and body of an HTTP/1.x response without chunked encoding (HTTP/1.0).
fn parse_response(response: &[u8]) -> anyhow::Result<(u16, String)> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status code")?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_split_into_status_and_body() {
        let (status, body) =
            parse_response(b"HTTP/1.0 404 Not Found\r\ncontent-type: text/plain\r\n\r\nno node\n").unwrap();
        assert_eq!((status, body.as_str()), (404, "no node\n"));
        assert!(parse_response(b"garbage").is_err());
    }
}
