//! HTTP surface: the WebSocket upgrade (on any path, as Hocuspocus: the document name travels
//! inside the frames), `/health` for the ALB and `/metrics` for Prometheus.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;
use serde::Serialize;

use crate::limits::{Cidr, ConnectionLimiter, Refused, client_ip};
use crate::metrics::Metrics;
use crate::persistence::Persistence;
use crate::session::{SessionActor, SessionContext};

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

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/metrics", web::get().to(metrics))
        .default_service(web::to(upgrade));
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

async fn upgrade(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let is_upgrade = req
        .headers()
        .get(actix_web::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !is_upgrade {
        return Ok(HttpResponse::NotFound().body("zedi-sync: connect with a WebSocket\n"));
    }
    if state.drain.is_draining() {
        return Ok(HttpResponse::ServiceUnavailable().body("draining\n"));
    }
    // Browsers always send Origin; a client without one is not a browser page, so the
    // cross-site concern the allow-list addresses does not apply to it.
    if !state.allowed_origins.is_empty()
        && let Some(origin) = req.headers().get(actix_web::http::header::ORIGIN)
    {
        let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
        if !state.allowed_origins.iter().any(|o| o == origin) {
            state.metrics.origin_rejections_total.inc();
            tracing::info!(%origin, "WebSocket upgrade refused: origin not allowed");
            return Ok(HttpResponse::Forbidden().body("origin not allowed\n"));
        }
    }
    let peer = req
        .peer_addr()
        .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |a| a.ip());
    let forwarded = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let ip = client_ip(peer, forwarded, &state.trusted_proxies);
    let slot = match state.limiter.try_acquire(ip) {
        Ok(slot) => slot,
        Err(refused) => {
            let (label, response) = match refused {
                Refused::NodeFull => (
                    "node_full",
                    HttpResponse::ServiceUnavailable().body("too many connections on this node\n"),
                ),
                Refused::AddressFull => (
                    "address_full",
                    HttpResponse::TooManyRequests()
                        .body("too many connections from this address\n"),
                ),
            };
            state
                .metrics
                .connections_refused_total
                .with_label_values(&[label])
                .inc();
            tracing::info!(%ip, reason = label, "WebSocket upgrade refused: connection limit");
            return Ok(response);
        }
    };
    let session = SessionActor::new(Arc::clone(&state.sessions), slot);
    ws::WsResponseBuilder::new(session, &req, stream)
        .frame_size(state.max_frame_bytes)
        .start()
}
