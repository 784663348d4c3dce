//! The protected boot state and its on-flash record.
//!
//! The protected state region is written by the bootloader alone (the board locks it before
//! every jump, see [`crate::StateLock`]). One record is 256 bytes, little-endian, padded with
//! the erased value to [`crate::Layout::record_stride`]; every record is written twice, in two
//! consecutive slots (see `store.rs`):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `SGPS` |
//! | 4 | 4 | sequence number (the highest valid one is the state) |
//! | 8 | 1 | record version (4; versions 2 and 3, without a root floor or a swap id, are read too) |
//! | 9 | 1 | [`Phase`] (1 idle, 3 swapping, 4 trial, 5 reverting; 2 was version 1's "pending") |
//! | 10 | 1 | trial boots left |
//! | 11 | 1 | [`Outcome`] of the last request |
//! | 12 | 4 | swap progress: half-steps completed |
//! | 16 | 4 | swap length: sectors swapped |
//! | 20 | 4 | stored minimum security counter (the floor) |
//! | 24 | 4 | stored minimum key-set version (the floor) |
//! | 28 | 4 | security counter of the image being installed / on trial |
//! | 32 | 4 | key-set version of the image being installed / on trial |
//! | 36 | 32 | [`ImageDigest`] of the image being installed / on trial |
//! | 68 | 1 | number of rejected digests that follow (0..=4) |
//! | 69 | 3 | reserved, zero |
//! | 72 | 128 | 4 × [`ImageDigest`] of rejected images, newest first; unused entries zero |
//! | 200 | 4 | root floor: version of the trust root the device adopted through rotation (0: none, the provisioned root) |
//! | 204 | 32 | root floor: SHA-256 of that root's document (zero when the version is 0) |
//! | 236 | 16 | [`SwapId`] of the current or last install (version 4; zero in versions 2 and 3) |
//! | 252 | 4 | CRC-32 of bytes 0..252 |
//!
//! A record whose magic, version, CRC, enumerations, counts or reserved bytes are wrong is
//! ignored as if it were never written: that is what a torn write, a half-erased sector or a
//! flipped bit looks like (CRC-32 detects every error of up to three bits in a record this
//! size).

use core::fmt;

use sigil_manifests::RootFloor;

use crate::crc::crc32;

/// Length of one encoded record.
pub(crate) const RECORD_LEN: usize = 256;

const MAGIC: [u8; 4] = *b"SGPS";
const VERSION: u8 = 4;
/// Records of version 3 are read as having no swap id (their bytes 236..252 are zero).
const VERSION_NO_SWAP_ID: u8 = 3;
/// Records of version 2 are read as having no root floor (their bytes 200..252 are zero).
const VERSION_NO_ROOT: u8 = 2;
const CRC_AT: usize = 252;
/// Where the sequence number lies in a record.
pub(crate) const SEQUENCE_AT: usize = 4;
const REJECTED_AT: usize = 72;
const ROOT_AT: usize = 200;
const SWAP_ID_AT: usize = 236;

/// Rejected images the protected state remembers (the oldest is forgotten first).
pub const MAX_REJECTED: usize = 4;

/// Identifies an image wherever the bootloader decides: the SHA-256 of its bundle's signed
/// manifest bytes ([`sigil_manifests::VerifiedBundle::manifest_digest`]). A payload re-signed
/// with a higher security counter has a different digest; adding a signature does not change it.
pub type ImageDigest = [u8; 32];

/// Identifies one install on this device, for the device-local keystreams of its swap (feature
/// `encryption`, `crypt.rs`): the sequence number of the protected state the install started
/// from (4 bytes, little-endian) followed by the first 12 bytes of the [`ImageDigest`] of the
/// image it replaced (zero if the active slot did not verify; all zero from a bootloader built
/// without decryption, which has no device-local keystream). Recorded by the transition that
/// starts the install and kept until the next one, so every resumed boot of the install and of
/// its revert derives the same keystreams, and no two installs share one: the sequence number
/// never repeats on a device, and the digest differs for different previous images even across
/// a re-provisioned protected state.
pub type SwapId = [u8; 16];

