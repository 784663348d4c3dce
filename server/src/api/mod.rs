//! The HTTP API: state, authentication, the router and its middleware.
//!
//! | endpoint                                   | roles                      |
//! |--------------------------------------------|----------------------------|
//! | `GET /healthz`, `/metrics`, `/openapi.json`| public                     |
//! | `POST/GET /api/v1/tokens`, `DELETE …/{id}` | admin                      |
//! | `POST /api/v1/releases`, `…/{id}/retire`   | release                    |
//! | `GET /api/v1/releases[/{id}]`              | release, operator, auditor |
//! | `POST /api/v1/devices`, `…/{id}/revoke`    | operator                   |
//! | `GET /api/v1/devices[/{id}[/reports]]`     | operator, auditor          |
//! | `GET /api/v1/summary/devices`              | operator, auditor          |
//! | `POST /api/v1/deployments`, `…/{id}/pause|resume|cancel` | operator     |
//! | `GET /api/v1/deployments[/{id}]`, `…/{id}/withheld` | operator, auditor |
//! | `GET /api/v1/audit/export`, `…/head`, `…/checkpoint` | auditor          |
//! | `PUT /api/v1/root-chain`                   | admin                      |
//! | `GET /api/v1/root-chain`                   | admin, release, operator, auditor |
//! | `POST /api/v1/device/challenge`, `…/session` | public (device signature)|
//! | `POST /api/v1/device/checkin`, `GET /api/v1/bundles/{id}` | device (session) |
//! | `GET /mirror/{id}`                         | public when `public_mirror`|
//! | `POST/GET /api/v1/users`, `POST …/{name}/enrolment|disable|enable` | admin  |
//! | `POST /api/v1/enrolment`, `…/confirm`      | public (enrolment code)    |
//! | `POST /api/v1/session`                     | public (passphrase + TOTP) |
//! | `GET/DELETE /api/v1/session`, `POST …/reauth` | console session         |
//! | `POST /api/v1/session/passkey/options`, `POST /api/v1/session/passkey` | public (passphrase, then passkey) |
//! | `POST /api/v1/session/reauth/passkey[/options]`, `GET /api/v1/account/passkeys` | console session |
//! | `POST /api/v1/account/passkeys[/options]`, `DELETE …/passkeys/{id}`, `DELETE /api/v1/account/totp` | console session, fresh |
//! | `POST /api/v1/releases/{id}/approve|refuse` | approver, fresh session, not the uploader |
//! | `GET /api/v1/releases/{id}/approvals`      | release, operator, auditor, approver |
//! | `POST /api/v1/deployments/{id}/approve|refuse` | operator, fresh session, not the creator |
//! | `GET /api/v1/deployments/{id}/approvals`   | operator, auditor          |
//! | `PUT /api/v1/users/{name}/scope`           | admin                      |
//! | `GET /api/v1/approvals` (the queue)        | approver, operator, auditor |
//! | `GET /api/v1/devices/{id}/export`          | operator, auditor (audited) |
//! | `GET /api/v1/records`                      | every role but device      |
//! | `GET/POST /console/…` (the web console)    | console session; each page as its API call |
//!
//! `GET /api/v1/releases[/{id}]` is also open to approvers. A console session (cookie, see
//! [`accounts`]) has every role of its person; device revocation and `PUT /api/v1/root-chain`
//! from a session need a re-authentication within `accounts.reauth_secs`. An account with a
//! scope sees and acts on part of the fleet only, in every answer (see the `scopes` module).

pub mod accounts;
mod approvals;
mod checkin_queue;
mod console;
mod deployments;
mod devices;
mod downloads;
mod encryption;
mod ops;
mod passkeys;
mod records;
mod releases;
mod roots;
mod scopes;

pub use checkin_queue::{CheckInQueue, PrincipalQueue};
pub use devices::auth_message;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand_core::{OsRng, RngCore};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use sigil_manifests::TrustRoot;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::bundles::BundleStore;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::ratelimit::{PrincipalKey, RateLimits};
use crate::store::{now_secs, Principal, Product, Role, Store, StoreResult};

/// The store, called on the blocking thread pool.
#[derive(Clone)]
pub struct Db(Arc<dyn Store>);

