//! Key records of encrypted releases (manifests/FORMAT.md §9), agent side.
//!
//! The agent never holds the device's X25519 private key: it lives in the bootloader's
//! protected storage, and only the bootloader opens a record (steps D3–D4). The agent checks
//! what it can with the device's *public* key before it asks for an install: the record the
//! server handed out decodes strictly (step D1) and names this device's recipient id and the
//! staged release's manifest digest (step D2). It then hands the record to a
//! [`KeyRecordPlacement`], the one place that decides where the bootloader finds it.
//!
//! Placement today ([`BesideBundle`]): the record is written atomically as
//! `<state dir>/staged.wkey`, beside the staged bundle, and removed when a plain release is
//! staged. Its final home on the device flash follows the bootloader's install request format
//! (being defined on the bootloader side); only [`KeyRecordPlacement::place`] changes then.

use std::path::{Path, PathBuf};

use sigil_manifests::encryption::{recipient_id, KeyRecord, KEY_RECORD_LEN};

use crate::state::{write_atomic, StateError};

/// The record's file in the state directory ([`BesideBundle`]).
pub const STAGED_RECORD_FILE: &str = "staged.wkey";

/// Why a key record cannot be staged.
#[derive(Debug, thiserror::Error)]
pub enum KeyRecordError {
    /// The release is encrypted and the configuration names no encryption key.
    #[error("the release is encrypted and this device has no encryption key configured (device.encryption_key)")]
    NoDeviceKey,
    /// The release is encrypted and the server sent no record.
    #[error("the release is encrypted and the server sent no key record for this device")]
    Missing,
    /// The record is not hex.
    #[error("the key record is not hex")]
    NotHex,
    /// Step D1 failed.
    #[error("the key record is not an SGL-WKEY record: {0}")]
    Malformed(sigil_manifests::Error),
    /// Step D2: the record names another device.
    #[error("the key record is for another device (recipient {0})")]
    OtherDevice(String),
    /// Step D2: the record names another release.
    #[error("the key record is for another release (manifest digest {0})")]
    OtherRelease(String),
    /// The record could not be placed.
    #[error("cannot stage the key record")]
    Place(#[source] StateError),
}

/// Steps D1–D2 of `record` (hex, as the check-in offer carries it) for the device with X25519
/// public key `device_public` and the release whose verified manifest digest is `release`.
pub fn check(
    record: Option<&str>,
    device_public: Option<&[u8; 32]>,
    release: &[u8; 32],
) -> Result<[u8; KEY_RECORD_LEN], KeyRecordError> {
    let device_public = device_public.ok_or(KeyRecordError::NoDeviceKey)?;
    let record = record.ok_or(KeyRecordError::Missing)?;
    let bytes = hex::decode(record).map_err(|_| KeyRecordError::NotHex)?;
    let decoded = KeyRecord::decode(&bytes).map_err(KeyRecordError::Malformed)?;
    if decoded.recipient != recipient_id(device_public) {
        return Err(KeyRecordError::OtherDevice(hex::encode(decoded.recipient)));
    }
    if decoded.release != *release {
        return Err(KeyRecordError::OtherRelease(hex::encode(decoded.release)));
    }
    Ok(decoded.encode())
}

/// Where the bootloader finds the key record of the staged release.
pub trait KeyRecordPlacement {
    /// Places `record` (checked by [`check`]) for the release with manifest digest `release`.
    fn place(
        &mut self,
        release: &[u8; 32],
        record: &[u8; KEY_RECORD_LEN],
    ) -> Result<(), StateError>;
    /// Removes any placed record (a plain release is staged).
    fn clear(&mut self) -> Result<(), StateError>;
}

/// [`KeyRecordPlacement`] as a file beside the staged bundle in the state directory.
#[derive(Debug, Clone)]
pub struct BesideBundle {
    path: PathBuf,
}

impl BesideBundle {
    /// The placement in state directory `dir`.
    pub fn new(dir: &Path) -> Self {
        BesideBundle {
            path: dir.join(STAGED_RECORD_FILE),
        }
    }

    /// The record's file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl KeyRecordPlacement for BesideBundle {
    fn place(
        &mut self,
        _release: &[u8; 32],
        record: &[u8; KEY_RECORD_LEN],
    ) -> Result<(), StateError> {
        // The record names its release itself (checked above); the file holds it as is.
        write_atomic(&self.path, record)
    }

    fn clear(&mut self) -> Result<(), StateError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io {
                op: "remove",
                path: self.path.clone(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sigil_manifests::encryption::{ContentKey, DeviceKey};

    fn setup() -> ([u8; 32], [u8; 32], String) {
        let device = DeviceKey::from_secret([11; 32]).public_key();
        let release = [7u8; 32];
        let record = ContentKey::from_bytes([1; 32])
            .wrap(&device, [2; 32], release)
            .unwrap()
            .encode();
        (device, release, hex::encode(record))
    }

    #[test]
    fn a_record_for_this_device_and_release_is_staged_beside_the_bundle() {
        let (device, release, record) = setup();
        let checked = check(Some(&record), Some(&device), &release).unwrap();
        assert_eq!(hex::encode(checked), record);
        let dir = tempfile::tempdir().unwrap();
        let mut place = BesideBundle::new(dir.path());
        place.place(&release, &checked).unwrap();
        assert_eq!(std::fs::read(place.path()).unwrap(), checked);
        place.clear().unwrap();
        assert!(!place.path().exists());
        place.clear().unwrap();
    }

    #[test]
    fn records_for_another_device_or_release_or_malformed_are_refused() {
        let (device, release, record) = setup();
        let other = DeviceKey::from_secret([12; 32]).public_key();
        assert!(matches!(
            check(Some(&record), Some(&other), &release),
            Err(KeyRecordError::OtherDevice(_))
        ));
        assert!(matches!(
            check(Some(&record), Some(&device), &[8; 32]),
            Err(KeyRecordError::OtherRelease(_))
        ));
        assert!(matches!(
            check(Some(&record[..274]), Some(&device), &release),
            Err(KeyRecordError::Malformed(_))
        ));
        assert!(matches!(
            check(Some(&format!("{record}00")), Some(&device), &release),
            Err(KeyRecordError::Malformed(_))
        ));
        assert!(matches!(
            check(Some("zz"), Some(&device), &release),
            Err(KeyRecordError::NotHex)
        ));
        assert!(matches!(
            check(None, Some(&device), &release),
            Err(KeyRecordError::Missing)
        ));
        assert!(matches!(
            check(Some(&record), None, &release),
            Err(KeyRecordError::NoDeviceKey)
        ));
    }
}
