//! People: accounts (admin), enrolment (passphrase and second factor), console sessions
//! (login, re-authentication, logout) and how a session cookie authenticates a request.
//!
//! A console session is a cookie `sigil_session` (`Secure; HttpOnly; SameSite=Strict`) holding
//! a random 256-bit id, stored as its SHA-256. It authorises the API like a token of each of
//! the person's roles. Unsafe methods (anything but `GET`, `HEAD`, `OPTIONS`) made with the
//! cookie must also pass the CSRF checks: `Sec-Fetch-Site`, when sent, is `same-origin` or
//! `none`; `Origin`, when sent, is the server's own (the `Host` it was asked for) or one of
//! `accounts.allowed_origins`; and `X-CSRF-Token` carries the session's token (returned by
//! the login and by `GET /api/v1/session`). A session ends after `accounts.session_idle_secs`
//! without a request, `accounts.session_absolute_secs` after login, at logout, or when its
//! person is disabled or re-enrolled. Ended sessions are deleted by [`session_sweep_loop`]
//! every [`SESSION_SWEEP_SECS`], [`SESSION_SWEEP_BATCH`] rows per transaction.

use axum::extract::{Path, State};
use axum::http::header::{COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sigil_manifests::manifest::check_identifier;

use super::{ApiJson, AppState, Caller};
use crate::accounts as creds;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::store::accounts::{AccountKind, AccountState, Session, User};
use crate::store::passkeys::SecondFactorUse;
use crate::store::{now_secs, AuditAction, AuditEvent, Principal, Role, Store};

/// Argon2id computations at once (each holds `accounts.argon2_memory_kib`, 64 MiB by
/// default): a flood of logins queues here instead of exhausting memory.
pub(super) static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Runs an Argon2id computation on the blocking pool, at most [`HASHING`] at once.
pub(super) async fn hashing<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = HASHING
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(tokio::task::spawn_blocking(f).await?)
}

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "sigil_session";
/// The header unsafe cookie-authenticated requests carry the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What a session adds to a [`Caller`].
#[derive(Debug, Clone)]
pub struct SessionAuth {
    /// The stored hash of the session id.
    pub hash: [u8; 32],
    /// Last passphrase-and-code check.
    pub reauth_at: u64,
    /// The CSRF token.
    pub csrf_token: String,
}

/// The session id in a request's cookies, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// Refuses a cookie-authenticated unsafe request that another site could have made.
fn check_csrf(parts: &Parts, config: &ServerConfig, session: &Session) -> Result<(), ApiError> {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let cross = || ApiError::Forbidden("cross-site request refused".to_owned());
    if let Some(site) = header("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return Err(cross());
        }
    }
    if let Some(origin) = parts.headers.get(ORIGIN) {
        let origin = origin.to_str().map_err(|_| cross())?;
        let own = header(HOST.as_str()).is_some_and(|host| {
            origin.split_once("://").is_some_and(|(scheme, authority)| {
                matches!(scheme, "http" | "https") && authority == host
            })
        });
        if !own && !config.accounts.allowed_origins.iter().any(|o| o == origin) {
            return Err(cross());
        }
    }
    match header(CSRF_HEADER) {
        Some(token) if creds::same_secret(token, &session.csrf_token) => Ok(()),
        _ => Err(ApiError::Forbidden(format!(
            "a request made with the session cookie needs the session's {CSRF_HEADER} header"
        ))),
    }
}