impl Db {
    /// Wraps a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Db(store)
    }

    /// Runs `f` against the store on the blocking pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
    {
        let store = Arc::clone(&self.0);
        Ok(tokio::task::spawn_blocking(move || f(&*store)).await??)
    }

    /// The store itself, for code already on a blocking thread.
    fn store(&self) -> &dyn Store {
        &*self.0
    }
}

/// Idle download buffers kept for reuse (256 KiB each, so at most 16 MiB idle).
const DOWNLOAD_BUFFERS_KEPT: usize = 64;

/// Everything handlers share.
pub struct Inner {
    /// Validated configuration.
    pub config: ServerConfig,
    /// The database.
    pub db: Db,
    /// The bundle store.
    pub bundles: BundleStore,
    /// The provisioned trust root and the root chain since: uploads are verified under the
    /// newest root; `None` (no trust root configured) refuses uploads.
    pub roots: Option<Arc<crate::roots::Roots>>,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// The rate limiter's buckets.
    pub limits: RateLimits,
    /// Device check-ins, committed in groups.
    pub check_ins: Arc<CheckInQueue>,
    /// Token lookups, sent to the store in groups (never cached).
    pub principals: Arc<PrincipalQueue>,
    /// Read buffers shared by bundle downloads.
    pub download_buffers: Arc<downloads::BufferPool>,
    /// Device-login challenges (stateless) and their replay set.
    pub challenges: crate::challenge::Challenges,
}

/// Shared application state.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds the state.
    pub fn new(
        config: ServerConfig,
        store: Arc<dyn Store>,
        bundles: BundleStore,
        trust_root: Option<TrustRoot>,
    ) -> Self {
        let limits = RateLimits::new(&config.limits);
        // `serve` refuses to start on a stored chain that does not verify; here (tests, an
        // embedding) such a chain is logged and the provisioned root used.
        let roots = trust_root.map(|root| {
            let stored = store.root_chain().unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read the stored root chain");
                None
            });
            let roots = crate::roots::Roots::new(root.clone(), stored).unwrap_or_else(|e| {
                tracing::error!(error = %e, "the stored root chain is not used");
                crate::roots::Roots::without_chain(root)
            });
            Arc::new(roots)
        });
        let db = Db::new(store);
        let check_ins = CheckInQueue::new(db.clone(), config.limits.reports_kept);
        let principals = PrincipalQueue::new(db.clone());
        AppState(Arc::new(Inner {
            config,
            db,
            check_ins,
            principals,
            bundles,
            roots,
            metrics: Metrics::default(),
            limits,
            download_buffers: downloads::BufferPool::new(DOWNLOAD_BUFFERS_KEPT),
            challenges: crate::challenge::Challenges::new(),
        }))
    }
}

/// A new random API or session token and the hash under which it is stored.
pub fn new_token() -> (String, [u8; 32]) {
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    let token = format!("sgl_{}", hex::encode(secret));
    let hash = token_hash(&token);
    (token, hash)
}

/// The stored hash of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The authenticated caller: an API token (one role), a device session, or a person's
/// console session (each of the person's roles).
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who: the audit actor is `principal.name` (a token's owner, or the person).
    pub principal: Principal,
    /// The roles the request may use.
    pub roles: Vec<Role>,
    /// For a console session: its id hash and last re-authentication.
    pub session: Option<accounts::SessionAuth>,
    /// The account's scope (see the `scopes` module); `None`: the whole fleet.
    pub scope: Option<crate::store::accounts::Scope>,
}

