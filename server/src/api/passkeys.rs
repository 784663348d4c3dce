//! Passkeys (WebAuthn) as a second factor: registration from a signed-in person's account,
//! and their use at login and re-authentication after the passphrase (see
//! [`crate::passkeys`] for the ceremony policy).
//!
//! | endpoint | who |
//! |---|---|
//! | `POST /api/v1/session/passkey/options` `{name, passphrase}` | public: the passphrase, then a challenge |
//! | `POST /api/v1/session/passkey` (`AuthenticationResponseJSON`) | public: opens the session |
//! | `POST /api/v1/session/reauth/passkey/options` `{passphrase}` | console session |
//! | `POST /api/v1/session/reauth/passkey` (`AuthenticationResponseJSON`) | console session |
//! | `GET /api/v1/account/passkeys` | console session |
//! | `POST /api/v1/account/passkeys/options` | console session, fresh re-authentication |
//! | `POST /api/v1/account/passkeys` `{name, credential}` | console session, fresh re-authentication |
//! | `DELETE /api/v1/account/passkeys/{id}` | console session, fresh re-authentication; refused for the last second factor |
//! | `DELETE /api/v1/account/totp` | console session, fresh re-authentication; refused unless a passkey remains |
//!
//! Challenges are stored as sent (random, single-use, worthless once answered) with the person
//! and, for registration and re-authentication, the session that asked; each is deleted when a
//! response names it, whatever the outcome, and refused after five minutes. A failed passkey
//! use counts as a failed login (backoff, lockout); every registration, removal, use and
//! failure is in the audit trail with the person's name.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;

use super::accounts::{check_not_locked, check_passphrase, fail, open_session, session_of, WRONG};
use super::{ApiJson, AppState, Caller};
use crate::error::ApiError;
use crate::passkeys::{self as pk, PasskeyError, RelyingParty};
use crate::store::accounts::{AccountKind, AccountState};
use crate::store::passkeys::{Ceremony, CeremonyPurpose, Passkey, PasskeyView, SecondFactorUse};
use crate::store::{now_secs, AuditAction, AuditEvent};

/// The relying party of the configuration, or why passkeys are off.
fn relying_party(state: &AppState) -> Result<RelyingParty, ApiError> {
    let url = state.config.accounts.public_url.as_deref().ok_or_else(|| {
        ApiError::Conflict(
            "passkeys are off on this server: its administrator sets accounts.public_url \
             (SIGIL_PUBLIC_URL) to the console's https address"
                .to_owned(),
        )
    })?;
    // Validated at start-up: a failure here is the server's.
    RelyingParty::new(url).map_err(|e| ApiError::Internal(e.into()))
}

fn view(p: &Passkey) -> PasskeyView {
    PasskeyView {
        id: pk::encode_id(&p.id),
        name: p.name.clone(),
        created_at: p.created_at,
        last_used_at: p.last_used_at,
        sign_count: p.sign_count,
    }
}

/// Starts a ceremony and stores it; the options for the browser.
async fn store_ceremony(
    state: &AppState,
    started: pk::Started,
    user_name: String,
    purpose: CeremonyPurpose,
    session_hash: Option<[u8; 32]>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ceremony = Ceremony {
        challenge: started.challenge,
        user_name,
        purpose,
        session_hash,
        state: started.state,
        expires_at: started.expires_at,
    };
    let now = now_secs();
    state
        .db
        .run(move |s| s.save_ceremony(&ceremony, now))
        .await?;
    Ok(Json(started.options))
}

/// Starts an authentication ceremony for a person whose passphrase was right.
async fn start_use(
    state: &AppState,
    name: String,
    purpose: CeremonyPurpose,
    session_hash: Option<[u8; 32]>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rp = relying_party(state)?;
    let key = name.clone();
    let passkeys = state.db.run(move |s| s.passkeys(&key)).await?;
    if passkeys.is_empty() {
        return Err(ApiError::Conflict(format!(
            "{name} has no passkey; use the code of the authenticator app"
        )));
    }
    let started = rp
        .start_authentication(&passkeys)
        .map_err(|e| ApiError::Internal(e.into()))?;
    store_ceremony(state, started, name, purpose, session_hash).await
}

