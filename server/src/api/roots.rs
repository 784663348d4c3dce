//! `PUT/GET /api/v1/root-chain`: the root chain the server holds (see [`crate::roots`]).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use sigil_manifests::rotation::RootChainView;

use super::{AppState, Caller};
use crate::error::ApiError;
use crate::roots::Roots;
use crate::store::{AuditAction, AuditEvent, Role};

/// The endpoint.
pub const ROOT_CHAIN_PATH: &str = "/api/v1/root-chain";

/// What the server holds after a `PUT`, or on `GET` with `Accept: application/json`.
#[derive(Debug, Serialize)]
pub struct RootChainSummary {
    /// Version of the provisioned root's successor line's newest root.
    newest_root_version: u32,
    /// Its threshold.
    threshold: u8,
    /// Number of root updates in the chain.
    updates: usize,
}

fn no_root() -> ApiError {
    ApiError::Unavailable(
        "no trust root is configured (trust_root / SIGIL_TRUST_ROOT); a root chain cannot be \
         verified"
            .to_owned(),
    )
}

fn roots(state: &AppState) -> Result<&Roots, ApiError> {
    state.roots.as_deref().ok_or_else(no_root)
}

fn summary(roots: &Roots) -> RootChainSummary {
    let chain = roots.current();
    RootChainSummary {
        newest_root_version: chain.newest.root_version,
        threshold: chain.newest.threshold,
        updates: chain
            .bytes
            .as_deref()
            .and_then(|b| RootChainView::parse(b).ok())
            .map_or(0, |v| v.update_bytes().count()),
    }
}

/// `PUT /api/v1/root-chain` (admin): the body is the `SGL-RCHN` file (`application/octet-stream`).
/// It must verify from the server's trust root and extend the chain held.
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<RootChainSummary>, ApiError> {
    let actor = caller.require(&[Role::Admin])?.name.clone();
    caller.require_fresh(&state.config)?;
    caller.refuse_scoped("the root chain")?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if content_type != Some("application/octet-stream") {
        return Err(ApiError::UnsupportedMediaType(
            "the root chain is sent as application/octet-stream (the file `sigil root chain` \
             writes)"
                .to_owned(),
        ));
    }
    let roots_state = state.roots.clone().ok_or_else(no_root)?;
    // The extension check is made against the chain stored now (another replica may have been
    // given one), and the write succeeds only if it is still the stored one.
    let refreshed = roots_state.clone();
    state.db.run(move |s| Ok(refreshed.refresh(s)?)).await?;
    let previous = roots_state.current().bytes;
    let chain = roots_state
        .check(&body)
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let newest = chain.newest.root_version;
    let audit = AuditEvent::new(
        &actor,
        AuditAction::RootChainUpdate,
        &format!("root {newest}"),
        serde_json::json!({
            "newest_root_version": newest,
            "chain_sha256": hex::encode(sigil_manifests::root_digest(&body)),
        }),
    );
    let bytes = body.to_vec();
    state
        .db
        .run(move |s| s.put_root_chain(&bytes, newest, previous.as_deref().map(|p| &p[..]), &audit))
        .await?;
    roots_state.set(chain);
    tracing::info!(newest_root_version = newest, "root chain updated");
    Ok(Json(summary(&roots_state)))
}

/// `GET /api/v1/root-chain`: the chain file (404 before any rotation), or its summary with
/// `Accept: application/json`.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin, Role::Release, Role::Operator, Role::Auditor])?;
    let roots = roots(&state)?;
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    if wants_json {
        return Ok(Json(summary(roots)).into_response());
    }
    match roots.current().bytes {
        Some(bytes) => Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            bytes.as_ref().clone(),
        )
            .into_response()),
        None => Err(ApiError::NotFound(
            "no root chain: the server's trust root has not been rotated".to_owned(),
        )),
    }
}
