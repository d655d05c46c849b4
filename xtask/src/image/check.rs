//! `cargo xtask image --check`: each layout is a valid OCI image and the image works.
//!
//! - Every blob's sha256 is its name; index → manifest → config and layer, with the media
//!   types and sizes their descriptors give; the config's `diff_ids` is the uncompressed
//!   layer's digest; the index names the image by its reference.
//! - `skopeo inspect oci:<dir>:<reference>` (containers/image, what `skopeo copy` uses to push)
//!   reads it and agrees on the digests.
//! - The layer: every entry owned by root with the epoch as mtime, relative paths, and the
//!   image's programs there and executable.
//! - The layer unpacked by GNU tar (another implementation than the writer's), the entry point
//!   runs `--version` chrooted into it, with the image's environment and user and none of this
//!   machine's files: a library missing from the image fails here. For the node: trellis-cni
//!   answers `CNI_COMMAND=VERSION` in the image and alone in an empty root (the host runs it,
//!   with none of the image's libraries), and the image's `nft` and `ip` install the kinds of
//!   rules mesh-node installs, beside kube-proxy-style iptables-nft rules, in a network
//!   namespace of their own.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, ensure, Context as _};
use serde_json::{json, Value};

use super::{oci, Image, VERSION};

/// An image's files unpacked into a scratch directory (removed on drop), and how the image
/// says to run them.
pub struct Rootfs {
    dir: PathBuf,
    env: Vec<String>,
    user: String,
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Rootfs {
    fn scratch(name: &str) -> anyhow::Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("trellis-image-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// `argv` chrooted into these files (inside network namespace `netns` if given), with the
    /// image's environment (plus `env`) and user, and nothing of this machine's environment.
    pub fn command(&self, netns: Option<&str>, env: &[(&str, &str)], argv: &[&str]) -> Command {
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "chroot"]);
                c
            }
            None => Command::new("chroot"),
        };
        command
            .arg(format!("--userspec={}", self.user))
            .arg(&self.dir)
            .args(argv)
            .env_clear()
            .envs(self.env.iter().filter_map(|kv| kv.split_once('=')))
            .envs(env.iter().copied());
        command
    }

    /// A root holding only the file at `path` of this one, at the same path.
    fn only(&self, path: &str) -> anyhow::Result<Rootfs> {
        let dir = Self::scratch("alone")?;
        let inside = dir.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(inside.parent().expect("an absolute path has a parent"))?;
        std::fs::copy(self.dir.join(path.trim_start_matches('/')), &inside)?;
        Ok(Rootfs {
            dir,
            env: self.env.clone(),
            user: self.user.clone(),
        })
    }
}

/// Runs `command` (with `stdin`), failing with what it printed; its stdout.
fn output(mut command: Command, stdin: Option<&str>) -> anyhow::Result<String> {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {shown}"))?;
    if let (Some(mut pipe), Some(text)) = (child.stdin.take(), stdin) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{shown}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The blob a descriptor points at, checked against the descriptor's media type and size.
/// (Digests were checked for every blob already.)
fn blob(dir: &Path, descriptor: &Value, media_type: &str) -> anyhow::Result<Vec<u8>> {
    ensure!(
        descriptor["mediaType"] == media_type,
        "descriptor {descriptor}: media type is not {media_type}"
    );
    let digest = descriptor["digest"]
        .as_str()
        .context("descriptor without a digest")?;
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("{digest}: not a sha256 digest"))?;
    let path = dir.join("blobs/sha256").join(hex);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        descriptor["size"] == bytes.len(),
        "{}: {} bytes, its descriptor says {}",
        path.display(),
        bytes.len(),
        descriptor["size"]
    );
    Ok(bytes)
}

fn json(bytes: &[u8], what: &str) -> anyhow::Result<Value> {
    serde_json::from_slice(bytes).with_context(|| format!("{what} is not JSON"))
}

