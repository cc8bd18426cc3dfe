//! `[documents]`: when a document loads, forgets silent awareness clients, goes to rest, and
//! unloads.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::BackoffPolicy;
use crate::values::{InvalidSetting, millis, require};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentSettings {
    /// A document with no attachment stays loaded this long, for a reconnect.
    #[serde(rename = "unload_grace_ms", with = "millis")]
    pub unload_grace: Duration,
    /// A load from the store that takes longer fails the joins waiting for it.
    #[serde(rename = "load_timeout_ms", with = "millis")]
    pub load_timeout: Duration,
    /// First wait between two attempts of a failing load; doubles up to `load_retry_max`.
    #[serde(rename = "load_retry_initial_ms", with = "millis")]
    pub load_retry_initial: Duration,
    #[serde(rename = "load_retry_max_ms", with = "millis")]
    pub load_retry_max: Duration,
    /// An awareness client that says nothing for this long is removed.
    #[serde(rename = "awareness_timeout_ms", with = "millis")]
    pub awareness_timeout: Duration,
    /// A document that received no update for this long keeps only its encoded state
    /// (`DocumentState::rest`); zero: never.
    #[serde(rename = "rest_after_ms", with = "millis")]
    pub rest_after: Duration,
}

impl DocumentSettings {
    /// How a failing load is retried within `load_timeout`.
    pub fn load_retry(&self) -> BackoffPolicy {
        BackoffPolicy::new(self.load_retry_initial, self.load_retry_max)
    }

    pub fn validate(&self) -> Result<(), InvalidSetting> {
        require(
            !self.load_retry_initial.is_zero() && self.load_retry_max >= self.load_retry_initial,
            "documents.load_retry_max_ms",
            "load_retry_initial_ms must be > 0 and load_retry_max_ms >= load_retry_initial_ms",
        )?;
        require(
            self.awareness_timeout >= Duration::from_secs(1),
            "documents.awareness_timeout_ms",
            "must be at least 1000",
        )
    }
}
