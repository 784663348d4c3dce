//! Persistent state behind one narrow trait, [`Store`], with the SQLite backend [`SqliteStore`].
//!
//! Handlers only see the trait (through [`crate::api::Db`]), so a PostgreSQL backend is one more
//! implementation. Every mutation that the audit trail records takes its [`AuditEvent`] and
//! appends it in the same transaction as the change: no change without its entry, and no entry
//! without its change.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::{entry_hash, AuditEntry, Checkpoint, GENESIS_HASH};
use crate::rollout::{bucket, evaluate, Counts, DeploymentState, DeviceStatus, RolloutPolicy};

/// A caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages API tokens.
    Admin,
    /// Uploads and retires releases.
    Release,
    /// Enrols devices, runs deployments.
    Operator,
    /// Reads everything, exports the audit trail.
    Auditor,
    /// A device, through a session token.
    Device,
}

impl Role {
    /// All roles.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Release,
        Role::Operator,
        Role::Auditor,
        Role::Device,
    ];

    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Release => "release",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Device => "device",
        }
    }

    /// Parses [`Role::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Who is calling, resolved from a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's role.
    pub role: Role,
    /// The token's name (`device:<id>` for device sessions); the audit actor.
    pub name: String,
    /// For device sessions, the device.
    pub device_id: Option<String>,
}

/// A token to store: only its hash is kept.
#[derive(Debug, Clone, Copy)]
pub struct TokenGrant<'a> {
    /// SHA-256 of the token.
    pub hash: &'a [u8; 32],
    /// Holder's name (the audit actor).
    pub name: &'a str,
    /// Role.
    pub role: Role,
    /// For device sessions, the device.
    pub device_id: Option<&'a str>,
    /// Expiry (device sessions).
    pub expires_at: Option<u64>,
}

/// An API token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// Token id.
    pub id: i64,
    /// Name (who holds it).
    pub name: String,
    /// Role.
    pub role: Role,
    /// Creation time.
    pub created_at: u64,
}

/// A stored release: a verified bundle's manifest summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Release {
    /// SHA-256 of the bundle file (hex): the content address.
    pub id: String,
    /// Product vendor.
    pub vendor: String,
    /// Product device class.
    pub device: String,
    /// Target component / slot.
    pub component: String,
    /// Semantic version.
    pub version: String,
    /// Security counter.
    pub security_counter: u32,
    /// Payload size.
    pub payload_size: u64,
    /// Payload SHA-256 (hex).
    pub payload_digest: String,
    /// Key set version the manifest was signed under.
    pub key_set_version: u32,
    /// Manifest creation time.
    pub created: u64,
    /// Manifest expiry.
    pub expires: Option<u64>,
    /// Bundle size in bytes.
    pub size: u64,
    /// Upload time.
    pub uploaded_at: u64,
    /// Uploader's token name.
    pub uploaded_by: String,
    /// Retired releases are no longer deployable.
    pub retired: bool,
}

/// A product id (owned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    /// Vendor.
    pub vendor: String,
    /// Device class / hardware id.
    pub device: String,
}

/// An enrolled device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    /// Device id.
    pub id: String,
    /// Product.
    pub product: Product,
    /// Ed25519 identity public key (hex).
    pub public_key: String,
    /// Release channel, e.g. `stable`.
    pub channel: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Revoked devices are refused.
    pub revoked: bool,
    /// Enrolment time.
    pub enrolled_at: u64,
    /// Last check-in.
    pub last_seen: Option<u64>,
    /// Last reported version.
    pub version: Option<String>,
    /// Last reported security counter.
    pub security_counter: Option<u32>,
    /// Last reported state.
    pub state: Option<String>,
}

#[cfg(test)]
impl Device {
    /// A freshly enrolled `acme`/`pump` device on `stable`, for tests.
    pub(crate) fn example(id: &str) -> Device {
        Device {
            id: id.to_owned(),
            product: Product {
                vendor: "acme".to_owned(),
                device: "pump".to_owned(),
            },
            public_key: "00".repeat(32),
            channel: "stable".to_owned(),
            groups: Vec::new(),
            labels: BTreeMap::new(),
            revoked: false,
            enrolled_at: 1,
            last_seen: None,
            version: None,
            security_counter: None,
            state: None,
        }
    }
}

/// A device's check-in report: the check-in as the device sent it, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Time.
    pub at: u64,
    /// What the device reported.
    #[serde(flatten)]
    pub check_in: CheckIn,
}

/// Which devices a deployment targets (within the release's product).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    content = "value",
    rename_all = "lowercase",
    deny_unknown_fields
)]
pub enum Target {
    /// Devices on a channel.
    Channel(String),
    /// Devices in a group.
    Group(String),
    /// These devices.
    Devices(Vec<String>),
}

/// A deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deployment {
    /// Id.
    pub id: i64,
    /// Release deployed.
    pub release_id: String,
    /// Product (from the release).
    pub product: Product,
    /// Target.
    pub target: Target,
    /// Rollout parameters.
    pub policy: RolloutPolicy,
    /// Current phase index.
    pub phase: usize,
    /// State.
    pub state: DeploymentState,
    /// Number of target devices.
    pub devices: usize,
    /// Creation time.
    pub created_at: u64,
    /// Creator's token name.
    pub created_by: String,
}

/// A target device's status in a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Device.
    pub device_id: String,
    /// Rank (admission order).
    pub rank: usize,
    /// Whether the current phase admits it.
    pub admitted: bool,
    /// Status.
    pub status: DeviceStatus,
    /// Last change.
    pub updated_at: u64,
}

/// A window of a long list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Entries to skip.
    pub offset: u64,
    /// Most entries to return.
    pub limit: u32,
}

impl Page {
    /// Everything: no offset, no limit.
    pub const ALL: Page = Page {
        offset: 0,
        limit: u32::MAX,
    };
}

/// Which releases a release list returns: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseFilter {
    /// Only releases for this product.
    pub product: Option<Product>,
    /// Only retired (`true`) or only live (`false`) releases.
    pub retired: Option<bool>,
}

/// Which deployments a deployment list returns: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentFilter {
    /// Only deployments for this product.
    pub product: Option<Product>,
    /// Only deployments in this state.
    pub state: Option<DeploymentState>,
}

/// Which devices a device list returns: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    /// Only devices of this product.
    pub product: Option<Product>,
    /// Only devices on this channel.
    pub channel: Option<String>,
    /// Only devices in this group.
    pub group: Option<String>,
    /// Only devices whose last reported state is this one.
    pub state: Option<String>,
    /// Only revoked (`true`) or only active (`false`) devices.
    pub revoked: Option<bool>,
}

/// A deployment, its status counts over all target devices, and one page of its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentDetail {
    /// The deployment.
    pub deployment: Deployment,
    /// Target devices per status.
    pub counts: Vec<(DeviceStatus, u64)>,
    /// The requested page of members, in rank order.
    pub members: Vec<Member>,
}

/// A new deployment request.
#[derive(Debug, Clone)]
pub struct NewDeployment {
    /// Release to deploy.
    pub release_id: String,
    /// Target.
    pub target: Target,
    /// Rollout parameters (validated).
    pub policy: RolloutPolicy,
}

/// An operator action on a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentAction {
    /// Active → paused.
    Pause,
    /// Paused or halted → active.
    Resume,
    /// Any non-final state → cancelled.
    Cancel,
}

/// A device check-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckIn {
    /// Device (from the session).
    pub device_id: String,
    /// Running version.
    pub version: String,
    /// Stored security counter.
    pub security_counter: u32,
    /// `idle` or a [`DeviceStatus`] name.
    pub state: String,
    /// Deployment the state refers to.
    pub deployment_id: Option<i64>,
    /// Free-form detail.
    pub detail: Option<String>,
}

