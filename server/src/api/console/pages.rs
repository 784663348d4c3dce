//! The console's pages and form actions: each reads or acts through the JSON API's handler.

// A page's `Err` is the error page or redirect answered at once: not worth a box.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::header::{RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::{Form, Json};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::super::{
    accounts, approvals, deployments, devices, ops, records as records_api, releases,
};
use super::super::{ApiJson, AppState, Caller};
use super::charts::{self, Series};
use super::see_other;
use crate::error::ApiError;
use crate::rollout::DeviceStatus;
use crate::store::{now_secs, Outcomes, Role};

/// A page's answer: the page, or an error page / redirect.
pub(super) type Page = Result<Response, Response>;

/// What every page's header shows.
pub struct Nav {
    pub(super) user: String,
    pub(super) csrf: String,
    pub(super) admin: bool,
    pub(super) auditor: bool,
}

fn render<T: Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console template");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<p>internal error</p>"),
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: Option<Nav>,
    status: String,
    message: String,
}

/// An API error as a page with the same status.
pub fn error_page(e: ApiError) -> Response {
    let message = e.to_string();
    let status = e.into_response().status();
    if status == StatusCode::UNAUTHORIZED {
        return see_other("/console/login");
    }
    render(
        status,
        &ErrorPage {
            nav: None,
            status: status.to_string(),
            message,
        },
    )
}

/// The person behind a page request, or the way to the login page.
pub(super) fn person(caller: Result<Caller, ApiError>) -> Result<(Caller, Nav), Response> {
    let caller = caller.map_err(error_page)?;
    let Some(session) = &caller.session else {
        return Err(see_other("/console/login"));
    };
    let nav = Nav {
        user: caller.principal.name.clone(),
        csrf: session.csrf_token.clone(),
        admin: caller.roles.contains(&Role::Admin),
        auditor: caller.roles.contains(&Role::Auditor),
    };
    Ok((caller, nav))
}

/// An API answer as JSON values.
pub(super) fn value<T: serde::Serialize>(r: Result<Json<T>, ApiError>) -> Result<Value, Response> {
    let Json(v) = r.map_err(error_page)?;
    serde_json::to_value(v).map_err(|e| error_page(ApiError::Internal(e.into())))
}

fn body<T: DeserializeOwned>(v: Value) -> Result<T, Response> {
    serde_json::from_value(v).map_err(|e| error_page(ApiError::BadRequest(e.to_string())))
}

/// A list query rebuilt from the page's query string: `keys` only, empty fields dropped; a
/// value the API would refuse is a 400 page.
fn query<T: DeserializeOwned>(
    uri: &Uri,
    keys: &[&str],
    extra: &[(&str, &str)],
) -> Result<Query<T>, Response> {
    let fields: Vec<(String, String)> =
        serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    let mut kept: Vec<(String, String)> = fields
        .into_iter()
        .filter(|(k, v)| keys.contains(&k.as_str()) && !v.is_empty())
        .collect();
    kept.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let text = serde_urlencoded::to_string(&kept).unwrap_or_default();
    serde_urlencoded::from_str(&text)
        .map(Query)
        .map_err(|e| error_page(ApiError::BadRequest(format!("filter: {e}"))))
}

fn filters(uri: &Uri, keys: &[&str]) -> BTreeMap<String, String> {
    let fields: Vec<(String, String)> =
        serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    fields
        .into_iter()
        .filter(|(k, _)| keys.contains(&k.as_str()))
        .collect()
}

