//! An in-process fake Kubernetes API server that answers from the recordings under
//! `tests/recordings/` (see its README), shared by the tests that need an API server.
//!
//! Lists are answered from `cluster/<plural>.json`; for watches the test feeds a stream with
//! newline-delimited watch events and closes it when it wants the connection dropped. Status
//! writes (`PATCH …/<name>/status`) are answered 200 and their bodies kept, so the tests can
//! read what the controller wrote and feed it back as a `MODIFIED` event, as the API server
//! would. TokenReviews (`POST …/tokenreviews`) are answered with the recorded review of the
//! same token (`token-review/reviews/`), and their bodies kept too; single objects (`GET
//! …/pods/<name>`) are served from the recordings a test names ([`FakeApiServer::serve`]).

// Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::{body::Frame, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::mpsc, time::timeout};

pub const RECORDINGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/recordings");

/// Bounds every wait; the watcher's first retry after an error comes within about 1.6 s.
pub const WAIT: Duration = Duration::from_secs(15);

pub const PODS: &str = "/api/v1/pods";
pub const PEER_AUTHENTICATIONS: &str = "/apis/security.istio.io/v1/peerauthentications";
pub const REQUEST_AUTHENTICATIONS: &str = "/apis/security.istio.io/v1/requestauthentications";

/// Every path the source lists and watches, and its recording in `cluster/`.
pub const RESOURCES: [(&str, &str); 14] = [
    ("/api/v1/namespaces", "namespaces"),
    ("/api/v1/nodes", "nodes"),
    ("/api/v1/serviceaccounts", "serviceaccounts"),
    (PODS, "pods"),
    ("/api/v1/services", "services"),
    ("/apis/discovery.k8s.io/v1/endpointslices", "endpointslices"),
    ("/apis/networking.istio.io/v1/virtualservices", "virtualservices"),
    (
        "/apis/networking.istio.io/v1/destinationrules",
        "destinationrules",
    ),
    ("/apis/networking.istio.io/v1/serviceentries", "serviceentries"),
    ("/apis/networking.istio.io/v1/gateways", "gateways"),
    ("/apis/networking.istio.io/v1/sidecars", "sidecars"),
    (PEER_AUTHENTICATIONS, "peerauthentications"),
    (REQUEST_AUTHENTICATIONS, "requestauthentications"),
    (
        "/apis/security.istio.io/v1/authorizationpolicies",
        "authorizationpolicies",
    ),
];