/// The update assigned to a device.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The deployment.
    pub deployment_id: i64,
    /// The release.
    pub release: Release,
    /// The device's status in it.
    pub status: DeviceStatus,
}

/// Rollout figures for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutSummary {
    /// Deployments per state.
    pub deployments: Vec<(DeploymentState, u64)>,
    /// Device outcomes summed over active, paused and halted deployments.
    pub devices: Counts,
}

/// An event for the audit trail.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Actor.
    pub actor: String,
    /// Action.
    pub action: &'static str,
    /// Subject.
    pub subject: String,
    /// Details.
    pub detail: serde_json::Value,
}

impl AuditEvent {
    /// Builds an event.
    pub fn new(
        actor: &str,
        action: &'static str,
        subject: &str,
        detail: serde_json::Value,
    ) -> Self {
        AuditEvent {
            actor: actor.to_owned(),
            action,
            subject: subject.to_owned(),
            detail,
        }
    }
}

/// What a new checkpoint covers, handed to its signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointDraft {
    /// The head's sequence number.
    pub seq: u64,
    /// The head's hash.
    pub head: String,
    /// Signing time.
    pub at: u64,
    /// The key that must sign (hex): the latest checkpoint's next key, else its key; `None`
    /// before the first checkpoint.
    pub expected_key: Option<String>,
}

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such record.
    #[error("{what} {id} not found")]
    NotFound {
        /// Kind of record.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The change conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The request is inconsistent with stored data.
    #[error("{0}")]
    Invalid(String),
    /// The backend failed.
    #[error("storage backend: {0}")]
    Backend(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error() {
            Some(code) => StoreError::Backend(format!("{e} (SQLite code {})", code.extended_code)),
            None => StoreError::Backend(e.to_string()),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Backend(format!("stored JSON: {e}"))
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The storage interface the handlers use. Calls block; the API runs them on the blocking pool.
pub trait Store: crate::roots::RootChainStore + Send + Sync + 'static {
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
    /// Lists API tokens (not device sessions).
    fn tokens(&self) -> StoreResult<Vec<TokenInfo>>;
    /// Deletes an API token.
    fn revoke_token(&self, id: i64, audit: &AuditEvent) -> StoreResult<()>;

    /// Inserts a release; `false` if the same bundle already exists.
    fn insert_release(&self, release: &Release, audit: &AuditEvent) -> StoreResult<bool>;
    /// All releases, newest first.
    /// Releases that pass `filter`, newest upload first.
    fn releases(&self, filter: &ReleaseFilter, page: Page) -> StoreResult<Vec<Release>>;
    /// One release.
    fn release(&self, id: &str) -> StoreResult<Option<Release>>;
    /// Marks a release retired.
    fn retire_release(&self, id: &str, audit: &AuditEvent) -> StoreResult<Release>;

    /// Enrols a device.
    fn enrol_device(&self, device: &Device, audit: &AuditEvent) -> StoreResult<()>;
    /// One device.
    fn device(&self, id: &str) -> StoreResult<Option<Device>>;
    /// All devices.
    fn devices(&self, filter: &DeviceFilter, page: Page) -> StoreResult<Vec<Device>>;
    /// Revokes a device and ends its sessions.
    fn revoke_device(&self, id: &str, audit: &AuditEvent) -> StoreResult<()>;

    /// Records a check-in, updates deployment status and rollout, and returns the assignment.
    fn check_in(&self, report: &CheckIn, now: u64, keep: u32) -> StoreResult<Option<Assignment>>;
    /// Records check-ins in order, each as [`Store::check_in`] would, with one result per
    /// check-in; one that fails changes nothing and leaves the others recorded. The outer error
    /// means that none was recorded. A backend may commit them together (the default records
    /// them one by one).
    fn check_in_batch(
        &self,
        batch: &[CheckIn],
        now: u64,
        keep: u32,
    ) -> StoreResult<Vec<StoreResult<Option<Assignment>>>> {
        Ok(batch.iter().map(|c| self.check_in(c, now, keep)).collect())
    }
    /// The last `limit` reports of a device, newest first.
    fn reports(&self, device_id: &str, limit: u32) -> StoreResult<Vec<Report>>;
    /// Whether an active deployment admits this device for this release, and the release is
    /// neither retired nor expired at `now` (the same rule as the check-in's offer).
    fn may_download(&self, device_id: &str, release_id: &str, now: u64) -> StoreResult<bool>;

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
    /// Pauses, resumes or cancels.
    fn act_on_deployment(
        &self,
        id: i64,
        action: DeploymentAction,
        audit: &AuditEvent,
    ) -> StoreResult<Deployment>;
    /// Deployments per state, and device outcomes in open deployments (metrics).
    fn rollout_summary(&self) -> StoreResult<RolloutSummary>;

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

    /// Every release id (for bundle store reconciliation at start-up).
    fn release_ids(&self) -> StoreResult<Vec<String>>;
}

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tokens (
    id INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    device_id TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
);
CREATE TABLE releases (
    id TEXT PRIMARY KEY,
    vendor TEXT NOT NULL,
    device TEXT NOT NULL,
    component TEXT NOT NULL,
    version TEXT NOT NULL,
    security_counter INTEGER NOT NULL,
    payload_size INTEGER NOT NULL,
    payload_digest TEXT NOT NULL,
    key_set_version INTEGER NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER,
    size INTEGER NOT NULL,
    uploaded_at INTEGER NOT NULL,
    uploaded_by TEXT NOT NULL,
    retired INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    vendor TEXT NOT NULL,
    device TEXT NOT NULL,
    public_key TEXT NOT NULL,
    channel TEXT NOT NULL,
    groups TEXT NOT NULL,
    labels TEXT NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    enrolled_at INTEGER NOT NULL,
    last_seen INTEGER,
    version TEXT,
    security_counter INTEGER,
    state TEXT
);
CREATE TABLE challenges (
    device_id TEXT PRIMARY KEY,
    nonce BLOB NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE reports (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    version TEXT NOT NULL,
    security_counter INTEGER NOT NULL,
    state TEXT NOT NULL,
    deployment_id INTEGER,
    detail TEXT
);
CREATE INDEX reports_by_device ON reports (device_id, id);
CREATE TABLE deployments (
    id INTEGER PRIMARY KEY,
    release_id TEXT NOT NULL REFERENCES releases (id),
    vendor TEXT NOT NULL,
    device TEXT NOT NULL,
    target TEXT NOT NULL,
    policy TEXT NOT NULL,
    phase INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    device_count INTEGER NOT NULL
);
CREATE TABLE members (
    deployment_id INTEGER NOT NULL REFERENCES deployments (id),
    device_id TEXT NOT NULL REFERENCES devices (id),
    rank INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    status TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (deployment_id, device_id)
);
CREATE INDEX members_by_device ON members (device_id);
CREATE TABLE rollout_counts (
    deployment_id INTEGER NOT NULL REFERENCES deployments (id),
    bucket INTEGER NOT NULL,
    confirmed INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    open INTEGER NOT NULL,
    PRIMARY KEY (deployment_id, bucket)
);
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#,
    r#"
DROP TABLE challenges;
CREATE TRIGGER audit_append_only BEFORE INSERT ON audit
    WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq), 0) + 1 FROM audit)
      OR NEW.prev_hash IS NOT COALESCE((SELECT hash FROM audit ORDER BY seq DESC LIMIT 1),
          '0000000000000000000000000000000000000000000000000000000000000000')
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE audit_checkpoints (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    head TEXT NOT NULL,
    at INTEGER NOT NULL,
    public_key TEXT NOT NULL,
    next_public_key TEXT,
    signature TEXT NOT NULL
);
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
"#,
    // Root rotation (`crate::roots`): the one root chain the server was given.
    r#"
