//! `mesh-ctl validate`: every document on its own, through the same `parse_object` the
//! controller uses (schema, then Istio's validation), like `istioctl validate`. A bad
//! document does not hide the ones after it.

use std::{path::PathBuf, process::ExitCode};

use mesh_api::objects::{parse_object, Object};
use serde::Serialize;

use crate::{
    documents::{self, Input},
    output::{self, Format},
};

/// The verdict on one document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub file: String,
    /// 1-based line of the document's start, or of the syntax error.
    pub line: usize,
    /// `Kind ns/name` (`Kind name` for cluster-scoped kinds); empty when unknown.
    pub object: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)?;
        if !self.object.is_empty() {
            write!(f, " ({})", self.object)?;
        }
        match &self.error {
            None => write!(f, ": OK"),
            Some(e) => write!(f, ": {e}"),
        }
    }
}

pub fn run(paths: &[PathBuf], format: Format) -> anyhow::Result<ExitCode> {
    let (reports, _) = check(&documents::read_inputs(paths)?);
    match format {
        Format::Human => {
            for r in &reports {
                println!("{r}");
            }
            let bad = reports.iter().filter(|r| !r.ok).count();
            if bad > 0 {
                println!("{bad} of {} documents invalid", reports.len());
            }
        }
        _ => output::print_machine(format, &reports)?,
    }
    Ok(if reports.iter().all(|r| r.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Checks every document; returns one report per non-empty document and the valid objects.
pub fn check(inputs: &[Input]) -> (Vec<Report>, Vec<Object>) {
    let mut reports = Vec::new();
    let mut objects = Vec::new();
    for input in inputs {
        for doc in documents::split(&input.text) {
            if doc.is_empty(&input.text) {
                continue;
            }
            let mut report = Report {
                file: input.name.clone(),
                line: doc.line,
                object: String::new(),
                ok: false,
                error: None,
            };
            let value: serde_yaml_ng::Value = match serde_yaml_ng::from_str(doc.text(&input.text)) {
                Ok(v) => v,
                Err(e) => {
                    // serde_yaml_ng counts from the document's first line; report file lines.
                    let mut message = e.to_string();
                    if let Some(loc) = e.location() {
                        let line = doc.first_line + loc.line() - 1;
                        report.line = line;
                        message = shift_lines(&message, doc.first_line - 1);
                    }
                    report.error = Some(format!("YAML syntax: {message}"));
                    reports.push(report);
                    continue;
                }
            };
            if value.is_null() {
                continue;
            }
            match parse_object(value, objects.len()) {
                Ok(object) => {
                    report.object = label(&object);
                    report.ok = true;
                    objects.push(object);
                }
                Err(e) => {
                    // `e.object` is " (Kind name)" or empty.
                    report.object = e
                        .object
                        .trim()
                        .trim_start_matches('(')
                        .trim_end_matches(')')
                        .to_string();
                    report.error = Some(e.message);
                }
            }
            reports.push(report);
        }
    }
    (reports, objects)
}

/// Adds `offset` to every `at line N` of a serde_yaml_ng message (it counts from the
/// document's first line; the operator counts from the file's).
fn shift_lines(message: &str, offset: usize) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(i) = rest.find("at line ") {
        let (head, tail) = rest.split_at(i + "at line ".len());
        out.push_str(head);
        let digits = tail.len() - tail.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        match tail[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&tail[..digits]),
        }
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

/// `Kind namespace/name`, or `Kind name` for cluster-scoped kinds.
pub fn label(object: &Object) -> String {
    format!("{} {}", object.kind(), object.key())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reports(text: &str) -> Vec<String> {
        let (reports, _) = check(&[Input {
            name: "f.yaml".into(),
            text: text.into(),
        }]);
        reports.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn every_document_is_judged_on_its_own_with_its_line() {
        let text = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: bad, namespace: shop}
spec: {mtls: {mode: SOMETIMES}}
---
kind: Pod
metadata: {name: web
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
";
        let found = reports(text);
        assert_eq!(found[0], "f.yaml:1 (Namespace shop): OK");
        assert!(
            found[1].starts_with("f.yaml:5 (PeerAuthentication bad): spec.mtls.mode"),
            "{}",
            found[1]
        );
        assert!(found[2].starts_with("f.yaml:12: YAML syntax: "), "{}", found[2]);
        assert!(found[2].contains("at line 12 column"), "{}", found[2]);
        assert!(found[2].contains("mapping at line 11 column 11"), "{}", found[2]);
        assert_eq!(found[3], "f.yaml:13 (Pod shop/web): OK");
    }
}
