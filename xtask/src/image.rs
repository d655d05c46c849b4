//! `cargo xtask image`: OCI images of the node agent and the controller, written as OCI
//! layouts to `<target>/images/<name>/` (push with `skopeo copy oci:<dir> docker://…`), tagged
//! with the workspace version, never `latest`, as the manifests in deploy/ name them.
//!
//! No base image can be pulled here and none is needed: an image is its binaries, the shared
//! libraries they load (as `ldd` resolves them on this machine, the dynamic loader included),
//! and nothing else: no shell, no package manager, no CA bundle (the node trusts the mesh root
//! from a file, the controller the API server's CA from its service-account mount). The node
//! image adds what mesh-node runs (`nft` and `ip`, see mesh-node/src/datapath/tproxy.rs) and
//! `trellis-cni` beside mesh-node, where mesh-node's `--cni-plugin` default finds it to copy it
//! to the host. The host runs the plugin with its own libraries, not the image's, so the
//! plugin is linked statically (glibc's `crt-static`).
//!
//! `--check` then proves each image sound: see `check.rs`.

mod check;
mod oci;

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _};

use crate::cargo;

/// Where the manifests in deploy/ pull the images from.
const REGISTRY: &str = "ghcr.io/trellis-mesh";
/// The tag: the workspace version. mesh-controller/tests/deploy.rs holds the manifests to it.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Our binaries' directory in both images.
const BIN: &str = "/usr/local/bin";
/// The images' PATH: mesh-node runs `nft` and `ip` by name.
const PATH: &str = "PATH=/usr/local/bin:/usr/sbin:/usr/bin";
/// The host tools the node agent runs (Debian's nftables and iproute2, from `cargo xtask setup`).
const NODE_TOOLS: &[&str] = &["/usr/sbin/nft", "/usr/sbin/ip"];
/// The triple the static plugin is built for, named explicitly so that its target-specific
/// RUSTFLAGS reach it alone (not build scripts) and its output lands apart from the host build.
const TRIPLE: &str = "x86_64-unknown-linux-gnu";
const STATIC_RUSTFLAGS: (&str, &str) = (
    "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
    "-C target-feature=+crt-static",
);

#[derive(clap::Args)]
pub struct ImageArgs {
    /// Then check every image: digests, `skopeo inspect`, the files in its layer, and its
    /// entry point run in a chroot of its own files (needs root).
    #[arg(long)]
    check: bool,
    /// Pack debug binaries: quick after `cargo build`, large; for trying the packing, not for
    /// pushing.
    #[arg(long)]
    debug: bool,
}

/// One image: its repository under REGISTRY (and its directory under `<target>/images`), the
/// user it runs as, and what it holds besides libraries.
pub struct Image {
    name: &'static str,
    /// `uid:gid`. The node agent needs root (eBPF, nftables, other pods' namespaces); the
    /// controller needs no privilege and runs as the Deployment's 65532.
    user: &'static str,
    files: Vec<oci::File>,
    /// Runs of the unpacked image beyond its entry point's `--version`.
    probe: fn(&check::Rootfs) -> anyhow::Result<()>,
}

impl Image {
    fn reference(&self) -> String {
        format!("{REGISTRY}/{}:{VERSION}", self.name)
    }

    fn entrypoint(&self) -> String {
        format!("{BIN}/{}", self.name)
    }
}

pub fn run(args: ImageArgs) -> anyhow::Result<()> {
    if std::env::consts::ARCH != "x86_64" {
        bail!(
            "the images are amd64, and this machine is {}",
            std::env::consts::ARCH
        );
    }
    let started = Instant::now();
    cargo::build(!args.debug)?;
    let plugin = static_plugin(!args.debug)?;
    let target = target_dir()?;
    let bins = target.join(if args.debug { "debug" } else { "release" });
    let out = target.join("images");
    let staging = out.join(".staging");
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;

    let mut node = vec![ours(&staging, &bins.join("mesh-node"))?, ours(&staging, &plugin)?];
    for tool in NODE_TOOLS {
        node.push(system(tool)?);
    }
    let images = [
        Image {
            name: "mesh-node",
            user: "0:0",
            files: node,
            probe: check::node,
        },
        Image {
            name: "mesh-controller",
            user: "65532:65532",
            files: vec![ours(&staging, &bins.join("mesh-controller"))?],
            probe: |_| Ok(()),
        },
    ];

    let ready = started.elapsed();
    let mut sizes = Vec::new();
    for image in &images {
        let files = with_libraries(&image.files)?;
        let config = oci::Config {
            entrypoint: vec![image.entrypoint()],
            env: vec![PATH.to_string()],
            user: image.user.to_string(),
        };
        let dir = out.join(image.name);
        let written = oci::write(&dir, &image.reference(), &files, &config)?;
        println!(
            "image: {} ({}) in {}",
            image.reference(),
            written.manifest_digest,
            dir.display()
        );
        for file in &files {
            println!("  {}", file.path);
        }
        sizes.push((image.reference(), written));
    }
    std::fs::remove_dir_all(&staging).ok();
    let packed = started.elapsed() - ready;

    let checking = Instant::now();
    if args.check {
        for image in &images {
            check::image(&out.join(image.name), image)?;
        }
    }
    println!("\n{:<44} {:>12} {:>10}", "image", "compressed", "unpacked");
    for (reference, written) in &sizes {
        println!(
            "{reference:<44} {:>8.1} MiB {:>6.1} MiB",
            mib(written.compressed),
            mib(written.unpacked)
        );
    }
    print!(
        "image: binaries ready in {:.1}s, packed in {:.1}s",
        ready.as_secs_f64(),
        packed.as_secs_f64()
    );
    if args.check {
        print!(", checked in {:.1}s", checking.elapsed().as_secs_f64());
    }
    println!();
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The build's target directory (CARGO_TARGET_DIR or the workspace's `target/`).
fn target_dir() -> anyhow::Result<PathBuf> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .current_dir(cargo::workspace_root())
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    Ok(metadata.target_directory.into_std_path_buf())
}