CREATE TABLE root_chain (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    chain BLOB NOT NULL,
    newest_version INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
"#,
];

/// A schema object: `(type, name, table, SQL)`.
type SchemaObject = (String, String, String, Option<String>);

/// The schema objects of a database, SQLite's own excepted.
fn schema_objects(conn: &Connection) -> StoreResult<Vec<SchemaObject>> {
    let mut stmt = conn.prepare(
        "SELECT type, name, tbl_name, sql FROM sqlite_master \
         WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The SQLite backend in WAL mode: one writer connection and `READERS` (4) read-only connections
/// (WAL lets readers run beside the writer), each serialised by a mutex.
///
/// Writes are `synchronous = FULL`: an acknowledged upload, enrolment, deployment change or audit
/// entry survives power loss. Device check-ins commit with `synchronous = NORMAL` (durable
/// against a server crash, fsynced at the next full commit or checkpoint): after a power loss the
/// last moments of device reports may be missing, together with their audit entries, and every
/// device re-reports its state at its next check-in. This keeps one fsync off each check-in.
/// [`Store::check_in_batch`] commits many check-ins in one transaction (the API queues them, see
/// `api::checkin_queue`), each inside its own savepoint; the durability is the same, since a
/// check-in is answered only after the commit that holds it.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
    checkpointer: Option<Checkpointer>,
}

/// Checkpoints the WAL from its own connection and thread, so that copying the log into the
/// database (and its fsync) never happens inside a request's commit. The writer keeps a large
/// automatic checkpoint as a backstop should this thread stop.
#[derive(Debug)]
struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Read-only connections of a file database. Token lookups (every request) and listings go
/// through them; with one, a lookup that had to wait for the disk held up every request behind
/// it.
const READERS: usize = 4;

const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
const BACKSTOP_CHECKPOINT_PAGES: i64 = 20_000;

impl Checkpointer {
    fn start(path: &Path) -> StoreResult<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".to_owned())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    // PASSIVE: copies what it can without waiting for, or blocking, the writer.
                    let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// SQLite integers are signed; values above `i64::MAX` saturate (no time or size gets there).
/// Runs a filtered, paged list query. The statement's first four parameters are always
/// `?1` limit, `?2` offset, `?3` vendor and `?4` device (`NULL` for any product); `more` binds
/// `?5` onwards. An absent condition is a `NULL` parameter, so one cached statement serves
/// every combination of filters.
fn filtered_list<T>(
    conn: &Connection,
    sql: &str,
    page: Page,
    product: Option<&Product>,
    more: &[&dyn rusqlite::ToSql],
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    let offset = to_sql(page.offset);
    let vendor = product.map(|p| &p.vendor);
    let device = product.map(|p| &p.device);
    let mut params: Vec<&dyn rusqlite::ToSql> = vec![&page.limit, &offset, &vendor, &device];
    params.extend_from_slice(more);
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params.as_slice(), row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn to_sql(at: u64) -> i64 {
    i64::try_from(at).unwrap_or(i64::MAX)
}

/// The inverse of [`to_sql`]; a negative value (never written) reads as 0.
fn from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

const RELEASE_COLUMNS: &str =
    "id, vendor, device, component, version, security_counter, payload_size, \
     payload_digest, key_set_version, created, expires, size, uploaded_at, uploaded_by, retired";

fn release_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Release> {
    Ok(Release {
        id: r.get(0)?,
        vendor: r.get(1)?,
        device: r.get(2)?,
        component: r.get(3)?,
        version: r.get(4)?,
        security_counter: r.get(5)?,
        payload_size: from_sql(r.get(6)?),
        payload_digest: r.get(7)?,
        key_set_version: r.get(8)?,
        created: from_sql(r.get(9)?),
        expires: r.get::<_, Option<i64>>(10)?.map(from_sql),
        size: from_sql(r.get(11)?),
        uploaded_at: from_sql(r.get(12)?),
        uploaded_by: r.get(13)?,
        retired: r.get(14)?,
    })
}

const CHECKPOINT_COLUMNS: &str = "seq, head, at, public_key, next_public_key, signature";

fn checkpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Checkpoint> {
    Ok(Checkpoint {
        seq: from_sql(r.get(0)?),
        head: r.get(1)?,
        at: from_sql(r.get(2)?),
        public_key: r.get(3)?,
        next_public_key: r.get(4)?,
        signature: r.get(5)?,
    })
}

const DEVICE_COLUMNS: &str = "id, vendor, device, public_key, channel, groups, labels, revoked, \
     enrolled_at, last_seen, version, security_counter, state";

type DeviceRow = (Device, String, String);

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok((
        Device {
            id: r.get(0)?,
            product: Product {
                vendor: r.get(1)?,
                device: r.get(2)?,
            },
            public_key: r.get(3)?,
            channel: r.get(4)?,
            groups: Vec::new(),
            labels: BTreeMap::new(),
            revoked: r.get(7)?,
            enrolled_at: from_sql(r.get(8)?),
            last_seen: r.get::<_, Option<i64>>(9)?.map(from_sql),
            version: r.get(10)?,
            security_counter: r.get(11)?,
            state: r.get(12)?,
        },
        r.get(5)?,
        r.get(6)?,
    ))
}

fn finish_device((mut d, groups, labels): DeviceRow) -> StoreResult<Device> {
    d.groups = serde_json::from_str(&groups)?;
    d.labels = serde_json::from_str(&labels)?;
    Ok(d)
}

const DEPLOYMENT_COLUMNS: &str =
    "d.id, d.release_id, d.vendor, d.device, d.target, d.policy, d.phase, d.state, d.created_at, \
     d.created_by, d.device_count";

type DeploymentRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    i64,
    String,
    i64,
);

fn deployment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeploymentRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
    ))
}

fn finish_deployment(row: DeploymentRow) -> StoreResult<Deployment> {
    let (id, release_id, vendor, device, target, policy, phase, state, created_at, created_by, n) =
        row;
    Ok(Deployment {
        id,
        release_id,
        product: Product { vendor, device },
        target: serde_json::from_str(&target)?,
        policy: serde_json::from_str(&policy)?,
        phase: usize::try_from(phase).unwrap_or(0),
        state: DeploymentState::parse(&state)
            .ok_or_else(|| StoreError::Backend(format!("unknown deployment state {state}")))?,
        devices: usize::try_from(n).unwrap_or(0),
        created_at: from_sql(created_at),
        created_by,
    })
}

fn load_deployment(tx: &Connection, id: i64) -> StoreResult<Option<Deployment>> {
    let row = tx
        .prepare_cached(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments d WHERE d.id = ?1"
        ))?
        .query_row([id], deployment_row)
        .optional()?;
    row.map(finish_deployment).transpose()
}

/// Appends an audit entry inside a transaction.
fn append(tx: &Connection, event: &AuditEvent, now: u64) -> StoreResult<AuditEntry> {
    let (seq, prev): (u64, String) = tx
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((from_sql(r.get(0)?), r.get(1)?)))
        .optional()?
        .unwrap_or((0, GENESIS_HASH.to_owned()));
    let seq = seq.saturating_add(1);
    let detail = event.detail.to_string();
    let hash = entry_hash(
        seq,
        now,
        &event.actor,
        event.action,
        &event.subject,
        &detail,
        &prev,
    );
    tx.prepare_cached(
        "INSERT INTO audit (seq, at, actor, action, subject, detail, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        to_sql(seq),
        to_sql(now),
        event.actor,
        event.action,
        event.subject,
        detail,
        prev,
        hash
    ])?;
    Ok(AuditEntry {
        seq,
        at: now,
        actor: event.actor.clone(),
        action: event.action.to_owned(),
        subject: event.subject.clone(),
        detail,
        prev_hash: prev,
        hash,
    })
}

