//! `mesh-ctl status`: the controller's `/debug/syncz`, summarised. Per node: whether it has
//! the config, how many of the pods it should enroll it has, and why any is not enrolled (a
//! pod its node cannot find or capture, after a reboot say, shows here). Exit 0 only when
//! every node is in sync with every pod enrolled and the source has no problems, so scripts
//! can wait on it.

use std::process::ExitCode;

use mesh_api::status::{unix_now, ControllerStatus};

use crate::{
    controller::ControllerArgs,
    output::{self, age, table, Format},
};

pub fn run(controller: &ControllerArgs, format: Format) -> anyhow::Result<ExitCode> {
    let status: ControllerStatus = controller.get("/debug/syncz")?;
    match format {
        Format::Human => print!("{}", render(&status, unix_now())),
        _ => output::print_machine(format, &status)?,
    }
    let healthy = status.problems.is_empty()
        && status
            .nodes
            .iter()
            .all(|n| n.in_sync() && n.not_enrolled().is_empty() && n.cni_problem().is_none());
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn render(status: &ControllerStatus, now: u64) -> String {
    let mut out = format!(
        "source:      {}\nrevision:    {}\nobjects:     {}\nproblems:    {}\n",
        status.source,
        status.revision,
        status.objects,
        status.problems.len()
    );
    for p in &status.problems {
        out.push_str(&format!("  {p}\n"));
    }
    out.push_str(&format!("diagnostics: {}", status.diagnostics.len()));
    if !status.diagnostics.is_empty() {
        out.push_str(" (see `mesh-ctl analyze --cluster`)");
    }
    out.push_str("\n\n");
    if status.nodes.is_empty() {
        out.push_str("no node has connected to this controller yet\n");
        return out;
    }
    let rows: Vec<Vec<String>> = status
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.node.clone(),
                if n.connected { "yes" } else { "no" }.into(),
                n.version_sent.to_string(),
                n.version_acked.to_string(),
                if n.in_sync() { "in sync" } else { "STALE" }.into(),
                match &n.enrollment {
                    Some(e) => format!("{}/{}", e.enrolled.len(), e.enrolled.len() + e.not_enrolled.len()),
                    None => "?".into(),
                },
                n.last_nack
                    .as_ref()
                    .map(|k| format!("v{} {}: {}", k.version, age(k.at, now), k.reason))
                    .unwrap_or_default(),
                age(n.since, now),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "NODE",
            "CONNECTED",
            "SENT",
            "ACKED",
            "SYNC",
            "PODS",
            "LAST NACK",
            "AGE",
        ],
        &rows,
    ));
    let missing: Vec<Vec<String>> = status
        .nodes
        .iter()
        .flat_map(|n| {
            n.not_enrolled()
                .iter()
                .map(|s| vec![n.node.clone(), s.pod.clone(), s.reason.clone()])
        })
        .collect();
    if !missing.is_empty() {
        out.push_str("\nNOT ENROLLED (in the mesh by their namespace, not captured by their node)\n");
        out.push_str(&table(&["NODE", "POD", "REASON"], &missing));
    }
    let cni: Vec<Vec<String>> = status
        .nodes
        .iter()
        .filter_map(|n| Some(vec![n.node.clone(), n.enrollment.as_ref()?.cni.clone()?]))
        .collect();
    if !cni.is_empty() {
        out.push_str("\nCNI PLUGIN (trellis-cni in the runtime's configuration)\n");
        out.push_str(&table(&["NODE", "STATE"], &cni));
    }
    out
}

#[cfg(test)]
mod tests {
    use mesh_api::{
        selection::Skipped,
        status::{Enrollment, Nack, NodeSync, Problem},
    };

    use super::*;

    #[test]
    fn nodes_show_sync_state_and_nacks() {
        let status = ControllerStatus {
            source: "directory /etc/trellis".into(),
            revision: 3,
            objects: 7,
            problems: vec![Problem {
                origin: "pods.yaml document 2 (Pod web)".into(),
                message: "bad".into(),
            }],
            diagnostics: vec![],
            nodes: vec![
                NodeSync {
                    node: "n1".into(),
                    connected: true,
                    since: 100,
                    version_sent: 2,
                    version_acked: 2,
                    enrollment: Some(Enrollment {
                        enrolled: vec!["shop/web".into()],
                        not_enrolled: vec![Skipped {
                            pod: "shop/db".into(),
                            reason: "no kubelet cgroup for pod UID 3c0e".into(),
                        }],
                        cni: Some("not chained: /etc/cni/net.d/10-pods.conf: not a list".into()),
                        at: 150,
                    }),
                    ..NodeSync::default()
                },
                NodeSync {
                    node: "n2".into(),
                    connected: true,
                    since: 40,
                    version_sent: 3,
                    version_acked: 2,
                    last_nack: Some(Nack {
                        version: 3,
                        reason: "netns is not absolute".into(),
                        at: 130,
                    }),
                    ..NodeSync::default()
                },
            ],
        };
        let text = render(&status, 160);
        assert!(
            text.contains("problems:    1\n  pods.yaml document 2 (Pod web): bad\n"),
            "{text}"
        );
        assert!(
            text.contains("n1    yes        2     2      in sync  1/2   -"),
            "{text}"
        );
        assert!(
            text.contains("n2    yes        3     2      STALE    ?     v3 30s: netns is not absolute  2m"),
            "{text}"
        );
        assert!(
            text.contains("NOT ENROLLED (in the mesh by their namespace, not captured by their node)\nNODE  POD      REASON\nn1    shop/db  no kubelet cgroup for pod UID 3c0e\n"),
            "{text}"
        );
        assert!(
            text.contains("CNI PLUGIN (trellis-cni in the runtime's configuration)\nNODE  STATE\nn1    not chained: /etc/cni/net.d/10-pods.conf: not a list\n"),
            "{text}"
        );
        assert_eq!(
            status.nodes[0].cni_problem(),
            Some("not chained: /etc/cni/net.d/10-pods.conf: not a list")
        );
    }
}
