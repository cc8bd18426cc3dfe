//! The document API (`/api/…` on the WebSocket port): documents without a WebSocket, for
//! server-side rendering, search indexing, imports and deletions.
//!
//! - `GET /api/documents/{name}?format=json|yjs|text&field=default`: the document as the store
//!   has it. Every acknowledged update, from any node, is in the store's log before its
//!   acknowledgement went out, so reading the store answers with all of them whichever node the
//!   editors are on (a loaded document's unacknowledged edits may be missing: they are not
//!   acknowledged yet).
//! - `POST /api/documents/{name}/updates` (a Yjs v1 update as the body): applied by the document
//!   actor exactly like a client's (firewall, size limit, broadcast to every editor on every
//!   node); the answer comes once it is durable.
//! - `DELETE /api/documents/{name}`: every editor gets a CLOSE "document deleted" (on every node,
//!   through the relay), what was queued is written, then the store forgets the document.
//! - `GET /api/documents?prefix=&after=&limit=`: names, sizes, last write, paged by name.
//!
//! A name is one path segment, percent-encoded (`notes%2Fa` is `notes/a`).

mod history;
mod keys;
pub mod settings;
pub mod time;

pub use settings::{ApiKey, ApiSettings, KeyAccess};

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::cluster::relay::RelayKind;
use crate::document::{
    ApiUpdate, DeleteDocument, DocumentActor, DocumentLimits, DocumentState, JoinError,
    UpdateRefusal,
};
use crate::metrics::Metrics;
use crate::persistence::Persistence;
use crate::protocol::ywebsocket::percent_decode;
use crate::registry::{Loaded, Open, Registry};
use zedi_protocol::document::export::{JsonStyle, document_json, field_text};

/// The `op` label of `zedi_api_requests_total`: every operation of the API.
pub const OPS: [&str; 8] = [
    "read",
    "update",
    "delete",
    "list",
    "versions",
    "create_version",
    "restore",
    "activity",
];

/// How often an update retries an actor that was unloading when it arrived.
const MAX_OPEN_ATTEMPTS: u32 = 5;

/// Everything the API handlers use, shared by the HTTP workers.
pub struct ApiState {
    /// `history.activity_gap_ms`: one user's edits closer than this are one activity entry.
    pub activity_gap: Duration,
    pub keys: Vec<ApiKey>,
    pub max_list_limit: usize,
    pub registry: Addr<Registry>,
    pub persistence: Persistence,
    pub cluster: Option<Cluster>,
    pub metrics: Arc<Metrics>,
    /// The bounds a restored document is checked with (as a loading document actor does).
    pub document_limits: DocumentLimits,
    pub limits: crate::limits::Limits,
}

/// Registers the API's routes (none without keys: every `/api` path is then a 404).
pub fn routes(cfg: &mut web::ServiceConfig, state: Option<Arc<ApiState>>) {
    let Some(state) = state.filter(|s| !s.keys.is_empty()) else {
        return;
    };
    let max_body = state.limits.max_frame_bytes;
    cfg.service(
        web::scope("/api")
            .app_data(web::Data::from(state))
            .app_data(web::PayloadConfig::new(max_body))
            .route("/documents", web::get().to(list_documents))
            .route("/documents/{name}", web::get().to(read_document))
            .route("/documents/{name}", web::delete().to(delete_document))
            .route("/documents/{name}/updates", web::post().to(post_update))
            .route(
                "/documents/{name}/versions",
                web::get().to(history::list_versions),
            )
            .route(
                "/documents/{name}/versions",
                web::post().to(history::create_version),
            )
            .route(
                "/documents/{name}/versions/{id}/restore",
                web::post().to(history::restore),
            )
            .route(
                "/documents/{name}/activity",
                web::get().to(history::activity),
            ),
    );
}

/// An answer, counted and logged under the key that asked (never the key itself).
struct Outcome {
    op: &'static str,
    key: Option<String>,
    document: Option<String>,
}

impl Outcome {
    fn new(op: &'static str) -> Self {
        Outcome {
            op,
            key: None,
            document: None,
        }
    }

    fn finish(self, state: &ApiState, response: HttpResponse) -> HttpResponse {
        let status = response.status();
        state
            .metrics
            .api_requests_total
            .with_label_values(&[self.op, status.as_str()])
            .inc();
        tracing::info!(
            op = self.op,
            key = self.key.as_deref().unwrap_or("-"),
            document = self.document.as_deref().unwrap_or("-"),
            status = status.as_u16(),
            "document API"
        );
        response
    }
}

/// A refused request: its status and a message, sent as `{"error": "…"}`.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn into_response(self) -> HttpResponse {
        #[derive(Serialize)]
        struct Error {
            error: String,
        }
        HttpResponse::build(self.status).json(Error {
            error: self.message,
        })
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
    }
}

