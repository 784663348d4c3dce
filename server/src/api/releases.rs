//! Releases: upload (verified, content-addressed), list, show, retire.
//!
//! What each state does to serving:
//!
//! | state | new deployments | offered at check-in | bundle served to devices | mirror |
//! |---|---|---|---|---|
//! | live | yes | through an active deployment | through an active deployment that admits the device | yes |
//! | expiring within `expiry_warning_secs` | yes, with a warning | yes | yes | yes |
//! | expired (manifest `expires` passed) | refused (409) | never | never | no (404) |
//! | retired | refused (409) | never | never | no (404) |
//!
//! A bundle already expired when uploaded is refused (422, FORMAT.md step 7h). A deployment
//! that is paused, halted, cancelled or completed offers nothing and serves nothing through
//! itself; resuming a paused or halted one restores both.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{parse_product, AppState, Caller, PageQuery};
use crate::bundles::{is_bundle_id, UploadChunk};
use crate::error::ApiError;
use crate::store::{now_secs, AuditEvent, Page, Product, Release, ReleaseFilter, Role};

const READERS: &[Role] = &[Role::Release, Role::Operator, Role::Auditor, Role::Approver];

/// A release's product.
pub(super) fn release_product(r: &Release) -> Product {
    Product {
        vendor: r.vendor.clone(),
        device: r.device.clone(),
    }
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if is_bundle_id(id) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!(
            "release {id:.70} not found (ids are 64 lowercase hex digits)"
        )))
    }
}

/// `POST /api/v1/releases`: the body is the bundle (`application/octet-stream`).
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let uploader = caller.require(&[Role::Release])?.name.clone();
    // The bundle's chain is walked from the provisioned root and must lead to the newest root
    // of the chain the server holds (`BundleStore::ingest`).
    let roots = state.roots.clone().ok_or_else(|| {
        ApiError::Unavailable(
            "no trust root is configured (trust_root / SIGIL_TRUST_ROOT); uploads cannot be verified"
                .to_owned(),
        )
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if content_type != Some("application/octet-stream") {
        return Err(ApiError::UnsupportedMediaType(
            "upload the bundle as `Content-Type: application/octet-stream`".to_owned(),
        ));
    }
    let limit = state.config.limits.upload_max_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        state.metrics.upload(false);
        return Err(ApiError::PayloadTooLarge(format!(
            "bundle is larger than the upload limit of {limit} bytes"
        )));
    }

    // Verified under the newest root any replica was given, not only this one.
    let refreshed = roots.clone();
    state.db.run(move |s| Ok(refreshed.refresh(s)?)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let store = state.bundles.clone();
    let ingest = tokio::task::spawn_blocking(move || {
        store.ingest(rx, roots.provisioned(), roots.newest_floor(), limit)
    });
    let mut stream = body.into_data_stream();
    let mut complete = true;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(data) => {
                if tx.send(UploadChunk::Data(data)).await.is_err() {
                    // The verifier stopped early (bad or oversized bundle): its error is the answer.
                    break;
                }
            }
            Err(e) => {
                tracing::info!(error = %e, "upload body ended early");
                complete = false;
                break;
            }
        }
    }
    if complete {
        // An error here means the verifier already ended; its result says why.
        let _ = tx.send(UploadChunk::End).await;
    }
    drop(tx);
    let ingested = match ingest.await? {
        Ok(i) => i,
        Err(e) => {
            state.metrics.upload(false);
            return Err(e.into());
        }
    };
    state.metrics.upload(true);
    let encrypted = ingested.encrypted.clone();
    let release = Release {
        id: ingested.id,
        vendor: ingested.vendor,
        device: ingested.device,
        component: ingested.component,
        version: ingested.version,
        security_counter: ingested.security_counter,
        payload_size: ingested.payload_size,
        payload_digest: ingested.payload_digest,
        key_set_version: ingested.key_set_version,
        created: ingested.created,
        expires: ingested.expires,
        size: ingested.size,
        uploaded_at: now_secs(),
        uploaded_by: uploader.clone(),
        retired: false,
    };
    let event = AuditEvent::new(
        &uploader,
        crate::store::AuditAction::ReleaseUpload,
        &release.id,
        serde_json::json!({
            "product": format!("{}/{}", release.vendor, release.device),
            "component": release.component,
            "version": release.version,
            "security_counter": release.security_counter,
            "size": release.size,
        }),
    );
    let release = Arc::new(release);
    let r = Arc::clone(&release);
    let id = release.id.clone();
    let local = state.bundles.path(&id);
    let (created, stored, newest_key_set) = state
        .db
        .run(move |s| {
            // Where the database keeps bundles (PostgreSQL), the bytes are stored before the
            // release row: a release is never visible to a replica that cannot get its bytes.
            if let (true, Some(path)) = (s.keeps_bundles(), &local) {
                let mut file = std::fs::File::open(path).map_err(|e| {
                    crate::store::StoreError::Backend(format!("{}: {e}", path.display()))
                })?;
                s.put_bundle(&r.id, &mut file, now_secs())?;
            }
            let created = s.insert_release(&r, &event)?;
            // Encrypted payloads: the manifest digest its key records must name (idempotent,
            // so uploading the same bundle again repairs an interrupted first upload).
            if let Some(digest) = &encrypted {
                s.mark_encrypted(&r.id, digest)?;
            }
            // The newest key set any live release of this product is signed under.
            let live = ReleaseFilter {
                product: Some(Product {
                    vendor: r.vendor.clone(),
                    device: r.device.clone(),
                }),
                retired: Some(false),
            };
            let newest = s
                .releases(&live, Page::ALL)?
                .iter()
                .map(|x| x.key_set_version)
                .max();
            Ok((created, s.release(&id)?, newest))
        })
        .await?;
    let stored =
        stored.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("release row vanished")))?;
    let mut warnings = expiry_warnings(&stored, state.config.expiry_warning_secs, now_secs());
    if let Some(newest) = newest_key_set.filter(|&n| n > stored.key_set_version) {
        tracing::warn!(
            release = %stored.id,
            key_set_version = stored.key_set_version,
            newest_key_set_version = newest,
            "release is signed under an older key set than other releases of its product"
        );
        warnings.push(format!(
            "signed under key set version {}, older than version {newest} of another release of \
             {}/{}: devices that have confirmed an image under key set {newest} refuse this bundle \
             (the key set was rotated or revoked); sign it again under the current key set",
            stored.key_set_version, stored.vendor, stored.device
        ));
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Uploaded {
            release: stored,
            warnings,
        }),
    )
        .into_response())
}

