//! Opening the configured store at start-up.

use std::sync::Arc;

use crate::backoff::{Backoff, BackoffPolicy};
use crate::store::{
    HistoryPolicy, MemoryStore, PgStore, SqliteStore, Store, StoreKind, StoreSettings,
};

use super::ServerError;

/// Opens the configured store. PostgreSQL is retried with backoff (`store.retry_initial_ms`
/// doubling to `store.retry_max_ms`, as for writes) for `store.startup_timeout_ms`: nodes often
/// start together with (or before) a database that is still coming up.
pub(super) async fn open(
    settings: &StoreSettings,
    history: HistoryPolicy,
) -> Result<Arc<dyn Store>, ServerError> {
    let Some(mut options) = settings
        .pg_options()
        .filter(|_| settings.kind() == StoreKind::Postgres)
    else {
        return Ok(match settings.kind() {
            StoreKind::Memory => Arc::new(MemoryStore::with_history(history)),
            _ => {
                tracing::info!(path = %settings.path.display(), "using the embedded store");
                Arc::new(SqliteStore::open_with(&settings.path, history)?)
            }
        });
    };
    options.history = history;
    let deadline = tokio::time::Instant::now() + settings.startup_timeout;
    let mut backoff = Backoff::new(BackoffPolicy::new(
        settings.retry_initial,
        settings.retry_max,
    ));
    loop {
        match PgStore::connect(&options).await {
            Ok(store) => {
                tracing::info!("using the PostgreSQL store; schema is current");
                return Ok(Arc::new(store));
            }
            Err(error) if tokio::time::Instant::now() + backoff.delay() < deadline => {
                tracing::warn!(%error, retry_in_ms = backoff.delay().as_millis() as u64, "PostgreSQL not ready");
                backoff.wait().await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}
