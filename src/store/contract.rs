//! The behaviour every `Store` must have, run against each implementation.

use std::sync::Arc;

use yrs::{GetString, Text, Transact};

use super::{AppendItem, HistoryPoint, Store, StoreError, Version, VersionInfo};

/// A Yjs update inserting `text` at the end of Y.Text "t", from its own client.
pub fn text_update(client: u64, text: &str) -> bytes::Bytes {
    let doc = yrs::Doc::with_client_id(client);
    let t = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    t.insert(&mut txn, 0, text);
    bytes::Bytes::from(txn.encode_update_v1())
}

/// The Y.Text "t" of a stored document.
pub fn render(stored: &super::StoredDocument) -> String {
    use yrs::updates::decoder::Decode;
    let doc = yrs::Doc::new();
    let t = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    for bytes in stored.snapshot.iter().chain(stored.updates.iter()) {
        txn.apply_update(yrs::Update::decode_v1(bytes).unwrap())
            .unwrap();
    }
    t.get_string(&txn)
}

fn item(name: &str, update: bytes::Bytes) -> AppendItem {
    AppendItem {
        name: Arc::from(name),
        update,
        author: Arc::from("anonymous"),
    }
}

/// The Y.Text "t" made by `entries`, in order.
pub fn render_entries<'a>(entries: impl Iterator<Item = &'a [u8]>) -> String {
    use yrs::updates::decoder::Decode;
    let doc = yrs::Doc::new();
    let t = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    for bytes in entries {
        txn.apply_update(yrs::Update::decode_v1(bytes).unwrap())
            .unwrap();
    }
    t.get_string(&txn)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn version(id: &str, at_ms: i64, state: Vec<u8>) -> Version {
    Version {
        info: VersionInfo {
            id: id.into(),
            name: format!("version {id}"),
            meta: serde_json::json!({"by": "contract"}),
            at_ms,
            author: "tester".into(),
            auto: false,
        },
        state,
    }
}

/// The history contract, on an empty store that keeps history for `retention` (a short one:
/// the test waits for it to pass). Authors and instants are kept; compaction keeps the rows;
/// a read up to an instant gives the document as it was; the retention folds only what is
/// older than it into the base, and drops only versions older than it.
pub async fn run_history(store: &dyn Store, retention: std::time::Duration) {
    let doc = "history";
    let by = |update, author: &str| AppendItem {
        name: Arc::from(doc),
        update,
        author: Arc::from(author),
    };
    store
        .append(&[by(text_update(1, "A"), "alice")])
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let between = now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    store
        .append(&[by(text_update(2, "B"), "bob")])
        .await
        .unwrap();

    let everything = store.history(doc, HistoryPoint::Now).await.unwrap();
    let authors: Vec<&str> = everything.rows.iter().map(|r| r.author.as_str()).collect();
    assert_eq!(authors, ["alice", "bob"]);
    assert!(everything.rows[0].at_ms <= between && everything.rows[1].at_ms > between);
    let at = |h: &super::History| render_entries(h.entries());
    assert_eq!(at(&everything).len(), 2);
    let then = store.history(doc, HistoryPoint::At(between)).await.unwrap();
    assert_eq!(at(&then), "A");

    // Compaction folds into the snapshot but keeps the rows.
    let fence = store.next_fence(doc).await.unwrap();
    assert_eq!(store.compact(doc, fence).await.unwrap().folded_updates, 2);
    let loaded = store.load(doc).await.unwrap();
    assert!(loaded.updates.is_empty() && loaded.snapshot.is_some());
    assert_eq!(store.log_len(doc).await.unwrap(), 0);
    assert_eq!(
        at(&store.history(doc, HistoryPoint::At(between)).await.unwrap()),
        "A",
        "still there after compaction"
    );
    let range = store.history_range(doc, 0, between, 10).await.unwrap();
    assert_eq!(range.len(), 1);
    assert_eq!(range[0].author, "alice");
    let first = store.history_range(doc, 0, i64::MAX, 1).await.unwrap();
    assert_eq!(first.len(), 1, "at most the limit, oldest first");
    assert_eq!(first[0].author, "alice");

    // Versions: newest first, by id, paged.
    let old_version = version(
        "v-old",
        now_ms() - 10,
        then.entries().next().unwrap().to_vec(),
    );
    store.put_version(doc, &old_version).await.unwrap();
    store
        .put_version(doc, &version("v-new", now_ms(), vec![0, 0]))
        .await
        .unwrap();
    let listed = store.versions(doc, 0, 10).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, ["v-new", "v-old"]);
    assert_eq!(listed[1].meta, serde_json::json!({"by": "contract"}));
    assert_eq!(store.versions(doc, 1, 10).await.unwrap().len(), 1);
    assert_eq!(
        store.version(doc, "v-old").await.unwrap(),
        Some(old_version.clone())
    );
    assert_eq!(store.version(doc, "nope").await.unwrap(), None);
    assert!(
        store.put_version(doc, &old_version).await.is_err(),
        "ids are unique"
    );

    // Past the retention: what is older is folded into the base and its rows and versions go;
    // what is newer stays.
    tokio::time::sleep(retention + std::time::Duration::from_millis(100)).await;
    let kept_version = version("v-kept", now_ms(), vec![0, 0]);
    store.put_version(doc, &kept_version).await.unwrap();
    store
        .append(&[by(text_update(3, "C"), "carol")])
        .await
        .unwrap();
    let fence = store.next_fence(doc).await.unwrap();
    store.compact(doc, fence).await.unwrap();
    let pruned = store.history(doc, HistoryPoint::Now).await.unwrap();
    let authors: Vec<&str> = pruned.rows.iter().map(|r| r.author.as_str()).collect();
    assert_eq!(authors, ["carol"], "only the rows within the retention");
    assert!(
        pruned.base_as_of_ms > between,
        "the base moved past the pruned rows"
    );
    assert_eq!(at(&pruned).len(), 3, "nothing of the content is lost");
    let ids: Vec<String> = store
        .versions(doc, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.id)
        .collect();
    assert_eq!(ids, ["v-kept"]);
    assert!(store.delete(doc).await.unwrap());
    assert!(store.versions(doc, 0, 10).await.unwrap().is_empty());
    assert!(
        store
            .history(doc, HistoryPoint::Now)
            .await
            .unwrap()
            .rows
            .is_empty()
    );
}

