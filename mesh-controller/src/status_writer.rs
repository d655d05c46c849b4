//! Kubernetes mode: what the controller finds about each Istio object, written to the object's
//! `status`, so that nothing Trellis does not implement is silently ignored
//! (`kubectl get vs reviews -o yaml` says so).
//!
//! The shape is Istio's `IstioStatus` (istio/api `meta/v1alpha1/status.proto`), the one
//! istiod writes, so that Istio's own clients, which decode it strictly, can still read it:
//! - `conditions`: one condition of type [`CONDITION`], True when the object is accepted
//!   (with every finding listed in its message), False when it was refused or has errors;
//! - `validationMessages`: one `AnalysisMessageBase` (`{type: {name, code}, level}`) per
//!   finding, with Trellis codes (`TRE…`) so they are never mistaken for istiod's `IST…`;
//! - `observedGeneration`: the generation the findings are about.
//!
//! Conditions of other types and validation messages with other codes (another controller's)
//! are kept. Writes are JSON merge patches on the `status` subresource, conditional on the
//! `resourceVersion` the snapshot holds (the API server answers 409 otherwise), so a status is
//! never written onto a version of the object the controller has not analysed; they are made
//! only when the status differs from the object's, and at most one per [`WRITE_INTERVAL`].

use std::{collections::HashMap, time::Duration};

use kube::{
    api::{Api, DynamicObject, Patch, PatchParams},
    Client,
};
use mesh_api::node_config::{Diagnostic, Severity};
use serde_json::{json, Value};

use crate::source::{kubernetes::IstioObject, Problem, Snapshot, Snapshots};

/// The condition Trellis owns on every Istio object.
pub const CONDITION: &str = "trellis.dev/Accepted";

/// The field manager of Trellis' writes.
pub const FIELD_MANAGER: &str = "trellis-controller";

/// At most one status write per interval (50 a second): a change touching thousands of objects
/// must not flood the API server.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(20);

/// Validation message codes Trellis writes start with this; others belong to someone else.
const CODE_PREFIX: &str = "TRE";

/// A condition message longer than this is cut (the API server's limit for a condition
/// message is 32 KiB; a status is read by people).
const MAX_MESSAGE: usize = 4096;

/// What was found about one object.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Findings<'a> {
    /// Why the source refused the object, when it did.
    pub refused: Option<&'a str>,
    pub diagnostics: Vec<&'a Diagnostic>,
}

/// The findings per object (`Kind namespace/name`). Problems about a whole kind (a CRD that is
/// not served) name no object and are left out.
pub fn findings<'a>(
    diagnostics: &'a [Diagnostic],
    problems: &'a [Problem],
) -> HashMap<&'a str, Findings<'a>> {
    let mut out: HashMap<&str, Findings> = HashMap::new();
    for problem in problems {
        out.entry(problem.origin.as_str()).or_default().refused = Some(&problem.message);
    }
    for diagnostic in diagnostics {
        out.entry(diagnostic.object.as_str())
            .or_default()
            .diagnostics
            .push(diagnostic);
    }
    out
}

/// The message types Trellis writes, in the `AnalysisMessageBase` shape.
fn validation_message(code: &str, name: &str, level: &str) -> Value {
    json!({"type": {"code": code, "name": name}, "level": level})
}

fn is_ours(message: &Value) -> bool {
    message
        .pointer("/type/code")
        .and_then(Value::as_str)
        .is_some_and(|code| code.starts_with(CODE_PREFIX))
}

