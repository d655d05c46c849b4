//! Workload identities held by this node: a key and certificate per service account with
//! pods here, obtained by CSR from the controller's CA (Istio's CreateCertificate API),
//! renewed at half their lifetime (with jitter; backoff on failure), dropped when the last
//! pod of the account leaves. The data path never waits for the CA: it uses what is cached,
//! and a certificate keeps serving until it expires, whatever the CA's state.
//!
//! The trust bundle is the root set of the latest CA response (the bootstrap root file
//! until then), so a root rotation reaches every node through ordinary renewals: first the
//! bundle holds old and new roots, then only the new one.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime},
};

use mesh_api::{
    ca::{istio_certificate_service_client::IstioCertificateServiceClient, IstioCertificateRequest},
    identity::Identity,
};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    sign::CertifiedKey,
    RootCertStore,
};
use serde::Serialize;
use tokio::sync::{watch, Notify};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("trust bundle {}: {message}", path.display())]
    Roots { path: PathBuf, message: String },
    #[error("CA token file {}: {message}", path.display())]
    Token { path: PathBuf, message: String },
}

/// How to reach the CA.
#[derive(Debug, Clone)]
pub struct CaSettings {
    pub addr: SocketAddr,
    pub server_name: String,
    pub root_file: PathBuf,
    pub token_file: PathBuf,
    pub trust_domain: String,
    /// Lifetime asked for.
    pub ttl: Duration,
}

/// A workload certificate ready for TLS.
pub struct WorkloadCert {
    pub identity: Identity,
    pub certified: Arc<CertifiedKey>,
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub renew_at: SystemTime,
    /// Subjects of the roots the chain was issued under (the bundle at issue time).
    pub roots: Vec<String>,
    /// Subject of the certificate that signed this one.
    pub issuer: String,
}

impl WorkloadCert {
    fn view(&self) -> CertView {
        CertView {
            identity: self.identity.to_string(),
            serial: self.serial.clone(),
            not_before: unix(self.not_before),
            not_after: unix(self.not_after),
            renew_at: unix(self.renew_at),
            issuer: self.issuer.clone(),
            roots: self.roots.clone(),
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug, Serialize)]
pub struct CertView {
    pub identity: String,
    pub serial: String,
    /// Seconds since the Unix epoch.
    pub not_before: u64,
    pub not_after: u64,
    pub renew_at: u64,
    pub issuer: String,
    pub roots: Vec<String>,
}

/// The CA as seen from here.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CaStatus {
    /// `None` until the first request.
    pub reachable: Option<bool>,
    pub last_error: Option<String>,
    /// Seconds since the Unix epoch.
    pub last_success: Option<u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct IdentityStats {
    pub issued: u64,
    pub renewals: u64,
    pub failures: u64,
    pub handshakes: u64,
    /// Failed tunnel handshakes by reason (both directions).
    pub handshake_failures: BTreeMap<String, u64>,
}

struct Trust {
    pem: String,
    store: Arc<RootCertStore>,
    subjects: Vec<String>,
}

fn parse_trust(pem: &str) -> Result<Trust, String> {
    let mut store = RootCertStore::empty();
    let mut subjects = Vec::new();
    for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let der = der.map_err(|e| e.to_string())?;
        subjects.push(subject(&der));
        store.add(der).map_err(|e| e.to_string())?;
    }
    if store.is_empty() {
        return Err("holds no certificate".into());
    }
    Ok(Trust {
        pem: pem.to_string(),
        store: Arc::new(store),
        subjects,
    })
}

