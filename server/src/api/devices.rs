//! Devices: enrolment and revocation (operator), challenge–response sessions and check-ins
//! (device), reports (operator, auditor).
//!
//! A device proves its identity by signing, with its enrolled ed25519 key (strict verification),
//! the message `"SIGIL-DEVICE-AUTH-V1" || u64le(len(id)) || id || nonce` where `nonce` is the
//! 32-byte single-use challenge (valid 60 s). It receives a session token valid for
//! `session_ttl_secs`; check-ins then cost one token lookup and no signature check.
//!
//! Challenges are stateless ([`crate::challenge`]): issuing one stores nothing and never looks
//! the device up, so a stranger's requests cannot void a device's challenge, any number may be
//! outstanding, and `POST /device/challenge` answers an enrolled id and an unknown one alike
//! (same status, same body shape, same work). `POST /device/session` gives one answer for an
//! unknown id, a revoked device, a wrong signature and a replayed challenge, and checks a
//! signature in each of those cases.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sigil_manifests::keys::check_public_key;
use sigil_manifests::manifest::check_identifier;
use sigil_manifests::Document;
use sigil_manifests::{ProductId, Version};

use super::{new_token, parse_product, ApiJson, AppState, Caller, PageQuery};
use crate::challenge::{ChallengeError, CHALLENGE_TTL_SECS};
use crate::error::ApiError;
use crate::rollout::DeviceStatus;
use crate::store::{
    now_secs, AuditEvent, CheckIn, CheckInState, Device, DeviceFilter, Product, Report, Role,
    TokenGrant,
};

const MAX_GROUPS: usize = 16;
const MAX_LABELS: usize = 32;
const MAX_LABEL_VALUE: usize = 256;
const MAX_DETAIL: usize = 1024;

/// The message a device signs to open a session (defined in `sigil-manifests`, FORMAT.md §8,
/// so the agent that signs it and this server cannot drift apart).
pub use sigil_manifests::device_auth::message as auth_message;

fn identifier(what: &str, value: &str) -> Result<(), ApiError> {
    check_identifier(value).map_err(|_| {
        ApiError::BadRequest(format!(
            "{what} {value:.70?} must be 1 to 64 characters of [A-Za-z0-9._+-]"
        ))
    })
}

fn hex_array<const N: usize>(what: &str, value: &str) -> Result<[u8; N], ApiError> {
    let mut out = [0u8; N];
    hex::decode_to_slice(value, &mut out).map_err(|_| {
        ApiError::BadRequest(format!("{what} must be {N} bytes as {} hex digits", N * 2))
    })?;
    Ok(out)
}

/// Enrolment request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    id: String,
    product: Product,
    public_key: String,
    #[serde(default = "default_channel")]
    channel: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// X25519 encryption public key (hex), for encrypted releases (FORMAT.md §9).
    #[serde(default)]
    encryption_key: Option<String>,
}

fn default_channel() -> String {
    "stable".to_owned()
}

