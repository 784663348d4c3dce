//! Persistent state behind one trait per aggregate (tokens, releases, devices, deployments,
//! check-ins, audit, accounts and sessions, approvals), gathered in [`Store`], with the SQLite
//! backend [`SqliteStore`] and the PostgreSQL backend [`PgStore`].
//!
//! - [`accounts`]: people, service accounts, console sessions and four-eyes approvals (their
//!   types, traits and rules).
//!
//! - [`records`]: report retention and one device's export.
//!
//! - [`model`]: the domain types, independent of any backend.
//! - [`rules`]: every decision a write makes (targets, ranking, admission, rollout moves, audit
//!   chaining) as pure functions that each backend calls inside its transaction.
//! - [`sqlite`]: the SQLite backend, its schema as `.sql` migrations.
//!
//! Handlers only see the traits (through [`crate::api::Db`]). Every mutation that the audit
//! trail records takes its [`AuditEvent`] and appends it in the same transaction as the change:
//! no change without its entry, and no entry without its change.

pub mod accounts;
pub mod encryption;
mod error;
pub mod migrate;
pub mod model;
pub mod passkeys;
pub mod postgres;
pub mod records;
pub mod rules;
pub mod sqlite;

pub use accounts::{AccountStore, ApprovalStore};
pub use encryption::{EncryptionKey, EncryptionStore, WithheldMember, WithheldReason};
pub use error::{StoreError, StoreResult};
pub use model::*;
pub use passkeys::PasskeyStore;
pub use postgres::PgStore;
pub use records::RecordStore;
pub use sqlite::SqliteStore;

use crate::audit::{AuditEntry, Checkpoint};

/// Every store trait, for calling their methods (`use crate::store::prelude::*`).
pub mod prelude {
    pub use super::{
        AccountStore, ApprovalStore, AuditStore, BundleBytes, CheckInStore, DeploymentStore,
        DeviceStore, EncryptionStore, PasskeyStore, RecordStore, ReleaseStore, Store, TokenStore,
    };
    pub use crate::roots::RootChainStore;
}

/// API tokens and device sessions.
pub trait TokenStore {
    /// Whether any admin token exists.
    fn has_admin_token(&self) -> StoreResult<bool>;
    /// Stores a token by its hash.
    fn create_token(
        &self,
        grant: &TokenGrant<'_>,
        now: u64,
        audit: Option<&AuditEvent>,
    ) -> StoreResult<i64>;
    /// Resolves a token hash to its principal (unexpired; device not revoked).
    fn principal(&self, hash: &[u8; 32], now: u64) -> StoreResult<Option<Principal>>;
    /// [`Self::principal`] for each of `hashes`, in their order (a backend across a network
    /// answers them with one round trip).
    fn principals(&self, hashes: &[[u8; 32]], now: u64) -> StoreResult<Vec<Option<Principal>>> {
        hashes.iter().map(|h| self.principal(h, now)).collect()
    }
    /// Lists API tokens (not device sessions).
    fn tokens(&self) -> StoreResult<Vec<TokenInfo>>;
    /// Deletes an API token.
    fn revoke_token(&self, id: i64, audit: &AuditEvent) -> StoreResult<()>;
}

/// Releases (the bundles' metadata).
pub trait ReleaseStore {
    /// Inserts a release; `false` if the same bundle already exists.
    fn insert_release(&self, release: &Release, audit: &AuditEvent) -> StoreResult<bool>;
    /// Releases that pass `filter`, newest upload first.
    fn releases(&self, filter: &ReleaseFilter, page: Page) -> StoreResult<Vec<Release>>;
    /// One release.
    fn release(&self, id: &str) -> StoreResult<Option<Release>>;
    /// Marks a release retired.
    fn retire_release(&self, id: &str, audit: &AuditEvent) -> StoreResult<Release>;
    /// Every release id (for bundle store reconciliation at start-up).
    fn release_ids(&self) -> StoreResult<Vec<String>>;
}

/// Enrolled devices.
pub trait DeviceStore {
    /// Enrols a device.
    fn enrol_device(&self, device: &Device, audit: &AuditEvent) -> StoreResult<()>;
    /// One device.
    fn device(&self, id: &str) -> StoreResult<Option<Device>>;
    /// Devices that pass `filter`, by id.
    fn devices(&self, filter: &DeviceFilter, page: Page) -> StoreResult<Vec<Device>>;
    /// How many devices pass `filter`, in all and per state and version (`GROUP BY` in the
    /// database: exact at any fleet size).
    fn device_counts(&self, filter: &DeviceFilter) -> StoreResult<DeviceCounts>;
    /// Up to `limit` devices that pass `filter` and last reported a failure or a revert,
    /// the most recently seen first.
    fn recent_failures(&self, filter: &DeviceFilter, limit: u32) -> StoreResult<Vec<Device>>;
    /// Revokes a device and ends its sessions.
    fn revoke_device(&self, id: &str, audit: &AuditEvent) -> StoreResult<()>;
}

