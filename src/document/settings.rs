//! `[documents]`: when a document loads, forgets silent awareness clients, and unloads.

use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    /// An awareness client that says nothing for this long is removed.
    #[serde(rename = "awareness_timeout_ms", with = "millis")]
    pub awareness_timeout: Duration,
}

impl DocumentSettings {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        require(
            self.awareness_timeout >= Duration::from_secs(1),
            "documents.awareness_timeout_ms",
            "must be at least 1000",
        )
    }
}