fn subject(der: &CertificateDer<'_>) -> String {
    use x509_parser::prelude::*;
    X509Certificate::from_der(der.as_ref())
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Per-identity retry state.
#[derive(Clone, Copy)]
struct Retry {
    next: Instant,
    failures: u32,
}

/// Bounds of the renewal loop's sleep: never spinning, and never trusting a wall-clock
/// deadline for longer than a minute (the clock may be stepped).
const MIN_RENEWAL_SLEEP: Duration = Duration::from_millis(50);
const MAX_RENEWAL_SLEEP: Duration = Duration::from_secs(60);

pub struct IdentityManager {
    settings: CaSettings,
    certs: RwLock<HashMap<Identity, Arc<WorkloadCert>>>,
    trust: RwLock<Trust>,
    wanted: RwLock<BTreeSet<Identity>>,
    /// Wakes the renewal loop when `wanted` changes.
    wanted_changed: Notify,
    status: RwLock<CaStatus>,
    pub stats: Mutex<IdentityStats>,
    retries: Mutex<HashMap<Identity, Retry>>,
    /// Local pod IP -> identity, for choosing the server certificate by SNI.
    local_pods: RwLock<HashMap<Ipv4Addr, Identity>>,
}

impl std::fmt::Debug for IdentityManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityManager")
            .field("ca", &self.settings.addr)
            .finish_non_exhaustive()
    }
}

