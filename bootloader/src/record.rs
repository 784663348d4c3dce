//! The boot-control state and its on-flash record.
//!
//! One record is 80 bytes, little-endian, padded with the erased value to a whole number of
//! write units ([`crate::Layout::record_stride`]):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `SGBC` |
//! | 4 | 4 | sequence number (the highest valid one is the state) |
//! | 8 | 1 | record version (1) |
//! | 9 | 1 | [`Phase`] |
//! | 10 | 1 | trial boots left |
//! | 11 | 1 | [`Outcome`] of the last update |
//! | 12 | 4 | swap progress: half-steps completed |
//! | 16 | 4 | swap length: sectors swapped |
//! | 20 | 4 | stored minimum security counter |
//! | 24 | 4 | stored minimum key-set version |
//! | 28 | 4 | security counter of the image being installed / on trial |
//! | 32 | 4 | key-set version of the image being installed / on trial |
//! | 36 | 16 | [`ImageId`] of the image being installed / on trial |
//! | 52 | 1 | 1 if a rejected image id follows, else 0 |
//! | 53 | 16 | [`ImageId`] of the last rejected image |
//! | 69 | 7 | reserved, zero |
//! | 76 | 4 | CRC-32 of bytes 0..76 |
//!
//! A record whose magic, version, CRC, enumerations or reserved bytes are wrong is ignored as
//! if it were never written: that is what a torn write or a half-erased sector looks like.

use core::fmt;

use crate::crc::crc32;

/// Length of one encoded record.
pub(crate) const RECORD_LEN: usize = 80;

const MAGIC: [u8; 4] = *b"SGBC";
const VERSION: u8 = 1;
const CRC_AT: usize = 76;

/// Identifies an image: the first 16 bytes of its signed payload SHA-256.
///
/// Used to recognise a rejected image if it is staged again; it is not a security boundary
/// (every image is verified in full before it is installed or booted).
pub type ImageId = [u8; 16];

/// Where the device is in the update cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// The active image is confirmed; nothing to do.
    Idle,
    /// The application asked for the staged bundle to be installed at the next boot.
    Pending,
    /// The bootloader is swapping the staged image in; progress is recorded.
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
            Phase::Pending => 2,
            Phase::Swapping => 3,
            Phase::Trial => 4,
            Phase::Reverting => 5,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Phase::Idle,
            2 => Phase::Pending,
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
            Phase::Pending => "update pending",
            Phase::Swapping => "swapping in an update",
            Phase::Trial => "trial boot",
            Phase::Reverting => "reverting an update",
        })
    }
}

/// How the last update request ended (for the agent's report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// No update has finished since the state region was created.
    None,
    /// The application confirmed the new image; the stored minimums were raised.
    Confirmed,
    /// The new image was not confirmed within the attempt budget and was swapped back out.
    Reverted,
    /// The image on trial no longer verified; it was swapped back out.
    TrialInvalid,
    /// The staged bundle failed verification; the active slot was not touched.
    StagedInvalid,
    /// The staged bundle is the image rejected last time; it was not retried.
    AlreadyRejected,
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
            Outcome::AlreadyRejected => "staged bundle refused (rejected before)",
        })
    }
}

/// The boot-control state, as stored in the latest valid record.
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
    pub trial_image: ImageId,
    /// The last image that was reverted or refused, never retried.
    pub rejected: Option<ImageId>,
    /// How the last update request ended.
    pub outcome: Outcome,
}

impl BootState {
    /// The state of a device whose state region holds no valid record.
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
            trial_image: [0; 16],
            rejected: None,
            outcome: Outcome::None,
        }
    }

    /// This state moved to `phase` (the caller adjusts the other fields).
    pub(crate) fn with_phase(mut self, phase: Phase) -> Self {
        self.phase = phase;
        self
    }

    pub(crate) fn encode(&self) -> [u8; RECORD_LEN] {
        let (rejected_flag, rejected) = match self.rejected {
            Some(id) => (1u8, id),
            None => (0u8, [0; 16]),
        };
        let mut out = [0u8; RECORD_LEN];
        // The fields in layout order (offsets in the module table); the rest stays zero.
        let mut w = Writer(&mut out);
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
        w.put([rejected_flag]);
        w.put(rejected);
        let crc = crc32(out.get(..CRC_AT).unwrap_or(&[]));
        if let Some((_, last)) = out.split_last_chunk_mut::<4>() {
            *last = crc.to_le_bytes();
        }
        out
    }

    /// Decodes a record; `None` for anything that is not a complete, valid record.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let body = bytes.get(..CRC_AT)?;
        if bytes.get(..4)? != MAGIC || *bytes.get(8)? != VERSION {
            return None;
        }
        if crc32(body) != u32_at(bytes, CRC_AT)? {
            return None;
        }
        if bytes.get(69..CRC_AT)?.iter().any(|&b| b != 0) {
            return None;
        }
        let rejected = match bytes.get(52)? {
            0 => None,
            1 => Some(id_at(bytes, 53)?),
            _ => return None,
        };
        Some(BootState {
            sequence: u32_at(bytes, 4)?,
            phase: Phase::from_code(*bytes.get(9)?)?,
            attempts_left: *bytes.get(10)?,
            outcome: Outcome::from_code(*bytes.get(11)?)?,
            swap_progress: u32_at(bytes, 12)?,
            swap_sectors: u32_at(bytes, 16)?,
            min_security_counter: u32_at(bytes, 20)?,
            min_key_set_version: u32_at(bytes, 24)?,
            trial_security_counter: u32_at(bytes, 28)?,
            trial_key_set_version: u32_at(bytes, 32)?,
            trial_image: id_at(bytes, 36)?,
            rejected,
        })
    }
}

/// Writes fixed-size fields one after another.
struct Writer<'b>(&'b mut [u8]);

impl Writer<'_> {
    fn put<const N: usize>(&mut self, value: [u8; N]) {
        if let Some((head, tail)) = core::mem::take(&mut self.0).split_first_chunk_mut::<N>() {
            *head = value;
            self.0 = tail;
        }
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

fn id_at(bytes: &[u8], at: usize) -> Option<ImageId> {
    bytes.get(at..at.checked_add(16)?)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BootState {
        BootState {
            sequence: 7,
            phase: Phase::Trial,
            attempts_left: 2,
            swap_progress: 3,
            swap_sectors: 4,
            min_security_counter: 5,
            min_key_set_version: 1,
            trial_security_counter: 6,
            trial_key_set_version: 2,
            trial_image: [9; 16],
            rejected: Some([3; 16]),
            outcome: Outcome::Reverted,
        }
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
}
