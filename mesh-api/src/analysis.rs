//! What the compiler tells the operator about the whole set of objects: fields Trellis does
//! not act on (yet), so nothing is silently ignored, and (for `mesh-ctl analyze`) problems
//! across objects: references to nothing, conflicting objects, selectors that select nothing.
//! Shared by the controller (warnings, `/debug/syncz`) and `mesh-ctl analyze`.

mod cross;

pub use self::cross::cross_object;

use crate::{
    node_config::{Diagnostic, Severity},
    objects::Object,
};

/// The spec fields Trellis enforces, per Istio kind. Any other field that is set is reported.
fn implemented(kind: &str) -> &'static [&'static str] {
    match kind {
        "PeerAuthentication" => &["selector", "mtls", "portLevelMtls"],
        _ => &[],
    }
}

/// Everything `mesh-ctl analyze` reports about a set of valid objects: cross-object
/// problems first, then what the compiler cannot honour, then unsupported fields. Pure.
pub fn analyze(objects: &[Object]) -> Vec<Diagnostic> {
    let options = crate::node_config::Options::default();
    let mut out = cross_object(objects, &options);
    out.extend(crate::node_config::diagnostics(objects, &options));
    out.extend(unsupported_fields(objects));
    out
}

/// Every set spec field of an Istio object that Trellis does not enforce.
pub fn unsupported_fields(objects: &[Object]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for object in objects {
        let Some(serde_json::Value::Object(spec)) = object.istio_spec() else {
            continue;
        };
        let kind = object.kind();
        let supported = implemented(kind);
        for field in spec.keys().filter(|f| !supported.contains(&f.as_str())) {
            out.push(Diagnostic {
                severity: Severity::Warning,
                object: format!("{kind} {}", object.key()),
                field: format!("spec.{field}"),
                message: format!("not enforced by Trellis yet: this {kind} field has no effect on traffic"),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unimplemented_fields_are_reported_and_enforced_ones_are_not() {
        let objects = crate::objects::parse_documents(
            std::path::Path::new("t.yaml"),
            r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
"#,
        )
        .unwrap();
        let found: Vec<String> = unsupported_fields(&objects)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "warning: VirtualService shop/reviews spec.hosts: not enforced by Trellis yet: this VirtualService field has no effect on traffic",
                "warning: VirtualService shop/reviews spec.http: not enforced by Trellis yet: this VirtualService field has no effect on traffic",
            ]
        );
    }
}
