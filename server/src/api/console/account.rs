//! The person's own account page: second factors (the authenticator app and passkeys), each
//! removal behind a re-authentication, as the API's handlers decide. Adding a passkey needs
//! the browser's WebAuthn API, so `console.js` drives it through the JSON API; everything else
//! is a plain form.

use askama::Template;
use axum::extract::{Path, State};
use axum::Form;

use super::super::passkeys;
use super::pages::{each, ok, person, reauthenticated, text, time, value, Nav, Page, ReauthForm};
use super::see_other;
use crate::api::{AppState, Caller};
use crate::error::ApiError;

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    nav: Nav,
    enabled: bool,
    totp: bool,
    passkeys: Vec<PasskeyRow>,
}

struct PasskeyRow {
    id: String,
    name: String,
    created_at: String,
    last_used_at: String,
    sign_count: String,
}

/// `GET /console/account`.
pub async fn account(State(state): State<AppState>, caller: Result<Caller, ApiError>) -> Page {
    let (caller, nav) = person(caller)?;
    let name = caller.principal.name.clone();
    let list = value(passkeys::list(State(state.clone()), caller).await)?;
    let totp = state
        .db
        .run(move |s| s.account(&name))
        .await
        .map_err(super::pages::error_page)?
        .is_some_and(|a| a.credentials.totp_secret.is_some());
    ok(&AccountPage {
        nav,
        enabled: state.config.accounts.public_url.is_some(),
        totp,
        passkeys: each(&list, |p| PasskeyRow {
            id: text(p, "id"),
            name: text(p, "name"),
            created_at: time(p, "created_at"),
            last_used_at: time(p, "last_used_at"),
            sign_count: text(p, "sign_count"),
        }),
    })
}

/// The caller after the form's re-authentication; a form without passphrase and code (the
/// page of a person without an authenticator app, who confirmed with a passkey just before)
/// needs a session re-authenticated within `accounts.reauth_secs`.
async fn confirmed(
    state: &AppState,
    caller: Result<Caller, ApiError>,
    form: &ReauthForm,
) -> Result<Caller, axum::response::Response> {
    if form.passphrase.is_empty() && form.totp.trim().is_empty() {
        let (caller, _) = person(caller)?;
        caller
            .require_fresh(&state.config)
            .map_err(super::pages::error_page)?;
        return Ok(caller);
    }
    reauthenticated(state, caller, form).await
}

/// `POST /console/account/passkeys/{id}/remove` (re-authentication first).
pub async fn remove_passkey(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(id): Path<String>,
    Form(form): Form<ReauthForm>,
) -> Page {
    let caller = confirmed(&state, caller, &form).await?;
    passkeys::remove(State(state), caller, Path(id))
        .await
        .map_err(super::pages::error_page)?;
    Ok(see_other("/console/account"))
}

/// `POST /console/account/totp/remove` (re-authentication first).
pub async fn remove_totp(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Form(form): Form<ReauthForm>,
) -> Page {
    let caller = confirmed(&state, caller, &form).await?;
    passkeys::remove_totp(State(state), caller)
        .await
        .map_err(super::pages::error_page)?;
    Ok(see_other("/console/account"))
}
