//! `probe echo HOST:PORT`: holds one TCP connection open and, for each line on stdin, sends
//! it and prints the line that comes back. Tests run it inside a pod to keep an established
//! connection across an agent restart.

use std::io::{BufRead, BufReader, Write};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, cmd, addr] = args.as_slice() else {
        anyhow::bail!("usage: probe echo HOST:PORT");
    };
    anyhow::ensure!(cmd == "echo", "unknown command {cmd:?}: the only one is `echo`");
    let stream = std::net::TcpStream::connect(addr)?;
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
