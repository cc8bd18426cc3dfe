//! `[store]`: which store keeps documents, how to reach PostgreSQL, and the write path's
//! batching, retry and compaction.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{PgOptions, SslMode};
use crate::values::{InvalidSetting, Secret, SecretUrl, millis, optional, require};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Auto,
    Embedded,
    Memory,
    Postgres,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub kind: StoreKind,
    pub path: PathBuf,
    #[serde(with = "optional")]
    pub database_url: Option<SecretUrl>,
    #[serde(with = "optional")]
    pub database_password: Option<Secret>,
    #[serde(with = "optional")]
    pub sslmode: Option<SslMode>,
    #[serde(with = "optional")]
    pub ssl_root_cert: Option<PathBuf>,
    pub pool_size: usize,
    #[serde(rename = "connect_timeout_ms", with = "millis")]
    pub connect_timeout: Duration,
    #[serde(rename = "startup_timeout_ms", with = "millis")]
    pub startup_timeout: Duration,
    #[serde(with = "optional")]
    pub legacy_table: Option<String>,
    pub max_batch: usize,
    pub max_pending_writes: usize,
    #[serde(rename = "retry_initial_ms", with = "millis")]
    pub retry_initial: Duration,
    #[serde(rename = "retry_max_ms", with = "millis")]
    pub retry_max: Duration,
    pub compact_after_updates: u64,
    #[serde(rename = "compact_min_interval_ms", with = "millis")]
    pub compact_min_interval: Duration,
}

impl StoreSettings {
    /// The store these settings select, with `auto` resolved: PostgreSQL as soon as a URL is
    /// given (the task definition's DATABASE_URL), else the embedded file.
    pub fn kind(&self) -> StoreKind {
        match self.kind {
            StoreKind::Auto if self.database_url.is_none() => StoreKind::Embedded,
            StoreKind::Auto => StoreKind::Postgres,
            other => other,
        }
    }

    /// How to reach PostgreSQL; `None` unless a URL is set.
    pub fn pg_options(&self) -> Option<PgOptions> {
        Some(PgOptions {
            url: self.database_url.as_ref()?.expose().to_string(),
            password: self
                .database_password
                .as_ref()
                .map(|p| p.expose().to_string()),
            sslmode: self.sslmode,
            ssl_root_cert: self.ssl_root_cert.clone(),
            pool_size: self.pool_size,
            connect_timeout: self.connect_timeout,
            legacy_table: self.legacy_table.clone(),
            history: crate::store::HistoryPolicy::default(),
        })
    }

    pub fn validate(&self) -> Result<(), InvalidSetting> {
        match (self.kind, self.database_url.is_some()) {
            (StoreKind::Postgres, false) => {
                require(
                    false,
                    "store.database_url",
                    "must be set when store.kind = \"postgres\"",
                )?;
            }
            (StoreKind::Embedded | StoreKind::Memory, true) => require(
                false,
                "store.kind",
                "is embedded/memory while store.database_url (DATABASE_URL) is set; use \"auto\" or \"postgres\"",
            )?,
            _ => {}
        }
        require(self.pool_size > 0, "store.pool_size", "must be at least 1")?;
        require(
            !self.connect_timeout.is_zero(),
            "store.connect_timeout_ms",
            "must be at least 1",
        )?;
        require(
            self.kind() != StoreKind::Embedded || !self.path.as_os_str().is_empty(),
            "store.path",
            "must name a file for the embedded store",
        )?;
        require(self.max_batch > 0, "store.max_batch", "must be at least 1")?;
        require(
            self.max_pending_writes >= self.max_batch,
            "store.max_pending_writes",
            "must be at least store.max_batch",
        )?;
        require(
            !self.retry_initial.is_zero() && self.retry_max >= self.retry_initial,
            "store.retry_max_ms",
            "retry_initial_ms must be > 0 and retry_max_ms >= retry_initial_ms",
        )?;
        require(
            self.compact_after_updates > 0,
            "store.compact_after_updates",
            "must be at least 1",
        )
    }
}

impl SslMode {
    /// libpq's name of the mode.
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl std::str::FromStr for SslMode {
    type Err = &'static str;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SslMode::parse(text)
            .ok_or("must be one of disable, prefer, require, verify-ca, verify-full")
    }
}

impl Serialize for SslMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}