/// Authenticates a request by its session cookie (no `Authorization` header).
pub(super) async fn session_caller(
    parts: &Parts,
    state: &AppState,
    id: String,
) -> Result<Caller, ApiError> {
    let hash = creds::secret_hash(&id);
    let now = now_secs();
    let found = state
        .db
        .run(move |s| {
            let Some(session) = s.session(&hash)? else {
                return Ok(None);
            };
            let account = s.account(&session.user_name)?;
            Ok(Some((session, account)))
        })
        .await?;
    let expired = ApiError::Unauthorized("unknown or expired session; log in again");
    let Some((session, Some(account))) = found else {
        return Err(expired);
    };
    let a = &state.config.accounts;
    let live = now < session.created_at.saturating_add(a.session_absolute_secs)
        && now < session.last_seen.saturating_add(a.session_idle_secs)
        && account.user.state == AccountState::Active
        && account.user.kind == AccountKind::Person;
    if !live {
        return Err(expired);
    }
    check_csrf(parts, &state.config, &session)?;
    if now > session.last_seen {
        state.db.run(move |s| s.touch_session(&hash, now)).await?;
    }
    let roles = account.user.roles.clone();
    let scope = account.user.scope.clone();
    Ok(Caller {
        scope,
        principal: Principal {
            role: roles.first().copied().unwrap_or(Role::Auditor),
            name: account.user.name,
            device_id: None,
        },
        roles,
        session: Some(SessionAuth {
            hash,
            reauth_at: session.reauth_at,
            csrf_token: session.csrf_token,
        }),
    })
}

fn check_name(name: &str) -> Result<(), ApiError> {
    check_identifier(name).map_err(|_| {
        ApiError::BadRequest("name must be 1 to 64 characters of [A-Za-z0-9._+-]".to_owned())
    })
}

/// A new enrolment code: shown once.
#[derive(Debug, Serialize)]
pub struct EnrolmentCode {
    /// The account.
    pub name: String,
    /// The code (single use).
    pub enrolment_code: String,
    /// Expiry (seconds since the Unix epoch).
    pub expires_at: u64,
}

/// Creates an account in the store (blocking): a person gets an enrolment code, a service
/// account none. `actor` is the audit actor (`cli` from the command line).
pub fn create_account(
    store: &dyn Store,
    config: &ServerConfig,
    name: &str,
    kind: AccountKind,
    roles: &[Role],
    actor: &str,
) -> Result<Option<EnrolmentCode>, ApiError> {
    check_name(name)?;
    if roles.is_empty() || roles.contains(&Role::Device) {
        return Err(ApiError::BadRequest(
            "roles must name at least one of admin, release, operator, auditor, approver"
                .to_owned(),
        ));
    }
    let mut roles = roles.to_vec();
    roles.sort_by_key(|r| r.as_str());
    roles.dedup();
    let now = now_secs();
    let user = User {
        name: name.to_owned(),
        kind,
        roles: roles.clone(),
        state: match kind {
            AccountKind::Person => AccountState::Enrolling,
            AccountKind::Service => AccountState::Active,
        },
        created_at: now,
        scope: None,
    };
    let event = AuditEvent::new(
        actor,
        AuditAction::UserCreate,
        name,
        serde_json::json!({ "kind": kind, "roles": roles }),
    );
    match kind {
        AccountKind::Service => {
            store.create_user(&user, None, &event)?;
            Ok(None)
        }
        AccountKind::Person => {
            let code = creds::new_secret("sge_");
            let expires_at = now.saturating_add(config.accounts.enrolment_ttl_secs);
            store.create_user(
                &user,
                Some((&creds::secret_hash(&code), expires_at)),
                &event,
            )?;
            Ok(Some(EnrolmentCode {
                name: name.to_owned(),
                enrolment_code: code,
                expires_at,
            }))
        }
    }
}

/// Gives a person a new enrolment code (blocking): the old credentials and sessions end.
pub fn reissue_enrolment(
    store: &dyn Store,
    config: &ServerConfig,
    name: &str,
    actor: &str,
) -> Result<EnrolmentCode, ApiError> {
    check_name(name)?;
    let code = creds::new_secret("sge_");
    let expires_at = now_secs().saturating_add(config.accounts.enrolment_ttl_secs);
    let event = AuditEvent::new(
        actor,
        AuditAction::UserEnrolmentIssue,
        name,
        serde_json::json!({ "expires_at": expires_at }),
    );
    store.reissue_enrolment(name, &creds::secret_hash(&code), expires_at, &event)?;
    Ok(EnrolmentCode {
        name: name.to_owned(),
        enrolment_code: code,
        expires_at,
    })
}

/// `POST /api/v1/users` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUserRequest {
    name: String,
    roles: Vec<Role>,
    #[serde(default = "person")]
    kind: AccountKind,
}

