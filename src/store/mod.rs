//! Where documents live between restarts.
//!
//! Every store has the same shape, chosen so a PostgreSQL store (append-only log + fenced
//! snapshot) fits beside the embedded one:
//! - `append` writes a *batch* of updates, possibly for many documents, in one transaction: the
//!   group committer ([`crate::persistence`]) relies on it to pay one fsync for many keystrokes;
//! - `load` returns the snapshot plus every logged update after it;
//! - `compact` folds a document's log into its snapshot and deletes what it folded, in one
//!   transaction, refusing a fencing token older than the one stored with the snapshot (the
//!   one rule, [`check_fence`], in `fencing.rs`).
//!
//! The fold happens *inside* the store transaction from what the store holds, not from a
//! caller's in-memory copy, so compaction can never delete a logged update it did not include
//! (in a cluster, other nodes append to the same log meanwhile).

mod fencing;
mod fold;
mod memory;
mod pg_tls;
mod postgres;
mod settings;
mod sqlite;

use async_trait::async_trait;
use thiserror::Error;

use fencing::check_fence;
pub use fold::{fold_updates, state_vector_of};
pub use memory::MemoryStore;
pub use pg_tls::SslMode;
pub use postgres::{PgOptions, PgStore};
pub use settings::{StoreKind, StoreSettings};
pub use sqlite::SqliteStore;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store I/O failed: {0}")]
    Backend(String),
    #[error("fencing token {offered} is older than the stored token {stored}")]
    Fenced { offered: u64, stored: u64 },
    #[error("stored data of `{name}` is corrupt: {reason}")]
    Corrupt { name: String, reason: String },
}

impl StoreError {
    /// Bounded metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Backend(_) => "backend",
            StoreError::Fenced { .. } => "fenced",
            StoreError::Corrupt { .. } => "corrupt",
        }
    }
}

/// One update to append to a document's log.
#[derive(Debug, Clone)]
pub struct AppendItem {
    pub name: std::sync::Arc<str>,
    /// A Yjs v1 update exactly as applied.
    pub update: bytes::Bytes,
    /// Who sent it: the token's `sub`, `anonymous`, or `api:<key name>` (kept for history).
    pub author: std::sync::Arc<str>,
}

/// Wall-clock ms since the Unix epoch: the instants stores record and history is read by.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The author of updates from connections without a token subject: one shared allocation, not
/// one per connection.
pub fn anonymous() -> std::sync::Arc<str> {
    static ANONYMOUS: std::sync::OnceLock<std::sync::Arc<str>> = std::sync::OnceLock::new();
    std::sync::Arc::clone(ANONYMOUS.get_or_init(|| std::sync::Arc::from("anonymous")))
}

/// What history keeps (`[history]`): with a retention, compaction keeps the updates it folds
/// (marked folded) and prunes those older than the retention into the document's history base;
/// without one, folded updates are deleted and there is no history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryPolicy {
    pub retention: Option<std::time::Duration>,
}

/// Up to where a history read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryPoint {
    /// Every update stored.
    Now,
    /// Updates acknowledged at or before this instant (ms since the Unix epoch).
    At(i64),
}

/// One stored update with when it was acknowledged (committed) and who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// Order of the log (increasing with commit order).
    pub seq: i64,
    pub at_ms: i64,
    pub author: String,
    pub update: Vec<u8>,
}

/// A document's history up to a point: `base` (everything older than the retention, folded;
/// `None` when nothing was pruned yet) and then every update after it, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub base: Option<Vec<u8>>,
    /// The instant `base` stands for (0: the beginning). Nothing before it can be shown.
    pub base_as_of_ms: i64,
    pub rows: Vec<HistoryRow>,
}

impl History {
    /// The base, then the rows: what rebuilds the document as it was at the point read.
    pub fn entries(&self) -> impl Iterator<Item = &[u8]> {
        self.base
            .iter()
            .map(Vec::as_slice)
            .chain(self.rows.iter().map(|r| r.update.as_slice()))
    }
}

