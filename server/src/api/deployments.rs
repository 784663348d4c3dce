//! Deployments and staged rollouts (operator; read by auditors).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use sigil_manifests::manifest::check_identifier;

use super::{parse_product, ApiJson, AppState, Caller, PageQuery};
use crate::bundles::is_bundle_id;
use crate::error::ApiError;
use crate::rollout::{DeploymentState, DeviceStatus, RolloutPolicy};
use crate::store::{
    now_secs, AuditAction, AuditEvent, Deployment, DeploymentAction, DeploymentFilter, Member,
    NewDeployment, Page, Role, Target, WithheldMember, WithheldReason,
};

const MAX_EXPLICIT_DEVICES: usize = 10_000;

/// Deployment request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    release: String,
    target: Target,
    #[serde(default = "default_phases")]
    phases: Vec<u8>,
    #[serde(default = "default_success")]
    min_success_percent: u8,
    #[serde(default = "default_failure")]
    max_failure_percent: u8,
}

fn default_phases() -> Vec<u8> {
    vec![100]
}
fn default_success() -> u8 {
    100
}
fn default_failure() -> u8 {
    10
}

/// `POST /api/v1/deployments`.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateRequest>,
) -> Result<(StatusCode, Json<Deployment>), ApiError> {
    let actor = caller.require(&[Role::Operator])?.name.clone();
    if !is_bundle_id(&req.release) {
        return Err(ApiError::BadRequest(
            "release must be a release id (64 lowercase hex digits)".to_owned(),
        ));
    }
    match &req.target {
        Target::Channel(v) | Target::Group(v) => {
            check_identifier(v).map_err(|_| {
                ApiError::BadRequest(
                    "target value must be 1 to 64 characters of [A-Za-z0-9._+-]".to_owned(),
                )
            })?;
        }
        Target::Devices(ids) => {
            if ids.is_empty() || ids.len() > MAX_EXPLICIT_DEVICES {
                return Err(ApiError::BadRequest(format!(
                    "target devices must list 1 to {MAX_EXPLICIT_DEVICES} device ids"
                )));
            }
            if ids.iter().any(|id| check_identifier(id).is_err()) {
                return Err(ApiError::BadRequest(
                    "target device ids must be 1 to 64 characters of [A-Za-z0-9._+-]".to_owned(),
                ));
            }
        }
    }
    let mut policy = RolloutPolicy {
        phases: req.phases,
        min_success_percent: req.min_success_percent,
        max_failure_percent: req.max_failure_percent,
        hold_after_phase: None,
    };
    policy.validate().map_err(ApiError::BadRequest)?;
    // Four-eyes policy: production channels need an approved release; the canary phase
    // holds until a second operator approves.
    super::approvals::check_release_gate(&state, &req.release, &req.target).await?;
    if let Some(scope) = caller.scope().cloned() {
        let (release, target) = (req.release.clone(), req.target.clone());
        let within = state
            .db
            .run(move |s| match s.release(&release)? {
                Some(r) => super::scopes::target_in_scope(
                    s,
                    &scope,
                    &super::releases::release_product(&r),
                    &target,
                ),
                None => Ok(true),
            })
            .await?;
        if !within {
            return Err(ApiError::Forbidden(
                "the deployment would reach devices outside this account's scope".to_owned(),
            ));
        }
    }
    super::approvals::hold(&state.config, &mut policy);
    let new = NewDeployment {
        release_id: req.release,
        target: req.target,
        policy,
    };
    let dep = state
        .db
        .run(move |s| s.create_deployment(&new, now_secs(), &actor))
        .await?;
    Ok((StatusCode::CREATED, Json(dep)))
}

/// Query of `GET /api/v1/deployments`: a page, and optional conditions that must all hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentsQuery {
    offset: Option<u64>,
    limit: Option<u32>,
    /// `VENDOR/DEVICE`.
    product: Option<String>,
    state: Option<DeploymentState>,
    /// A release id: only deployments of that release.
    release: Option<String>,
}

/// `GET /api/v1/deployments?offset=&limit=&product=&state=&release=`: newest first; a
/// scoped caller's list holds only deployments in its scope, cut by the database.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<DeploymentsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Deployment>>, ApiError> {
    caller.require(&[Role::Operator, Role::Auditor])?;
    let q = query?.0;
    if q.release.as_deref().is_some_and(|r| !is_bundle_id(r)) {
        return Err(ApiError::BadRequest(
            "release must be a release id (64 lowercase hex digits)".to_owned(),
        ));
    }
    let filter = DeploymentFilter {
        product: q.product.as_deref().map(parse_product).transpose()?,
        state: q.state,
        release: q.release,
        scope: caller.scope().cloned(),
    };
    let page = PageQuery::new(q.offset, q.limit).page()?;
    Ok(Json(
        state.db.run(move |s| s.deployments(&filter, page)).await?,
    ))
}

