//! History in PostgreSQL, as in the embedded store (see `sqlite/history.rs` for the model): the
//! rows of `zedi_updates` with `folded` kept, `zedi_history_bases`, `zedi_versions`. Instants in
//! the new tables are ms since the Unix epoch; `created_at` is read as the same, rounded down.

use std::time::Duration;

use tokio_postgres::{IsolationLevel, Row, Transaction};

use super::backend;
use crate::store::{
    History, HistoryPoint, HistoryRow, StoreError, Version, VersionInfo, fold_updates,
};

/// `created_at` as ms since the epoch, as reported and compared.
const AT_MS: &str = "floor(EXTRACT(EPOCH FROM created_at) * 1000)::BIGINT";

/// Before the first fold that keeps history: the current snapshot is the base.
pub(super) async fn start_base(tx: &Transaction<'_>, name: &str) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO zedi_history_bases (name, state, as_of)
         SELECT $1, COALESCE((SELECT state FROM zedi_snapshots WHERE name = $1), '\\x0000'::bytea),
                COALESCE((SELECT floor(EXTRACT(EPOCH FROM updated_at) * 1000)::BIGINT
                            FROM zedi_snapshots WHERE name = $1), 0)
         ON CONFLICT (name) DO NOTHING",
        &[&name],
    )
    .await
    .map_err(backend)?;
    Ok(())
}

fn history_row(r: &Row) -> HistoryRow {
    HistoryRow {
        seq: r.get(0),
        at_ms: r.get(1),
        author: r.get(2),
        update: r.get(3),
    }
}