/// `POST /api/v1/session/passkey/options` and `…/reauth/passkey/options` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasskeyLoginRequest {
    #[serde(default)]
    name: Option<String>,
    passphrase: String,
}

/// `POST /api/v1/session/passkey/options` (public): checks the passphrase (a wrong one counts
/// as a failed login) and returns the `PublicKeyCredentialRequestOptionsJSON` for the person's
/// passkeys.
pub async fn login_options(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<PasskeyLoginRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    relying_party(&state)?;
    let name = req.name.unwrap_or_default();
    if sigil_manifests::manifest::check_identifier(&name).is_err() {
        return Err(ApiError::Unauthorized(WRONG));
    }
    let account = check_passphrase(&state, &name, req.passphrase).await?;
    start_use(&state, account.user.name, CeremonyPurpose::Login, None).await
}

/// `POST /api/v1/session/reauth/passkey/options` (console session): the passphrase, then a
/// challenge for this session only.
pub async fn reauth_options(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<PasskeyLoginRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    relying_party(&state)?;
    let hash = session_of(&caller)?.hash;
    if req.name.is_some() {
        return Err(ApiError::BadRequest(
            "a re-authentication is for the session's own person: send only the passphrase"
                .to_owned(),
        ));
    }
    let name = caller.principal.name.clone();
    let account = check_passphrase(&state, &name, req.passphrase).await?;
    start_use(
        &state,
        account.user.name,
        CeremonyPurpose::Reauth,
        Some(hash),
    )
    .await
}

/// A verified passkey use: the person, and the factor to spend.
struct Used {
    name: String,
    passkey_name: String,
    factor: SecondFactorUse,
}

fn unknown_challenge() -> ApiError {
    ApiError::Unauthorized("this passkey challenge is unknown, expired or used; start again")
}

/// Records a clone (counter that did not advance) and counts the failure.
async fn cloned<T>(state: &AppState, name: &str, passkey: &Passkey) -> Result<T, ApiError> {
    tracing::warn!(name, passkey = %pk::encode_id(&passkey.id), "passkey counter did not advance");
    let event = AuditEvent::new(
        name,
        AuditAction::UserPasskeyClone,
        name,
        serde_json::json!({
            "passkey": pk::encode_id(&passkey.id),
            "name": passkey.name,
            "stored_counter": passkey.sign_count,
        }),
    );
    let now = now_secs();
    state
        .db
        .run(move |s| s.append_audit(&event, now).map(|_| ()))
        .await?;
    fail(state, name, "passkey counter did not advance").await
}

/// Verifies an assertion against its ceremony (taken, so never usable again), for `purpose`
/// and, for a re-authentication, the asking session.
async fn verify_use(
    state: &AppState,
    body: &serde_json::Value,
    purpose: CeremonyPurpose,
    session_hash: Option<[u8; 32]>,
) -> Result<Used, ApiError> {
    let rp = relying_party(state)?;
    let json = serde_json::to_vec(body).map_err(|e| ApiError::Internal(e.into()))?;
    let (response, challenge, id) =
        pk::parse_authentication(&json).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let now = now_secs();
    let found = state
        .db
        .run(move |s| {
            let Some(c) = s.take_ceremony(&challenge, now)? else {
                return Ok(None);
            };
            let account = s.account(&c.user_name)?;
            let passkey = s.passkey(&id)?;
            Ok(Some((c, account, passkey)))
        })
        .await?;
    let Some((ceremony, account, passkey)) = found else {
        return Err(unknown_challenge());
    };
    if ceremony.purpose != purpose || ceremony.session_hash != session_hash {
        return Err(unknown_challenge());
    }
    let name = ceremony.user_name;
    check_not_locked(account.as_ref(), now)?;
    let active = account.as_ref().is_some_and(|a| {
        a.user.kind == AccountKind::Person && a.user.state == AccountState::Active
    });
    if !active {
        return Err(ApiError::Unauthorized(WRONG));
    }
    let Some(passkey) = passkey.filter(|p| p.user_name == name) else {
        return fail(state, &name, "passkey: not one of the person's").await;
    };
    let key = name.clone();
    let handle = state
        .db
        .run(move |s| s.passkey_handle(&key, &pk::new_user_handle()))
        .await?;
    match rp.finish_authentication(&ceremony.state, &response, &passkey, &handle) {
        Ok(asserted) => Ok(Used {
            name,
            passkey_name: passkey.name,
            factor: SecondFactorUse::Passkey {
                id: passkey.id,
                dynamic_state: asserted.dynamic_state,
                sign_count: asserted.sign_count,
            },
        }),
        Err(PasskeyError::CounterDidNotAdvance) => cloned(state, &name, &passkey).await,
        Err(PasskeyError::Stored(e)) => Err(ApiError::Internal(anyhow::anyhow!(e))),
        Err(e) => {
            tracing::info!(name, error = %e, "passkey refused");
            fail(state, &name, &format!("passkey: {e}")).await
        }
    }
}

