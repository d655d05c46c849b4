//! The load generator the benchmarks run inside a client pod (as `xtask loadgen`, so the
//! kernel captures it like any workload). Open loop with coordinated-omission correction,
//! computed on the ideal schedule: request k is due at t_k; had the system served request
//! k-1 from its due time, the connection would be busy until `free = max(t_(k-1), free) +
//! service_(k-1)`; request k's latency is `max(0, free - t_k) + service_k`. A slow response is
//! thus charged to every request queued behind it, while the generator's own timer lateness
//! (tokio sleeps have millisecond granularity) is not charged to the system.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Subcommand)]
pub enum Load {
    /// HTTP/1.1 keep-alive requests at a fixed total rate over N connections.
    Http(HttpArgs),
    /// A new TCP connection per request, one byte echoed, as fast as N workers can.
    Connect(ConnectArgs),
}

#[derive(Args)]
pub struct HttpArgs {
    #[arg(long)]
    pub target: SocketAddr,
    /// Requests per second, all connections together.
    #[arg(long)]
    pub rate: u32,
    #[arg(long, default_value_t = 1)]
    pub connections: u32,
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Not measured: connections warm up, caches fill.
    #[arg(long, default_value_t = 1)]
    pub warmup_secs: u64,
}

#[derive(Args)]
pub struct ConnectArgs {
    #[arg(long)]
    pub target: SocketAddr,
    #[arg(long, default_value_t = 4)]
    pub connections: u32,
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
}

/// What one run measured (printed as one JSON object).
#[derive(Debug, Serialize, serde::Deserialize, Default, Clone)]
pub struct Measured {
    pub requests: u64,
    pub errors: u64,
    pub achieved_per_sec: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Generator CPU over the window, in cores; near 1.0 means the numbers are the
    /// generator's, not the system's.
    pub generator_cpu: f64,
}

pub fn run(load: Load) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cpu_before = crate::bench::process_cpu_secs(std::process::id())?;
    let started = Instant::now();
    let mut measured = match load {
        Load::Http(a) => rt.block_on(http(a))?,
        Load::Connect(a) => rt.block_on(connect(a))?,
    };
    let cpu = crate::bench::process_cpu_secs(std::process::id())? - cpu_before;
    measured.generator_cpu = cpu / started.elapsed().as_secs_f64();
    println!("{}", serde_json::to_string(&measured)?);
    Ok(())
}

fn summarize(h: &Histogram<u64>, errors: u64, window: Duration) -> Measured {
    Measured {
        requests: h.len(),
        errors,
        achieved_per_sec: h.len() as f64 / window.as_secs_f64(),
        p50_us: h.value_at_quantile(0.50),
        p90_us: h.value_at_quantile(0.90),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        generator_cpu: 0.0,
    }
}

async fn http(a: HttpArgs) -> anyhow::Result<Measured> {
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let measure_from = start + Duration::from_secs(a.warmup_secs);
    let end = measure_from + Duration::from_secs(a.duration_secs);
    let interval = Duration::from_secs_f64(f64::from(a.connections) / f64::from(a.rate));
    let mut tasks = Vec::new();
    for i in 0..a.connections {
        let offset = interval.mul_f64(f64::from(i) / f64::from(a.connections));
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let mut errors = 0u64;
            let stream = tokio::net::TcpStream::connect(a.target)
                .await
                .context("connecting")?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut k: u32 = 0;
            // When the connection would become free on the ideal schedule.
            let mut free = start;
            loop {
                let scheduled = start + offset + interval * k;
                k += 1;
                if scheduled >= end {
                    break;
                }
                tokio::time::sleep_until(scheduled).await;
                let sent = tokio::time::Instant::now();
                let req = hyper::Request::get("/")
                    .header("host", "bench")
                    .body(Empty::<Bytes>::new())?;
                let ok = match sender.send_request(req).await {
                    Ok(resp) => resp.into_body().collect().await.is_ok(),
                    Err(_) => false,
                };
                let service = sent.elapsed();
                let queued = free.saturating_duration_since(scheduled);
                free = free.max(scheduled) + service;
                if scheduled < measure_from {
                    continue;
                }
                if ok {
                    let _ = h.record((queued + service).as_micros().max(1) as u64);
                } else {
                    errors += 1;
                    break;
                }
            }
            anyhow::Ok((h, errors))
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await??;
        all.add(h)?;
        errors += e;
    }
    Ok(summarize(&all, errors, Duration::from_secs(a.duration_secs)))
}

async fn connect(a: ConnectArgs) -> anyhow::Result<Measured> {
    let end = tokio::time::Instant::now() + Duration::from_secs(a.duration_secs);
    let mut tasks = Vec::new();
    for _ in 0..a.connections {
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let mut errors = 0u64;
            while tokio::time::Instant::now() < end {
                let t0 = Instant::now();
                let once = async {
                    let mut s = tokio::net::TcpStream::connect(a.target).await?;
                    s.write_all(b"x").await?;
                    let mut b = [0u8; 1];
                    s.read_exact(&mut b).await?;
                    anyhow::Ok(())
                };
                match tokio::time::timeout(Duration::from_secs(2), once).await {
                    Ok(Ok(())) => {
                        let _ = h.record(t0.elapsed().as_micros().max(1) as u64);
                    }
                    _ => errors += 1,
                }
            }
            (h, errors)
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await?;
        all.add(h)?;
        errors += e;
    }
    Ok(summarize(&all, errors, Duration::from_secs(a.duration_secs)))
}
