//! The node's end of the config stream: connect to the controller, say who we are, apply
//! each update whole and ACK it, or NACK it with the reason and keep the last good config.
//! While the controller is away the node keeps enforcing what it has, and reconnects with
//! backoff; on reconnect it gets a full snapshot.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use mesh_api::{
    config_stream::{
        config_discovery_client::ConfigDiscoveryClient, node_message::Message, Ack, ConfigUpdate, Enrollment,
        Hello, Nack, NodeMessage, NotEnrolled, MAX_MESSAGE_BYTES,
    },
    node_config::NodeConfig,
};
use serde::Serialize;
use tokio::sync::{mpsc, watch, Notify};
use tokio_stream::wrappers::ReceiverStream;

use crate::{identity::IdentityManager, workloads::enrollment::Enroller};

/// How often the current config is re-applied while nothing arrives: a pod whose netns or
/// veth appeared late is enrolled by the next pass.
const RECONCILE: Duration = Duration::from_millis(500);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(15);

/// The node's view of its config stream, for the admin endpoint.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ControlStatus {
    pub connected: bool,
    /// The version in force (0: none yet).
    pub version: u64,
    /// When it was applied.
    pub applied_at: Option<SystemTime>,
    pub updates: u64,
    pub nacks: u64,
    pub last_nack: Option<String>,
    pub last_error: Option<String>,
}

pub struct ControlClient {
    pub node_name: String,
    pub identities: Arc<IdentityManager>,
    pub status: Arc<Mutex<ControlStatus>>,
    /// Asks for a pass now (a pod sandbox reported by the CNI plugin waits for it), also
    /// while the controller is away.
    pub kick: Arc<Notify>,
}

/// The config in force and the enroller that applies it; moved to the blocking pool per pass.
struct Applier {
    enroller: Enroller,
    config: NodeConfig,
    version: u64,
}

