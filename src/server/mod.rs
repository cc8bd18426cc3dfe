//! Start-up and shutdown of a node: store, persistence, document threads, registry, HTTP.
//! `run` reads as the list of steps; each step is a function below (or in `stores.rs`).

mod settings;
mod stores;

pub use settings::{DocumentPlacement, Origin, ServerSettings};

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_http::{HttpService, KeepAlive};
use actix_service::{fn_service, map_config};
use actix_web::dev::AppConfig;
use actix_web::{App, web};

use crate::auth::AuthMode;
use crate::auth::Authorizer;
use crate::budget::MemoryBudget;
use crate::cloudwatch::CloudWatchActor;
use crate::cluster::Cluster;
use crate::config::Settings;
use crate::document::{DocumentConfig, DocumentLimits};
use crate::drain::{DrainState, Drainer, wait_for_signal};
use crate::http::{self, AppState};
use crate::limits::ConnectionLimiter;
use crate::metrics::Metrics;
use crate::persistence::{Persistence, PersistenceConfig};
use crate::registry::Registry;
use crate::session::SessionContext;
use crate::store::StoreError;

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
    let budget = start_budget(&settings, &metrics);
    let node_id = settings
        .server
        .node_id
        .clone()
        .unwrap_or_else(|| format!("zedi-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let store = stores::open(&settings.store, settings.history.policy()).await?;
    let persistence = Persistence::start(
        Arc::clone(&store),
        persistence_config(&settings),
        Arc::clone(&metrics),
        Arc::clone(&budget),
    );
    let cluster = start_cluster(&settings, &node_id, &metrics).await?;
    let arbiters: Vec<Arbiter> = match (
        settings.server.document_placement,
        settings.server.document_threads,
    ) {
        (DocumentPlacement::Opener, _) => Vec::new(),
        (DocumentPlacement::Threads, 0) => (0..cores()).map(|_| Arbiter::new()).collect(),
        (DocumentPlacement::Threads, n) => (0..n).map(|_| Arbiter::new()).collect(),
    };
    let document_threads = arbiters.len();
    let webhooks = crate::webhooks::Webhooks::start(&settings.webhooks, Arc::clone(&metrics));
    let registry = Registry::new(
        arbiters.iter().map(Arbiter::handle).collect(),
        persistence.clone(),
        Arc::clone(&metrics),
        document_config(&settings, &budget, webhooks.clone()),
        cluster.clone(),
    )
    .start();
    let api = (!settings.api.keys.is_empty()).then(|| {
        Arc::new(crate::api::ApiState {
            keys: settings.api.keys.clone(),
            activity_gap: settings.history.activity_gap,
            max_list_limit: settings.api.max_list_limit,
            registry: registry.clone(),
            persistence: persistence.clone(),
            cluster: cluster.clone(),
            metrics: Arc::clone(&metrics),
            document_limits: document_config(&settings, &budget, None).limits,
            limits: settings.limits.clone(),
        })
    });
    let authorizer = Authorizer::from_settings(&settings.auth).map_err(ServerError::Auth)?;
    let drain = DrainState::new();
    let sessions = Arc::new(SessionContext {
        registry,
        metrics: Arc::clone(&metrics),
        authorizer: authorizer.clone(),
        limits: settings.limits.clone(),
        idle_timeout: settings.timeouts.idle,
        ping_interval: settings.timeouts.ping_interval,
        refresh_grace: settings.auth.refresh_grace,
        shutdown: drain.sessions_signal(),
        budget: Arc::clone(&budget),
        write_stall: settings.timeouts.write_stall,
        auth_timeout: settings.timeouts.auth,
        webhooks: webhooks.clone(),
    });
    start_cloudwatch(&settings, &metrics, &budget);
    let state = Arc::new(AppState {
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
        trusted_proxies: settings.server.trusted_proxies.clone(),
        cluster: cluster.as_ref().map(|c| Arc::clone(&c.status)),
        ywebsocket_path: settings.server.ywebsocket_path.clone(),
        api,
    });
    let (server, addr, workers) = listen(&settings, state)?;
    log_auth_mode(&settings, &authorizer);
    tracing::info!(
        %node_id, %addr, store = store.kind(),
        workers, document_threads, placement = ?settings.server.document_placement,
        "zedi-sync listening"
    );
    let drainer = Drainer {
        state: drain,
        persistence: persistence.clone(),
        cluster,
        metrics,
        delay: settings.server.drain_delay,
        deadline: settings.server.drain_deadline,
    };
    drain_on_signal(drainer, server.handle());
    server.await?;
    flush_and_stop(&persistence, arbiters).await;
    Ok(())
}

/// The node's memory budget, with its resident-size sampler.
fn start_budget(settings: &Settings, metrics: &Arc<Metrics>) -> Arc<MemoryBudget> {
    let budget = MemoryBudget::new(
        settings.limits.memory_budget_bytes,
        settings.limits.memory_budget_measures_rss,
        metrics,
    );
    // Sampled even when it does not count, for zedi_memory_resident_bytes.
    if let Err(error) = crate::budget::resident::spawn_sampler(&budget) {
        tracing::warn!(%error, "cannot start the resident memory sampler: charges alone fill the budget");
    }
    budget
}

/// The write queue's batching and retry, from `[store]`.
fn persistence_config(settings: &Settings) -> PersistenceConfig {
    PersistenceConfig {
        max_batch: settings.store.max_batch,
        max_pending_writes: settings.store.max_pending_writes,
        retry_initial: settings.store.retry_initial,
        retry_max: settings.store.retry_max,
    }
}

/// Reports ActiveConnections (and MemoryPressure) unless `cloudwatch.mode` is off.
fn start_cloudwatch(settings: &Settings, metrics: &Arc<Metrics>, budget: &Arc<MemoryBudget>) {
    if let Some(reporter) = CloudWatchActor::new(
        &settings.cloudwatch,
        metrics.connections_open.clone(),
        Arc::clone(budget),
        Arc::clone(metrics),
    ) {
        reporter.start();
    }
}

/// Joins the cluster when a Redis URL is configured; `None` for a single node.
async fn start_cluster(
    settings: &Settings,
    node_id: &str,
    metrics: &Arc<Metrics>,
) -> Result<Option<Cluster>, ServerError> {
    if settings.cluster.redis_url.is_none() {
        return Ok(None);
    }
    let gauge = metrics.connections_open.clone();
    let cluster = crate::cluster::start(
        &settings.cluster,
        Arc::from(node_id),
        Arc::clone(metrics),
        Arc::new(move || gauge.get()),
    )
    .await?;
    tracing::info!(prefix = %settings.cluster.key_prefix, "cluster node: leases and relay through Redis");
    Ok(Some(cluster))
}

/// What every document actor is given: its limits (from `[limits]`), its timings (from
/// `[documents]`) and its compaction schedule (from `[store]`).
fn document_config(
    settings: &Settings,
    budget: &Arc<MemoryBudget>,
    webhooks: Option<crate::webhooks::Webhooks>,
) -> DocumentConfig {
    let limits = &settings.limits;
    DocumentConfig {
        webhooks,
        auto_version: Some(settings.history.auto_version).filter(|d| !d.is_zero()),
        budget: Arc::clone(budget),
        document_memory_factor: limits.document_memory_factor,
        max_outbound_bytes: limits.max_outbound_bytes,
        max_document_bytes: limits.max_document_bytes,
        limits: DocumentLimits {
            firewall: crate::firewall::Limits {
                max_nesting_depth: limits.max_nesting_depth,
            },
            max_pending_bytes: limits.max_pending_bytes,
            awareness: crate::awareness::AwarenessLimits {
                max_state_bytes: limits.max_awareness_state_bytes,
                max_depth: limits.max_awareness_depth,
                max_clients_per_connection: limits.max_awareness_clients_per_connection,
            },
        },
        unload_grace: settings.documents.unload_grace,
        load_timeout: settings.documents.load_timeout,
        load_retry: settings.documents.load_retry(),
        awareness_timeout: settings.documents.awareness_timeout,
        rest_after: Some(settings.documents.rest_after).filter(|d| !d.is_zero()),
        compact_after_updates: settings.store.compact_after_updates,
        compact_min_interval: settings.store.compact_min_interval,
    }
}

/// Binds the HTTP server (WebSocket upgrades, /health, /metrics); returns it with the address
/// and worker count for the start-up log.
fn listen(
    settings: &Settings,
    state: Arc<AppState>,
) -> Result<(actix_server::Server, String, usize), ServerError> {
    let addr = std::net::SocketAddr::new(settings.server.host, settings.server.port).to_string();
    let workers = match settings.server.workers {
        0 => cores(),
        n => n,
    };
    let server = actix_server::Server::build()
        .workers(workers)
        .disable_signals()
        .bind("zedi-sync", &addr, move || {
            let app = App::new()
                .app_data(web::Data::from(Arc::clone(&state)))
                .configure(|cfg| http::routes(cfg, state.api.clone()));
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
    Ok((server, addr, workers))
}

/// On the first SIGTERM/SIGINT: drain, then stop the HTTP server. A second signal exits at
/// once, without waiting for the drain.
fn drain_on_signal(drainer: Drainer, handle: actix_server::ServerHandle) {
    actix_web::rt::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        actix_web::rt::spawn(async {
            wait_for_signal().await;
            tracing::warn!("second shutdown signal: exiting at once");
            std::process::exit(1);
        });
        drainer.run().await;
        handle.stop(true).await;
    });
}

/// After the HTTP server stopped: waits (bounded) for accepted updates to become durable, then
/// stops the document threads.
async fn flush_and_stop(persistence: &Persistence, arbiters: Vec<Arbiter>) {
    match tokio::time::timeout(FLUSH_DEADLINE, persistence.flush()).await {
        Ok(()) => tracing::info!("store flushed; exiting"),
        Err(_) => tracing::error!(
            "store did not become durable within {FLUSH_DEADLINE:?}; exiting anyway"
        ),
    }
    for arbiter in arbiters {
        arbiter.stop();
    }
}

fn log_auth_mode(settings: &Settings, authorizer: &Authorizer) {
    match authorizer.mode() {
        AuthMode::Jwt => {
            tracing::info!(
                hs256 = settings.auth.jwt_secret.is_some(),
                jwks = authorizer.jwks_url().unwrap_or("-"),
                default_access = ?settings.auth.default_access,
                "JWT authentication on"
            );
            if authorizer.jwks_url().is_some() && settings.auth.audiences.is_empty() {
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