/// Why spending a verified use failed: a counter that another use advanced meanwhile (the
/// store's Conflict) is a clone too, audited and counted.
async fn spend_failed(state: &AppState, used: &Used, e: ApiError) -> ApiError {
    let (ApiError::Conflict(_), SecondFactorUse::Passkey { id, .. }) = (&e, &used.factor) else {
        return e;
    };
    let id = id.clone();
    let counted: Result<std::convert::Infallible, ApiError> =
        match state.db.run(move |s| s.passkey(&id)).await {
            Ok(Some(p)) => cloned(state, &used.name, &p).await,
            Ok(None) => fail(state, &used.name, "passkey removed").await,
            Err(e) => Err(e),
        };
    match counted {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// `POST /api/v1/session/passkey` (public): an assertion for a login challenge opens the
/// session (sets the cookie), as `POST /api/v1/session` does with a TOTP code.
pub async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    let used = verify_use(&state, &body, CeremonyPurpose::Login, None).await?;
    let detail = serde_json::json!({ "second_factor": "passkey", "passkey": used.passkey_name });
    match open_session(&state, &used.name, used.factor.clone(), detail).await {
        Ok(response) => Ok(response),
        Err(e) => Err(spend_failed(&state, &used, e).await),
    }
}

/// `POST /api/v1/session/reauth/passkey` (console session): an assertion for this session's
/// re-authentication challenge.
pub async fn reauth(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<StatusCode, ApiError> {
    let hash = session_of(&caller)?.hash;
    let used = verify_use(&state, &body, CeremonyPurpose::Reauth, Some(hash)).await?;
    let now = now_secs();
    let event = AuditEvent::new(
        &used.name,
        AuditAction::UserReauth,
        &used.name,
        serde_json::json!({ "second_factor": "passkey", "passkey": used.passkey_name }),
    );
    let factor = used.factor.clone();
    match state
        .db
        .run(move |s| s.reauthenticate(&hash, &factor, now, &event))
        .await
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(spend_failed(&state, &used, e).await),
    }
}

/// `GET /api/v1/account/passkeys` (console session): the person's passkeys.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<PasskeyView>>, ApiError> {
    session_of(&caller)?;
    let name = caller.principal.name.clone();
    let passkeys = state.db.run(move |s| s.passkeys(&name)).await?;
    Ok(Json(passkeys.iter().map(view).collect()))
}

/// `POST /api/v1/account/passkeys/options` (console session, fresh): the
/// `PublicKeyCredentialCreationOptionsJSON` for a new passkey.
pub async fn register_options(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rp = relying_party(&state)?;
    let hash = session_of(&caller)?.hash;
    caller.require_fresh(&state.config)?;
    let name = caller.principal.name.clone();
    let key = name.clone();
    let (handle, existing) = state
        .db
        .run(move |s| {
            let handle = s.passkey_handle(&key, &pk::new_user_handle())?;
            Ok((handle, s.passkeys(&key)?))
        })
        .await?;
    let started = rp
        .start_registration(&name, &handle, &existing)
        .map_err(|e| ApiError::Internal(e.into()))?;
    store_ceremony(&state, started, name, CeremonyPurpose::Register, Some(hash)).await
}

