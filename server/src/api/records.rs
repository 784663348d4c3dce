//! Records: one device's export and the records statement (see [`crate::records`]).

use axum::extract::{Path, State};
use axum::Json;

use super::{AppState, Caller};
use crate::error::ApiError;
use crate::records::{DeviceExport, RecordsStatement};
use crate::store::{now_secs, Role};

/// `GET /api/v1/devices/{id}/export`: everything held about one device (operator, auditor;
/// a scoped account only within its scope). Audited as `records.export`.
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeviceExport>, ApiError> {
    let actor = caller
        .require(&[Role::Operator, Role::Auditor])?
        .name
        .clone();
    let key = id.clone();
    let device = state
        .db
        .run(move |s| s.device(&key))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("device {id:.70} not found")))?;
    let device = super::scopes::device_in_scope(&caller, device)?;
    let export = state
        .db
        .run(move |s| crate::records::export_device(s, &device.id, &actor, now_secs()))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("device {id:.70} not found")))?;
    Ok(Json(export))
}

/// `GET /api/v1/records`: what the server keeps, for how long and why, from the live
/// configuration (any person or service account).
pub async fn statement(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<RecordsStatement>, ApiError> {
    caller.require(&[
        Role::Admin,
        Role::Release,
        Role::Operator,
        Role::Auditor,
        Role::Approver,
    ])?;
    Ok(Json(crate::records::statement(&state.config)))
}
