//! Compiles `mesh-ebpf` for the BPF target (nightly + bpf-linker, see `cargo xtask setup`)
//! and leaves the object in OUT_DIR, where `ebpf::load` embeds it.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "mesh-ebpf")
        .ok_or_else(|| anyhow!("mesh-ebpf is not in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("mesh-ebpf manifest has no parent directory"))?;
    // aya-build relays every line the inner cargo prints as a build warning; keep the inner
    // cargo quiet so only real compiler diagnostics surface.
    std::env::set_var("CARGO_TERM_QUIET", "true");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building mesh-ebpf failed: run `cargo xtask setup` (nightly rust-src, bpf-linker)")
}
