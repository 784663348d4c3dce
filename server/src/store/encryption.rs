//! Encrypted payloads (manifests/FORMAT.md §9): devices' X25519 encryption public keys, the
//! encrypted releases (with the SHA-256 of their signed manifest) and the per-device key
//! records (`SGL-WKEY`) the server hands out. The server never holds a private key or a
//! content key; it stores and serves records it cannot open.

use super::{AuditEvent, StoreResult};

/// A device's enrolled encryption key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EncryptionKey {
    /// X25519 public key (hex).
    pub public_key: String,
    /// Recipient id: SHA-256 of the public key (hex), the `recipient` of its key records.
    pub recipient: String,
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
}
