//! `cargo xtask setup`: everything a fresh machine of this kind lacks, installed
//! idempotently; each step says whether it did something or found it already there.
//! The recipe is the one in ../shared/DESIGN.md ("Toolchain facts").

use std::process::Command;

use anyhow::{bail, Context as _};

use crate::cargo;

/// Debian packages: LLVM 22 for bpf-linker (matching rustc nightly's LLVM) and what it links
/// against; iproute2 and curl for the namespace tests and the demo; openssl (s_client) as an
/// outside TLS client in the identity tests; ping for the non-TCP tests; nftables for the
/// node's divert rule (and the tests' kube-proxy rules).
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "iproute2",
    "curl",
    "openssl",
    "iputils-ping",
    "nftables",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

fn step(name: &str, present: bool, install: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    if present {
        println!("setup: {name}: already there");
        return Ok(());
    }
    println!("setup: {name}: installing");
    install().with_context(|| format!("setup step {name:?}"))?;
    println!("setup: {name}: installed");
    Ok(())
}

pub fn run() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    step(
        &format!("Debian packages ({})", APT_PACKAGES.join(", ")),
        missing.is_empty(),
        || {
            cargo::run("apt-get", &["update", "-qq"])?;
            let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
            args.extend(&missing);
            cargo::run("apt-get", &args)
        },
    )?;

    let toolchains = output("rustup", &["toolchain", "list"]).unwrap_or_default();
    step(
        "rust nightly toolchain",
        toolchains.lines().any(|l| l.starts_with("nightly")),
        || {
            cargo::run(
                "rustup",
                &["toolchain", "install", "nightly", "--profile", "minimal"],
            )
        },
    )?;
    let components = output(
        "rustup",
        &["component", "list", "--installed", "--toolchain", "nightly"],
    )
    .unwrap_or_default();
    step(
        "nightly rust-src",
        components.lines().any(|l| l.starts_with("rust-src")),
        || {
            cargo::run(
                "rustup",
                &["component", "add", "rust-src", "--toolchain", "nightly"],
            )
        },
    )?;

    let linker = output("bpf-linker", &["--version"]).unwrap_or_default();
    step(
        &format!("bpf-linker {BPF_LINKER_VERSION} (LLVM 22)"),
        linker.contains(BPF_LINKER_VERSION),
        || {
            let path = format!(
                "/usr/lib/llvm-22/bin:{}",
                std::env::var("PATH").unwrap_or_default()
            );
            println!("+ cargo install bpf-linker --version {BPF_LINKER_VERSION} --no-default-features --features llvm-22 (about 3 minutes)");
            let status = Command::new("cargo")
                .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
                .args(["--no-default-features", "--features", "llvm-22"])
                .env("PATH", path)
                .status()?;
            if !status.success() {
                bail!("cargo install bpf-linker failed: {status}");
            }
            Ok(())
        },
    )?;

    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    step(
        "bpffs at /sys/fs/bpf",
        mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf ")),
        || cargo::run("mount", &["-t", "bpf", "bpf", "/sys/fs/bpf"]),
    )?;
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    output("dpkg-query", &["-W", "-f=${Status}", package]).is_some_and(|s| s.contains("install ok installed"))
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