/// `POST /api/v1/devices`.
pub async fn enrol(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<EnrolRequest>,
) -> Result<(StatusCode, Json<super::encryption::DeviceView>), ApiError> {
    let actor = caller.require(&[Role::Operator])?.name.clone();
    identifier("device id", &req.id)?;
    ProductId::new(&req.product.vendor, &req.product.device).map_err(|_| {
        ApiError::BadRequest(
            "product vendor and device must be 1 to 64 characters of [A-Za-z0-9._+-]".to_owned(),
        )
    })?;
    let key: [u8; 32] = hex_array("public_key", &req.public_key)?;
    // FORMAT.md step E1: canonical, on the curve, not of small order, in the prime-order
    // subgroup (the one key check of sigil-manifests).
    check_public_key(&key, Document::DeviceKey)
        .map_err(|e| ApiError::BadRequest(format!("public_key: {e}")))?;
    let encryption_key = req
        .encryption_key
        .as_deref()
        .map(super::encryption::parse_encryption_key)
        .transpose()?;
    identifier("channel", &req.channel)?;
    if req.groups.len() > MAX_GROUPS || req.labels.len() > MAX_LABELS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_GROUPS} groups and {MAX_LABELS} labels"
        )));
    }
    for g in &req.groups {
        identifier("group", g)?;
    }
    for (k, v) in &req.labels {
        identifier("label name", k)?;
        if v.len() > MAX_LABEL_VALUE || v.chars().any(char::is_control) {
            return Err(ApiError::BadRequest(format!(
                "label {k}: values are at most {MAX_LABEL_VALUE} bytes without control characters"
            )));
        }
    }
    let mut groups = req.groups;
    groups.sort();
    groups.dedup();
    let device = Device {
        id: req.id,
        product: req.product,
        public_key: hex::encode(key),
        channel: req.channel,
        groups,
        labels: req.labels,
        revoked: false,
        enrolled_at: now_secs(),
        last_seen: None,
        version: None,
        security_counter: None,
        state: None,
    };
    let event = AuditEvent::new(
        &actor,
        crate::store::AuditAction::DeviceEnrol,
        &device.id,
        serde_json::json!({
            "product": format!("{}/{}", device.product.vendor, device.product.device),
            "public_key": device.public_key,
            "channel": device.channel,
            "groups": device.groups,
            "encryption_key": encryption_key.as_ref().map(|k| k.public_key.clone()),
        }),
    );
    if caller.scope().is_some_and(|s| !s.admits_device(&device)) {
        return Err(ApiError::Forbidden(
            "the device's product, groups or channel are outside this account's scope".to_owned(),
        ));
    }
    let d = device.clone();
    state
        .db
        .run(move |s| {
            // Another device's encryption key is refused before the enrolment is written; the
            // key itself is stored right after it (its audit entry is the enrolment's).
            if let Some(k) = &encryption_key {
                if let Some(other) = s.recipient_device(&k.recipient)? {
                    return Err(crate::store::StoreError::Conflict(format!(
                        "device {other} is already enrolled with that encryption key"
                    )));
                }
            }
            s.enrol_device(&d, &event)?;
            if let Some(k) = &encryption_key {
                s.set_encryption_key(&d.id, Some(k), d.enrolled_at, None)?;
            }
            Ok(())
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(super::encryption::view(&state, device).await?),
    ))
}

/// Query of `GET /api/v1/devices`: a page, and optional conditions that must all hold
/// (the same conditions, without the page, for `GET /api/v1/summary/devices`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesQuery {
    offset: Option<u64>,
    limit: Option<u32>,
    /// `VENDOR/DEVICE`.
    product: Option<String>,
    channel: Option<String>,
    group: Option<String>,
    state: Option<CheckInState>,
    revoked: Option<bool>,
    version: Option<String>,
}

impl DevicesQuery {
    /// The store's filter, cut to the caller's scope.
    fn filter(self, caller: &Caller) -> Result<DeviceFilter, ApiError> {
        Ok(DeviceFilter {
            product: self.product.as_deref().map(parse_product).transpose()?,
            channel: self.channel,
            group: self.group,
            state: self.state,
            revoked: self.revoked,
            version: self.version,
            scope: caller.scope().cloned(),
        })
    }
}

/// `GET /api/v1/devices?offset=&limit=&product=&channel=&group=&state=&revoked=&version=` (by
/// id; default 1000, at most 10000 per page; every condition given must hold).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<DevicesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Device>>, ApiError> {
    caller.require(&[Role::Operator, Role::Auditor])?;
    let q = query?.0;
    let page = PageQuery::new(q.offset, q.limit).page()?;
    let filter = q.filter(&caller)?;
    Ok(Json(state.db.run(move |s| s.devices(&filter, page)).await?))
}

/// Most recent failures in a summary.
const SUMMARY_FAILURES: u32 = 10;