fn person() -> AccountKind {
    AccountKind::Person
}

/// `POST /api/v1/users` (admin): a person (with an enrolment code) or a service account.
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<NewUserRequest>,
) -> Result<Response, ApiError> {
    let actor = caller.require(&[Role::Admin])?.name.clone();
    caller.refuse_scoped("account administration")?;
    let st = state.clone();
    let code = tokio::task::spawn_blocking(move || {
        create_account(
            st.db.store(),
            &st.config,
            &req.name,
            req.kind,
            &req.roles,
            &actor,
        )
    })
    .await??;
    Ok(match code {
        Some(code) => (StatusCode::CREATED, Json(code)).into_response(),
        None => StatusCode::CREATED.into_response(),
    })
}

/// `GET /api/v1/users` (admin).
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<User>>, ApiError> {
    caller.require(&[Role::Admin])?;
    caller.refuse_scoped("account administration")?;
    Ok(Json(state.db.run(|s| s.users()).await?))
}

/// `POST /api/v1/users/{name}/{enrolment|disable|enable}` (admin).
pub async fn act_on_user(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let actor = caller.require(&[Role::Admin])?.name.clone();
    caller.refuse_scoped("account administration")?;
    check_name(&name)?;
    match action.as_str() {
        "enrolment" => {
            let st = state.clone();
            let code = tokio::task::spawn_blocking(move || {
                reissue_enrolment(st.db.store(), &st.config, &name, &actor)
            })
            .await??;
            Ok(Json(code).into_response())
        }
        "disable" | "enable" => {
            let to = if action == "disable" {
                AccountState::Disabled
            } else {
                AccountState::Active
            };
            let event = AuditEvent::new(
                &actor,
                AuditAction::UserState,
                &name,
                serde_json::json!({ "state": to }),
            );
            state
                .db
                .run(move |s| s.set_user_state(&name, to, &event))
                .await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(ApiError::NotFound(
            "account actions are enrolment, disable and enable".to_owned(),
        )),
    }
}

/// `PUT /api/v1/users/{name}/scope` (admin): the products, groups and channels the account
/// sees and acts on (`null` or all lists empty: the whole fleet).
pub async fn set_scope(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(scope): ApiJson<Option<crate::store::accounts::Scope>>,
) -> Result<StatusCode, ApiError> {
    let actor = caller.require(&[Role::Admin])?.name.clone();
    caller.refuse_scoped("account administration")?;
    check_name(&name)?;
    let scope = scope.filter(|s| !s.is_unrestricted());
    if let Some(s) = &scope {
        let names = s
            .groups
            .iter()
            .chain(&s.channels)
            .chain(s.products.iter().flat_map(|p| [&p.vendor, &p.device]));
        for n in names {
            check_identifier(n).map_err(|_| {
                ApiError::BadRequest(
                    "scope names must be 1 to 64 characters of [A-Za-z0-9._+-]".to_owned(),
                )
            })?;
        }
        if s.groups.len() + s.channels.len() + s.products.len() > 1000 {
            return Err(ApiError::BadRequest(
                "a scope names at most 1000 products, groups and channels".to_owned(),
            ));
        }
    }
    let event = AuditEvent::new(
        &actor,
        AuditAction::UserScope,
        &name,
        serde_json::json!({ "scope": scope }),
    );
    state
        .db
        .run(move |s| s.set_user_scope(&name, scope.as_ref(), &event))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/enrolment` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    enrolment_code: String,
    passphrase: String,
}

/// The second factor to set up: shown once.
#[derive(Debug, Serialize)]
pub struct SecondFactor {
    name: String,
    /// For an authenticator app (as a link or QR code).
    otpauth_uri: String,
    /// The same secret, base32, to type in.
    secret: String,
}

fn unknown_code() -> ApiError {
    ApiError::Conflict("this enrolment code is unknown, expired or already used".to_owned())
}

/// `POST /api/v1/enrolment` (public, with the code): sets the passphrase and returns the TOTP
/// secret. The enrolment completes at `POST /api/v1/enrolment/confirm` with a correct code.
pub async fn enrol(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EnrolRequest>,
) -> Result<Json<SecondFactor>, ApiError> {
    let hash = creds::secret_hash(req.enrolment_code.trim());
    let now = now_secs();
    let enrolment = state
        .db
        .run(move |s| s.enrolment(&hash, now))
        .await?
        .filter(|e| !e.started)
        .ok_or_else(unknown_code)?;
    let name = enrolment.user_name;
    let a = &state.config.accounts;
    creds::check_strength(
        &req.passphrase,
        &[&name, "sigil"],
        a.passphrase_min_length,
        a.passphrase_min_score,
    )
    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let cost = state.config.password_cost();
    let phc = hashing(move || creds::hash_passphrase(&req.passphrase, cost))
        .await?
        .map_err(|e| ApiError::Internal(e.into()))?;
    let secret = creds::new_totp_secret();
    let view = SecondFactor {
        otpauth_uri: creds::totp_uri(&secret, &name).map_err(|e| ApiError::Internal(e.into()))?,
        secret: creds::totp_secret_base32(&secret).map_err(|e| ApiError::Internal(e.into()))?,
        name,
    };
    state
        .db
        .run(move |s| s.start_enrolment(&hash, &phc, &secret, now))
        .await?;
    Ok(Json(view))
}

/// `POST /api/v1/enrolment/confirm` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    enrolment_code: String,
    totp: String,
}

/// `POST /api/v1/enrolment/confirm` (public, with the code): a correct TOTP code completes the
/// enrolment; the account becomes active and the code is spent.
pub async fn confirm(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ConfirmRequest>,
) -> Result<StatusCode, ApiError> {
    let hash = creds::secret_hash(req.enrolment_code.trim());
    let now = now_secs();
    let (enrolment, account) = state
        .db
        .run(move |s| {
            let Some(e) = s.enrolment(&hash, now)? else {
                return Ok(None);
            };
            let account = s.account(&e.user_name)?;
            Ok(account.map(|a| (e, a)))
        })
        .await?
        .filter(|(e, _)| e.started)
        .ok_or_else(unknown_code)?;
    let secret = account.credentials.totp_secret.ok_or_else(unknown_code)?;
    let step = creds::totp_step(&secret, &req.totp, now)
        .map_err(|e| ApiError::Internal(e.into()))?
        .ok_or_else(|| {
            ApiError::BadRequest(
                "wrong code: enter the 6 digits the authenticator app shows now".to_owned(),
            )
        })?;
    let event = AuditEvent::new(
        &enrolment.user_name,
        AuditAction::UserEnrol,
        &enrolment.user_name,
        serde_json::json!({ "second_factor": "totp" }),
    );
    state
        .db
        .run(move |s| s.finish_enrolment(&hash, step, now, &event))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/session` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    name: String,
    passphrase: String,
    totp: String,
}

/// `POST /api/v1/session/reauth` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReauthRequest {
    passphrase: String,
    totp: String,
}

