//! Key records of encrypted releases (manifests/FORMAT.md §9), agent side.
//!
//! The agent never holds the device's X25519 private key: it lives in the bootloader's
//! protected storage, and only the bootloader opens a record (steps D3–D4). The agent checks
//! what it can with the device's *public* key before it asks for an install: the record the
//! server handed out decodes strictly (step D1) and names this device's recipient id and the
//! staged release's manifest digest (step D2). It then hands the record to a
//! [`KeyRecordPlacement`], the one place that decides where the bootloader finds it.
//!
//! Placement ([`KeyRecordPlace`], configuration key `flash.key_record`):
//!
//! | placement | where | used by |
//! |---|---|---|
//! | [`InStagingSlot`] (default, `"staging-slot"`) | the staging slot, at bundle offset [`Layout::key_record_offset`] (`align_up(bundle_len, 256)`), in a 256-byte unit of its own whose other bytes stay erased | the Sigil bootloader (`bootloader/src/crypt.rs`), which reads it there on every (resumed) boot of the install |
//! | [`BesideBundle`] (`"state-dir"`) | the file `<state dir>/staged.wkey`, written atomically | a boot stage that reads the record from the device's file system |
//!
//! # Power cuts
//!
//! The agent writes, in this order: the bundle (synced), the key record (synced), and only
//! then the install request. A cut before the request leaves no request, so the bootloader
//! never starts an install of a bundle whose record is missing or torn; the next cycle stages
//! again. A retried stage rewrites every sector from its resume point, which always includes
//! the bundle's last sector, so a record sharing that sector is erased with it and written
//! again. A record alone in the sector after the bundle (a bundle that ends within 256 bytes of
//! a sector boundary) is left as it is if it already is this record, and otherwise its sector
//! is erased before the write: a torn record, or bytes of an older, longer bundle, never
//! survive into an install.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sigil_bootloader::{Layout, KEY_RECORD_UNIT};
use sigil_manifests::encryption::{recipient_id, KeyRecord, KEY_RECORD_LEN};

use crate::slots::{SlotError, Slots};
use crate::state::{write_atomic, StateError};

/// The record's file in the state directory ([`BesideBundle`]).
pub const STAGED_RECORD_FILE: &str = "staged.wkey";

/// Where the key record of an encrypted release is staged (`flash.key_record`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyRecordPlace {
    /// In the staging slot beside the bundle ([`InStagingSlot`]).
    #[default]
    StagingSlot,
    /// As a file in the state directory ([`BesideBundle`]).
    StateDir,
}

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
    /// The record file could not be written or removed.
    #[error("cannot stage the key record")]
    Place(#[source] StateError),
    /// The staging slot has no room for the record's unit after the bundle.
    #[error("the staging slot has no room for the key record after a bundle of {bundle_len} bytes (it needs a {KEY_RECORD_UNIT}-byte unit at the next 256-byte boundary)")]
    NoRoom {
        /// The staged bundle's length.
        bundle_len: u64,
    },
    /// The record's unit shares a sector with the bundle and holds other bytes.
    #[error("the key record's unit at bundle offset {offset} is not erased (it shares a sector with the bundle): the stage starts over")]
    Occupied {
        /// The unit's offset from the bundle start.
        offset: u32,
    },
    /// The staging slot could not be read, erased or programmed.
    #[error("cannot write the key record into the staging slot")]
    Slot(#[source] SlotError),
}

impl From<SlotError> for KeyRecordError {
    fn from(e: SlotError) -> Self {
        KeyRecordError::Slot(e)
    }
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
    /// Places `record` (checked by [`check`]) for the staged release, whose bundle is
    /// `bundle_len` bytes long, and makes it durable.
    fn place(
        &mut self,
        bundle_len: u64,
        record: &[u8; KEY_RECORD_LEN],
    ) -> Result<(), KeyRecordError>;
    /// Removes any placed record (a plain release is staged).
    fn clear(&mut self) -> Result<(), KeyRecordError>;
}

/// The placement `place` configures, over the device's `slots` and state directory `dir`.
pub fn placement<'a>(
    place: KeyRecordPlace,
    slots: &'a mut dyn Slots,
    dir: &Path,
) -> Box<dyn KeyRecordPlacement + 'a> {
    match place {
        KeyRecordPlace::StagingSlot => Box::new(InStagingSlot { slots }),
        KeyRecordPlace::StateDir => Box::new(BesideBundle::new(dir)),
    }
}

/// [`KeyRecordPlacement`] in the staging slot, where the Sigil bootloader reads it (the
/// module documentation gives the rules).
pub struct InStagingSlot<'s> {
    slots: &'s mut dyn Slots,
}

impl<'s> InStagingSlot<'s> {
    /// The placement into `slots`' staging slot.
    pub fn new(slots: &'s mut dyn Slots) -> Self {
        InStagingSlot { slots }
    }
}

/// The record's unit as the flash holds it: the record, then erased bytes.
fn record_unit(layout: &Layout, record: &[u8; KEY_RECORD_LEN]) -> [u8; KEY_RECORD_UNIT as usize] {
    let mut unit = [layout.geometry().erased; KEY_RECORD_UNIT as usize];
    for (u, r) in unit.iter_mut().zip(record) {
        *u = *r;
    }
    unit
}