pub fn recording(name: &str) -> String {
    let path = format!("{RECORDINGS}/{name}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// One request the fake answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub watch: bool,
    /// The `resourceVersion` query parameter.
    pub resource_version: Option<String>,
    pub bookmarks: bool,
}

#[derive(Default)]
struct Route {
    /// Answers to successive lists; the last one repeats.
    lists: VecDeque<(StatusCode, String)>,
    /// The open watch stream, if any.
    watch: Option<mpsc::UnboundedSender<Bytes>>,
    seen: Vec<Seen>,
}

/// Where TokenReviews are created.
pub const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// Bodies of the writes received (status patches, TokenReviews), per path, in order.
type Patches = Arc<Mutex<HashMap<String, Vec<serde_json::Value>>>>;

/// An API server that answers from recordings.
pub struct FakeApiServer {
    url: String,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    patches: Patches,
}

type Body = BoxBody<Bytes, Infallible>;

impl FakeApiServer {
    /// Serves the recorded cluster: every kind listable, every watch open and quiet.
    pub async fn start() -> Self {
        let mut routes = HashMap::new();
        for (path, plural) in RESOURCES {
            let route = Route {
                lists: [(StatusCode::OK, recording(&format!("cluster/{plural}.json")))].into(),
                ..Route::default()
            };
            routes.insert(path.to_string(), route);
        }
        let routes = Arc::new(Mutex::new(routes));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = routes.clone();
        let patches = Patches::default();
        let patched = patches.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let routes = shared.clone();
                let patched = patched.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let routes = routes.clone();
                        let patched = patched.clone();
                        async move {
                            if req.method() == hyper::Method::PATCH {
                                return Ok::<_, Infallible>(answer_patch(&patched, req).await);
                            }
                            if req.method() == hyper::Method::POST && req.uri().path() == TOKEN_REVIEWS {
                                return Ok(answer_review(&patched, req).await);
                            }
                            Ok(answer(&routes, &req))
                        }
                    });
                    // Errors here are the client going away, which the tests cause.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, routes, patches }
    }

    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Replaces the answers to the next lists of `path`: (status, recording).
    pub fn lists(&self, path: &str, answers: &[(u16, &str)]) {
        let mut routes = self.routes.lock().unwrap();
        routes.get_mut(path).unwrap().lists = answers
            .iter()
            .map(|(status, name)| (StatusCode::from_u16(*status).unwrap(), recording(name)))
            .collect();
    }

    /// Answers every `GET path` with a recording (a single object, such as a pod).
    pub fn serve(&self, path: &str, name: &str) {
        let route = Route {
            lists: [(StatusCode::OK, recording(name))].into(),
            ..Route::default()
        };
        self.routes.lock().unwrap().insert(path.to_string(), route);
    }

    /// How many requests `path` has had (lists, watches and gets; not writes).
    pub fn requests(&self, path: &str) -> usize {
        self.routes.lock().unwrap().get(path).map_or(0, |r| r.seen.len())
    }

    /// The bodies of the TokenReviews created so far.
    pub fn reviews(&self) -> Vec<serde_json::Value> {
        self.patches(TOKEN_REVIEWS)
    }

    /// Streams the events of a recording on the open watch of `path` (waiting for one).
    pub async fn send(&self, path: &str, name: &str) {
        let text = recording(name);
        let watch = self.open_watch(path).await;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            watch.send(Bytes::from(format!("{line}\n"))).unwrap();
        }
    }

    /// Streams one watch event (`{"type": …, "object": …}`) on the open watch of `path`.
    pub async fn send_event(&self, path: &str, event: serde_json::Value) {
        let watch = self.open_watch(path).await;
        watch.send(Bytes::from(format!("{event}\n"))).unwrap();
    }

    /// The bodies of the status patches of `path` so far.
    pub fn patches(&self, path: &str) -> Vec<serde_json::Value> {
        self.patches
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// The `n`th status patch (from 0) of `path`, once it has arrived.
    pub async fn patch(&self, path: &str, n: usize) -> serde_json::Value {
        let found = timeout(WAIT, async {
            loop {
                if let Some(body) = self.patches(path).get(n) {
                    return body.clone();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "status patch {n} of {path} never came; patches: {:#?}",
                self.patches.lock().unwrap()
            )
        })
    }

    /// Ends the open watch of `path`, as an API server restart or an idle timeout does.
    pub async fn close(&self, path: &str) {
        self.open_watch(path).await;
        self.routes.lock().unwrap().get_mut(path).unwrap().watch = None;
    }

    async fn open_watch(&self, path: &str) -> mpsc::UnboundedSender<Bytes> {
        let found = timeout(WAIT, async {
            loop {
                let open = self.routes.lock().unwrap()[path].watch.clone();
                match open {
                    Some(tx) if !tx.is_closed() => return tx,
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no watch of {path} opened"))
    }

    /// The `n`th request (from 0) on `path`, once it has arrived.
    pub async fn request(&self, path: &str, n: usize) -> Seen {
        let found = timeout(WAIT, async {
            loop {
                if let Some(seen) = self.routes.lock().unwrap()[path].seen.get(n) {
                    return seen.clone();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "request {n} on {path} never came; seen: {:?}",
                self.routes.lock().unwrap()[path].seen
            )
        })
    }
}

/// A status write: recorded, and answered as the API server does when the patch applies
/// (the patched object; only its metadata matters to the client).
async fn answer_patch(patches: &Patches, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let req_query = req.uri().query().unwrap_or_default().to_string();
    let content_type = req.headers().get("content-type").cloned();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let query = req_query;
    assert!(
        path.ends_with("/status"),
        "a PATCH outside a status subresource: {path}"
    );
    assert!(
        query.contains("fieldManager=trellis-controller"),
        "{path}?{query}"
    );
    assert_eq!(
        content_type.as_ref().and_then(|v| v.to_str().ok()),
        Some("application/merge-patch+json"),
        "{path}"
    );
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    patches.lock().unwrap().entry(path).or_default().push(body);
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(r#"{"metadata":{}}"#)).boxed())
        .unwrap()
}

/// A TokenReview: kept, and answered as the API server does (201 Created, the review with its
/// status) from the recorded review of the same token.
async fn answer_review(writes: &Patches, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let token = body["spec"]["token"].clone();
    writes
        .lock()
        .unwrap()
        .entry(TOKEN_REVIEWS.to_string())
        .or_default()
        .push(body);
    let dir = format!("{RECORDINGS}/token-review/reviews");
    let recorded = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .find(|text| serde_json::from_str::<serde_json::Value>(text).unwrap()["spec"]["token"] == token);
    let (status, body) = match recorded {
        Some(review) => (StatusCode::CREATED, review),
        None => (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the fake API server has no recorded review of this token","code":500}"#.into(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap()
}

fn answer(routes: &Mutex<HashMap<String, Route>>, req: &Request<hyper::body::Incoming>) -> Response<Body> {
    let full = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)).boxed())
            .unwrap()
    };
    let path = req.uri().path();
    if path == "/version" {
        return full(StatusCode::OK, recording("version.json"));
    }
    let query: HashMap<&str, &str> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let mut routes = routes.lock().unwrap();
    let Some(route) = routes.get_mut(path) else {
        return full(StatusCode::NOT_FOUND, recording("not-found.json"));
    };
    let seen = Seen {
        watch: query.get("watch") == Some(&"true"),
        resource_version: query.get("resourceVersion").map(|v| v.to_string()),
        bookmarks: query.get("allowWatchBookmarks") == Some(&"true"),
    };
    let watch = seen.watch;
    route.seen.push(seen);
    if watch {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        route.watch = Some(tx);
        let events = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (Ok(Frame::data(chunk)), rx))
        });
        return Response::builder()
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(events)))
            .unwrap();
    }
    let (status, body) = if route.lists.len() > 1 {
        route.lists.pop_front().unwrap()
    } else {
        route.lists[0].clone()
    };
    full(status, body)
}
