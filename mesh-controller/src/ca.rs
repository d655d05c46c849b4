//! The certificate authority: loads (or, standalone, generates) the signing key pair and
//! issues X.509-SVIDs: a URI SAN with the SPIFFE ID the caller is entitled to, whatever the
//! CSR asked for. Only the CSR's public key is used, after its signature (proof of
//! possession) has been checked.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use mesh_api::identity::Identity;
use rcgen::{
    string::Ia5String, BasicConstraints, CertificateParams, CertificateSigningRequestParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("CA material in {}: {message}", dir.display())]
    Material { dir: PathBuf, message: String },
    #[error("the CSR is invalid: {0}")]
    Csr(String),
    #[error("signing failed: {0}")]
    Sign(#[from] rcgen::Error),
}

/// The signing side of the mesh's PKI.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    /// Certificates between the signing certificate and the root, signing certificate
    /// first (empty when the signing certificate is itself the root).
    intermediates: Vec<String>,
    /// Every trusted root, PEM (one during normal operation, two during a rotation).
    pub root_bundle: String,
}

const FILES: [&str; 4] = ["ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"];

impl CertificateAuthority {
    /// Loads `dir` (Istio `cacerts` layout) or, when it holds no key, generates a root there.
    pub fn load_or_generate(dir: &Path) -> Result<Self, Error> {
        let io = |path: PathBuf| move |source| Error::Io { path, source };
        if !dir.join("ca-key.pem").exists() {
            fs::create_dir_all(dir).map_err(io(dir.into()))?;
            let (cert, key) = generate_root("Trellis root CA")?;
            for (name, pem) in [
                ("ca-cert.pem", &cert),
                ("ca-key.pem", &key),
                ("root-cert.pem", &cert),
                ("cert-chain.pem", &cert),
            ] {
                write_private(&dir.join(name), pem).map_err(io(dir.join(name)))?;
            }
            tracing::info!(dir = %dir.display(), "generated a self-signed root CA");
        }
        let read = |name: &str| fs::read_to_string(dir.join(name)).map_err(io(dir.join(name)));
        let [cert, key, roots, chain] = FILES.map(read);
        let (cert, key, roots) = (cert?, key?, roots?);
        let material = |message: String| Error::Material {
            dir: dir.into(),
            message,
        };
        let key = KeyPair::from_pem(&key).map_err(|e| material(format!("ca-key.pem: {e}")))?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert, key).map_err(|e| material(format!("ca-cert.pem: {e}")))?;
        // cert-chain.pem runs from ca-cert.pem to the root; what lies between is sent along.
        let chain = chain.unwrap_or_default();
        let mut intermediates: Vec<String> = split_pem(&chain);
        let root_set = split_pem(&roots);
        if root_set.is_empty() {
            return Err(material("root-cert.pem holds no certificate".into()));
        }
        intermediates.retain(|c| !root_set.contains(c));
        Ok(Self {
            issuer,
            intermediates,
            root_bundle: roots,
        })
    }

    /// Issues a certificate for `identity` to the key in `csr_pem`, valid for `ttl`.
    /// Returns the chain as Istio does: leaf, intermediates, root bundle.
    pub fn sign(&self, csr_pem: &str, identity: &Identity, ttl: Duration) -> Result<Vec<String>, Error> {
        let csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| Error::Csr(e.to_string()))?;
        let mut leaf = CertificateParams::default();
        leaf.distinguished_name = DistinguishedName::new();
        let uri = Ia5String::try_from(identity.to_string()).map_err(|e| Error::Csr(e.to_string()))?;
        leaf.subject_alt_names = vec![SanType::URI(uri)];
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        leaf.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        // A minute of backdating absorbs clock skew between nodes.
        leaf.not_before = now - time::Duration::minutes(1);
        leaf.not_after = now + time::Duration::try_from(ttl).unwrap_or(time::Duration::DAY);
        leaf.serial_number = Some(random_serial());
        let cert = leaf.signed_by(&csr.public_key, &self.issuer)?;
        let mut chain = vec![cert.pem()];
        chain.extend(self.intermediates.iter().cloned());
        chain.push(self.root_bundle.clone());
        Ok(chain)
    }

    /// A certificate for the CA service itself (DNS SAN `server_name`), with its key.
    pub fn serving_cert(&self, server_name: &str) -> Result<(String, String), Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![server_name.to_string()])?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, server_name);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + time::Duration::days(365);
        params.serial_number = Some(random_serial());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut chain = cert.pem();
        for c in &self.intermediates {
            chain.push_str(c);
        }
        Ok((chain, key.serialize_pem()))
    }
}

/// A new self-signed root: (certificate PEM, key PEM).
pub fn generate_root(common_name: &str) -> Result<(String, String), Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Trellis");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(3650);
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // The process-wide provider's RNG; positive serial (top bit clear), RFC 5280 size.
    let _ = rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes);
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

/// Splits a PEM bundle into one PEM string per certificate.
pub fn split_pem(bundle: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    bundle
        .split_inclusive(END)
        .filter(|c| c.contains("-----BEGIN CERTIFICATE-----"))
        .map(|c| format!("{}\n", c.trim()))
        .collect()
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn csr_for(uri: &str) -> String {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = vec![SanType::URI(Ia5String::try_from(uri).unwrap())];
        p.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn issues_the_authorised_identity_not_the_requested_one() {
        let dir = std::env::temp_dir().join(format!("trellis-ca-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let ca = CertificateAuthority::load_or_generate(&dir).unwrap();
        let id = Identity::new("cluster.local", "shop", "web-sa");
        let chain = ca
            .sign(
                &csr_for("spiffe://cluster.local/ns/kube-system/sa/admin"),
                &id,
                Duration::from_secs(600),
            )
            .unwrap();
        assert_eq!(chain.len(), 2, "leaf + root bundle");
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(chain[0].as_bytes())
            .map(|d: rustls::pki_types::CertificateDer<'static>| d.to_vec())
            .unwrap();
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|g| g.to_string())
            .collect();
        assert_eq!(sans, ["URI(spiffe://cluster.local/ns/shop/sa/web-sa)"]);
        let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime, 660, "ttl plus the minute of backdating");
        // Reloading the persisted material gives the same root.
        let again = CertificateAuthority::load_or_generate(&dir).unwrap();
        assert_eq!(again.root_bundle, ca.root_bundle);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn rejects_garbage_csrs() {
        let dir = std::env::temp_dir().join(format!("trellis-ca-test2-{}", std::process::id()));
        let ca = CertificateAuthority::load_or_generate(&dir).unwrap();
        let id = Identity::new("cluster.local", "shop", "web-sa");
        assert!(matches!(
            ca.sign("not a csr", &id, Duration::from_secs(60)),
            Err(Error::Csr(_))
        ));
        let _ = fs::remove_dir_all(&dir);
    }
}
