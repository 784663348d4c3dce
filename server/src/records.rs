//! Records a privacy officer can stand behind: report retention, one device's export, and the
//! statement of what the server keeps, for how long and why.
//!
//! - Retention: device reports older than `records.report_retention_days` are deleted by a
//!   background task every `records.prune_interval_secs` (and by `sigil-server records
//!   prune`), [`PRUNE_BATCH`] at a time, each batch in its own short write transaction that
//!   also appends a `records.prune` audit entry (count, devices, cut-off, oldest and newest
//!   deleted, who). Nothing in the audit trail is edited or removed, so the chain verifies
//!   after a prune and records it. Rollout figures do not come from reports: a deployment keeps
//!   each member's status and per-bucket tallies (`members`, `rollout_counts`), so pruning never
//!   changes a deployment's confirmed or failed numbers, active deployments included.
//! - Export: [`export_device`] gathers everything held about one device (identity and
//!   enrolment key, channel and groups, every kept report, its deployments, its session tokens
//!   without their secrets, the audit entries naming it) and records who exported it.
//! - Statement: [`statement`] is built from the live configuration (`GET /api/v1/records`).

use serde::Serialize;

use crate::audit::AuditEntry;
use crate::config::ServerConfig;
use crate::store::records::Membership;
use crate::store::{AuditAction, AuditEvent, Device, Report, Store, StoreResult, TokenInfo};

/// Reports deleted per transaction: small enough that a batch holds the write lock for
/// milliseconds, so check-ins queue behind it only briefly.
pub const PRUNE_BATCH: u32 = 1000;

/// The actor the background task names in the audit trail.
pub const RETENTION_ACTOR: &str = "retention policy";

const DAY: u64 = 86_400;

/// What a prune run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PruneOutcome {
    /// Reports older than this (Unix seconds) were deleted.
    pub before: u64,
    /// How many went.
    pub reports: u64,
    /// In how many batches (audit entries).
    pub batches: u64,
}

/// The cut-off at `now` under `config`: reports strictly older are pruned.
pub fn cutoff(config: &ServerConfig, now: u64) -> u64 {
    now.saturating_sub(u64::from(config.records.report_retention_days) * DAY)
}

/// Prunes the reports older than the configured retention at `now`, in batches of
/// [`PRUNE_BATCH`]; `actor` is named in each batch's audit entry.
pub fn prune(
    store: &dyn Store,
    config: &ServerConfig,
    now: u64,
    actor: &str,
) -> StoreResult<PruneOutcome> {
    prune_before(
        store,
        cutoff(config, now),
        config.records.report_retention_days,
        actor,
        PRUNE_BATCH,
        now,
    )
}

/// Prunes the reports older than `before`, `batch` at a time, until none is left.
pub fn prune_before(
    store: &dyn Store,
    before: u64,
    retention_days: u32,
    actor: &str,
    batch: u32,
    now: u64,
) -> StoreResult<PruneOutcome> {
    let event = AuditEvent::new(
        actor,
        AuditAction::RecordsPrune,
        "reports",
        serde_json::json!({ "before": before, "retention_days": retention_days }),
    );
    let mut out = PruneOutcome {
        before,
        reports: 0,
        batches: 0,
    };
    let batch = batch.max(1);
    loop {
        let done = store.prune_reports_batch(before, batch, &event, now)?;
        if done.reports > 0 {
            out.reports += done.reports;
            out.batches += 1;
        }
        // A short batch means none older is left (a full one may have been the last, and the
        // next finds nothing and appends nothing).
        if done.reports < u64::from(batch) {
            return Ok(out);
        }
    }
}

/// Runs [`prune`] every `records.prune_interval_secs`, the first time at start-up.
pub async fn prune_loop(db: crate::api::Db, config: ServerConfig) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(
        config.records.prune_interval_secs,
    ));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let c = config.clone();
        let now = crate::store::now_secs();
        match db.run(move |s| prune(s, &c, now, RETENTION_ACTOR)).await {
            Ok(o) if o.reports > 0 => tracing::info!(
                reports = o.reports,
                before = o.before,
                "pruned device reports past their retention"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot prune device reports"),
        }
    }
}

/// Everything the server holds about one device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceExport {
    /// When the export was made.
    pub exported_at: u64,
    /// Identity, product, enrolment key (`public_key`), channel, groups, labels, last state.
    pub device: Device,
    /// Every kept report, newest first.
    pub reports: Vec<Report>,
    /// The deployments it is or was a member of, and its status in each.
    pub deployments: Vec<Membership>,
    /// Its live session tokens (never their secrets; revocation deletes them).
    pub tokens: Vec<TokenInfo>,
    /// Audit entries naming it (as subject or in their detail), this export's own included.
    pub audit: Vec<AuditEntry>,
}

