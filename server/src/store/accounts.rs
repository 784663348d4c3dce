//! People and service accounts, their enrolments and console sessions, and four-eyes
//! approvals: the domain types, the two store traits ([`AccountStore`], [`ApprovalStore`]) and
//! the decisions both backends take the same way (lockout, who may approve).
//!
//! Secrets are never stored: enrolment codes and session ids are kept as SHA-256 hashes,
//! passphrases as Argon2id hashes (PHC strings, see [`crate::accounts`]). The TOTP secret is
//! stored as it must be to verify codes; the database is as sensitive as the audit key.

use serde::{Deserialize, Serialize};

use super::model::{AuditAction, AuditEvent, Deployment, Device, Product, Role, Target};
use super::{StoreError, StoreResult};

/// What kind of holder an account is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    /// A person: logs in with a passphrase and a second factor.
    Person,
    /// Automation (CI, scripts): acts through API tokens only, never logs in.
    Service,
}

impl AccountKind {
    /// The name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Person => "person",
            AccountKind::Service => "service",
        }
    }

    /// Parses [`AccountKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [AccountKind::Person, AccountKind::Service]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Where an account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountState {
    /// Created; the person has not finished enrolment (passphrase and second factor).
    Enrolling,
    /// May log in (people) or use its tokens.
    Active,
    /// Refused everywhere; its sessions ended.
    Disabled,
}

impl AccountState {
    /// The name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Enrolling => "enrolling",
            AccountState::Active => "active",
            AccountState::Disabled => "disabled",
        }
    }

    /// Parses [`AccountState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [
            AccountState::Enrolling,
            AccountState::Active,
            AccountState::Disabled,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// An account as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Unique name: the audit actor of everything the account does.
    pub name: String,
    /// Person or service account.
    pub kind: AccountKind,
    /// The roles it holds.
    pub roles: Vec<Role>,
    /// State.
    pub state: AccountState,
    /// Creation time.
    pub created_at: u64,
    /// The part of the fleet it sees and acts on; `None`: all of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
}

/// The part of the fleet an account sees and acts on (a hospital's devices): each list that is
/// not empty restricts, and a device is in scope when it passes every one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Scope {
    /// Only devices of these products.
    pub products: Vec<Product>,
    /// Only devices in at least one of these groups (sites).
    pub groups: Vec<String>,
    /// Only devices on these channels.
    pub channels: Vec<String>,
}

impl Scope {
    /// Whether the scope restricts nothing.
    pub fn is_unrestricted(&self) -> bool {
        self.products.is_empty() && self.groups.is_empty() && self.channels.is_empty()
    }

    /// Whether a product is in scope.
    pub fn admits_product(&self, product: &Product) -> bool {
        self.products.is_empty() || self.products.contains(product)
    }

    /// Whether a device is in scope.
    pub fn admits_device(&self, d: &Device) -> bool {
        self.admits_product(&d.product)
            && (self.groups.is_empty() || d.groups.iter().any(|g| self.groups.contains(g)))
            && (self.channels.is_empty() || self.channels.contains(&d.channel))
    }

    /// [`Scope::admits_target`] for a database to write as SQL: which channel targets and
    /// which group targets it admits (`None`: none; an empty list: any), the product aside.
    /// A device-list target is admitted when every listed device passes a device list cut to
    /// the scope ([`super::DeviceFilter::scope`]).
    pub fn target_rule(&self) -> TargetRule<'_> {
        TargetRule {
            channels: self.groups.is_empty().then_some(self.channels.as_slice()),
            groups: self.channels.is_empty().then_some(self.groups.as_slice()),
        }
    }

    /// Whether every device a deployment of `product` to `target` can reach is in scope,
    /// whatever devices join the fleet later: a channel target needs no group restriction
    /// and its channel in scope, a group target no channel restriction and its group in
    /// scope; a device list is judged device by device (`devices`, the listed devices found).
    pub fn admits_target(&self, product: &Product, target: &Target, devices: &[Device]) -> bool {
        if !self.admits_product(product) {
            return false;
        }
        let rule = self.target_rule();
        let within = |admitted: Option<&[String]>, v: &String| {
            admitted.is_some_and(|a| a.is_empty() || a.contains(v))
        };
        match target {
            Target::Channel(c) => within(rule.channels, c),
            Target::Group(g) => within(rule.groups, g),
            Target::Devices(ids) => ids
                .iter()
                .all(|id| devices.iter().any(|d| &d.id == id && self.admits_device(d))),
        }
    }
}

/// Which channel and group targets a scope admits: see [`Scope::target_rule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetRule<'a> {
    /// Channel targets on one of these channels (any when empty); `None`: no channel target.
    pub channels: Option<&'a [String]>,
    /// Group targets of one of these groups (any when empty); `None`: no group target.
    pub groups: Option<&'a [String]>,
}

