//! The controller's debug endpoint (Istio's istiod uses 15014): `/debug/syncz` (source,
//! diagnostics and every node's sync state, what `mesh-ctl status` shows),
//! `/debug/config_dump?node=<name>` (the config a node acknowledged, for `mesh-ctl
//! proxy-config`), `/debug/config` (the controller's own configuration), `/ready`.

use std::{convert::Infallible, sync::Arc};

use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mesh_api::{
    node_config::Diagnostic,
    status::{ConfigDump, ControllerStatus},
};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::{config::Config, distribution::SyncTable, source::Snapshots};

pub struct DebugState {
    pub source: String,
    pub snapshots: Snapshots,
    pub table: SyncTable,
    /// Diagnostics of the latest snapshot, computed once per revision by the app.
    pub diagnostics: Arc<std::sync::RwLock<Vec<Diagnostic>>>,
    /// What the controller runs with (flags and environment), for `/debug/config`.
    pub config: Config,
}

pub async fn serve(listener: TcpListener, state: Arc<DebugState>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "debug accept failed");
                continue;
            }
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
                tracing::debug!(error = %e, "debug connection");
            }
        });
    }
}

fn route<B>(state: &DebugState, req: &Request<B>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/ready" => text(StatusCode::OK, "ready\n"),
        "/debug/syncz" => {
            let snapshot = state.snapshots.borrow().clone();
            json(&ControllerStatus {
                source: state.source.clone(),
                revision: snapshot.revision,
                objects: snapshot.objects.len(),
                problems: snapshot.problems.clone(),
                diagnostics: state
                    .diagnostics
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
                nodes: state.table.nodes(),
            })
        }
        "/debug/config" => json(&state.config),
        "/debug/config_dump" => {
            let node = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("node=")));
            let Some(node) = node else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "say which node: /debug/config_dump?node=<name>\n",
                );
            };
            match state.table.acked(node) {
                Some((version, config)) => json(&ConfigDump {
                    node: node.to_string(),
                    version,
                    config: (*config).clone(),
                }),
                None => text(
                    StatusCode::NOT_FOUND,
                    &format!("node {node} has not acknowledged any config since this controller started\n"),
                ),
            }
        }
        "/" => text(
            StatusCode::OK,
            "/ready /debug/syncz /debug/config /debug/config_dump?node=<name>\n",
        ),
        other => text(StatusCode::NOT_FOUND, &format!("no debug page {other}; try /\n")),
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
