//! `istio.v1.auth.IstioCertificateService/CreateCertificate`: authenticate the node by its
//! bearer token (`node_auth`), check it may hold the identity its CSR asks for, sign.

use std::{sync::Arc, time::Duration};

use mesh_api::{
    ca::{
        istio_certificate_service_server::IstioCertificateService, IstioCertificateRequest,
        IstioCertificateResponse,
    },
    identity::Identity,
};
use tonic::{Request, Response, Status};

use crate::{authz, ca::CertificateAuthority, node_auth::NodeAuthenticator, source::Snapshots};

pub struct CaService {
    pub ca: Arc<CertificateAuthority>,
    pub node_auth: Arc<NodeAuthenticator>,
    /// What the controller knows: which workloads run where.
    pub snapshots: Snapshots,
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
        let node = self.node_auth.authenticate(request.metadata()).await?;
        let req = request.into_inner();
        let identity = requested_identity(&req.csr)?;
        let snapshot = self.snapshots.borrow().clone();
        if let Err(reason) = authz::entitled(&snapshot.objects, &self.trust_domain, &node, &identity) {
            tracing::warn!(%node, %identity, %reason, "certificate refused");
            return Err(Status::permission_denied(reason));
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
