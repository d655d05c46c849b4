//! `cargo xtask <command>`: the developer entry points.
//!
//! - `setup`: install what a fresh machine lacks (idempotent)
//! - `build`: the eBPF object and every binary
//! - `test`: setup, lints, unit tests and the network-namespace end-to-end tests
//! - `demo`: a small mesh on network namespaces, real traffic, what the proxy saw
//! - `bench`: Trellis against the direct path and HAProxy, written to `target/bench/`
//! - `codegen`: the Istio CRDs in `deploy/crds/` and the Helm chart's `crds/`, from the mesh-api
//!   types (`--check`: fail if stale)
//! - `image`: OCI images of the node agent and the controller in `target/images/`, tagged with
//!   the workspace version (`--check`: prove each valid and its entry point running)

mod bench;
mod cargo;
mod codegen;
mod demo;
mod image;
mod interrupt;
mod setup;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Trellis developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the eBPF toolchain (nightly rust-src, LLVM 22, bpf-linker), helm, kubectl and
    /// kubernetes-validate (for the deploy tests), skopeo (for the images), and mount bpffs.
    Setup,
    /// Build the eBPF object and all binaries.
    Build {
        /// Optimised binaries.
        #[arg(long)]
        release: bool,
    },
    /// Run setup, fmt and clippy checks, the generated-CRD check, and the whole test suite (needs root).
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Only tests whose name contains this.
        filter: Option<String>,
    },
    /// Build, start a mesh on network namespaces, send traffic, show what the proxy saw.
    Demo {
        /// Keep the mesh running until Ctrl-C and print how to look around.
        #[arg(long)]
        keep: bool,
    },
    /// Benchmarks: every arm, interleaved, several rounds (needs root).
    Bench(bench::BenchArgs),
    /// Write the Istio CRDs to deploy/crds/ and deploy/helm/trellis/crds/ from the mesh-api types.
    Codegen {
        /// Write nothing; fail, naming each file, if any is stale or missing.
        #[arg(long)]
        check: bool,
    },
    /// OCI images of mesh-node (with trellis-cni, nft and ip) and mesh-controller, from release
    /// binaries, as OCI layouts in target/images/<name>/, tagged with the workspace version.
    Image(image::ImageArgs),
    /// The benchmark load generator (run inside a pod by `bench`).
    #[command(hide = true, subcommand)]
    Loadgen(bench::loadgen::Load),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Build { release } => cargo::build(release),
        Command::Test { no_lint, filter } => {
            setup::run()?;
            if !no_lint {
                cargo::lint()?;
            }
            codegen::run(true)?;
            cargo::test(filter.as_deref())
        }
        Command::Demo { keep } => {
            setup::run()?;
            cargo::build(false)?;
            demo::run(keep)
        }
        Command::Bench(args) => {
            setup::run()?;
            bench::run(args)
        }
        Command::Codegen { check } => codegen::run(check),
        Command::Image(args) => {
            setup::run()?;
            image::run(args)
        }
        Command::Loadgen(load) => bench::loadgen::run(load),
    }
}
