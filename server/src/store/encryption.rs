//! Encrypted payloads (manifests/FORMAT.md §9): devices' X25519 encryption public keys, the
//! encrypted releases (with the SHA-256 of their signed manifest) and the per-device key
//! records (`SGL-WKEY`) the server hands out. The server never holds a private key or a
//! content key; it stores and serves records it cannot open.

use super::{AuditEvent, Page, StoreResult};
use crate::rollout::DeviceStatus;

/// A device's enrolled encryption key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EncryptionKey {
    /// X25519 public key (hex).
    pub public_key: String,
    /// Recipient id: SHA-256 of the public key (hex), the `recipient` of its key records.
    pub recipient: String,
}

/// Why an admitted member of a deployment of an encrypted release is withheld (its check-in
/// is not offered the release).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WithheldReason {
    /// The device has no encryption key enrolled.
    NoEncryptionKey,
    /// The device's encryption key has no key record of the release.
    NoKeyRecord,
}

impl WithheldReason {
    /// The reason for a member without a key record: `no_key` if it has no encryption key.
    pub(crate) fn of(no_key: bool) -> Self {
        if no_key {
            WithheldReason::NoEncryptionKey
        } else {
            WithheldReason::NoKeyRecord
        }
    }

    /// What the operator does about it.
    pub fn remedy(self) -> &'static str {
        match self {
            WithheldReason::NoEncryptionKey => {
                "enrol the device's encryption key, then upload its key record"
            }
            WithheldReason::NoKeyRecord => {
                "upload its key record (sigil encrypt add-recipient, then POST .../key-records)"
            }
        }
    }
}

/// An admitted, unfinished member of a deployment of an encrypted release that has no key
/// record: the server withholds the release from it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WithheldMember {
    /// Device.
    pub device_id: String,
    /// Rank (admission order).
    pub rank: usize,
    /// Status in the deployment (not final).
    pub status: DeviceStatus,
    /// Why.
    pub reason: WithheldReason,
}

/// The condition of [`EncryptionStore::withheld`] over `members m` joined to its deployment
/// `d`, the encrypted release `e` and the member's key `dk` (left join); the deployment id and
/// the admitted count are the statement's parameters 1 and 2, in each backend's syntax.
pub(crate) fn withheld_from_where(p1: &str, p2: &str) -> String {
    format!(
        "FROM members m JOIN deployments d ON d.id = m.deployment_id \
         JOIN encrypted_releases e ON e.release_id = d.release_id \
         LEFT JOIN device_encryption_keys dk ON dk.device_id = m.device_id \
         WHERE m.deployment_id = {p1} AND m.rank < {p2} \
         AND m.status NOT IN ('confirmed', 'reverted', 'failed') \
         AND NOT EXISTS (SELECT 1 FROM key_records k \
         WHERE k.release_id = e.release_id AND k.recipient = dk.recipient)"
    )
}

/// Persistence of encryption keys and key records.
pub trait EncryptionStore {
    /// Sets (`Some`) or clears (`None`) device `device_id`'s encryption key, with its audit
    /// entry. `NotFound` for an unknown device; `Conflict` if another device has that key.
    fn set_encryption_key(
        &self,
        device_id: &str,
        key: Option<&EncryptionKey>,
        now: u64,
        audit: Option<&AuditEvent>,
    ) -> StoreResult<()>;
    /// Device `device_id`'s encryption key.
    fn encryption_key(&self, device_id: &str) -> StoreResult<Option<EncryptionKey>>;
    /// The device whose encryption key has recipient id `recipient` (hex).
    fn recipient_device(&self, recipient: &str) -> StoreResult<Option<String>>;
    /// Records that release `release_id` is encrypted, with its manifest digest (hex).
    /// Idempotent (the same release uploaded again).
    fn mark_encrypted(&self, release_id: &str, manifest_digest: &str) -> StoreResult<()>;
    /// The manifest digest (hex) of release `release_id` if it is encrypted.
    fn encrypted_release(&self, release_id: &str) -> StoreResult<Option<String>>;
    /// Stores key records of release `release_id`, `(recipient hex, record bytes)`, replacing
    /// a record for the same recipient, with one audit entry.
    fn put_key_records(
        &self,
        release_id: &str,
        records: &[(String, Vec<u8>)],
        now: u64,
        audit: &AuditEvent,
    ) -> StoreResult<()>;
    /// The key record of release `release_id` for device `device_id` (through its current
    /// encryption key).
    fn key_record(&self, release_id: &str, device_id: &str) -> StoreResult<Option<Vec<u8>>>;
    /// The members of deployment `deployment_id` the server withholds its release from: its
    /// release is encrypted, the member is among the first `admitted` by rank and not final,
    /// and no key record of the release names its current encryption key. Their number and
    /// the `page` of them in rank order. (0, empty) for a plain release.
    fn withheld(
        &self,
        deployment_id: i64,
        admitted: usize,
        page: Page,
    ) -> StoreResult<(u64, Vec<WithheldMember>)>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_withheld_condition_names_exactly_the_final_statuses() {
        let finals: Vec<String> = DeviceStatus::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        let sql = withheld_from_where("?1", "?2");
        assert!(
            sql.contains(&format!("NOT IN ({})", finals.join(", "))),
            "{sql}"
        );
    }
}
