//! In-memory store for unit tests and `store.kind = "memory"`. Same semantics as the durable
//! stores, including fencing and folding, so tests of the layers above mean something.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{
    AppendItem, CompactOutcome, DocumentInfo, Store, StoreError, StoredDocument, check_fence,
    fold_updates,
};

#[derive(Debug, Default)]
struct Entry {
    snapshot: Option<Vec<u8>>,
    fence: u64,
    issued_fence: u64,
    log: Vec<Vec<u8>>,
    updated_at_ms: i64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    docs: Mutex<HashMap<String, Entry>>,
    /// Fault injection for tests of the retry path: while set, every append fails.
    failing: AtomicBool,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
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
        entry.snapshot = Some(folded);
        entry.log.clear();
        entry.fence = fence;
        entry.updated_at_ms = now_ms();
        Ok(outcome)
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
        entry.snapshot = None;
        entry.log.clear();
        entry.fence = 0;
        Ok(existed)
    }

    async fn next_fence(&self, name: &str) -> Result<u64, StoreError> {
        let mut docs = self.docs.lock();
        let entry = docs.entry(name.to_string()).or_default();
        entry.issued_fence = entry.issued_fence.max(entry.fence) + 1;
        Ok(entry.issued_fence)
    }
}
