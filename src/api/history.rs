//! History through the document API: reading a version or an instant, making and listing
//! versions, restoring one, and who changed what (activity).
//!
//! - `GET /api/documents/{name}?version=ID` or `?at=<RFC 3339>`: any format, as it was.
//! - `POST /api/documents/{name}/versions` `{"name": …, "meta": {…}}` → `{id, at, name}`: the
//!   document as it is now (everything acknowledged), kept until the retention passes it.
//! - `GET /api/documents/{name}/versions?limit=&offset=`: newest first.
//! - `POST /api/documents/{name}/versions/{id}/restore`: first a version of the state before
//!   the restore, then the document made equal to the version as a new change, applied by the
//!   document actor like any edit (editors on every node see it live; their unsent edits merge
//!   on top).
//! - `GET /api/documents/{name}/activity?from=&to=&gap_ms=`: edits grouped by user and by pauses
//!   longer than the gap, with what they inserted and deleted.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::time::{parse_rfc3339, rfc3339_ms};
use super::{ApiError, ApiState, KeyAccess, Outcome, error, refused};
use crate::document::{CurrentState, RestoreTo};
use crate::store::{HistoryPoint, HistoryRow, Version, VersionInfo};
use zedi_protocol::document::history::update_counts;

/// Most updates one activity answer reads (each is decoded and counted): the rest is a next
/// page (`next_from`).
const MAX_ACTIVITY_ROWS: usize = 50_000;

fn store_error(e: crate::store::StoreError) -> ApiError {
    error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}"))
}

use crate::store::now_ms;

/// What rebuilds the document for a read: now, at a version, or at an instant.
pub(super) async fn entries(
    state: &ApiState,
    name: &str,
    version: Option<&str>,
    at: Option<&str>,
) -> Result<Vec<Vec<u8>>, ApiError> {
    let store = state.persistence.store();
    if let Some(id) = version {
        return match store.version(name, id).await.map_err(store_error)? {
            Some(version) => Ok(vec![version.state]),
            None => Err(error(StatusCode::NOT_FOUND, "no such version")),
        };
    }
    let point = match at {
        Some(text) => HistoryPoint::At(parse_rfc3339(text).ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "`at` must be an RFC 3339 instant, e.g. 2026-12-02T15:04:05Z",
            )
        })?),
        None => {
            let stored = store.load(name).await.map_err(store_error)?;
            if stored.snapshot.is_none() && stored.updates.is_empty() {
                return Err(error(StatusCode::NOT_FOUND, "no such document"));
            }
            return Ok(stored.entries().map(<[u8]>::to_vec).collect());
        }
    };
    let history = store.history(name, point).await.map_err(store_error)?;
    if let HistoryPoint::At(ms) = point
        && ms < history.base_as_of_ms
    {
        return Err(error(
            StatusCode::GONE,
            format!(
                "history of this document starts at {} (history.retention_secs; with it off, at the last compaction)",
                rfc3339_ms(history.base_as_of_ms)
            ),
        ));
    }
    if history.base.is_none() && history.rows.is_empty() {
        return Err(error(
            StatusCode::NOT_FOUND,
            "no such document at that instant",
        ));
    }
    Ok(history.entries().map(<[u8]>::to_vec).collect())
}

