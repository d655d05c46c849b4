//! `mesh-ctl proxy-config <node> [section]`: what a node acknowledged, from the
//! controller's `/debug/config_dump?node=` (the node enforces exactly this version).

use std::process::ExitCode;

use mesh_api::{
    node_config::{NodeConfig, SECTIONS},
    status::ConfigDump,
};

use crate::{
    controller::ControllerArgs,
    output::{self, table, Format},
};

/// The sections one may ask for, plus `all`.
pub const SECTION_NAMES: [&str; SECTIONS.len() + 1] = {
    let mut names = ["all"; SECTIONS.len() + 1];
    let mut i = 0;
    while i < SECTIONS.len() {
        names[i + 1] = SECTIONS[i];
        i += 1;
    }
    names
};

pub fn run(
    controller: &ControllerArgs,
    node: &str,
    section: &str,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let dump: ConfigDump = controller.get(&format!("/debug/config_dump?node={node}"))?;
    let sections: Vec<&str> = if section == "all" {
        SECTIONS.to_vec()
    } else {
        vec![section]
    };
    match format {
        Format::Human => {
            println!("node {} enforces version {}\n", dump.node, dump.version);
            for s in &sections {
                println!("{}", human(&dump.config, s));
            }
        }
        _ if section == "all" => output::print_machine(format, &dump)?,
        _ => {
            let value = dump.config.section(section).unwrap_or_default();
            output::print_machine(format, &value)?
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn human(config: &NodeConfig, section: &str) -> String {
    let (title, headers, rows): (&str, &[&str], Vec<Vec<String>>) = match section {
        "workloads" => (
            "WORKLOADS (enrolled pods on this node)",
            &["NAME", "IP", "SERVICE ACCOUNT", "NETNS"],
            config
                .workloads
                .iter()
                .map(|w| {
                    vec![
                        w.key(),
                        w.ip.map_or("(from its sandbox)".into(), |ip| ip.to_string()),
                        w.service_account.clone(),
                        w.netns
                            .as_ref()
                            .map_or("(found by the node)".into(), |p| p.display().to_string()),
                    ]
                })
                .collect(),
        ),
        "skipped" => (
            "SKIPPED (pods of this node left out of the mesh)",
            &["POD", "REASON"],
            config
                .skipped
                .iter()
                .map(|s| vec![s.pod.clone(), s.reason.clone()])
                .collect(),
        ),
        "endpoints" => (
            "ENDPOINTS (enrolled pods on other nodes)",
            &["IP", "WORKLOAD", "NODE", "IDENTITY"],
            config
                .endpoints
                .iter()
                .map(|(ip, e)| {
                    let node = match e.node_ip {
                        Some(n) => format!("{} ({n})", e.node),
                        None => e.node.clone(),
                    };
                    vec![ip.to_string(), e.workload.clone(), node, e.identity.to_string()]
                })
                .collect(),
        ),
        "services" => (
            "SERVICES",
            &["NAME", "VIP", "PORTS", "ENDPOINTS"],
            config
                .services
                .iter()
                .map(|s| {
                    let ports: Vec<String> = s
                        .ports
                        .iter()
                        .map(|p| format!("{}/{}", p.port, p.protocol))
                        .collect();
                    let endpoints: usize = s.ports.iter().map(|p| p.endpoints.len()).sum();
                    vec![
                        s.name.clone(),
                        s.vip.to_string(),
                        ports.join(","),
                        endpoints.to_string(),
                    ]
                })
                .collect(),
        ),
        "peer_authentications" => (
            "PEER AUTHENTICATIONS",
            &["NAME", "MODE", "SELECTOR", "PORT MODES"],
            peer_authentication_rows(config),
        ),
        "routes" => (
            "ROUTES (VirtualServices compiled per client namespace; not enforced yet)",
            &["NAMESPACE", "HOST", "VIRTUAL SERVICE", "RULES", "DESTINATIONS"],
            config
                .routes
                .iter()
                .map(|r| {
                    let mut destinations: Vec<String> = Vec::new();
                    let all = r
                        .http
                        .iter()
                        .flat_map(|h| &h.destinations)
                        .chain(r.tls.iter().chain(&r.tcp).flat_map(|l| &l.destinations));
                    for d in all {
                        let subset = d.subset.as_deref().map(|s| format!(" ({s})")).unwrap_or_default();
                        let entry = format!("{}{subset} {}%", d.host, d.weight);
                        if !destinations.contains(&entry) {
                            destinations.push(entry);
                        }
                    }
                    vec![
                        r.namespace.clone(),
                        r.host.clone(),
                        r.virtual_service.clone(),
                        (r.http.len() + r.tls.len() + r.tcp.len()).to_string(),
                        destinations.join(", "),
                    ]
                })
                .collect(),
        ),
        "enrolled_namespaces" => (
            "ENROLLED NAMESPACES (labelled trellis.dev/mesh=enabled)",
            &["NAMESPACE"],
            config
                .enrolled_namespaces
                .iter()
                .map(|n| vec![n.clone()])
                .collect(),
        ),
        _ => return String::new(),
    };
    if rows.is_empty() {
        format!("{title}: none\n")
    } else {
        format!("{title}\n{}", table(headers, &rows))
    }
}

/// Read from the JSON form, so this table does not depend on the policy type's internals.
fn peer_authentication_rows(config: &NodeConfig) -> Vec<Vec<String>> {
    let Some(serde_json::Value::Array(policies)) = config.section("peer_authentications") else {
        return Vec::new();
    };
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string).unwrap_or_default();
    policies
        .iter()
        .map(|p| {
            let meta = &p["meta"];
            let name = format!("{}/{}", text(&meta["namespace"]), text(&meta["name"]));
            let spec = &p["spec"];
            let mode = spec["mtls"]["mode"].as_str().unwrap_or("UNSET").to_string();
            let selector = spec["selector"]["matchLabels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", text(v)))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let ports = spec["portLevelMtls"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(port, v)| format!("{port}:{}", v["mode"].as_str().unwrap_or("UNSET")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![name, mode, selector, ports]
        })
        .collect()
}