/// What a login checks, and the failure counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    /// Argon2id PHC string; set when enrolment starts.
    pub passphrase_hash: Option<String>,
    /// TOTP secret (raw bytes); set when enrolment starts.
    pub totp_secret: Option<Vec<u8>>,
    /// The last TOTP time step accepted: a code is never accepted twice.
    pub totp_last_step: Option<u64>,
    /// Failed logins since the last success.
    pub failed_logins: u32,
    /// No login attempt is checked before this time (backoff or lockout).
    pub locked_until: Option<u64>,
}

/// An account with its credentials (never leaves the server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account.
    pub user: User,
    /// Its credentials.
    pub credentials: Credentials,
}

/// A pending enrolment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolment {
    /// The account it enrols.
    pub user_name: String,
    /// Whether the passphrase was set (the code then only finishes the enrolment).
    pub started: bool,
    /// Expiry.
    pub expires_at: u64,
}

/// A console session (the id is stored hashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The person.
    pub user_name: String,
    /// The token unsafe requests must echo in `X-CSRF-Token`.
    pub csrf_token: String,
    /// Login time (the absolute timeout runs from here).
    pub created_at: u64,
    /// Last request (the idle timeout runs from here).
    pub last_seen: u64,
    /// Last passphrase-and-code check (login or re-authentication).
    pub reauth_at: u64,
}

/// Backoff and lockout after failed logins (from `accounts.*` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// The wait after the first failure, doubled after each further one.
    pub backoff_base_secs: u64,
    /// Failures in a row that lock the account.
    pub lockout_after: u32,
    /// How long a lockout lasts.
    pub lockout_secs: u64,
}

/// What a failed login leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureOutcome {
    /// Failures in a row now.
    pub failed_logins: u32,
    /// No attempt is checked before this time.
    pub locked_until: u64,
    /// Whether this failure locked the account.
    pub locked_out: bool,
}

/// The counters after failure number `failures` (1 for the first) at `now`: exponential
/// backoff (`base`, `2 × base`, `4 × base`, … capped at the lockout), then the lockout once
/// `lockout_after` failures are reached.
pub fn after_failure(failures: u32, now: u64, policy: &LockoutPolicy) -> FailureOutcome {
    let locked_out = failures >= policy.lockout_after;
    let wait = if locked_out {
        policy.lockout_secs
    } else {
        let doubling = failures.saturating_sub(1).min(32);
        policy
            .backoff_base_secs
            .saturating_mul(1u64 << doubling)
            .min(policy.lockout_secs)
    };
    FailureOutcome {
        failed_logins: failures,
        locked_until: now.saturating_add(wait),
        locked_out: locked_out && failures == policy.lockout_after,
    }
}

/// The audit events of a failed login.
pub fn failure_events(name: &str, reason: &str, outcome: &FailureOutcome) -> Vec<AuditEvent> {
    let mut events = vec![AuditEvent::new(
        name,
        AuditAction::UserLoginFailure,
        name,
        serde_json::json!({ "reason": reason, "failures": outcome.failed_logins }),
    )];
    if outcome.locked_out {
        events.push(AuditEvent::new(
            "system",
            AuditAction::UserLockout,
            name,
            serde_json::json!({ "failures": outcome.failed_logins, "until": outcome.locked_until }),
        ));
    }
    events
}

/// What an approval is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "lowercase")]
pub enum ApprovalSubject {
    /// A release, for production channels.
    Release(String),
    /// A deployment, to pass its canary phase.
    Deployment(i64),
}

impl ApprovalSubject {
    /// `release` or `deployment` (the database's `kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            ApprovalSubject::Release(_) => "release",
            ApprovalSubject::Deployment(_) => "deployment",
        }
    }

    /// The subject's id as text (the database's `subject`).
    pub fn id(&self) -> String {
        match self {
            ApprovalSubject::Release(id) => id.clone(),
            ApprovalSubject::Deployment(id) => id.to_string(),
        }
    }
}

/// An approver's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Approved.
    Approved,
    /// Refused.
    Refused,
}

impl Decision {
    /// The name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approved => "approved",
            Decision::Refused => "refused",
        }
    }

    /// Parses [`Decision::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [Decision::Approved, Decision::Refused]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

/// A recorded decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Approval {
    /// What was decided on.
    pub subject: ApprovalSubject,
    /// The decision.
    pub decision: Decision,
    /// Who decided (a person).
    pub by: String,
    /// Why.
    pub reason: String,
    /// When.
    pub at: u64,
}

/// Whether the decisions on a subject let it pass: the latest decision of a person other than
/// `author` (the uploader or the deployment's creator) is an approval. A refusal after an
/// approval withdraws it.
pub fn approved_by_other(decisions: &[Approval], author: &str) -> Option<String> {
    decisions
        .iter()
        .filter(|a| a.by != author)
        .max_by_key(|a| a.at)
        .filter(|a| a.decision == Decision::Approved)
        .map(|a| a.by.clone())
}