#[derive(Deserialize)]
pub(super) struct NewVersion {
    name: Option<String>,
    meta: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Made {
    id: String,
    at: String,
    name: String,
}

#[derive(Serialize)]
struct Listed {
    id: String,
    name: String,
    meta: serde_json::Value,
    at: String,
    author: String,
    auto: bool,
}

impl From<VersionInfo> for Listed {
    fn from(v: VersionInfo) -> Self {
        Listed {
            at: rfc3339_ms(v.at_ms),
            id: v.id,
            name: v.name,
            meta: v.meta,
            author: v.author,
            auto: v.auto,
        }
    }
}

/// Keeps `state` as a new version; returns what the API answers.
async fn keep_version(
    state: &ApiState,
    name: &str,
    label: String,
    meta: serde_json::Value,
    author: String,
    document: Vec<u8>,
) -> Result<VersionInfo, ApiError> {
    let info = VersionInfo {
        id: uuid::Uuid::new_v4().simple().to_string(),
        name: label,
        meta,
        at_ms: now_ms(),
        author,
        auto: false,
    };
    let version = Version {
        info: info.clone(),
        state: document,
    };
    state
        .persistence
        .store()
        .put_version(name, &version)
        .await
        .map_err(store_error)?;
    Ok(info)
}

pub(super) async fn create_version(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ApiState>,
) -> HttpResponse {
    let mut outcome = Outcome::new("create_version");
    let response = async {
        let key = state.authorize(&req, KeyAccess::ReadWrite)?.name.clone();
        outcome.key = Some(key.clone());
        let name = state.document_name(&req)?;
        outcome.document = Some(name.clone());
        let asked: NewVersion = if body.is_empty() {
            NewVersion {
                name: None,
                meta: None,
            }
        } else {
            serde_json::from_slice(&body)
                .map_err(|e| error(StatusCode::BAD_REQUEST, format!("body: {e}")))?
        };
        let meta = asked.meta.unwrap_or_else(|| serde_json::json!({}));
        if !meta.is_object() || meta.to_string().len() > 16 * 1024 {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "meta must be a JSON object of at most 16 KiB",
            ));
        }
        let label = asked.name.unwrap_or_default();
        if label.len() > 256 {
            return Err(error(StatusCode::BAD_REQUEST, "name: at most 256 bytes"));
        }
        // Everything acknowledged, from every node: the store's state.
        let stored = state
            .persistence
            .store()
            .load(&name)
            .await
            .map_err(store_error)?;
        if stored.snapshot.is_none() && stored.updates.is_empty() {
            return Err(error(StatusCode::NOT_FOUND, "no such document"));
        }
        let limits = state.document_limits;
        let document = web::block(move || {
            crate::document::DocumentState::restore(stored.entries(), limits)
                .0
                .encode_state()
                .ok()
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the document",
            )
        })?;
        let info = keep_version(&state, &name, label, meta, key, document).await?;
        Ok(HttpResponse::Created().json(Made {
            id: info.id,
            at: rfc3339_ms(info.at_ms),
            name: info.name,
        }))
    }
    .await;
    outcome.finish(&state, response.unwrap_or_else(ApiError::into_response))
}

#[derive(Deserialize)]
pub(super) struct Page {
    limit: Option<usize>,
    offset: Option<usize>,
}

pub(super) async fn list_versions(
    req: HttpRequest,
    page: web::Query<Page>,
    state: web::Data<ApiState>,
) -> HttpResponse {
    let mut outcome = Outcome::new("versions");
    let response = async {
        outcome.key = Some(state.authorize(&req, KeyAccess::ReadOnly)?.name.clone());
        let name = state.document_name(&req)?;
        outcome.document = Some(name.clone());
        let limit = page.limit.unwrap_or(100).clamp(1, state.max_list_limit);
        let offset = page.offset.unwrap_or(0);
        let found = state
            .persistence
            .store()
            .versions(&name, offset, limit)
            .await
            .map_err(store_error)?;
        let next = (found.len() == limit).then_some(offset + limit);
        let versions: Vec<Listed> = found.into_iter().map(Listed::from).collect();
        Ok(HttpResponse::Ok().json(serde_json::json!({"versions": versions, "next_offset": next})))
    }
    .await;
    outcome.finish(&state, response.unwrap_or_else(ApiError::into_response))
}

pub(super) async fn restore(req: HttpRequest, state: web::Data<ApiState>) -> HttpResponse {
    let mut outcome = Outcome::new("restore");
    let response = async {
        let key = state.authorize(&req, KeyAccess::ReadWrite)?.name.clone();
        outcome.key = Some(key.clone());
        let name: Arc<str> = Arc::from(state.document_name(&req)?);
        outcome.document = Some(name.to_string());
        let id = req.match_info().get("id").unwrap_or_default().to_string();
        let version = state
            .persistence
            .store()
            .version(&name, &id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| error(StatusCode::NOT_FOUND, "no such version"))?;
        let doc = state.open(&name).await?;
        // First the state before the restore, as a version of its own.
        let before = doc
            .send(CurrentState)
            .await
            .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "document unavailable"))?
            .map_err(refused)?;
        let pre = keep_version(
            &state,
            &name,
            format!("before restoring {}", version.info.name),
            serde_json::json!({"restored_version": id}),
            format!("restore:{key}"),
            before,
        )
        .await?;
        let durable = doc
            .send(RestoreTo {
                state: version.state,
                author: Arc::from(format!("restore:{key}")),
            })
            .await
            .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "document unavailable"))?
            .map_err(refused)?;
        match durable.await {
            Ok(true) => Ok(HttpResponse::Ok().json(serde_json::json!({
                "restored": id,
                "before": {"id": pre.id, "at": rfc3339_ms(pre.at_ms), "name": pre.name},
            }))),
            _ => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store did not confirm the write (shutting down)",
            )),
        }
    }
    .await;
    outcome.finish(&state, response.unwrap_or_else(ApiError::into_response))
}

