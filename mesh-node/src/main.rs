//! `mesh-node`: parse arguments, set up logging, run.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use mesh_node::{
    app, cni,
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
    /// Detach the kernel programs, remove everything pinned under the bpffs directory, and
    /// take trellis-cni out of the CNI configuration.
    Uninstall {
        /// The bpffs directory `run` used.
        #[arg(long, env = "TRELLIS_BPFFS_DIR", default_value = "/sys/fs/bpf/trellis")]
        bpffs_dir: PathBuf,
        /// The CNI configuration directory `run` chained trellis-cni into.
        #[arg(long, env = "TRELLIS_CNI_CONF_DIR")]
        cni_conf_dir: Option<PathBuf>,
        /// The CNI plugin directory `run` copied trellis-cni to.
        #[arg(long, env = "TRELLIS_CNI_BIN_DIR")]
        cni_bin_dir: Option<PathBuf>,
        /// The enrolled-namespaces file `run` left for the plugin.
        #[arg(long, env = "TRELLIS_CNI_NAMESPACES_FILE", default_value = mesh_cni::protocol::DEFAULT_NAMESPACES_FILE)]
        cni_namespaces_file: PathBuf,
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
        Command::Uninstall {
            bpffs_dir,
            cni_conf_dir,
            cni_bin_dir,
            cni_namespaces_file,
        } => {
            init_logging(LogFormat::Text);
            // The plugin first: from here on no pod waits for an agent that is going away.
            if let Some(conf_dir) = &cni_conf_dir {
                for changed in cni::install::uninstall(conf_dir, cni_bin_dir.as_deref())? {
                    println!("removed trellis-cni from {}", changed.display());
                }
            }
            match std::fs::remove_file(&cni_namespaces_file) {
                Ok(()) => println!("removed {}", cni_namespaces_file.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(anyhow::anyhow!("{}: {e}", cni_namespaces_file.display())),
            }
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
