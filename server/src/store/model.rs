//! The domain model the store keeps: tokens, releases, devices, deployments, check-ins and
//! audit events, independent of any backend.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
pub use sigil_protocol::CheckInState;

use crate::rollout::{Counts, DeploymentState, DeviceStatus, RolloutPolicy};

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
    /// Approves releases for production channels (four-eyes).
    Approver,
}

impl Role {
    /// All roles.
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::Release,
        Role::Operator,
        Role::Auditor,
        Role::Device,
        Role::Approver,
    ];

    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Release => "release",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Device => "device",
            Role::Approver => "approver",
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
    /// Expiry (device sessions; optional for API tokens).
    pub expires_at: Option<u64>,
    /// The account that owns an API token (the audit actor of its requests); `None` for
    /// device sessions, and for an API token: a service account named `name`, created if
    /// missing.
    pub owner: Option<&'a str>,
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
    /// The owning account (the audit actor).
    pub owner: String,
    /// Expiry, if any.
    pub expires_at: Option<u64>,
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
    pub state: Option<CheckInState>,
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
    /// Only deployments of this release.
    pub release: Option<String>,
    /// Only deployments in this account's scope (see
    /// [`super::accounts::Scope::admits_target`]): cut by the database, so pages hold whole
    /// pages of what the scope may see.
    pub scope: Option<super::accounts::Scope>,
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
    pub state: Option<CheckInState>,
    /// Only revoked (`true`) or only active (`false`) devices.
    pub revoked: Option<bool>,
    /// Only devices whose last reported version is this one.
    pub version: Option<String>,
    /// Only devices in this account's scope (see [`super::accounts::Scope::admits_device`]).
    pub scope: Option<super::accounts::Scope>,
}

/// One condition of a device list, for a backend to write as SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceCondition<'a> {
    /// A text column equals the value.
    Is(&'static str, &'a str),
    /// `revoked` is the value.
    Revoked(bool),
    /// The text column is one of the values (never empty).
    OneOf(&'static str, &'a [String]),
    /// The device is of one of the products (never empty).
    ProductOneOf(&'a [Product]),
    /// The device is in at least one of the groups (never empty).
    InAnyGroup(&'a [String]),
}

impl DeviceFilter {
    /// The conditions a device must meet, in a fixed order; the scope's restrictions among
    /// them, so that lists, counts and pages are cut to the scope by the database alike.
    pub fn conditions(&self) -> Vec<DeviceCondition<'_>> {
        let mut c = Vec::new();
        if let Some(p) = &self.product {
            c.push(DeviceCondition::Is("vendor", &p.vendor));
            c.push(DeviceCondition::Is("device", &p.device));
        }
        if let Some(ch) = &self.channel {
            c.push(DeviceCondition::Is("channel", ch));
        }
        if let Some(g) = &self.group {
            c.push(DeviceCondition::InAnyGroup(std::slice::from_ref(g)));
        }
        if let Some(s) = self.state {
            c.push(DeviceCondition::Is("state", s.as_str()));
        }
        if let Some(r) = self.revoked {
            c.push(DeviceCondition::Revoked(r));
        }
        if let Some(v) = &self.version {
            c.push(DeviceCondition::Is("version", v));
        }
        if let Some(scope) = &self.scope {
            if !scope.products.is_empty() {
                c.push(DeviceCondition::ProductOneOf(&scope.products));
            }
            if !scope.groups.is_empty() {
                c.push(DeviceCondition::InAnyGroup(&scope.groups));
            }
            if !scope.channels.is_empty() {
                c.push(DeviceCondition::OneOf("channel", &scope.channels));
            }
        }
        c
    }
}

/// How many devices pass a filter: in all, per last reported state and per version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceCounts {
    /// Every device that passes.
    pub total: u64,
    /// Per last reported state (`None`: never reported), by state.
    pub by_state: Vec<(Option<CheckInState>, u64)>,
    /// Per last reported version (`None`: never reported), by version text.
    pub by_version: Vec<(Option<String>, u64)>,
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

