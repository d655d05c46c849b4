//! `istio.v1.auth.IstioCertificateService/CreateCertificate`: authenticate the node by its
//! bearer token, check it may hold the identity its CSR asks for, sign.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use mesh_api::{
    ca::{
        istio_certificate_service_server::IstioCertificateService, IstioCertificateRequest,
        IstioCertificateResponse,
    },
    identity::Identity,
    objects::Object,
};
use tonic::{Request, Response, Status};

use crate::{authz, ca::CertificateAuthority};

/// The workloads known to the controller, refreshed from the config directory.
#[derive(Default)]
pub struct Inventory {
    pub objects: Vec<Object>,
    /// The last error reading the directory; the previous objects stay in force.
    pub error: Option<String>,
}

pub struct CaService {
    pub ca: Arc<CertificateAuthority>,
    pub tokens: authz::NodeTokens,
    pub inventory: Arc<RwLock<Inventory>>,
    pub trust_domain: String,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("missing `authorization: Bearer <node token>` metadata")
            })?;
        let node = self
            .tokens
            .node_for(token)
            .ok_or_else(|| Status::unauthenticated("unknown node token: check the node's --ca-token-file"))?
            .to_string();
        let req = request.into_inner();
        let identity = requested_identity(&req.csr)?;
        {
            let inventory = self.inventory.read().unwrap_or_else(|p| p.into_inner());
            if let Err(reason) = authz::entitled(&inventory.objects, &self.trust_domain, &node, &identity) {
                tracing::warn!(%node, %identity, %reason, "certificate refused");
                return Err(Status::permission_denied(reason));
            }
        }
        let ttl = match u64::try_from(req.validity_duration) {
            Ok(0) | Err(_) => self.default_ttl,
            Ok(secs) => Duration::from_secs(secs).min(self.max_ttl),
        };
        let chain = self
            .ca
            .sign(&req.csr, &identity, ttl)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(%node, %identity, ttl_secs = ttl.as_secs(), "certificate issued");
        Ok(Response::new(IstioCertificateResponse { cert_chain: chain }))
    }
}

/// The one SPIFFE URI SAN of a CSR: the identity asked for (authorised separately).
fn requested_identity(csr_pem: &str) -> Result<Identity, Status> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| Status::invalid_argument(format!("the CSR is invalid: {e}")))?;
    let uris: Vec<&str> = csr
        .params
        .subject_alt_names
        .iter()
        .filter_map(|s| match s {
            rcgen::SanType::URI(u) => Some(u.as_str()),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [one] => one
            .parse()
            .map_err(|e: mesh_api::identity::InvalidIdentity| Status::invalid_argument(e.to_string())),
        _ => Err(Status::invalid_argument(format!(
            "the CSR must carry exactly one URI SAN (the SPIFFE ID), it has {}",
            uris.len()
        ))),
    }
}