impl KeyRecordPlacement for InStagingSlot<'_> {
    fn place(
        &mut self,
        bundle_len: u64,
        record: &[u8; KEY_RECORD_LEN],
    ) -> Result<(), KeyRecordError> {
        let layout = self.slots.layout();
        let at = layout
            .key_record_offset(bundle_len)
            .ok_or(KeyRecordError::NoRoom { bundle_len })?;
        let want = record_unit(&layout, record);
        let mut unit = [0u8; KEY_RECORD_UNIT as usize];
        self.slots.read_staged(at, &mut unit)?;
        if unit == want {
            // A retried stage: the record is already there, whole.
            return Ok(());
        }
        let erased = layout.geometry().erased;
        let sector = u64::from(layout.sector_size());
        let bundle_sectors_end = bundle_len.div_ceil(sector).saturating_mul(sector);
        if u64::from(at) >= bundle_sectors_end {
            // The unit starts the sector after the bundle's last one (sectors are multiples of
            // 256 bytes, so `at` is that sector's start): erase it, whatever it holds.
            let end = at
                .checked_add(KEY_RECORD_UNIT)
                .ok_or(KeyRecordError::NoRoom { bundle_len })?;
            self.slots.erase_staged(at, end)?;
        } else if unit.iter().any(|&b| b != erased) {
            return Err(KeyRecordError::Occupied { offset: at });
        }
        self.slots.write_key_record(bundle_len, record)?;
        self.slots.sync()?;
        Ok(())
    }

    fn clear(&mut self) -> Result<(), KeyRecordError> {
        // A plain bundle's manifest names no key record, so the bootloader reads none; the
        // unit after it is whatever the slot holds and is never consulted.
        Ok(())
    }
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
        _bundle_len: u64,
        record: &[u8; KEY_RECORD_LEN],
    ) -> Result<(), KeyRecordError> {
        // The record names its release itself (checked above); the file holds it as is.
        write_atomic(&self.path, record).map_err(KeyRecordError::Place)
    }

    fn clear(&mut self) -> Result<(), KeyRecordError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(KeyRecordError::Place(StateError::Io {
                op: "remove",
                path: self.path.clone(),
                source,
            })),
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
        place.place(1000, &checked).unwrap();
        assert_eq!(std::fs::read(place.path()).unwrap(), checked);
        place.clear().unwrap();
        assert!(!place.path().exists());
        place.clear().unwrap();
    }

    /// Boot control over a fresh erased flash file: 4 KiB sectors, 8 slot sectors.
    fn slots(dir: &Path) -> Box<dyn Slots> {
        use sigil_bootloader::Geometry;
        let geometry = Geometry {
            erase_size: 4096,
            write_size: 8,
            read_size: 1,
            erased: 0xFF,
        };
        let layout = Layout::new(geometry, 0, 8192, 12288, 12288 + 8 * 4096, 8).unwrap();
        let path = dir.join("flash.img");
        crate::FileFlash::<4096, 8>::create(&path, 3 + 8 + 9, 0xFF).unwrap();
        crate::slots::open(&path, layout).unwrap()
    }

    fn unit_at(slots: &mut dyn Slots, at: u32) -> Vec<u8> {
        let mut unit = vec![0u8; KEY_RECORD_UNIT as usize];
        slots.read_staged(at, &mut unit).unwrap();
        unit
    }

    #[test]
    fn in_the_staging_slot_the_unit_after_the_bundle_holds_the_record() {
        let (device, release, record) = setup();
        let checked = check(Some(&record), Some(&device), &release).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut slots = slots(dir.path());
        let want = record_unit(&slots.layout(), &checked).to_vec();

        // Sharing the bundle's last sector (erased by the download): written there.
        slots.erase_staged(0, 4096).unwrap();
        InStagingSlot::new(slots.as_mut())
            .place(1000, &checked)
            .unwrap();
        assert_eq!(unit_at(slots.as_mut(), 1024), want);
        // Placed again (a retried stage): kept as it is, not programmed over.
        InStagingSlot::new(slots.as_mut())
            .place(1000, &checked)
            .unwrap();
        assert_eq!(unit_at(slots.as_mut(), 1024), want);

        // Alone in the sector after the bundle, over stale bytes: that sector is erased first.
        slots.erase_staged(4096, 8192).unwrap();
        slots.write_staged(4096, &[0x5A; 512]).unwrap();
        InStagingSlot::new(slots.as_mut())
            .place(4096, &checked)
            .unwrap();
        assert_eq!(unit_at(slots.as_mut(), 4096), want);

        // Other bytes in a unit that shares a sector with the bundle: refused, nothing erased.
        slots.erase_staged(8192, 12288).unwrap();
        slots.write_staged(8192 + 2048, &[0x00; 8]).unwrap();
        let e = InStagingSlot::new(slots.as_mut())
            .place(8192 + 2000, &checked)
            .unwrap_err();
        assert!(
            matches!(e, KeyRecordError::Occupied { offset: 10240 }),
            "{e}"
        );
        assert_eq!(unit_at(slots.as_mut(), 10240)[..8], [0x00; 8]);

        // No room after a bundle that fills the slot.
        let e = InStagingSlot::new(slots.as_mut())
            .place(8 * 4096, &checked)
            .unwrap_err();
        assert!(matches!(e, KeyRecordError::NoRoom { .. }), "{e}");
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
