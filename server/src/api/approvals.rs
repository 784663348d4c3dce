//! Four-eyes approvals (`approvals.*` in the configuration), enforced here rather than in a
//! console:
//!
//! - A release reaches devices of a production channel (`approvals.production_channels`)
//!   only after a person with the approver role, other than its uploader, approved it: a
//!   deployment whose target includes such devices is refused (409) until then. A later
//!   refusal by another approver withdraws the approval.
//! - With `approvals.deployment_second_operator`, a deployment of more than one phase holds
//!   at its first (canary) phase until an operator other than its creator approves it; the
//!   rollout then continues (at once, if the canary already met its success threshold).
//!
//! Decisions are made by people only (a console session re-authenticated within
//! `accounts.reauth_secs`), carry a reason, and are audited.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{ApiJson, AppState, Caller};
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::rollout::RolloutPolicy;
use crate::store::accounts::{approved_by_other, Approval, ApprovalSubject, Decision};
use crate::store::{
    now_secs, AuditAction, AuditEvent, Deployment, DeviceFilter, Page, Product, Role, Target,
};

/// A decision's body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    reason: String,
}

/// The longest reason kept.
const REASON_MAX: usize = 2000;

fn decision_of(action: &str, what: &str) -> Result<Decision, ApiError> {
    match action {
        "approve" => Ok(Decision::Approved),
        "refuse" => Ok(Decision::Refused),
        _ => Err(ApiError::NotFound(format!(
            "{what} decisions are approve and refuse"
        ))),
    }
}

/// Who decides: a person in a freshly re-authenticated session, with one of `roles`, with a
/// reason.
fn decider(
    caller: &Caller,
    config: &ServerConfig,
    roles: &[Role],
    req: &DecisionRequest,
) -> Result<String, ApiError> {
    let name = caller.require(roles)?.name.clone();
    if caller.session.is_none() {
        return Err(ApiError::Forbidden(
            "approvals are made by a person in a console session, not with an API token".to_owned(),
        ));
    }
    caller.require_fresh(config)?;
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > REASON_MAX {
        return Err(ApiError::BadRequest(format!(
            "a decision needs a reason of 1 to {REASON_MAX} characters"
        )));
    }
    Ok(name)
}

/// A subject's approval state.
#[derive(Debug, Serialize)]
pub struct ApprovalState {
    /// Who approved it (the latest decision of someone other than its author), if anyone.
    approved_by: Option<String>,
    /// The uploader or creator, who cannot approve.
    author: String,
    /// Every decision, oldest first.
    decisions: Vec<Approval>,
}

/// `POST /api/v1/releases/{id}/{approve|refuse}` (approver, in a fresh session; not the
/// uploader).
pub async fn decide_release(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, action)): Path<(String, String)>,
    ApiJson(req): ApiJson<DecisionRequest>,
) -> Result<Json<ApprovalState>, ApiError> {
    let decision = decision_of(&action, "release")?;
    let by = decider(&caller, &state.config, &[Role::Approver], &req)?;
    let key = id.clone();
    let release = state
        .db
        .run(move |s| s.release(&key))
        .await?
        .filter(|r| {
            caller
                .scope()
                .is_none_or(|s| s.admits_product(&super::releases::release_product(r)))
        })
        .ok_or_else(|| ApiError::NotFound(format!("release {id:.70} not found")))?;
    if release.uploaded_by == by {
        return Err(ApiError::Forbidden(format!(
            "{by} uploaded release {id}; another approver must decide"
        )));
    }
    let approval = Approval {
        subject: ApprovalSubject::Release(release.id.clone()),
        decision,
        by: by.clone(),
        reason: req.reason.trim().to_owned(),
        at: now_secs(),
    };
    let event = AuditEvent::new(
        &by,
        AuditAction::ReleaseDecision,
        &release.id,
        serde_json::json!({ "decision": decision, "reason": approval.reason, "version": release.version }),
    );
    let subject = approval.subject.clone();
    let decisions = state
        .db
        .run(move |s| {
            s.decide_release(&approval, &event)?;
            s.approvals(&subject)
        })
        .await?;
    Ok(Json(ApprovalState {
        approved_by: approved_by_other(&decisions, &release.uploaded_by),
        author: release.uploaded_by,
        decisions,
    }))
}

