//! Who may use what: Istio's `exportTo` on services and configuration, Sidecar egress
//! scoping, and host names as Istio resolves and matches them.

use std::collections::BTreeSet;

/// Istio's `exportTo`: `*` every namespace (the default when empty), `.` the object's own,
/// `~` none, or namespace names. Returns namespace names, with `*` for all.
pub(crate) fn export_to(values: &[&str], own_namespace: &str) -> BTreeSet<String> {
    if values.is_empty() {
        return ["*".to_string()].into();
    }
    values
        .iter()
        .filter(|v| !v.is_empty() && **v != "~")
        .map(|v| {
            if *v == "." {
                own_namespace.to_string()
            } else {
                v.to_string()
            }
        })
        .collect()
}
