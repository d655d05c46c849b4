//! `mesh-ctl enroll|unenroll <namespace>`: set or remove `trellis.dev/mesh: enabled` on a
//! Namespace, in a directory of YAML (standalone) or in the cluster.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context as _};
use mesh_api::selection::MESH_LABEL;
use serde_yaml_ng::Value;

use crate::documents;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The namespace.
    pub namespace: String,
    /// Standalone: the controller's directory of YAML to edit. Without it, the Namespace is
    /// patched in the cluster of the current kubeconfig (or the in-cluster service account).
    #[arg(long, env = "TRELLIS_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
}

pub fn run(args: &Args, enroll: bool) -> anyhow::Result<ExitCode> {
    let message = match &args.config_dir {
        Some(dir) => edit_dir(dir, &args.namespace, enroll)?,
        None => patch_cluster(&args.namespace, enroll)?,
    };
    println!("{message}");
    Ok(ExitCode::SUCCESS)
}

/// Edits the one document that defines the Namespace; every other byte of the directory
/// stays as it was. The rewritten document loses its comments (it is re-serialised).
fn edit_dir(dir: &Path, namespace: &str, enroll: bool) -> anyhow::Result<String> {
    // Never edit on top of a broken directory: the controller would refuse it anyway, and
    // the operator should see the real problem first.
    if let Err(e) = mesh_api::objects::read_dir(dir) {
        bail!(
            "refusing to edit {}: it does not parse ({e}); fix it first (`mesh-ctl validate {}` lists every problem)",
            dir.display(),
            dir.display()
        );
    }
    for file in documents::yaml_files(dir)? {
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        for doc in documents::split(&text) {
            let Ok(mut value) = serde_yaml_ng::from_str::<Value>(doc.text(&text)) else {
                continue;
            };
            if value["kind"].as_str() != Some("Namespace")
                || value["metadata"]["name"].as_str() != Some(namespace)
            {
                continue;
            }
            let where_ = format!("{}:{}", file.display(), doc.line);
            if !set_label(&mut value, enroll) {
                return Ok(if enroll {
                    format!("namespace {namespace} is already enrolled ({where_})")
                } else {
                    format!("namespace {namespace} is not enrolled ({where_})")
                });
            }
            let mut edited = String::with_capacity(text.len() + 64);
            edited.push_str(&text[..doc.range.start]);
            edited.push_str(&serde_yaml_ng::to_string(&value)?);
            edited.push_str(&text[doc.range.end..]);
            write_atomically(&file, &edited)?;
            return Ok(format!(
                "namespace {namespace} {} ({where_})",
                if enroll { "enrolled" } else { "unenrolled" }
            ));
        }
    }
    if !enroll {
        return Ok(format!(
            "namespace {namespace} is not enrolled (no Namespace object in {})",
            dir.display()
        ));
    }
    let file = dir.join(format!("namespace-{namespace}.yaml"));
    if file.exists() {
        bail!(
            "{} exists but does not define Namespace {namespace}: move it away or add the Namespace by hand",
            file.display()
        );
    }
    let text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n  labels:\n    {MESH_LABEL}: enabled\n"
    );
    write_atomically(&file, &text)?;
    Ok(format!(
        "namespace {namespace} enrolled (created {})",
        file.display()
    ))
}

/// Sets or removes the mesh label; false when it already was as wanted.
fn set_label(namespace: &mut Value, enroll: bool) -> bool {
    let metadata = &mut namespace["metadata"];
    let has = metadata["labels"][MESH_LABEL].as_str() == Some("enabled");
    if has == enroll {
        return false;
    }
    let Value::Mapping(metadata) = metadata else {
        return false; // not reached: the name was read from it
    };
    let labels = metadata
        .entry("labels".into())
        .or_insert_with(|| Value::Mapping(Default::default()));
    if !labels.is_mapping() {
        *labels = Value::Mapping(Default::default());
    }
    let Value::Mapping(map) = labels else {
        unreachable!()
    };
    if enroll {
        map.insert(MESH_LABEL.into(), "enabled".into());
    } else {
        map.remove(MESH_LABEL);
        if map.is_empty() {
            metadata.remove("labels");
        }
    }
    true
}

/// Temp file in the same directory, then rename: the controller never reads half a file.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // A dot file without .yaml extension, so a controller scanning now ignores it.
    let tmp = path.with_file_name(format!(".{name}.mesh-ctl-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        if let Ok(meta) = std::fs::metadata(path) {
            std::fs::set_permissions(&tmp, meta.permissions())?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// A JSON merge patch of the Namespace's labels (null deletes the label). Not exercised by
/// the tests: there is no cluster here; it is kept to this one call on purpose.
fn patch_cluster(namespace: &str, enroll: bool) -> anyhow::Result<String> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, Patch, PatchParams};

    let value = if enroll {
        serde_json::Value::from("enabled")
    } else {
        serde_json::Value::Null
    };
    let patch = serde_json::json!({ "metadata": { "labels": { MESH_LABEL: value } } });
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let client = kube::Client::try_default().await.context(
                "no Kubernetes configuration (kubeconfig or in-cluster): for a standalone setup pass --config-dir or set TRELLIS_CONFIG_DIR",
            )?;
            Api::<Namespace>::all(client)
                .patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("patching the labels of namespace {namespace}: does it exist, and may you patch namespaces?"))?;
            anyhow::Ok(())
        })?;
    Ok(format!(
        "namespace {namespace} {}",
        if enroll { "enrolled" } else { "unenrolled" }
    ))
}