impl ControlClient {
    pub async fn run(self, enroller: Enroller, mut shutdown: watch::Receiver<bool>) {
        let mut applier = Some(Applier {
            enroller,
            config: NodeConfig::default(),
            version: 0,
        });
        let mut backoff = BACKOFF_MIN;
        loop {
            let result = tokio::select! {
                r = self.session(&mut applier) => r,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            self.set(|s| {
                s.connected = false;
                if let Err(e) = &result {
                    s.last_error = Some(e.clone());
                }
            });
            match result {
                // The controller ended the stream (restart): come back quickly.
                Ok(()) => backoff = BACKOFF_MIN,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "config stream")
                }
            }
            if applier.is_none() {
                return; // a pass panicked; reported there
            }
            let retry_at = tokio::time::Instant::now() + jitter(backoff);
            loop {
                let kicked = tokio::select! {
                    () = tokio::time::sleep_until(retry_at) => false,
                    _ = shutdown.wait_for(|s| *s) => return,
                    () = self.kick.notified() => true,
                };
                if !kicked {
                    break;
                }
                reapply(&mut applier, None).await;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn set(&self, f: impl FnOnce(&mut ControlStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// One stream, until it ends. `Ok` when the controller closed it cleanly.
    async fn session(&self, applier: &mut Option<Applier>) -> Result<(), String> {
        let channel = self
            .identities
            .controller_channel(None)
            .await
            .map_err(|e| format!("controller {e}"))?;
        let (tx, rx) = mpsc::channel(4);
        let applied_version = applier.as_ref().map_or(0, |a| a.version);
        let send = |m: Message| {
            let tx = tx.clone();
            async move { tx.send(NodeMessage { message: Some(m) }).await.is_ok() }
        };
        send(Message::Hello(Hello {
            node: self.node_name.clone(),
            applied_version,
        }))
        .await;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("authorization", self.identities.bearer()?);
        let mut updates = ConfigDiscoveryClient::new(channel)
            // A full snapshot of a large cluster passes tonic's 4 MiB default.
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .stream_config(request)
            .await
            .map_err(|s| {
                format!(
                    "controller refused the config stream ({:?}): {}",
                    s.code(),
                    s.message()
                )
            })?
            .into_inner();
        self.set(|s| {
            s.connected = true;
            s.last_error = None;
        });
        tracing::info!(applied_version, "config stream open");
        let mut tick = tokio::time::interval(RECONCILE);
        // What the controller last heard of this node's pods (mesh-ctl status).
        let mut reported: Option<Enrollment> = None;
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = updates.message() => {
                    let update = match message {
                        Ok(Some(u)) => u,
                        Ok(None) => return Ok(()),
                        Err(s) => return Err(format!("config stream broke ({:?}): {}", s.code(), s.message())),
                    };
                    let version = update.version;
                    let current = applier.as_ref().ok_or("enrollment stopped")?;
                    let reply = match candidate(&current.config, current.version, &update) {
                        Ok(config) => {
                            reapply(applier, Some((config, version))).await;
                            self.set(|s| {
                                s.version = version;
                                s.applied_at = Some(SystemTime::now());
                                s.updates += 1;
                            });
                            tracing::info!(version, full = update.full, sections = update.sections.len(), "config applied");
                            Message::Ack(Ack { version })
                        }
                        Err(reason) => {
                            tracing::error!(version, %reason, "config update refused; keeping the previous version");
                            self.set(|s| {
                                s.nacks += 1;
                                s.last_nack = Some(format!("version {version}: {reason}"));
                            });
                            Message::Nack(Nack { version, reason })
                        }
                    };
                    if !send(reply).await {
                        return Err("the config stream closed while replying".into());
                    }
                }
                _ = tick.tick() => reapply(applier, None).await,
                () = self.kick.notified() => reapply(applier, None).await,
            }
            if let Some(report) = enrollment_report(applier.as_ref(), &mut reported) {
                if !send(Message::Enrollment(report)).await {
                    return Err("the config stream closed while reporting enrollment".into());
                }
            }
        }
    }
}

/// The node's enrollment as the controller should hear it, when it differs from what it
/// last heard (`None`: nothing new, or no config yet).
fn enrollment_report(applier: Option<&Applier>, last: &mut Option<Enrollment>) -> Option<Enrollment> {
    let a = applier.filter(|a| a.version > 0)?;
    let reg = a.enroller.published.load();
    let cni = a
        .enroller
        .cni_state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let now = Enrollment {
        cni: cni.unwrap_or_default(),
        enrolled: reg.workloads.keys().cloned().collect(),
        not_enrolled: reg
            .failed
            .iter()
            .map(|f| NotEnrolled {
                pod: f.pod.clone(),
                reason: f.reason.clone(),
            })
            .collect(),
    };
    if last.as_ref() == Some(&now) {
        return None;
    }
    *last = Some(now.clone());
    Some(now)
}

/// The config an update leads to, or why it is refused. Nothing is applied here.
fn candidate(
    current: &NodeConfig,
    current_version: u64,
    update: &ConfigUpdate,
) -> Result<NodeConfig, String> {
    let mut next = if update.full {
        NodeConfig::default()
    } else {
        if update.version <= current_version {
            return Err(format!(
                "incremental update {} does not follow version {current_version}",
                update.version
            ));
        }
        current.clone()
    };
    for section in &update.sections {
        next.set_section(&section.name, &section.json)?;
    }
    next.validate()?;
    Ok(next)
}

/// Runs one enrollment pass on the blocking pool (it makes syscalls and enters pod
/// namespaces), with a new config or the current one.
async fn reapply(applier: &mut Option<Applier>, new: Option<(NodeConfig, u64)>) {
    if new.is_none() && applier.as_ref().is_some_and(|a| a.version == 0) {
        return; // nothing to re-apply before the first config
    }
    let Some(mut a) = applier.take() else { return };
    let pass = tokio::task::spawn_blocking(move || {
        if let Some((config, version)) = new {
            a.config = config;
            a.version = version;
        }
        a.enroller.pass(&a.config, a.version);
        a
    });
    match pass.await {
        Ok(a) => *applier = Some(a),
        Err(e) => tracing::error!(error = %e, "enrollment pass panicked; enrollment stopped"),
    }
}

fn jitter(d: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d.mul_f64(0.8 + f64::from(nanos % 400) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_api::config_stream::Section;

    fn update(version: u64, full: bool, sections: &[(&str, &str)]) -> ConfigUpdate {
        ConfigUpdate {
            version,
            full,
            sections: sections
                .iter()
                .map(|(n, j)| Section {
                    name: n.to_string(),
                    json: j.as_bytes().to_vec(),
                })
                .collect(),
        }
    }

    #[test]
    fn updates_build_on_the_current_config_or_are_refused_whole() {
        let workload = r#"[{"namespace":"shop","name":"a","service_account":"a-sa","ip":"10.1.1.2","netns":"/run/netns/a","labels":{}}]"#;
        let first = candidate(
            &NodeConfig::default(),
            0,
            &update(1, true, &[("workloads", workload)]),
        )
        .unwrap();
        assert_eq!(first.workloads[0].key(), "shop/a");

        // Incremental: other sections stay.
        let next = candidate(&first, 1, &update(2, false, &[("skipped", "[]")])).unwrap();
        assert_eq!(next.workloads, first.workloads);

        // Out of order, broken JSON, unknown section, invalid content: refused, with the reason.
        let err = candidate(&first, 5, &update(3, false, &[])).unwrap_err();
        assert!(err.contains("does not follow version 5"), "{err}");
        let err = candidate(&first, 1, &update(2, false, &[("workloads", "[{")])).unwrap_err();
        assert!(err.starts_with("section workloads"), "{err}");
        let err = candidate(&first, 1, &update(2, false, &[("authorization", "[]")])).unwrap_err();
        assert!(err.contains("unknown section"), "{err}");
        let relative = workload.replace("/run/netns/a", "a");
        let err = candidate(&first, 1, &update(2, false, &[("workloads", &relative)])).unwrap_err();
        assert!(err.contains("not an absolute path"), "{err}");

        // Two workloads with one address: one bad workload does not cost the whole version
        // (enrollment skips both).
        let twice = workload.replace("}]", r#"},{"namespace":"shop","name":"b","service_account":"b","ip":"10.1.1.2","netns":"/run/netns/b","labels":{}}]"#);
        let next = candidate(&first, 1, &update(2, false, &[("workloads", &twice)])).unwrap();
        assert_eq!(next.workloads.len(), 2);
    }
}
