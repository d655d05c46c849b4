//! `mesh-ctl`: parse the command line and dispatch to the command's module.
//!
//! Exit codes: 0 success; 1 when the command ran and found something wrong (a node out of
//! sync, an invalid document, an analysis finding); 2 for usage errors (clap); other
//! failures (controller unreachable, unreadable file) also exit 1 with the reason on stderr.

mod analyze;
mod controller;
mod documents;
mod enroll;
mod output;
mod proxy_config;
mod status;
mod validate;

use std::{path::PathBuf, process::ExitCode};

use clap::{CommandFactory, Parser, Subcommand};

use crate::{controller::ControllerArgs, output::Format};

#[derive(Parser)]
#[command(
    name = "mesh-ctl",
    version,
    about = "Trellis CLI: enroll namespaces, validate and analyze configuration, inspect the controller and what each node enforces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll a namespace in the mesh (label `trellis.dev/mesh: enabled`).
    ///
    /// With --config-dir (standalone) the Namespace document in that directory is edited in
    /// place (created as namespace-<name>.yaml when there is none); otherwise the Namespace is
    /// patched in the Kubernetes cluster of the current kubeconfig.
    Enroll(enroll::Args),
    /// Remove a namespace from the mesh (drop the `trellis.dev/mesh` label).
    Unenroll(enroll::Args),
    /// Show the controller's source, revision, problems and every node's sync state.
    ///
    /// Exits 0 when every node is in sync and the source has no problems, 1 otherwise.
    Status {
        #[command(flatten)]
        controller: ControllerArgs,
        #[arg(short, long, value_enum, default_value_t = Format::Human)]
        output: Format,
    },
    /// Show the config a node acknowledged, from the controller (`/debug/config_dump`).
    ProxyConfig {
        /// The node's name.
        node: String,
        /// The section to show.
        #[arg(default_value = "all", value_parser = proxy_config::SECTION_NAMES)]
        section: String,
        #[command(flatten)]
        controller: ControllerArgs,
        #[arg(short, long, value_enum, default_value_t = Format::Human)]
        output: Format,
    },
    /// Validate YAML documents one by one, as the controller parses them.
    ///
    /// Directories contribute every .yaml/.yml file inside (not recursive); `-` reads stdin.
    /// Prints `file:line (Kind ns/name): OK` or the error with the field path. Exits 1 when
    /// any document is invalid.
    Validate {
        /// Files or directories (`-` for stdin).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(short, long, value_enum, default_value_t = Format::Human)]
        output: Format,
    },
    /// Validate, then look across objects for missing references, conflicts, selectors that
    /// match no pod and fields Trellis does not enforce.
    ///
    /// Exits 1 when anything is reported, warnings included (as `istioctl analyze` does).
    Analyze {
        /// Files or directories (`-` for stdin); not with --cluster.
        #[arg(required_unless_present = "cluster", conflicts_with = "cluster")]
        paths: Vec<PathBuf>,
        /// Report the running controller's problems and diagnostics instead of files.
        #[arg(long)]
        cluster: bool,
        #[command(flatten)]
        controller: ControllerArgs,
        #[arg(short, long, value_enum, default_value_t = Format::Human)]
        output: Format,
    },
    /// Print a shell completion script, e.g. `mesh-ctl completions bash > /etc/bash_completion.d/mesh-ctl`.
    Completions { shell: clap_complete::Shell },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Enroll(args) => enroll::run(&args, true),
        Command::Unenroll(args) => enroll::run(&args, false),
        Command::Status { controller, output } => status::run(&controller, output),
        Command::ProxyConfig {
            node,
            section,
            controller,
            output,
        } => proxy_config::run(&controller, &node, &section, output),
        Command::Validate { paths, output } => validate::run(&paths, output),
        Command::Analyze {
            paths,
            cluster,
            controller,
            output,
        } => {
            if cluster {
                analyze::run_cluster(&controller, output)
            } else {
                analyze::run(&paths, output)
            }
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "mesh-ctl", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("mesh-ctl: {e:#}");
        ExitCode::FAILURE
    })
}