pub(super) fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "—".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The strings in the array at `key`, joined with commas.
fn joined(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// Each item of a list answer, as `row` makes it (none when the answer is not a list).
pub(super) fn each<T>(list: &Value, row: impl Fn(&Value) -> T) -> Vec<T> {
    list.as_array()
        .map(|a| a.iter().map(row).collect())
        .unwrap_or_default()
}

/// A page rendered with 200.
pub(super) fn ok<T: Template>(page: &T) -> Page {
    Ok(render(StatusCode::OK, page))
}

/// Back to the page of `id` in `section` after a form action.
fn back_to(section: &str, id: &str) -> Page {
    Ok(see_other(&format!("/console/{section}/{}", urlencode(id))))
}

/// The body of a raw API answer (at most `limit` bytes).
async fn answer_bytes(answer: Response, limit: usize) -> Result<axum::body::Bytes, Response> {
    axum::body::to_bytes(answer.into_body(), limit)
        .await
        .map_err(|e| error_page(ApiError::Internal(e.into())))
}

/// A redirect to `to` carrying the session cookie `answer` set (or cleared), if any.
fn with_cookie(to: &str, answer: &Response) -> Response {
    let mut r = see_other(to);
    if let Some(cookie) = answer.headers().get(SET_COOKIE) {
        r.headers_mut().insert(SET_COOKIE, cookie.clone());
    }
    r
}

/// A value as text: a string as it is, anything else as JSON.
fn plain(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

pub(super) fn time(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_u64)
        .map_or_else(|| "—".to_owned(), format_time)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of seconds since the Unix epoch.
pub fn format_time(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------- login

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<String>,
    name: String,
    /// Whether passkeys are on (`accounts.public_url`): the page offers them.
    passkeys: bool,
}

/// `GET /console/login`.
pub async fn login_page(State(state): State<AppState>) -> Response {
    render(
        StatusCode::OK,
        &LoginPage {
            error: None,
            name: String::new(),
            passkeys: state.config.accounts.public_url.is_some(),
        },
    )
}

/// The login form.
#[derive(Deserialize)]
pub struct LoginForm {
    name: String,
    passphrase: String,
    totp: String,
}

/// `POST /console/login`: `POST /api/v1/session`'s handler; its cookie, then the overview.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    // A login form posted from another site (login CSRF) is refused like the API's forms.
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return error_page(ApiError::Forbidden("cross-site request refused".to_owned()));
        }
    }
    let name = form.name.trim().to_owned();
    let passkeys_on = state.config.accounts.public_url.is_some();
    let req = match body(json!({
        "name": name, "passphrase": form.passphrase, "totp": form.totp.trim()
    })) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match accounts::login(State(state), ApiJson(req)).await {
        Ok(answer) if answer.status().is_success() => with_cookie("/console/", &answer),
        Ok(answer) => answer,
        Err(e) => {
            let message = e.to_string();
            let refused = e.into_response();
            let mut page = render(
                refused.status(),
                &LoginPage {
                    error: Some(message),
                    name,
                    passkeys: passkeys_on,
                },
            );
            // A backoff or lockout says when to try again, as the API's answer does.
            if let Some(after) = refused.headers().get(RETRY_AFTER) {
                page.headers_mut().insert(RETRY_AFTER, after.clone());
            }
            page
        }
    }
}

/// `POST /console/logout`.
pub async fn logout(State(state): State<AppState>, caller: Result<Caller, ApiError>) -> Page {
    let (caller, _) = person(caller)?;
    let answer = accounts::logout(State(state), caller)
        .await
        .map_err(error_page)?;
    Ok(with_cookie("/console/login", &answer))
}

/// The person behind a form that needs a fresh passphrase-and-code check
/// (`POST /api/v1/session/reauth`'s handler); the caller returned carries it.
pub(super) async fn reauthenticated(
    state: &AppState,
    caller: Result<Caller, ApiError>,
    form: &ReauthForm,
) -> Result<Caller, Response> {
    let (mut caller, _) = person(caller)?;
    let req = body(json!({ "passphrase": form.passphrase, "totp": form.totp.trim() }))?;
    accounts::reauth(State(state.clone()), caller.clone(), ApiJson(req))
        .await
        .map_err(error_page)?;
    if let Some(s) = caller.session.as_mut() {
        s.reauth_at = now_secs();
    }
    Ok(caller)
}

// ---------------------------------------------------------------- overview

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    nav: Nav,
    devices: u64,
    by_state: String,
    by_version: String,
    rollouts: Vec<DeploymentRow>,
    more_rollouts: bool,
    failures: Vec<DeviceRow>,
}

/// A device in a list.
pub struct DeviceRow {
    id: String,
    product: String,
    channel: String,
    groups: String,
    version: String,
    state: String,
    last_seen: String,
    revoked: bool,
}

fn device_row(d: &Value) -> DeviceRow {
    let product = d.get("product").cloned().unwrap_or(Value::Null);
    DeviceRow {
        id: text(d, "id"),
        product: format!("{}/{}", text(&product, "vendor"), text(&product, "device")),
        channel: text(d, "channel"),
        groups: joined(d, "groups"),
        version: text(d, "version"),
        state: text(d, "state"),
        last_seen: time(d, "last_seen"),
        revoked: d.get("revoked").and_then(Value::as_bool).unwrap_or(false),
    }
}

/// A deployment in a list.
pub struct DeploymentRow {
    id: String,
    release: String,
    product: String,
    target: String,
    phase: String,
    state: String,
    devices: String,
    created: String,
    created_by: String,
}

fn deployment_row(d: &Value) -> DeploymentRow {
    let product = d.get("product").cloned().unwrap_or(Value::Null);
    let target = d.get("target").cloned().unwrap_or(Value::Null);
    let phases = d
        .pointer("/policy/phases")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let phase = d.get("phase").and_then(Value::as_u64).unwrap_or(0);
    DeploymentRow {
        id: text(d, "id"),
        release: text(d, "release_id").chars().take(12).collect(),
        product: format!("{}/{}", text(&product, "vendor"), text(&product, "device")),
        target: format!("{} {}", text(&target, "kind"), text(&target, "value")),
        phase: format!("{} of {}", phase.saturating_add(1), phases),
        state: text(d, "state"),
        devices: text(d, "devices"),
        created: time(d, "created_at"),
        created_by: text(d, "created_by"),
    }
}