impl IdentityManager {
    pub fn new(settings: CaSettings) -> Result<Self, Error> {
        let pem = std::fs::read_to_string(&settings.root_file).map_err(|e| Error::Roots {
            path: settings.root_file.clone(),
            message: e.to_string(),
        })?;
        let trust = parse_trust(&pem).map_err(|message| Error::Roots {
            path: settings.root_file.clone(),
            message,
        })?;
        // Read now so that a missing or empty file stops the start, and again at every use.
        read_token(&settings.token_file)?;
        Ok(Self {
            settings,
            certs: RwLock::default(),
            trust: RwLock::new(trust),
            wanted: RwLock::default(),
            wanted_changed: Notify::new(),
            status: RwLock::default(),
            stats: Mutex::default(),
            retries: Mutex::default(),
            local_pods: RwLock::default(),
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.settings.trust_domain
    }

    /// The identities this node needs (one per service account with local enrolled pods)
    /// and which local pod has which. Certificates no longer needed are dropped.
    pub fn set_local(&self, pods: HashMap<Ipv4Addr, Identity>) {
        let wanted: BTreeSet<Identity> = pods.values().cloned().collect();
        self.certs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| {
                let keep = wanted.contains(id);
                if !keep {
                    tracing::info!(identity = %id, "last pod gone: certificate dropped");
                }
                keep
            });
        *self.local_pods.write().unwrap_or_else(|p| p.into_inner()) = pods;
        let mut current = self.wanted.write().unwrap_or_else(|p| p.into_inner());
        if *current != wanted {
            *current = wanted;
            self.wanted_changed.notify_one();
        }
    }

    /// A valid (unexpired) certificate for `identity`, if one is cached.
    pub fn cert(&self, identity: &Identity) -> Option<Arc<WorkloadCert>> {
        let cert = self
            .certs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(identity)
            .cloned()?;
        (SystemTime::now() < cert.not_after).then_some(cert)
    }

    pub fn roots(&self) -> Arc<RootCertStore> {
        self.trust.read().unwrap_or_else(|p| p.into_inner()).store.clone()
    }

    pub fn status(&self) -> CaStatus {
        self.status.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn views(&self) -> Vec<CertView> {
        let mut v: Vec<CertView> = self
            .certs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|c| c.view())
            .collect();
        v.sort_by(|a, b| a.identity.cmp(&b.identity));
        v
    }

    pub fn trust_subjects(&self) -> Vec<String> {
        self.trust
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .subjects
            .clone()
    }

    pub fn record_handshake(&self, result: Result<(), &str>) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => stats.handshakes += 1,
            Err(reason) => *stats.handshake_failures.entry(reason.to_string()).or_default() += 1,
        }
    }

    /// Keeps every wanted identity's certificate fresh until `shutdown`. Sleeps until the
    /// next renewal or retry is due or the wanted set changes (it polled every 200 ms: ten
    /// wakeups a second per node for nothing).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let (due, next) = self.schedule(Instant::now(), SystemTime::now());
            let wait = if due.is_empty() {
                next.map_or(MAX_RENEWAL_SLEEP, |at| {
                    at.saturating_duration_since(Instant::now())
                })
            } else {
                for id in &due {
                    self.refresh(id).await;
                }
                // Then plan again, after a moment: a certificate due again at once (a CA
                // handing out very short lifetimes) cannot spin the loop.
                Duration::ZERO
            };
            tokio::select! {
                () = tokio::time::sleep(wait.clamp(MIN_RENEWAL_SLEEP, MAX_RENEWAL_SLEEP)) => {}
                () = self.wanted_changed.notified(), if due.is_empty() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// The wanted identities whose renewal (or retry after a failure) is due at `now`, and
    /// when the next of the others is.
    fn schedule(&self, now: Instant, wall: SystemTime) -> (Vec<Identity>, Option<Instant>) {
        let wanted = self.wanted.read().unwrap_or_else(|p| p.into_inner());
        let certs = self.certs.read().unwrap_or_else(|p| p.into_inner());
        let retries = self.retries.lock().unwrap_or_else(|p| p.into_inner());
        plan(
            now,
            wanted.iter().map(|id| {
                let renew = certs
                    .get(id)
                    .map(|c| now + c.renew_at.duration_since(wall).unwrap_or_default());
                (id, renew, retries.get(id).map(|r| r.next))
            }),
        )
    }

    async fn refresh(&self, id: &Identity) {
        let renewal = self
            .certs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id);
        let started = Instant::now();
        match self.fetch(id).await {
            Ok(cert) => {
                tracing::info!(
                    identity = %id,
                    serial = %cert.serial,
                    valid_secs = cert.not_after.duration_since(cert.not_before).map(|d| d.as_secs()).unwrap_or(0),
                    took_ms = started.elapsed().as_millis() as u64,
                    renewal,
                    "certificate obtained"
                );
                self.retries.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
                if self.wanted.read().unwrap_or_else(|p| p.into_inner()).contains(id) {
                    self.certs
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id.clone(), Arc::new(cert));
                }
                let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
                if renewal {
                    stats.renewals += 1;
                } else {
                    stats.issued += 1;
                }
                *self.status.write().unwrap_or_else(|p| p.into_inner()) = CaStatus {
                    reachable: Some(true),
                    last_error: None,
                    last_success: Some(unix(SystemTime::now())),
                };
            }
            Err(e) => {
                let mut retries = self.retries.lock().unwrap_or_else(|p| p.into_inner());
                let failures = retries.get(id).map_or(0, |r| r.failures) + 1;
                // 1s doubling to 150s, ±20% jitter (ztunnel's schedule).
                let base = Duration::from_secs(1u64 << failures.min(8).saturating_sub(1))
                    .min(Duration::from_secs(150));
                let delay = base.mul_f64(0.8 + 0.4 * random_unit());
                retries.insert(
                    id.clone(),
                    Retry {
                        next: Instant::now() + delay,
                        failures,
                    },
                );
                tracing::warn!(identity = %id, error = %e, retry_in_ms = delay.as_millis() as u64, "certificate request failed; cached certificates keep serving");
                self.stats.lock().unwrap_or_else(|p| p.into_inner()).failures += 1;
                let mut status = self.status.write().unwrap_or_else(|p| p.into_inner());
                status.reachable = Some(!e.starts_with("CA unreachable"));
                status.last_error = Some(e);
            }
        }
    }

    /// A TLS channel to the controller (CA and config stream), trusting the current bundle.
    /// `timeout` bounds each request; long-lived streams pass `None`.
    pub async fn controller_channel(
        &self,
        timeout: Option<Duration>,
    ) -> Result<tonic::transport::Channel, String> {
        let trust_pem = self.trust.read().unwrap_or_else(|p| p.into_inner()).pem.clone();
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(trust_pem))
            .domain_name(self.settings.server_name.clone());
        let unreachable = |e: &dyn std::fmt::Display| format!("unreachable at {}: {e}", self.settings.addr);
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("https://{}", self.settings.addr))
            .map_err(|e| unreachable(&e))?
            .tls_config(tls)
            .map_err(|e| unreachable(&e))?
            .connect_timeout(Duration::from_secs(3))
            // The config stream is long-lived: pings notice a controller that vanished
            // without closing the connection, so the node reconnects elsewhere.
            .http2_keep_alive_interval(Duration::from_secs(15))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        if let Some(t) = timeout {
            endpoint = endpoint.timeout(t);
        }
        endpoint.connect().await.map_err(|e| unreachable(&e))
    }

    /// `authorization: Bearer <node token>` for requests to the controller. The token file is
    /// read each time: in Kubernetes it is the projected service-account token, which the
    /// kubelet replaces before it expires.
    pub fn bearer(&self) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, String> {
        let token = read_token(&self.settings.token_file).map_err(|e| e.to_string())?;
        format!("Bearer {token}")
            .parse()
            .map_err(|_| "the node token is not valid ASCII".to_string())
    }

    async fn fetch(&self, id: &Identity) -> Result<WorkloadCert, String> {
        let key = rcgen::KeyPair::generate().map_err(|e| format!("generating a key: {e}"))?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let uri = rcgen::string::Ia5String::try_from(id.to_string()).map_err(|e| e.to_string())?;
        params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
        let csr = params
            .serialize_request(&key)
            .and_then(|c| c.pem())
            .map_err(|e| format!("building the CSR: {e}"))?;

        let channel = self
            .controller_channel(Some(Duration::from_secs(10)))
            .await
            .map_err(|e| format!("CA {e}"))?;
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr,
            validity_duration: self.settings.ttl.as_secs() as i64,
            metadata: None,
        });
        request.metadata_mut().insert("authorization", self.bearer()?);
        let chain = IstioCertificateServiceClient::new(channel)
            .create_certificate(request)
            .await
            .map_err(|s| format!("CA refused ({:?}): {}", s.code(), s.message()))?
            .into_inner()
            .cert_chain;
        self.accept_chain(id, &chain, &key)
    }

    /// Turns a CA response into a usable certificate and adopts its root bundle.
    fn accept_chain(
        &self,
        id: &Identity,
        chain: &[String],
        key: &rcgen::KeyPair,
    ) -> Result<WorkloadCert, String> {
        let (bundle, certs) = chain.split_last().ok_or("the CA returned an empty chain")?;
        let mut ders = Vec::new();
        for pem in certs {
            for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                ders.push(der.map_err(|e| format!("certificate in the CA response: {e}"))?);
            }
        }
        let leaf = ders
            .first()
            .ok_or("the CA response holds no leaf certificate")?
            .clone();
        if crate::tls::spiffe_id(&leaf).as_ref() != Some(id) {
            return Err(format!(
                "the CA issued a certificate for another identity than {id}"
            ));
        }
        let trust = parse_trust(bundle).map_err(|e| format!("root bundle in the CA response: {e}"))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let certified =
            CertifiedKey::from_der(ders, key_der, &crate::tls::provider()).map_err(|e| e.to_string())?;

        use x509_parser::prelude::*;
        let (_, x) = X509Certificate::from_der(leaf.as_ref()).map_err(|e| e.to_string())?;
        let ts = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
        let not_before = ts(x.validity().not_before.timestamp());
        let not_after = ts(x.validity().not_after.timestamp());
        // Renew at half the validity left on receipt (the CA backdates not_before for clock
        // skew, so the nominal lifetime overstates it), ±5% so renewals spread out.
        let now = SystemTime::now();
        let remaining = not_after.duration_since(now).unwrap_or_default();
        let renew_at = now + remaining.mul_f64(0.45 + 0.1 * random_unit());
        let serial = x.raw_serial_as_string();
        let issuer = x.issuer().to_string();
        let roots = trust.subjects.clone();
        {
            let mut current = self.trust.write().unwrap_or_else(|p| p.into_inner());
            if current.pem != trust.pem {
                tracing::info!(roots = ?trust.subjects, "trust bundle updated");
                *current = trust;
            }
        }
        Ok(WorkloadCert {
            identity: id.clone(),
            certified: Arc::new(certified),
            serial,
            not_before,
            not_after,
            renew_at,
            roots,
            issuer,
        })
    }
}