/// When a deployment's devices reached confirmed, failed or reverted, counted by the database
/// in equal spans of time from the first such change to the last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Start of the first span (seconds since the epoch).
    pub start: u64,
    /// Length of each span in seconds (at least 1).
    pub width: u64,
    /// Per status and span index (in span order), the devices whose last change to that
    /// status fell in the span; spans with none are left out.
    pub counts: Vec<(DeviceStatus, u64, u64)>,
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
    /// The reported state.
    pub state: CheckInState,
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
    /// The release is encrypted (FORMAT.md §9): the offer needs the device's key record. Read
    /// with the assignment, so that a check-in offered a plain release makes no other query.
    pub encrypted: bool,
}

/// Rollout figures for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutSummary {
    /// Deployments per state.
    pub deployments: Vec<(DeploymentState, u64)>,
    /// Device outcomes summed over active, paused and halted deployments.
    pub devices: Counts,
}

/// What an audit entry records: the `action` field of the trail.
///
/// The names are part of the exported trail (and of each entry's hash): never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// An API token was issued.
    TokenCreate,
    /// An API token was revoked.
    TokenRevoke,
    /// A release was uploaded.
    ReleaseUpload,
    /// A release was retired.
    ReleaseRetire,
    /// A device was enrolled.
    DeviceEnrol,
    /// A device was revoked.
    DeviceRevoke,
    /// A device reported a new version or state.
    DeviceReport,
    /// A device's status in a deployment changed.
    DeviceStatus,
    /// A deployment was created.
    DeploymentCreate,
    /// An operator paused a deployment.
    DeploymentPause,
    /// An operator resumed a deployment.
    DeploymentResume,
    /// An operator cancelled a deployment.
    DeploymentCancel,
    /// A rollout moved to its next phase.
    DeploymentAdvance,
    /// A rollout passed its failure threshold and halted.
    DeploymentHalt,
    /// Every target device of a rollout finished.
    DeploymentComplete,
    /// The audit checkpoint key was rotated.
    AuditKeyRotate,
    /// An administrator gave the server a (longer) trust root chain.
    RootChainUpdate,
    /// An account was created.
    UserCreate,
    /// A person was given a new enrolment code.
    UserEnrolmentIssue,
    /// A person finished enrolment (passphrase and second factor).
    UserEnrol,
    /// An account was disabled or re-activated.
    UserState,
    /// An account's scope was set or cleared.
    UserScope,
    /// A person logged in.
    UserLogin,
    /// A login failed (wrong passphrase or code, or an attempt during backoff).
    UserLoginFailure,
    /// Repeated failures locked an account.
    UserLockout,
    /// A person logged out.
    UserLogout,
    /// A person re-authenticated in a session.
    UserReauth,
    /// A person registered a passkey.
    UserPasskeyAdd,
    /// A person removed a passkey.
    UserPasskeyRemove,
    /// A passkey assertion's signature counter did not advance: a cloned authenticator, or a
    /// replayed assertion (refused; counted as a failed login too).
    UserPasskeyClone,
    /// A person removed their authenticator app (TOTP), keeping passkeys.
    UserTotpRemove,
    /// A passkey registration was refused (wrong origin, rpId, challenge, type, no user
    /// presence, ...); refused uses are `UserLoginFailure`s with a `passkey` reason.
    UserPasskeyFailure,
    /// A release was approved or refused for production channels.
    ReleaseDecision,
    /// A deployment was approved or refused past its canary phase.
    DeploymentDecision,
    /// Reports older than the retention period were deleted (one entry per batch).
    RecordsPrune,
    /// Everything held about one device was exported.
    RecordsExport,
    /// A device's encryption key was set or cleared after enrolment.
    DeviceEncryptionKey,
    /// Key records (SGL-WKEY) of an encrypted release were uploaded.
    ReleaseKeyRecords,
}