/// The `[key or null, count]` pairs at `key` of a summary, `null` as "never reported".
fn counted(summary: &Value, key: &str) -> Vec<(String, u64)> {
    each(&summary[key], |pair| {
        let name = match pair.get(0) {
            Some(Value::String(s)) => s.clone(),
            _ => "never reported".to_owned(),
        };
        (name, pair.get(1).and_then(Value::as_u64).unwrap_or(0))
    })
}

/// The device filters a page passes on to the API.
const DEVICE_FILTERS: [&str; 6] = ["product", "channel", "group", "state", "revoked", "version"];

/// `GET /api/v1/summary/devices`'s answer for the page's filters (counted by the database,
/// cut to the caller's scope).
async fn device_summary(state: &AppState, caller: &Caller, uri: &Uri) -> Result<Value, Response> {
    let q = query(uri, &DEVICE_FILTERS, &[])?;
    value(devices::summary(State(state.clone()), caller.clone(), Ok(q)).await)
}

/// Rollouts listed on the overview.
const OVERVIEW_ROLLOUTS: usize = 10;

/// `GET /console/`: the fleet overview.
pub async fn overview(State(state): State<AppState>, caller: Result<Caller, ApiError>) -> Page {
    let (caller, nav) = person(caller)?;
    let summary = device_summary(&state, &caller, &Uri::from_static("/")).await?;
    let devices = summary["total"].as_u64().unwrap_or(0);
    let by_state = charts::bars("devices by state", &counted(&summary, "by_state"));
    let by_version = charts::bars("devices by version", &counted(&summary, "by_version"));
    // The newest active deployments, one more than shown: whether to link to the rest.
    let q = Query(body(
        json!({ "state": "active", "limit": OVERVIEW_ROLLOUTS.saturating_add(1) }),
    )?);
    let active = value(deployments::list(State(state.clone()), caller.clone(), Ok(q)).await)?;
    let mut rollouts = each(&active, deployment_row);
    let more_rollouts = rollouts.len() > OVERVIEW_ROLLOUTS;
    rollouts.truncate(OVERVIEW_ROLLOUTS);
    let failures = each(&summary["recent_failures"], device_row);
    ok(&OverviewPage {
        nav,
        devices,
        by_state,
        by_version,
        rollouts,
        more_rollouts,
        failures,
    })
}

/// Rows per page of the device and deployment lists.
const PAGE_ROWS: u64 = 100;

/// Where a list page stands: rows `first` to `last` (1-based) of `total`, when known, and
/// the links to the pages before and after.
pub struct Pager {
    first: u64,
    last: u64,
    total: Option<u64>,
    prev: Option<String>,
    next: Option<String>,
}

