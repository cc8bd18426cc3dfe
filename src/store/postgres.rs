//! The PostgreSQL store (Aurora in production), through a `deadpool-postgres` pool.
//!
//! - `zedi_updates` is the append-only log; a group-committed batch is one `INSERT … UNNEST`,
//!   i.e. one transaction and one WAL flush for many keystrokes.
//! - `zedi_snapshots` holds the folded state, its state vector and the fencing token that wrote it.
//! - `load` reads snapshot and log in one REPEATABLE READ transaction, so a compaction running
//!   meanwhile can never make an update vanish between the two reads.
//! - `compact` serialises per document with an advisory lock, folds what it read, and deletes
//!   exactly the rows it folded (by `seq`), never a range: a log row committed late with a lower
//!   `seq` is kept for the next compaction instead of being deleted unfolded.
//! - Schema migrations are versioned and run under a global advisory lock, so nodes starting
//!   together apply each one once.
//! - A `documents(name, content, updated_at)` table left by the Node server is imported on the
//!   first load of a name that has nothing in our tables.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::IsolationLevel;

use super::pg_tls::{SslMode, client_config};
use super::{
    AppendItem, CompactOutcome, DocumentInfo, History, HistoryPoint, HistoryPolicy, HistoryRow,
    Store, StoreError, StoredDocument, Version, VersionInfo, check_fence, fold_updates,
    state_vector_of,
};

/// Key of the advisory lock that serialises schema migrations across nodes.
const MIGRATION_LOCK: i64 = 0x7a65_6469_5f6d_6967; // "zedi_mig"

/// Schema versions, applied in order, each in the same transaction as its version row.
const MIGRATIONS: &[&str] = &[
    // 1: snapshot per document, append-only update log, issued fencing tokens.
    "CREATE TABLE zedi_snapshots (
         name TEXT PRIMARY KEY,
         state BYTEA NOT NULL,
         state_vector BYTEA NOT NULL,
         fence BIGINT NOT NULL,
         updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
     );
     CREATE TABLE zedi_updates (
         seq BIGSERIAL PRIMARY KEY,
         name TEXT NOT NULL,
         data BYTEA NOT NULL,
         created_at TIMESTAMPTZ NOT NULL DEFAULT now()
     );
     CREATE INDEX zedi_updates_by_name ON zedi_updates (name, seq);
     CREATE TABLE zedi_fences (
         name TEXT PRIMARY KEY,
         issued BIGINT NOT NULL
     );",
    // 2: history (see the embedded store): authors, folded rows kept, bases, versions.
    "ALTER TABLE zedi_updates ADD COLUMN author TEXT NOT NULL DEFAULT 'anonymous',
                              ADD COLUMN folded BOOLEAN NOT NULL DEFAULT false;
     CREATE INDEX zedi_updates_by_name_time ON zedi_updates (name, created_at);
     CREATE TABLE zedi_history_bases (
         name TEXT PRIMARY KEY,
         state BYTEA NOT NULL,
         as_of BIGINT NOT NULL
     );
     CREATE TABLE zedi_versions (
         name TEXT NOT NULL,
         id TEXT NOT NULL,
         label TEXT NOT NULL,
         meta TEXT NOT NULL,
         at BIGINT NOT NULL,
         author TEXT NOT NULL,
         auto BOOLEAN NOT NULL,
         state BYTEA NOT NULL,
         made BIGSERIAL,
         PRIMARY KEY (name, id)
     );
     CREATE INDEX zedi_versions_by_time ON zedi_versions (name, at);",
];

mod history;

/// How to reach the database; built from `[store]` in the configuration.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/db?sslmode=…` (libpq URL or key=value form).
    pub url: String,
    /// Overrides the URL's password when set (Secrets Manager injects it as its own variable).
    pub password: Option<String>,
    /// Overrides the URL's `sslmode` when set.
    pub sslmode: Option<SslMode>,
    /// CA bundle for `verify-ca` / `verify-full`; overrides the URL's `sslrootcert`.
    pub ssl_root_cert: Option<PathBuf>,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    /// Table of the previous Node server to import from; `None` disables the import.
    pub legacy_table: Option<String>,
    /// What compaction keeps for history.
    pub history: HistoryPolicy,
}

pub struct PgStore {
    pool: Pool,
    legacy_table: Option<String>,
    history: HistoryPolicy,
}

/// The error with its whole `source()` chain: deadpool and tokio-postgres wrap the useful part
/// (a refused certificate, a wrong password) a few levels down.
fn backend(e: impl std::error::Error) -> StoreError {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = inner.source();
    }
    StoreError::Backend(message)
}