/// The answer of `GET /api/v1/summary/devices`.
#[derive(Debug, Serialize)]
pub struct DevicesSummary {
    /// Devices that pass the conditions (in the caller's scope).
    pub total: u64,
    /// Per last reported state; `null`: never reported.
    pub by_state: Vec<(Option<CheckInState>, u64)>,
    /// Per last reported version; `null`: never reported.
    pub by_version: Vec<(Option<String>, u64)>,
    /// The devices that last reported a failure or a revert, most recently seen first (ten).
    pub recent_failures: Vec<Device>,
}

/// `GET /api/v1/summary/devices?product=&channel=&group=&state=&revoked=&version=`: how many
/// devices pass the conditions, per state and per version, counted by the database over the
/// whole fleet (cut to the caller's scope), and the latest failures.
pub async fn summary(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<DevicesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DevicesSummary>, ApiError> {
    caller.require(&[Role::Operator, Role::Auditor])?;
    let q = query?.0;
    if q.offset.is_some() || q.limit.is_some() {
        return Err(ApiError::BadRequest(
            "a summary covers every device that passes the conditions: no offset or limit"
                .to_owned(),
        ));
    }
    let filter = q.filter(&caller)?;
    let (counts, recent_failures) = state
        .db
        .run(move |s| {
            Ok((
                s.device_counts(&filter)?,
                s.recent_failures(&filter, SUMMARY_FAILURES)?,
            ))
        })
        .await?;
    Ok(Json(DevicesSummary {
        total: counts.total,
        by_state: counts.by_state,
        by_version: counts.by_version,
        recent_failures,
    }))
}

pub(super) async fn find(state: &AppState, id: String) -> Result<Device, ApiError> {
    let key = id.clone();
    state
        .db
        .run(move |s| s.device(&key))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("device {id:.70} not found")))
}

/// `GET /api/v1/devices/{id}`.
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<super::encryption::DeviceView>, ApiError> {
    caller.require(&[Role::Operator, Role::Auditor])?;
    let device = super::scopes::device_in_scope(&caller, find(&state, id).await?)?;
    Ok(Json(super::encryption::view(&state, device).await?))
}

/// `POST /api/v1/devices/{id}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Device>, ApiError> {
    let actor = caller.require(&[Role::Operator])?.name.clone();
    caller.require_fresh(&state.config)?;
    super::scopes::device_in_scope(&caller, find(&state, id.clone()).await?)?;
    let event = AuditEvent::new(
        &actor,
        crate::store::AuditAction::DeviceRevoke,
        &id,
        serde_json::json!({}),
    );
    let key = id.clone();
    state.db.run(move |s| s.revoke_device(&key, &event)).await?;
    Ok(Json(find(&state, id).await?))
}

/// Query of `GET /api/v1/devices/{id}/reports`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsQuery {
    limit: Option<u32>,
}

/// `GET /api/v1/devices/{id}/reports?limit=N`: the last N reports, newest first.
pub async fn reports(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<ReportsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Report>>, ApiError> {
    caller.require(&[Role::Operator, Role::Auditor])?;
    let Query(query) = query?;
    let kept = state.config.limits.reports_kept;
    let limit = query.limit.unwrap_or(kept.min(20));
    if !(1..=kept).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {kept}"
        )));
    }
    let device = super::scopes::device_in_scope(&caller, find(&state, id).await?)?;
    Ok(Json(
        state.db.run(move |s| s.reports(&device.id, limit)).await?,
    ))
}

/// Challenge request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    device_id: String,
}

/// Challenge answer.
#[derive(Debug, Serialize)]
pub struct ChallengeResponse {
    nonce: String,
    expires_in: u64,
}

/// Every refusal of `POST /device/session` that depends on the device (unknown, revoked, wrong
/// signature, challenge already used): one message, so the answer does not say which.
const LOGIN_REFUSED: &str =
    "signature does not verify under the key of an enrolled, active device, or the challenge was already used";

/// A key that signs nothing: the signature of a login for an unknown or revoked device is
/// checked against it, so that such a login costs what a real one costs.
static NO_DEVICE_KEY: std::sync::LazyLock<VerifyingKey> =
    std::sync::LazyLock::new(|| ed25519_dalek::SigningKey::from_bytes(&[0x5a; 32]).verifying_key());