/// `GET /api/v1/releases/{id}/approvals`.
pub async fn release_approvals(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ApprovalState>, ApiError> {
    caller.require(&[Role::Release, Role::Operator, Role::Auditor, Role::Approver])?;
    let key = id.clone();
    let (release, decisions) = state
        .db
        .run(move |s| {
            let r = s.release(&key)?;
            let d = s.approvals(&ApprovalSubject::Release(key.clone()))?;
            Ok((r, d))
        })
        .await?;
    let release = release
        .filter(|r| {
            caller
                .scope()
                .is_none_or(|s| s.admits_product(&super::releases::release_product(r)))
        })
        .ok_or_else(|| ApiError::NotFound(format!("release {id:.70} not found")))?;
    Ok(Json(ApprovalState {
        approved_by: approved_by_other(&decisions, &release.uploaded_by),
        author: release.uploaded_by,
        decisions,
    }))
}

fn parse_deployment(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::NotFound(format!("deployment {id:.70} not found")))
}

/// `POST /api/v1/deployments/{id}/approve` (operator, in a fresh session; not the
/// deployment's creator): lets a held rollout pass its canary phase.
pub async fn decide_deployment_approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<DecisionRequest>,
) -> Result<Json<Deployment>, ApiError> {
    decide_deployment(state, caller, id, Decision::Approved, req).await
}

/// `POST /api/v1/deployments/{id}/refuse`: records why a held rollout must not go on.
pub async fn decide_deployment_refuse(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<DecisionRequest>,
) -> Result<Json<Deployment>, ApiError> {
    decide_deployment(state, caller, id, Decision::Refused, req).await
}

async fn decide_deployment(
    state: AppState,
    caller: Caller,
    id: String,
    decision: Decision,
    req: DecisionRequest,
) -> Result<Json<Deployment>, ApiError> {
    let by = decider(&caller, &state.config, &[Role::Operator], &req)?;
    let n = parse_deployment(&id)?;
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
        .ok_or_else(|| ApiError::NotFound(format!("deployment {n} not found")))?
        .deployment;
    super::scopes::check_deployment(&state, &caller, &current).await?;
    if current.created_by == by {
        return Err(ApiError::Forbidden(format!(
            "{by} created deployment {n}; a second operator must decide"
        )));
    }
    let approval = Approval {
        subject: ApprovalSubject::Deployment(n),
        decision,
        by: by.clone(),
        reason: req.reason.trim().to_owned(),
        at: now_secs(),
    };
    let event = AuditEvent::new(
        &by,
        AuditAction::DeploymentDecision,
        &n.to_string(),
        serde_json::json!({ "decision": decision, "reason": approval.reason, "phase": current.phase }),
    );
    Ok(Json(
        state
            .db
            .run(move |s| s.decide_deployment(n, &approval, &event))
            .await?,
    ))
}

/// A deployment's approval state.
#[derive(Debug, Serialize)]
pub struct DeploymentApprovals {
    /// Whether the rollout is held at its canary phase until a second operator approves.
    waiting: bool,
    /// The creator, who cannot approve.
    author: String,
    /// Every decision, oldest first.
    decisions: Vec<Approval>,
}