/// Pulls the TLS parameters out of a URL's query string, because tokio-postgres knows only
/// `disable|prefer|require` and we implement libpq's full set ourselves.
fn split_tls_params(url: &str) -> (String, Option<String>, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None, None);
    };
    let (mut sslmode, mut rootcert) = (None, None);
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some(("sslmode", v)) => {
                sslmode = Some(v.to_string());
                false
            }
            Some(("sslrootcert", v)) => {
                rootcert = Some(v.to_string());
                false
            }
            _ => !pair.is_empty(),
        })
        .collect();
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, sslmode, rootcert)
}

/// A plain SQL identifier (optionally schema-qualified); anything else is refused rather than
/// quoted, since it comes from configuration and ends up inside SQL text.
fn valid_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

impl PgStore {
    /// Builds the pool and brings the schema up to date.
    pub async fn connect(options: &PgOptions) -> Result<Self, StoreError> {
        let (url, url_sslmode, url_rootcert) = split_tls_params(&options.url);
        let mut config = tokio_postgres::Config::from_str(&url)
            .map_err(|e| StoreError::Backend(format!("invalid database URL: {e}")))?;
        if let Some(password) = options.password.as_deref().filter(|p| !p.is_empty()) {
            config.password(password);
        }
        config.connect_timeout(options.connect_timeout);
        config.application_name("zedi-sync");
        // The setting was parsed at load; the URL's own parameter is read here.
        let mode = match (options.sslmode, url_sslmode) {
            (Some(mode), _) => mode,
            (None, Some(name)) => SslMode::parse(&name)
                .ok_or_else(|| StoreError::Backend(format!("unknown sslmode `{name}`")))?,
            (None, None) => SslMode::Prefer,
        };
        let root_cert = options
            .ssl_root_cert
            .clone()
            .or(url_rootcert.map(PathBuf::from));
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match client_config(mode, root_cert.as_deref())? {
            None => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
            Some(tls) => Manager::from_config(
                config,
                tokio_postgres_rustls::MakeRustlsConnect::new(tls),
                manager_config,
            ),
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(backend)?;
        let legacy_table = match &options.legacy_table {
            Some(t) if !valid_identifier(t) => {
                return Err(StoreError::Backend(format!(
                    "invalid legacy table name `{t}`"
                )));
            }
            other => other.clone(),
        };
        let store = PgStore {
            pool,
            legacy_table,
            history: options.history,
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| match backend(e) {
            StoreError::Backend(m) => StoreError::Backend(format!("database unavailable: {m}")),
            other => other,
        })
    }

    /// Applies missing migrations under a global advisory lock; returns the schema version.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(backend)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS zedi_schema_migrations (
                 version INTEGER PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(backend)?;
        let current: i32 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM zedi_schema_migrations",
                &[],
            )
            .await
            .map_err(backend)?
            .get(0);
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.batch_execute(sql).await.map_err(backend)?;
            tx.execute(
                "INSERT INTO zedi_schema_migrations (version) VALUES ($1)",
                &[&(i as i32 + 1)],
            )
            .await
            .map_err(backend)?;
            tracing::info!(version = i + 1, "applied database migration");
        }
        tx.commit().await.map_err(backend)?;
        Ok(MIGRATIONS.len())
    }

    /// Copies a document of the previous Node server into our snapshot table, once.
    async fn import_legacy(&self, name: &str) -> Result<bool, StoreError> {
        let Some(table) = &self.legacy_table else {
            return Ok(false);
        };
        let client = self.client().await?;
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[table])
            .await
            .map_err(backend)?
            .get(0);
        if !exists {
            return Ok(false);
        }
        let row = client
            .query_opt(
                &format!("SELECT content FROM {table} WHERE name = $1"),
                &[&name],
            )
            .await
            .map_err(backend)?;
        let Some(content) = row.and_then(|r| r.get::<_, Option<Vec<u8>>>(0)) else {
            return Ok(false);
        };
        // Validate before storing: an undecodable legacy row must not become our snapshot. The
        // document then opens empty (the legacy row stays as it was, for someone to look at).
        let folded = match fold_updates(Some(&content), std::iter::empty()) {
            Ok(folded) => folded,
            Err(reason) => {
                tracing::error!(document = %name, table = %table, %reason, "legacy document is not a valid Yjs update; not imported");
                return Ok(false);
            }
        };
        let inserted = client
            .execute(
                "INSERT INTO zedi_snapshots (name, state, state_vector, fence) VALUES ($1, $2, $3, 0)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &folded, &state_vector_of(&folded)],
            )
            .await
            .map_err(backend)?;
        if inserted == 1 {
            tracing::info!(document = %name, bytes = content.len(), "imported document from the legacy table");
        }
        Ok(true)
    }

    async fn read(&self, name: &str) -> Result<StoredDocument, StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(backend)?;
        let snapshot = tx
            .query_opt(
                "SELECT state, fence FROM zedi_snapshots WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(backend)?;
        let updates = tx
            .query(
                "SELECT data FROM zedi_updates WHERE name = $1 AND NOT folded ORDER BY seq",
                &[&name],
            )
            .await
            .map_err(backend)?
            .into_iter()
            .map(|r| r.get::<_, Vec<u8>>(0))
            .collect();
        tx.commit().await.map_err(backend)?;
        let (snapshot, fence) = match snapshot {
            Some(row) => (Some(row.get::<_, Vec<u8>>(0)), row.get::<_, i64>(1) as u64),
            None => (None, 0),
        };
        Ok(StoredDocument {
            snapshot,
            updates,
            fence,
        })
    }
}

