//! History in the embedded store: reads up to a point, the retention's pruning, versions.
//!
//! The rows of `updates` are the history: with a retention, compaction marks the rows it folded
//! (`folded = 1`) instead of deleting them. `history_bases` holds, per document, the state
//! older than everything still in `updates`: started from the snapshot at the first compaction
//! that kept history, and moved forward by pruning. A document without a base row never kept
//! history: its snapshot is the base.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{SqliteStore, backend, now_ms};
use crate::store::{
    History, HistoryPoint, HistoryRow, StoreError, Version, VersionInfo, fold_updates,
};

/// An empty Yjs v1 update: the base of a document that had no snapshot yet.
const EMPTY_STATE: &[u8] = &[0, 0];

/// Before the first fold that keeps history: the current snapshot (what older folds left) is
/// the base, as of its last write.
pub(super) fn start_base(tx: &Transaction<'_>, name: &str) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO history_bases (name, state, as_of)
         SELECT ?1, COALESCE((SELECT state FROM snapshots WHERE name = ?1), ?2),
                COALESCE((SELECT updated_at FROM snapshots WHERE name = ?1), 0)
         WHERE NOT EXISTS (SELECT 1 FROM history_bases WHERE name = ?1)",
        params![name, EMPTY_STATE],
    )
    .map_err(backend)?;
    Ok(())
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HistoryRow> {
    Ok(HistoryRow {
        seq: r.get(0)?,
        at_ms: r.get(1)?,
        author: r.get(2)?,
        update: r.get(3)?,
    })
}

