//! `mesh-controller`: parse arguments, set up logging, run.

use clap::{Parser, Subcommand};
use mesh_controller::{app, config::Config};

#[derive(Parser)]
#[command(
    version,
    about = "Trellis controller (config stream and certificate authority)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the config stream and the CA (Istio's CreateCertificate API) on 15012.
    Run(Config),
}

fn main() -> anyhow::Result<()> {
    let Command::Run(config) = Cli::parse().command;
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRELLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    if config.log_format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(app::run(config));
    // The watchers and the debug endpoint are still running: stop them without waiting
    // for them (dropping the runtime would wait for any blocking task without limit).
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}
