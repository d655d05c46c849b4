//! The Kubernetes source: one kube-runtime watcher and reflector store per kind, and one task
//! that turns the stores into a [`Snapshot`] a moment after they change.
//!
//! Every kind is watched as a [`DynamicObject`] (raw JSON), not as a k8s-openapi type, so the
//! only parser is [`mesh_api::objects::parse_object`], the one the directory source uses: both
//! sources accept and refuse the same objects with the same messages, and a field Trellis does
//! not read can never make a watcher fail. An object that does not parse is left out and
//! reported as a [`Problem`]; the others apply. A kind the API server does not serve (an Istio
//! CRD that is not installed) is reported and retried with backoff without holding the other
//! kinds back.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{
    api::{Api, ApiResource, DynamicObject, GroupVersionKind, TypeMeta},
    runtime::{
        reflector::{self, Store},
        watcher, WatchStreamExt,
    },
    Client,
};
use mesh_api::istio::{
    networking::{DestinationRuleSpec, GatewaySpec, ServiceEntrySpec, SidecarSpec, VirtualServiceSpec},
    security::{AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec},
    Kind,
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};

use super::{Error, Problem, Snapshot, Snapshots};

/// How long the stores must be quiet before a snapshot is published: a burst of events (a
/// Deployment rolling, the initial lists) becomes one snapshot, not hundreds.
pub const DEBOUNCE: Duration = Duration::from_millis(75);

/// Annotation `kubectl apply` writes: a second full copy of the object that nothing in Trellis
/// reads, so it is dropped before the object is stored.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The kinds watched, in the order their objects appear in a snapshot.
pub fn resources() -> Vec<ApiResource> {
    use k8s_openapi::api::{
        core::v1::{Namespace, Node, Pod, Service, ServiceAccount},
        discovery::v1::EndpointSlice,
    };
    vec![
        ApiResource::erase::<Namespace>(&()),
        ApiResource::erase::<Node>(&()),
        ApiResource::erase::<ServiceAccount>(&()),
        ApiResource::erase::<Pod>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<EndpointSlice>(&()),
        istio::<VirtualServiceSpec>(),
        istio::<DestinationRuleSpec>(),
        istio::<ServiceEntrySpec>(),
        istio::<GatewaySpec>(),
        istio::<SidecarSpec>(),
        istio::<PeerAuthenticationSpec>(),
        istio::<RequestAuthenticationSpec>(),
        istio::<AuthorizationPolicySpec>(),
    ]
}

/// An Istio kind at its newest version. Istio serves every version of a kind with one schema
/// and no conversion webhook, so watching one version sees the objects created with any of
/// them.
fn istio<S: Kind>() -> ApiResource {
    let version = S::VERSIONS.last().expect("every Istio kind has a version");
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(S::GROUP, version, S::KIND), S::PLURAL)
}

/// An Istio object as the API server had it when the snapshot was taken: where its status
/// lives and what that status was. Parsed or refused alike, so that both get a status.
#[derive(Debug, Clone, PartialEq)]
pub struct IstioObject {
    /// The kind at the version watched; its status is at
    /// `/apis/<group>/<version>/namespaces/<namespace>/<plural>/<name>/status`.
    pub resource: ApiResource,
    pub namespace: String,
    pub name: String,
    /// `metadata.generation`: the spec version the snapshot's findings are about.
    pub generation: Option<i64>,
    /// `metadata.resourceVersion`: a status write is conditional on it, so that it never
    /// lands on a version of the object the controller has not analysed.
    pub resource_version: Option<String>,
    /// `status`, as found.
    pub status: Option<serde_json::Value>,
}

impl IstioObject {
    /// `Kind namespace/name`, the way diagnostics and problems name objects.
    pub fn origin(&self) -> String {
        format!("{} {}/{}", self.resource.kind, self.namespace, self.name)
    }
}

/// What a kind's task tells the aggregator.
enum Update {
    /// The kind's store changed (an initial list completed, an object was applied or deleted).
    Changed(usize),
    /// The kind could not be listed; `None` once it can again.
    Problem(usize, Option<String>),
}