impl Caller {
    /// Succeeds if the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<&Principal, ApiError> {
        if self.roles.iter().any(|r| roles.contains(r)) {
            Ok(&self.principal)
        } else {
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(ApiError::Forbidden(format!(
                "this endpoint requires the {} role",
                names.join(" or ")
            )))
        }
    }

    /// For a console session: succeeds only if the person re-authenticated within
    /// `accounts.reauth_secs` (API tokens are for automation and need none).
    pub fn require_fresh(&self, config: &ServerConfig) -> Result<(), ApiError> {
        match &self.session {
            Some(s) if now_secs() >= s.reauth_at.saturating_add(config.accounts.reauth_secs) => {
                Err(ApiError::Forbidden(format!(
                    "this action needs a fresh re-authentication (POST /api/v1/session/reauth \
                     within {} s)",
                    config.accounts.reauth_secs
                )))
            }
            _ => Ok(()),
        }
    }

    /// The device of a device session (device endpoints only).
    pub fn device(&self) -> Result<&str, ApiError> {
        self.require(&[Role::Device])?;
        self.principal
            .device_id
            .as_deref()
            .ok_or_else(|| ApiError::Forbidden("this endpoint is for device sessions".to_owned()))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(AUTHORIZATION) else {
            return match accounts::session_cookie(&parts.headers) {
                Some(id) => session_caller(parts, state, id).await,
                None => Err(ApiError::Unauthorized(
                    "missing `Authorization: Bearer TOKEN` header (or a console session cookie)",
                )),
            };
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 128)
            .ok_or(ApiError::Unauthorized(
                "malformed Authorization header; expected `Bearer TOKEN`",
            ))?;
        let hash = token_hash(token);
        let client = client_address(&parts.extensions);
        let limits = &state.limits;
        if !limits.may_authenticate(client, &hash, Instant::now()) {
            state.metrics.rate_limited();
            return Err(ApiError::TooManyRequests);
        }
        let Some(principal) = state.principals.submit(hash).await? else {
            limits.auth_failures.allow(&client, Instant::now());
            return Err(ApiError::Unauthorized("unknown, expired or revoked token"));
        };
        limits.remember_good(hash);
        let key = match &principal.device_id {
            Some(device) => PrincipalKey::Device(device.clone()),
            None => PrincipalKey::Token(hash),
        };
        if !limits.principal.allow(&key, Instant::now()) {
            state.metrics.rate_limited();
            return Err(ApiError::TooManyRequests);
        }
        // An API token acts within its owner's scope.
        let scope = match &principal.device_id {
            Some(_) => None,
            None => {
                let owner = principal.name.clone();
                state
                    .db
                    .run(move |s| s.account(&owner))
                    .await?
                    .and_then(|a| a.user.scope)
            }
        };
        Ok(Caller {
            roles: vec![principal.role],
            principal,
            session: None,
            scope,
        })
    }
}

/// A session-cookie caller, charged to its session's rate-limit bucket.
async fn session_caller(parts: &Parts, state: &AppState, id: String) -> Result<Caller, ApiError> {
    let client = client_address(&parts.extensions);
    let hash = crate::accounts::secret_hash(&id);
    if !state.limits.may_authenticate(client, &hash, Instant::now()) {
        state.metrics.rate_limited();
        return Err(ApiError::TooManyRequests);
    }
    let caller = match accounts::session_caller(parts, state, id).await {
        Err(ApiError::Unauthorized(m)) => {
            state.limits.auth_failures.allow(&client, Instant::now());
            return Err(ApiError::Unauthorized(m));
        }
        other => other?,
    };
    state.limits.remember_good(hash);
    if !state
        .limits
        .principal
        .allow(&PrincipalKey::Token(hash), Instant::now())
    {
        state.metrics.rate_limited();
        return Err(ApiError::TooManyRequests);
    }
    Ok(caller)
}

/// `?offset=&limit=` of list endpoints.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    offset: Option<u64>,
    limit: Option<u32>,
}

/// A `product=VENDOR/DEVICE` query parameter of the list endpoints.
pub fn parse_product(text: &str) -> Result<Product, ApiError> {
    let (vendor, device) = text
        .split_once('/')
        .ok_or_else(|| ApiError::BadRequest("product must be VENDOR/DEVICE".to_owned()))?;
    sigil_manifests::ProductId::new(vendor, device)
        .map_err(|e| ApiError::BadRequest(format!("product {text:.140}: {e}")))?;
    Ok(Product {
        vendor: vendor.to_owned(),
        device: device.to_owned(),
    })
}

/// Default and largest page.
const PAGE_DEFAULT: u32 = 1000;
const PAGE_MAX: u32 = 10_000;

impl PageQuery {
    /// A page query from its two parameters (for queries with more parameters).
    pub fn new(offset: Option<u64>, limit: Option<u32>) -> Self {
        PageQuery { offset, limit }
    }

    /// The page, or why the query is out of range.
    pub fn page(self) -> Result<crate::store::Page, ApiError> {
        let limit = self.limit.unwrap_or(PAGE_DEFAULT);
        if !(1..=PAGE_MAX).contains(&limit) {
            return Err(ApiError::BadRequest(format!(
                "limit must be between 1 and {PAGE_MAX}"
            )));
        }
        let offset = self.offset.unwrap_or(0);
        if i64::try_from(offset).is_err() {
            return Err(ApiError::BadRequest("offset is too large".to_owned()));
        }
        Ok(crate::store::Page { offset, limit })
    }
}