/// `POST /api/v1/account/passkeys` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The person's name for the passkey.
    name: String,
    /// `RegistrationResponseJSON` (`PublicKeyCredential.toJSON()`).
    credential: serde_json::Value,
}

/// Checks a passkey's name: 1 to 64 characters, no control characters.
fn check_passkey_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    let length = name.chars().count();
    if !(1..=64).contains(&length) || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "a passkey's name is 1 to 64 characters, without control characters".to_owned(),
        ));
    }
    Ok(name.to_owned())
}

/// Audits a refused registration; the error for the client.
async fn registration_refused(state: &AppState, name: &str, why: String) -> ApiError {
    let event = AuditEvent::new(
        name,
        AuditAction::UserPasskeyFailure,
        name,
        serde_json::json!({ "ceremony": "register", "reason": why }),
    );
    let now = now_secs();
    match state
        .db
        .run(move |s| s.append_audit(&event, now).map(|_| ()))
        .await
    {
        Ok(()) => ApiError::BadRequest(why),
        Err(e) => e,
    }
}

/// `POST /api/v1/account/passkeys` (console session, fresh): verifies the registration
/// response against this session's challenge and stores the passkey.
pub async fn register(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<PasskeyView>), ApiError> {
    let rp = relying_party(&state)?;
    let hash = session_of(&caller)?.hash;
    caller.require_fresh(&state.config)?;
    let person = caller.principal.name.clone();
    let passkey_name = check_passkey_name(&req.name)?;
    let json = serde_json::to_vec(&req.credential).map_err(|e| ApiError::Internal(e.into()))?;
    let (registration, challenge) =
        pk::parse_registration(&json).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let now = now_secs();
    let ceremony = state
        .db
        .run(move |s| s.take_ceremony(&challenge, now))
        .await?
        .filter(|c| {
            c.purpose == CeremonyPurpose::Register
                && c.session_hash == Some(hash)
                && c.user_name == person
        })
        .ok_or_else(unknown_challenge)?;
    let new = match rp.finish_registration(&ceremony.state, &registration) {
        Ok(new) => new,
        Err(PasskeyError::Stored(e)) => return Err(ApiError::Internal(anyhow::anyhow!(e))),
        Err(e) => return Err(registration_refused(&state, &person, e.to_string()).await),
    };
    let passkey = Passkey {
        id: new.id,
        user_name: person.clone(),
        name: passkey_name,
        transports: new.transports,
        static_state: new.static_state,
        dynamic_state: new.dynamic_state,
        sign_count: new.sign_count,
        created_at: now,
        last_used_at: None,
    };
    let event = AuditEvent::new(
        &person,
        AuditAction::UserPasskeyAdd,
        &person,
        serde_json::json!({ "passkey": pk::encode_id(&passkey.id), "name": passkey.name }),
    );
    let shown = view(&passkey);
    state
        .db
        .run(move |s| s.add_passkey(&passkey, &event))
        .await?;
    Ok((StatusCode::CREATED, Json(shown)))
}

/// `DELETE /api/v1/account/passkeys/{id}` (console session, fresh): removes one of the
/// person's passkeys, unless it is their last second factor.
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    session_of(&caller)?;
    caller.require_fresh(&state.config)?;
    let raw =
        pk::decode_id(&id).ok_or_else(|| ApiError::BadRequest("a passkey id is hex".to_owned()))?;
    let name = caller.principal.name.clone();
    let event = AuditEvent::new(
        &name,
        AuditAction::UserPasskeyRemove,
        &name,
        serde_json::json!({ "passkey": id }),
    );
    state
        .db
        .run(move |s| s.remove_passkey(&name, &raw, &event))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/account/totp` (console session, fresh): removes the authenticator app,
/// unless no passkey remains.
pub async fn remove_totp(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    session_of(&caller)?;
    caller.require_fresh(&state.config)?;
    let name = caller.principal.name.clone();
    let event = AuditEvent::new(
        &name,
        AuditAction::UserTotpRemove,
        &name,
        serde_json::json!({}),
    );
    state.db.run(move |s| s.remove_totp(&name, &event)).await?;
    Ok(StatusCode::NO_CONTENT)
}