/// A session as its person sees it.
#[derive(Debug, Serialize)]
pub struct SessionView {
    name: String,
    roles: Vec<Role>,
    /// Echo in `X-CSRF-Token` on unsafe requests.
    csrf_token: String,
    /// Last passphrase-and-code check.
    reauth_at: u64,
}

pub(super) const WRONG: &str = "wrong name, passphrase or code";

/// Checks a person's lockout and passphrase: the account when the passphrase is right (it is
/// then an active person's), the counted failure (backoff, lockout, audit) as the error.
pub(super) async fn check_passphrase(
    state: &AppState,
    name: &str,
    passphrase: String,
) -> Result<crate::store::accounts::Account, ApiError> {
    let now = now_secs();
    let key = name.to_owned();
    let account = state.db.run(move |s| s.account(&key)).await?;
    check_not_locked(account.as_ref(), now)?;
    let usable = account
        .as_ref()
        .filter(|a| a.user.kind == AccountKind::Person && a.user.state == AccountState::Active);
    let stored = usable.and_then(|a| a.credentials.passphrase_hash.clone());
    let cost = state.config.password_cost();
    // The same Argon2 work whether or not the account exists (no timing oracle for names).
    let passphrase_ok = hashing(move || match stored {
        Some(phc) => creds::verify_passphrase(&passphrase, &phc),
        None => {
            creds::verify_passphrase(&passphrase, creds::dummy_hash(cost));
            false
        }
    })
    .await?;
    match (account, passphrase_ok) {
        (Some(a), true) => Ok(a),
        (Some(a), false) => fail(state, &a.user.name, "passphrase").await,
        (None, _) => {
            tracing::warn!(name = %name.chars().take(64).collect::<String>(), "login for an unknown account");
            Err(ApiError::Unauthorized(WRONG))
        }
    }
}