/// The `offset` of a list page's query (0 when absent or not a number).
fn offset_of(uri: &Uri) -> u64 {
    filters(uri, &["offset"])
        .get("offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0)
}

impl Pager {
    /// The pager of a page at `offset` of the list at `path` filtered by `kept` (the page's
    /// own query fields), showing `shown` rows, with `more` when rows follow.
    fn new(
        path: &str,
        uri: &Uri,
        kept: &[&str],
        shown: u64,
        more: bool,
        total: Option<u64>,
    ) -> Pager {
        let offset = offset_of(uri);
        let fields: Vec<(String, String)> = filters(uri, kept)
            .into_iter()
            .filter(|(k, v)| k != "offset" && !v.is_empty())
            .collect();
        let link = |at: u64| {
            let mut f = fields.clone();
            if at > 0 {
                f.push(("offset".to_owned(), at.to_string()));
            }
            match serde_urlencoded::to_string(&f).unwrap_or_default() {
                q if q.is_empty() => path.to_owned(),
                q => format!("{path}?{q}"),
            }
        };
        Pager {
            first: if shown == 0 {
                0
            } else {
                offset.saturating_add(1)
            },
            last: offset.saturating_add(shown),
            total,
            prev: (offset > 0).then(|| link(offset.saturating_sub(PAGE_ROWS))),
            next: more.then(|| link(offset.saturating_add(PAGE_ROWS))),
        }
    }
}

async fn device_rows(
    state: &AppState,
    caller: &Caller,
    uri: &Uri,
) -> Result<Vec<DeviceRow>, Response> {
    let mut keys = DEVICE_FILTERS.to_vec();
    keys.push("offset");
    let limit = PAGE_ROWS.to_string();
    let q = query(uri, &keys, &[("limit", &limit)])?;
    let list = value(devices::list(State(state.clone()), caller.clone(), Ok(q)).await)?;
    Ok(each(&list, device_row))
}

// ---------------------------------------------------------------- devices

#[derive(Template)]
#[template(path = "devices.html")]
struct DevicesPage {
    nav: Nav,
    filter: BTreeMap<String, String>,
    states: Vec<&'static str>,
    rows: Vec<DeviceRow>,
    pager: Pager,
}

impl DevicesPage {
    fn value(&self, key: &str) -> &str {
        self.filter.get(key).map_or("", String::as_str)
    }
}

/// `GET /console/devices?product=&channel=&group=&state=&version=&offset=`: a page of
/// [`PAGE_ROWS`] devices, and how many pass the filters in all.
pub async fn devices(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    uri: Uri,
) -> Page {
    let (caller, nav) = person(caller)?;
    let filter = filters(&uri, &DEVICE_FILTERS);
    let total = device_summary(&state, &caller, &uri).await?["total"]
        .as_u64()
        .unwrap_or(0);
    let rows = device_rows(&state, &caller, &uri).await?;
    let shown = rows.len() as u64;
    let more = offset_of(&uri).saturating_add(shown) < total;
    let pager = Pager::new(
        "/console/devices",
        &uri,
        &DEVICE_FILTERS,
        shown,
        more,
        Some(total),
    );
    ok(&DevicesPage {
        nav,
        filter,
        states: sigil_protocol::CheckInState::ALL
            .iter()
            .map(|s| s.as_str())
            .collect(),
        rows,
        pager,
    })
}

#[derive(Template)]
#[template(path = "device.html")]
struct DevicePage {
    nav: Nav,
    device: DeviceRow,
    labels: Vec<(String, String)>,
    reports: Vec<ReportRow>,
}

struct ReportRow {
    at: String,
    state: String,
    version: String,
    detail: String,
}

/// `GET /console/devices/{id}`: the device and its report timeline.
pub async fn device(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(id): Path<String>,
) -> Page {
    let (caller, nav) = person(caller)?;
    let d = value(devices::show(State(state.clone()), caller.clone(), Path(id.clone())).await)?;
    // Every report kept (`limits.reports_kept`), newest first.
    let kept = state.config.limits.reports_kept;
    let q = Query(body(json!({ "limit": kept }))?);
    let reports = value(devices::reports(State(state), caller, Path(id), Ok(q)).await)?;
    let labels = d
        .get("labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let reports = each(&reports, |r| ReportRow {
        at: time(r, "at"),
        state: text(r, "state"),
        version: text(r, "version"),
        detail: r
            .get("detail")
            .filter(|v| !v.is_null())
            .map(plain)
            .unwrap_or_default(),
    });
    ok(&DevicePage {
        nav,
        device: device_row(&d),
        labels,
        reports,
    })
}

/// A form that needs a fresh re-authentication.
#[derive(Deserialize)]
pub struct ReauthForm {
    #[serde(default)]
    pub(super) passphrase: String,
    #[serde(default)]
    pub(super) totp: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    decision: String,
}

/// `POST /console/devices/{id}/revoke` (re-authentication first).
pub async fn revoke_device(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(id): Path<String>,
    Form(form): Form<ReauthForm>,
) -> Page {
    let caller = reauthenticated(&state, caller, &form).await?;
    let _answer = devices::revoke(State(state), caller, Path(id.clone()))
        .await
        .map_err(error_page)?;
    back_to("devices", &id)
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|t| t.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- releases

#[derive(Template)]
#[template(path = "releases.html")]
struct ReleasesPage {
    nav: Nav,
    rows: Vec<BTreeMap<&'static str, String>>,
}

const RELEASE_FIELDS: [&str; 13] = [
    "id",
    "vendor",
    "device",
    "component",
    "version",
    "security_counter",
    "payload_size",
    "payload_digest",
    "key_set_version",
    "size",
    "uploaded_by",
    "retired",
    "expires",
];

fn release_fields(r: &Value) -> BTreeMap<&'static str, String> {
    let mut m: BTreeMap<&'static str, String> =
        RELEASE_FIELDS.iter().map(|k| (*k, text(r, k))).collect();
    m.insert("created", time(r, "created"));
    m.insert("uploaded_at", time(r, "uploaded_at"));
    m.insert("expires", time(r, "expires"));
    m
}

/// `GET /console/releases`.
pub async fn releases(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    uri: Uri,
) -> Page {
    let (caller, nav) = person(caller)?;
    let q = query(&uri, &["product", "retired"], &[])?;
    let list = value(releases::list(State(state), caller, Ok(q)).await)?;
    let rows = each(&list, release_fields);
    ok(&ReleasesPage { nav, rows })
}

