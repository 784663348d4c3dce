//! The web console under `/console/`: server-rendered HTML for the people who run a fleet.
//!
//! Every page is rendered from the answer of the JSON API's own handler for the same data
//! (`devices::list`, `deployments::show`, `approvals::queue`, …), called with the request's
//! [`Caller`]: roles, scopes, re-authentication and the four-eyes rules are the API's, never
//! re-implemented here. A page is reached with the session cookie of `POST /console/login`.
//!
//! Forms post `application/x-www-form-urlencoded` bodies carrying the session's CSRF token in
//! a `csrf_token` field; [`form_csrf`] moves it into the `X-CSRF-Token` header, so the API's
//! own CSRF check (`Sec-Fetch-Site`, `Origin`, token) decides. Actions that need a fresh
//! re-authentication (approvals, refusals, device revocation) ask for passphrase and code
//! again and call `POST /api/v1/session/reauth`'s handler first.
//!
//! Templates (`server/templates/`, askama) are compiled into the binary and escape every
//! value; the stylesheet and the one script (`server/assets/`) are embedded too, so the
//! console needs nothing from outside. Every answer carries a strict Content-Security-Policy.

mod account;
mod charts;
mod pages;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::accounts::CSRF_HEADER;
use super::AppState;
use crate::error::ApiError;

/// The console's Content-Security-Policy: nothing from elsewhere, no inline script or style.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// Largest form body read.
const FORM_MAX: usize = 64 * 1024;

/// The console's routes (merged into the API router, under its middleware).
pub fn router() -> Router<AppState> {
    let actions = Router::new()
        .route("/console/logout", post(pages::logout))
        .route("/console/devices/{id}/revoke", post(pages::revoke_device))
        .route("/console/releases/{id}/decide", post(pages::decide_release))
        .route(
            "/console/deployments/{id}/action",
            post(pages::act_on_deployment),
        )
        .route(
            "/console/deployments/{id}/decide",
            post(pages::decide_deployment),
        )
        .route("/console/people", post(pages::add_person))
        .route(
            "/console/account/passkeys/{id}/remove",
            post(account::remove_passkey),
        )
        .route("/console/account/totp/remove", post(account::remove_totp))
        .layer(middleware::from_fn(form_csrf));
    Router::new()
        .route("/console", get(|| async { see_other("/console/") }))
        .route("/console/", get(pages::overview))
        .route("/console/login", get(pages::login_page).post(pages::login))
        .route("/console/devices", get(pages::devices))
        .route("/console/devices/{id}", get(pages::device))
        .route("/console/releases", get(pages::releases))
        .route("/console/releases/{id}", get(pages::release))
        .route("/console/deployments", get(pages::deployments))
        .route("/console/deployments/{id}", get(pages::deployment))
        .route("/console/approvals", get(pages::approvals))
        .route("/console/audit", get(pages::audit))
        .route("/console/people", get(pages::people))
        .route("/console/account", get(account::account))
        .route("/console/records", get(pages::records))
        .route("/console/assets/console.css", get(stylesheet))
        .route("/console/assets/console.js", get(script))
        .route("/console/assets/icon.svg", get(icon))
        .merge(actions)
        .layer(middleware::map_response(security_headers))
}

/// A `303 See Other` to `to`.
pub(crate) fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

/// The headers of every console answer.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // `same-origin`, not `no-referrer`: under `no-referrer` a browser sends `Origin: null` with
    // a form post, which the CSRF check rightly refuses.
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Moves a form's `csrf_token` field into the `X-CSRF-Token` header the API's CSRF check
/// reads (a header a cross-site form cannot set; the field alone is no proof either, the
/// check also wants `Sec-Fetch-Site` and `Origin` to be this site's).
async fn form_csrf(request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, FORM_MAX).await {
        Ok(b) => b,
        Err(_) => {
            return pages::error_page(ApiError::PayloadTooLarge(format!(
                "a console form is at most {FORM_MAX} bytes"
            )))
        }
    };
    parts.headers.remove(CSRF_HEADER);
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
    if let Some((_, token)) = fields.iter().find(|(k, _)| k == "csrf_token") {
        if let Ok(v) = HeaderValue::from_str(token) {
            parts.headers.insert(CSRF_HEADER, v);
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The stylesheet, embedded.
async fn stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../../assets/console.css"),
    )
}

/// The progressive-enhancement script, embedded.
async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../../assets/console.js"),
    )
}

/// The page icon, embedded.
async fn icon() -> Response {
    asset("image/svg+xml", include_str!("../../../assets/icon.svg"))
}

fn asset(kind: &'static str, text: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(kind)),
            (CACHE_CONTROL, HeaderValue::from_static("max-age=3600")),
        ],
        text,
    )
        .into_response()
}
