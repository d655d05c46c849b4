//! An OCI image layout (image-spec v1.1) of one single-layer image, written directly: the
//! layer is a gzip'd tar built in memory, with every owner root and every mtime the epoch,
//! entries in path order and parent directories spelled out, so the same files always give
//! the same digests. <https://github.com/opencontainers/image-spec/blob/v1.1.0/image-layout.md>

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The index annotation `skopeo copy oci:<dir>:<name>` and `ctr import` look an image up by.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Reproducible builds put the epoch where a time is required (the config's `created`).
const EPOCH: &str = "1970-01-01T00:00:00Z";

/// A regular file of the image: where it goes, where its bytes come from, its mode.
pub struct File {
    /// Absolute path inside the image.
    pub path: String,
    pub source: PathBuf,
    pub mode: u32,
}

/// What the container runtime needs to start the image.
pub struct Config {
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    /// `uid[:gid]`, numeric: the image has no /etc/passwd.
    pub user: String,
}

/// What was written, for the size report.
pub struct Written {
    pub manifest_digest: String,
    /// The gzip'd layer, config and manifest: what a registry stores and a node pulls.
    pub compressed: u64,
    /// The sum of the files' sizes: what the unpacked image takes on a node's disk.
    pub unpacked: u64,
}

pub fn sha256(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Writes the layout of `reference` (`registry/repository:tag`) to `dir`, replacing what was
/// there.
pub fn write(dir: &Path, reference: &str, files: &[File], config: &Config) -> anyhow::Result<Written> {
    let (tar, unpacked) = layer_tar(files)?;
    let diff_id = sha256(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar)?;
    let layer = gz.finish()?;

    let config = serde_json::to_vec(&json!({
        "created": EPOCH,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": config.entrypoint,
            "Env": config.env,
            "User": config.user,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": EPOCH, "created_by": "cargo xtask image"}],
    }))?;
    let version = reference.rsplit_once(':').map_or("", |(_, tag)| tag);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": descriptor(CONFIG, &config),
        "layers": [descriptor(LAYER, &layer)],
        "annotations": {"org.opencontainers.image.version": version},
    }))?;
    let mut manifest_descriptor = descriptor(MANIFEST, &manifest);
    manifest_descriptor["platform"] = json!({"architecture": "amd64", "os": "linux"});
    manifest_descriptor["annotations"] = json!({ REF_NAME: reference });
    let index = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [manifest_descriptor],
    }))?;

    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    std::fs::write(dir.join("index.json"), &index)?;
    for blob in [&layer, &config, &manifest] {
        let digest = sha256(blob);
        let hex = digest.trim_start_matches("sha256:");
        std::fs::write(blobs.join(hex), blob)?;
    }
    Ok(Written {
        manifest_digest: sha256(&manifest),
        compressed: (layer.len() + config.len() + manifest.len()) as u64,
        unpacked,
    })
}

fn descriptor(media_type: &str, blob: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(blob), "size": blob.len()})
}

/// The layer, uncompressed, and the total size of its files.
fn layer_tar(files: &[File]) -> anyhow::Result<(Vec<u8>, u64)> {
    // Every entry by its path inside the layer (relative, as layers spell them); a directory
    // maps to None. BTreeMap order puts each directory before what it holds.
    let mut entries: BTreeMap<PathBuf, Option<&File>> = BTreeMap::new();
    for file in files {
        let Some(relative) = file.path.strip_prefix('/').map(Path::new) else {
            bail!("{}: a path inside the image must be absolute", file.path);
        };
        if entries.insert(relative.to_path_buf(), Some(file)).is_some() {
            bail!("{} is in the image twice", file.path);
        }
        for parent in relative.ancestors().skip(1) {
            if !parent.as_os_str().is_empty() {
                entries.entry(parent.to_path_buf()).or_insert(None);
            }
        }
    }
    let mut tar = tar::Builder::new(Vec::new());
    let mut unpacked = 0;
    for (path, file) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        match file {
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, &path, std::io::empty())?;
            }
            Some(file) => {
                let bytes = std::fs::read(&file.source)
                    .with_context(|| format!("reading {}", file.source.display()))?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(file.mode);
                header.set_size(bytes.len() as u64);
                unpacked += bytes.len() as u64;
                tar.append_data(&mut header, &path, bytes.as_slice())?;
            }
        }
    }
    Ok((tar.into_inner()?, unpacked))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same files give the same digests, whenever and wherever they were written (the
    /// README promises it), and every parent directory gets an entry of its own.
    #[test]
    fn the_same_files_give_the_same_image() {
        let scratch = std::env::temp_dir().join(format!("trellis-oci-test-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).unwrap();
        let write = |name: &str, age: u64| {
            let source = scratch.join(format!("{name}-source"));
            std::fs::write(&source, b"#!/bin/true\n").unwrap();
            let mtime = std::time::SystemTime::now() - std::time::Duration::from_secs(age);
            std::fs::File::options()
                .write(true)
                .open(&source)
                .unwrap()
                .set_modified(mtime)
                .unwrap();
            let files = [File {
                path: "/usr/local/bin/tool".into(),
                source,
                mode: 0o755,
            }];
            let config = Config {
                entrypoint: vec!["/usr/local/bin/tool".into()],
                env: vec![],
                user: "0:0".into(),
            };
            write(&scratch.join(name), "example.com/tool:1.0.0", &files, &config).unwrap()
        };
        let (a, b) = (write("a", 0), write("b", 86_400));
        assert_eq!(a.manifest_digest, b.manifest_digest);

        let (tar, _) = layer_tar(&[File {
            path: "/usr/local/bin/tool".into(),
            source: scratch.join("a-source"),
            mode: 0o755,
        }])
        .unwrap();
        let paths: Vec<String> = tar::Archive::new(tar.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        std::fs::remove_dir_all(&scratch).unwrap();
        assert_eq!(paths, ["usr", "usr/local", "usr/local/bin", "usr/local/bin/tool"]);
    }
}
