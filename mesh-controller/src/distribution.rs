//! The config stream, `trellis.config.v1.ConfigDiscovery`: every connected node gets its
//! compiled [`NodeConfig`] as a full snapshot, then only the sections that changed, each
//! update with a new version. The node ACKs or NACKs each; the per-node sync state is kept
//! for `/debug/syncz` and `mesh-ctl status`.
//!
//! When the controller stops, every stream is ended cleanly (the node sees the end of the
//! stream, keeps enforcing what it has and reconnects, to this controller's successor):
//! a config stream never ends by itself, so without this a graceful shutdown would wait for
//! the nodes forever.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use mesh_api::{
    config_stream::{
        config_discovery_server::ConfigDiscovery, node_message::Message, ConfigUpdate, NodeMessage, Section,
    },
    node_config::{compile, NodeConfig, Options},
    selection::Skipped,
    status::{unix_now, Enrollment, Nack, NodeSync},
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::{node_auth::NodeAuthenticator, source::Snapshots};

/// Sync state and last acknowledged config of every node seen since the controller started.
#[derive(Default, Clone)]
pub struct SyncTable(Arc<Mutex<BTreeMap<String, NodeEntry>>>);

#[derive(Default)]
pub struct NodeEntry {
    pub sync: NodeSync,
    /// Which stream owns this entry: a node that reconnects before its old stream is noticed
    /// dead must not be marked disconnected when that old stream finally ends.
    session: u64,
    /// The config of `sync.version_acked`.
    pub acked: Option<Arc<NodeConfig>>,
}

impl SyncTable {
    fn update<R>(&self, node: &str, f: impl FnOnce(&mut NodeEntry) -> R) -> R {
        let mut table = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = table.entry(node.to_string()).or_insert_with(|| NodeEntry {
            sync: NodeSync {
                node: node.to_string(),
                ..NodeSync::default()
            },
            acked: None,
            session: 0,
        });
        f(entry)
    }

    pub fn nodes(&self) -> Vec<NodeSync> {
        let table = self.0.lock().unwrap_or_else(|p| p.into_inner());
        table.values().map(|e| e.sync.clone()).collect()
    }

    /// The acknowledged config of `node`, with its version.
    pub fn acked(&self, node: &str) -> Option<(u64, Arc<NodeConfig>)> {
        let table = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let e = table.get(node)?;
        Some((e.sync.version_acked, e.acked.clone()?))
    }
}

