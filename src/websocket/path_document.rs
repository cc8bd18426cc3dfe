//! The y-websocket side of an upgrade request: the document its path names, and the token it
//! carries, decided before the handshake so a refused client gets HTTP 401/403 and no socket.
//!
//! Why a path names a document only *possibly*: the Hocuspocus route accepts any path, and
//! providers in the field connect to whatever URL their app was given. So a path under
//! `server.ywebsocket_path` makes the socket a y-websocket candidate, and its first frame decides
//! (see `session::ywebsocket`). A token in the request (`?token=` or `Sec-WebSocket-Protocol`)
//! is only ever sent by y-websocket clients, so it is checked here, at the upgrade.

use std::sync::Arc;

use actix_http::RequestHead;
use actix_http::StatusCode;
use actix_http::header::SEC_WEBSOCKET_PROTOCOL;

use super::Refusal;
use crate::auth::{Access, AuthResult};
use crate::http::AppState;
use crate::protocol::ywebsocket;
use crate::session::PathDocument;

/// What the path and headers of an upgrade request say of y-websocket.
pub(super) struct PathRequest {
    pub(super) document: Option<PathDocument>,
    /// The `Sec-WebSocket-Protocol` entry the token came in: the handshake must name it back,
    /// or the browser fails the connection.
    pub(super) protocol: Option<String>,
}

/// Reads the document name and the token; decides the token when there is one.
pub(super) async fn examine(head: &RequestHead, state: &AppState) -> Result<PathRequest, Refusal> {
    let none = PathRequest {
        document: None,
        protocol: None,
    };
    let Some(name) = ywebsocket::document_from_path(head.uri.path(), &state.ywebsocket_path) else {
        return Ok(none);
    };
    let limits = &state.sessions.limits;
    let name = match name {
        Ok(name) => match crate::session::name_problem(&name, limits) {
            None => Arc::<str>::from(name),
            Some(reason) => return Ok(with_bad_name(reason)),
        },
        Err(_) => return Ok(with_bad_name("bad percent-encoding in the document name")),
    };
    let (token, protocol) = token_of(head);
    let Some(token) = token else {
        return Ok(PathRequest {
            document: Some(PathDocument {
                name: Ok(name),
                decision: None,
            }),
            protocol: None,
        });
    };
    let decision = state.sessions.authorizer.decide(&token, &name).await;
    state
        .metrics
        .auth_results_total
        .with_label_values(&[decision.result.label()])
        .inc();
    if let Access::Denied { reason } = &decision.access {
        tracing::info!(result = decision.result.label(), %reason, "y-websocket upgrade refused");
        return Err(match decision.result {
            AuthResult::DeniedPolicy => Refusal::new(StatusCode::FORBIDDEN, "forbidden\n"),
            _ => Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized\n"),
        });
    }
    Ok(PathRequest {
        document: Some(PathDocument {
            name: Ok(name),
            decision: Some(decision),
        }),
        protocol,
    })
}

/// A path that cannot name a document: still a Hocuspocus route, but a y-websocket client there
/// is told why it cannot open anything.
fn with_bad_name(reason: &'static str) -> PathRequest {
    PathRequest {
        document: Some(PathDocument {
            name: Err(reason),
            decision: None,
        }),
        protocol: None,
    }
}

/// The token of a y-websocket request: `?token=` first, else the first `Sec-WebSocket-Protocol`
/// entry (browsers cannot set other headers on a WebSocket). Returns the entry to echo too.
fn token_of(head: &RequestHead) -> (Option<String>, Option<String>) {
    if let Some(Ok(token)) = head
        .uri
        .query()
        .and_then(|q| ywebsocket::query_param(q, "token"))
    {
        return (Some(token), None);
    }
    let offered = head
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').map(str::trim).find(|p| !p.is_empty()))
        .map(str::to_string);
    (offered.clone(), offered)
}
