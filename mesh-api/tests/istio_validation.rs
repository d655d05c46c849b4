//! Istio's own validation test data (`pkg/config/validation/testdata/crds` in istio/istio,
//! vendored in `data/istio-validation/`, see its README) must pass whole: every document of a
//! `*-valid.yaml` file is accepted and every document of a `*-invalid.yaml` file is refused,
//! through the entry point the controller and `mesh-ctl validate` use
//! ([`parse_object`], per document, which runs Istio's validation of the kind).
//!
//! Kinds Trellis does not model (Telemetry, WasmPlugin, EnvoyFilter, WorkloadEntry,
//! WorkloadGroup, ProxyConfig) are not validated: `parse_object` reports them as
//! [`Object::Other`], which the test asserts for each of their documents, valid or invalid,
//! so that a kind that becomes modelled has to meet its own data here.
//!
//! `ISTIO_VALIDATION_DATA=<dir>` runs the same test against another copy of the directory
//! (e.g. a newer Istio checkout's `pkg/config/validation/testdata/crds`).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use mesh_api::objects::{parse_object, Object};

/// The kinds `parse_object` types and validates.
const MODELLED: &[&str] = &[
    "VirtualService",
    "DestinationRule",
    "ServiceEntry",
    "Gateway",
    "Sidecar",
    "PeerAuthentication",
    "RequestAuthentication",
    "AuthorizationPolicy",
];

/// Istio kinds in the data that Trellis does not model.
const NOT_MODELLED: &[&str] = &[
    "Telemetry",
    "WasmPlugin",
    "EnvoyFilter",
    "WorkloadEntry",
    "WorkloadGroup",
    "ProxyConfig",
];

/// Documents (file, 1-based index) that Go's YAML reader (sigs.k8s.io/yaml, go-yaml v2) reads
/// and ours does not: `addresses: [1.2.3.4, 001:db8::]` in `serviceentry-valid.yaml`. go-yaml
/// ends a plain scalar in a flow sequence at `:` only before a blank, so it reads the string
/// `001:db8::`; YAML 1.2 (and so every Rust reader) ends it at the `:` before `]`, which makes
/// it a syntax error (libyaml-based readers) or the mapping `{"001:db8:": null}` (saphyr).
/// Quoting the address works everywhere. The test fails if such a document starts parsing, so
/// the entry is removed when a reader closes the gap.
const YAML_DIVERGENCES: &[(&str, usize)] = &[("serviceentry-valid.yaml", 1)];

/// The documents of a YAML stream, split at `---` lines (as `mesh-ctl validate` does), so a
/// syntax error in one document does not hide the others.
fn documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    docs.push(&text[start..]);
    docs
}

#[derive(Default)]
struct Count {
    valid: usize,
    invalid: usize,
}

fn data_dir() -> PathBuf {
    match std::env::var_os("ISTIO_VALIDATION_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/istio-validation"),
    }
}

#[test]
fn istio_validation_data_passes_whole() {
    let dir = data_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in {}", dir.display());

    let mut failures = Vec::new();
    let mut modelled: BTreeMap<String, Count> = BTreeMap::new();
    let mut other: BTreeMap<String, Count> = BTreeMap::new();
    let mut diverged = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let want_valid = if name.ends_with("-invalid.yaml") {
            false
        } else if name.ends_with("-valid.yaml") {
            true
        } else {
            failures.push(format!("{name}: neither -valid.yaml nor -invalid.yaml"));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (i, doc) in documents(&text).into_iter().enumerate() {
            let at = format!("{name} document {}", i + 1);
            let mut value = match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(doc) {
                Ok(v) if v.is_null() => continue, // only comments, or empty
                Ok(v) => v,
                Err(e) if YAML_DIVERGENCES.contains(&(name.as_str(), i + 1)) => {
                    diverged.push(format!("{at}: {e}"));
                    continue;
                }
                Err(e) => {
                    failures.push(format!("{at}: not read as YAML: {e}"));
                    continue;
                }
            };
            // `_err` is the error Istio's test expects; not part of the object.
            let want_err = value
                .as_mapping_mut()
                .and_then(|m| m.remove("_err"))
                .and_then(|v| v.as_str().map(str::to_owned));
            if want_valid == want_err.is_some() {
                failures.push(format!("{at}: `_err` does not match the file name"));
            }
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("")
                .to_owned();
            let doc_name = value
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(|n| n.as_str())
                .unwrap_or("")
                .to_owned();
            let at = format!("{at} ({kind} {doc_name})");
            let result = parse_object(value, 0);
            if NOT_MODELLED.contains(&kind.as_str()) {
                match result {
                    Ok(Object::Other { .. }) => {}
                    Ok(o) => failures.push(format!("{at}: parsed as {}, expected not modelled", o.kind())),
                    Err(e) => failures.push(format!("{at}: refused ({}), expected not modelled", e.message)),
                }
                let count = other.entry(kind).or_default();
                if want_valid {
                    count.valid += 1;
                } else {
                    count.invalid += 1;
                }
                continue;
            }
            if !MODELLED.contains(&kind.as_str()) {
                failures.push(format!("{at}: kind neither modelled nor listed as not modelled"));
                continue;
            }
            let count = modelled.entry(kind).or_default();
            match (want_valid, result) {
                (true, Ok(_)) => count.valid += 1,
                (true, Err(e)) => failures.push(format!("{at}: valid, refused: {}", e.message)),
                (false, Err(_)) => count.invalid += 1,
                (false, Ok(_)) => failures.push(format!(
                    "{at}: invalid (Istio: {:?}), accepted",
                    want_err.unwrap_or_default()
                )),
            }
        }
    }

    let table = |counts: &BTreeMap<String, Count>| {
        counts
            .iter()
            .map(|(kind, c)| format!("{kind} {} valid, {} invalid", c.valid, c.invalid))
            .collect::<Vec<_>>()
            .join("; ")
    };
    println!("{}: passed: {}", dir.display(), table(&modelled));
    println!("not modelled (reported as other kinds): {}", table(&other));
    println!("read differently by Go's YAML reader: {diverged:?}");
    if diverged.len() != YAML_DIVERGENCES.len() {
        failures.push(format!(
            "YAML_DIVERGENCES lists {:?}, but only these failed to read: {diverged:?}: update the list",
            YAML_DIVERGENCES
        ));
    }
    assert!(
        failures.is_empty(),
        "{} documents of {} disagree with Istio:\n{}",
        failures.len(),
        dir.display(),
        failures.join("\n")
    );
}