impl crate::tls::CertLookup for IdentityManager {
    fn cert_for_pod(&self, pod: Ipv4Addr) -> Option<Arc<CertifiedKey>> {
        let id = self
            .local_pods
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&pod)
            .cloned()?;
        self.cert(&id).map(|c| c.certified.clone())
    }
}

/// A number in [0, 1) from the TLS provider's secure RNG (only used for jitter).
fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    let _ = crate::tls::provider().secure_random.fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Which identities are due at `now`, given when each one's certificate is to be renewed
/// (none: it has none) and when a failed request may be retried (none: no failure), and
/// when the next of the others is due.
fn plan<'a>(
    now: Instant,
    identities: impl Iterator<Item = (&'a Identity, Option<Instant>, Option<Instant>)>,
) -> (Vec<Identity>, Option<Instant>) {
    let mut due = Vec::new();
    let mut next: Option<Instant> = None;
    for (id, renew, retry) in identities {
        let at = match (renew, retry) {
            (None, None) => now,
            (Some(t), None) | (None, Some(t)) => t,
            (Some(a), Some(b)) => a.max(b),
        };
        if at <= now {
            due.push(id.clone());
        } else {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    (due, next)
}

/// The token in `path`, without surrounding whitespace.
fn read_token(path: &std::path::Path) -> Result<String, Error> {
    let err = |message: String| Error::Token {
        path: path.to_path_buf(),
        message,
    };
    let token = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(err("is empty".into()));
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_is_read_at_every_use() {
        let dir = std::env::temp_dir().join(format!("trellis-node-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let root = rcgen::generate_simple_self_signed(vec!["root".into()]).unwrap();
        std::fs::write(dir.join("root-cert.pem"), root.cert.pem()).unwrap();
        let token_file = dir.join("token");
        std::fs::write(&token_file, "first-token\n").unwrap();
        let manager = IdentityManager::new(CaSettings {
            addr: "127.0.0.1:15012".parse().unwrap(),
            server_name: "mesh-controller.trellis-system.svc".into(),
            root_file: dir.join("root-cert.pem"),
            token_file: token_file.clone(),
            trust_domain: "cluster.local".into(),
            ttl: Duration::from_secs(3600),
        })
        .unwrap();
        let bearer = || manager.bearer().map(|v| v.to_str().unwrap().to_string());
        assert_eq!(bearer().unwrap(), "Bearer first-token");
        // The kubelet replaces a projected token before it expires: the next request has it.
        std::fs::write(&token_file, "second-token").unwrap();
        assert_eq!(bearer().unwrap(), "Bearer second-token");
        std::fs::write(&token_file, " \n").unwrap();
        let err = bearer().unwrap_err();
        assert!(err.contains("is empty") && err.contains("token"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn renewals_and_retries_are_planned_for_when_they_are_due() {
        let id = |sa: &str| Identity {
            trust_domain: "cluster.local".into(),
            namespace: "shop".into(),
            service_account: sa.into(),
        };
        let (new, stale, fresh, failing, failed_then_fresh) = (
            id("new"),
            id("stale"),
            id("fresh"),
            id("failing"),
            id("recovered"),
        );
        let now = Instant::now();
        let s = Duration::from_secs;
        let (due, next) = plan(
            now,
            [
                (&new, None, None),
                (&stale, Some(now - s(1)), None),
                (&fresh, Some(now + s(30)), None),
                (&failing, None, Some(now + s(5))),
                (&failed_then_fresh, Some(now - s(1)), Some(now + s(2))),
            ]
            .into_iter(),
        );
        assert_eq!(due, vec![new, stale]);
        assert_eq!(next, Some(now + s(2)), "the earliest of the rest: a retry");

        let (due, next) = plan(now, [(&fresh, Some(now + s(30)), None)].into_iter());
        assert!(due.is_empty());
        assert_eq!(next, Some(now + s(30)));
        assert_eq!(plan(now, std::iter::empty()), (Vec::new(), None));
    }
}
