//! Encrypted payloads (manifests/FORMAT.md §9) on the server: devices' X25519 encryption keys,
//! the key records (`SGL-WKEY`) of encrypted releases, and their hand-out to devices.
//!
//! The server holds ciphertext, public keys and key records only: no private key and no
//! content key ever reach it, so it cannot decrypt what it stores and serves.
//!
//! - A device's encryption key is enrolled with its identity key (`encryption_key` of
//!   `POST /api/v1/devices`) or set and cleared later by an administrator or operator
//!   (`PUT /api/v1/devices/{id}/encryption-key`, audited as `device.encryption_key`).
//! - `POST /api/v1/releases/{id}/key-records` (release role; the body is one or more 138-byte
//!   records back to back, `application/octet-stream`) stores the records of an encrypted
//!   release, audited as `release.key_records`. Each record must decode strictly, name the
//!   release's manifest digest and the recipient id of an enrolled device; otherwise the whole
//!   upload is refused (422) and nothing is stored. Records for devices not yet enrolled are
//!   refused rather than kept: such a record is almost always a wrong recipients file, and a
//!   device enrolled later gets its record with `sigil encrypt add-recipient` (which needs its
//!   public key, hence its enrolment, anyway).
//! - A device's check-in offer of an encrypted release carries its record (`key_record`,
//!   hex); a device without one is not offered the release (the answer says why in
//!   `withheld`), and `GET /api/v1/device/key-records/{release}` (device session) answers the
//!   record on its own.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use sigil_manifests::encryption::{recipient_id, ContentKey, KeyRecord, KEY_RECORD_LEN};

use super::{AppState, Caller};
use crate::error::ApiError;
use crate::store::{now_secs, AuditAction, AuditEvent, Device, EncryptionKey, Role};

/// At most this many records in one upload (138 bytes each: 1.4 MB).
pub const MAX_RECORDS_PER_UPLOAD: usize = 10_000;

/// A device's X25519 encryption public key from its hex form, checked: 32 bytes, and not a
/// small-order point (no secret key belongs to one, and every record wrapped for it would be
/// refused by the device as `WeakKeyRecord`). The check is the one the signer applies when it
/// wraps a content key: a wrap for the key must succeed.
pub fn parse_encryption_key(value: &str) -> Result<EncryptionKey, ApiError> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(value, &mut key).map_err(|_| {
        ApiError::BadRequest(
            "encryption_key must be an X25519 public key: 32 bytes as 64 hex digits".to_owned(),
        )
    })?;
    ContentKey::from_bytes([0x5a; 32])
        .wrap(&key, [0x42; 32], [0; 32])
        .map_err(|_| {
            ApiError::BadRequest(
                "encryption_key is a small-order X25519 point: no device key can belong to it"
                    .to_owned(),
            )
        })?;
    Ok(EncryptionKey {
        public_key: hex::encode(key),
        recipient: hex::encode(recipient_id(&key)),
    })
}

/// A device as the API shows it: its record and its encryption key, if enrolled.
#[derive(Debug, Serialize)]
pub struct DeviceView {
    #[serde(flatten)]
    device: Device,
    /// The X25519 encryption key and its recipient id; absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption_key: Option<EncryptionKey>,
}

/// `device` with its encryption key looked up.
pub async fn view(state: &AppState, device: Device) -> Result<DeviceView, ApiError> {
    let id = device.id.clone();
    let encryption_key = state.db.run(move |s| s.encryption_key(&id)).await?;
    Ok(DeviceView {
        device,
        encryption_key,
    })
}

/// Body of `PUT /api/v1/devices/{id}/encryption-key`: the new key (hex), or `null` to clear it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetKeyRequest {
    encryption_key: Option<String>,
}

/// `PUT /api/v1/devices/{id}/encryption-key` (admin or operator, audited).
pub async fn set_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    super::ApiJson(req): super::ApiJson<SetKeyRequest>,
) -> Result<Json<DeviceView>, ApiError> {
    let actor = caller.require(&[Role::Admin, Role::Operator])?.name.clone();
    caller.require_fresh(&state.config)?;
    let device = super::devices::find(&state, id.clone()).await?;
    let device = super::scopes::device_in_scope(&caller, device)?;
    let key = req
        .encryption_key
        .as_deref()
        .map(parse_encryption_key)
        .transpose()?;
    let event = AuditEvent::new(
        &actor,
        AuditAction::DeviceEncryptionKey,
        &id,
        serde_json::json!({
            "public_key": key.as_ref().map(|k| k.public_key.clone()),
            "recipient": key.as_ref().map(|k| k.recipient.clone()),
        }),
    );
    state
        .db
        .run(move |s| s.set_encryption_key(&id, key.as_ref(), now_secs(), Some(&event)))
        .await?;
    Ok(Json(view(&state, device).await?))
}

/// Answer of `POST /api/v1/releases/{id}/key-records`.
#[derive(Debug, Serialize)]
pub struct RecordsStored {
    release: String,
    /// The devices whose records were stored, in upload order.
    devices: Vec<String>,
}