/// Exports device `id` for `actor`, recording the export in the audit trail first (no data
/// leaves unrecorded); `None` if there is no such device. The caller checks scope.
pub fn export_device(
    store: &dyn Store,
    id: &str,
    actor: &str,
    now: u64,
) -> StoreResult<Option<DeviceExport>> {
    if store.device(id)?.is_none() {
        return Ok(None);
    }
    store.append_audit(
        &AuditEvent::new(actor, AuditAction::RecordsExport, id, serde_json::json!({})),
        now,
    )?;
    // Read after the entry: a device cannot be deleted, so it is still there.
    let Some(device) = store.device(id)? else {
        return Ok(None);
    };
    Ok(Some(DeviceExport {
        exported_at: now,
        reports: store.reports(id, u32::MAX)?,
        deployments: store.memberships(id)?,
        tokens: store.device_tokens(id)?,
        audit: store.audit_naming(id)?,
        device,
    }))
}

/// One kind of record the server keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordKind {
    /// Short name (`device_reports`, `audit_trail`, …).
    pub name: &'static str,
    /// What is in it.
    pub holds: &'static str,
    /// How long it is kept, in words.
    pub kept: String,
    /// The limit in seconds, where there is one.
    pub retention_secs: Option<u64>,
    /// Why it is kept that long.
    pub why: &'static str,
}

/// What the server keeps, for how long and why (`GET /api/v1/records`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordsStatement {
    /// Each kind of record.
    pub records: Vec<RecordKind>,
    /// How often reports past retention are pruned.
    pub prune_interval_secs: u64,
}

/// The statement under `config`.
pub fn statement(config: &ServerConfig) -> RecordsStatement {
    let days = config.records.report_retention_days;
    let a = &config.accounts;
    RecordsStatement {
        prune_interval_secs: config.records.prune_interval_secs,
        records: vec![
            RecordKind {
                name: "device_reports",
                holds: "each check-in's reported version, security counter, state, deployment \
                        and detail text, with its time",
                kept: format!(
                    "{days} days, and at most the last {} per device",
                    config.limits.reports_kept
                ),
                retention_secs: Some(u64::from(days) * DAY),
                why: "to follow a rollout and investigate a failed update; once a device is \
                      tied to a patient they are personal data, so they are deleted after the \
                      retention period (the audit trail records each deletion)",
            },
            RecordKind {
                name: "devices",
                holds: "identity, product, enrolment public key, channel, groups, labels, \
                        last reported version and state",
                kept: "as long as the device is enrolled; a revoked device is kept".to_owned(),
                retention_secs: None,
                why: "to authenticate the device and decide what it may install; a revoked \
                      device stays so that its key cannot be re-enrolled unnoticed and the audit \
                      trail's references resolve",
            },
            RecordKind {
                name: "audit_trail",
                holds: "who did what and when: uploads, approvals, deployments, enrolments, \
                        revocations, logins, device state changes, exports and prunes",
                kept: "forever".to_owned(),
                retention_secs: None,
                why: "accountability for changes to medical device software; the trail is a \
                      hash chain with signed checkpoints, so removing an entry would make it \
                      fail verification; it is append-only in the database",
            },
            RecordKind {
                name: "accounts",
                holds: "name, roles, scope, Argon2id passphrase hash, second-factor secret, \
                        passkeys (name, public key, signature counter, last use; a random \
                        user handle), login failures and lockout",
                kept: "as long as the account exists; a disabled account is kept".to_owned(),
                retention_secs: None,
                why: "the audit trail names people, and a name must keep meaning one person",
            },
            RecordKind {
                name: "console_sessions",
                holds: "a session's hashed cookie, its person, CSRF token, login, last use \
                        and re-authentication times",
                kept: format!(
                    "refused after {} s idle or {} s after login, and deleted within {} s of \
                     that; deleted at logout or when the account is disabled",
                    a.session_idle_secs,
                    a.session_absolute_secs,
                    crate::api::accounts::SESSION_SWEEP_SECS
                ),
                retention_secs: Some(a.session_absolute_secs),
                why: "to keep a person logged in without re-sending their passphrase",
            },
            RecordKind {
                name: "passkey_challenges",
                holds: "an outstanding WebAuthn challenge, its person and purpose",
                kept: "until answered (once) or five minutes; expired ones are deleted when \
                       the next is made"
                    .to_owned(),
                retention_secs: Some(300),
                why: "to check that a passkey answers this server's fresh challenge",
            },
            RecordKind {
                name: "approvals",
                holds: "who approved or refused a release or a deployment, when, and their \
                        reason",
                kept: "forever".to_owned(),
                retention_secs: None,
                why: "four-eyes evidence that a second person let firmware reach patients",
            },
            RecordKind {
                name: "api_tokens",
                holds: "hashed API tokens, their owner, role and expiry (device session \
                        tokens: their device)",
                kept: format!(
                    "until revoked or expired; device sessions {} s",
                    config.session_ttl_secs
                ),
                retention_secs: Some(config.session_ttl_secs),
                why: "to authenticate automation and devices",
            },
        ],
    }
}