/// `GET /api/v1/deployments/{id}/approvals`.
pub async fn deployment_approvals(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeploymentApprovals>, ApiError> {
    caller.require(&[Role::Operator, Role::Auditor])?;
    let n = parse_deployment(&id)?;
    let (dep, decisions) = state
        .db
        .run(move |s| {
            let d = s.deployment(
                n,
                Page {
                    offset: 0,
                    limit: 1,
                },
            )?;
            let a = s.approvals(&ApprovalSubject::Deployment(n))?;
            Ok((d, a))
        })
        .await?;
    let dep = dep
        .ok_or_else(|| ApiError::NotFound(format!("deployment {n} not found")))?
        .deployment;
    super::scopes::check_deployment(&state, &caller, &dep).await?;
    Ok(Json(DeploymentApprovals {
        waiting: dep.policy.hold_after_phase.is_some(),
        author: dep.created_by,
        decisions,
    }))
}

/// What waits for a decision.
#[derive(Debug, Serialize)]
pub struct Queue {
    /// Live releases not approved for production channels (empty without
    /// `approvals.production_channels`).
    releases: Vec<crate::store::Release>,
    /// Deployments held at their canary phase, not finished.
    deployments: Vec<Deployment>,
}

/// `GET /api/v1/approvals`: the approvals queue (approver, operator, auditor; a scoped caller
/// sees its scope's part).
pub async fn queue(State(state): State<AppState>, caller: Caller) -> Result<Json<Queue>, ApiError> {
    caller.require(&[Role::Approver, Role::Operator, Role::Auditor])?;
    let gated = !state.config.approvals.production_channels.is_empty();
    let scope = caller.scope().cloned();
    let queue = state
        .db
        .run(move |s| {
            let mut releases = Vec::new();
            if gated {
                let live = crate::store::ReleaseFilter {
                    retired: Some(false),
                    ..Default::default()
                };
                for r in s.releases(&live, Page::ALL)? {
                    let product = super::releases::release_product(&r);
                    if scope
                        .as_ref()
                        .is_some_and(|sc| !sc.admits_product(&product))
                    {
                        continue;
                    }
                    let decisions = s.approvals(&ApprovalSubject::Release(r.id.clone()))?;
                    if approved_by_other(&decisions, &r.uploaded_by).is_none() {
                        releases.push(r);
                    }
                }
            }
            let mut deployments = Vec::new();
            for state in [
                crate::rollout::DeploymentState::Active,
                crate::rollout::DeploymentState::Paused,
                crate::rollout::DeploymentState::Halted,
            ] {
                let filter = crate::store::DeploymentFilter {
                    state: Some(state),
                    scope: scope.clone(),
                    ..Default::default()
                };
                for d in s.deployments(&filter, Page::ALL)? {
                    if d.policy.hold_after_phase.is_none() {
                        continue;
                    }
                    deployments.push(d);
                }
            }
            deployments.sort_by_key(|d| std::cmp::Reverse(d.id));
            Ok(Queue {
                releases,
                deployments,
            })
        })
        .await?;
    Ok(Json(queue))
}

/// The canary hold a new deployment gets under the policy.
pub(super) fn hold(config: &ServerConfig, policy: &mut RolloutPolicy) {
    if config.approvals.deployment_second_operator && policy.phases.len() > 1 {
        policy.hold_after_phase = Some(0);
    }
}

/// Refuses a deployment of `release_id` to `target` that would reach a production channel's
/// devices before the release is approved by an approver other than its uploader.
pub(super) async fn check_release_gate(
    state: &AppState,
    release_id: &str,
    target: &Target,
) -> Result<(), ApiError> {
    let production = state.config.approvals.production_channels.clone();
    if production.is_empty() {
        return Ok(());
    }
    let key = release_id.to_owned();
    let target = target.clone();
    let refused = state
        .db
        .run(move |s| {
            let Some(release) = s.release(&key)? else {
                // Creating the deployment reports the missing release.
                return Ok(None);
            };
            let product = Product {
                vendor: release.vendor.clone(),
                device: release.device.clone(),
            };
            let on_production = |channel: &str| production.iter().any(|p| p == channel);
            let reached: Vec<String> = match &target {
                Target::Channel(c) => {
                    if on_production(c) {
                        vec![c.clone()]
                    } else {
                        Vec::new()
                    }
                }
                Target::Group(g) => {
                    let filter = DeviceFilter {
                        product: Some(product),
                        group: Some(g.clone()),
                        revoked: Some(false),
                        ..DeviceFilter::default()
                    };
                    let mut channels: Vec<String> = s
                        .devices(&filter, Page::ALL)?
                        .into_iter()
                        .map(|d| d.channel)
                        .filter(|c| on_production(c))
                        .collect();
                    channels.sort();
                    channels.dedup();
                    channels
                }
                Target::Devices(ids) => {
                    let mut channels = Vec::new();
                    for id in ids {
                        if let Some(d) = s.device(id)? {
                            if on_production(&d.channel) && !channels.contains(&d.channel) {
                                channels.push(d.channel);
                            }
                        }
                    }
                    channels
                }
            };
            if reached.is_empty() {
                return Ok(None);
            }
            let decisions = s.approvals(&ApprovalSubject::Release(release.id.clone()))?;
            if approved_by_other(&decisions, &release.uploaded_by).is_some() {
                return Ok(None);
            }
            Ok(Some((reached, release.uploaded_by)))
        })
        .await?;
    match refused {
        None => Ok(()),
        Some((channels, uploader)) => Err(ApiError::Conflict(format!(
            "release {release_id} is not approved for production channel {}: an approver other \
             than its uploader ({uploader}) must approve it first (POST \
             /api/v1/releases/{release_id}/approve)",
            channels.join(", ")
        ))),
    }
}