/// `Json` whose rejections are [`ApiError`]s.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    /// The whole body must arrive within `limits.body_timeout_secs` (it is at most
    /// `limits.json_max_bytes`), so a trickle of bytes cannot hold the request open.
    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let secs = state.config.limits.body_timeout_secs;
        let read = Json::<T>::from_request(req, state);
        match tokio::time::timeout(Duration::from_secs(secs), read).await {
            Ok(json) => Ok(ApiJson(json?.0)),
            Err(_) => Err(ApiError::RequestTimeout(format!(
                "the JSON body did not arrive within {secs} s"
            ))),
        }
    }
}

/// The check-in endpoint (its latency is also recorded on its own).
const CHECK_IN_PATH: &str = "/api/v1/device/checkin";

/// The client's IP address (unspecified when not served over a socket, as in `oneshot` tests).
fn client_address(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// The endpoints that never authenticate a token, so that a request to them is charged to the
/// unauthenticated bucket whatever headers it carries. `/healthz` has its own bucket.
fn is_public(state: &AppState, matched: Option<&str>) -> bool {
    match matched {
        // No route: the 404 fallback.
        None => true,
        Some(
            "/metrics" | "/openapi.json" | "/api/v1/device/challenge" | "/api/v1/device/session",
        ) => true,
        Some("/mirror/{id}") => state.config.public_mirror,
        Some(_) => false,
    }
}

/// The route whose body is a bundle, not JSON (`POST`; its `GET` has no body): the only one
/// without the JSON size limit.
const UPLOAD_PATH: &str = "/api/v1/releases";

/// A declared `Content-Length` above the JSON limit, refused before the body is read (so
/// `Expect: 100-continue` gets no `100 Continue`).
fn oversized(state: &AppState, matched: Option<&str>, request: &Request) -> Option<ApiError> {
    if matched == Some(UPLOAD_PATH) {
        return None;
    }
    let limit = state.config.limits.json_max_bytes;
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())?;
    (declared > limit as u64).then(|| {
        ApiError::PayloadTooLarge(format!(
            "the request body is larger than the limit of {limit} bytes"
        ))
    })
}

/// The router's one middleware, around every route and the fallback: rate limiting (see
/// [`crate::ratelimit`]), the declared-size check, JSON bodies for every error
/// ([`crate::error::json_error`]), request metrics and the request log. One layer rather than
/// one per job: each `from_fn` layer costs every request a clone of the service below and a
/// boxed future.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let client = client_address(request.extensions());
    let matched = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let now = Instant::now();
    let allowed = if matched.as_deref() == Some("/healthz") {
        state.limits.health.allow(&client, now)
    } else if !request.headers().contains_key(AUTHORIZATION)
        || is_public(&state, matched.as_deref())
    {
        state.limits.unauthenticated.allow(&client, now)
    } else {
        // Charged to its token's or device's bucket once authenticated (`Caller`).
        true
    };
    if !allowed {
        state.metrics.rate_limited();
        return ApiError::TooManyRequests.into_response();
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = match oversized(&state, matched.as_deref(), &request) {
        Some(refused) => refused.into_response(),
        None => crate::error::json_error(next.run(request).await).await,
    };
    let status = response.status();
    let elapsed = started.elapsed();
    state.metrics.request(status.as_u16());
    state.metrics.latency(
        elapsed,
        path == CHECK_IN_PATH && method == axum::http::Method::POST,
    );
    tracing::info!(
        %method,
        path,
        status = status.as_u16(),
        micros = elapsed.as_micros() as u64,
        %client,
        "request"
    );
    response
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("method not allowed on this endpoint".to_owned())
}