/// Deployments and their staged rollouts.
pub trait DeploymentStore {
    /// Creates a deployment and ranks its target devices.
    fn create_deployment(
        &self,
        new: &NewDeployment,
        now: u64,
        actor: &str,
    ) -> StoreResult<Deployment>;
    /// Deployments that pass `filter`, newest first.
    fn deployments(&self, filter: &DeploymentFilter, page: Page) -> StoreResult<Vec<Deployment>>;
    /// One deployment with its members.
    fn deployment(&self, id: i64, page: Page) -> StoreResult<Option<DeploymentDetail>>;
    /// A deployment's confirmed, failed and reverted devices over time, in at most `spans`
    /// equal spans (at least 1); empty when none has reached those statuses.
    fn deployment_outcomes(&self, id: i64, spans: u32) -> StoreResult<Outcomes>;
    /// Pauses, resumes or cancels.
    fn act_on_deployment(
        &self,
        id: i64,
        action: DeploymentAction,
        audit: &AuditEvent,
    ) -> StoreResult<Deployment>;
    /// Deployments per state, and device outcomes in open deployments (metrics).
    fn rollout_summary(&self) -> StoreResult<RolloutSummary>;
}

/// Device check-ins and what they are offered.
pub trait CheckInStore {
    /// Records a check-in, updates deployment status and rollout, and returns the assignment.
    fn check_in(&self, report: &CheckIn, now: u64, keep: u32) -> StoreResult<Option<Assignment>>;
    /// Records check-ins in order, each as [`CheckInStore::check_in`] would, with one result
    /// per check-in; one that fails changes nothing and leaves the others recorded. The outer
    /// error means that none was recorded. A backend may commit them together (the default
    /// records them one by one).
    fn check_in_batch(
        &self,
        batch: &[CheckIn],
        now: u64,
        keep: u32,
    ) -> StoreResult<Vec<StoreResult<Option<Assignment>>>> {
        Ok(batch.iter().map(|c| self.check_in(c, now, keep)).collect())
    }
    /// How many [`CheckInStore::check_in_batch`] calls the server runs at once: one for a
    /// single-writer database (the default), more where batches commit side by side.
    fn batch_writers(&self) -> usize {
        1
    }
    /// The last `limit` reports of a device, newest first.
    fn reports(&self, device_id: &str, limit: u32) -> StoreResult<Vec<Report>>;
    /// Whether an active deployment admits this device for this release, and the release is
    /// neither retired nor expired at `now` (the same rule as the check-in's offer).
    fn may_download(&self, device_id: &str, release_id: &str, now: u64) -> StoreResult<bool>;
}

/// The hash-chained audit trail and its signed checkpoints.
pub trait AuditStore {
    /// Appends an audit entry on its own.
    fn append_audit(&self, event: &AuditEvent, now: u64) -> StoreResult<AuditEntry>;
    /// Up to `limit` audit entries after sequence number `after`, in order.
    fn audit_entries(&self, after: u64, limit: u32) -> StoreResult<Vec<AuditEntry>>;
    /// The last audit entry's sequence number and hash.
    fn audit_head(&self) -> StoreResult<(u64, String)>;
    /// In one transaction: appends `audit` (if given), then stores a checkpoint of the head
    /// that `sign` makes. Without `audit`, when the latest checkpoint already covers the head,
    /// returns it and signs nothing.
    fn checkpoint(
        &self,
        now: u64,
        audit: Option<&AuditEvent>,
        sign: &mut dyn FnMut(&CheckpointDraft) -> Result<Checkpoint, String>,
    ) -> StoreResult<Checkpoint>;
    /// The stored checkpoints of entries up to `seq`, in the order they were made.
    fn checkpoints(&self, up_to_seq: u64) -> StoreResult<Vec<Checkpoint>>;
}

/// Where bundle bytes live besides the local bundle store. SQLite keeps none (the bundle
/// store on the server's disk is the only copy); PostgreSQL keeps every bundle, so that any
/// replica serves any bundle, and each replica's disk is a cache.
pub trait BundleBytes {
    /// Whether this backend keeps bundle bytes.
    fn keeps_bundles(&self) -> bool {
        false
    }
    /// Stores the bytes of bundle `id` (its SHA-256, checked by the caller), read to the end
    /// of `bundle`; nothing if they are stored already.
    fn put_bundle(&self, id: &str, bundle: &mut dyn std::io::Read, now: u64) -> StoreResult<()> {
        let _ = (id, bundle, now);
        Ok(())
    }
    /// Writes the bytes of bundle `id` to `out`; `false` if the backend has none.
    fn get_bundle(&self, id: &str, out: &mut dyn std::io::Write) -> StoreResult<bool> {
        let _ = (id, out);
        Ok(false)
    }
    /// Removes bundle bytes that no release names and that are older than an upload can
    /// take; returns how many bundles went.
    fn prune_bundles(&self, now: u64) -> StoreResult<u64> {
        let _ = now;
        Ok(0)
    }
}

/// The whole storage interface the handlers use. Calls block; the API runs them on the
/// blocking pool. Implemented by every type that implements each aggregate's trait.
pub trait Store:
    TokenStore
    + ReleaseStore
    + DeviceStore
    + DeploymentStore
    + CheckInStore
    + AuditStore
    + BundleBytes
    + crate::roots::RootChainStore
    + AccountStore
    + PasskeyStore
    + ApprovalStore
    + RecordStore
    + EncryptionStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: TokenStore
        + ReleaseStore
        + DeviceStore
        + DeploymentStore
        + CheckInStore
        + AuditStore
        + BundleBytes
        + crate::roots::RootChainStore
        + AccountStore
        + PasskeyStore
        + ApprovalStore
        + RecordStore
        + EncryptionStore
        + Send
        + Sync
        + 'static
{
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
