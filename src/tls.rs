//! One process-wide rustls crypto provider (ring), for the clients that do not bring their own
//! (reqwest for JWKS, redis for `rediss://`). PostgreSQL TLS passes ring explicitly.

/// Idempotent: installing a second time is a no-op.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
