//! One rustls crypto provider for the whole process (decision 0010).
//!
//! async-nats is built with rustls' `ring` provider, and lash's HTTP stack (reqwest's
//! `rustls` feature) with `aws-lc-rs`. With both compiled into rustls, rustls cannot pick
//! a process default, and async-nats' `ClientConfig::builder()` panics at the first TLS
//! connection. Installing one default first fixes that for both: reqwest takes the
//! installed default too.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// Installs rustls' `ring` provider as the process default, unless a default is already
/// installed (then that one stays). Idempotent and safe to call from any thread; call it
/// before the first TLS connection (NATS or HTTPS) in a binary that links lash. Returns
/// the process default now in force.
pub fn install_crypto_provider() -> Arc<CryptoProvider> {
    // An `Err` means another default won the race or was installed before: keep it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match CryptoProvider::get_default() {
        Some(provider) => Arc::clone(provider),
        // Unreachable in practice: install_default either installed ring or found one.
        None => Arc::new(rustls::crypto::ring::default_provider()),
    }
}