/// Runs the whole contract on an empty store; panics on the first broken rule.
pub async fn run(store: &dyn Store) {
    // Unknown document: empty.
    let empty = store.load("nothing").await.unwrap();
    assert!(empty.snapshot.is_none() && empty.updates.is_empty());

    // Appends for several documents in one batch land on the right logs, in order.
    store
        .append(&[
            item("a", text_update(1, "x")),
            item("b", text_update(2, "y")),
            item("a", text_update(3, "z")),
        ])
        .await
        .unwrap();
    let a = store.load("a").await.unwrap();
    assert_eq!(a.updates.len(), 2);
    assert_eq!(store.log_len("a").await.unwrap(), 2);
    let text = render(&a);
    assert!(text == "xz" || text == "zx", "{text}");
    assert_eq!(render(&store.load("b").await.unwrap()), "y");

    // Compaction folds the log into the snapshot and keeps the content.
    let fence = store.next_fence("a").await.unwrap();
    let outcome = store.compact("a", fence).await.unwrap();
    assert_eq!(outcome.folded_updates, 2);
    let a2 = store.load("a").await.unwrap();
    assert!(a2.snapshot.is_some());
    assert!(a2.updates.is_empty());
    assert_eq!(render(&a2), text);
    assert_eq!(a2.fence, fence);

    // New appends after compaction come back after the snapshot.
    store
        .append(&[item("a", text_update(4, "w"))])
        .await
        .unwrap();
    let a3 = store.load("a").await.unwrap();
    assert_eq!(a3.updates.len(), 1);
    assert_eq!(render(&a3).len(), 3);

    // Tokens are monotonic, and an older token is refused without touching the data.
    let newer = store.next_fence("a").await.unwrap();
    assert!(newer > fence);
    store.compact("a", newer).await.unwrap();
    match store.compact("a", fence).await {
        Err(StoreError::Fenced { offered, stored }) => {
            assert_eq!((offered, stored), (fence, newer));
        }
        other => panic!("stale token must be refused, got {other:?}"),
    }
    assert_eq!(render(&store.load("a").await.unwrap()).len(), 3);

    // Listing: by prefix, in name order, paged with `after`; sizes count snapshot and log.
    store
        .append(&[
            item("notes/2", text_update(6, "q")),
            item("notes/1", text_update(5, "p")),
            item("other", text_update(7, "r")),
        ])
        .await
        .unwrap();
    let names = |list: Vec<super::DocumentInfo>| -> Vec<String> {
        list.into_iter().map(|d| d.name).collect()
    };
    let notes = store.list("notes/", "", 10).await.unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for info in &notes {
        assert!(info.bytes > 0, "{info:?}");
        assert!((now_ms - info.updated_at_ms).abs() < 600_000, "{info:?}");
    }
    assert_eq!(names(notes), ["notes/1", "notes/2"]);
    assert_eq!(
        names(store.list("notes/", "notes/1", 10).await.unwrap()),
        ["notes/2"]
    );
    assert_eq!(names(store.list("", "", 2).await.unwrap()), ["a", "b"]);
    let a_info = store.list("a", "", 1).await.unwrap();
    assert_eq!(
        a_info[0].bytes,
        store
            .load("a")
            .await
            .unwrap()
            .entries()
            .map(|e| e.len() as u64)
            .sum::<u64>()
    );

    // Deleting removes the content and the listing; a fence after it is still newer.
    let before_delete = store.next_fence("notes/1").await.unwrap();
    assert!(store.delete("notes/1").await.unwrap());
    let gone = store.load("notes/1").await.unwrap();
    assert!(gone.snapshot.is_none() && gone.updates.is_empty());
    assert!(
        !store.delete("notes/1").await.unwrap(),
        "nothing left to delete"
    );
    assert_eq!(
        names(store.list("notes/", "", 10).await.unwrap()),
        ["notes/2"]
    );
    assert!(store.next_fence("notes/1").await.unwrap() > before_delete);
}

