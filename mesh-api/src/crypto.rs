//! The TLS parameters every Trellis endpoint uses, defined once: rustls with aws-lc-rs,
//! TLS 1.3 suites only (so TLS 1.2 cannot be negotiated, even by libraries that enable it),
//! key exchange preferring the hybrid post-quantum X25519MLKEM768, falling back to X25519.

use rustls::crypto::{aws_lc_rs, CryptoProvider};

pub fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
            aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
            aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![aws_lc_rs::kx_group::X25519MLKEM768, aws_lc_rs::kx_group::X25519],
        ..aws_lc_rs::default_provider()
    }
}

/// Installs [`provider`] as the process default (used by tonic's TLS). Idempotent.
pub fn install_default() {
    let _ = provider().install_default();
}