/// Refuses an attempt during an account's backoff or lockout.
pub(super) fn check_not_locked(
    account: Option<&crate::store::accounts::Account>,
    now: u64,
) -> Result<(), ApiError> {
    if let Some(until) = account
        .and_then(|a| a.credentials.locked_until)
        .filter(|&u| u > now)
    {
        let wait = until.saturating_sub(now);
        return Err(ApiError::Throttled {
            message: format!("too many failed logins for this account; retry in {wait} s"),
            retry_after: wait,
        });
    }
    Ok(())
}

/// Checks a person's passphrase and TOTP code: the accepted step, or the counted failure
/// (backoff, lockout, audit) as the error.
async fn check_credentials(
    state: &AppState,
    name: &str,
    passphrase: String,
    code: &str,
) -> Result<u64, ApiError> {
    let account = check_passphrase(state, name, passphrase).await?;
    let step = match &account.credentials.totp_secret {
        Some(secret) => {
            creds::totp_step(secret, code, now_secs()).map_err(|e| ApiError::Internal(e.into()))?
        }
        None => None,
    };
    match step {
        Some(step) => Ok(step),
        None => fail(state, &account.user.name, "totp").await,
    }
}

/// Counts a failed login of an existing account; always an error.
pub(super) async fn fail<T>(state: &AppState, name: &str, reason: &str) -> Result<T, ApiError> {
    let policy = state.config.lockout();
    let key = name.to_owned();
    let reason = reason.to_owned();
    let now = now_secs();
    let outcome = state
        .db
        .run(move |s| s.record_login_failure(&key, &reason, now, &policy))
        .await?;
    if outcome.locked_out {
        tracing::warn!(name, failures = outcome.failed_logins, "account locked");
        let wait = outcome.locked_until.saturating_sub(now);
        return Err(ApiError::Throttled {
            message: format!(
                "{WRONG}; after {} failures the account is locked for {wait} s",
                outcome.failed_logins
            ),
            retry_after: wait,
        });
    }
    Err(ApiError::Unauthorized(WRONG))
}

fn session_cookie_header(id: &str, max_age: u64) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={id}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Strict"
    ))
    .map_err(|e| ApiError::Internal(e.into()))
}

/// `POST /api/v1/session` (public): logs a person in with passphrase and TOTP code; sets the
/// session cookie.
pub async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    if check_identifier(&req.name).is_err() {
        return Err(ApiError::Unauthorized(WRONG));
    }
    let step = check_credentials(&state, &req.name, req.passphrase, &req.totp).await?;
    let factor = SecondFactorUse::Totp(step);
    let detail = serde_json::json!({ "second_factor": "totp" });
    match open_session(&state, &req.name, factor, detail).await {
        Err(ApiError::Conflict(_)) => fail(&state, &req.name, "totp reused").await,
        other => other,
    }
}

/// Opens a console session for `name`, spending `factor` (a Conflict if it was spent
/// already), audited as a login with `detail`: the answer with the cookie.
pub(super) async fn open_session(
    state: &AppState,
    name: &str,
    factor: SecondFactorUse,
    detail: serde_json::Value,
) -> Result<Response, ApiError> {
    let now = now_secs();
    let id = creds::new_secret("sgs_");
    let hash = creds::secret_hash(&id);
    let session = Session {
        user_name: name.to_owned(),
        csrf_token: creds::new_secret("sgc_"),
        created_at: now,
        last_seen: now,
        reauth_at: now,
    };
    let event = AuditEvent::new(name, AuditAction::UserLogin, name, detail);
    let stored = session.clone();
    state
        .db
        .run(move |s| s.open_session(&hash, &stored, &factor, &event))
        .await?;
    let key = name.to_owned();
    let roles = state
        .db
        .run(move |s| s.account(&key))
        .await?
        .map(|a| a.user.roles)
        .unwrap_or_default();
    let mut response = Json(SessionView {
        name: name.to_owned(),
        roles,
        csrf_token: session.csrf_token,
        reauth_at: now,
    })
    .into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        session_cookie_header(&id, state.config.accounts.session_absolute_secs)?,
    );
    Ok(response)
}