/// The counter column of a status in `rollout_counts`.
fn counter(status: DeviceStatus) -> &'static str {
    match status {
        DeviceStatus::Confirmed => "confirmed",
        s if s.is_failure() => "failures",
        _ => "open",
    }
}

/// Status counts over the devices admitted up to `phase`.
fn phase_counts(tx: &Connection, id: i64, phase: usize) -> StoreResult<Counts> {
    let (confirmed, failures, open): (i64, i64, i64) = tx
        .prepare_cached(
            "SELECT COALESCE(SUM(confirmed), 0), COALESCE(SUM(failures), 0), COALESCE(SUM(open), 0) \
             FROM rollout_counts WHERE deployment_id = ?1 AND bucket <= ?2",
        )?
        .query_row(params![id, phase as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    let n = |v: i64| usize::try_from(v).unwrap_or(0);
    Ok(Counts {
        confirmed: n(confirmed),
        failures: n(failures),
        open: n(open),
    })
}

/// Re-evaluates an active rollout after a status change and records what changed.
fn reevaluate(tx: &Connection, id: i64, now: u64) -> StoreResult<()> {
    let Some(dep) = load_deployment(tx, id)? else {
        return Ok(());
    };
    if dep.state != DeploymentState::Active {
        return Ok(());
    }
    let eval = evaluate(&dep.policy, dep.phase, dep.devices, |p| {
        phase_counts(tx, id, p)
    })?;
    if eval.phase == dep.phase && eval.state == dep.state {
        return Ok(());
    }
    tx.prepare_cached("UPDATE deployments SET phase = ?2, state = ?3 WHERE id = ?1")?
        .execute(params![id, to_sql(eval.phase as u64), eval.state.as_str()])?;
    let c = phase_counts(tx, id, eval.phase)?;
    let detail = serde_json::json!({
        "phase": eval.phase,
        "state": eval.state,
        "confirmed": c.confirmed,
        "failures": c.failures,
        "open": c.open,
    });
    let action = match eval.state {
        DeploymentState::Halted => "deployment.halt",
        DeploymentState::Completed => "deployment.complete",
        _ => "deployment.advance",
    };
    append(
        tx,
        &AuditEvent::new("system", action, &id.to_string(), detail),
        now,
    )?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database and runs pending migrations.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let mut store = Self::init(Connection::open(path)?)?;
        for _ in 0..READERS {
            let reader =
                Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            reader.busy_timeout(std::time::Duration::from_secs(5))?;
            store.readers.push(Mutex::new(reader));
        }
        store
            .conn()?
            .pragma_update(None, "wal_autocheckpoint", BACKSTOP_CHECKPOINT_PAGES)?;
        store.checkpointer = Some(Checkpointer::start(path)?);
        Ok(store)
    }

    /// An in-memory database (tests).
    pub fn in_memory() -> StoreResult<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> StoreResult<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let done = usize::try_from(version).unwrap_or(0);
        if done > MIGRATIONS.len() {
            return Err(StoreError::Backend(format!(
                "database schema version {done} is newer than this server ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i.saturating_add(1) as i64)?;
            tx.commit()?;
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            readers: Vec::new(),
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            checkpointer: None,
        })
    }

    /// A read-only connection (the writer for an in-memory database).
    fn reader(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        let poisoned = || StoreError::Backend("database lock poisoned".to_owned());
        let n = self.readers.len();
        let start = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A free connection if there is one, so that a read waiting on the disk does not hold
        // up the others; else wait for one.
        for i in 0..n {
            if let Some(r) = self.readers.get(start.wrapping_add(i) % n) {
                match r.try_lock() {
                    Ok(guard) => return Ok(guard),
                    Err(std::sync::TryLockError::WouldBlock) => {}
                    Err(std::sync::TryLockError::Poisoned(_)) => return Err(poisoned()),
                }
            }
        }
        match self.readers.get(start % n.max(1)) {
            Some(r) => r.lock().map_err(|_| poisoned()),
            None => self.conn(),
        }
    }

    /// A transaction committed with `synchronous = NORMAL` (see the type's documentation).
    fn with_relaxed_tx<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut conn = self.conn()?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let out = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })();
        conn.pragma_update(None, "synchronous", "FULL")?;
        out
    }

    /// A read connection, for the store traits kept in their own modules
    /// ([`crate::roots::RootChainStore`]).
    pub(crate) fn read_connection(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        self.reader()
    }

    /// Runs `f` in a write transaction (`synchronous = FULL`) that also appends `audit`; `f`
    /// gets the transaction and the time in SQL form. For the store traits in their own modules.
    pub(crate) fn write_audited(
        &self,
        audit: &AuditEvent,
        f: impl FnOnce(&Transaction<'_>, i64) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let now = now_secs();
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        f(&tx, to_sql(now))?;
        append(&tx, audit, now)?;
        tx.commit()?;
        Ok(())
    }

    fn conn(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| StoreError::Backend("database lock poisoned".to_owned()))
    }

    /// A write transaction. `IMMEDIATE` takes the write lock at `BEGIN`, where the busy timeout
    /// applies, instead of upgrading a read snapshot later, which can fail at once.
    fn with_tx<T>(&self, f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn all_devices(&self) -> StoreResult<Vec<Device>> {
        let conn = self.reader()?;
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY id"))?;
        let rows = stmt.query_map([], device_row)?;
        rows.map(|r| finish_device(r?)).collect()
    }

    /// How the schema differs from the one this server's migrations create: a dropped or
    /// altered trigger, a renamed or recreated table, anything added. Empty when intact.
    ///
    /// This catches a database edited with the guard triggers out of the way and left so; a
    /// careful editor can restore the schema, which the hash chain and the signed checkpoints
    /// then catch (`audit_key::check_at_start`).
    pub fn schema_differences(&self) -> StoreResult<Vec<String>> {
        let expected = {
            let conn = Connection::open_in_memory()?;
            for sql in MIGRATIONS {
                conn.execute_batch(sql)?;
            }
            schema_objects(&conn)?
        };
        let actual = schema_objects(&*self.conn()?)?;
        let mut out = Vec::new();
        for e in &expected {
            match actual.iter().find(|a| a.0 == e.0 && a.1 == e.1) {
                None => out.push(format!("{} {} is missing", e.0, e.1)),
                Some(a) if a.2 != e.2 => out.push(format!(
                    "{} {} was moved to table {} (was {} renamed?)",
                    e.0, e.1, a.2, e.2
                )),
                Some(a) if a != e => out.push(format!("{} {} was altered", e.0, e.1)),
                Some(_) => {}
            }
        }
        for a in &actual {
            if !expected.iter().any(|e| e.0 == a.0 && e.1 == a.1) {
                out.push(format!("unexpected {} {} (on table {})", a.0, a.1, a.2));
            }
        }
        Ok(out)
    }

    /// Direct access for tests that tamper with the database.
    #[doc(hidden)]
    pub fn dangerous_raw_connection(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        self.conn()
    }
}