fn login_identifier(id: &str) -> Result<(), ApiError> {
    check_identifier(id).map_err(|_| {
        ApiError::BadRequest("device_id must be 1 to 64 characters of [A-Za-z0-9._+-]".to_owned())
    })
}

/// `POST /api/v1/device/challenge`: a fresh stateless challenge for any well-formed id.
pub async fn challenge(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ChallengeRequest>,
) -> Result<Json<ChallengeResponse>, ApiError> {
    login_identifier(&req.device_id)?;
    let nonce = state.challenges.issue(&req.device_id, now_secs());
    Ok(Json(ChallengeResponse {
        nonce: hex::encode(nonce),
        expires_in: CHALLENGE_TTL_SECS,
    }))
}

/// Session request: the challenge and its signature.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    device_id: String,
    nonce: String,
    signature: String,
}

/// Session answer.
#[derive(Debug, Serialize)]
pub struct SessionResponse {
    token: String,
    expires_in: u64,
}

/// `POST /api/v1/device/session`.
pub async fn session(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<SessionRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    let nonce: [u8; 32] = hex_array("nonce", &req.nonce)?;
    let signature: [u8; 64] = hex_array("signature", &req.signature)?;
    login_identifier(&req.device_id)?;
    let now = now_secs();
    // Stateless and independent of enrolment: forged, foreign or expired challenges.
    state
        .challenges
        .check(&req.device_id, &nonce, now)
        .map_err(|_| {
            ApiError::Unauthorized(
                "the challenge is not valid for this device or has expired; request a new one",
            )
        })?;
    let id = req.device_id.clone();
    let device = state
        .db
        .run(move |s| s.device(&id))
        .await?
        .filter(|d| !d.revoked);
    let enrolled = match &device {
        Some(d) => {
            let key: [u8; 32] = hex_array("stored public key", &d.public_key).map_err(|_| {
                ApiError::Internal(anyhow::anyhow!("device {} has a corrupt key", d.id))
            })?;
            Some(
                VerifyingKey::from_bytes(&key)
                    .map_err(|e| ApiError::Internal(anyhow::anyhow!("device {} key: {e}", d.id)))?,
            )
        }
        None => None,
    };
    let verifies = enrolled
        .as_ref()
        .unwrap_or(&NO_DEVICE_KEY)
        .verify_strict(
            &auth_message(&req.device_id, &nonce),
            &Signature::from_bytes(&signature),
        )
        .is_ok();
    let device = match device {
        Some(d) if verifies && enrolled.is_some() => d,
        _ => return Err(ApiError::Unauthorized(LOGIN_REFUSED)),
    };
    // Only now, with a valid signature, is the challenge recorded as used.
    state.challenges.consume(&nonce, now).map_err(|e| match e {
        ChallengeError::Busy => ApiError::Unavailable(e.to_string()),
        ChallengeError::Invalid | ChallengeError::Used => ApiError::Unauthorized(LOGIN_REFUSED),
    })?;
    let ttl = state.config.session_ttl_secs;
    let (token, hash) = new_token();
    let name = format!("device:{}", device.id);
    state
        .db
        .run(move |s| {
            let grant = TokenGrant {
                hash: &hash,
                name: &name,
                role: Role::Device,
                device_id: Some(&device.id),
                expires_at: Some(now.saturating_add(ttl)),
                owner: None,
            };
            s.create_token(&grant, now, None)
        })
        .await?;
    Ok(Json(SessionResponse {
        token,
        expires_in: ttl,
    }))
}

/// Check-in report.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckInRequest {
    version: String,
    security_counter: u32,
    state: String,
    #[serde(default)]
    deployment: Option<i64>,
    #[serde(default)]
    detail: Option<String>,
    /// The trust root version the device holds (root rotation): an older one is answered with
    /// the root chain.
    #[serde(default)]
    root_version: Option<u32>,
}

