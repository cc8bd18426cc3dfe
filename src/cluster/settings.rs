//! `[cluster]`: Redis (leases, heartbeats, the relay streams) and their timings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::BackoffPolicy;
use crate::values::{InvalidSetting, SecretUrl, millis, optional, require, secs};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// `None`: a single node, no Redis.
    #[serde(with = "optional")]
    pub redis_url: Option<SecretUrl>,
    pub key_prefix: String,
    #[serde(rename = "lease_ttl_ms", with = "millis")]
    pub lease_ttl: Duration,
    #[serde(rename = "lease_renew_ms", with = "millis")]
    pub lease_renew: Duration,
    #[serde(rename = "heartbeat_ms", with = "millis")]
    pub heartbeat: Duration,
    pub stream_max_len: usize,
    #[serde(rename = "stream_ttl_secs", with = "secs")]
    pub stream_ttl: Duration,
    pub max_unpublished: usize,
    #[serde(rename = "relay_block_ms", with = "millis")]
    pub relay_block: Duration,
    #[serde(rename = "redis_timeout_ms", with = "millis")]
    pub redis_timeout: Duration,
    /// First wait before the relay retries a failing Redis; doubles up to `retry_max`.
    #[serde(rename = "retry_initial_ms", with = "millis")]
    pub retry_initial: Duration,
    #[serde(rename = "retry_max_ms", with = "millis")]
    pub retry_max: Duration,
}

impl ClusterSettings {
    /// How the relay's publisher and reader retry a failing Redis.
    pub fn retry(&self) -> BackoffPolicy {
        BackoffPolicy::new(self.retry_initial, self.retry_max)
    }

    /// The timings matter only on a cluster node (with a Redis URL).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.redis_url.is_none() {
            return Ok(());
        }
        require(
            !self.lease_renew.is_zero() && self.lease_renew * 2 < self.lease_ttl,
            "cluster.lease_renew_ms",
            "must be > 0 and less than half of cluster.lease_ttl_ms",
        )?;
        require(
            !self.relay_block.is_zero() && self.relay_block < Duration::from_millis(400),
            "cluster.relay_block_ms",
            "must be between 1 and 399 (below the Redis reply timeout)",
        )?;
        require(
            !self.heartbeat.is_zero() && self.stream_max_len > 0 && !self.redis_timeout.is_zero(),
            "cluster.heartbeat_ms",
            "heartbeat, stream length and timeouts must be > 0",
        )?;
        require(
            !self.retry_initial.is_zero() && self.retry_max >= self.retry_initial,
            "cluster.retry_max_ms",
            "retry_initial_ms must be > 0 and retry_max_ms >= retry_initial_ms",
        )
    }
}
