//! The admin endpoint (localhost:15000 by default): JSON views for operators and tests.
//!
//! - `/ready`: 200 once a config from the controller is applied, while enrollment passes keep
//!   finishing (503 when they stall or stop)
//! - `/config_dump`: the node's [`Config`]
//! - `/workloads`: enrolled, failed and skipped pods, remote endpoints, PeerAuthentications
//!   and the service index (`vip:port` -> service, visibility, endpoints)
//! - `/datapath`: live kernel map contents, counters and pinned links
//! - `/stats`: proxy and kernel counters
//! - `/certs`: workload certificates, trust bundle, CA reachability, TLS counters

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;
use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    config::Config,
    datapath::{Datapath, OrigDstTable},
    proxy::ProxyStats,
    workloads::{enrollment::Registry, Heartbeat, STALL_AFTER},
};

/// What the admin endpoint reads.
pub struct AdminState {
    pub config: Config,
    pub registry: Arc<ArcSwap<Registry>>,
    /// The config stream: version in force, connection, last NACK.
    pub control: Arc<std::sync::Mutex<crate::control::ControlStatus>>,
    pub datapath: Arc<Mutex<Datapath>>,
    pub orig_dst: Arc<OrigDstTable>,
    pub stats: Arc<ProxyStats>,
    pub identities: Option<Arc<crate::identity::IdentityManager>>,
    /// When enrollment last finished a pass.
    pub heartbeat: Arc<Heartbeat>,
}

pub async fn serve(listener: TcpListener, state: Arc<AdminState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, &req)) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "admin connection");
            }
        });
    }
}

fn route<B>(state: &AdminState, req: &Request<B>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/ready" => {
            let (status, body) =
                readiness(state.registry.load().config_version, state.heartbeat.since_last());
            text(status, &body)
        }
        "/config_dump" => json(&state.config),
        "/workloads" => json(&**state.registry.load()),
        "/metrics" => {
            let status = state.control.lock().unwrap_or_else(|p| p.into_inner()).clone();
            Response::builder()
                .header(
                    "content-type",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .body(Full::new(Bytes::from(crate::metrics::render(&status))))
                .unwrap_or_default()
        }
        "/control" => {
            #[derive(Serialize)]
            struct Control {
                #[serde(flatten)]
                status: crate::control::ControlStatus,
                /// Seconds since the config in force was applied.
                age_secs: Option<u64>,
            }
            let status = state.control.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let age_secs = status
                .applied_at
                .and_then(|t| t.elapsed().ok())
                .map(|d| d.as_secs());
            json(&Control { status, age_secs })
        }
        "/datapath" => {
            let pods = state.registry.load().pods_by_ifindex();
            let view = state
                .datapath
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .view(&state.orig_dst, &pods);
            json(&view)
        }
        "/stats" => {
            #[derive(Serialize)]
            struct Stats<'a> {
                proxy: &'a ProxyStats,
                kernel: std::collections::BTreeMap<&'static str, u64>,
            }
            let kernel = state
                .datapath
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .counters()
                .into_iter()
                .collect();
            json(&Stats {
                proxy: &state.stats,
                kernel,
            })
        }
        "/certs" => match &state.identities {
            Some(ids) => {
                #[derive(Serialize)]
                struct Certs<'a> {
                    ca: crate::identity::CaStatus,
                    trust_bundle: Vec<String>,
                    certificates: Vec<crate::identity::CertView>,
                    stats: &'a crate::identity::IdentityStats,
                }
                let stats = ids.stats.lock().unwrap_or_else(|p| p.into_inner());
                json(&Certs {
                    ca: ids.status(),
                    trust_bundle: ids.trust_subjects(),
                    certificates: ids.views(),
                    stats: &stats,
                })
            }
            None => text(
                StatusCode::NOT_FOUND,
                "no CA configured (--ca-addr): this node holds no identities\n",
            ),
        },
        "/" => text(
            StatusCode::OK,
            "/ready /config_dump /control /metrics /workloads /datapath /stats /certs\n",
        ),
        other => text(StatusCode::NOT_FOUND, &format!("no admin page {other}; try /\n")),
    }
}

/// `/ready`: a config from the controller, and an enrollment pass finished within
/// [`STALL_AFTER`] (a stalled pass, a hung syscall, or a dead one, a panic, means new pods
/// are not captured and removed ones not released).
fn readiness(config_version: u64, since_last_pass: Option<std::time::Duration>) -> (StatusCode, String) {
    match (config_version, since_last_pass) {
        (0, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first config from the controller\n".into(),
        ),
        (_, Some(since)) if since <= STALL_AFTER => (StatusCode::OK, "ready\n".into()),
        (_, since) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "enrollment has not finished a pass for {}: stalled or stopped (see the log); \
                 new pods are not captured\n",
                since.map_or_else(|| "ever".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
            ),
        ),
    }
}

fn json<T: Serialize>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("serialising: {e}\n")),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn ready_needs_a_config_and_a_recent_enrollment_pass() {
        let status = |v, since| readiness(v, since).0;
        assert_eq!(status(0, Some(Duration::ZERO)), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(3, Some(Duration::from_secs(1))), StatusCode::OK);
        let (code, body) = readiness(3, Some(STALL_AFTER + Duration::from_secs(1)));
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("has not finished a pass for 6.0 s"), "{body}");
        assert!(readiness(3, None).1.contains("for ever"));
    }
}
