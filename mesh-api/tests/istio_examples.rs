//! Istio's own examples must parse unchanged and survive a round trip; invalid objects must be
//! refused with an error naming the field.
//!
//! - `fixtures/istio/valid/<kind>/*.yaml`: every document parses, its spec serialises back to
//!   exactly what was written (YAML -> type -> YAML), and matches the golden file
//!   `<name>.golden.json` next to it (the canonical form; `UPDATE_GOLDEN=1` rewrites them).
//! - `fixtures/istio/invalid/**/*.yaml`: one document each, whose first line is
//!   `# error: <text>`; parsing fails and the error contains `<text>`.

use std::path::{Path, PathBuf};

use mesh_api::objects::parse_documents;

fn fixtures(dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/istio")
        .join(dir);
    let mut out = Vec::new();
    walk(&root, &mut out);
    out.sort();
    out
}

#[test]
fn istio_examples_parse_and_round_trip() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for file in fixtures("valid") {
        let text = std::fs::read_to_string(&file).unwrap();
        let objects = match parse_documents(&file, &text) {
            Ok(objects) => objects,
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        };
        let written: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|v: &serde_json::Value| !v.is_null())
            .collect();
        assert_eq!(objects.len(), written.len(), "{}", file.display());
        let mut canonical = Vec::new();
        for (object, doc) in objects.iter().zip(&written) {
            let Some(spec) = object.istio_spec() else {
                failures.push(format!(
                    "{}: {} is not an Istio kind",
                    file.display(),
                    object.kind()
                ));
                continue;
            };
            let expected = doc.get("spec").cloned().unwrap_or(serde_json::json!({}));
            if spec != expected {
                failures.push(format!(
                    "{}: {} does not round-trip:\n  written:    {expected}\n  serialised: {spec}",
                    file.display(),
                    object.kind()
                ));
            }
            canonical.push(serde_json::json!({"kind": object.kind(), "spec": spec}));
        }
        let golden_path = file.with_extension("golden.json");
        let golden = serde_json::to_string_pretty(&canonical).unwrap() + "\n";
        if update {
            std::fs::write(&golden_path, &golden).unwrap();
        } else {
            match std::fs::read_to_string(&golden_path) {
                Ok(g) if g == golden => {}
                Ok(_) => failures.push(format!(
                    "{} differs from the golden file (UPDATE_GOLDEN=1 to accept)",
                    file.display()
                )),
                Err(_) => failures.push(format!(
                    "{}: no golden file (UPDATE_GOLDEN=1)",
                    golden_path.display()
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_objects_are_refused_with_the_field() {
    let mut failures = Vec::new();
    for file in fixtures("invalid") {
        let text = std::fs::read_to_string(&file).unwrap();
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# error: "))
            .unwrap_or_else(|| panic!("{}: first line must be `# error: <text>`", file.display()));
        match parse_documents(&file, &text) {
            Ok(_) => failures.push(format!("{}: accepted", file.display())),
            Err(e) if !e.to_string().contains(expected) => failures.push(format!(
                "{}: error {e:?} does not contain {expected:?}",
                file.display()
            )),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
