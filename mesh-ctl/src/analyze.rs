//! `mesh-ctl analyze`: validate every document, then look across the valid objects
//! (`mesh_api::analysis::analyze`), or report what the running controller found.

use std::{path::PathBuf, process::ExitCode};

use mesh_api::{
    node_config::{Diagnostic, Severity},
    status::ControllerStatus,
};
use serde::Serialize;

use crate::{
    controller::ControllerArgs,
    documents,
    output::{self, Format},
    validate,
};

#[derive(Serialize)]
struct Findings {
    /// Documents that did not validate (`file:line (object): message`).
    invalid: Vec<String>,
    diagnostics: Vec<Diagnostic>,
}

pub fn run(paths: &[PathBuf], format: Format) -> anyhow::Result<ExitCode> {
    let (reports, objects) = validate::check(&documents::read_inputs(paths)?);
    let findings = Findings {
        invalid: reports
            .iter()
            .filter(|r| !r.ok)
            .map(ToString::to_string)
            .collect(),
        diagnostics: mesh_api::analysis::analyze(&objects),
    };
    report(&findings, format)
}

/// The controller's view: inputs its source refused, and its compiler's diagnostics.
pub fn run_cluster(controller: &ControllerArgs, format: Format) -> anyhow::Result<ExitCode> {
    let status: ControllerStatus = controller.get("/debug/syncz")?;
    let findings = Findings {
        invalid: status.problems.iter().map(ToString::to_string).collect(),
        diagnostics: status.diagnostics,
    };
    report(&findings, format)
}

fn report(findings: &Findings, format: Format) -> anyhow::Result<ExitCode> {
    match format {
        Format::Human => {
            for line in &findings.invalid {
                println!("error: {line}");
            }
            for d in &findings.diagnostics {
                println!("{d}");
            }
            let errors = findings.invalid.len()
                + findings
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .count();
            let warnings = findings.invalid.len() + findings.diagnostics.len() - errors;
            if errors + warnings == 0 {
                println!("no issues found");
            } else {
                println!("{errors} error(s), {warnings} warning(s)");
            }
        }
        _ => output::print_machine(format, findings)?,
    }
    Ok(
        if findings.invalid.is_empty() && findings.diagnostics.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}
