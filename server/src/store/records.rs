//! What the records features (retention, one device's export) need from a backend: see
//! [`crate::records`] for the policy around them.

use serde::Serialize;

use super::{AuditEvent, StoreResult, TokenInfo};
use crate::audit::AuditEntry;

/// One batch of reports deleted by age.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PrunedBatch {
    /// Reports deleted.
    pub reports: u64,
    /// Distinct devices they were of.
    pub devices: u64,
    /// The oldest deleted report's time (0 if none).
    pub oldest: u64,
    /// The newest deleted report's time (0 if none).
    pub newest: u64,
}

/// A deployment one device was a member of, and its status there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    /// Deployment id.
    pub deployment_id: i64,
    /// The deployed release.
    pub release_id: String,
    /// The deployment's state (`active`, `paused`, …).
    pub deployment_state: String,
    /// The device's status in it (`pending`, `confirmed`, …).
    pub status: String,
    /// The device's place in the rollout order.
    pub rank: i64,
    /// The device's rollout bucket.
    pub bucket: i64,
    /// When its status last changed.
    pub updated_at: u64,
}

/// Retention and export.
pub trait RecordStore {
    /// In one transaction: deletes up to `limit` reports older than `before` (oldest first)
    /// and, if any went, appends `audit` with the batch's figures merged into its detail
    /// object. Rollout counts do not depend on reports (deployments keep their own tallies),
    /// so they are unchanged.
    fn prune_reports_batch(
        &self,
        before: u64,
        limit: u32,
        audit: &AuditEvent,
        now: u64,
    ) -> StoreResult<PrunedBatch>;
    /// How many reports are older than `before`.
    fn reports_older_than(&self, before: u64) -> StoreResult<u64>;
    /// The deployments a device is a member of, by id.
    fn memberships(&self, device_id: &str) -> StoreResult<Vec<Membership>>;
    /// The session tokens issued to a device (never their secrets).
    fn device_tokens(&self, device_id: &str) -> StoreResult<Vec<TokenInfo>>;
    /// Audit entries whose subject is `id` or whose detail holds the JSON string `id`
    /// (a device named in a list or a field), in order.
    fn audit_naming(&self, id: &str) -> StoreResult<Vec<AuditEntry>>;
}

/// `audit`'s detail with a batch's figures added (the entry a prune batch appends).
pub fn prune_event(audit: &AuditEvent, batch: &PrunedBatch) -> AuditEvent {
    let mut event = audit.clone();
    if let serde_json::Value::Object(map) = &mut event.detail {
        map.insert("reports".to_owned(), batch.reports.into());
        map.insert("devices".to_owned(), batch.devices.into());
        map.insert("oldest".to_owned(), batch.oldest.into());
        map.insert("newest".to_owned(), batch.newest.into());
    }
    event
}

/// The JSON string literal of `id`, as it appears in an audit entry's detail.
pub fn json_needle(id: &str) -> String {
    serde_json::Value::String(id.to_owned()).to_string()
}