/// Where the device is in the update cycle (protected; only the bootloader moves it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// The active image is confirmed; an install request may start an update.
    Idle,
    /// The bootloader is swapping the requested image in; progress is recorded.
    Swapping,
    /// The new image runs on trial and must be confirmed within the attempt budget.
    Trial,
    /// The trial failed; the bootloader is swapping the previous image back.
    Reverting,
}

impl Phase {
    fn code(self) -> u8 {
        match self {
            Phase::Idle => 1,
            Phase::Swapping => 3,
            Phase::Trial => 4,
            Phase::Reverting => 5,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Phase::Idle,
            3 => Phase::Swapping,
            4 => Phase::Trial,
            5 => Phase::Reverting,
            _ => return None,
        })
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Idle => "idle",
            Phase::Swapping => "swapping in an update",
            Phase::Trial => "trial boot",
            Phase::Reverting => "reverting an update",
        })
    }
}

/// How the last request ended (for the agent's report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// No request has finished since the state region was provisioned.
    None,
    /// The new image was confirmed; the floors rose to its counters.
    Confirmed,
    /// The new image was not confirmed within the attempt budget and was swapped back out.
    Reverted,
    /// The image on trial no longer verified; it was swapped back out.
    TrialInvalid,
    /// The staged bundle failed verification; the active slot was not touched.
    StagedInvalid,
    /// The staged bundle is not the one the install request names; nothing was installed.
    StagedMismatch,
    /// The staged bundle was rejected before; it was not retried.
    AlreadyRejected,
    /// The staged bundle is encrypted and its key record beside it did not yield the key the
    /// manifest commits to (a record for another device or release, a wrong device key, a
    /// missing record: FORMAT.md §9 steps D1–D4); nothing was written to either slot.
    KeyRefused,
}

impl Outcome {
    fn code(self) -> u8 {
        match self {
            Outcome::None => 0,
            Outcome::Confirmed => 1,
            Outcome::Reverted => 2,
            Outcome::TrialInvalid => 3,
            Outcome::StagedInvalid => 4,
            Outcome::AlreadyRejected => 5,
            Outcome::StagedMismatch => 6,
            Outcome::KeyRefused => 7,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Outcome::None,
            1 => Outcome::Confirmed,
            2 => Outcome::Reverted,
            3 => Outcome::TrialInvalid,
            4 => Outcome::StagedInvalid,
            5 => Outcome::AlreadyRejected,
            6 => Outcome::StagedMismatch,
            7 => Outcome::KeyRefused,
            _ => return None,
        })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::None => "none",
            Outcome::Confirmed => "confirmed",
            Outcome::Reverted => "reverted (not confirmed in time)",
            Outcome::TrialInvalid => "reverted (trial image failed verification)",
            Outcome::StagedInvalid => "staged bundle refused (verification failed)",
            Outcome::StagedMismatch => "staged bundle refused (not the requested image)",
            Outcome::AlreadyRejected => "staged bundle refused (rejected before)",
            Outcome::KeyRefused => "staged bundle refused (key record does not open it)",
        })
    }
}

/// The device's anti-rollback floors: only ever raised, by the bootloader's `raise_floors` transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Floors {
    /// Lowest security counter the device boots or installs.
    pub security_counter: u32,
    /// Lowest key-set version the device accepts.
    pub key_set_version: u32,
    /// The trust root the device adopted through rotation (`None`: its provisioned root).
    pub root: Option<RootFloor>,
}

/// What the bootloader knows about an image it verified, for the transitions below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageCounters {
    /// The image's security counter.
    pub security_counter: u32,
    /// The key-set version it was signed under.
    pub key_set_version: u32,
    /// Its identity.
    pub digest: ImageDigest,
    /// The root its key set was verified under, if reached through a root chain.
    pub root: Option<RootFloor>,
}

impl ImageCounters {
    /// The floors this image sets once it is confirmed.
    pub fn floors(&self) -> Floors {
        Floors {
            security_counter: self.security_counter,
            key_set_version: self.key_set_version,
            root: self.root,
        }
    }
}