/// The status `object` should have: the object's own status with Trellis' condition and
/// validation messages replaced by what `found` says. `now` (RFC 3339) is the transition time
/// when the condition's status changes; otherwise the old one is kept. Pure.
pub fn desired_status(object: &IstioObject, found: &Findings, now: &str) -> Value {
    let errors: Vec<&Diagnostic> = found
        .diagnostics
        .iter()
        .copied()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    let warnings: Vec<&Diagnostic> = found
        .diagnostics
        .iter()
        .copied()
        .filter(|d| d.severity == Severity::Warning)
        .collect();
    let listed = |ds: &[&Diagnostic]| {
        ds.iter()
            .map(|d| {
                if d.field.is_empty() {
                    d.message.clone()
                } else {
                    format!("{}: {}", d.field, d.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let (accepted, reason, mut message) = if let Some(refused) = found.refused {
        (false, "Invalid", format!("refused, not applied: {refused}"))
    } else if !errors.is_empty() {
        let mut message = format!("{}: {}", count(errors.len(), "error"), listed(&errors));
        if !warnings.is_empty() {
            message += &format!("; {}: {}", count(warnings.len(), "warning"), listed(&warnings));
        }
        (false, "Errors", message)
    } else if !warnings.is_empty() {
        let message = format!(
            "accepted with {}: {}",
            count(warnings.len(), "warning"),
            listed(&warnings)
        );
        (true, "AcceptedWithWarnings", message)
    } else {
        (
            true,
            "Accepted",
            "accepted: every field is enforced by Trellis".to_string(),
        )
    };
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    let status = if accepted { "True" } else { "False" };

    let current = object.status.as_ref();
    let list = |key: &str| {
        current
            .and_then(|s| s.get(key))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut conditions = list("conditions");
    let ours = conditions
        .iter()
        .position(|c| c.get("type").and_then(Value::as_str) == Some(CONDITION));
    let since = ours
        .map(|i| &conditions[i])
        .filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| now.into());
    let condition = json!({
        "type": CONDITION,
        "status": status,
        "lastTransitionTime": since,
        "reason": reason,
        "message": message,
    });
    match ours {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }

    let mut messages: Vec<Value> = list("validationMessages")
        .into_iter()
        .filter(|m| !is_ours(m))
        .collect();
    if found.refused.is_some() {
        messages.push(validation_message("TRE0001", "InvalidObject", "ERROR"));
    }
    messages.extend(found.diagnostics.iter().map(|d| match d.severity {
        Severity::Error => validation_message("TRE0002", "AnalysisError", "ERROR"),
        Severity::Warning => validation_message("TRE0003", "AnalysisWarning", "WARNING"),
    }));

    let mut desired = json!({ "conditions": conditions, "validationMessages": messages });
    if let Some(generation) = object.generation {
        desired["observedGeneration"] = generation.into();
    }
    desired
}

/// The merge patch that gives `object` the `desired` status, or `None` when it already has
/// it, or when the object's generation or resourceVersion is unknown (nothing to condition
/// the write on). Pure.
pub fn patch(object: &IstioObject, desired: &Value) -> Option<Value> {
    let (Some(_), Some(resource_version)) = (object.generation, &object.resource_version) else {
        return None;
    };
    let current = object.status.as_ref();
    let empty_list = Value::Array(Vec::new());
    let unchanged = desired.as_object()?.iter().all(|(key, want)| {
        let have = current.and_then(|s| s.get(key));
        // An absent list and an empty one read the same.
        have == Some(want) || (have.is_none() && want == &empty_list)
    });
    if unchanged {
        return None;
    }
    Some(json!({
        "metadata": { "resourceVersion": resource_version },
        "status": desired,
    }))
}

/// One status write.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub object: IstioObject,
    /// The merge patch.
    pub body: Value,
}

/// Every write `snapshot` calls for, given the diagnostics found in it, in snapshot order.
/// Pure.
pub fn plan(snapshot: &Snapshot, diagnostics: &[Diagnostic], now: &str) -> Vec<Write> {
    let found = findings(diagnostics, &snapshot.problems);
    let nothing = Findings::default();
    snapshot
        .istio_objects
        .iter()
        .filter_map(|object| {
            let origin = object.origin();
            let desired = desired_status(object, found.get(origin.as_str()).unwrap_or(&nothing), now);
            patch(object, &desired).map(|body| Write {
                object: object.clone(),
                body,
            })
        })
        .collect()
}

/// A write's body without transition times: what tells whether the same write was already
/// made (the times come from the clock).
fn content(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(conditions) = body
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    {
        for condition in conditions {
            if let Some(c) = condition.as_object_mut() {
                c.remove("lastTransitionTime");
            }
        }
    }
    body
}

/// Writes the status of the Istio objects of every snapshot until the source stops.
///
/// A newer snapshot supersedes the writes left from the one before. A write the API server
/// refuses with 409 (the object changed since the snapshot) is dropped: the change brings a
/// new snapshot, and with it a new plan.
pub async fn run(client: Client, mut snapshots: Snapshots) {
    // The writes made, per object: against which resourceVersion, with what content. Until
    // the watch brings the object back with its new status, a new snapshot (another object
    // changed) would otherwise plan the same write again, bound to fail with 409.
    let mut made: HashMap<String, (Option<String>, Value)> = HashMap::new();
    let mut pace = tokio::time::interval(WRITE_INTERVAL);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    snapshots.mark_changed();
    while snapshots.changed().await.is_ok() {
        let snapshot = snapshots.borrow_and_update().clone();
        let diagnostics = mesh_api::analysis::analyze(&snapshot.objects);
        let writes = plan(&snapshot, &diagnostics, &now());
        made.retain(|origin, _| snapshot.istio_objects.iter().any(|o| &o.origin() == origin));
        for write in writes {
            if snapshots.has_changed().unwrap_or(true) {
                break;
            }
            let origin = write.object.origin();
            let key = (write.object.resource_version.clone(), content(&write.body));
            if made.get(&origin) == Some(&key) {
                continue;
            }
            pace.tick().await;
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &write.object.namespace, &write.object.resource);
            match api
                .patch_status(&write.object.name, &params, &Patch::Merge(&write.body))
                .await
            {
                Ok(_) => {
                    tracing::debug!(object = %origin, revision = snapshot.revision, "status written");
                    made.insert(origin, key);
                }
                Err(kube::Error::Api(status)) if status.code == 409 || status.is_not_found() => {
                    tracing::debug!(object = %origin, reason = %status.message, "changed or deleted since the snapshot; the next one decides");
                }
                Err(kube::Error::Api(status)) if status.is_forbidden() => {
                    tracing::warn!(object = %origin, "status may not be written ({}): check the controller's ClusterRole grants patch on {}/status (deploy/rbac)", status.message, write.object.resource.plural);
                }
                Err(e) => {
                    tracing::warn!(object = %origin, error = %e, "status write failed; retried with the next snapshot");
                }
            }
        }
    }
}

/// Now, in RFC 3339 (the form of a `google.protobuf.Timestamp` in JSON).
fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use kube::api::ApiResource;

    use super::*;

    const NOW: &str = "2025-06-01T12:00:00Z";

    fn virtual_service(status: Option<Value>) -> IstioObject {
        IstioObject {
            resource: ApiResource {
                group: "networking.istio.io".into(),
                version: "v1".into(),
                api_version: "networking.istio.io/v1".into(),
                kind: "VirtualService".into(),
                plural: "virtualservices".into(),
            },
            namespace: "shop".into(),
            name: "reviews".into(),
            generation: Some(3),
            resource_version: Some("700".into()),
            status,
        }
    }

    fn diagnostic(severity: Severity, field: &str, message: &str) -> Diagnostic {
        Diagnostic {
            severity,
            object: "VirtualService shop/reviews".into(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn with(diagnostics: &[Diagnostic]) -> Findings<'_> {
        Findings {
            refused: None,
            diagnostics: diagnostics.iter().collect(),
        }
    }

    #[test]
    fn warnings_are_an_accepted_condition_that_lists_them_and_one_message_each() {
        let ds = [
            diagnostic(
                Severity::Warning,
                "spec.http[0].fault",
                "not enforced by Trellis yet",
            ),
            diagnostic(Severity::Warning, "spec.tcp", "not enforced by Trellis yet"),
        ];
        let status = desired_status(&virtual_service(None), &with(&ds), NOW);
        assert_eq!(
            status,
            json!({
                "conditions": [{
                    "type": "trellis.dev/Accepted",
                    "status": "True",
                    "lastTransitionTime": NOW,
                    "reason": "AcceptedWithWarnings",
                    "message": "accepted with 2 warnings: spec.http[0].fault: not enforced by Trellis yet; spec.tcp: not enforced by Trellis yet",
                }],
                "validationMessages": [
                    {"type": {"code": "TRE0003", "name": "AnalysisWarning"}, "level": "WARNING"},
                    {"type": {"code": "TRE0003", "name": "AnalysisWarning"}, "level": "WARNING"},
                ],
                "observedGeneration": 3,
            })
        );
    }

    #[test]
    fn an_error_makes_the_condition_false_and_names_the_field() {
        let ds = [
            diagnostic(
                Severity::Error,
                "spec.http[0].route[0].destination.subset",
                "subset v3 is not defined",
            ),
            diagnostic(Severity::Warning, "spec.tcp", "not enforced"),
        ];
        let status = desired_status(&virtual_service(None), &with(&ds), NOW);
        let condition = &status["conditions"][0];
        assert_eq!(condition["status"], "False");
        assert_eq!(condition["reason"], "Errors");
        assert_eq!(
            condition["message"],
            "1 error: spec.http[0].route[0].destination.subset: subset v3 is not defined; 1 warning: spec.tcp: not enforced"
        );
        assert_eq!(status["validationMessages"][0]["level"], "ERROR");
        assert_eq!(status["validationMessages"][1]["level"], "WARNING");
    }

    #[test]
    fn a_refused_object_is_not_accepted_with_the_parse_error() {
        let found = Findings {
            refused: Some("spec.mtls: unknown field `mod`, expected `mode`"),
            diagnostics: Vec::new(),
        };
        let status = desired_status(&virtual_service(None), &found, NOW);
        assert_eq!(
            status["conditions"][0],
            json!({
                "type": "trellis.dev/Accepted",
                "status": "False",
                "lastTransitionTime": NOW,
                "reason": "Invalid",
                "message": "refused, not applied: spec.mtls: unknown field `mod`, expected `mode`",
            })
        );
        assert_eq!(
            status["validationMessages"],
            json!([{"type": {"code": "TRE0001", "name": "InvalidObject"}, "level": "ERROR"}])
        );
    }

    #[test]
    fn no_findings_is_accepted() {
        let status = desired_status(&virtual_service(None), &Findings::default(), NOW);
        assert_eq!(status["conditions"][0]["status"], "True");
        assert_eq!(status["conditions"][0]["reason"], "Accepted");
        assert_eq!(status["validationMessages"], json!([]));
    }

    #[test]
    fn other_conditions_and_messages_are_kept_and_the_transition_time_only_moves_on_a_change() {
        let current = json!({
            "conditions": [
                {"type": "Reconciled", "status": "True"},
                {"type": CONDITION, "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z", "reason": "Accepted", "message": "old"},
            ],
            "validationMessages": [
                {"type": {"code": "IST0101", "name": "ReferencedResourceNotFound"}, "level": "ERROR"},
                {"type": {"code": "TRE0003", "name": "AnalysisWarning"}, "level": "WARNING"},
            ],
        });
        let object = virtual_service(Some(current));

        let ds = [diagnostic(Severity::Warning, "spec.tcp", "not enforced")];
        let still_true = desired_status(&object, &with(&ds), NOW);
        assert_eq!(
            still_true["conditions"][0],
            json!({"type": "Reconciled", "status": "True"})
        );
        assert_eq!(
            still_true["conditions"][1]["lastTransitionTime"],
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(
            still_true["conditions"][1]["message"],
            "accepted with 1 warning: spec.tcp: not enforced"
        );
        assert_eq!(
            still_true["validationMessages"],
            json!([
                {"type": {"code": "IST0101", "name": "ReferencedResourceNotFound"}, "level": "ERROR"},
                {"type": {"code": "TRE0003", "name": "AnalysisWarning"}, "level": "WARNING"},
            ])
        );

        let ds = [diagnostic(
            Severity::Error,
            "spec.gateways[0]",
            "Gateway shop/gw does not exist",
        )];
        let now_false = desired_status(&object, &with(&ds), NOW);
        assert_eq!(now_false["conditions"][1]["status"], "False");
        assert_eq!(now_false["conditions"][1]["lastTransitionTime"], NOW);
    }

    #[test]
    fn an_object_that_has_its_status_is_not_written() {
        let ds = [diagnostic(Severity::Warning, "spec.tcp", "not enforced")];
        let first = virtual_service(None);
        let desired = desired_status(&first, &with(&ds), NOW);
        let body = patch(&first, &desired).expect("a first write");
        assert_eq!(body["metadata"], json!({"resourceVersion": "700"}));
        assert_eq!(body["status"], desired);

        // The API server applied it; later, with another clock, nothing changes.
        let written = virtual_service(Some(body["status"].clone()));
        let again = desired_status(&written, &with(&ds), "2025-06-02T00:00:00Z");
        assert_eq!(patch(&written, &again), None);

        // A new generation is written, even with the same findings.
        let newer = IstioObject {
            generation: Some(4),
            ..written.clone()
        };
        let desired = desired_status(&newer, &with(&ds), NOW);
        assert_eq!(
            patch(&newer, &desired).unwrap()["status"]["observedGeneration"],
            4
        );
    }

    #[test]
    fn an_object_without_generation_or_resource_version_is_never_written() {
        let unseen = IstioObject {
            generation: None,
            ..virtual_service(None)
        };
        let desired = desired_status(&unseen, &Findings::default(), NOW);
        assert_eq!(patch(&unseen, &desired), None);
        let unversioned = IstioObject {
            resource_version: None,
            ..virtual_service(None)
        };
        let desired = desired_status(&unversioned, &Findings::default(), NOW);
        assert_eq!(patch(&unversioned, &desired), None);
    }

    #[test]
    fn the_plan_matches_findings_to_objects_by_origin() {
        let snapshot = Snapshot {
            problems: vec![
                Problem {
                    origin: "VirtualService shop/reviews".into(),
                    message: "spec.hosts: invalid type".into(),
                },
                Problem {
                    origin: "security.istio.io/v1 RequestAuthentication".into(),
                    message: "not served".into(),
                },
            ],
            istio_objects: vec![virtual_service(None)],
            ..Snapshot::default()
        };
        let writes = plan(&snapshot, &[], NOW);
        assert_eq!(writes.len(), 1);
        assert_eq!(
            writes[0].body["status"]["conditions"][0]["message"],
            "refused, not applied: spec.hosts: invalid type"
        );
    }

    #[test]
    fn a_long_message_is_cut() {
        let ds: Vec<Diagnostic> = (0..200)
            .map(|i| {
                diagnostic(
                    Severity::Warning,
                    &format!("spec.http[{i}].fault"),
                    "not enforced by Trellis yet",
                )
            })
            .collect();
        let status = desired_status(&virtual_service(None), &with(&ds), NOW);
        let message = status["conditions"][0]["message"].as_str().unwrap();
        assert!(message.len() <= MAX_MESSAGE + '…'.len_utf8(), "{}", message.len());
        assert!(message.ends_with('…'));
        assert_eq!(status["validationMessages"].as_array().unwrap().len(), 200);
    }

    #[test]
    fn the_clock_is_rfc_3339() {
        let now = now();
        assert_eq!(now.len(), "2025-06-01T12:00:00Z".len(), "{now}");
        assert!(now.ends_with('Z'));
    }
}
