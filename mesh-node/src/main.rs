//! `mesh-node`: parse arguments, set up logging, run.

use clap::{Parser, Subcommand};
use mesh_node::{
    app,
    config::{Config, LogFormat},
    datapath,
};

#[derive(Parser)]
#[command(version, about = "Trellis node agent and proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the datapath, enroll this node's pods and run the proxy.
    Run(Box<Config>),
    /// Detach the kernel programs and remove everything pinned under the bpffs directory.
    Uninstall {
        /// The bpffs directory `run` used.
        #[arg(long, env = "TRELLIS_BPFFS_DIR", default_value = "/sys/fs/bpf/trellis")]
        bpffs_dir: std::path::PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(config) => {
            init_logging(config.log_format);
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = config.worker_threads {
                builder.worker_threads(n as usize);
            }
            let runtime = builder.enable_all().build()?;
            runtime.block_on(app::run(*config))?;
        }
        Command::Uninstall { bpffs_dir } => {
            init_logging(LogFormat::Text);
            let removed = datapath::uninstall(&bpffs_dir)?;
            datapath::tproxy::uninstall();
            println!(
                "removed {} pins under {} and the nftables table {}",
                removed.len(),
                bpffs_dir.display(),
                datapath::tproxy::TABLE
            );
        }
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRELLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
}