pub struct ConfigService {
    pub node_auth: Arc<NodeAuthenticator>,
    pub snapshots: Snapshots,
    pub options: Options,
    pub table: SyncTable,
    /// Becomes `true` when the controller stops: every stream ends.
    pub stopping: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl ConfigDiscovery for ConfigService {
    type StreamConfigStream = ReceiverStream<Result<ConfigUpdate, Status>>;

    async fn stream_config(
        &self,
        request: Request<Streaming<NodeMessage>>,
    ) -> Result<Response<Self::StreamConfigStream>, Status> {
        let node = self.node_auth.authenticate(request.metadata()).await?;
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(NodeMessage {
                message: Some(Message::Hello(hello)),
            }) => hello,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of a config stream must be a Hello",
                ))
            }
        };
        if hello.node != node {
            return Err(Status::permission_denied(format!(
                "this token belongs to node {node}, not {}",
                hello.node
            )));
        }
        tracing::info!(%node, applied_version = hello.applied_version, "node connected to the config stream");
        let session = self.table.update(&node, |e| {
            e.session += 1;
            e.sync.connected = true;
            e.sync.since = unix_now();
            e.sync.applied_at_connect = hello.applied_version;
            e.session
        });
        let (tx, rx) = mpsc::channel(4);
        let session = Session {
            id: session,
            node,
            options: self.options.clone(),
            table: self.table.clone(),
            // Versions continue where the node is, so they only ever grow for it.
            version: hello.applied_version,
            sent: None,
        };
        tokio::spawn(session.run(self.snapshots.clone(), inbound, tx, self.stopping.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Session {
    /// This stream's number in the node's entry.
    id: u64,
    node: String,
    options: Options,
    table: SyncTable,
    version: u64,
    /// What the node was last sent (`None` after a NACK: the next update is full).
    sent: Option<(u64, Arc<NodeConfig>)>,
}

impl Session {
    async fn run(
        mut self,
        mut snapshots: Snapshots,
        mut inbound: Streaming<NodeMessage>,
        tx: mpsc::Sender<Result<ConfigUpdate, Status>>,
        mut stopping: watch::Receiver<bool>,
    ) {
        snapshots.mark_changed();
        loop {
            tokio::select! {
                // Returning drops `tx`: the response stream ends with an OK status, which the
                // node reads as "reconnect soon", not as an error.
                // (The `Ref` the wait returns is not `Send`: dropped inside.)
                () = async { drop(stopping.wait_for(|s| *s).await) } => {
                    tracing::info!(node = %self.node, "ending the config stream: the controller is stopping");
                    break;
                }
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break; // the controller is shutting down
                    }
                    let snapshot = snapshots.borrow_and_update().clone();
                    let config = compile(&snapshot.objects, &self.node, &self.options);
                    if let Some(update) = self.next_update(config) {
                        if tx.send(Ok(update)).await.is_err() {
                            break;
                        }
                    }
                }
                message = inbound.message() => match message {
                    Ok(Some(NodeMessage { message: Some(m) })) => self.on_reply(m),
                    Ok(Some(NodeMessage { message: None })) => {}
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(node = %self.node, error = %e, "config stream ended");
                        break;
                    }
                },
            }
        }
        tracing::info!(node = %self.node, "node disconnected from the config stream");
        self.table.update(&self.node, |e| {
            if e.session == self.id {
                e.sync.connected = false;
                e.sync.since = unix_now();
            }
        });
    }

    /// The update that brings the node from what it was sent to `config`, if anything changed.
    fn next_update(&mut self, config: NodeConfig) -> Option<ConfigUpdate> {
        let previous = self.sent.as_ref().map(|(_, c)| c.as_ref());
        let changed = config.changed_sections(previous);
        if changed.is_empty() {
            return None;
        }
        self.version += 1;
        let full = previous.is_none();
        let sections = changed
            .into_iter()
            .map(|name| Section {
                name: name.to_string(),
                json: config.section(name).unwrap_or_default().to_string().into_bytes(),
            })
            .collect();
        tracing::debug!(node = %self.node, version = self.version, full, "sending config");
        self.sent = Some((self.version, Arc::new(config)));
        let version = self.version;
        self.table.update(&self.node, |e| e.sync.version_sent = version);
        Some(ConfigUpdate {
            version,
            full,
            sections,
        })
    }

    fn on_reply(&mut self, message: Message) {
        match message {
            Message::Ack(ack) => {
                let config = self
                    .sent
                    .as_ref()
                    .filter(|(v, _)| *v == ack.version)
                    .map(|(_, c)| c.clone());
                self.table.update(&self.node, |e| {
                    e.sync.version_acked = ack.version;
                    e.sync.acked_at = Some(unix_now());
                    if config.is_some() {
                        e.acked = config;
                    }
                });
            }
            Message::Nack(nack) => {
                tracing::warn!(node = %self.node, version = nack.version, reason = %nack.reason, "node refused a config update; it keeps its previous one");
                self.sent = None;
                self.table.update(&self.node, |e| {
                    e.sync.last_nack = Some(Nack {
                        version: nack.version,
                        reason: nack.reason,
                        at: unix_now(),
                    })
                });
            }
            Message::Enrollment(report) => {
                let enrollment = Enrollment {
                    enrolled: report.enrolled,
                    not_enrolled: report
                        .not_enrolled
                        .into_iter()
                        .map(|n| Skipped {
                            pod: n.pod,
                            reason: n.reason,
                        })
                        .collect(),
                    cni: Some(report.cni).filter(|c| !c.is_empty()),
                    at: unix_now(),
                };
                self.table
                    .update(&self.node, |e| e.sync.enrollment = Some(enrollment));
            }
            Message::Hello(_) => {
                tracing::warn!(node = %self.node, "ignoring a second Hello on a config stream")
            }
        }
    }
}