/// The account row an API token for `owner` with `role` needs written, if any: a missing
/// owner becomes a service account holding the role, a service account gains the role; a
/// person must hold the role already and be active (a token never widens what its owner may
/// do).
pub fn token_owner(
    existing: Option<&User>,
    owner: &str,
    role: Role,
    now: u64,
) -> StoreResult<Option<User>> {
    match existing {
        None => Ok(Some(User {
            name: owner.to_owned(),
            kind: AccountKind::Service,
            roles: vec![role],
            state: AccountState::Active,
            created_at: now,
            scope: None,
        })),
        Some(u) if u.state != AccountState::Active => Err(StoreError::Conflict(format!(
            "account {owner} is {}; it cannot be given tokens",
            u.state.as_str()
        ))),
        Some(u) if u.roles.contains(&role) => Ok(None),
        Some(u) if u.kind == AccountKind::Service => {
            let mut u = u.clone();
            u.roles.push(role);
            Ok(Some(u))
        }
        Some(_) => Err(StoreError::Invalid(format!(
            "{owner} does not hold the {} role; a token is scoped to one of its owner's roles",
            role.as_str()
        ))),
    }
}

/// No account named `name`.
pub fn no_account(name: &str) -> StoreError {
    StoreError::NotFound {
        what: "account",
        id: name.to_owned(),
    }
}

/// A second account named `name` is refused.
pub fn account_exists(name: &str) -> StoreError {
    StoreError::Conflict(format!("an account named {name} exists"))
}

/// A person enrols; a service account never does (it uses API tokens).
pub fn check_enrols(user: &User) -> StoreResult<()> {
    if user.kind != AccountKind::Person {
        return Err(StoreError::Conflict(format!(
            "{} is a service account: it uses API tokens and never enrols",
            user.name
        )));
    }
    Ok(())
}

/// Roles as stored (a JSON array of names).
pub fn roles_to_text(roles: &[Role]) -> String {
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    serde_json::Value::from(names).to_string()
}

/// Parses [`roles_to_text`]; unknown names are dropped (a newer server's roles).
pub fn roles_from_text(text: &str) -> StoreResult<Vec<Role>> {
    let names: Vec<String> = serde_json::from_str(text)?;
    Ok(names.iter().filter_map(|n| Role::parse(n)).collect())
}

/// Whether a token's owner (its `roles` as stored, if it has an owner row) still holds the
/// token's role.
pub fn owner_holds(roles: Option<&str>, role: Role) -> bool {
    match roles {
        None => true,
        Some(text) => roles_from_text(text).is_ok_and(|r| r.contains(&role)),
    }
}

/// Whether `approval` may be recorded on `dep` now: the deployment is waiting at its canary
/// hold, not final, and the decider is not its creator.
pub fn check_deployment_decision(dep: &Deployment, approval: &Approval) -> StoreResult<()> {
    if approval.by == dep.created_by {
        return Err(StoreError::Conflict(format!(
            "{} created deployment {}; a second operator must decide",
            approval.by, dep.id
        )));
    }
    if dep.policy.hold_after_phase.is_none() {
        return Err(StoreError::Conflict(format!(
            "deployment {} is not waiting for an approval",
            dep.id
        )));
    }
    if matches!(
        dep.state,
        crate::rollout::DeploymentState::Cancelled | crate::rollout::DeploymentState::Completed
    ) {
        return Err(StoreError::Conflict(format!(
            "deployment {} is {}",
            dep.id,
            dep.state.as_str()
        )));
    }
    Ok(())
}

