//! Operations and administration: health, metrics, OpenAPI, API tokens, audit export.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sigil_manifests::manifest::check_identifier;

use std::collections::VecDeque;

use futures_util::StreamExt;

use crate::audit::{export_line, AuditEntry, Checkpoint, ExportLine};
use crate::audit_key::KeyFile;

use super::{new_token, ApiJson, AppState, Caller, Db};
use crate::error::ApiError;
use crate::store::{now_secs, AuditEvent, Role, StoreError, TokenGrant, TokenInfo};

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
    /// The token's label.
    name: String,
    /// The one role it may use (one its owner holds).
    role: Role,
    /// The owning account (a person or a service account); default: a service account named
    /// after the label, created if missing.
    owner: Option<String>,
    /// Lifetime in seconds; default: until revoked.
    expires_in_secs: Option<u64>,
}

/// A new token: shown once.
#[derive(Debug, Serialize)]
pub struct NewToken {
    id: i64,
    name: String,
    role: Role,
    owner: String,
    expires_at: Option<u64>,
    token: String,
}

/// `POST /api/v1/tokens`.
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    let actor = caller.require(&[Role::Admin])?.name.clone();
    caller.refuse_scoped("token administration")?;
    check_identifier(&req.name).map_err(|_| {
        ApiError::BadRequest("name must be 1 to 64 characters of [A-Za-z0-9._+-]".to_owned())
    })?;
    if req.role == Role::Device {
        return Err(ApiError::BadRequest(
            "device tokens are issued by the challenge-response session endpoint".to_owned(),
        ));
    }
    let owner = req.owner.clone().unwrap_or_else(|| req.name.clone());
    check_identifier(&owner).map_err(|_| {
        ApiError::BadRequest("owner must be 1 to 64 characters of [A-Za-z0-9._+-]".to_owned())
    })?;
    let expires_at = match req.expires_in_secs {
        None => None,
        Some(secs @ 60..=31_622_400) => Some(now_secs().saturating_add(secs)),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "expires_in_secs must be between 60 and 31622400 (366 days)".to_owned(),
            ))
        }
    };
    let (token, hash) = new_token();
    let event = AuditEvent::new(
        &actor,
        crate::store::AuditAction::TokenCreate,
        &req.name,
        serde_json::json!({ "role": req.role, "owner": owner, "expires_at": expires_at }),
    );
    let (name, role, owner_name) = (req.name.clone(), req.role, owner.clone());
    let id = state
        .db
        .run(move |s| {
            let grant = TokenGrant {
                hash: &hash,
                name: &name,
                role,
                device_id: None,
                expires_at,
                owner: Some(&owner_name),
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
            owner,
            expires_at,
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
    caller.refuse_scoped("token administration")?;
    Ok(Json(state.db.run(|s| s.tokens()).await?))
}

/// `DELETE /api/v1/tokens/{id}`.
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let actor = caller.require(&[Role::Admin])?.name.clone();
    caller.refuse_scoped("token administration")?;
    let n: i64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("token {id:.70} not found")))?;
    let event = AuditEvent::new(
        &actor,
        crate::store::AuditAction::TokenRevoke,
        &id,
        serde_json::json!({}),
    );
    state.db.run(move |s| s.revoke_token(n, &event)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Audit entries read from the database per step of the export stream.
const EXPORT_PAGE: u32 = 1000;

/// What is left to export: the next page of entries, the checkpoints not yet written, and the
/// last entry the export covers.
struct Export {
    db: Db,
    page: Vec<AuditEntry>,
    checkpoints: VecDeque<Checkpoint>,
    last: u64,
}

/// The export lines of `page` (entries up to `last`) with the checkpoints that follow them.
fn jsonl(
    page: &[AuditEntry],
    checkpoints: &mut VecDeque<Checkpoint>,
    last: u64,
) -> Result<Bytes, serde_json::Error> {
    let mut text = String::new();
    for e in page.iter().filter(|e| e.seq <= last) {
        text.push_str(&export_line(&ExportLine::Entry(e.clone()))?);
        while let Some(checkpoint) = pop_if_covers(checkpoints, e.seq) {
            text.push_str(&export_line(&ExportLine::Checkpoint { checkpoint })?);
        }
    }
    Ok(Bytes::from(text))
}

/// The next checkpoint, if it covers entry `seq`.
fn pop_if_covers(checkpoints: &mut VecDeque<Checkpoint>, seq: u64) -> Option<Checkpoint> {
    if checkpoints.front()?.seq == seq {
        checkpoints.pop_front()
    } else {
        None
    }
}

/// Signs (or reuses) a checkpoint of the current head.
async fn sign_checkpoint(state: &AppState) -> Result<Checkpoint, ApiError> {
    let keys = KeyFile::of(&state.config);
    state
        .db
        .run(move |s| {
            crate::audit_key::checkpoint(s, &keys, None, None)
                .map_err(|e| StoreError::Backend(format!("audit checkpoint: {e}")))
        })
        .await
}

/// `GET /api/v1/audit/export`: the chain as JSON lines up to a checkpoint signed for this
/// export, with the stored checkpoints after the entries they cover, streamed page by page
/// (the log is append-only, so pages read one after another form one chain).
pub async fn audit_export(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Auditor])?;
    caller.refuse_scoped("the audit trail")?;
    let last = sign_checkpoint(&state).await?.seq;
    let db = state.db.clone();
    // Read before answering, so a failing database gives a 500, not a 200 with an empty body.
    let mut checkpoints: VecDeque<Checkpoint> = db.run(move |s| s.checkpoints(last)).await?.into();
    let mut head = String::new();
    while let Some(checkpoint) = pop_if_covers(&mut checkpoints, 0) {
        head.push_str(
            &export_line(&ExportLine::Checkpoint { checkpoint })
                .map_err(|e| ApiError::Internal(e.into()))?,
        );
    }
    let first = db.run(|s| s.audit_entries(0, EXPORT_PAGE)).await?;
    let start = futures_util::stream::iter([Ok::<Bytes, std::io::Error>(Bytes::from(head))]);
    let export = Export {
        db,
        page: first,
        checkpoints,
        last,
    };
    let pages = futures_util::stream::unfold(Some(export), |state| async move {
        let mut x = state?;
        if x.page.is_empty() {
            return None;
        }
        let bytes = match jsonl(&x.page, &mut x.checkpoints, x.last) {
            Ok(b) => b,
            Err(e) => return Some((Err(std::io::Error::other(e)), None)),
        };
        let next = match x.page.last() {
            Some(e) if x.page.len() >= EXPORT_PAGE as usize && e.seq < x.last => {
                let after = e.seq;
                match x.db.run(move |s| s.audit_entries(after, EXPORT_PAGE)).await {
                    Ok(page) => Some(Export { page, ..x }),
                    Err(e) => {
                        tracing::error!(error = %e, "audit export stopped");
                        return Some((Err(std::io::Error::other("audit export failed")), None));
                    }
                }
            }
            _ => None,
        };
        Some((Ok(bytes), next))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(start.chain(pages)),
    )
        .into_response())
}

/// `GET /api/v1/audit/checkpoint`: a checkpoint of the current head signed by the server's
/// audit key, for an auditor to keep (`sigil-server audit verify --checkpoint`).
pub async fn audit_checkpoint(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Checkpoint>, ApiError> {
    caller.require(&[Role::Auditor])?;
    caller.refuse_scoped("the audit trail")?;
    Ok(Json(sign_checkpoint(&state).await?))
}

/// `GET /api/v1/audit/head`: the last sequence number and hash, to record for later exports.
pub async fn audit_head(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Auditor])?;
    caller.refuse_scoped("the audit trail")?;
    let (seq, hash) = state.db.run(|s| s.audit_head()).await?;
    Ok(Json(serde_json::json!({ "seq": seq, "hash": hash })))
}
