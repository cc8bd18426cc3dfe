//! HTTP surface: `/health` for the ALB and `/metrics` for Prometheus. The WebSocket upgrade (on
//! any path, as Hocuspocus: the document name travels inside the frames) is in
//! [`crate::websocket`].

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::limits::{Cidr, ConnectionLimiter};
use crate::metrics::Metrics;
use crate::persistence::Persistence;
use crate::session::SessionContext;

/// Shared, read-mostly state of the HTTP handlers.
pub struct AppState {
    pub node_id: String,
    pub drain: crate::drain::DrainState,
    pub metrics: Arc<Metrics>,
    pub persistence: Persistence,
    pub sessions: Arc<SessionContext>,
    pub max_frame_bytes: usize,
    /// Origins allowed to upgrade; empty: any.
    pub allowed_origins: Vec<String>,
    pub limiter: Arc<ConnectionLimiter>,
    /// Proxies whose X-Forwarded-For is believed (the ALB).
    pub trusted_proxies: Vec<Cidr>,
    /// Cluster state, when this node is part of one.
    pub cluster: Option<Arc<crate::cluster::ClusterStatus>>,
    /// `server.ywebsocket_path`: paths under it name a y-websocket document.
    pub ywebsocket_path: String,
    /// The document API (`None`: no keys configured, its paths are 404s).
    pub api: Option<Arc<crate::api::ApiState>>,
}

#[derive(Serialize)]
struct ClusterHealth {
    redis: &'static str,
    nodes: i64,
    leases_owned: i64,
}

#[derive(Serialize)]
struct Health<'a> {
    status: &'static str,
    node_id: &'a str,
    connections: i64,
    documents: i64,
    version: &'static str,
    store: &'static str,
    store_kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterHealth>,
}

pub fn routes(cfg: &mut web::ServiceConfig, api: Option<Arc<crate::api::ApiState>>) {
    crate::api::routes(cfg, api);
    cfg.route("/health", web::get().to(health))
        .route("/metrics", web::get().to(metrics))
        .default_service(web::to(not_found));
}

async fn health(state: web::Data<AppState>) -> HttpResponse {
    let draining = state.drain.is_draining();
    let body = Health {
        status: if draining { "draining" } else { "ok" },
        node_id: &state.node_id,
        connections: state.metrics.connections_open.get(),
        documents: state.metrics.documents_open.get(),
        version: env!("CARGO_PKG_VERSION"),
        // Degraded still serves edits from memory, so the ALB must keep routing here.
        store: if state.persistence.is_degraded() {
            "degraded"
        } else {
            "ok"
        },
        store_kind: state.persistence.store().kind(),
        // Redis trouble degrades cross-node sync only: local editing goes on, so still 200.
        cluster: state.cluster.as_ref().map(|c| ClusterHealth {
            redis: if c.redis_ok() { "ok" } else { "degraded" },
            nodes: c.nodes.load(std::sync::atomic::Ordering::Relaxed),
            leases_owned: c.owned.load(std::sync::atomic::Ordering::Relaxed),
        }),
    };
    if draining {
        // The ALB stops routing here as soon as it sees this.
        HttpResponse::ServiceUnavailable().json(body)
    } else {
        HttpResponse::Ok().json(body)
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// Plain HTTP on any other path. Upgrade requests never get here: actix-http hands them to
/// [`crate::websocket::upgrade`].
async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().body("zedi-sync: connect with a WebSocket\n")
}