#[cfg(test)]
#[tokio::test]
async fn memory_store_keeps_the_contract() {
    run(&super::MemoryStore::new()).await;
}

#[cfg(test)]
const TEST_RETENTION: std::time::Duration = std::time::Duration::from_millis(400);

#[cfg(test)]
#[tokio::test]
async fn memory_store_keeps_the_history_contract() {
    let policy = super::HistoryPolicy {
        retention: Some(TEST_RETENTION),
    };
    let store = super::MemoryStore::with_history(policy);
    run(&store).await;
    run_history(&store, TEST_RETENTION).await;
}

#[cfg(test)]
#[tokio::test]
async fn sqlite_store_keeps_the_history_contract() {
    let dir = tempfile::tempdir().unwrap();
    let policy = super::HistoryPolicy {
        retention: Some(TEST_RETENTION),
    };
    let store = super::SqliteStore::open_with(&dir.path().join("h.db"), policy).unwrap();
    run(&store).await;
    run_history(&store, TEST_RETENTION).await;
}

#[cfg(test)]
#[tokio::test]
async fn sqlite_store_keeps_the_contract_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("z.db");
    {
        let store = super::SqliteStore::open(&path).unwrap();
        run(&store).await;
    }
    // Reopen: the data and the schema version are still there; migrations do not re-run.
    let store = super::SqliteStore::open(&path).unwrap();
    assert_eq!(render(&store.load("a").await.unwrap()).len(), 3);
    assert_eq!(render(&store.load("b").await.unwrap()), "y");
}

#[cfg(test)]
#[test]
fn fold_keeps_pending_updates() {
    // An update whose predecessor is missing stays pending; folding must not drop it.
    let doc = yrs::Doc::with_client_id(9);
    let t = doc.get_or_insert_text("t");
    let first = {
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, 0, "ab");
        txn.encode_update_v1()
    };
    let second = {
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, 2, "cd");
        txn.encode_update_v1()
    };
    let folded = super::fold_updates(None, [second.as_slice()]).unwrap();
    let complete = super::fold_updates(Some(&folded), [first.as_slice()]).unwrap();
    let stored = super::StoredDocument {
        snapshot: Some(complete),
        updates: vec![],
        fence: 0,
    };
    assert_eq!(render(&stored), "abcd");
    let _ = Transact::transact(&doc);
    let _ = t.get_string(&doc.transact());
}