impl ApiState {
    fn authorize(&self, req: &HttpRequest, need: KeyAccess) -> Result<&ApiKey, ApiError> {
        let presented = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(presented) = presented else {
            return Err(error(StatusCode::UNAUTHORIZED, "missing bearer key"));
        };
        let Some(key) = keys::find(&self.keys, presented) else {
            return Err(error(StatusCode::UNAUTHORIZED, "unknown key"));
        };
        if need == KeyAccess::ReadWrite && key.access == KeyAccess::ReadOnly {
            return Err(error(StatusCode::FORBIDDEN, "read-only key"));
        }
        Ok(key)
    }

    /// The document named by the path segment after `/api/documents/`, from the raw path so
    /// that an encoded `/` stays part of the name.
    fn document_name(&self, req: &HttpRequest) -> Result<String, ApiError> {
        let rest = req
            .uri()
            .path()
            .strip_prefix("/api/documents/")
            .unwrap_or_default();
        let segment = rest.split('/').next().unwrap_or_default();
        let name =
            percent_decode(segment).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
        if let Some(reason) = crate::session::name_problem(&name, &self.limits) {
            return Err(error(StatusCode::BAD_REQUEST, reason));
        }
        Ok(name)
    }

    /// The document's actor on this node, loading it if needed; retried when it was unloading.
    async fn open(&self, name: &Arc<str>) -> Result<Addr<DocumentActor>, ApiError> {
        let open = self.registry.send(Open {
            name: Arc::clone(name),
            near: None,
        });
        match open.await {
            Ok(Ok(doc)) => Ok(doc),
            Ok(Err(JoinError::ServerBusy)) => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "server memory nearly full",
            )),
            _ => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "document unavailable",
            )),
        }
    }
}

#[derive(Deserialize)]
struct ReadQuery {
    format: Option<String>,
    field: Option<String>,
    /// A version's id: the document as it was at that version.
    version: Option<String>,
    /// An RFC 3339 instant: the document as it was then (within `history.retention_secs`).
    at: Option<String>,
}

async fn read_document(
    req: HttpRequest,
    query: web::Query<ReadQuery>,
    state: web::Data<ApiState>,
) -> HttpResponse {
    let mut outcome = Outcome::new("read");
    let response = read(&req, &query, &state, &mut outcome).await;
    outcome.finish(&state, response.unwrap_or_else(ApiError::into_response))
}

async fn read(
    req: &HttpRequest,
    query: &ReadQuery,
    state: &ApiState,
    outcome: &mut Outcome,
) -> Result<HttpResponse, ApiError> {
    outcome.key = Some(state.authorize(req, KeyAccess::ReadOnly)?.name.clone());
    let name = state.document_name(req)?;
    outcome.document = Some(name.clone());
    let format = query.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "yjs" | "text") {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "format must be json, yjs or text",
        ));
    }
    // Now, at a version, or at an instant (time travel).
    let entries =
        history::entries(state, &name, query.version.as_deref(), query.at.as_deref()).await?;
    // Rebuilding a large document is CPU work: off the HTTP worker.
    let limits = state.document_limits;
    let field = query.field.clone().unwrap_or_else(|| "default".into());
    let format = format.to_string();
    let rendered = web::block(move || {
        let (document, _) = DocumentState::restore(entries.iter().map(Vec::as_slice), limits);
        match format.as_str() {
            "yjs" => document.encode_state().map(Rendered::Yjs).ok(),
            "text" => Some(Rendered::Text(
                document.live_doc().and_then(|doc| field_text(doc, &field)),
            )),
            _ => document
                .live_doc()
                .map(|doc| Rendered::Json(document_json(doc, JsonStyle::Typed))),
        }
    })
    .await
    .ok()
    .flatten();
    match rendered {
        Some(Rendered::Yjs(bytes)) => Ok(HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(bytes)),
        Some(Rendered::Json(json)) => Ok(HttpResponse::Ok().json(json)),
        Some(Rendered::Text(Some(text))) => Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(text)),
        Some(Rendered::Text(None)) => {
            Err(error(StatusCode::NOT_FOUND, "no text field of that name"))
        }
        None => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the stored document cannot be rendered",
        )),
    }
}

enum Rendered {
    Yjs(Vec<u8>),
    Json(serde_json::Value),
    Text(Option<String>),
}

async fn post_update(req: HttpRequest, body: Bytes, state: web::Data<ApiState>) -> HttpResponse {
    let mut outcome = Outcome::new("update");
    let response = update(&req, body, &state, &mut outcome).await;
    outcome.finish(&state, response.unwrap_or_else(ApiError::into_response))
}

