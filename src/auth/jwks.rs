//! Cognito's signing keys (a JWKS document), cached.
//!
//! - A token with an unknown `kid` triggers a refresh (keys rotate), but at most once per
//!   `min_refresh_interval`: a flood of made-up `kid`s costs one request per interval, not one per
//!   token.
//! - A failed refresh keeps the keys we have: a JWKS endpoint that is briefly down does not
//!   turn away users whose keys are cached.
//! - A refresh replaces the whole set, so a key Cognito removed stops being accepted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use tokio::sync::{Mutex, RwLock};

use super::AuthFailure;

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
}

pub struct JwksCache {
    url: String,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    /// Serialises refreshes and remembers when the last one was tried.
    last_attempt: Mutex<Option<Instant>>,
    min_refresh_interval: Duration,
    max_age: Duration,
}

/// Outcome of a fetch, for metrics and logs.
#[derive(Debug)]
pub enum FetchError {
    Http(String),
    Status(u16),
    Body(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Http(e) => write!(f, "request failed: {e}"),
            FetchError::Status(s) => write!(f, "HTTP status {s}"),
            FetchError::Body(e) => write!(f, "not a JWKS document: {e}"),
        }
    }
}

impl JwksCache {
    pub fn new(
        url: String,
        timeout: Duration,
        min_refresh_interval: Duration,
        max_age: Duration,
    ) -> Result<Self, String> {
        // reqwest is built without a bundled crypto provider; use ring (already linked for
        // PostgreSQL TLS). Installing twice is harmless.
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the JWKS HTTP client: {e}"))?;
        Ok(JwksCache {
            url,
            http,
            keys: RwLock::new(Keys::default()),
            last_attempt: Mutex::new(None),
            min_refresh_interval,
            max_age,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key for `kid`, refreshing the set when it is unknown or old (rate limited).
    pub async fn key(&self, kid: &str) -> Result<DecodingKey, AuthFailure> {
        {
            let keys = self.keys.read().await;
            let fresh = keys.fetched_at.is_some_and(|t| t.elapsed() < self.max_age);
            if let Some(key) = keys.by_kid.get(kid)
                && fresh
            {
                return Ok(key.clone());
            }
        }
        self.refresh().await;
        let keys = self.keys.read().await;
        match keys.by_kid.get(kid) {
            Some(key) => Ok(key.clone()),
            None if keys.fetched_at.is_none() => Err(AuthFailure::JwksUnavailable),
            None => Err(AuthFailure::UnknownKey),
        }
    }

    /// Fetches the set unless a fetch was tried within `min_refresh_interval`.
    async fn refresh(&self) {
        let mut last = self.last_attempt.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.min_refresh_interval) {
            return;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(set) => {
                let mut by_kid = HashMap::new();
                for jwk in &set.keys {
                    let Some(kid) = jwk.common.key_id.clone() else {
                        continue;
                    };
                    match DecodingKey::from_jwk(jwk) {
                        Ok(key) => {
                            by_kid.insert(kid, key);
                        }
                        Err(e) => tracing::warn!(%kid, error = %e, "skipping unusable JWKS key"),
                    }
                }
                tracing::info!(url = %self.url, keys = by_kid.len(), "JWKS refreshed");
                let mut keys = self.keys.write().await;
                keys.by_kid = by_kid;
                keys.fetched_at = Some(Instant::now());
            }
            Err(error) => {
                tracing::warn!(url = %self.url, %error, "JWKS refresh failed; keeping the cached keys");
            }
        }
    }

    async fn fetch(&self) -> Result<JwkSet, FetchError> {
        let response = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        serde_json::from_slice(&body).map_err(|e| FetchError::Body(e.to_string()))
    }
}