/// The session of a caller, or why the endpoint needs one.
pub(super) fn session_of(caller: &Caller) -> Result<&SessionAuth, ApiError> {
    caller.session.as_ref().ok_or_else(|| {
        ApiError::Forbidden("this endpoint is for a person's console session".to_owned())
    })
}

/// How often ended sessions are deleted.
pub const SESSION_SWEEP_SECS: u64 = 300;
/// Sessions deleted per transaction: a short write, so check-ins wait little behind it.
pub const SESSION_SWEEP_BATCH: u32 = 1000;

/// Deletes every session ended by a timeout at `now` (idle or absolute), a batch of
/// `batch` per transaction; returns how many went.
pub fn sweep_sessions(
    store: &dyn Store,
    config: &ServerConfig,
    now: u64,
    batch: u32,
) -> crate::store::StoreResult<u64> {
    let a = &config.accounts;
    // `session_caller` refuses a session from `last_seen + idle` and `created_at + absolute`
    // on: anything strictly before these has ended.
    let idle_before = now.saturating_sub(a.session_idle_secs);
    let absolute_before = now.saturating_sub(a.session_absolute_secs);
    let mut total = 0u64;
    loop {
        let n = store.sweep_sessions(idle_before, absolute_before, batch)?;
        total = total.saturating_add(n);
        if n < u64::from(batch) {
            return Ok(total);
        }
    }
}

/// Runs [`sweep_sessions`] every [`SESSION_SWEEP_SECS`], the first time at start-up.
pub async fn session_sweep_loop(db: super::Db, config: ServerConfig) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(SESSION_SWEEP_SECS));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let c = config.clone();
        let now = now_secs();
        match db
            .run(move |s| sweep_sessions(s, &c, now, SESSION_SWEEP_BATCH))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "deleted ended console sessions"),
            Err(e) => tracing::error!(error = %e, "cannot delete ended console sessions"),
        }
    }
}

/// `GET /api/v1/session`: who is logged in, and the CSRF token.
pub async fn show(caller: Caller) -> Result<Json<SessionView>, ApiError> {
    let session = session_of(&caller)?;
    Ok(Json(SessionView {
        name: caller.principal.name.clone(),
        roles: caller.roles.clone(),
        csrf_token: session.csrf_token.clone(),
        reauth_at: session.reauth_at,
    }))
}

/// `POST /api/v1/session/reauth`: a fresh passphrase-and-code check, for the operations that
/// need one (approvals, device revocation, root-chain updates).
pub async fn reauth(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<ReauthRequest>,
) -> Result<StatusCode, ApiError> {
    let hash = session_of(&caller)?.hash;
    let name = caller.principal.name.clone();
    let step = check_credentials(&state, &name, req.passphrase, &req.totp).await?;
    let now = now_secs();
    let event = AuditEvent::new(&name, AuditAction::UserReauth, &name, serde_json::json!({}));
    match state
        .db
        .run(move |s| s.reauthenticate(&hash, &SecondFactorUse::Totp(step), now, &event))
        .await
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(ApiError::Conflict(_)) => fail(&state, &name, "totp reused").await,
        Err(e) => Err(e),
    }
}

/// `DELETE /api/v1/session`: logs out.
pub async fn logout(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let hash = session_of(&caller)?.hash;
    let name = caller.principal.name.clone();
    let event = AuditEvent::new(&name, AuditAction::UserLogout, &name, serde_json::json!({}));
    state
        .db
        .run(move |s| s.close_session(&hash, &event))
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(SET_COOKIE, session_cookie_header("", 0)?);
    Ok(response)
}