pub fn image(dir: &Path, image: &Image) -> anyhow::Result<()> {
    let reference = image.reference();
    println!("check: {reference} ({})", dir.display());
    let layout = json(&std::fs::read(dir.join("oci-layout"))?, "oci-layout")?;
    ensure!(
        layout == json!({"imageLayoutVersion": "1.0.0"}),
        "oci-layout: {layout}"
    );
    for entry in std::fs::read_dir(dir.join("blobs/sha256"))? {
        let path = entry?.path();
        let digest = oci::sha256(&std::fs::read(&path)?);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        ensure!(
            digest == format!("sha256:{name}"),
            "{}: its content's digest is {digest}",
            path.display()
        );
    }

    let index = json(&std::fs::read(dir.join("index.json"))?, "index.json")?;
    ensure!(
        index["schemaVersion"] == 2 && index["mediaType"] == oci::INDEX,
        "index.json: {index}"
    );
    let [descriptor] = index["manifests"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    else {
        bail!("index.json should list one manifest: {index}");
    };
    ensure!(
        descriptor["annotations"][oci::REF_NAME] == reference.as_str(),
        "index.json: the manifest is not named {reference}: {descriptor}"
    );
    ensure!(
        descriptor["platform"] == json!({"architecture": "amd64", "os": "linux"}),
        "index.json: platform of {descriptor}"
    );
    let manifest = json(&blob(dir, descriptor, oci::MANIFEST)?, "the manifest")?;
    ensure!(manifest["schemaVersion"] == 2, "manifest: {manifest}");
    let config = json(&blob(dir, &manifest["config"], oci::CONFIG)?, "the config")?;
    let [layer_descriptor] = manifest["layers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    else {
        bail!("the manifest should have one layer: {manifest}");
    };
    let layer = blob(dir, layer_descriptor, oci::LAYER)?;
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(layer.as_slice())
        .read_to_end(&mut tar)
        .context("the layer is not gzip")?;

    ensure!(
        config["architecture"] == "amd64" && config["os"] == "linux",
        "config: platform {} {}",
        config["architecture"],
        config["os"]
    );
    ensure!(
        config["rootfs"] == json!({"type": "layers", "diff_ids": [oci::sha256(&tar)]}),
        "config: rootfs {} is not the uncompressed layer's digest",
        config["rootfs"]
    );
    ensure!(
        config["config"]["Entrypoint"] == json!([image.entrypoint()])
            && config["config"]["User"] == image.user,
        "config: entry point and user {}",
        config["config"]
    );

    let inspect = output(
        {
            let mut c = Command::new("skopeo");
            c.arg("inspect").arg(format!("oci:{}:{reference}", dir.display()));
            c
        },
        None,
    )
    .context("skopeo inspect (cargo xtask setup installs skopeo)")?;
    let inspect = json(inspect.as_bytes(), "skopeo inspect's output")?;
    ensure!(
        inspect["Digest"] == descriptor["digest"]
            && inspect["Layers"] == json!([layer_descriptor["digest"]])
            && inspect["Architecture"] == "amd64"
            && inspect["Os"] == "linux",
        "skopeo inspect disagrees with the layout: {inspect}"
    );
    println!("check: digests, sizes, media types and skopeo inspect agree");

    let entries = entries(&tar)?;
    for file in &image.files {
        let path = file.path.trim_start_matches('/');
        let Some((kind, mode, _)) = entries.get(path) else {
            bail!("the layer has no {path}");
        };
        ensure!(
            *kind == tar::EntryType::Regular && mode & 0o111 != 0,
            "{path} in the layer is not an executable file"
        );
    }
    println!(
        "check: the layer holds {} entries, the image's programs executable",
        entries.len()
    );

    let rootfs = Rootfs {
        dir: Rootfs::scratch(image.name)?,
        env: config["config"]["Env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        user: image.user.to_string(),
    };
    let mut untar = Command::new("tar");
    untar
        .arg("-xzpf")
        .arg(
            dir.join("blobs/sha256").join(
                layer_descriptor["digest"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_start_matches("sha256:"),
            ),
        )
        .arg("--numeric-owner")
        .arg("-C")
        .arg(&rootfs.dir);
    output(untar, None)?;
    let entrypoint = image.entrypoint();
    let version = output(rootfs.command(None, &[], &[&entrypoint, "--version"]), None)?;
    ensure!(
        version.trim() == format!("{} {VERSION}", image.name),
        "{entrypoint} --version printed {version:?}"
    );
    println!(
        "check: {entrypoint} --version in the image as {}: {}",
        image.user,
        version.trim()
    );
    (image.probe)(&rootfs)
}

/// Every entry of the layer by path: type, mode, size. Fails on an entry not owned by root,
/// with another mtime than the epoch, or whose path leaves the root.
fn entries(tar: &[u8]) -> anyhow::Result<BTreeMap<String, (tar::EntryType, u32, u64)>> {
    let mut out = BTreeMap::new();
    for entry in tar::Archive::new(tar).entries()? {
        let entry = entry?;
        let header = entry.header();
        let path = entry.path()?.to_string_lossy().into_owned();
        ensure!(
            !path.starts_with('/') && !path.split('/').any(|c| c == ".."),
            "layer entry {path}: not a relative path inside the root"
        );
        ensure!(
            header.uid()? == 0 && header.gid()? == 0 && header.mtime()? == 0,
            "layer entry {path}: owner {}:{}, mtime {}",
            header.uid()?,
            header.gid()?,
            header.mtime()?
        );
        out.insert(
            path.trim_end_matches('/').to_string(),
            (header.entry_type(), header.mode()?, header.size()?),
        );
    }
    Ok(out)
}

/// The node image: the CNI plugin answers in the image and alone, and nft and ip do what
/// mesh-node asks of them.
pub fn node(rootfs: &Rootfs) -> anyhow::Result<()> {
    let plugin = "/usr/local/bin/trellis-cni";
    for (root, place) in [
        (None, "in the image"),
        (Some(rootfs.only(plugin)?), "alone in an empty root"),
    ] {
        let command = root
            .as_ref()
            .unwrap_or(rootfs)
            .command(None, &[("CNI_COMMAND", "VERSION")], &[plugin]);
        let reply = json(output(command, None)?.as_bytes(), "trellis-cni's VERSION reply")?;
        ensure!(
            reply["supportedVersions"]
                .as_array()
                .is_some_and(|v| v.contains(&json!("1.0.0"))),
            "trellis-cni {place}: CNI_COMMAND=VERSION answered {reply}"
        );
        println!("check: {plugin} {place}: CNI_COMMAND=VERSION answers {reply}");
    }

    // The rule kinds of mesh-node/src/datapath/tproxy.rs (`ruleset` and `install`): a set of
    // addresses, a prerouting chain after DNAT, `socket transparent`, `tproxy`, marks, and a
    // policy route by mark to local delivery. A fresh namespace, so this machine's rules are
    // untouched, holding first what kube-proxy's iptables mode leaves on a node: rules with
    // `xt` matches (iptables-nft), for which the image has no xtables plugins.
    let name = format!("trellis-image-check-{}", std::process::id());
    let netns = tests::netns::Netns::new(&name)?;
    let ns = Some(netns.name.as_str());
    let kube_proxy = "-t nat -A PREROUTING -p tcp -m comment --comment kube-proxy -m tcp --dport 80 \
                      -j DNAT --to-destination 10.96.0.1:8080";
    let mut iptables = Command::new("ip");
    iptables
        .args(["netns", "exec", &name, "iptables-nft"])
        .args(kube_proxy.split_whitespace());
    output(iptables, None).context("iptables-nft (cargo xtask setup installs iptables)")?;
    let script = "add table ip trellis
add set ip trellis enrolled_pods { type ipv4_addr; }
add chain ip trellis divert { type filter hook prerouting priority dstnat + 1; policy accept; }
flush chain ip trellis divert
add rule ip trellis divert meta l4proto tcp tcp flags & (syn | ack) != syn socket transparent 1 meta mark set 0x53a accept
add rule ip trellis divert ip daddr @enrolled_pods tcp flags & (syn | ack) == syn meta mark set 0x53a tproxy to :15006 accept
add rule ip trellis divert ip daddr @enrolled_pods tcp flags & (syn | ack) == syn drop
add element ip trellis enrolled_pods { 10.1.1.2 }
";
    output(rootfs.command(ns, &[], &["nft", "-f", "-"]), Some(script))?;
    let listed = output(
        rootfs.command(ns, &[], &["nft", "list", "table", "ip", "trellis"]),
        None,
    )?;
    for expected in [
        "socket transparent 1",
        "tproxy to :15006",
        "elements = { 10.1.1.2 }",
    ] {
        ensure!(
            listed.contains(expected),
            "the image's nft installed the table without {expected:?}:\n{listed}"
        );
    }
    let ip = |args: &[&str]| {
        let mut argv = vec!["ip"];
        argv.extend(args);
        output(rootfs.command(ns, &[], &argv), None)
    };
    ip(&[
        "rule", "add", "fwmark", "0x53a", "lookup", "133", "priority", "133",
    ])?;
    ip(&[
        "route",
        "replace",
        "local",
        "0.0.0.0/0",
        "dev",
        "lo",
        "table",
        "133",
    ])?;
    let rules = ip(&["rule", "show"])?;
    ensure!(
        rules.contains("fwmark 0x53a lookup 133"),
        "the image's ip added no policy route:\n{rules}"
    );
    println!(
        "check: the image's nft and ip install a tproxy table beside iptables-nft rules, and a \
         policy route"
    );
    Ok(())
}