/// People and service accounts, enrolments, console sessions.
pub trait AccountStore {
    /// Creates an account; for a person, with the hash of its enrolment code. Conflict if the
    /// name is taken.
    fn create_user(
        &self,
        user: &User,
        enrolment: Option<(&[u8; 32], u64)>,
        audit: &AuditEvent,
    ) -> StoreResult<()>;
    /// Every account, by name.
    fn users(&self) -> StoreResult<Vec<User>>;
    /// One account with its credentials.
    fn account(&self, name: &str) -> StoreResult<Option<Account>>;
    /// Replaces a person's enrolment (code hash, expiry): its credentials are cleared, its
    /// sessions ended, its state set to enrolling.
    fn reissue_enrolment(
        &self,
        name: &str,
        hash: &[u8; 32],
        expires_at: u64,
        audit: &AuditEvent,
    ) -> StoreResult<()>;
    /// The unexpired enrolment of a code hash.
    fn enrolment(&self, hash: &[u8; 32], now: u64) -> StoreResult<Option<Enrolment>>;
    /// Sets the passphrase and the pending TOTP secret of an enrolment not started yet
    /// (Conflict if it was: the code sets a passphrase once).
    fn start_enrolment(
        &self,
        hash: &[u8; 32],
        passphrase_hash: &str,
        totp_secret: &[u8],
        now: u64,
    ) -> StoreResult<()>;
    /// Finishes a started enrolment with the first accepted TOTP step: the account becomes
    /// active and the code is spent.
    fn finish_enrolment(
        &self,
        hash: &[u8; 32],
        step: u64,
        now: u64,
        audit: &AuditEvent,
    ) -> StoreResult<()>;
    /// Counts a failed login and records it (and a lockout it causes) in the audit trail.
    fn record_login_failure(
        &self,
        name: &str,
        reason: &str,
        now: u64,
        policy: &LockoutPolicy,
    ) -> StoreResult<FailureOutcome>;
    /// Opens a session after a correct passphrase and second factor, spending it (Conflict if
    /// the TOTP step was used already or the passkey's counter did not advance); resets the
    /// failure counters.
    fn open_session(
        &self,
        hash: &[u8; 32],
        session: &Session,
        factor: &super::passkeys::SecondFactorUse,
        audit: &AuditEvent,
    ) -> StoreResult<()>;
    /// The session of an id hash.
    fn session(&self, hash: &[u8; 32]) -> StoreResult<Option<Session>>;
    /// Records a request on a session.
    fn touch_session(&self, hash: &[u8; 32], now: u64) -> StoreResult<()>;
    /// Records a fresh passphrase-and-second-factor check on a session, spending the factor
    /// as [`AccountStore::open_session`] does.
    fn reauthenticate(
        &self,
        hash: &[u8; 32],
        factor: &super::passkeys::SecondFactorUse,
        now: u64,
        audit: &AuditEvent,
    ) -> StoreResult<()>;
    /// Ends a session (logout); `false` if there was none.
    fn close_session(&self, hash: &[u8; 32], audit: &AuditEvent) -> StoreResult<bool>;
    /// Deletes up to `limit` sessions that have ended by timeout: last used before
    /// `idle_before`, or opened before `absolute_before`. Returns how many went.
    fn sweep_sessions(
        &self,
        idle_before: u64,
        absolute_before: u64,
        limit: u32,
    ) -> StoreResult<u64>;
    /// Disables or re-activates an account; disabling ends its sessions.
    fn set_user_state(
        &self,
        name: &str,
        state: AccountState,
        audit: &AuditEvent,
    ) -> StoreResult<()>;
    /// Sets or clears an account's scope.
    fn set_user_scope(
        &self,
        name: &str,
        scope: Option<&Scope>,
        audit: &AuditEvent,
    ) -> StoreResult<()>;
}

/// Four-eyes decisions on releases and deployments.
pub trait ApprovalStore {
    /// Records a decision on a release.
    fn decide_release(&self, approval: &Approval, audit: &AuditEvent) -> StoreResult<()>;
    /// Records a decision on a deployment; an approval lifts its canary hold and re-evaluates
    /// the rollout in the same transaction.
    fn decide_deployment(
        &self,
        id: i64,
        approval: &Approval,
        audit: &AuditEvent,
    ) -> StoreResult<Deployment>;
    /// The decisions on a subject, oldest first.
    fn approvals(&self, subject: &ApprovalSubject) -> StoreResult<Vec<Approval>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: LockoutPolicy = LockoutPolicy {
        backoff_base_secs: 1,
        lockout_after: 5,
        lockout_secs: 900,
    };

    #[test]
    fn backoff_doubles_then_locks_out_once() {
        let waits: Vec<(u64, bool)> = (1..=6)
            .map(|n| {
                let o = after_failure(n, 1000, &POLICY);
                (o.locked_until - 1000, o.locked_out)
            })
            .collect();
        assert_eq!(
            waits,
            [
                (1, false),
                (2, false),
                (4, false),
                (8, false),
                (900, true),
                (900, false)
            ]
        );
    }

    fn decision(by: &str, decision: Decision, at: u64) -> Approval {
        Approval {
            subject: ApprovalSubject::Deployment(1),
            decision,
            by: by.to_owned(),
            reason: String::new(),
            at,
        }
    }

    #[test]
    fn only_another_persons_latest_approval_counts() {
        let own = [decision("ann", Decision::Approved, 1)];
        assert_eq!(approved_by_other(&own, "ann"), None);
        let other = [
            decision("ann", Decision::Approved, 1),
            decision("bob", Decision::Approved, 2),
        ];
        assert_eq!(approved_by_other(&other, "ann").as_deref(), Some("bob"));
        let withdrawn = [
            decision("bob", Decision::Approved, 2),
            decision("cy", Decision::Refused, 3),
        ];
        assert_eq!(approved_by_other(&withdrawn, "ann"), None);
    }
}
