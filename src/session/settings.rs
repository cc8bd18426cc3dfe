//! `[timeouts]`: how long a socket may stay silent, unauthenticated or stalled.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::values::{InvalidSetting, millis, require};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// A socket that sends nothing (not even a pong) for this long is closed.
    #[serde(rename = "idle_ms", with = "millis")]
    pub idle: Duration,
    #[serde(rename = "ping_interval_ms", with = "millis")]
    pub ping_interval: Duration,
    /// A socket with output pending that accepts no byte for this long is closed at once.
    #[serde(rename = "write_stall_ms", with = "millis")]
    pub write_stall: Duration,
    /// A socket with no authenticated document for this long is closed.
    #[serde(rename = "auth_ms", with = "millis")]
    pub auth: Duration,
}

impl Timeouts {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        require(
            !self.write_stall.is_zero() && !self.auth.is_zero(),
            "timeouts.write_stall_ms",
            "write_stall_ms and auth_ms must be > 0",
        )?;
        require(
            !self.ping_interval.is_zero() && self.ping_interval < self.idle,
            "timeouts.ping_interval_ms",
            "must be > 0 and shorter than timeouts.idle_ms",
        )
    }
}
