//! `[history]`: what the store keeps of a document's past, and automatic versions.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::HistoryPolicy;
use crate::values::{InvalidSetting, millis, require};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySettings {
    /// How long every update is kept; 0: no history (folded updates are deleted).
    pub retention_secs: u64,
    /// A version every this much editing activity; zero: none.
    #[serde(rename = "auto_version_ms", with = "millis")]
    pub auto_version: Duration,
    /// Edits of one user further apart than this are separate entries of the activity.
    #[serde(rename = "activity_gap_ms", with = "millis")]
    pub activity_gap: Duration,
}

impl HistorySettings {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        require(
            !self.activity_gap.is_zero(),
            "history.activity_gap_ms",
            "must be > 0",
        )?;
        require(
            self.auto_version.is_zero() || self.retention_secs > 0,
            "history.auto_version_ms",
            "needs history.retention_secs > 0 (automatic versions are part of the history)",
        )
    }

    pub fn policy(&self) -> HistoryPolicy {
        HistoryPolicy {
            retention: (self.retention_secs > 0).then(|| Duration::from_secs(self.retention_secs)),
        }
    }
}
