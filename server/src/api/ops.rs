//! Operations and administration: health, metrics, OpenAPI, API tokens, audit export.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sigil_manifests::manifest::check_identifier;

use crate::audit::AuditEntry;

use super::{new_token, ApiJson, AppState, Caller, Db};
use crate::error::ApiError;
use crate::store::{now_secs, AuditEvent, Role, TokenGrant, TokenInfo};

/// The OpenAPI document.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// `GET /healthz`: the database answers.
pub async fn healthz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.db.run(|s| s.audit_head()).await?;
    Ok(Json(serde_json::json!({ "status": "ok" })))
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let summary = state.db.run(|s| s.rollout_summary()).await?;
    let text = state.metrics.render(&summary);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Token request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    name: String,
    role: Role,
}

/// A new token: shown once.
#[derive(Debug, Serialize)]
pub struct NewToken {
    id: i64,
    name: String,
    role: Role,
    token: String,
}

/// `POST /api/v1/tokens`.
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    let actor = caller.require(&[Role::Admin])?.name.clone();
    check_identifier(&req.name).map_err(|_| {
        ApiError::BadRequest("name must be 1 to 64 characters of [A-Za-z0-9._+-]".to_owned())
    })?;
    if req.role == Role::Device {
        return Err(ApiError::BadRequest(
            "device tokens are issued by the challenge-response session endpoint".to_owned(),
        ));
    }
    let (token, hash) = new_token();
    let event = AuditEvent::new(
        &actor,
        "token.create",
        &req.name,
        serde_json::json!({ "role": req.role }),
    );
    let (name, role) = (req.name.clone(), req.role);
    let id = state
        .db
        .run(move |s| {
            let grant = TokenGrant {
                hash: &hash,
                name: &name,
                role,
                device_id: None,
                expires_at: None,
            };
            s.create_token(&grant, now_secs(), Some(&event))
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(NewToken {
            id,
            name: req.name,
            role: req.role,
            token,
        }),
    ))
}

/// `GET /api/v1/tokens`.
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    caller.require(&[Role::Admin])?;
    Ok(Json(state.db.run(|s| s.tokens()).await?))
}

/// `DELETE /api/v1/tokens/{id}`.
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let actor = caller.require(&[Role::Admin])?.name.clone();
    let n: i64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("token {id:.70} not found")))?;
    let event = AuditEvent::new(&actor, "token.revoke", &id, serde_json::json!({}));
    state.db.run(move |s| s.revoke_token(n, &event)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Audit entries read from the database per step of the export stream.
const EXPORT_PAGE: u32 = 1000;

enum Export {
    Page(Db, Vec<AuditEntry>),
    Failed(std::io::Error),
    Done,
}

fn jsonl(entries: &[AuditEntry]) -> Result<Bytes, serde_json::Error> {
    let mut text = String::new();
    for e in entries {
        text.push_str(&serde_json::to_string(e)?);
        text.push('\n');
    }
    Ok(Bytes::from(text))
}

/// `GET /api/v1/audit/export`: the whole chain as JSON lines, streamed page by page (the log is
/// append-only, so pages read one after another form one chain).
pub async fn audit_export(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Auditor])?;
    let db = state.db.clone();
    // The first page is read before answering, so a failing database gives a 500, not a 200
    // with an empty body.
    let first = db.run(|s| s.audit_entries(0, EXPORT_PAGE)).await?;
    let stream = futures_util::stream::unfold(Export::Page(db, first), |state| async move {
        match state {
            Export::Done => None,
            Export::Failed(e) => Some((Err(e), Export::Done)),
            Export::Page(_, page) if page.is_empty() => None,
            Export::Page(db, page) => {
                let bytes = match jsonl(&page) {
                    Ok(b) => b,
                    Err(e) => return Some((Err(std::io::Error::other(e)), Export::Done)),
                };
                let next = match page.last() {
                    Some(last) if page.len() >= EXPORT_PAGE as usize => {
                        let after = last.seq;
                        match db.run(move |s| s.audit_entries(after, EXPORT_PAGE)).await {
                            Ok(next) => Export::Page(db, next),
                            Err(e) => {
                                tracing::error!(error = %e, "audit export stopped");
                                Export::Failed(std::io::Error::other("audit export failed"))
                            }
                        }
                    }
                    _ => Export::Done,
                };
                Some((Ok(bytes), next))
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `GET /api/v1/audit/head`: the last sequence number and hash, to record for later exports.
pub async fn audit_head(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Auditor])?;
    let (seq, hash) = state.db.run(|s| s.audit_head()).await?;
    Ok(Json(serde_json::json!({ "seq": seq, "hash": hash })))
}
