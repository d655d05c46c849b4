//! `cargo xtask codegen`: the Kubernetes CRDs of the Istio kinds, from the mesh-api types,
//! into `deploy/crds/` (one file per CRD and a `kustomization.yaml`) and the same CRD files
//! into the Helm chart's `deploy/helm/trellis/crds/` (Helm installs what is there before the
//! templates, and a chart cannot reach files outside its own directory, hence the copy).
//! `--check` changes nothing and fails, naming each file, when they differ from what the
//! types generate; the `test` flow runs it so a type change without regenerated CRDs fails CI.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use mesh_api::istio::crd;

/// The kustomize base's CRDs, with their kustomization.
const KUSTOMIZE_DIR: &str = "deploy/crds";
/// The chart's CRDs: the same files, no kustomization (Helm would send it to the API server).
const HELM_DIR: &str = "deploy/helm/trellis/crds";

/// Every file each generated directory should hold, by name.
fn expected() -> Vec<(&'static str, Vec<(String, String)>)> {
    let crds = crd::all();
    let mut kustomize = crds.clone();
    let mut kustomization = format!(
        "{}apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
        crd::HEADER
    );
    for (name, _) in &crds {
        kustomization.push_str(&format!("- {name}\n"));
    }
    kustomize.push(("kustomization.yaml".into(), kustomization));
    vec![(KUSTOMIZE_DIR, kustomize), (HELM_DIR, crds)]
}

/// Generated files present in the directory that codegen no longer produces (a kind was
/// removed or renamed). Hand-written files (without the header) are left alone.
fn obsolete(dir: &Path, expected: &[(String, String)]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let generated = std::fs::read_to_string(&path).is_ok_and(|t| t.starts_with(crd::HEADER));
        if generated && !expected.iter().any(|(n, _)| *n == name) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

pub fn run(check: bool) -> anyhow::Result<()> {
    let root = crate::cargo::workspace_root();
    let mut problems = Vec::new();
    let mut count = 0;
    for (shown_dir, files) in expected() {
        count += files.len();
        sync(&root.join(shown_dir), shown_dir, &files, check, &mut problems)?;
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        bail!(
            "{} generated file(s) in {KUSTOMIZE_DIR} or {HELM_DIR} out of date",
            problems.len()
        );
    }
    if check {
        println!("{KUSTOMIZE_DIR}, {HELM_DIR}: {count} files up to date");
    }
    Ok(())
}

/// Brings one directory to `files` (or, with `check`, adds to `problems` what differs).
fn sync(
    dir: &Path,
    shown_dir: &str,
    files: &[(String, String)],
    check: bool,
    problems: &mut Vec<String>,
) -> anyhow::Result<()> {
    if !check {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for (name, text) in files {
        let path = dir.join(name);
        let shown = format!("{shown_dir}/{name}");
        match std::fs::read_to_string(&path) {
            Ok(current) if current == *text => continue,
            Ok(_) if check => problems.push(format!("{shown} is stale: run `cargo xtask codegen`")),
            Err(_) if check => problems.push(format!("{shown} is missing: run `cargo xtask codegen`")),
            _ => {
                std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {shown}");
            }
        }
    }
    for path in obsolete(dir, files)? {
        let shown = format!(
            "{shown_dir}/{}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        if check {
            problems.push(format!(
                "{shown} is no longer generated: run `cargo xtask codegen`"
            ));
        } else {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            println!("removed {shown}");
        }
    }
    Ok(())
}