impl AuditAction {
    /// Every action.
    pub const ALL: [AuditAction; 38] = [
        AuditAction::TokenCreate,
        AuditAction::TokenRevoke,
        AuditAction::ReleaseUpload,
        AuditAction::ReleaseRetire,
        AuditAction::DeviceEnrol,
        AuditAction::DeviceRevoke,
        AuditAction::DeviceReport,
        AuditAction::DeviceStatus,
        AuditAction::DeploymentCreate,
        AuditAction::DeploymentPause,
        AuditAction::DeploymentResume,
        AuditAction::DeploymentCancel,
        AuditAction::DeploymentAdvance,
        AuditAction::DeploymentHalt,
        AuditAction::DeploymentComplete,
        AuditAction::AuditKeyRotate,
        AuditAction::RootChainUpdate,
        AuditAction::UserCreate,
        AuditAction::UserEnrolmentIssue,
        AuditAction::UserEnrol,
        AuditAction::UserState,
        AuditAction::UserScope,
        AuditAction::UserLogin,
        AuditAction::UserLoginFailure,
        AuditAction::UserLockout,
        AuditAction::UserLogout,
        AuditAction::UserReauth,
        AuditAction::UserPasskeyAdd,
        AuditAction::UserPasskeyRemove,
        AuditAction::UserPasskeyClone,
        AuditAction::UserTotpRemove,
        AuditAction::UserPasskeyFailure,
        AuditAction::ReleaseDecision,
        AuditAction::DeploymentDecision,
        AuditAction::RecordsPrune,
        AuditAction::RecordsExport,
        AuditAction::DeviceEncryptionKey,
        AuditAction::ReleaseKeyRecords,
    ];

    /// The name in the trail.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::TokenCreate => "token.create",
            AuditAction::TokenRevoke => "token.revoke",
            AuditAction::ReleaseUpload => "release.upload",
            AuditAction::ReleaseRetire => "release.retire",
            AuditAction::DeviceEnrol => "device.enrol",
            AuditAction::DeviceRevoke => "device.revoke",
            AuditAction::DeviceReport => "device.report",
            AuditAction::DeviceStatus => "device.status",
            AuditAction::DeploymentCreate => "deployment.create",
            AuditAction::DeploymentPause => "deployment.pause",
            AuditAction::DeploymentResume => "deployment.resume",
            AuditAction::DeploymentCancel => "deployment.cancel",
            AuditAction::DeploymentAdvance => "deployment.advance",
            AuditAction::DeploymentHalt => "deployment.halt",
            AuditAction::DeploymentComplete => "deployment.complete",
            AuditAction::AuditKeyRotate => "audit.key_rotate",
            AuditAction::RootChainUpdate => "root_chain.update",
            AuditAction::UserCreate => "user.create",
            AuditAction::UserEnrolmentIssue => "user.enrolment_issue",
            AuditAction::UserEnrol => "user.enrol",
            AuditAction::UserState => "user.state",
            AuditAction::UserScope => "user.scope",
            AuditAction::UserLogin => "user.login",
            AuditAction::UserLoginFailure => "user.login_failure",
            AuditAction::UserLockout => "user.lockout",
            AuditAction::UserLogout => "user.logout",
            AuditAction::UserReauth => "user.reauth",
            AuditAction::UserPasskeyAdd => "user.passkey_add",
            AuditAction::UserPasskeyRemove => "user.passkey_remove",
            AuditAction::UserPasskeyClone => "user.passkey_clone",
            AuditAction::UserTotpRemove => "user.totp_remove",
            AuditAction::UserPasskeyFailure => "user.passkey_failure",
            AuditAction::ReleaseDecision => "release.decision",
            AuditAction::DeploymentDecision => "deployment.decision",
            AuditAction::RecordsPrune => "records.prune",
            AuditAction::RecordsExport => "records.export",
            AuditAction::DeviceEncryptionKey => "device.encryption_key",
            AuditAction::ReleaseKeyRecords => "release.key_records",
        }
    }

    /// Parses [`AuditAction::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event for the audit trail.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Actor.
    pub actor: String,
    /// Action.
    pub action: AuditAction,
    /// Subject.
    pub subject: String,
    /// Details.
    pub detail: serde_json::Value,
}

impl AuditEvent {
    /// Builds an event.
    pub fn new(actor: &str, action: AuditAction, subject: &str, detail: serde_json::Value) -> Self {
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