/// A warning when `release` expires within `horizon` seconds of `now` (or has expired), logged.
fn expiry_warnings(release: &Release, horizon: u64, now: u64) -> Vec<String> {
    let Some(expires) = release.expires else {
        return Vec::new();
    };
    if expires <= now {
        tracing::warn!(release = %release.id, expires, "release has expired");
        return vec![format!(
            "expired at {expires} (seconds since the Unix epoch): it is no longer offered or served"
        )];
    }
    let left = expires - now;
    if left > horizon {
        return Vec::new();
    }
    tracing::warn!(release = %release.id, expires, seconds_left = left, "release expires soon");
    vec![format!(
        "expires at {expires} (seconds since the Unix epoch), in {} h {} min: after that it is \
         no longer offered or served; sign and upload a successor before then",
        left / 3600,
        left % 3600 / 60
    )]
}

/// The upload answer: the stored release, and what an operator should know about it.
#[derive(Debug, Serialize)]
struct Uploaded {
    #[serde(flatten)]
    release: Release,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// Query of `GET /api/v1/releases`: a page, and optional conditions that must all hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleasesQuery {
    offset: Option<u64>,
    limit: Option<u32>,
    /// `VENDOR/DEVICE`.
    product: Option<String>,
    retired: Option<bool>,
}

/// `GET /api/v1/releases?offset=&limit=&product=&retired=`: newest upload first.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ReleasesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Release>>, ApiError> {
    caller.require(READERS)?;
    let q = query?.0;
    let filter = ReleaseFilter {
        product: q.product.as_deref().map(parse_product).transpose()?,
        retired: q.retired,
    };
    let page = PageQuery::new(q.offset, q.limit).page()?;
    if let Some(scope) = caller.scope().filter(|s| !s.products.is_empty()).cloned() {
        let all = state
            .db
            .run(move |s| s.releases(&filter, Page::ALL))
            .await?;
        let mine = all
            .into_iter()
            .filter(|r| scope.admits_product(&release_product(r)))
            .collect();
        return Ok(Json(super::scopes::window(mine, page)));
    }
    Ok(Json(
        state.db.run(move |s| s.releases(&filter, page)).await?,
    ))
}

/// Release `id` if it exists and is within the caller's scope (404 otherwise).
pub(super) async fn find(
    state: &AppState,
    caller: &Caller,
    id: String,
) -> Result<Release, ApiError> {
    check_id(&id)?;
    let key = id.clone();
    state
        .db
        .run(move |s| s.release(&key))
        .await?
        .filter(|r| {
            caller
                .scope()
                .is_none_or(|s| s.admits_product(&release_product(r)))
        })
        .ok_or_else(|| ApiError::NotFound(format!("release {id} not found")))
}

/// `GET /api/v1/releases/{id}`: the release, with `warnings` when it expires within
/// `expiry_warning_secs` or has expired.
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(READERS)?;
    check_id(&id)?;
    let key = id.clone();
    let release = state
        .db
        .run(move |s| s.release(&key))
        .await?
        .filter(|r| {
            caller
                .scope()
                .is_none_or(|s| s.admits_product(&release_product(r)))
        })
        .ok_or_else(|| ApiError::NotFound(format!("release {id} not found")))?;
    let warnings = expiry_warnings(&release, state.config.expiry_warning_secs, now_secs());
    Ok(Json(Uploaded { release, warnings }).into_response())
}

/// `POST /api/v1/releases/{id}/retire`.
pub async fn retire(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Release>, ApiError> {
    let actor = caller.require(&[Role::Release])?.name.clone();
    check_id(&id)?;
    let event = AuditEvent::new(
        &actor,
        crate::store::AuditAction::ReleaseRetire,
        &id,
        serde_json::json!({}),
    );
    Ok(Json(
        state.db.run(move |s| s.retire_release(&id, &event)).await?,
    ))
}