#[async_trait]
impl Store for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn load(&self, name: &str) -> Result<StoredDocument, StoreError> {
        let stored = self.read(name).await?;
        if stored.snapshot.is_none()
            && stored.updates.is_empty()
            && self.import_legacy(name).await?
        {
            return self.read(name).await;
        }
        Ok(stored)
    }

    async fn append(&self, batch: &[AppendItem]) -> Result<(), StoreError> {
        let names: Vec<&str> = batch.iter().map(|i| &*i.name).collect();
        let data: Vec<&[u8]> = batch.iter().map(|i| &i.update[..]).collect();
        let authors: Vec<&str> = batch.iter().map(|i| &*i.author).collect();
        let client = self.client().await?;
        // One statement is one transaction: the whole batch commits (and is flushed) together.
        client
            .execute(
                "INSERT INTO zedi_updates (name, data, author)
                 SELECT * FROM UNNEST($1::text[], $2::bytea[], $3::text[])",
                &[&names, &data, &authors],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn list(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<DocumentInfo>, StoreError> {
        let client = self.client().await?;
        // COLLATE "C": byte order, whatever the database's collation, so `after` pages cleanly.
        let rows = client
            .query(
                r#"SELECT name, SUM(bytes)::BIGINT, (EXTRACT(EPOCH FROM MAX(at)) * 1000)::BIGINT FROM (
                     SELECT name, octet_length(state) AS bytes, updated_at AS at FROM zedi_snapshots
                      WHERE starts_with(name, $1) AND name COLLATE "C" > $2
                     UNION ALL
                     SELECT name, octet_length(data), created_at FROM zedi_updates
                      WHERE NOT folded AND starts_with(name, $1) AND name COLLATE "C" > $2
                   ) d GROUP BY name ORDER BY name COLLATE "C" LIMIT $3"#,
                &[&prefix, &after, &(limit as i64)],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|r| DocumentInfo {
                name: r.get(0),
                bytes: r.get::<_, i64>(1) as u64,
                updated_at_ms: r.get(2),
            })
            .collect())
    }

    async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        // The compaction lock: a fold running now finishes first, or starts after and finds
        // nothing.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&name],
        )
        .await
        .map_err(backend)?;
        let snapshots = tx
            .execute("DELETE FROM zedi_snapshots WHERE name = $1", &[&name])
            .await
            .map_err(backend)?;
        let updates = tx
            .execute("DELETE FROM zedi_updates WHERE name = $1", &[&name])
            .await
            .map_err(backend)?;
        tx.execute("DELETE FROM zedi_history_bases WHERE name = $1", &[&name])
            .await
            .map_err(backend)?;
        tx.execute("DELETE FROM zedi_versions WHERE name = $1", &[&name])
            .await
            .map_err(backend)?;
        // Else the next load would import the legacy row again.
        let mut legacy = 0;
        if let Some(table) = &self.legacy_table {
            let exists: bool = tx
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[table])
                .await
                .map_err(backend)?
                .get(0);
            if exists {
                legacy = tx
                    .execute(&format!("DELETE FROM {table} WHERE name = $1"), &[&name])
                    .await
                    .map_err(backend)?;
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(snapshots + updates + legacy > 0)
    }

    async fn log_len(&self, name: &str) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM zedi_updates WHERE name = $1 AND NOT folded",
                &[&name],
            )
            .await
            .map_err(backend)?
            .get(0);
        Ok(n as u64)
    }

    async fn compact(&self, name: &str, fence: u64) -> Result<CompactOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&name],
        )
        .await
        .map_err(backend)?;
        let stored = tx
            .query_opt(
                "SELECT state, fence FROM zedi_snapshots WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(backend)?;
        // Decided in Rust, yet atomic with the write below: the advisory lock serialises every
        // compaction of this document until the transaction ends, so the token read here is
        // still the newest when the snapshot is replaced.
        check_fence(
            stored.as_ref().map_or(0, |r| r.get::<_, i64>(1) as u64),
            fence,
        )?;
        let log: Vec<(i64, Vec<u8>)> = tx
            .query(
                "SELECT seq, data FROM zedi_updates WHERE name = $1 AND NOT folded ORDER BY seq",
                &[&name],
            )
            .await
            .map_err(backend)?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let snapshot: Option<Vec<u8>> = stored.map(|r| r.get(0));
        let folded = fold_updates(snapshot.as_deref(), log.iter().map(|(_, d)| d.as_slice()))
            .map_err(|reason| StoreError::Corrupt {
                name: name.to_string(),
                reason,
            })?;
        let keep = self.history.retention.is_some();
        if keep {
            history::start_base(&tx, name).await?;
        }
        tx.execute(
            "INSERT INTO zedi_snapshots (name, state, state_vector, fence, updated_at)
             VALUES ($1, $2, $3, $4, now())
             ON CONFLICT (name) DO UPDATE SET state = excluded.state,
                 state_vector = excluded.state_vector, fence = excluded.fence, updated_at = now()",
            &[&name, &folded, &state_vector_of(&folded), &(fence as i64)],
        )
        .await
        .map_err(backend)?;
        let seqs: Vec<i64> = log.iter().map(|(seq, _)| *seq).collect();
        let sql = if keep {
            "UPDATE zedi_updates SET folded = true WHERE seq = ANY($1)"
        } else {
            "DELETE FROM zedi_updates WHERE seq = ANY($1)"
        };
        tx.execute(sql, &[&seqs]).await.map_err(backend)?;
        if let Some(retention) = self.history.retention {
            history::prune(&tx, name, retention).await?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(CompactOutcome {
            folded_updates: log.len() as u64,
            snapshot_bytes: folded.len() as u64,
        })
    }

    async fn history(&self, name: &str, until: HistoryPoint) -> Result<History, StoreError> {
        let mut client = self.client().await?;
        history::read(&mut client, name, until).await
    }

    async fn history_range(
        &self,
        name: &str,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        let client = self.client().await?;
        history::range(&client, name, from_ms, to_ms, limit).await
    }

    async fn put_version(&self, name: &str, version: &Version) -> Result<(), StoreError> {
        let client = self.client().await?;
        history::put_version(&client, name, version).await
    }

    async fn versions(
        &self,
        name: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<VersionInfo>, StoreError> {
        let client = self.client().await?;
        history::versions(&client, name, offset, limit).await
    }

    async fn version(&self, name: &str, id: &str) -> Result<Option<Version>, StoreError> {
        let client = self.client().await?;
        history::version(&client, name, id).await
    }

    async fn next_fence(&self, name: &str) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let issued: i64 = client
            .query_one(
                "WITH s AS (SELECT COALESCE(MAX(fence), 0) AS fence FROM zedi_snapshots WHERE name = $1)
                 INSERT INTO zedi_fences AS f (name, issued) SELECT $1, s.fence + 1 FROM s
                 ON CONFLICT (name) DO UPDATE SET issued = GREATEST(f.issued + 1, excluded.issued)
                 RETURNING issued",
                &[&name],
            )
            .await
            .map_err(backend)?
            .get(0);
        Ok(issued as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url() {
        assert_eq!(
            split_tls_params(
                "postgres://u:p@h:5432/db?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x"
            ),
            (
                "postgres://u:p@h:5432/db?application_name=x".to_string(),
                Some("verify-full".into()),
                Some("/ca.pem".into())
            )
        );
        assert_eq!(
            split_tls_params("postgres://h/db"),
            ("postgres://h/db".into(), None, None)
        );
        assert_eq!(
            split_tls_params("postgres://h/db?sslmode=require").0,
            "postgres://h/db"
        );
    }

    #[test]
    fn only_plain_identifiers_are_accepted_as_legacy_table() {
        assert!(valid_identifier("documents"));
        assert!(valid_identifier("public.documents"));
        assert!(!valid_identifier("documents; DROP TABLE x"));
        assert!(!valid_identifier("1abc"));
        assert!(!valid_identifier(""));
    }
}