/// A deployment with status counts over all its devices and one page of members.
#[derive(Debug, Serialize)]
pub struct DeploymentView {
    #[serde(flatten)]
    deployment: Deployment,
    counts: BTreeMap<&'static str, u64>,
    /// Admitted, unfinished members the encrypted release is withheld from (no key record):
    /// `GET /api/v1/deployments/{id}/withheld` lists them. 0 for a plain release.
    withheld: u64,
    members: Vec<Member>,
}

/// A deployment id from a path; anything else is a deployment not found.
pub fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::NotFound(format!("deployment {id:.70} not found")))
}

/// `GET /api/v1/deployments/{id}?offset=&limit=`: members in rank order, paged.
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeploymentView>, ApiError> {
    caller.require(&[Role::Operator, Role::Auditor])?;
    let page = query?.0.page()?;
    let n = parse_id(&id)?;
    let (detail, withheld) = state
        .db
        .run(move |s| {
            let Some(detail) = s.deployment(n, page)? else {
                return Ok(None);
            };
            let admitted = crate::store::rules::admitted_now(&detail.deployment);
            let (withheld, _) = s.withheld(
                n,
                admitted,
                Page {
                    offset: 0,
                    limit: 0,
                },
            )?;
            Ok(Some((detail, withheld)))
        })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("deployment {id} not found")))?;
    super::scopes::check_deployment(&state, &caller, &detail.deployment).await?;
    let mut counts: BTreeMap<&'static str, u64> =
        DeviceStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for (status, n) in detail.counts {
        counts.insert(status.as_str(), n);
    }
    Ok(Json(DeploymentView {
        deployment: detail.deployment,
        counts,
        withheld,
        members: detail.members,
    }))
}

/// A member the release is withheld from, with what to do about it.
#[derive(Debug, Serialize)]
pub struct WithheldEntry {
    #[serde(flatten)]
    member: WithheldMember,
    /// What the operator does so that the device is offered the release.
    remedy: &'static str,
}

/// `GET /api/v1/deployments/{id}/withheld?offset=&limit=` (operator, auditor; scoped like
/// the deployment): the admitted, unfinished members of a deployment of an encrypted release
/// that have no key record, so their check-ins are not offered it, in rank order, paged.
/// Each says why (`no_encryption_key`, `no_key_record`). Empty for a plain release.
pub async fn withheld(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<WithheldEntry>>, ApiError> {
    caller.require(&[Role::Operator, Role::Auditor])?;
    let page = query?.0.page()?;
    let n = parse_id(&id)?;
    let (deployment, members) = state
        .db
        .run(move |s| {
            let Some(detail) = s.deployment(
                n,
                Page {
                    offset: 0,
                    limit: 0,
                },
            )?
            else {
                return Ok(None);
            };
            let admitted = crate::store::rules::admitted_now(&detail.deployment);
            let (_, members) = s.withheld(n, admitted, page)?;
            Ok(Some((detail.deployment, members)))
        })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("deployment {id} not found")))?;
    super::scopes::check_deployment(&state, &caller, &deployment).await?;
    Ok(Json(
        members
            .into_iter()
            .map(|member| WithheldEntry {
                remedy: WithheldReason::remedy(member.reason),
                member,
            })
            .collect(),
    ))
}

/// `POST /api/v1/deployments/{id}/{pause|resume|cancel}`.
pub async fn act(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<Deployment>, ApiError> {
    let actor = caller.require(&[Role::Operator])?.name.clone();
    let (action, name) = match action.as_str() {
        "pause" => (DeploymentAction::Pause, AuditAction::DeploymentPause),
        "resume" => (DeploymentAction::Resume, AuditAction::DeploymentResume),
        "cancel" => (DeploymentAction::Cancel, AuditAction::DeploymentCancel),
        _ => {
            return Err(ApiError::NotFound(
                "deployment actions are pause, resume and cancel".to_owned(),
            ))
        }
    };
    let n = parse_id(&id)?;
    if caller.scope().is_some() {
        let current = state
            .db
            .run(move |s| {
                s.deployment(
                    n,
                    Page {
                        offset: 0,
                        limit: 1,
                    },
                )
            })
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("deployment {n} not found")))?;
        super::scopes::check_deployment(&state, &caller, &current.deployment).await?;
    }
    let event = AuditEvent::new(&actor, name, &id, serde_json::json!({}));
    Ok(Json(
        state
            .db
            .run(move |s| s.act_on_deployment(n, action, &event))
            .await?,
    ))
}
