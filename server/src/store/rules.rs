//! The store's decisions as pure functions, called by every backend inside its write
//! transaction: which devices a deployment targets and in which order, what a phase admits,
//! when a rollout moves, which audit entries a change writes, and how the audit chain grows.
//!
//! A backend only reads and writes rows; whatever it decides, it decides here, so SQLite and
//! PostgreSQL cannot disagree about a rollout.

use sha2::{Digest, Sha256};

use super::model::{
    AuditAction, AuditEvent, CheckIn, CheckInState, CheckpointDraft, Deployment, DeploymentAction,
    Device, NewDeployment, Release, Target,
};
use super::{StoreError, StoreResult};
use crate::audit::{entry_hash, AuditEntry, Checkpoint, GENESIS_HASH};
use crate::rollout::{admitted, bucket, evaluate, Counts, DeploymentState, DeviceStatus};

/// The deployment status a check-in state sets, if any (the neutral states set none).
pub fn reported_status(state: CheckInState) -> Option<DeviceStatus> {
    DeviceStatus::parse(state.as_str())
}

/// How many of a deployment's ranked devices its current phase admits.
pub fn admitted_now(dep: &Deployment) -> usize {
    admitted(
        dep.devices,
        dep.policy.phases.get(dep.phase).copied().unwrap_or(100),
    )
}

/// Whether the device of `rank` is admitted by the deployment's current phase.
pub fn is_admitted(dep: &Deployment, rank: i64) -> bool {
    usize::try_from(rank).is_ok_and(|r| r < admitted_now(dep))
}

/// The per-phase counter a status is counted under (`rollout_counts` columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Confirmed devices.
    Confirmed,
    /// Failed or reverted devices.
    Failures,
    /// Devices not finished.
    Open,
}

impl Counter {
    /// The counter of a status.
    pub fn of(status: DeviceStatus) -> Self {
        match status {
            DeviceStatus::Confirmed => Counter::Confirmed,
            s if s.is_failure() => Counter::Failures,
            _ => Counter::Open,
        }
    }

    /// The column name (never taken from input).
    pub fn column(self) -> &'static str {
        match self {
            Counter::Confirmed => "confirmed",
            Counter::Failures => "failures",
            Counter::Open => "open",
        }
    }
}

/// Refuses to deploy a retired release, or one whose manifest has expired at `now`.
pub fn check_deployable(release: &Release, now: u64) -> StoreResult<()> {
    if release.retired {
        return Err(StoreError::Conflict(format!(
            "release {} is retired",
            release.id
        )));
    }
    if let Some(expires) = release.expires.filter(|&e| e <= now) {
        return Err(StoreError::Conflict(format!(
            "release {} expired at {expires} (seconds since the Unix epoch); devices would refuse it",
            release.id
        )));
    }
    Ok(())
}

/// The devices among `candidates` that a deployment of `release` to `target` covers: active
/// devices of the release's product; explicit device lists are checked one by one.
pub fn select_targets<'a>(
    release: &Release,
    target: &Target,
    candidates: &'a [Device],
) -> StoreResult<Vec<&'a Device>> {
    let fits = |d: &Device| {
        !d.revoked && d.product.vendor == release.vendor && d.product.device == release.device
    };
    let targets: Vec<&Device> = match target {
        Target::Channel(c) => candidates
            .iter()
            .filter(|d| fits(d) && &d.channel == c)
            .collect(),
        Target::Group(g) => candidates
            .iter()
            .filter(|d| fits(d) && d.groups.contains(g))
            .collect(),
        Target::Devices(ids) => {
            let by_id: std::collections::HashMap<&str, &Device> =
                candidates.iter().map(|d| (d.id.as_str(), d)).collect();
            let mut seen = std::collections::HashSet::new();
            let mut out = Vec::new();
            for id in ids {
                match by_id.get(id.as_str()) {
                    Some(d) if fits(d) => {
                        if seen.insert(id.as_str()) {
                            out.push(*d);
                        }
                    }
                    Some(_) => {
                        return Err(StoreError::Invalid(format!(
                            "device {id} is revoked or of another product than the release"
                        )))
                    }
                    None => {
                        return Err(StoreError::NotFound {
                            what: "device",
                            id: id.clone(),
                        })
                    }
                }
            }
            out
        }
    };
    if targets.is_empty() {
        return Err(StoreError::Invalid(format!(
            "no enrolled device of {}/{} matches the target",
            release.vendor, release.device
        )));
    }
    Ok(targets)
}

