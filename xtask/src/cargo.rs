//! Cargo invocations shared by the commands.

use std::process::Command;

use anyhow::{bail, Context as _};

/// Runs a command from the workspace root, echoing it, failing on a non-zero exit.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    println!("+ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("{program} {} failed: {status}", args.join(" "));
    }
    Ok(())
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .to_path_buf()
}

pub fn build(release: bool) -> anyhow::Result<()> {
    let mut args = vec!["build", "--bins"];
    if release {
        args.push("--release");
    }
    run("cargo", &args)
}

pub fn lint() -> anyhow::Result<()> {
    run("cargo", &["fmt", "--all", "--check"])?;
    run("cargo", &["clippy", "--all-targets", "--", "-D", "warnings"])
}

/// Unit tests, then the end-to-end tests (which need the mesh-node binary built first).
pub fn test(filter: Option<&str>) -> anyhow::Result<()> {
    build(false)?;
    let mut args = vec!["test"];
    if let Some(f) = filter {
        args.push(f);
    }
    run("cargo", &args)
}