/// trellis-cni, statically linked: the container runtime runs it on the host, whose C library
/// may be older than this machine's or not glibc at all.
fn static_plugin(release: bool) -> anyhow::Result<PathBuf> {
    let mut args = vec![
        "build",
        "-p",
        "mesh-cni",
        "--bin",
        "trellis-cni",
        "--target",
        TRIPLE,
    ];
    if release {
        args.push("--release");
    }
    let (var, flags) = STATIC_RUSTFLAGS;
    println!("+ {var}={flags:?} cargo {}", args.join(" "));
    let status = Command::new("cargo")
        .args(&args)
        .env(var, flags)
        .current_dir(cargo::workspace_root())
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("building the static trellis-cni failed: {status}");
    }
    let plugin = target_dir()?
        .join(TRIPLE)
        .join(if release { "release" } else { "debug" })
        .join("trellis-cni");
    if !libraries(&plugin)?.is_empty() {
        bail!(
            "{} is linked dynamically: RUSTFLAGS or CARGO_ENCODED_RUSTFLAGS in the environment \
             override {var}; unset them",
            plugin.display()
        );
    }
    Ok(plugin)
}

/// One of our binaries, in BIN, without its debug info (the release profile keeps line tables
/// for the benchmarks' profiles; the symbols stay, so backtraces still name functions).
fn ours(staging: &Path, binary: &Path) -> anyhow::Result<oci::File> {
    let name = binary.file_name().context("a binary has a file name")?;
    let stripped = staging.join(name);
    cargo::run(
        "strip",
        &["--strip-debug", "-o", path_str(&stripped)?, path_str(binary)?],
    )?;
    Ok(oci::File {
        path: format!("{BIN}/{}", name.to_string_lossy()),
        source: stripped,
        mode: 0o755,
    })
}

/// A program of this machine, at the same path in the image.
fn system(path: &str) -> anyhow::Result<oci::File> {
    if !Path::new(path).exists() {
        bail!("{path} is missing: cargo xtask setup installs nftables and iproute2");
    }
    Ok(oci::File {
        path: path.to_string(),
        source: PathBuf::from(path),
        mode: 0o755,
    })
}

/// `files` and every shared library they load, each at the path the loader finds it (the
/// dynamic loader at its PT_INTERP path), once.
fn with_libraries(files: &[oci::File]) -> anyhow::Result<Vec<oci::File>> {
    let mut out: Vec<oci::File> = Vec::new();
    for file in files {
        for library in libraries(&file.source)? {
            if out.iter().any(|f| f.path == library) {
                continue;
            }
            let mode = std::fs::metadata(&library)
                .with_context(|| format!("{library}, which {} needs", file.source.display()))?
                .permissions()
                .mode();
            out.push(oci::File {
                source: PathBuf::from(&library),
                path: library,
                mode: mode & 0o755,
            });
        }
    }
    out.extend(files.iter().map(|f| oci::File {
        path: f.path.clone(),
        source: f.source.clone(),
        mode: f.mode,
    }));
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The shared libraries `binary` loads, as `ldd` (the loader itself) resolves them; none for a
/// static binary. The vDSO is the kernel's, not a file.
fn libraries(binary: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new("ldd").arg(binary).output().context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("statically linked") || text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        bail!(
            "ldd {}: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut libraries = Vec::new();
    for line in text.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)`, or the loader as
        // `/lib64/ld-linux-x86-64.so.2 (0x…)`, or `linux-vdso.so.1 (0x…)`.
        let resolved = match line.split_once("=>") {
            Some((name, target)) if !target.trim_start().starts_with('/') => {
                bail!("ldd {}: {} => {}", binary.display(), name.trim(), target.trim())
            }
            Some((_, target)) => target,
            None => line,
        };
        let resolved = resolved.split_whitespace().next().unwrap_or_default();
        if resolved.starts_with('/') {
            libraries.push(resolved.to_string());
        }
    }
    Ok(libraries)
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}