/// The application router.
pub fn router(state: AppState) -> Router {
    let json_limit = state.config.limits.json_max_bytes;
    let body_timeout = Duration::from_secs(state.config.limits.body_timeout_secs);
    let upload = Router::new()
        .route(UPLOAD_PATH, post(releases::upload).get(releases::list))
        .layer(DefaultBodyLimit::disable());
    let root_chain = Router::new()
        .route(
            roots::ROOT_CHAIN_PATH,
            axum::routing::put(roots::put).get(roots::get),
        )
        .layer(DefaultBodyLimit::max(
            sigil_manifests::rotation::MAX_CHAIN_LEN,
        ));
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route(
            "/api/v1/tokens",
            post(ops::create_token).get(ops::list_tokens),
        )
        .route(
            "/api/v1/tokens/{id}",
            axum::routing::delete(ops::revoke_token),
        )
        .route("/api/v1/releases/{id}", get(releases::show))
        .route("/api/v1/releases/{id}/retire", post(releases::retire))
        .route(
            "/api/v1/releases/{id}/approvals",
            get(approvals::release_approvals),
        )
        .route(
            "/api/v1/releases/{id}/{decision}",
            post(approvals::decide_release),
        )
        .route(
            "/api/v1/users",
            post(accounts::create_user).get(accounts::list_users),
        )
        .route("/api/v1/users/{name}/{action}", post(accounts::act_on_user))
        .route(
            "/api/v1/users/{name}/scope",
            axum::routing::put(accounts::set_scope),
        )
        .route("/api/v1/enrolment", post(accounts::enrol))
        .route("/api/v1/enrolment/confirm", post(accounts::confirm))
        .route(
            "/api/v1/session",
            post(accounts::login)
                .get(accounts::show)
                .delete(accounts::logout),
        )
        .route("/api/v1/session/reauth", post(accounts::reauth))
        .route(
            "/api/v1/session/passkey/options",
            post(passkeys::login_options),
        )
        .route("/api/v1/session/passkey", post(passkeys::login))
        .route(
            "/api/v1/session/reauth/passkey/options",
            post(passkeys::reauth_options),
        )
        .route("/api/v1/session/reauth/passkey", post(passkeys::reauth))
        .route(
            "/api/v1/account/passkeys",
            post(passkeys::register).get(passkeys::list),
        )
        .route(
            "/api/v1/account/passkeys/options",
            post(passkeys::register_options),
        )
        .route(
            "/api/v1/account/passkeys/{id}",
            axum::routing::delete(passkeys::remove),
        )
        .route(
            "/api/v1/account/totp",
            axum::routing::delete(passkeys::remove_totp),
        )
        .route("/api/v1/approvals", get(approvals::queue))
        .route("/api/v1/devices", post(devices::enrol).get(devices::list))
        .route("/api/v1/summary/devices", get(devices::summary))
        .route("/api/v1/devices/{id}", get(devices::show))
        .route("/api/v1/devices/{id}/revoke", post(devices::revoke))
        .route("/api/v1/devices/{id}/reports", get(devices::reports))
        .route("/api/v1/devices/{id}/export", get(records::export))
        .route("/api/v1/records", get(records::statement))
        .route(
            "/api/v1/devices/{id}/encryption-key",
            axum::routing::put(encryption::set_key),
        )
        .route(
            "/api/v1/releases/{id}/key-records",
            post(encryption::upload_records),
        )
        .route(
            "/api/v1/device/key-records/{release}",
            get(encryption::own_record),
        )
        .route("/api/v1/device/challenge", post(devices::challenge))
        .route("/api/v1/device/session", post(devices::session))
        .route(CHECK_IN_PATH, post(devices::checkin))
        .route("/api/v1/bundles/{id}", get(downloads::bundle))
        .route("/mirror/{id}", get(downloads::mirror))
        .route(
            "/api/v1/deployments",
            post(deployments::create).get(deployments::list),
        )
        .route("/api/v1/deployments/{id}", get(deployments::show))
        .route(
            "/api/v1/deployments/{id}/withheld",
            get(deployments::withheld),
        )
        .route("/api/v1/deployments/{id}/{action}", post(deployments::act))
        .route(
            "/api/v1/deployments/{id}/approvals",
            get(approvals::deployment_approvals),
        )
        .route(
            "/api/v1/deployments/{id}/approve",
            post(approvals::decide_deployment_approve),
        )
        .route(
            "/api/v1/deployments/{id}/refuse",
            post(approvals::decide_deployment_refuse),
        )
        .route("/api/v1/audit/export", get(ops::audit_export))
        .route("/api/v1/audit/head", get(ops::audit_head))
        .route("/api/v1/audit/checkpoint", get(ops::audit_checkpoint))
        .layer(DefaultBodyLimit::max(json_limit))
        .merge(upload)
        .merge(root_chain)
        .merge(console::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}