/// The protected boot state, as stored in the latest valid record.
///
/// Applications read it through [`crate::BootControl::state`]; only the bootloader's named
/// transitions (below) make a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BootState {
    /// Sequence number of the record this state was read from (0: none written yet).
    pub sequence: u32,
    /// Where the device is in the update cycle.
    pub phase: Phase,
    /// In [`Phase::Trial`]: boots left before the bootloader reverts.
    pub attempts_left: u8,
    /// In [`Phase::Swapping`] / [`Phase::Reverting`]: half-steps completed.
    pub swap_progress: u32,
    /// Sectors the current or last swap moves.
    pub swap_sectors: u32,
    /// Lowest security counter the device boots or installs.
    pub min_security_counter: u32,
    /// Lowest key-set version the device accepts.
    pub min_key_set_version: u32,
    /// Security counter of the image being installed or on trial.
    pub trial_security_counter: u32,
    /// Key-set version of the image being installed or on trial.
    pub trial_key_set_version: u32,
    /// Identity of the image being installed or on trial.
    pub trial_image: ImageDigest,
    /// The current or last install ([`SwapId`]; feature `encryption`: a bootloader without
    /// decryption writes zero and does not keep it).
    #[cfg(feature = "encryption")]
    pub swap_id: SwapId,
    /// How the last request ended.
    pub outcome: Outcome,
    /// The trust root adopted through rotation (`None`: the provisioned root); only rises.
    pub root_floor: Option<RootFloor>,
    rejected: [ImageDigest; MAX_REJECTED],
    rejected_len: u8,
}

impl BootState {
    /// The state of a device whose protected region holds no valid record.
    pub const fn blank() -> Self {
        BootState {
            sequence: 0,
            phase: Phase::Idle,
            attempts_left: 0,
            swap_progress: 0,
            swap_sectors: 0,
            min_security_counter: 0,
            min_key_set_version: 0,
            trial_security_counter: 0,
            trial_key_set_version: 0,
            trial_image: [0; 32],
            #[cfg(feature = "encryption")]
            swap_id: [0; 16],
            outcome: Outcome::None,
            root_floor: None,
            rejected: [[0; 32]; MAX_REJECTED],
            rejected_len: 0,
        }
    }

    /// The floors.
    pub fn floors(&self) -> Floors {
        Floors {
            security_counter: self.min_security_counter,
            key_set_version: self.min_key_set_version,
            root: self.root_floor,
        }
    }

    /// Whether `digest` was reverted or refused before (and is still remembered).
    pub fn is_rejected(&self, digest: &ImageDigest) -> bool {
        self.rejected().iter().any(|r| r == digest)
    }

    /// The remembered rejected images, newest first.
    pub fn rejected(&self) -> &[ImageDigest] {
        self.rejected
            .get(..usize::from(self.rejected_len))
            .unwrap_or(&[])
    }

    // The transitions: each is written once, and the bootloader makes new states only
    // through them (the state-and-request table in `boot.rs` names them). Each changes the
    // state in place (a record is 250 bytes: no copies on the boot path) and returns it for
    // chaining; `Loaded::commit` then writes it.

    /// The one place the floors change: each rises to `to` if that is higher, never falls. The
    /// root floor moves only to a root of a higher version (a device adopts root N+1 when an
    /// image verified under it is confirmed; SECURITY.md, "Root rotation").
    /// Returns whether any floor rose.
    pub(crate) fn raise_floors(&mut self, to: Floors) -> bool {
        let mut raised = false;
        let have = self.root_floor.map_or(0, |r| r.version);
        if let Some(new) = to.root.filter(|new| new.version > have) {
            self.root_floor = Some(new);
            raised = true;
        }
        if to.security_counter > self.min_security_counter {
            self.min_security_counter = to.security_counter;
            raised = true;
        }
        if to.key_set_version > self.min_key_set_version {
            self.min_key_set_version = to.key_set_version;
            raised = true;
        }
        raised
    }

