//! Start-up and shutdown of a node: store, persistence, document threads, registry, HTTP.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_http::{HttpService, KeepAlive};
use actix_service::{fn_service, map_config};
use actix_web::dev::AppConfig;
use actix_web::{App, web};

use crate::auth::Authorizer;
use crate::backoff::{Backoff, BackoffPolicy};
use crate::budget::MemoryBudget;
use crate::cloudwatch::CloudWatchActor;
use crate::config::{AuthMode, Settings, StoreKind};
use crate::document::{DocumentConfig, DocumentLimits};
use crate::drain::{DrainState, Drainer, wait_for_signal};
use crate::http::{self, AppState};
use crate::limits::{ConnectionLimiter, parse_cidrs};
use crate::metrics::Metrics;
use crate::persistence::{Persistence, PersistenceConfig};
use crate::registry::Registry;
use crate::session::SessionContext;
use crate::store::{MemoryStore, PgOptions, PgStore, SqliteStore, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("invalid auth settings: {0}")]
    Auth(String),
    #[error("HTTP server failed: {0}")]
    Http(#[from] std::io::Error),
}

/// Longest wait, at shutdown, for accepted updates to become durable.
const FLUSH_DEADLINE: Duration = Duration::from_secs(20);

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs the node until SIGINT/SIGTERM. Must be called inside an actix `System`.
pub async fn run(settings: Settings) -> Result<(), ServerError> {
    let metrics = Metrics::new();
    let budget = MemoryBudget::new(
        settings.limits.memory_budget_bytes,
        settings.limits.memory_budget_measures_rss,
        &metrics,
    );
    // Sampled even when it does not count, for zedi_memory_resident_bytes.
    if let Err(error) = crate::budget::resident::spawn_sampler(&budget) {
        tracing::warn!(%error, "cannot start the resident memory sampler: charges alone fill the budget");
    }
    let node_id = if settings.server.node_id.is_empty() {
        format!("zedi-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
    } else {
        settings.server.node_id.clone()
    };
    let store = open_store(&settings).await?;
    let persistence = Persistence::start(
        Arc::clone(&store),
        PersistenceConfig {
            max_batch: settings.store.max_batch,
            max_pending_writes: settings.store.max_pending_writes,
            retry_initial: Duration::from_millis(settings.store.retry_initial_ms),
            retry_max: Duration::from_millis(settings.store.retry_max_ms),
        },
        Arc::clone(&metrics),
        Arc::clone(&budget),
    );
    let cluster = if settings.cluster.redis_url.is_empty() {
        None
    } else {
        let gauge = metrics.connections_open.clone();
        let cluster = crate::cluster::start(
            &settings.cluster,
            Arc::from(node_id.as_str()),
            Arc::clone(&metrics),
            Arc::new(move || gauge.get()),
        )
        .await?;
        tracing::info!(prefix = %settings.cluster.key_prefix, "cluster node: leases and relay through Redis");
        Some(cluster)
    };
    let document_threads = match settings.server.document_threads {
        0 => cores(),
        n => n,
    };
    let arbiters: Vec<Arbiter> = (0..document_threads).map(|_| Arbiter::new()).collect();
    let registry = Registry::new(
        arbiters.iter().map(Arbiter::handle).collect(),
        persistence.clone(),
        Arc::clone(&metrics),
        DocumentConfig {
            budget: Arc::clone(&budget),
            document_memory_factor: settings.limits.document_memory_factor,
            max_outbound_bytes: settings.limits.max_outbound_bytes,
            max_document_bytes: settings.limits.max_document_bytes,
            limits: DocumentLimits {
                firewall: crate::firewall::Limits {
                    max_nesting_depth: settings.limits.max_nesting_depth,
                },
                max_pending_bytes: settings.limits.max_pending_bytes,
                awareness: crate::awareness::AwarenessLimits {
                    max_state_bytes: settings.limits.max_awareness_state_bytes,
                    max_depth: settings.limits.max_awareness_depth,
                    max_clients_per_connection: settings
                        .limits
                        .max_awareness_clients_per_connection,
                },
            },
            unload_grace: Duration::from_millis(settings.documents.unload_grace_ms),
            load_timeout: Duration::from_millis(settings.documents.load_timeout_ms),
            awareness_timeout: Duration::from_millis(settings.documents.awareness_timeout_ms),
            compact_after_updates: settings.store.compact_after_updates,
            compact_min_interval: Duration::from_millis(settings.store.compact_min_interval_ms),
        },
        cluster.clone(),
    )
    .start();
    let authorizer = Authorizer::from_settings(&settings.auth).map_err(ServerError::Auth)?;
    let drain = DrainState::new();
    let sessions = Arc::new(SessionContext {
        registry,
        metrics: Arc::clone(&metrics),
        authorizer: authorizer.clone(),
        limits: settings.limits.clone(),
        idle_timeout: Duration::from_millis(settings.timeouts.idle_ms),
        ping_interval: Duration::from_millis(settings.timeouts.ping_interval_ms),
        refresh_grace: Duration::from_millis(settings.auth.refresh_grace_ms),
        shutdown: drain.sessions_signal(),
        budget: Arc::clone(&budget),
        write_stall: Duration::from_millis(settings.timeouts.write_stall_ms),
        auth_timeout: Duration::from_millis(settings.timeouts.auth_ms),
    });
    if let Some(reporter) = CloudWatchActor::new(
        &settings.cloudwatch,
        metrics.connections_open.clone(),
        Arc::clone(&budget),
        Arc::clone(&metrics),
    ) {
        reporter.start();
    }
    let state = web::Data::new(AppState {
        node_id: node_id.clone(),
        metrics: Arc::clone(&metrics),
        drain: drain.clone(),
        persistence: persistence.clone(),
        sessions,
        max_frame_bytes: settings.limits.max_frame_bytes,
        allowed_origins: settings.server.origins(),
        limiter: ConnectionLimiter::with_preauth_share(
            settings.limits.max_connections,
            settings.limits.max_connections_per_ip,
            settings.limits.max_preauth_bytes_per_address,
        ),
        trusted_proxies: parse_cidrs(&settings.server.trusted_proxies).unwrap_or_default(),
        cluster: cluster.as_ref().map(|c| Arc::clone(&c.status)),
    });
    let addr = format!("{}:{}", settings.server.host, settings.server.port);
    let workers = match settings.server.workers {
        0 => cores(),
        n => n,
    };
    let state = state.into_inner();
    let server = actix_server::Server::build()
        .workers(workers)
        .disable_signals()
        .bind("zedi-sync", &addr, move || {
            let app = App::new()
                .app_data(web::Data::from(Arc::clone(&state)))
                .configure(http::routes);
            let for_upgrades = Arc::clone(&state);
            HttpService::build()
                // actix-web's HttpServer defaults, which this replaces.
                .keep_alive(KeepAlive::Timeout(Duration::from_secs(5)))
                .client_request_timeout(Duration::from_secs(5))
                .client_disconnect_timeout(Duration::from_secs(1))
                // Each keystroke is a small frame that must leave at once: with Nagle's
                // algorithm the SyncStatus after a broadcast waits for the client's delayed
                // ACK (~40 ms).
                .tcp_nodelay(true)
                // Upgrades skip the App and its per-connection HTTP buffers (see websocket.rs).
                .upgrade(fn_service(move |(req, framed)| {
                    crate::websocket::upgrade(req, framed, Arc::clone(&for_upgrades))
                }))
                .finish(map_config(app, |_| AppConfig::default()))
                .tcp()
        })
        .map_err(|source| ServerError::Bind {
            addr: addr.clone(),
            source,
        })?
        .run();

    log_auth_mode(&settings, &authorizer);
    tracing::info!(
        %node_id, %addr, store = store.kind(),
        workers, document_threads, "zedi-sync listening"
    );

    let handle = server.handle();
    let drainer = Drainer {
        state: drain.clone(),
        persistence: persistence.clone(),
        cluster: cluster.clone(),
        metrics: Arc::clone(&metrics),
        delay: Duration::from_millis(settings.server.drain_delay_ms),
        deadline: Duration::from_millis(settings.server.drain_deadline_ms),
    };
    actix_web::rt::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        // A second signal means "now": exit without waiting for the drain.
        actix_web::rt::spawn(async {
            wait_for_signal().await;
            tracing::warn!("second shutdown signal: exiting at once");
            std::process::exit(1);
        });
        drainer.run().await;
        handle.stop(true).await;
    });
    server.await?;

    match tokio::time::timeout(FLUSH_DEADLINE, persistence.flush()).await {
        Ok(()) => tracing::info!("store flushed; exiting"),
        Err(_) => tracing::error!(
            "store did not become durable within {FLUSH_DEADLINE:?}; exiting anyway"
        ),
    }
    for arbiter in arbiters {
        arbiter.stop();
    }
    Ok(())
}