pub(super) fn read(
    conn: &mut Connection,
    name: &str,
    until: HistoryPoint,
) -> Result<History, StoreError> {
    let until_ms = match until {
        HistoryPoint::Now => i64::MAX,
        HistoryPoint::At(ms) => ms,
    };
    let tx = conn.transaction().map_err(backend)?;
    let base: Option<(Vec<u8>, i64)> = tx
        .query_row(
            "SELECT state, as_of FROM history_bases WHERE name = ?1",
            params![name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(backend)?;
    let (base, base_as_of_ms, only_unfolded) = match base {
        Some((state, as_of)) => (Some(state), as_of, false),
        // Never kept history: the snapshot holds everything folded, as of its last write.
        None => {
            let snapshot: Option<(Vec<u8>, i64)> = tx
                .query_row(
                    "SELECT state, updated_at FROM snapshots WHERE name = ?1",
                    params![name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(backend)?;
            match snapshot {
                Some((state, at)) => (Some(state), at, true),
                None => (None, 0, true),
            }
        }
    };
    let sql = if only_unfolded {
        "SELECT seq, created_at, author, data FROM updates
          WHERE name = ?1 AND folded = 0 AND created_at <= ?2 ORDER BY seq"
    } else {
        "SELECT seq, created_at, author, data FROM updates
          WHERE name = ?1 AND created_at <= ?2 ORDER BY seq"
    };
    let rows = {
        let mut stmt = tx.prepare_cached(sql).map_err(backend)?;
        stmt.query_map(params![name, until_ms], row)
            .map_err(backend)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?
    };
    tx.commit().map_err(backend)?;
    Ok(History {
        base,
        base_as_of_ms,
        rows,
    })
}

pub(super) fn range(
    conn: &mut Connection,
    name: &str,
    from_ms: i64,
    to_ms: i64,
    limit: usize,
) -> Result<Vec<HistoryRow>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, created_at, author, data FROM updates
              WHERE name = ?1 AND created_at >= ?2 AND created_at <= ?3 ORDER BY seq LIMIT ?4",
        )
        .map_err(backend)?;
    stmt.query_map(params![name, from_ms, to_ms, limit as i64], row)
        .map_err(backend)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(backend)
}

/// Folds what is older than the retention into the base and forgets it: folded rows and
/// versions from before `now - retention`. Nothing newer is touched.
pub(super) async fn prune(
    store: &SqliteStore,
    name: &str,
    retention: Duration,
) -> Result<(), StoreError> {
    let cutoff = now_ms() - retention.as_millis() as i64;
    let owned = name.to_string();
    let read = store
        .with_conn(move |conn| {
            let tx = conn.transaction().map_err(backend)?;
            let base: Option<(Vec<u8>, i64)> = tx
                .query_row(
                    "SELECT state, as_of FROM history_bases WHERE name = ?1",
                    params![owned],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(backend)?;
            let old: Vec<(i64, Vec<u8>)> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT seq, data FROM updates
                          WHERE name = ?1 AND folded = 1 AND created_at < ?2 ORDER BY seq",
                    )
                    .map_err(backend)?;
                stmt.query_map(params![owned, cutoff], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(backend)?
                    .collect::<Result<_, _>>()
                    .map_err(backend)?
            };
            tx.execute(
                "DELETE FROM versions WHERE name = ?1 AND at < ?2",
                params![owned, cutoff],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok((base, old))
        })
        .await?;
    let (Some((base, as_of)), old) = read else {
        return Ok(());
    };
    if old.is_empty() || as_of >= cutoff {
        return Ok(());
    }
    let owned = name.to_string();
    let seqs: Vec<i64> = old.iter().map(|(seq, _)| *seq).collect();
    let folded = tokio::task::spawn_blocking(move || {
        fold_updates(Some(&base), old.iter().map(|(_, d)| d.as_slice()))
    })
    .await
    .map_err(|e| StoreError::Backend(format!("fold task failed: {e}")))?
    .map_err(|reason| StoreError::Corrupt {
        name: name.to_string(),
        reason,
    })?;
    store
        .with_conn(move |conn| {
            let tx = conn.transaction().map_err(backend)?;
            // Only one compaction runs per document (the owner's); the base moved meanwhile
            // means another pruned first: leave it.
            let moved = tx
                .execute(
                    "UPDATE history_bases SET state = ?2, as_of = ?3 WHERE name = ?1 AND as_of = ?4",
                    params![owned, folded, cutoff, as_of],
                )
                .map_err(backend)?
                == 0;
            if !moved {
                let mut delete = tx
                    .prepare_cached("DELETE FROM updates WHERE seq = ?1")
                    .map_err(backend)?;
                for seq in &seqs {
                    delete.execute(params![seq]).map_err(backend)?;
                }
            }
            tx.commit().map_err(backend)
        })
        .await
}

pub(super) fn put_version(
    conn: &mut Connection,
    name: &str,
    version: &Version,
) -> Result<(), StoreError> {
    let info = &version.info;
    conn.execute(
        "INSERT INTO versions (name, id, label, meta, at, author, auto, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            name,
            info.id,
            info.name,
            info.meta.to_string(),
            info.at_ms,
            info.author,
            info.auto,
            version.state
        ],
    )
    .map_err(backend)?;
    Ok(())
}

fn version_info(r: &rusqlite::Row<'_>) -> rusqlite::Result<VersionInfo> {
    let meta: String = r.get(2)?;
    Ok(VersionInfo {
        id: r.get(0)?,
        name: r.get(1)?,
        meta: serde_json::from_str(&meta).unwrap_or(serde_json::Value::Null),
        at_ms: r.get(3)?,
        author: r.get(4)?,
        auto: r.get(5)?,
    })
}

pub(super) fn versions(
    conn: &mut Connection,
    name: &str,
    offset: usize,
    limit: usize,
) -> Result<Vec<VersionInfo>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, label, meta, at, author, auto FROM versions WHERE name = ?1
              ORDER BY at DESC, rowid DESC LIMIT ?2 OFFSET ?3",
        )
        .map_err(backend)?;
    stmt.query_map(params![name, limit as i64, offset as i64], version_info)
        .map_err(backend)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(backend)
}

pub(super) fn version(
    conn: &mut Connection,
    name: &str,
    id: &str,
) -> Result<Option<Version>, StoreError> {
    conn.query_row(
        "SELECT id, label, meta, at, author, auto, state FROM versions WHERE name = ?1 AND id = ?2",
        params![name, id],
        |r| {
            Ok(Version {
                info: version_info(r)?,
                state: r.get(6)?,
            })
        },
    )
    .optional()
    .map_err(backend)
}
