//! The embedded store: one SQLite file, so a laptop needs no services.
//!
//! WAL journal with `synchronous = FULL`: a commit is fsynced before `append` returns, which is
//! what lets us acknowledge an update as durable. One connection behind a mutex, used from
//! tokio's blocking pool; group commit upstream keeps the number of transactions low.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    AppendItem, CompactOutcome, DocumentInfo, History, HistoryPoint, HistoryPolicy, HistoryRow,
    Store, StoreError, StoredDocument, Version, VersionInfo, check_fence, fold_updates,
    state_vector_of,
};

mod history;

/// Schema versions, applied in order; `PRAGMA user_version` records the last one applied.
const MIGRATIONS: &[&str] = &[
    // 1: snapshot per document + append-only update log + issued fencing tokens.
    "CREATE TABLE snapshots (
         name TEXT PRIMARY KEY,
         state BLOB NOT NULL,
         state_vector BLOB NOT NULL,
         fence INTEGER NOT NULL,
         updated_at INTEGER NOT NULL
     );
     CREATE TABLE updates (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,
         name TEXT NOT NULL,
         data BLOB NOT NULL,
         created_at INTEGER NOT NULL
     );
     CREATE INDEX updates_by_name ON updates (name, seq);
     CREATE TABLE fences (
         name TEXT PRIMARY KEY,
         issued INTEGER NOT NULL
     );",
    // 2: history. Who sent each update; folded rows kept (with a history retention) instead of
    // deleted; the state older than the retention (history_bases); named versions.
    "ALTER TABLE updates ADD COLUMN author TEXT NOT NULL DEFAULT 'anonymous';
     ALTER TABLE updates ADD COLUMN folded INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX updates_by_name_time ON updates (name, created_at);
     CREATE TABLE history_bases (
         name TEXT PRIMARY KEY,
         state BLOB NOT NULL,
         as_of INTEGER NOT NULL
     );
     CREATE TABLE versions (
         name TEXT NOT NULL,
         id TEXT NOT NULL,
         label TEXT NOT NULL,
         meta TEXT NOT NULL,
         at INTEGER NOT NULL,
         author TEXT NOT NULL,
         auto INTEGER NOT NULL,
         state BLOB NOT NULL,
         PRIMARY KEY (name, id)
     );
     CREATE INDEX versions_by_time ON versions (name, at);",
];

pub(super) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