/// A ranked member of a new deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankedMember<'a> {
    /// The device.
    pub device_id: &'a str,
    /// Admission order.
    pub rank: i64,
    /// The phase that first admits it.
    pub bucket: i64,
}

/// The members of deployment `id` in admission order (by `SHA-256(id, device id)`), and the
/// number of devices each phase first admits (the initial `open` count of each bucket).
pub fn rank_members<'a>(
    new: &NewDeployment,
    id: i64,
    targets: &[&'a Device],
) -> (Vec<RankedMember<'a>>, Vec<i64>) {
    let mut ranked: Vec<([u8; 32], &str)> = targets
        .iter()
        .map(|d| {
            let mut h = Sha256::new();
            h.update(id.to_le_bytes());
            h.update(d.id.as_bytes());
            (h.finalize().into(), d.id.as_str())
        })
        .collect();
    ranked.sort_unstable();
    let mut open = vec![0i64; new.policy.phases.len()];
    let members = ranked
        .iter()
        .enumerate()
        .map(|(rank, (_, device_id))| {
            let b = bucket(&new.policy, ranked.len(), rank);
            if let Some(n) = open.get_mut(b) {
                *n = n.saturating_add(1);
            }
            RankedMember {
                device_id,
                rank: i64::try_from(rank).unwrap_or(i64::MAX),
                bucket: i64::try_from(b).unwrap_or(i64::MAX),
            }
        })
        .collect();
    (members, open)
}

/// The audit event of a new deployment.
pub fn created_event(
    actor: &str,
    id: i64,
    release: &Release,
    new: &NewDeployment,
    devices: usize,
) -> AuditEvent {
    let detail = serde_json::json!({
        "release": release.id,
        "version": release.version,
        "target": new.target,
        "policy": new.policy,
        "devices": devices,
    });
    AuditEvent::new(
        actor,
        AuditAction::DeploymentCreate,
        &id.to_string(),
        detail,
    )
}

/// The state an operator action moves a deployment to, or why it cannot.
pub fn next_state(
    id: i64,
    action: DeploymentAction,
    state: DeploymentState,
) -> StoreResult<DeploymentState> {
    use DeploymentState::*;
    match (action, state) {
        (DeploymentAction::Pause, Active) => Ok(Paused),
        (DeploymentAction::Resume, Paused | Halted) => Ok(Active),
        (DeploymentAction::Cancel, Active | Paused | Halted) => Ok(Cancelled),
        (_, state) => Err(StoreError::Conflict(format!(
            "deployment {id} is {}; cannot {}",
            state.as_str(),
            match action {
                DeploymentAction::Pause => "pause",
                DeploymentAction::Resume => "resume",
                DeploymentAction::Cancel => "cancel",
            }
        ))),
    }
}

/// A rollout's move after re-evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The new phase.
    pub phase: usize,
    /// The new state.
    pub state: DeploymentState,
}

/// Re-evaluates an active rollout; `Some` when its phase or state changes. `counts(p)` gives
/// the counts over the devices admitted up to phase `p`.
pub fn reevaluate(
    dep: &Deployment,
    counts: impl FnMut(usize) -> StoreResult<Counts>,
) -> StoreResult<Option<Transition>> {
    if dep.state != DeploymentState::Active {
        return Ok(None);
    }
    let eval = evaluate(&dep.policy, dep.phase, dep.devices, counts)?;
    if eval.phase == dep.phase && eval.state == dep.state {
        return Ok(None);
    }
    Ok(Some(Transition {
        phase: eval.phase,
        state: eval.state,
    }))
}

/// The audit event of a rollout's move, with the counts of its new phase.
pub fn transition_event(id: i64, t: &Transition, c: Counts) -> AuditEvent {
    let detail = serde_json::json!({
        "phase": t.phase,
        "state": t.state,
        "confirmed": c.confirmed,
        "failures": c.failures,
        "open": c.open,
    });
    let action = match t.state {
        DeploymentState::Halted => AuditAction::DeploymentHalt,
        DeploymentState::Completed => AuditAction::DeploymentComplete,
        _ => AuditAction::DeploymentAdvance,
    };
    AuditEvent::new("system", action, &id.to_string(), detail)
}

/// The audit actor of a device.
pub fn device_actor(device_id: &str) -> String {
    format!("device:{device_id}")
}