/// The update assigned to a device.
#[derive(Debug, Serialize)]
pub struct UpdateOffer {
    deployment: i64,
    release: String,
    product: Product,
    component: String,
    version: String,
    security_counter: u32,
    payload_size: u64,
    payload_digest: String,
    size: u64,
    download_url: String,
    status: DeviceStatus,
    /// For an encrypted release: this device's key record (SGL-WKEY, hex), which the agent
    /// stages beside the bundle for the bootloader (FORMAT.md §9).
    #[serde(skip_serializing_if = "Option::is_none")]
    key_record: Option<String>,
}

/// Check-in answer: `update` is `null` when there is nothing to do; `root_chain` (hex of the
/// `SGL-RCHN` document) is present when the device reported an older root version than the
/// newest the server holds.
#[derive(Debug, Serialize)]
pub struct CheckInResponse {
    update: Option<UpdateOffer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    root_chain: Option<String>,
    /// Why an assigned release is not offered (an encrypted release without this device's key
    /// record).
    #[serde(skip_serializing_if = "Option::is_none")]
    withheld: Option<String>,
}

/// `POST /api/v1/device/checkin`.
pub async fn checkin(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CheckInRequest>,
) -> Result<Json<CheckInResponse>, ApiError> {
    let device_id = caller.device()?.to_owned();
    Version::parse(&req.version).map_err(|_| {
        ApiError::BadRequest("version must be a semantic version like 1.2.3".to_owned())
    })?;
    let Some(report_state) = CheckInState::parse(&req.state) else {
        let names: Vec<&str> = CheckInState::ALL.map(CheckInState::as_str).to_vec();
        return Err(ApiError::BadRequest(format!(
            "state must be one of {}",
            names.join(", ")
        )));
    };
    let status = crate::store::rules::reported_status(report_state);
    if req.detail.as_ref().is_some_and(|d| d.len() > MAX_DETAIL) {
        return Err(ApiError::BadRequest(format!(
            "detail is at most {MAX_DETAIL} bytes"
        )));
    }
    let report = CheckIn {
        device_id: device_id.clone(),
        version: req.version,
        security_counter: req.security_counter,
        state: report_state,
        deployment_id: req.deployment,
        detail: req.detail,
    };
    let assignment = state.check_ins.submit(report).await?;
    state.metrics.check_in(status);
    let mut withheld = None;
    let mut key_record = None;
    let assignment = match assignment {
        Some(a) if !a.encrypted => Some(a),
        Some(a) => match super::encryption::record_for(&state, &a.release.id, &device_id).await? {
            None => Some(a),
            Some(Ok(record)) => {
                key_record = Some(hex::encode(record));
                Some(a)
            }
            Some(Err(reason)) => {
                tracing::warn!(device = %device_id, release = %a.release.id, "{reason}");
                withheld = Some(reason);
                None
            }
        },
        None => None,
    };
    let update = assignment.map(|a| {
        let r = a.release;
        let download_url = match &state.config.mirror_base_url {
            Some(base) => format!("{base}/{}", r.id),
            None => format!("/api/v1/bundles/{}", r.id),
        };
        UpdateOffer {
            deployment: a.deployment_id,
            product: Product {
                vendor: r.vendor,
                device: r.device,
            },
            component: r.component,
            version: r.version,
            security_counter: r.security_counter,
            payload_size: r.payload_size,
            payload_digest: r.payload_digest,
            size: r.size,
            download_url,
            status: a.status,
            release: r.id,
            key_record,
        }
    });
    let root_chain = match (req.root_version, state.roots.as_deref()) {
        (Some(held), Some(roots)) => {
            let chain = roots.current();
            chain
                .bytes
                .filter(|_| held < chain.newest.root_version)
                .map(|b| hex::encode(b.as_slice()))
        }
        _ => None,
    };
    Ok(Json(CheckInResponse {
        update,
        root_chain,
        withheld,
    }))
}