#[derive(Template)]
#[template(path = "release.html")]
struct ReleasePage {
    nav: Nav,
    id: String,
    decide_action: String,
    fields: Vec<(&'static str, String)>,
    extra: Vec<(String, String)>,
    approved_by: String,
    author: String,
    decisions: Vec<DecisionRow>,
    deployed: Vec<DeploymentRow>,
    pager: Pager,
}

struct DecisionRow {
    decision: String,
    by: String,
    reason: String,
    at: String,
}

fn decision_rows(v: &Value) -> Vec<DecisionRow> {
    v.get("decisions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|d| DecisionRow {
                    decision: text(d, "decision"),
                    by: text(d, "by"),
                    reason: text(d, "reason"),
                    at: time(d, "at"),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /console/releases/{id}?offset=`: manifest fields, approvals, where it is deployed (a
/// page of [`PAGE_ROWS`] deployments, newest first).
pub async fn release(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(id): Path<String>,
    uri: Uri,
) -> Page {
    let (caller, nav) = person(caller)?;
    let answer = releases::show(State(state.clone()), caller.clone(), Path(id.clone()))
        .await
        .map_err(error_page)?;
    let bytes = answer_bytes(answer, 1 << 20).await?;
    let r: Value =
        serde_json::from_slice(&bytes).map_err(|e| error_page(ApiError::Internal(e.into())))?;
    let known = release_fields(&r);
    let fields: Vec<(&'static str, String)> = known.into_iter().collect();
    // Whatever else the release answer carries (release notes, SBOM digests, …), as it is.
    let extra = r
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    !RELEASE_FIELDS.contains(&k.as_str())
                        && !matches!(k.as_str(), "created" | "uploaded_at")
                })
                .map(|(k, v)| (k.clone(), plain(v)))
                .collect()
        })
        .unwrap_or_default();
    let approvals_state =
        approvals::release_approvals(State(state.clone()), caller.clone(), Path(id.clone()))
            .await
            .ok()
            .and_then(|Json(a)| serde_json::to_value(a).ok())
            .unwrap_or(Value::Null);
    // Where it is deployed: the release's own deployments, a page at a time.
    let (deployed, pager) = deployment_rows(
        &state,
        &caller,
        &uri,
        &format!("/console/releases/{}", urlencode(&id)),
        &[],
        &[("release", &id)],
    )
    .await?;
    ok(&ReleasePage {
        nav,
        decide_action: format!("/console/releases/{}/decide", urlencode(&id)),
        id,
        fields,
        extra,
        approved_by: text(&approvals_state, "approved_by"),
        author: text(&approvals_state, "author"),
        decisions: decision_rows(&approvals_state),
        deployed,
        pager,
    })
}

/// `POST /console/releases/{id}/decide`: approve or refuse (re-authentication first).
pub async fn decide_release(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(id): Path<String>,
    Form(form): Form<ReauthForm>,
) -> Page {
    let caller = reauthenticated(&state, caller, &form).await?;
    let req = body(json!({ "reason": form.reason }))?;
    let _answer = approvals::decide_release(
        State(state),
        caller,
        Path((id.clone(), form.decision.clone())),
        ApiJson(req),
    )
    .await
    .map_err(error_page)?;
    back_to("releases", &id)
}

// ---------------------------------------------------------------- deployments

/// A page of [`PAGE_ROWS`] deployments (newest first) at the `offset` of `uri`, filtered by
/// the page's `kept` query fields and `fixed` ones, with its pager to `path`.
async fn deployment_rows(
    state: &AppState,
    caller: &Caller,
    uri: &Uri,
    path: &str,
    kept: &[&str],
    fixed: &[(&str, &str)],
) -> Result<(Vec<DeploymentRow>, Pager), Response> {
    // One row more than shown: whether a next page exists.
    let limit = PAGE_ROWS.saturating_add(1).to_string();
    let mut keys = kept.to_vec();
    keys.push("offset");
    let mut extra = fixed.to_vec();
    extra.push(("limit", &limit));
    let q = query(uri, &keys, &extra)?;
    let list = value(deployments::list(State(state.clone()), caller.clone(), Ok(q)).await)?;
    let mut rows = each(&list, deployment_row);
    let more = rows.len() as u64 > PAGE_ROWS;
    rows.truncate(PAGE_ROWS as usize);
    let pager = Pager::new(path, uri, kept, rows.len() as u64, more, None);
    Ok((rows, pager))
}

#[derive(Template)]
#[template(path = "deployments.html")]
struct DeploymentsPage {
    nav: Nav,
    rows: Vec<DeploymentRow>,
    pager: Pager,
}

/// `GET /console/deployments?product=&state=&offset=`: a page of [`PAGE_ROWS`], newest first.
pub async fn deployments(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    uri: Uri,
) -> Page {
    let (caller, nav) = person(caller)?;
    let (rows, pager) = deployment_rows(
        &state,
        &caller,
        &uri,
        "/console/deployments",
        &["product", "state"],
        &[],
    )
    .await?;
    ok(&DeploymentsPage { nav, rows, pager })
}

#[derive(Template)]
#[template(path = "deployment.html")]
struct DeploymentPage {
    nav: Nav,
    decide_action: String,
    row: DeploymentRow,
    counts: Vec<(String, u64)>,
    chart: String,
    phases: Vec<String>,
    waiting: bool,
    author: String,
    decisions: Vec<DecisionRow>,
    final_state: bool,
    paused: bool,
    /// Members the encrypted release is withheld from, and the first of them.
    withheld: u64,
    withheld_rows: Vec<WithheldRow>,
}

/// A member an encrypted release is withheld from.
struct WithheldRow {
    device: String,
    status: String,
    reason: String,
    remedy: String,
}

/// Withheld members the deployment page lists (the API pages the rest).
const WITHHELD_SHOWN: u32 = 100;

/// `GET /console/deployments/{id}`: phases, counts, the chart, actions and approvals.
pub async fn deployment(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(id): Path<String>,
) -> Page {
    let (caller, nav) = person(caller)?;
    // The counts cover every device; the page needs no members.
    let q = Query(body(json!({ "limit": 1 }))?);
    let d = value(
        deployments::show(
            State(state.clone()),
            caller.clone(),
            Path(id.clone()),
            Ok(q),
        )
        .await,
    )?;
    let withheld = d.get("withheld").and_then(Value::as_u64).unwrap_or(0);
    let withheld_rows = if withheld > 0 {
        let q = Query(body(json!({ "limit": WITHHELD_SHOWN }))?);
        let w = value(
            deployments::withheld(
                State(state.clone()),
                caller.clone(),
                Path(id.clone()),
                Ok(q),
            )
            .await,
        )?;
        each(&w, |m| WithheldRow {
            device: text(m, "device_id"),
            status: text(m, "status"),
            reason: text(m, "reason").replace('_', " "),
            remedy: text(m, "remedy"),
        })
    } else {
        Vec::new()
    };
    let a = value(
        approvals::deployment_approvals(State(state.clone()), caller, Path(id.clone())).await,
    )?;
    let counts = d
        .get("counts")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    // Shown only once `show` has found the deployment in the caller's scope.
    let n = deployments::parse_id(&id).map_err(error_page)?;
    let outcomes = state
        .db
        .run(move |s| s.deployment_outcomes(n, CHART_SPANS))
        .await
        .map_err(error_page)?;
    let chart = charts::lines(
        "confirmed, failed and reverted devices over time",
        &outcome_series(&outcomes),
    );
    let phase = d.get("phase").and_then(Value::as_u64).unwrap_or(0);
    let phases = d
        .pointer("/policy/phases")
        .and_then(Value::as_array)
        .map(|p| {
            p.iter()
                .enumerate()
                .map(|(i, v)| {
                    let mark = match (i as u64).cmp(&phase) {
                        std::cmp::Ordering::Less => "done",
                        std::cmp::Ordering::Equal => "current",
                        std::cmp::Ordering::Greater => "later",
                    };
                    format!("phase {}: {} ({mark})", i + 1, compact(v))
                })
                .collect()
        })
        .unwrap_or_default();
    let row = deployment_row(&d);
    ok(&DeploymentPage {
        nav,
        decide_action: format!("/console/deployments/{}/decide", row.id),
        final_state: matches!(row.state.as_str(), "cancelled" | "completed"),
        paused: row.state == "paused",
        row,
        counts,
        chart,
        phases,
        waiting: a.get("waiting").and_then(Value::as_bool).unwrap_or(false),
        author: text(&a, "author"),
        decisions: decision_rows(&a),
        withheld,
        withheld_rows,
    })
}

/// Spans of the deployment chart: the store counts outcomes in at most this many.
const CHART_SPANS: u32 = 120;

/// Confirmed / failed / reverted devices over time, each series cumulative, one point at
/// the end of every span in which its count rose.
fn outcome_series(o: &Outcomes) -> Vec<Series> {
    [
        (DeviceStatus::Confirmed, "ok"),
        (DeviceStatus::Failed, "bad"),
        (DeviceStatus::Reverted, "warn"),
    ]
    .into_iter()
    .map(|(status, class)| {
        let mut total = 0u64;
        let points = o
            .counts
            .iter()
            .filter(|(s, _, _)| *s == status)
            .map(|(_, span, n)| {
                total = total.saturating_add(*n);
                let end = span.saturating_add(1).saturating_mul(o.width);
                (o.start.saturating_add(end.saturating_sub(1)), total)
            })
            .collect();
        Series {
            name: status.as_str(),
            class,
            points,
        }
    })
    .collect()
}

fn compact(v: &Value) -> String {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k} {}", compact(v)))
            .collect::<Vec<_>>()
            .join(", "),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The pause / resume / cancel form.
#[derive(Deserialize)]
pub struct ActionForm {
    action: String,
}

/// `POST /console/deployments/{id}/action`.
pub async fn act_on_deployment(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Page {
    let (caller, _) = person(caller)?;
    let _answer = deployments::act(State(state), caller, Path((id.clone(), form.action)))
        .await
        .map_err(error_page)?;
    back_to("deployments", &id)
}

/// `POST /console/deployments/{id}/decide`: approve or refuse (re-authentication first).
pub async fn decide_deployment(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(id): Path<String>,
    Form(form): Form<ReauthForm>,
) -> Page {
    let caller = reauthenticated(&state, caller, &form).await?;
    let req = body(json!({ "reason": form.reason }))?;
    let st = State(state);
    let done = match form.decision.as_str() {
        "approve" => {
            approvals::decide_deployment_approve(st, caller, Path(id.clone()), ApiJson(req)).await
        }
        "refuse" => {
            approvals::decide_deployment_refuse(st, caller, Path(id.clone()), ApiJson(req)).await
        }
        _ => Err(ApiError::BadRequest(
            "the decision is approve or refuse".to_owned(),
        )),
    };
    let _answer = done.map_err(error_page)?;
    back_to("deployments", &id)
}

// ---------------------------------------------------------------- approvals

#[derive(Template)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    nav: Nav,
    releases: Vec<BTreeMap<&'static str, String>>,
    deployments: Vec<DeploymentRow>,
}

/// `GET /console/approvals`: the queue.
pub async fn approvals(State(state): State<AppState>, caller: Result<Caller, ApiError>) -> Page {
    let (caller, nav) = person(caller)?;
    let q = value(approvals::queue(State(state), caller).await)?;
    let list = |k: &str| {
        q.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    ok(&ApprovalsPage {
        nav,
        releases: list("releases").iter().map(release_fields).collect(),
        deployments: list("deployments").iter().map(deployment_row).collect(),
    })
}

// ---------------------------------------------------------------- audit

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Nav,
    /// The chain's and the checkpoints' verification, or what does not verify.
    verified: Result<(String, String), String>,
    filter: BTreeMap<String, String>,
    entries: Vec<AuditRow>,
}

impl AuditPage {
    fn value(&self, key: &str) -> &str {
        self.filter.get(key).map_or("", String::as_str)
    }
}

struct AuditRow {
    seq: u64,
    at: String,
    actor: String,
    action: String,
    subject: String,
    detail: String,
}

/// Most entries listed.
const AUDIT_SHOWN: usize = 500;

/// `GET /console/audit?actor=&action=&subject=`: the verification of the chain and of its
/// signed checkpoints, as the server does it at start-up, and the newest matching entries
/// (auditor, unscoped: `GET /api/v1/audit/head`'s handler decides).
pub async fn audit(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    uri: Uri,
) -> Page {
    let (caller, nav) = person(caller)?;
    let _answer = ops::audit_head(State(state.clone()), caller)
        .await
        .map_err(error_page)?;
    let filter = filters(&uri, &["actor", "action", "subject"]);
    let f = filter.clone();
    let keys = crate::audit_key::KeyFile::of(&state.config);
    let db_name = crate::audit_key::database_name(&state.config);
    let every = state.config.audit_checkpoint_secs;
    let (verified, entries) = state
        .db
        .run(move |s| {
            let keep = |e: &crate::audit::AuditEntry| {
                f.iter().all(|(k, v)| {
                    let field = match k.as_str() {
                        "actor" => &e.actor,
                        "action" => &e.action,
                        _ => &e.subject,
                    };
                    v.is_empty() || field.contains(v.as_str())
                })
            };
            // The newest matches only: the page's memory does not grow with the trail.
            let mut shown = std::collections::VecDeque::with_capacity(AUDIT_SHOWN);
            let trail = crate::audit_key::verify_stored(s, &keys, &db_name, &mut |e| {
                if keep(e) {
                    if shown.len() == AUDIT_SHOWN {
                        shown.pop_front();
                    }
                    shown.push_back(AuditRow {
                        seq: e.seq,
                        at: format_time(e.at),
                        actor: e.actor.clone(),
                        action: e.action.clone(),
                        subject: e.subject.clone(),
                        detail: e.detail.clone(),
                    });
                }
            });
            let verified = match trail {
                Ok(sum) => audit_verdict(&sum, &keys, every),
                Err(crate::audit_key::AuditKeyError::Store(e)) => return Err(e),
                Err(crate::audit_key::AuditKeyError::Tampered { why, .. }) => Err(why),
                Err(other) => Err(other.to_string()),
            };
            Ok((verified, shown.into_iter().rev().collect::<Vec<_>>()))
        })
        .await
        .map_err(error_page)?;
    ok(&AuditPage {
        nav,
        verified,
        filter,
        entries,
    })
}

/// What the audit page says of a trail whose chain and checkpoints verified: the chain, then
/// the checkpoints, which must end at the key in this server's key file (a database whose
/// checkpoints were all re-signed with another key verifies on its own, but not against it).
fn audit_verdict(
    sum: &crate::audit::ChainSummary,
    keys: &crate::audit_key::KeyFile,
    every: u64,
) -> Result<(String, String), String> {
    let chain = format!(
        "{} entries, each linked to the one before, head {}",
        sum.entries, sum.head
    );
    let Some(key) = &sum.current_key else {
        return Ok((
            chain,
            "no signed checkpoint yet (the server signs one at start-up and every \
             audit_checkpoint_secs)"
                .to_owned(),
        ));
    };
    match keys.holds(key) {
        Ok(true) => {}
        Ok(false) => {
            return Err(format!(
                "the stored checkpoints are signed by {key}, which is not this server's audit \
                 key (checkpoints forged or re-signed)"
            ))
        }
        Err(e) => return Err(format!("cannot read the audit key: {e}")),
    }
    let mut text = format!(
        "{} signed checkpoint{} verified, each along the key rotations to this server's \
         audit key {key}; the last covers entry {}",
        sum.checkpoints,
        if sum.checkpoints == 1 { "" } else { "s" },
        sum.covered
    );
    if sum.covered < sum.entries {
        text.push_str(&format!(
            " (entries {} to {} are newer; a checkpoint is signed every {every} s)",
            sum.covered.saturating_add(1),
            sum.entries
        ));
    }
    Ok((chain, text))
}

// ---------------------------------------------------------------- records

#[derive(Template)]
#[template(path = "records.html")]
struct RecordsPage {
    nav: Nav,
    records: Vec<crate::records::RecordKind>,
    prune_interval_secs: u64,
}

/// `GET /console/records`: what the server keeps, for how long and why
/// (`GET /api/v1/records`'s handler).
pub async fn records(State(state): State<AppState>, caller: Result<Caller, ApiError>) -> Page {
    let (caller, nav) = person(caller)?;
    let Json(statement) = records_api::statement(State(state), caller)
        .await
        .map_err(error_page)?;
    ok(&RecordsPage {
        nav,
        records: statement.records,
        prune_interval_secs: statement.prune_interval_secs,
    })
}

// ---------------------------------------------------------------- people

#[derive(Template)]
#[template(path = "people.html")]
struct PeoplePage {
    nav: Nav,
    users: Vec<UserRow>,
    tokens: Vec<TokenRow>,
    enrolment: Option<(String, String)>,
}

struct UserRow {
    name: String,
    kind: String,
    roles: String,
    state: String,
    scope: String,
}

struct TokenRow {
    id: String,
    name: String,
    role: String,
    owner: String,
    expires: String,
}

async fn people_page(
    state: AppState,
    caller: Caller,
    nav: Nav,
    enrolment: Option<(String, String)>,
) -> Page {
    let users = value(accounts::list_users(State(state.clone()), caller.clone()).await)?;
    let tokens = value(ops::list_tokens(State(state), caller).await)?;
    let users = each(&users, |u| UserRow {
        name: text(u, "name"),
        kind: text(u, "kind"),
        roles: joined(u, "roles"),
        state: text(u, "state"),
        scope: u
            .get("scope")
            .filter(|s| !s.is_null())
            .map_or_else(|| "whole fleet".to_owned(), compact),
    });
    let tokens = each(&tokens, |t| TokenRow {
        id: text(t, "id"),
        name: text(t, "name"),
        role: text(t, "role"),
        owner: text(t, "owner"),
        expires: time(t, "expires_at"),
    });
    ok(&PeoplePage {
        nav,
        users,
        tokens,
        enrolment,
    })
}

/// `GET /console/people` (admin): accounts, roles, scopes and tokens.
pub async fn people(State(state): State<AppState>, caller: Result<Caller, ApiError>) -> Page {
    let (caller, nav) = person(caller)?;
    people_page(state, caller, nav, None).await
}

/// The new-person form.
#[derive(Deserialize)]
pub struct PersonForm {
    name: String,
    #[serde(default)]
    roles: String,
}

/// `POST /console/people` (admin): a new person and their one-time enrolment code.
pub async fn add_person(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    Form(form): Form<PersonForm>,
) -> Page {
    let (caller, nav) = person(caller)?;
    let roles: Vec<&str> = form
        .roles
        .split([',', ' '])
        .filter(|r| !r.is_empty())
        .collect();
    let req = body(json!({ "name": form.name.trim(), "roles": roles }))?;
    let answer = accounts::create_user(State(state.clone()), caller.clone(), ApiJson(req))
        .await
        .map_err(error_page)?;
    let bytes = answer_bytes(answer, 1 << 16).await?;
    let code: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let enrolment = Some((text(&code, "name"), text(&code, "enrolment_code")));
    people_page(state, caller, nav, enrolment).await
}