/// `POST /api/v1/releases/{id}/key-records` (release role): the body is one or more SGL-WKEY
/// records back to back.
pub async fn upload_records(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<RecordsStored>), ApiError> {
    let actor = caller.require(&[Role::Release])?.name.clone();
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        != Some("application/octet-stream")
    {
        return Err(ApiError::UnsupportedMediaType(
            "upload key records as `Content-Type: application/octet-stream` (the .wkey files \
             back to back)"
                .to_owned(),
        ));
    }
    if body.is_empty() || !body.len().is_multiple_of(KEY_RECORD_LEN) {
        return Err(ApiError::Unprocessable(format!(
            "the body must be one or more {KEY_RECORD_LEN}-byte SGL-WKEY key records; it has {} bytes",
            body.len()
        )));
    }
    let count = body.len() / KEY_RECORD_LEN;
    if count > MAX_RECORDS_PER_UPLOAD {
        return Err(ApiError::Unprocessable(format!(
            "at most {MAX_RECORDS_PER_UPLOAD} records per upload; send them in parts"
        )));
    }
    let release = super::releases::find(&state, &caller, id.clone()).await?;
    if release.retired {
        return Err(ApiError::Conflict(format!("release {id} is retired")));
    }
    let key = id.clone();
    let digest = state
        .db
        .run(move |s| s.encrypted_release(&key))
        .await?
        .ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "release {id} is not encrypted: it has no key records"
            ))
        })?;
    let mut records = Vec::with_capacity(count);
    for (i, bytes) in body.chunks_exact(KEY_RECORD_LEN).enumerate() {
        let record = KeyRecord::decode(bytes).map_err(|e| {
            ApiError::Unprocessable(format!("key record {i} is not an SGL-WKEY record: {e}"))
        })?;
        if hex::encode(record.release) != digest {
            return Err(ApiError::Unprocessable(format!(
                "key record {i} is for another release (manifest digest {}, this release's is \
                 {digest})",
                hex::encode(record.release)
            )));
        }
        if records
            .iter()
            .any(|(r, _): &(String, Vec<u8>)| *r == hex::encode(record.recipient))
        {
            return Err(ApiError::Unprocessable(format!(
                "key record {i}: recipient {} is given twice",
                hex::encode(record.recipient)
            )));
        }
        records.push((hex::encode(record.recipient), bytes.to_vec()));
    }
    let recipients: Vec<String> = records.iter().map(|(r, _)| r.clone()).collect();
    let devices = state
        .db
        .run(move |s| {
            recipients
                .iter()
                .map(|r| s.recipient_device(r))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    let mut named = Vec::with_capacity(devices.len());
    for (i, d) in devices.into_iter().enumerate() {
        match d {
            Some(d) => named.push(d),
            None => {
                return Err(ApiError::Unprocessable(format!(
                    "key record {i}: recipient {} is no enrolled device's encryption key (enrol \
                     the device with its encryption key first)",
                    records[i].0
                )))
            }
        }
    }
    let event = AuditEvent::new(
        &actor,
        AuditAction::ReleaseKeyRecords,
        &id,
        serde_json::json!({ "devices": named }),
    );
    let key = id.clone();
    state
        .db
        .run(move |s| s.put_key_records(&key, &records, now_secs(), &event))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(RecordsStored {
            release: id,
            devices: named,
        }),
    ))
}

/// The key record of release `release_id` for device `device_id`: `Ok(None)` if the release is
/// not encrypted, `Err(reason)` if it is and the device has no record.
pub async fn record_for(
    state: &AppState,
    release_id: &str,
    device_id: &str,
) -> Result<Option<Result<Vec<u8>, String>>, ApiError> {
    let (r, d) = (release_id.to_owned(), device_id.to_owned());
    state
        .db
        .run(move |s| {
            if s.encrypted_release(&r)?.is_none() {
                return Ok(None);
            }
            Ok(Some(s.key_record(&r, &d)?.ok_or_else(|| {
                format!(
                    "release {r} is encrypted and the server holds no key record for device {d} \
                     (enrol its encryption key and upload its record: sigil encrypt add-recipient)"
                )
            })))
        })
        .await
}

/// `GET /api/v1/device/key-records/{release}` (device session): this device's key record of
/// an encrypted release (`application/octet-stream`, 138 bytes).
pub async fn own_record(
    State(state): State<AppState>,
    caller: Caller,
    Path(release): Path<String>,
) -> Result<([(header::HeaderName, &'static str); 1], Vec<u8>), ApiError> {
    let device = caller.device()?.to_owned();
    match record_for(&state, &release, &device).await? {
        Some(Ok(record)) => Ok(([(header::CONTENT_TYPE, "application/octet-stream")], record)),
        Some(Err(_)) | None => Err(ApiError::NotFound(format!(
            "no key record of release {release:.70} for this device"
        ))),
    }
}
