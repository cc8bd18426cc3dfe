//! In-memory store for unit tests and `store.kind = "memory"`. Same semantics as the durable
//! stores, including fencing and folding, so tests of the layers above mean something.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{
    AppendItem, CompactOutcome, DocumentInfo, History, HistoryPoint, HistoryPolicy, HistoryRow,
    Store, StoreError, StoredDocument, Version, VersionInfo, check_fence, fold_updates,
};

#[derive(Debug, Default)]
struct Entry {
    snapshot: Option<Vec<u8>>,
    fence: u64,
    issued_fence: u64,
    log: Vec<Vec<u8>>,
    updated_at_ms: i64,
    /// When the snapshot was last written.
    snapshot_at_ms: i64,
    /// Every row still kept, folded or not (only the unfolded ones without history).
    rows: Vec<HistoryRow>,
    /// The state older than `rows`, once history was kept (see the SQLite store).
    history_base: Option<(Vec<u8>, i64)>,
    versions: Vec<Version>,
}

use super::now_ms;

#[derive(Debug, Default)]
pub struct MemoryStore {
    docs: Mutex<HashMap<String, Entry>>,
    history: HistoryPolicy,
    next_seq: std::sync::atomic::AtomicI64,
    /// Fault injection for tests of the retry path: while set, every append fails.
    failing: AtomicBool,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that keeps history as `history` says.
    pub fn with_history(history: HistoryPolicy) -> Self {
        MemoryStore {
            history,
            ..Self::default()
        }
    }