impl Store for SqliteStore {
    fn has_admin_token(&self) -> StoreResult<bool> {
        let conn = self.reader()?;
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM tokens WHERE role = 'admin'",
            [],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    fn create_token(
        &self,
        grant: &TokenGrant<'_>,
        now: u64,
        audit: Option<&AuditEvent>,
    ) -> StoreResult<i64> {
        let TokenGrant {
            hash,
            name,
            role,
            device_id,
            expires_at,
        } = *grant;
        self.with_tx(|tx| {
            if let Some(expires_at) = expires_at {
                // Session tokens expire; sweep the expired ones as new ones are issued.
                tx.prepare_cached(
                    "DELETE FROM tokens WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                )?
                .execute([to_sql(now.min(expires_at))])?;
            }
            tx.prepare_cached(
                "INSERT INTO tokens (hash, name, role, device_id, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                &hash[..],
                name,
                role.as_str(),
                device_id,
                to_sql(now),
                expires_at.map(to_sql)
            ])?;
            let id = tx.last_insert_rowid();
            if let Some(event) = audit {
                append(tx, event, now)?;
            }
            Ok(id)
        })
    }

    fn principal(&self, hash: &[u8; 32], now: u64) -> StoreResult<Option<Principal>> {
        let conn = self.reader()?;
        let row = conn
            .prepare_cached(
                "SELECT t.role, t.name, t.device_id FROM tokens t \
                 LEFT JOIN devices d ON d.id = t.device_id \
                 WHERE t.hash = ?1 AND (t.expires_at IS NULL OR t.expires_at > ?2) \
                 AND (t.device_id IS NULL OR d.revoked = 0)",
            )?
            .query_row(params![&hash[..], to_sql(now)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })
            .optional()?;
        Ok(row.and_then(|(role, name, device_id)| {
            Role::parse(&role).map(|role| Principal {
                role,
                name,
                device_id,
            })
        }))
    }

    fn tokens(&self) -> StoreResult<Vec<TokenInfo>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, name, role, created_at FROM tokens WHERE device_id IS NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, role, created_at) = row?;
            if let Some(role) = Role::parse(&role) {
                out.push(TokenInfo {
                    id,
                    name,
                    role,
                    created_at: from_sql(created_at),
                });
            }
        }
        Ok(out)
    }

    fn revoke_token(&self, id: i64, audit: &AuditEvent) -> StoreResult<()> {
        self.with_tx(|tx| {
            let n = tx.execute(
                "DELETE FROM tokens WHERE id = ?1 AND device_id IS NULL",
                [id],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound {
                    what: "token",
                    id: id.to_string(),
                });
            }
            append(tx, audit, now_secs())?;
            Ok(())
        })
    }

    fn insert_release(&self, release: &Release, audit: &AuditEvent) -> StoreResult<bool> {
        self.with_tx(|tx| {
            let n = tx.execute(
                &format!(
                    "INSERT OR IGNORE INTO releases ({RELEASE_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 0)"
                ),
                params![
                    release.id,
                    release.vendor,
                    release.device,
                    release.component,
                    release.version,
                    release.security_counter,
                    to_sql(release.payload_size),
                    release.payload_digest,
                    release.key_set_version,
                    to_sql(release.created),
                    release.expires.map(to_sql),
                    to_sql(release.size),
                    to_sql(release.uploaded_at),
                    release.uploaded_by,
                ],
            )?;
            if n == 1 {
                append(tx, audit, release.uploaded_at)?;
            }
            Ok(n == 1)
        })
    }

    fn releases(&self, filter: &ReleaseFilter, page: Page) -> StoreResult<Vec<Release>> {
        filtered_list(
            &*self.reader()?,
            &format!(
                "SELECT {RELEASE_COLUMNS} FROM releases \
                 WHERE (?3 IS NULL OR vendor = ?3) AND (?4 IS NULL OR device = ?4) \
                   AND (?5 IS NULL OR retired = ?5) \
                 ORDER BY uploaded_at DESC, id LIMIT ?1 OFFSET ?2"
            ),
            page,
            filter.product.as_ref(),
            &[&filter.retired],
            release_row,
        )
    }

    fn release(&self, id: &str) -> StoreResult<Option<Release>> {
        let conn = self.reader()?;
        let row = conn
            .prepare_cached(&format!(
                "SELECT {RELEASE_COLUMNS} FROM releases WHERE id = ?1"
            ))?
            .query_row([id], release_row)
            .optional()?;
        Ok(row)
    }

    fn retire_release(&self, id: &str, audit: &AuditEvent) -> StoreResult<Release> {
        self.with_tx(|tx| {
            let n = tx.execute(
                "UPDATE releases SET retired = 1 WHERE id = ?1 AND retired = 0",
                [id],
            )?;
            let release = tx
                .query_row(
                    &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE id = ?1"),
                    [id],
                    release_row,
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound {
                    what: "release",
                    id: id.to_owned(),
                })?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "release {id} is already retired"
                )));
            }
            append(tx, audit, now_secs())?;
            Ok(release)
        })
    }

    fn enrol_device(&self, device: &Device, audit: &AuditEvent) -> StoreResult<()> {
        self.with_tx(|tx| {
            let n = tx.execute(
                "INSERT OR IGNORE INTO devices (id, vendor, device, public_key, channel, groups, labels, \
                 revoked, enrolled_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8)",
                params![
                    device.id,
                    device.product.vendor,
                    device.product.device,
                    device.public_key,
                    device.channel,
                    serde_json::to_string(&device.groups)?,
                    serde_json::to_string(&device.labels)?,
                    to_sql(device.enrolled_at)
                ],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("device {} is already enrolled", device.id)));
            }
            append(tx, audit, device.enrolled_at)?;
            Ok(())
        })
    }

    fn device(&self, id: &str) -> StoreResult<Option<Device>> {
        let conn = self.reader()?;
        let row = conn
            .prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"
            ))?
            .query_row([id], device_row)
            .optional()?;
        row.map(finish_device).transpose()
    }

    fn devices(&self, filter: &DeviceFilter, page: Page) -> StoreResult<Vec<Device>> {
        let rows = filtered_list(
            &*self.reader()?,
            &format!(
                "SELECT {DEVICE_COLUMNS} FROM devices \
                 WHERE (?3 IS NULL OR vendor = ?3) AND (?4 IS NULL OR device = ?4) \
                   AND (?5 IS NULL OR channel = ?5) \
                   AND (?6 IS NULL OR EXISTS \
                        (SELECT 1 FROM json_each(devices.groups) WHERE value = ?6)) \
                   AND (?7 IS NULL OR state = ?7) AND (?8 IS NULL OR revoked = ?8) \
                 ORDER BY id LIMIT ?1 OFFSET ?2"
            ),
            page,
            filter.product.as_ref(),
            &[
                &filter.channel,
                &filter.group,
                &filter.state,
                &filter.revoked,
            ],
            device_row,
        )?;
        rows.into_iter().map(finish_device).collect()
    }

    fn revoke_device(&self, id: &str, audit: &AuditEvent) -> StoreResult<()> {
        self.with_tx(|tx| {
            let exists: Option<bool> = tx
                .query_row("SELECT revoked FROM devices WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?;
            match exists {
                None => {
                    return Err(StoreError::NotFound {
                        what: "device",
                        id: id.to_owned(),
                    })
                }
                Some(true) => {
                    return Err(StoreError::Conflict(format!(
                        "device {id} is already revoked"
                    )))
                }
                Some(false) => {}
            }
            tx.execute("UPDATE devices SET revoked = 1 WHERE id = ?1", [id])?;
            tx.execute("DELETE FROM tokens WHERE device_id = ?1", [id])?;
            append(tx, audit, now_secs())?;
            Ok(())
        })
    }

    fn check_in(&self, c: &CheckIn, now: u64, keep: u32) -> StoreResult<Option<Assignment>> {
        self.with_relaxed_tx(|tx| record_check_in(tx, c, now, keep))
    }

    fn check_in_batch(
        &self,
        batch: &[CheckIn],
        now: u64,
        keep: u32,
    ) -> StoreResult<Vec<StoreResult<Option<Assignment>>>> {
        self.with_relaxed_tx(|tx| {
            let mut out = Vec::with_capacity(batch.len());
            for c in batch {
                // A savepoint per check-in: one that fails leaves no trace and does not undo
                // the others in the batch.
                tx.prepare_cached("SAVEPOINT check_in")?.execute([])?;
                match record_check_in(tx, c, now, keep) {
                    Ok(a) => {
                        tx.prepare_cached("RELEASE check_in")?.execute([])?;
                        out.push(Ok(a));
                    }
                    Err(e) => {
                        tx.execute_batch("ROLLBACK TO check_in; RELEASE check_in")?;
                        out.push(Err(e));
                    }
                }
            }
            Ok(out)
        })
    }

    fn reports(&self, device_id: &str, limit: u32) -> StoreResult<Vec<Report>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT device_id, at, version, security_counter, state, deployment_id, detail FROM reports \
             WHERE device_id = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![device_id, limit], |r| {
            Ok(Report {
                at: from_sql(r.get(1)?),
                check_in: CheckIn {
                    device_id: r.get(0)?,
                    version: r.get(2)?,
                    security_counter: r.get(3)?,
                    state: r.get(4)?,
                    deployment_id: r.get(5)?,
                    detail: r.get(6)?,
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn may_download(&self, device_id: &str, release_id: &str, now: u64) -> StoreResult<bool> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT d.id FROM deployments d JOIN members m ON m.deployment_id = d.id \
             JOIN releases r ON r.id = d.release_id \
             WHERE m.device_id = ?1 AND d.release_id = ?2 AND d.state = 'active' \
             AND r.retired = 0 AND (r.expires IS NULL OR r.expires > ?3)",
        )?;
        let ids: Vec<i64> = stmt
            .query_map(params![device_id, release_id, to_sql(now)], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in ids {
            if admitted_member(&conn, id, device_id)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn create_deployment(
        &self,
        new: &NewDeployment,
        now: u64,
        actor: &str,
    ) -> StoreResult<Deployment> {
        let candidates = self.all_devices()?;
        self.with_tx(|tx| {
            let release = tx
                .query_row(
                    &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE id = ?1"),
                    [&new.release_id],
                    release_row,
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound { what: "release", id: new.release_id.clone() })?;
            if release.retired {
                return Err(StoreError::Conflict(format!("release {} is retired", release.id)));
            }
            if let Some(expires) = release.expires.filter(|&e| e <= now) {
                return Err(StoreError::Conflict(format!(
                    "release {} expired at {expires} (seconds since the Unix epoch); devices would refuse it",
                    release.id
                )));
            }
            let fits = |d: &Device| {
                !d.revoked && d.product.vendor == release.vendor && d.product.device == release.device
            };
            let targets: Vec<&Device> = match &new.target {
                Target::Channel(c) => candidates.iter().filter(|d| fits(d) && &d.channel == c).collect(),
                Target::Group(g) => candidates.iter().filter(|d| fits(d) && d.groups.contains(g)).collect(),
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
                            None => return Err(StoreError::NotFound { what: "device", id: id.clone() }),
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
            tx.execute(
                "INSERT INTO deployments (release_id, vendor, device, target, policy, phase, state, created_at, \
                 created_by, device_count) VALUES (?1, ?2, ?3, ?4, ?5, 0, 'active', ?6, ?7, ?8)",
                params![
                    release.id,
                    release.vendor,
                    release.device,
                    serde_json::to_string(&new.target)?,
                    serde_json::to_string(&new.policy)?,
                    to_sql(now),
                    actor,
                    targets.len() as i64
                ],
            )?;
            let id = tx.last_insert_rowid();
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
            for (rank, (_, device)) in ranked.iter().enumerate() {
                let b = bucket(&new.policy, ranked.len(), rank);
                if let Some(n) = open.get_mut(b) {
                    *n = n.saturating_add(1);
                }
                tx.prepare_cached(
                    "INSERT INTO members (deployment_id, device_id, rank, bucket, status, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
                )?
                .execute(params![id, device, rank as i64, b as i64, to_sql(now)])?;
            }
            for (b, n) in open.iter().enumerate() {
                tx.prepare_cached(
                    "INSERT INTO rollout_counts (deployment_id, bucket, confirmed, failures, open) \
                     VALUES (?1, ?2, 0, 0, ?3)",
                )?
                .execute(params![id, b as i64, n])?;
            }
            let detail = serde_json::json!({
                "release": release.id,
                "version": release.version,
                "target": new.target,
                "policy": new.policy,
                "devices": ranked.len(),
            });
            append(tx, &AuditEvent::new(actor, "deployment.create", &id.to_string(), detail), now)?;
            load_deployment(tx, id)?.ok_or_else(|| StoreError::Backend("deployment vanished".to_owned()))
        })
    }

    fn deployments(&self, filter: &DeploymentFilter, page: Page) -> StoreResult<Vec<Deployment>> {
        let rows = filtered_list(
            &*self.reader()?,
            &format!(
                "SELECT {DEPLOYMENT_COLUMNS} FROM deployments d \
                 WHERE (?3 IS NULL OR d.vendor = ?3) AND (?4 IS NULL OR d.device = ?4) \
                   AND (?5 IS NULL OR d.state = ?5) \
                 ORDER BY d.id DESC LIMIT ?1 OFFSET ?2"
            ),
            page,
            filter.product.as_ref(),
            &[&filter.state.map(DeploymentState::as_str)],
            deployment_row,
        )?;
        rows.into_iter().map(finish_deployment).collect()
    }

    fn deployment(&self, id: i64, page: Page) -> StoreResult<Option<DeploymentDetail>> {
        let conn = self.reader()?;
        let Some(dep) = load_deployment(&conn, id)? else {
            return Ok(None);
        };
        let n = crate::rollout::admitted(
            dep.devices,
            dep.policy.phases.get(dep.phase).copied().unwrap_or(100),
        );
        let mut stmt = conn.prepare_cached(
            "SELECT device_id, rank, status, updated_at FROM members WHERE deployment_id = ?1 \
             ORDER BY rank LIMIT ?2 OFFSET ?3",
        )?;
        let rows = stmt.query_map(params![id, page.limit, to_sql(page.offset)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut members = Vec::new();
        for row in rows {
            let (device_id, rank, status, updated_at) = row?;
            let rank = usize::try_from(rank).unwrap_or(usize::MAX);
            members.push(Member {
                device_id,
                rank,
                admitted: rank < n,
                status: DeviceStatus::parse(&status).ok_or_else(|| {
                    StoreError::Backend(format!("unknown device status {status}"))
                })?,
                updated_at: from_sql(updated_at),
            });
        }
        let mut stmt = conn.prepare_cached(
            "SELECT status, COUNT(*) FROM members WHERE deployment_id = ?1 GROUP BY status",
        )?;
        let rows = stmt.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut counts = Vec::new();
        for row in rows {
            let (status, n) = row?;
            let status = DeviceStatus::parse(&status)
                .ok_or_else(|| StoreError::Backend(format!("unknown device status {status}")))?;
            counts.push((status, from_sql(n)));
        }
        Ok(Some(DeploymentDetail {
            deployment: dep,
            counts,
            members,
        }))
    }

    fn act_on_deployment(
        &self,
        id: i64,
        action: DeploymentAction,
        audit: &AuditEvent,
    ) -> StoreResult<Deployment> {
        self.with_tx(|tx| {
            let dep = load_deployment(tx, id)?.ok_or_else(|| StoreError::NotFound {
                what: "deployment",
                id: id.to_string(),
            })?;
            use DeploymentState::*;
            let next = match (action, dep.state) {
                (DeploymentAction::Pause, Active) => Paused,
                (DeploymentAction::Resume, Paused | Halted) => Active,
                (DeploymentAction::Cancel, Active | Paused | Halted) => Cancelled,
                (_, state) => {
                    return Err(StoreError::Conflict(format!(
                        "deployment {id} is {}; cannot {}",
                        state.as_str(),
                        match action {
                            DeploymentAction::Pause => "pause",
                            DeploymentAction::Resume => "resume",
                            DeploymentAction::Cancel => "cancel",
                        }
                    )))
                }
            };
            tx.execute(
                "UPDATE deployments SET state = ?2 WHERE id = ?1",
                params![id, next.as_str()],
            )?;
            let now = now_secs();
            append(tx, audit, now)?;
            if next == Active {
                // A resumed rollout may already meet its advance or halt condition.
                reevaluate(tx, id, now)?;
            }
            load_deployment(tx, id)?
                .ok_or_else(|| StoreError::Backend("deployment vanished".to_owned()))
        })
    }

    fn rollout_summary(&self) -> StoreResult<RolloutSummary> {
        let conn = self.reader()?;
        let mut stmt =
            conn.prepare_cached("SELECT state, COUNT(*) FROM deployments GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut deployments = Vec::new();
        for row in rows {
            let (state, n) = row?;
            if let Some(state) = DeploymentState::parse(&state) {
                deployments.push((state, from_sql(n)));
            }
        }
        let (confirmed, failures, open): (i64, i64, i64) = conn
            .prepare_cached(
                "SELECT COALESCE(SUM(c.confirmed), 0), COALESCE(SUM(c.failures), 0), \
                 COALESCE(SUM(c.open), 0) FROM rollout_counts c JOIN deployments d \
                 ON d.id = c.deployment_id WHERE d.state IN ('active', 'paused', 'halted')",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        let n = |v: i64| usize::try_from(v).unwrap_or(0);
        Ok(RolloutSummary {
            deployments,
            devices: Counts {
                confirmed: n(confirmed),
                failures: n(failures),
                open: n(open),
            },
        })
    }

    fn append_audit(&self, event: &AuditEvent, now: u64) -> StoreResult<AuditEntry> {
        self.with_tx(|tx| append(tx, event, now))
    }

    fn audit_entries(&self, after: u64, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit \
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![to_sql(after), limit], |r| {
            Ok(AuditEntry {
                seq: from_sql(r.get(0)?),
                at: from_sql(r.get(1)?),
                actor: r.get(2)?,
                action: r.get(3)?,
                subject: r.get(4)?,
                detail: r.get(5)?,
                prev_hash: r.get(6)?,
                hash: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn audit_head(&self) -> StoreResult<(u64, String)> {
        let conn = self.reader()?;
        let head = conn
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((from_sql(r.get(0)?), r.get(1)?)),
            )
            .optional()?;
        Ok(head.unwrap_or((0, GENESIS_HASH.to_owned())))
    }

    fn checkpoint(
        &self,
        now: u64,
        audit: Option<&AuditEvent>,
        sign: &mut dyn FnMut(&CheckpointDraft) -> Result<Checkpoint, String>,
    ) -> StoreResult<Checkpoint> {
        self.with_tx(|tx| {
            if let Some(event) = audit {
                append(tx, event, now)?;
            }
            let (seq, head): (u64, String) = tx
                .query_row(
                    "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                    [],
                    |r| Ok((from_sql(r.get(0)?), r.get(1)?)),
                )
                .optional()?
                .unwrap_or((0, GENESIS_HASH.to_owned()));
            let latest = tx
                .query_row(
                    &format!(
                        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY id DESC LIMIT 1"
                    ),
                    [],
                    checkpoint_row,
                )
                .optional()?;
            if let Some(cp) = &latest {
                if audit.is_none() && cp.seq == seq && cp.head == head {
                    return Ok(cp.clone());
                }
            }
            let draft = CheckpointDraft {
                seq,
                head,
                at: now,
                expected_key: latest.map(|cp| cp.next_public_key.unwrap_or(cp.public_key)),
            };
            let cp = sign(&draft).map_err(StoreError::Backend)?;
            tx.execute(
                &format!(
                    "INSERT INTO audit_checkpoints ({CHECKPOINT_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                ),
                params![
                    to_sql(cp.seq),
                    cp.head,
                    to_sql(cp.at),
                    cp.public_key,
                    cp.next_public_key,
                    cp.signature
                ],
            )?;
            Ok(cp)
        })
    }

    fn checkpoints(&self, up_to_seq: u64) -> StoreResult<Vec<Checkpoint>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE seq <= ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map([to_sql(up_to_seq)], checkpoint_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn release_ids(&self) -> StoreResult<Vec<String>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached("SELECT id FROM releases")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The member's status if the deployment's current phase admits the device.
fn admitted_member(
    conn: &Connection,
    deployment: i64,
    device_id: &str,
) -> StoreResult<Option<DeviceStatus>> {
    let Some(dep) = load_deployment(conn, deployment)? else {
        return Ok(None);
    };
    let n = crate::rollout::admitted(
        dep.devices,
        dep.policy.phases.get(dep.phase).copied().unwrap_or(100),
    );
    let row: Option<(i64, String)> = conn
        .prepare_cached(
            "SELECT rank, status FROM members WHERE deployment_id = ?1 AND device_id = ?2",
        )?
        .query_row(params![deployment, device_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(row.and_then(|(rank, status)| {
        (usize::try_from(rank).is_ok_and(|r| r < n))
            .then(|| DeviceStatus::parse(&status))
            .flatten()
    }))
}

/// Records one check-in inside the caller's write transaction (see [`Store::check_in`]).
fn record_check_in(
    tx: &Connection,
    c: &CheckIn,
    now: u64,
    keep: u32,
) -> StoreResult<Option<Assignment>> {
    let previous: Option<(Option<String>, Option<String>)> = tx
        .prepare_cached("SELECT version, state FROM devices WHERE id = ?1")?
        .query_row([&c.device_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((prev_version, prev_state)) = previous else {
        return Err(StoreError::NotFound {
            what: "device",
            id: c.device_id.clone(),
        });
    };
    tx.prepare_cached(
        "INSERT INTO reports (device_id, at, version, security_counter, state, deployment_id, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        c.device_id,
        to_sql(now),
        c.version,
        c.security_counter,
        c.state,
        c.deployment_id,
        c.detail
    ])?;
    tx.prepare_cached(
        "DELETE FROM reports WHERE device_id = ?1 AND id <= \
         (SELECT id FROM reports WHERE device_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )?
    .execute(params![c.device_id, keep])?;
    tx.prepare_cached(
        "UPDATE devices SET last_seen = ?2, version = ?3, security_counter = ?4, state = ?5 WHERE id = ?1",
    )?
    .execute(params![c.device_id, to_sql(now), c.version, c.security_counter, c.state])?;
    let actor = format!("device:{}", c.device_id);
    if prev_version.as_deref() != Some(c.version.as_str())
        || prev_state.as_deref() != Some(c.state.as_str())
    {
        let detail = serde_json::json!({
            "version": c.version,
            "security_counter": c.security_counter,
            "state": c.state,
            "deployment": c.deployment_id,
            "detail": c.detail,
        });
        append(
            tx,
            &AuditEvent::new(&actor, "device.report", &c.device_id, detail),
            now,
        )?;
    }
    if let (Some(dep), Some(status)) = (c.deployment_id, DeviceStatus::parse(&c.state)) {
        // Only a device its phase admitted reports for a deployment that is still open.
        let current: Option<(String, i64)> = tx
            .prepare_cached(
                "SELECT m.status, m.bucket FROM members m JOIN deployments d ON d.id = m.deployment_id \
                 WHERE m.deployment_id = ?1 AND m.device_id = ?2 AND m.bucket <= d.phase \
                 AND d.state IN ('active', 'paused', 'halted')",
            )?
            .query_row(params![dep, c.device_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((current, bucket)) = current {
            if current != status.as_str() {
                tx.prepare_cached(
                    "UPDATE members SET status = ?3, updated_at = ?4 WHERE deployment_id = ?1 AND device_id = ?2",
                )?
                .execute(params![dep, c.device_id, status.as_str(), to_sql(now)])?;
                let from = DeviceStatus::parse(&current).ok_or_else(|| {
                    StoreError::Backend(format!("unknown device status {current}"))
                })?;
                let (dec, inc) = (counter(from), counter(status));
                if dec != inc {
                    // Column names come from `counter`, never from input.
                    tx.prepare_cached(&format!(
                        "UPDATE rollout_counts SET {dec} = {dec} - 1, {inc} = {inc} + 1 \
                         WHERE deployment_id = ?1 AND bucket = ?2"
                    ))?
                    .execute(params![dep, bucket])?;
                }
                let detail =
                    serde_json::json!({ "deployment": dep, "from": current, "to": status });
                append(
                    tx,
                    &AuditEvent::new(&actor, "device.status", &c.device_id, detail),
                    now,
                )?;
                reevaluate(tx, dep, now)?;
            }
        }
    }
    assignment(tx, &c.device_id, c.security_counter, now)
}

/// The newest active deployment that admits the device and that it has not finished.
///
/// A release below the security counter the device reports is never offered: the device would
/// refuse it as a rollback anyway (FORMAT.md step 7), so offering it only wastes a download.
/// Nor is a retired release, or one whose manifest has expired (at `now`).
fn assignment(
    conn: &Connection,
    device_id: &str,
    security_counter: u32,
    now: u64,
) -> StoreResult<Option<Assignment>> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.id, d.release_id FROM deployments d JOIN members m ON m.deployment_id = d.id \
         JOIN releases r ON r.id = d.release_id \
         WHERE m.device_id = ?1 AND d.state = 'active' AND r.retired = 0 \
         AND (r.expires IS NULL OR r.expires > ?3) AND r.security_counter >= ?2 \
         AND m.status NOT IN ('confirmed', 'reverted', 'failed') ORDER BY d.id DESC",
    )?;
    let candidates: Vec<(i64, String)> = stmt
        .query_map(params![device_id, security_counter, to_sql(now)], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    for (id, release_id) in candidates {
        if let Some(status) = admitted_member(conn, id, device_id)? {
            let release = conn
                .prepare_cached(&format!(
                    "SELECT {RELEASE_COLUMNS} FROM releases WHERE id = ?1"
                ))?
                .query_row([&release_id], release_row)?;
            return Ok(Some(Assignment {
                deployment_id: id,
                release,
                status,
            }));
        }
    }
    Ok(None)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::verify_entries;

    fn event(n: u32) -> AuditEvent {
        AuditEvent::new(
            "ops",
            "test.event",
            &n.to_string(),
            serde_json::json!({ "n": n }),
        )
    }

    #[test]
    fn migrations_are_idempotent_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.append_audit(&event(1), 1).unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.audit_entries(0, u32::MAX).unwrap().len(), 1);
    }

    #[test]
    fn session_tokens_expire_and_api_tokens_do_not() {
        let s = SqliteStore::in_memory().unwrap();
        let device = Device::example("pump-1");
        s.enrol_device(&device, &event(1)).unwrap();
        let session = TokenGrant {
            hash: &[1; 32],
            name: "device:pump-1",
            role: Role::Device,
            device_id: Some("pump-1"),
            expires_at: Some(100),
        };
        let api = TokenGrant {
            hash: &[2; 32],
            name: "ops",
            role: Role::Operator,
            device_id: None,
            expires_at: None,
        };
        s.create_token(&session, 10, None).unwrap();
        s.create_token(&api, 10, None).unwrap();
        let p = s.principal(&[1; 32], 99).unwrap().unwrap();
        assert_eq!(
            (p.role, p.device_id.as_deref()),
            (Role::Device, Some("pump-1"))
        );
        assert_eq!(s.principal(&[1; 32], 100).unwrap(), None, "expired");
        assert!(s.principal(&[2; 32], u64::MAX >> 2).unwrap().is_some());
        assert_eq!(s.principal(&[3; 32], 10).unwrap(), None, "unknown");
        // Listing shows API tokens only, never hashes.
        let listed = s.tokens().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "ops");
    }

    #[test]
    fn audit_log_refuses_inserts_that_are_not_the_next_chained_entry() {
        let s = SqliteStore::in_memory().unwrap();
        s.append_audit(&event(1), 1).unwrap();
        s.append_audit(&event(2), 2).unwrap();
        let conn = s.dangerous_raw_connection().unwrap();
        for sql in [
            // Rewrites entry 1 (REPLACE deletes without firing the delete trigger).
            "INSERT OR REPLACE INTO audit SELECT 1, at, 'mallory', action, subject, detail, prev_hash, hash FROM audit WHERE seq = 1",
            // A gap.
            "INSERT INTO audit SELECT 4, at, actor, action, subject, detail, hash, hash FROM audit WHERE seq = 2",
            // The next number, not chained to the head.
            "INSERT INTO audit SELECT 3, at, actor, action, subject, detail, prev_hash, hash FROM audit WHERE seq = 2",
        ] {
            let e = conn.execute(sql, []).unwrap_err();
            assert!(e.to_string().contains("append-only"), "{sql}: {e}");
        }
    }

    #[test]
    fn schema_differences_name_dropped_triggers_and_renamed_tables() {
        let s = SqliteStore::in_memory().unwrap();
        assert_eq!(s.schema_differences().unwrap(), Vec::<String>::new());
        s.dangerous_raw_connection()
            .unwrap()
            .execute_batch(
                "DROP TRIGGER audit_no_delete; ALTER TABLE audit_checkpoints RENAME TO cp;",
            )
            .unwrap();
        let d = s.schema_differences().unwrap().join("\n");
        assert!(d.contains("trigger audit_no_delete is missing"), "{d}");
        assert!(d.contains("table audit_checkpoints is missing"), "{d}");
        assert!(d.contains("unexpected table cp"), "{d}");
    }

    #[test]
    fn audit_log_refuses_updates_and_deletes() {
        let s = SqliteStore::in_memory().unwrap();
        s.append_audit(&event(1), 1).unwrap();
        let conn = s.dangerous_raw_connection().unwrap();
        assert!(conn.execute("UPDATE audit SET actor = 'x'", []).is_err());
        assert!(conn.execute("DELETE FROM audit", []).is_err());
    }

    #[test]
    fn tampering_with_a_stored_entry_is_detected() {
        for tamper in [
            "UPDATE audit SET actor = 'mallory' WHERE seq = 2",
            "UPDATE audit SET detail = '{\"n\":7}' WHERE seq = 3",
            "DELETE FROM audit WHERE seq = 2",
            "UPDATE audit SET seq = 100 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 3; \
             UPDATE audit SET seq = 3 WHERE seq = 100;",
        ] {
            let s = SqliteStore::in_memory().unwrap();
            for n in 1..=4 {
                s.append_audit(&event(n), u64::from(n)).unwrap();
            }
            assert!(verify_entries(&s.audit_entries(0, u32::MAX).unwrap()).is_ok());
            {
                let conn = s.dangerous_raw_connection().unwrap();
                // An attacker with write access to the file drops the guard triggers first.
                conn.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
                    .unwrap();
                conn.execute_batch(tamper).unwrap();
            }
            assert!(
                verify_entries(&s.audit_entries(0, u32::MAX).unwrap()).is_err(),
                "undetected: {tamper}"
            );
        }
    }
}