/// Watches every kind through `client`, waits until each has been listed once (or has
/// failed to list, which is reported), and then publishes a snapshot after every change until
/// the receivers are gone.
pub async fn watch(client: Client) -> Result<Snapshots, Error> {
    // Fail fast, with a message, when the API server cannot be reached at all; everything
    // after this retries on its own.
    client.apiserver_version().await.map_err(Error::Unreachable)?;

    let kinds = resources();
    let (updates_tx, mut updates) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    let mut stores = Vec::new();
    for (index, resource) in kinds.iter().enumerate() {
        let writer = reflector::store::Writer::new(resource.clone());
        stores.push(writer.as_reader());
        tasks.spawn(run_kind(
            Api::all_with(client.clone(), resource),
            resource.clone(),
            writer,
            index,
            updates_tx.clone(),
        ));
    }
    drop(updates_tx);

    let mut state = State {
        problems: vec![None; kinds.len()],
        settled: vec![false; kinds.len()],
        kinds,
        stores,
    };

    // The first snapshot waits for every kind: publishing before the lists are complete would
    // tell the compiler that, say, no AuthorizationPolicy exists.
    while !state.settled.iter().all(|s| *s) {
        match updates.recv().await {
            Some(update) => {
                state.apply(update);
            }
            None => unreachable!("the kind tasks only end when aborted"),
        }
    }
    let first = state.snapshot(1);
    log(&Snapshot::default(), &first);
    let (tx, rx) = watch::channel(Arc::new(first));

    tokio::spawn(async move {
        // Dropping `tasks` when this returns stops the watchers.
        let _tasks = tasks;
        loop {
            let mut dirty = tokio::select! {
                update = updates.recv() => match update {
                    Some(update) => state.apply(update),
                    None => return,
                },
                () = tx.closed() => return,
            };
            let quiet = tokio::time::sleep(DEBOUNCE);
            tokio::pin!(quiet);
            loop {
                tokio::select! {
                    update = updates.recv() => match update {
                        Some(update) => dirty |= state.apply(update),
                        None => return,
                    },
                    () = &mut quiet => break,
                }
            }
            if dirty {
                let last = tx.borrow().clone();
                let next = state.snapshot(last.revision + 1);
                log(&last, &next);
                tx.send_replace(Arc::new(next));
            }
        }
    });
    Ok(rx)
}

/// Runs one kind's watcher into its store until aborted, reporting changes and list failures.
async fn run_kind(
    api: Api<DynamicObject>,
    resource: ApiResource,
    writer: reflector::store::Writer<DynamicObject>,
    index: usize,
    updates: mpsc::UnboundedSender<Update>,
) {
    let types = TypeMeta {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
    };
    // The default list semantic is a consistent (quorum) read: a relist from a stale watch
    // cache could bring back a deleted AuthorizationPolicy for a moment.
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(move |object: &mut DynamicObject| {
            // List items come without apiVersion and kind; parse_object needs both.
            object.types = Some(types.clone());
            // What the compiler never reads, kept out of memory: the field managers and
            // kubectl's copy of the object.
            object.metadata.managed_fields = None;
            if let Some(annotations) = object.metadata.annotations.as_mut() {
                annotations.remove(LAST_APPLIED);
                // In a cluster a pod's owner writes its annotations: a path named there must
                // never reach the node, which would open it (a FIFO, or the host's
                // namespace). Nodes find a pod's namespace themselves (CNI, kubelet cgroups).
                annotations.remove(mesh_api::objects::NETNS_ANNOTATION);
            }
        })
        .reflect(writer);
    futures::pin_mut!(stream);
    let mut failing = false;
    while let Some(item) = stream.next().await {
        let update = match item {
            Ok(watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                if std::mem::take(&mut failing) {
                    tracing::info!(kind = %resource.kind, "listed again");
                    let _ = updates.send(Update::Problem(index, None));
                }
                Update::Changed(index)
            }
            // The store swaps in a relisted state at InitDone; nothing to publish before.
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
            Err(watcher::Error::InitialListFailed(e)) => {
                failing = true;
                let message = list_failed(&resource, &e);
                tracing::warn!(api_version = %resource.api_version, kind = %resource.kind, error = %message, "list failed; retrying with backoff");
                Update::Problem(index, Some(message))
            }
            // A watch that ends or breaks is resumed from the last resourceVersion, and one
            // that is too old (410 Gone) is relisted: the watcher does both, the store stays.
            Err(e) => {
                tracing::debug!(kind = %resource.kind, error = %e, "watch interrupted; resuming");
                continue;
            }
        };
        if updates.send(update).is_err() {
            return;
        }
    }
}