    /// Idle → Swapping: the verified staged image moves in over `sectors` sectors, as the
    /// install `swap_id` ([`BootState::next_swap_id`]; zero from a bootloader without
    /// decryption, which has no device-local keystream).
    pub(crate) fn start_install(
        &mut self,
        image: &ImageCounters,
        sectors: u32,
        swap_id: SwapId,
    ) -> &mut Self {
        #[cfg(not(feature = "encryption"))]
        let _ = swap_id;
        #[cfg(feature = "encryption")]
        {
            self.swap_id = swap_id;
        }
        self.phase = Phase::Swapping;
        self.swap_progress = 0;
        self.swap_sectors = sectors;
        self.trial_security_counter = image.security_counter;
        self.trial_key_set_version = image.key_set_version;
        self.trial_image = image.digest;
        self.attempts_left = 0;
        self
    }

    /// Swapping / Reverting: `done` half-steps are complete.
    pub(crate) fn swap_progressed(&mut self, done: u32) -> &mut Self {
        self.swap_progress = done;
        self
    }

    /// Swapping → Trial with `attempts` boots to be confirmed in.
    pub(crate) fn enter_trial(&mut self, attempts: u8) -> &mut Self {
        self.phase = Phase::Trial;
        self.attempts_left = attempts;
        self
    }

    /// Trial: one boot of the budget used.
    pub(crate) fn use_trial_boot(&mut self) -> &mut Self {
        self.attempts_left = self.attempts_left.saturating_sub(1);
        self
    }

    /// Trial → Idle on a confirm request for the trial image: the floors rise to its counters
    /// and to `root`, the root it verified under in this boot.
    pub(crate) fn confirm_trial(&mut self, root: Option<RootFloor>) -> &mut Self {
        let floors = Floors {
            security_counter: self.trial_security_counter,
            key_set_version: self.trial_key_set_version,
            root,
        };
        self.phase = Phase::Idle;
        self.attempts_left = 0;
        self.outcome = Outcome::Confirmed;
        self.raise_floors(floors);
        self
    }

    /// Trial → Reverting, for `why` (`Reverted` or `TrialInvalid`).
    pub(crate) fn start_revert(&mut self, why: Outcome) -> &mut Self {
        self.phase = Phase::Reverting;
        self.swap_progress = 0;
        self.attempts_left = 0;
        self.outcome = why;
        self
    }

    /// Reverting → Idle: the previous image is back; the trial image is remembered as rejected.
    pub(crate) fn finish_revert(&mut self) -> &mut Self {
        self.phase = Phase::Idle;
        self.attempts_left = 0;
        self.add_rejected()
    }

    /// Idle → Idle: an install request refused for `why`; nothing moved.
    pub(crate) fn refuse_install(&mut self, why: Outcome) -> &mut Self {
        self.outcome = why;
        self
    }

    /// The [`SwapId`] of an install that starts from this state and replaces `previous`.
    #[cfg(feature = "encryption")]
    pub(crate) fn next_swap_id(&self, previous: Option<&ImageDigest>) -> SwapId {
        let mut id = [0u8; 16];
        let (sequence, digest) = id.split_at_mut(4);
        sequence.copy_from_slice(&self.sequence.to_le_bytes());
        if let Some(previous) = previous {
            for (d, p) in digest.iter_mut().zip(previous) {
                *d = *p;
            }
        }
        id
    }

    /// Remembers the trial image as rejected (newest first; the oldest falls off).
    fn add_rejected(&mut self) -> &mut Self {
        if self.is_rejected(&self.trial_image) {
            return self;
        }
        // A plain loop: `rotate_right` pulls a 1.5 KiB memmove into the firmware.
        let mut carry = self.trial_image;
        for slot in self.rejected.iter_mut() {
            core::mem::swap(slot, &mut carry);
        }
        self.rejected_len = self.rejected_len.saturating_add(1).min(MAX_REJECTED as u8);
        self
    }