async fn update(
    req: &HttpRequest,
    body: Bytes,
    state: &ApiState,
    outcome: &mut Outcome,
) -> Result<HttpResponse, ApiError> {
    outcome.key = Some(state.authorize(req, KeyAccess::ReadWrite)?.name.clone());
    let name: Arc<str> = Arc::from(state.document_name(req)?);
    outcome.document = Some(name.to_string());
    if body.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "empty body: send a Yjs v1 update",
        ));
    }
    let mut attempt = 0;
    let durable = loop {
        attempt += 1;
        let doc = state.open(&name).await?;
        match doc
            .send(ApiUpdate {
                update: body.clone(),
                author: Arc::from(format!("api:{}", outcome.key.as_deref().unwrap_or("-"))),
            })
            .await
        {
            Ok(Ok(durable)) => break durable,
            Ok(Err(refusal)) => return Err(refused(refusal)),
            // The actor stopped with the update in its mailbox: it was unloading.
            Err(_) if attempt < MAX_OPEN_ATTEMPTS => continue,
            Err(_) => {
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "document unavailable",
                ));
            }
        }
    };
    match durable.await {
        Ok(true) => Ok(HttpResponse::Ok().json(serde_json::json!({"durable": true}))),
        _ => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store did not confirm the write (shutting down)",
        )),
    }
}

fn refused(refusal: UpdateRefusal) -> ApiError {
    match refusal {
        UpdateRefusal::StoreFull => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store overloaded; retry later",
        ),
        UpdateRefusal::TooLarge => error(StatusCode::PAYLOAD_TOO_LARGE, "document too large"),
        UpdateRefusal::Invalid(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
        UpdateRefusal::Fault => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the document failed on this update and was reloaded",
        ),
    }
}

async fn delete_document(req: HttpRequest, state: web::Data<ApiState>) -> HttpResponse {
    let mut outcome = Outcome::new("delete");
    let response = delete(&req, &state, &mut outcome).await;
    outcome.finish(&state, response.unwrap_or_else(ApiError::into_response))
}

async fn delete(
    req: &HttpRequest,
    state: &ApiState,
    outcome: &mut Outcome,
) -> Result<HttpResponse, ApiError> {
    outcome.key = Some(state.authorize(req, KeyAccess::ReadWrite)?.name.clone());
    let name: Arc<str> = Arc::from(state.document_name(req)?);
    outcome.document = Some(name.to_string());
    let loaded = state
        .registry
        .send(Loaded {
            name: Arc::clone(&name),
        })
        .await
        .ok()
        .flatten();
    match loaded {
        // The actor closes its editors, tells the other nodes and stops.
        Some(doc) => {
            let _ = doc.send(DeleteDocument { relay: true }).await;
        }
        None => {
            if let Some(cluster) = &state.cluster {
                cluster
                    .publisher
                    .publish(&name, RelayKind::Deleted, Bytes::new());
            }
        }
    }
    // What this node had queued for the document is written first, so it cannot land after the
    // delete and bring part of the document back.
    let _ = tokio::time::timeout(Duration::from_secs(10), state.persistence.flush()).await;
    let existed = state
        .persistence
        .store()
        .delete(&name)
        .await
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")))?;
    if existed {
        Ok(HttpResponse::Ok().json(serde_json::json!({"deleted": true})))
    } else {
        Err(error(StatusCode::NOT_FOUND, "no such document"))
    }
}

#[derive(Deserialize)]
struct ListQuery {
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct Listed {
    name: String,
    bytes: u64,
    updated_at: String,
}

#[derive(Serialize)]
struct ListPage {
    documents: Vec<Listed>,
    /// Pass as `after` for the next page; `null` on the last one.
    next: Option<String>,
}

async fn list_documents(
    req: HttpRequest,
    query: web::Query<ListQuery>,
    state: web::Data<ApiState>,
) -> HttpResponse {
    let mut outcome = Outcome::new("list");
    let response = list(&req, &query, &state, &mut outcome).await;
    outcome.finish(&state, response.unwrap_or_else(ApiError::into_response))
}

async fn list(
    req: &HttpRequest,
    query: &ListQuery,
    state: &ApiState,
    outcome: &mut Outcome,
) -> Result<HttpResponse, ApiError> {
    outcome.key = Some(state.authorize(req, KeyAccess::ReadOnly)?.name.clone());
    let limit = query.limit.unwrap_or(100).clamp(1, state.max_list_limit);
    let found = state
        .persistence
        .store()
        .list(
            query.prefix.as_deref().unwrap_or(""),
            query.after.as_deref().unwrap_or(""),
            limit,
        )
        .await
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")))?;
    let next = (found.len() == limit)
        .then(|| found.last().map(|d| d.name.clone()))
        .flatten();
    let documents = found
        .into_iter()
        .map(|d| Listed {
            name: d.name,
            bytes: d.bytes,
            updated_at: time::rfc3339_ms(d.updated_at_ms),
        })
        .collect();
    Ok(HttpResponse::Ok().json(ListPage { documents, next }))
}
