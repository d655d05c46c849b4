//! Clients tests run inside a pod (in its cgroup, so they are captured like its workload):
//!
//! - `probe echo HOST:PORT`: holds one TCP connection open and, for each line on stdin, sends
//!   it and prints the line that comes back (keeps an established connection across an
//!   agent restart);
//! - `probe hold N HOST:PORT`: opens N connections to a line echo server, checks each with
//!   one exchange, prints `held N`, and keeps them all open until stdin closes (a database
//!   pool's worth of long-lived connections).

use std::{
    io::{BufRead, BufReader, Read as _, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [_, "echo", addr] => echo(addr),
        [_, "hold", n, addr] => hold(n.parse()?, addr.parse()?),
        _ => anyhow::bail!("usage: probe echo HOST:PORT | probe hold N HOST:PORT"),
    }
}

fn echo(addr: &str) -> anyhow::Result<()> {
    let stream = TcpStream::connect(addr)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut stdout = std::io::stdout();
    for line in std::io::stdin().lines() {
        writeln!(writer, "{}", line?)?;
        let mut back = String::new();
        if reader.read_line(&mut back)? == 0 {
            anyhow::bail!("connection closed");
        }
        stdout.write_all(back.as_bytes())?;
        stdout.flush()?;
    }
    Ok(())
}

fn hold(n: usize, addr: SocketAddr) -> anyhow::Result<()> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        writeln!(s, "hold {i}")?;
        let mut back = String::new();
        BufReader::new(&s).read_line(&mut back)?;
        anyhow::ensure!(back == format!("hold {i}\n"), "connection {i}: echo {back:?}");
        held.push(s);
    }
    println!("held {n}");
    std::io::stdout().flush()?;
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}