    /// The record's bytes.
    #[cfg(test)]
    pub(crate) fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        self.encode_into(&mut out);
        out
    }

    /// Writes the record into `out` (in place: the state is committed from the write buffer).
    pub(crate) fn encode_into(&self, out: &mut [u8; RECORD_LEN]) {
        *out = [0; RECORD_LEN];
        // The fields in layout order (offsets in the module table); the rest stays zero.
        let mut w = Writer(out);
        w.put(MAGIC);
        w.put(self.sequence.to_le_bytes());
        w.put([
            VERSION,
            self.phase.code(),
            self.attempts_left,
            self.outcome.code(),
        ]);
        for word in [
            self.swap_progress,
            self.swap_sectors,
            self.min_security_counter,
            self.min_key_set_version,
            self.trial_security_counter,
            self.trial_key_set_version,
        ] {
            w.put(word.to_le_bytes());
        }
        w.put(self.trial_image);
        w.put([self.rejected_len, 0, 0, 0]);
        for (i, digest) in self.rejected.iter().enumerate() {
            // Unused entries stay zero, so equal states encode to equal bytes.
            w.put(if i < usize::from(self.rejected_len) {
                *digest
            } else {
                [0; 32]
            });
        }
        let (version, digest) = self
            .root_floor
            .map_or((0, [0; 32]), |r| (r.version, r.digest));
        w.put(version.to_le_bytes());
        w.put(digest);
        // Without decryption the swap id stays zero (the buffer starts zeroed).
        #[cfg(feature = "encryption")]
        w.put(self.swap_id);
        let crc = crc32(out.get(..CRC_AT).unwrap_or(&[]));
        if let Some((_, last)) = out.split_last_chunk_mut::<4>() {
            *last = crc.to_le_bytes();
        }
    }

    /// Decodes a record; `None` for anything that is not a complete, valid record.
    #[cfg(test)]
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let mut state = BootState::blank();
        state.decode_from(bytes, u32::MAX).then_some(state)
    }

    /// Decodes a record into `self`: `false`, leaving `self` as it was, for anything that is
    /// not a complete, valid record for a layout of `slot_sectors` (a CRC-valid record whose
    /// swap does not fit the slot is ignored like a corrupt one). In place: the
    /// protected-state scan keeps no second copy.
    pub(crate) fn decode_from(&mut self, bytes: &[u8], slot_sectors: u32) -> bool {
        self.decode_checked(bytes, slot_sectors).is_some()
    }

    fn decode_checked(&mut self, bytes: &[u8], slot_sectors: u32) -> Option<()> {
        let body = bytes.get(..CRC_AT)?;
        let version = *bytes.get(8)?;
        if bytes.get(..4)? != MAGIC
            || !matches!(version, VERSION | VERSION_NO_SWAP_ID | VERSION_NO_ROOT)
        {
            return None;
        }
        if crc32(body) != u32_at(bytes, CRC_AT)? {
            return None;
        }
        let rejected_len = *bytes.get(68)?;
        let used = usize::from(rejected_len);
        if used > MAX_REJECTED || bytes.get(69..REJECTED_AT)?.iter().any(|&b| b != 0) {
            return None;
        }
        // Versions 2 and 3 have zeros here (checked as reserved then): no swap id.
        let swap_id: SwapId = bytes.get(SWAP_ID_AT..CRC_AT)?.try_into().ok()?;
        if version != VERSION && swap_id != [0; 16] {
            return None;
        }
        #[cfg(not(feature = "encryption"))]
        let _ = swap_id;
        let rejected = bytes.get(REJECTED_AT..ROOT_AT)?;
        if rejected
            .get(used.checked_mul(32)?..)?
            .iter()
            .any(|&b| b != 0)
        {
            return None;
        }
        // Version 2 has zeros here (checked as reserved then): the provisioned root.
        let root_version = u32_at(bytes, ROOT_AT)?;
        let root_digest = digest_at(bytes, ROOT_AT.checked_add(4)?)?;
        let root_floor = match root_version {
            0 if root_digest == [0; 32] => None,
            0 => return None,
            _ if version == VERSION_NO_ROOT => return None,
            v => Some(RootFloor {
                version: v,
                digest: root_digest,
            }),
        };
        let phase = Phase::from_code(*bytes.get(9)?)?;
        let outcome = Outcome::from_code(*bytes.get(11)?)?;
        let attempts_left = *bytes.get(10)?;
        let words = [SEQUENCE_AT, 12, 16, 20, 24, 28, 32].map(|at| u32_at(bytes, at));
        let [Some(sequence), Some(swap_progress), Some(swap_sectors), Some(min_sc), Some(min_ksv), Some(trial_sc), Some(trial_ksv)] =
            words
        else {
            return None;
        };
        let trial_image = digest_at(bytes, 36)?;
        if swap_sectors > slot_sectors || swap_progress > swap_sectors.checked_mul(2)? {
            return None;
        }
        // Valid: only now is `self` written.
        for (slot, digest) in self.rejected.iter_mut().zip(rejected.chunks_exact(32)) {
            slot.copy_from_slice(digest);
        }
        self.sequence = sequence;
        self.phase = phase;
        self.attempts_left = attempts_left;
        self.outcome = outcome;
        self.swap_progress = swap_progress;
        self.swap_sectors = swap_sectors;
        self.min_security_counter = min_sc;
        self.min_key_set_version = min_ksv;
        self.trial_security_counter = trial_sc;
        self.trial_key_set_version = trial_ksv;
        self.trial_image = trial_image;
        #[cfg(feature = "encryption")]
        {
            self.swap_id = swap_id;
        }
        self.root_floor = root_floor;
        self.rejected_len = rejected_len;
        Some(())
    }
}