/// A named version, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionInfo {
    pub id: String,
    pub name: String,
    /// The caller's JSON object, kept as given.
    pub meta: serde_json::Value,
    pub at_ms: i64,
    /// Who made it: a key name, `auto` for automatic versions, `restore` for pre-restore ones.
    pub author: String,
    pub auto: bool,
}

/// A version and the document's state (a Yjs v1 update) at it.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub info: VersionInfo,
    pub state: Vec<u8>,
}

/// What `load` returns: apply `snapshot` first, then `updates` in order.
#[derive(Debug, Default, Clone)]
pub struct StoredDocument {
    /// Yjs v1 state update of everything folded so far.
    pub snapshot: Option<Vec<u8>>,
    /// Log entries after the snapshot, oldest first.
    pub updates: Vec<Vec<u8>>,
    /// Fencing token of the last snapshot write (0 when never compacted).
    pub fence: u64,
}

impl StoredDocument {
    /// The snapshot (if any), then the log entries: what rebuilds the document, in order.
    pub fn entries(&self) -> impl Iterator<Item = &[u8]> {
        self.snapshot
            .iter()
            .chain(self.updates.iter())
            .map(Vec::as_slice)
    }
}

/// One stored document, as the document API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentInfo {
    pub name: String,
    /// Bytes stored: the snapshot plus every log entry after it.
    pub bytes: u64,
    /// Last write (append or compaction), in ms since the Unix epoch.
    pub updated_at_ms: i64,
}

/// Outcome of a compaction, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactOutcome {
    pub folded_updates: u64,
    pub snapshot_bytes: u64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short name for logs, metrics and `/health` ("embedded", "memory", "postgres").
    fn kind(&self) -> &'static str;

    async fn load(&self, name: &str) -> Result<StoredDocument, StoreError>;

    /// Writes every item in one transaction; returns only once it is durable.
    async fn append(&self, batch: &[AppendItem]) -> Result<(), StoreError>;

    /// Number of log entries of `name` not yet folded into its snapshot.
    async fn log_len(&self, name: &str) -> Result<u64, StoreError>;

    /// Folds the log of `name` into its snapshot. Refused with [`StoreError::Fenced`] when
    /// `fence` is older than the token stored with the snapshot.
    async fn compact(&self, name: &str, fence: u64) -> Result<CompactOutcome, StoreError>;

    /// A fencing token newer than any handed out for `name` before. A single node takes its own
    /// from the store; cluster nodes will take theirs from the Redis lease instead.
    async fn next_fence(&self, name: &str) -> Result<u64, StoreError>;

    /// Stored documents whose name starts with `prefix` and sorts after `after` (byte order),
    /// at most `limit` of them, in name order.
    async fn list(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<DocumentInfo>, StoreError>;

    /// Removes the document's snapshot and log (its fencing tokens stay, so they keep rising).
    /// `false` when nothing was stored under that name.
    async fn delete(&self, name: &str) -> Result<bool, StoreError>;

    /// The document's history up to `until`. Without a history policy the folded updates are
    /// gone: the base is the snapshot (as of its last compaction) and the rows are the log.
    async fn history(&self, name: &str, until: HistoryPoint) -> Result<History, StoreError>;

    /// Updates acknowledged in `[from_ms, to_ms]`, oldest first, at most `limit` (for
    /// attribution: a month of typing is millions of rows, more than one answer should hold).
    async fn history_range(
        &self,
        name: &str,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<HistoryRow>, StoreError>;

    /// Stores a version (its id is unique per document).
    async fn put_version(&self, name: &str, version: &Version) -> Result<(), StoreError>;

    /// Versions newest first, skipping `offset`, at most `limit`.
    async fn versions(
        &self,
        name: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<VersionInfo>, StoreError>;

    async fn version(&self, name: &str, id: &str) -> Result<Option<Version>, StoreError>;
}

/// The behaviour every `Store` must have, as a reusable check (the PostgreSQL integration tests
/// run it against a real server).
#[doc(hidden)]
pub mod contract;