    /// While `true`, appends fail as a down database would (a test hook, not a mock of anything).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn load(&self, name: &str) -> Result<StoredDocument, StoreError> {
        let docs = self.docs.lock();
        Ok(docs
            .get(name)
            .map(|e| StoredDocument {
                snapshot: e.snapshot.clone(),
                updates: e.log.clone(),
                fence: e.fence,
            })
            .unwrap_or_default())
    }

    async fn append(&self, batch: &[AppendItem]) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("injected failure".into()));
        }
        let mut docs = self.docs.lock();
        let now = now_ms();
        for item in batch {
            let entry = docs.entry(item.name.to_string()).or_default();
            entry.log.push(item.update.to_vec());
            entry.rows.push(HistoryRow {
                seq: self.next_seq.fetch_add(1, Ordering::SeqCst) + 1,
                at_ms: now,
                author: item.author.to_string(),
                update: item.update.to_vec(),
            });
            entry.updated_at_ms = now;
        }
        Ok(())
    }

    async fn log_len(&self, name: &str) -> Result<u64, StoreError> {
        Ok(self.docs.lock().get(name).map_or(0, |e| e.log.len() as u64))
    }

    async fn compact(&self, name: &str, fence: u64) -> Result<CompactOutcome, StoreError> {
        let mut docs = self.docs.lock();
        let entry = docs.entry(name.to_string()).or_default();
        check_fence(entry.fence, fence)?;
        let folded = fold_updates(
            entry.snapshot.as_deref(),
            entry.log.iter().map(Vec::as_slice),
        )
        .map_err(|reason| StoreError::Corrupt {
            name: name.to_string(),
            reason,
        })?;
        let outcome = CompactOutcome {
            folded_updates: entry.log.len() as u64,
            snapshot_bytes: folded.len() as u64,
        };
        let now = now_ms();
        match self.history.retention {
            Some(retention) => {
                if entry.history_base.is_none() {
                    entry.history_base = Some((
                        entry.snapshot.clone().unwrap_or_else(|| vec![0, 0]),
                        if entry.snapshot.is_some() {
                            entry.snapshot_at_ms
                        } else {
                            0
                        },
                    ));
                }
                prune(entry, name, now - retention.as_millis() as i64)?;
            }
            None => entry.rows.clear(),
        }
        entry.snapshot = Some(folded);
        entry.log.clear();
        entry.fence = fence;
        entry.updated_at_ms = now;
        entry.snapshot_at_ms = now;
        Ok(outcome)
    }

    async fn history(&self, name: &str, until: HistoryPoint) -> Result<History, StoreError> {
        let until = match until {
            HistoryPoint::Now => i64::MAX,
            HistoryPoint::At(ms) => ms,
        };
        let docs = self.docs.lock();
        let Some(entry) = docs.get(name) else {
            return Ok(History::default());
        };
        let (base, base_as_of_ms) = match &entry.history_base {
            Some((state, as_of)) => (Some(state.clone()), *as_of),
            None => (entry.snapshot.clone(), entry.snapshot_at_ms),
        };
        Ok(History {
            base,
            base_as_of_ms,
            rows: entry
                .rows
                .iter()
                .filter(|r| r.at_ms <= until)
                .cloned()
                .collect(),
        })
    }

    async fn history_range(
        &self,
        name: &str,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        let docs = self.docs.lock();
        Ok(docs.get(name).map_or_else(Vec::new, |e| {
            e.rows
                .iter()
                .filter(|r| r.at_ms >= from_ms && r.at_ms <= to_ms)
                .take(limit)
                .cloned()
                .collect()
        }))
    }

    async fn put_version(&self, name: &str, version: &Version) -> Result<(), StoreError> {
        let mut docs = self.docs.lock();
        let entry = docs.entry(name.to_string()).or_default();
        if entry.versions.iter().any(|v| v.info.id == version.info.id) {
            return Err(StoreError::Backend("version id exists".into()));
        }
        entry.versions.push(version.clone());
        Ok(())
    }

    async fn versions(
        &self,
        name: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<VersionInfo>, StoreError> {
        let docs = self.docs.lock();
        let Some(entry) = docs.get(name) else {
            return Ok(Vec::new());
        };
        // Newest first; among equal instants, the later one made first.
        let mut listed: Vec<(usize, &Version)> = entry.versions.iter().enumerate().collect();
        listed.sort_by_key(|(made, v)| std::cmp::Reverse((v.info.at_ms, *made)));
        Ok(listed
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(_, v)| v.info.clone())
            .collect())
    }

    async fn version(&self, name: &str, id: &str) -> Result<Option<Version>, StoreError> {
        let docs = self.docs.lock();
        Ok(docs
            .get(name)
            .and_then(|e| e.versions.iter().find(|v| v.info.id == id).cloned()))
    }

    async fn list(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<DocumentInfo>, StoreError> {
        let docs = self.docs.lock();
        let mut found: Vec<DocumentInfo> = docs
            .iter()
            .filter(|(name, e)| {
                name.starts_with(prefix)
                    && name.as_str() > after
                    && (e.snapshot.is_some() || !e.log.is_empty())
            })
            .map(|(name, e)| DocumentInfo {
                name: name.clone(),
                bytes: (e.snapshot.as_ref().map_or(0, Vec::len)
                    + e.log.iter().map(Vec::len).sum::<usize>()) as u64,
                updated_at_ms: e.updated_at_ms,
            })
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found.truncate(limit);
        Ok(found)
    }

    async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let mut docs = self.docs.lock();
        let Some(entry) = docs.get_mut(name) else {
            return Ok(false);
        };
        let existed = entry.snapshot.is_some() || !entry.log.is_empty();
        let issued = entry.issued_fence.max(entry.fence);
        *entry = Entry {
            issued_fence: issued,
            ..Entry::default()
        };
        Ok(existed)
    }

    async fn next_fence(&self, name: &str) -> Result<u64, StoreError> {
        let mut docs = self.docs.lock();
        let entry = docs.entry(name.to_string()).or_default();
        entry.issued_fence = entry.issued_fence.max(entry.fence) + 1;
        Ok(entry.issued_fence)
    }
}

/// Folds the rows older than `cutoff` (all folded: compaction has run) into the history base,
/// and forgets them and the versions older than it.
fn prune(entry: &mut Entry, name: &str, cutoff: i64) -> Result<(), StoreError> {
    entry.versions.retain(|v| v.info.at_ms >= cutoff);
    let Some((base, as_of)) = &entry.history_base else {
        return Ok(());
    };
    let old: Vec<&HistoryRow> = entry.rows.iter().filter(|r| r.at_ms < cutoff).collect();
    if old.is_empty() || *as_of >= cutoff {
        return Ok(());
    }
    let folded =
        fold_updates(Some(base), old.iter().map(|r| r.update.as_slice())).map_err(|reason| {
            StoreError::Corrupt {
                name: name.to_string(),
                reason,
            }
        })?;
    entry.history_base = Some((folded, cutoff));
    entry.rows.retain(|r| r.at_ms >= cutoff);
    Ok(())
}