pub(super) async fn read(
    client: &mut deadpool_postgres::Object,
    name: &str,
    until: HistoryPoint,
) -> Result<History, StoreError> {
    let until_ms = match until {
        HistoryPoint::Now => i64::MAX,
        HistoryPoint::At(ms) => ms,
    };
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(backend)?;
    let base = tx
        .query_opt(
            "SELECT state, as_of FROM zedi_history_bases WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(backend)?;
    let (base, base_as_of_ms, only_unfolded) = match base {
        Some(row) => (Some(row.get::<_, Vec<u8>>(0)), row.get::<_, i64>(1), false),
        None => {
            let snapshot = tx
                .query_opt(
                    "SELECT state, floor(EXTRACT(EPOCH FROM updated_at) * 1000)::BIGINT
                       FROM zedi_snapshots WHERE name = $1",
                    &[&name],
                )
                .await
                .map_err(backend)?;
            match snapshot {
                Some(row) => (Some(row.get::<_, Vec<u8>>(0)), row.get::<_, i64>(1), true),
                None => (None, 0, true),
            }
        }
    };
    let filter = if only_unfolded { "AND NOT folded" } else { "" };
    let rows = tx
        .query(
            &format!(
                "SELECT seq, {AT_MS}, author, data FROM zedi_updates
                  WHERE name = $1 {filter} AND {AT_MS} <= $2 ORDER BY seq"
            ),
            &[&name, &until_ms],
        )
        .await
        .map_err(backend)?
        .iter()
        .map(history_row)
        .collect();
    tx.commit().await.map_err(backend)?;
    Ok(History {
        base,
        base_as_of_ms,
        rows,
    })
}

pub(super) async fn range(
    client: &tokio_postgres::Client,
    name: &str,
    from_ms: i64,
    to_ms: i64,
    limit: usize,
) -> Result<Vec<HistoryRow>, StoreError> {
    Ok(client
        .query(
            &format!(
                "SELECT seq, {AT_MS}, author, data FROM zedi_updates
                  WHERE name = $1 AND {AT_MS} >= $2 AND {AT_MS} <= $3 ORDER BY seq LIMIT $4"
            ),
            &[&name, &from_ms, &to_ms, &(limit as i64)],
        )
        .await
        .map_err(backend)?
        .iter()
        .map(history_row)
        .collect())
}

/// Inside the compaction's transaction (under its advisory lock): folds the rows older than
/// the retention into the base and forgets them and the versions older than it.
pub(super) async fn prune(
    tx: &Transaction<'_>,
    name: &str,
    retention: Duration,
) -> Result<(), StoreError> {
    let cutoff: i64 = tx
        .query_one(
            "SELECT floor(EXTRACT(EPOCH FROM now()) * 1000)::BIGINT - $1",
            &[&(retention.as_millis() as i64)],
        )
        .await
        .map_err(backend)?
        .get(0);
    tx.execute(
        "DELETE FROM zedi_versions WHERE name = $1 AND at < $2",
        &[&name, &cutoff],
    )
    .await
    .map_err(backend)?;
    let Some(base) = tx
        .query_opt(
            "SELECT state, as_of FROM zedi_history_bases WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(backend)?
    else {
        return Ok(());
    };
    let (state, as_of): (Vec<u8>, i64) = (base.get(0), base.get(1));
    if as_of >= cutoff {
        return Ok(());
    }
    let old: Vec<(i64, Vec<u8>)> = tx
        .query(
            &format!(
                "SELECT seq, data FROM zedi_updates
                  WHERE name = $1 AND folded AND {AT_MS} < $2 ORDER BY seq"
            ),
            &[&name, &cutoff],
        )
        .await
        .map_err(backend)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if old.is_empty() {
        return Ok(());
    }
    let folded =
        fold_updates(Some(&state), old.iter().map(|(_, d)| d.as_slice())).map_err(|reason| {
            StoreError::Corrupt {
                name: name.to_string(),
                reason,
            }
        })?;
    tx.execute(
        "UPDATE zedi_history_bases SET state = $2, as_of = $3 WHERE name = $1",
        &[&name, &folded, &cutoff],
    )
    .await
    .map_err(backend)?;
    let seqs: Vec<i64> = old.iter().map(|(seq, _)| *seq).collect();
    tx.execute("DELETE FROM zedi_updates WHERE seq = ANY($1)", &[&seqs])
        .await
        .map_err(backend)?;
    Ok(())
}

pub(super) async fn put_version(
    client: &tokio_postgres::Client,
    name: &str,
    version: &Version,
) -> Result<(), StoreError> {
    let info = &version.info;
    client
        .execute(
            "INSERT INTO zedi_versions (name, id, label, meta, at, author, auto, state)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &name,
                &info.id,
                &info.name,
                &info.meta.to_string(),
                &info.at_ms,
                &info.author,
                &info.auto,
                &version.state,
            ],
        )
        .await
        .map_err(backend)?;
    Ok(())
}

fn version_info(r: &Row) -> VersionInfo {
    let meta: String = r.get(2);
    VersionInfo {
        id: r.get(0),
        name: r.get(1),
        meta: serde_json::from_str(&meta).unwrap_or(serde_json::Value::Null),
        at_ms: r.get(3),
        author: r.get(4),
        auto: r.get(5),
    }
}

pub(super) async fn versions(
    client: &tokio_postgres::Client,
    name: &str,
    offset: usize,
    limit: usize,
) -> Result<Vec<VersionInfo>, StoreError> {
    Ok(client
        .query(
            "SELECT id, label, meta, at, author, auto FROM zedi_versions WHERE name = $1
              ORDER BY at DESC, made DESC LIMIT $2 OFFSET $3",
            &[&name, &(limit as i64), &(offset as i64)],
        )
        .await
        .map_err(backend)?
        .iter()
        .map(version_info)
        .collect())
}

pub(super) async fn version(
    client: &tokio_postgres::Client,
    name: &str,
    id: &str,
) -> Result<Option<Version>, StoreError> {
    Ok(client
        .query_opt(
            "SELECT id, label, meta, at, author, auto, state FROM zedi_versions
              WHERE name = $1 AND id = $2",
            &[&name, &id],
        )
        .await
        .map_err(backend)?
        .map(|r| Version {
            info: version_info(&r),
            state: r.get(6),
        }))
}