#[derive(Deserialize)]
pub(super) struct ActivityQuery {
    from: Option<String>,
    to: Option<String>,
    gap_ms: Option<u64>,
}

/// One user's edits without a pause longer than the gap.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub(super) struct ActivityEntry {
    user: String,
    from: String,
    to: String,
    updates: u64,
    inserted: u64,
    deleted: u64,
}

/// Groups `rows` (oldest first) by user and by pauses longer than `gap_ms`.
fn group(rows: &[HistoryRow], gap_ms: i64) -> Vec<ActivityEntry> {
    struct Open {
        user: String,
        from: i64,
        to: i64,
        updates: u64,
        inserted: u64,
        deleted: u64,
    }
    let mut entries: Vec<Open> = Vec::new();
    for row in rows {
        let counts = update_counts(&row.update).unwrap_or_default();
        let current = entries
            .iter_mut()
            .rev()
            .find(|e| e.user == row.author)
            .filter(|e| row.at_ms - e.to <= gap_ms);
        match current {
            Some(entry) => {
                entry.to = row.at_ms;
                entry.updates += 1;
                entry.inserted += counts.inserted;
                entry.deleted += counts.deleted;
            }
            None => entries.push(Open {
                user: row.author.clone(),
                from: row.at_ms,
                to: row.at_ms,
                updates: 1,
                inserted: counts.inserted,
                deleted: counts.deleted,
            }),
        }
    }
    entries
        .into_iter()
        .map(|e| ActivityEntry {
            user: e.user,
            from: rfc3339_ms(e.from),
            to: rfc3339_ms(e.to),
            updates: e.updates,
            inserted: e.inserted,
            deleted: e.deleted,
        })
        .collect()
}

pub(super) async fn activity(
    req: HttpRequest,
    query: web::Query<ActivityQuery>,
    state: web::Data<ApiState>,
) -> HttpResponse {
    let mut outcome = Outcome::new("activity");
    let response = async {
        outcome.key = Some(state.authorize(&req, KeyAccess::ReadOnly)?.name.clone());
        let name = state.document_name(&req)?;
        outcome.document = Some(name.clone());
        let instant = |text: &Option<String>, default: i64| match text {
            None => Ok(default),
            Some(t) => parse_rfc3339(t)
                .ok_or_else(|| error(StatusCode::BAD_REQUEST, "from/to must be RFC 3339 instants")),
        };
        let (from, to) = (instant(&query.from, 0)?, instant(&query.to, i64::MAX)?);
        let gap = query
            .gap_ms
            .map_or(state.activity_gap.as_millis() as i64, |g| g as i64);
        let rows = state
            .persistence
            .store()
            .history_range(&name, from, to, MAX_ACTIVITY_ROWS)
            .await
            .map_err(store_error)?;
        // Cut at the limit: the next page starts after the last instant read.
        let next_from = (rows.len() == MAX_ACTIVITY_ROWS)
            .then(|| rows.last().map(|r| rfc3339_ms(r.at_ms + 1)))
            .flatten();
        let entries = web::block(move || group(&rows, gap))
            .await
            .map_err(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "activity failed"))?;
        Ok(HttpResponse::Ok()
            .json(serde_json::json!({ "activity": entries, "next_from": next_from })))
    }
    .await;
    outcome.finish(&state, response.unwrap_or_else(ApiError::into_response))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(at_ms: i64, author: &str, text: &str) -> HistoryRow {
        HistoryRow {
            seq: at_ms,
            at_ms,
            author: author.into(),
            update: crate::store::contract::text_update(at_ms as u64 + 1, text).to_vec(),
        }
    }

    #[test]
    fn edits_group_by_user_and_pause() {
        let rows = [
            row(1_000, "ana", "ab"),
            row(2_000, "bo", "c"),
            row(3_000, "ana", "de"),
            row(100_000, "ana", "f"),
        ];
        let grouped = group(&rows, 10_000);
        let summary: Vec<(&str, u64, u64)> = grouped
            .iter()
            .map(|e| (e.user.as_str(), e.updates, e.inserted))
            .collect();
        assert_eq!(summary, [("ana", 2, 4), ("bo", 1, 1), ("ana", 1, 1)]);
        assert_eq!(grouped[0].from, rfc3339_ms(1_000));
        assert_eq!(grouped[0].to, rfc3339_ms(3_000));
    }
}