fn log_auth_mode(settings: &Settings, authorizer: &Authorizer) {
    match authorizer.mode() {
        AuthMode::Jwt => {
            tracing::info!(
                hs256 = !settings.auth.jwt_secret.is_empty(),
                jwks = authorizer.jwks_url().unwrap_or("-"),
                default_access = ?settings.auth.default_access,
                "JWT authentication on"
            );
            if authorizer.jwks_url().is_some() && settings.auth.audiences.trim().is_empty() {
                tracing::warn!(
                    "auth.audiences is empty: tokens of any app client of the issuer are accepted"
                );
            }
        }
        _ => tracing::warn!(
            "AUTH IS OFF (no JWT_SECRET, COGNITO_USER_POOL_ID or auth.issuer set, or auth.mode = \"off\"): every connection gets read-write access to every document"
        ),
    }
}

/// Opens the configured store. PostgreSQL is retried with backoff for `startup_timeout_ms`:
/// nodes often start together with (or before) a database that is still coming up.
async fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, ServerError> {
    let s = &settings.store;
    match settings.store_kind() {
        StoreKind::Memory => Ok(Arc::new(MemoryStore::new())),
        StoreKind::Embedded | StoreKind::Auto => {
            tracing::info!(path = %s.path.display(), "using the embedded store");
            Ok(Arc::new(SqliteStore::open(&s.path)?))
        }
        StoreKind::Postgres => {
            let options = PgOptions {
                url: s.database_url.clone(),
                password: Some(s.database_password.clone()).filter(|p| !p.is_empty()),
                sslmode: Some(s.sslmode.clone()).filter(|m| !m.is_empty()),
                ssl_root_cert: Some(s.ssl_root_cert.clone()).filter(|p| !p.as_os_str().is_empty()),
                pool_size: s.pool_size,
                connect_timeout: Duration::from_millis(s.connect_timeout_ms),
                legacy_table: Some(s.legacy_table.clone()).filter(|t| !t.is_empty()),
            };
            let deadline =
                tokio::time::Instant::now() + Duration::from_millis(s.startup_timeout_ms);
            let mut backoff = Backoff::new(BackoffPolicy::new(
                Duration::from_millis(200),
                Duration::from_secs(5),
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
    }
}