/// Writes fixed-size fields one after another.
pub(crate) struct Writer<'b>(pub(crate) &'b mut [u8]);

impl Writer<'_> {
    pub(crate) fn put<const N: usize>(&mut self, value: [u8; N]) {
        if let Some((head, tail)) = core::mem::take(&mut self.0).split_first_chunk_mut::<N>() {
            *head = value;
            self.0 = tail;
        }
    }
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

pub(crate) fn digest_at(bytes: &[u8], at: usize) -> Option<ImageDigest> {
    bytes.get(at..at.checked_add(32)?)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BootState {
        let image = ImageCounters {
            security_counter: 6,
            key_set_version: 2,
            digest: [9; 32],
            root: None,
        };
        let mut s = BootState::blank();
        assert!(s.raise_floors(Floors {
            security_counter: 5,
            key_set_version: 1,
            root: Some(RootFloor {
                version: 3,
                digest: [7; 32],
            }),
        }));
        *s.start_install(&image, 4, [3; 16])
            .enter_trial(3)
            .start_revert(Outcome::Reverted)
            .finish_revert()
            .start_install(&image, 4, [0; 16])
            .swap_progressed(3)
    }

    #[test]
    fn round_trips() {
        let s = sample();
        assert_eq!(BootState::decode(&s.encode()), Some(s));
        let b = BootState::blank();
        assert_eq!(BootState::decode(&b.encode()), Some(b));
    }

    #[test]
    fn every_torn_prefix_is_refused() {
        let bytes = sample().encode();
        for landed in 0..RECORD_LEN {
            for erased in [0xFFu8, 0x00] {
                let mut torn = [erased; RECORD_LEN];
                torn[..landed].copy_from_slice(&bytes[..landed]);
                assert_eq!(
                    BootState::decode(&torn),
                    None,
                    "prefix {landed}, erased {erased:#x}"
                );
            }
        }
    }

    #[test]
    fn every_bit_flip_is_refused() {
        let bytes = sample().encode();
        for i in 0..RECORD_LEN * 8 {
            let mut bad = bytes;
            bad[i / 8] ^= 1 << (i % 8);
            assert_eq!(BootState::decode(&bad), None, "bit {i}");
        }
    }

    #[test]
    fn floors_only_rise() {
        let root = |version| {
            Some(RootFloor {
                version,
                digest: [version as u8; 32],
            })
        };
        let mut s = BootState::blank();
        assert!(s.raise_floors(Floors {
            security_counter: 7,
            key_set_version: 3,
            root: root(3),
        }));
        let mut lower = s;
        // Only the key-set version rises.
        assert!(lower.raise_floors(Floors {
            security_counter: 2,
            key_set_version: 9,
            root: root(2),
        }));
        assert_eq!(lower.min_security_counter, 7);
        assert_eq!(lower.min_key_set_version, 9);
        assert_eq!(lower.root_floor, root(3));
        // The provisioned root (`None`) never lowers an adopted one.
        let mut none = lower;
        assert!(!none.raise_floors(Floors::default()));
        assert_eq!(none, lower, "nothing rose: the state is unchanged");
        assert_eq!(none.root_floor, root(3));
        assert!(none.raise_floors(Floors {
            root: root(4),
            ..Floors::default()
        }));
        assert_eq!(none.root_floor, root(4));
    }

    #[test]
    fn version_2_records_read_as_the_provisioned_root() {
        let mut floored = BootState::blank();
        floored.raise_floors(Floors {
            security_counter: 4,
            ..Floors::default()
        });
        let mut bytes = floored.encode();
        bytes[8] = VERSION_NO_ROOT;
        let crc = crc32(&bytes[..CRC_AT]);
        bytes[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        let s = BootState::decode(&bytes).unwrap();
        assert_eq!((s.min_security_counter, s.root_floor), (4, None));
        // A version 2 record with a root floor is not one this code wrote.
        let mut rooted = sample().encode();
        rooted[8] = VERSION_NO_ROOT;
        let crc = crc32(&rooted[..CRC_AT]);
        rooted[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(BootState::decode(&rooted), None);
    }

    #[cfg(feature = "encryption")]
    #[test]
    fn version_3_records_read_without_a_swap_id() {
        let reversion = |mut bytes: [u8; RECORD_LEN]| {
            bytes[8] = VERSION_NO_SWAP_ID;
            let crc = crc32(&bytes[..CRC_AT]);
            bytes[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
            BootState::decode(&bytes)
        };
        let mut s = sample();
        s.swap_id = [0; 16];
        assert_eq!(reversion(s.encode()), Some(s));
        // A version 3 record with a swap id is not one that version wrote.
        let mut with_id = s;
        with_id.swap_id[15] = 1;
        assert_eq!(reversion(with_id.encode()), None);
    }

    #[cfg(feature = "encryption")]
    #[test]
    fn every_install_gets_its_own_swap_id() {
        let image = ImageCounters {
            security_counter: 1,
            key_set_version: 1,
            digest: [1; 32],
            root: None,
        };
        let mut s = BootState::blank();
        s.sequence = 41;
        let (mut a, mut c) = (s, s);
        a.start_install(&image, 2, s.next_swap_id(Some(&[0xAA; 32])));
        c.start_install(&image, 2, s.next_swap_id(Some(&[0xCC; 32])));
        assert_ne!(a.swap_id, c.swap_id, "another previous image");
        s.sequence = 42;
        assert_ne!(
            s.next_swap_id(Some(&[0xAA; 32])),
            a.swap_id,
            "a later install"
        );
        assert_eq!(&a.swap_id[..4], &41u32.to_le_bytes());
        assert_eq!(&a.swap_id[4..], &[0xAA; 12]);
        // Kept through the trial and the revert, whose keystreams need it again.
        let mut reverted = a;
        reverted
            .swap_progressed(4)
            .enter_trial(2)
            .start_revert(Outcome::Reverted);
        assert_eq!(reverted.swap_id, a.swap_id);
    }

    #[test]
    fn rejected_list_keeps_the_newest_four() {
        let mut s = BootState::blank();
        for i in 1..=6u8 {
            let image = ImageCounters {
                security_counter: 1,
                key_set_version: 1,
                digest: [i; 32],
                root: None,
            };
            s.start_install(&image, 1, [0; 16])
                .enter_trial(1)
                .start_revert(Outcome::Reverted)
                .finish_revert();
        }
        assert_eq!(s.rejected(), &[[6; 32], [5; 32], [4; 32], [3; 32]]);
        assert!(!s.is_rejected(&[2; 32]));
        assert_eq!(BootState::decode(&s.encode()), Some(s));
    }
}