/// The `device.report` event of a check-in, when it changes the device's version or state.
pub fn report_event(
    c: &CheckIn,
    prev_version: Option<&str>,
    prev_state: Option<CheckInState>,
) -> Option<AuditEvent> {
    if prev_version == Some(c.version.as_str()) && prev_state == Some(c.state) {
        return None;
    }
    let detail = serde_json::json!({
        "version": c.version,
        "security_counter": c.security_counter,
        "state": c.state,
        "deployment": c.deployment_id,
        "detail": c.detail,
    });
    Some(AuditEvent::new(
        &device_actor(&c.device_id),
        AuditAction::DeviceReport,
        &c.device_id,
        detail,
    ))
}

/// The `device.status` event of a member's status change.
pub fn status_event(
    device_id: &str,
    deployment: i64,
    from: DeviceStatus,
    to: DeviceStatus,
) -> AuditEvent {
    let detail = serde_json::json!({ "deployment": deployment, "from": from, "to": to });
    AuditEvent::new(
        &device_actor(device_id),
        AuditAction::DeviceStatus,
        device_id,
        detail,
    )
}

/// The entry that appends `event` at `now` to a chain whose head is `head` (`None`: empty).
pub fn next_entry(head: Option<(u64, String)>, event: &AuditEvent, now: u64) -> AuditEntry {
    let (seq, prev) = head.unwrap_or((0, GENESIS_HASH.to_owned()));
    let seq = seq.saturating_add(1);
    let detail = event.detail.to_string();
    let action = event.action.as_str();
    let hash = entry_hash(
        seq,
        now,
        &event.actor,
        action,
        &event.subject,
        &detail,
        &prev,
    );
    AuditEntry {
        seq,
        at: now,
        actor: event.actor.clone(),
        action: action.to_owned(),
        subject: event.subject.clone(),
        detail,
        prev_hash: prev,
        hash,
    }
}

/// What a checkpoint request needs: the latest checkpoint as it stands, or a draft to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointStep {
    /// The latest checkpoint already covers the head and nothing new was appended.
    Current(Checkpoint),
    /// A new checkpoint to sign.
    Sign(CheckpointDraft),
}

/// Decides a checkpoint of the head `(seq, head)` given the latest stored checkpoint; with
/// `appended` (an entry was just added), always a new one.
pub fn checkpoint_step(
    seq: u64,
    head: String,
    now: u64,
    latest: Option<Checkpoint>,
    appended: bool,
) -> CheckpointStep {
    if let Some(cp) = &latest {
        if !appended && cp.seq == seq && cp.head == head {
            return CheckpointStep::Current(cp.clone());
        }
    }
    CheckpointStep::Sign(CheckpointDraft {
        seq,
        head,
        at: now,
        expected_key: latest.map(|cp| cp.next_public_key.unwrap_or(cp.public_key)),
    })
}

/// The statuses [`crate::store::DeploymentStore::deployment_outcomes`] counts over time.
pub const OUTCOMES: [DeviceStatus; 3] = [
    DeviceStatus::Confirmed,
    DeviceStatus::Failed,
    DeviceStatus::Reverted,
];

/// The span length that cuts `first..=last` into at most `spans` equal spans: every
/// `(t - first) / width` for `t` in that range is below `spans`.
pub fn outcome_width(first: u64, last: u64, spans: u32) -> u64 {
    (last.saturating_sub(first) / u64::from(spans.max(1))).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_status_covers_every_non_neutral_state() {
        for s in CheckInState::ALL {
            assert_eq!(reported_status(s).is_none(), s.is_neutral(), "{s}");
        }
    }

    #[test]
    fn audit_actions_round_trip() {
        for a in AuditAction::ALL {
            assert_eq!(AuditAction::parse(a.as_str()), Some(a));
        }
    }

    #[test]
    fn outcome_spans_cover_first_to_last_within_the_span_count() {
        for (first, last, spans) in [
            (0, 0, 60),
            (10, 10, 1),
            (0, 59, 60),
            (0, 60, 60),
            (5, 1_000_003, 60),
            (0, u64::MAX, 60),
            (3, 7, 0),
        ] {
            let w = outcome_width(first, last, spans);
            assert!(w >= 1);
            for t in [first, (first / 2).saturating_add(last / 2), last] {
                assert!(
                    (t - first) / w < u64::from(spans.max(1)),
                    "{first} {last} {spans}"
                );
            }
        }
    }
}