use super::now_ms;

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    history: HistoryPolicy,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, HistoryPolicy::default())
    }

    /// Like [`Self::open`], keeping history as `history` says.
    pub fn open_with(path: &Path, history: HistoryPolicy) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Backend(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = Connection::open(path).map_err(backend)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(backend)?;
        migrate(&conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            history,
        })
    }

    /// Runs `f` with the connection on the blocking pool, so SQLite's fsyncs never stall an
    /// async worker thread.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || f(&mut conn.lock()))
            .await
            .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(backend)? as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.unchecked_transaction().map_err(backend)?;
        tx.execute_batch(sql).map_err(backend)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn load(&self, name: &str) -> Result<StoredDocument, StoreError> {
        let name = name.to_string();
        self.with_conn(move |conn| {
            let tx = conn.transaction().map_err(backend)?;
            let (snapshot, fence) = tx
                .query_row(
                    "SELECT state, fence FROM snapshots WHERE name = ?1",
                    params![name],
                    |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()
                .map_err(backend)?
                .map_or((None, 0), |(s, f)| (Some(s), f as u64));
            let mut stmt = tx
                .prepare_cached(
                    "SELECT data FROM updates WHERE name = ?1 AND folded = 0 ORDER BY seq",
                )
                .map_err(backend)?;
            let updates = stmt
                .query_map(params![name], |r| r.get::<_, Vec<u8>>(0))
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)?;
            drop(stmt);
            tx.commit().map_err(backend)?;
            Ok(StoredDocument {
                snapshot,
                updates,
                fence,
            })
        })
        .await
    }

    async fn append(&self, batch: &[AppendItem]) -> Result<(), StoreError> {
        let batch = batch.to_vec();
        self.with_conn(move |conn| {
            let tx = conn.transaction().map_err(backend)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO updates (name, data, created_at, author) VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(backend)?;
                let now = now_ms();
                for item in &batch {
                    stmt.execute(params![&*item.name, &item.update[..], now, &*item.author])
                        .map_err(backend)?;
                }
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn list(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<DocumentInfo>, StoreError> {
        let (prefix, after) = (prefix.to_string(), after.to_string());
        self.with_conn(move |conn| {
            // SQLite compares TEXT bytewise (BINARY collation): names sort in byte order.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT name, SUM(bytes), MAX(at) FROM (
                         SELECT name, length(state) AS bytes, updated_at AS at FROM snapshots
                          WHERE name > ?2 AND substr(name, 1, length(?1)) = ?1
                         UNION ALL
                         SELECT name, length(data), created_at FROM updates
                          WHERE folded = 0 AND name > ?2 AND substr(name, 1, length(?1)) = ?1
                     ) GROUP BY name ORDER BY name LIMIT ?3",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![prefix, after, limit as i64], |r| {
                    Ok(DocumentInfo {
                        name: r.get(0)?,
                        bytes: r.get::<_, i64>(1)? as u64,
                        updated_at_ms: r.get(2)?,
                    })
                })
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)?;
            Ok(rows)
        })
        .await
    }

    async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.with_conn(move |conn| {
            let tx = conn.transaction().map_err(backend)?;
            let snapshots = tx
                .execute("DELETE FROM snapshots WHERE name = ?1", params![name])
                .map_err(backend)?;
            let updates = tx
                .execute("DELETE FROM updates WHERE name = ?1", params![name])
                .map_err(backend)?;
            tx.execute("DELETE FROM history_bases WHERE name = ?1", params![name])
                .map_err(backend)?;
            tx.execute("DELETE FROM versions WHERE name = ?1", params![name])
                .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(snapshots + updates > 0)
        })
        .await
    }

    async fn log_len(&self, name: &str) -> Result<u64, StoreError> {
        let name = name.to_string();
        self.with_conn(move |conn| {
            conn.query_row(
                "SELECT count(*) FROM updates WHERE name = ?1 AND folded = 0",
                params![name],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(backend)
        })
        .await
    }

    async fn compact(&self, name: &str, fence: u64) -> Result<CompactOutcome, StoreError> {
        // Read, fold, write: the fold (CPU work proportional to the document) runs without the
        // connection, so appends (acknowledgements) never wait behind it. The write checks that
        // nothing changed the snapshot meanwhile and deletes exactly the rows it folded.
        let owned = name.to_string();
        let (stored, log) = self
            .with_conn(move |conn| read_for_fold(conn, &owned))
            .await?;
        check_fence(stored.as_ref().map_or(0, |s| s.fence as u64), fence)?;
        if log.is_empty() {
            return Ok(CompactOutcome {
                folded_updates: 0,
                snapshot_bytes: stored.map_or(0, |s| s.state.len() as u64),
            });
        }
        let seen = stored.as_ref().map(SnapshotRow::version);
        let seqs: Vec<i64> = log.iter().map(|(seq, _)| *seq).collect();
        let folded = fold_off_thread(name, stored.map(|s| s.state), log).await?;
        let outcome = CompactOutcome {
            folded_updates: seqs.len() as u64,
            snapshot_bytes: folded.len() as u64,
        };
        let owned = name.to_string();
        let keep = self.history.retention.is_some();
        self.with_conn(move |conn| {
            write_fold(
                conn,
                &FoldWrite {
                    name: &owned,
                    fence,
                    seen,
                    folded: &folded,
                    seqs: &seqs,
                    keep,
                },
            )
        })
        .await?;
        if let Some(retention) = self.history.retention {
            history::prune(self, name, retention).await?;
        }
        Ok(outcome)
    }

    async fn history(&self, name: &str, until: HistoryPoint) -> Result<History, StoreError> {
        let name = name.to_string();
        self.with_conn(move |conn| history::read(conn, &name, until))
            .await
    }

    async fn history_range(
        &self,
        name: &str,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        let name = name.to_string();
        self.with_conn(move |conn| history::range(conn, &name, from_ms, to_ms, limit))
            .await
    }

    async fn put_version(&self, name: &str, version: &Version) -> Result<(), StoreError> {
        let (name, version) = (name.to_string(), version.clone());
        self.with_conn(move |conn| history::put_version(conn, &name, &version))
            .await
    }

    async fn versions(
        &self,
        name: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<VersionInfo>, StoreError> {
        let name = name.to_string();
        self.with_conn(move |conn| history::versions(conn, &name, offset, limit))
            .await
    }

    async fn version(&self, name: &str, id: &str) -> Result<Option<Version>, StoreError> {
        let (name, id) = (name.to_string(), id.to_string());
        self.with_conn(move |conn| history::version(conn, &name, &id))
            .await
    }

    async fn next_fence(&self, name: &str) -> Result<u64, StoreError> {
        let name = name.to_string();
        self.with_conn(move |conn| {
            let tx = conn.transaction().map_err(backend)?;
            let stored: i64 = tx
                .query_row(
                    "SELECT fence FROM snapshots WHERE name = ?1",
                    params![name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?
                .unwrap_or(0);
            let issued: i64 = tx
                .query_row(
                    "SELECT issued FROM fences WHERE name = ?1",
                    params![name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?
                .unwrap_or(0);
            let next = issued.max(stored) + 1;
            tx.execute(
                "INSERT INTO fences (name, issued) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET issued = excluded.issued",
                params![name, next],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(next as u64)
        })
        .await
    }
}

/// A document's snapshot row as compaction reads it.
struct SnapshotRow {
    state: Vec<u8>,
    fence: i64,
    updated_at: i64,
}

impl SnapshotRow {
    /// What identifies this version of the snapshot: a compaction that finds another version
    /// when it writes lost a race and leaves it alone.
    fn version(&self) -> (i64, i64) {
        (self.fence, self.updated_at)
    }
}

/// A document's log rows, oldest first: (`seq`, update).
type LogRows = Vec<(i64, Vec<u8>)>;

/// The snapshot row and every log row of `name`, read in one transaction.
fn read_for_fold(
    conn: &mut Connection,
    name: &str,
) -> Result<(Option<SnapshotRow>, LogRows), StoreError> {
    let tx = conn.transaction().map_err(backend)?;
    let stored = tx
        .query_row(
            "SELECT state, fence, updated_at FROM snapshots WHERE name = ?1",
            params![name],
            |r| {
                Ok(SnapshotRow {
                    state: r.get(0)?,
                    fence: r.get(1)?,
                    updated_at: r.get(2)?,
                })
            },
        )
        .optional()
        .map_err(backend)?;
    let mut stmt = tx
        .prepare_cached("SELECT seq, data FROM updates WHERE name = ?1 AND folded = 0 ORDER BY seq")
        .map_err(backend)?;
    let log: LogRows = stmt
        .query_map(params![name], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    drop(stmt);
    tx.commit().map_err(backend)?;
    Ok((stored, log))
}

/// Folds the snapshot and the log on the blocking pool, without holding the connection.
async fn fold_off_thread(
    name: &str,
    snapshot: Option<Vec<u8>>,
    log: LogRows,
) -> Result<Vec<u8>, StoreError> {
    tokio::task::spawn_blocking(move || {
        fold_updates(snapshot.as_deref(), log.iter().map(|(_, d)| d.as_slice()))
    })
    .await
    .map_err(|e| StoreError::Backend(format!("fold task failed: {e}")))?
    .map_err(|reason| StoreError::Corrupt {
        name: name.to_string(),
        reason,
    })
}

/// What a compaction writes back once it has folded.
struct FoldWrite<'a> {
    name: &'a str,
    fence: u64,
    /// The snapshot's version when it was read (`None`: there was none).
    seen: Option<(i64, i64)>,
    folded: &'a [u8],
    /// The log rows that went into `folded`, and only those, are deleted (or marked folded).
    seqs: &'a [i64],
    /// History is kept: the rows stay, marked folded.
    keep: bool,
}

/// Writes the folded snapshot and deletes the folded rows, in one transaction, unless a newer
/// token or another compaction wrote the snapshot since it was read.
fn write_fold(conn: &mut Connection, write: &FoldWrite<'_>) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(backend)?;
    let now_version = tx
        .query_row(
            "SELECT fence, updated_at FROM snapshots WHERE name = ?1",
            params![write.name],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        )
        .optional()
        .map_err(backend)?;
    // Checked again: a newer owner may have compacted while this one folded.
    if let Some((now_fence, _)) = now_version {
        check_fence(now_fence as u64, write.fence)?;
    }
    if now_version != write.seen {
        // Another compaction got there first; our fold is stale. Nothing is lost: the log
        // rows we read are either folded by it or still there.
        return Ok(());
    }
    if write.keep {
        history::start_base(&tx, write.name)?;
    }
    tx.execute(
        "INSERT INTO snapshots (name, state, state_vector, fence, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (name) DO UPDATE SET state = excluded.state,
             state_vector = excluded.state_vector, fence = excluded.fence,
             updated_at = excluded.updated_at",
        params![
            write.name,
            write.folded,
            state_vector_of(write.folded),
            write.fence as i64,
            now_ms().max(write.seen.map_or(0, |(_, at)| at + 1))
        ],
    )
    .map_err(backend)?;
    {
        let sql = if write.keep {
            "UPDATE updates SET folded = 1 WHERE seq = ?1"
        } else {
            "DELETE FROM updates WHERE seq = ?1"
        };
        let mut folded = tx.prepare_cached(sql).map_err(backend)?;
        for seq in write.seqs {
            folded.execute(params![seq]).map_err(backend)?;
        }
    }
    tx.commit().map_err(backend)
}