/// A list failure, said so that the operator knows what to fix. The problem's origin names
/// the kind (`security.istio.io/v1 RequestAuthentication`).
fn list_failed(resource: &ApiResource, error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if status.is_not_found() && resource.group.ends_with("istio.io") => {
            "not served by the API server: install the CRDs (deploy/crds)".into()
        }
        kube::Error::Api(status) if status.is_not_found() => {
            "not served by the API server: Trellis needs Kubernetes 1.21 or later".into()
        }
        kube::Error::Api(status) if status.is_forbidden() => format!(
            "may not be listed ({}): check the controller's ClusterRole and its binding (deploy/rbac)",
            status.message
        ),
        e => format!("listing failed: {e}"),
    }
}

/// The aggregator's view of every kind.
struct State {
    kinds: Vec<ApiResource>,
    stores: Vec<Store<DynamicObject>>,
    /// Why a kind could not be listed, until it can.
    problems: Vec<Option<String>>,
    /// Whether a kind has been listed or has failed to list, since the start.
    settled: Vec<bool>,
}

impl State {
    /// Records an update; true when the next snapshot would differ.
    fn apply(&mut self, update: Update) -> bool {
        match update {
            Update::Changed(i) => {
                self.settled[i] = true;
                true
            }
            Update::Problem(i, problem) => {
                self.settled[i] = true;
                let changed = self.problems[i] != problem;
                self.problems[i] = problem;
                changed
            }
        }
    }

    /// Every stored object through `parse_object`, kinds in [`resources`] order and, within a
    /// kind, oldest first (creationTimestamp, then namespace and name), which is the order
    /// Istio's precedence rules fall back to.
    fn snapshot(&self, revision: u64) -> Snapshot {
        let mut snapshot = Snapshot {
            revision,
            ..Snapshot::default()
        };
        for ((resource, store), problem) in self.kinds.iter().zip(&self.stores).zip(&self.problems) {
            if let Some(message) = problem {
                snapshot.problems.push(Problem {
                    origin: format!("{} {}", resource.api_version, resource.kind),
                    message: message.clone(),
                });
            }
            let mut objects = store.state();
            objects.sort_by(|a, b| {
                let key = |o: &DynamicObject| {
                    (
                        o.metadata.creation_timestamp.clone(),
                        o.metadata.namespace.clone(),
                        o.metadata.name.clone(),
                    )
                };
                key(a).cmp(&key(b))
            });
            let istio = resource.group.ends_with("istio.io");
            for object in objects {
                if istio {
                    snapshot.istio_objects.push(IstioObject {
                        resource: resource.clone(),
                        namespace: object.metadata.namespace.clone().unwrap_or_default(),
                        name: object.metadata.name.clone().unwrap_or_default(),
                        generation: object.metadata.generation,
                        resource_version: object.metadata.resource_version.clone(),
                        status: object.data.get("status").cloned(),
                    });
                }
                let origin = || {
                    let name = object.metadata.name.as_deref().unwrap_or_default();
                    match object.metadata.namespace.as_deref() {
                        Some(ns) => format!("{} {ns}/{name}", resource.kind),
                        None => format!("{} {name}", resource.kind),
                    }
                };
                let parsed = serde_yaml_ng::to_value(&*object)
                    .map_err(|e| e.to_string())
                    .and_then(|value| {
                        mesh_api::objects::parse_object(value, snapshot.objects.len()).map_err(|e| e.message)
                    });
                match parsed {
                    Ok(parsed) => snapshot.objects.push(parsed),
                    Err(message) => snapshot.problems.push(Problem {
                        origin: origin(),
                        message,
                    }),
                }
            }
        }
        snapshot
    }
}

/// Logs a snapshot, and each problem once, when it first appears.
fn log(last: &Snapshot, next: &Snapshot) {
    tracing::info!(
        revision = next.revision,
        objects = next.objects.len(),
        problems = next.problems.len(),
        "Kubernetes snapshot"
    );
    for problem in next.problems.iter().filter(|p| !last.problems.contains(p)) {
        tracing::warn!(revision = next.revision, %problem, "left out of the snapshot");
    }
}
