//! How often a document may be reloaded after an internal fault.
//!
//! A reload closes every connection of the document, so a client able to trigger one at will
//! could keep kicking everyone. The record is process-wide (a reload stops the document actor,
//! so the actor cannot keep it) and holds one instant per recently reloaded document.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// At most one reload per document in this interval.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(60);

static LAST_RELOAD: Mutex<Option<HashMap<Arc<str>, Instant>>> = Mutex::new(None);

/// Whether `document` may reload now; if so, the reload is recorded.
pub fn may_reload(document: &Arc<str>) -> bool {
    let now = Instant::now();
    // A poisoned lock only means another thread panicked while holding it; the map is still
    // a valid map.
    let mut guard = LAST_RELOAD.lock().unwrap_or_else(|e| e.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    map.retain(|_, at| now.duration_since(*at) < RELOAD_INTERVAL);
    if map.contains_key(document) {
        return false;
    }
    map.insert(Arc::clone(document), now);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_reloads_once_per_interval_and_others_are_independent() {
        let a: Arc<str> = Arc::from("reload-test-a");
        let b: Arc<str> = Arc::from("reload-test-b");
        assert!(may_reload(&a));
        assert!(!may_reload(&a));
        assert!(may_reload(&b));
    }
}
