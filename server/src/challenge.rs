//! Stateless device-login challenges: nothing is stored when a challenge is issued, so no
//! request can replace or void another device's challenge, and the answer is the same whether
//! or not the device id is enrolled.
//!
//! A challenge is 32 bytes, the nonce the device signs (FORMAT.md §8):
//!
//! | bytes  | content                                                                   |
//! |--------|---------------------------------------------------------------------------|
//! | 0..8   | expiry, seconds since the Unix epoch, u64 little-endian                    |
//! | 8..16  | random                                                                    |
//! | 16..32 | HMAC-SHA256(server key, tag ‖ u64le(len id) ‖ id ‖ bytes 0..16), first 16 bytes |
//!
//! The server key is random per process: a restart voids the challenges in flight (they live
//! [`CHALLENGE_TTL_SECS`]; the agent asks again). A challenge is used at most once: after a
//! session is opened with it, its first 16 bytes stay in a replay set until it expires. Only a
//! valid device signature adds to that set, so a stranger cannot fill it; it holds at most
//! [`USED_MAX`] challenges (the successful logins of the last minute), and a login that would
//! overflow it is refused rather than let replay protection lapse.

use std::collections::BTreeSet;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;

/// How long a challenge is valid.
pub const CHALLENGE_TTL_SECS: u64 = 60;

/// Most used challenges remembered at once (about 40 bytes each).
pub const USED_MAX: usize = 1 << 20;

const TAG: &[u8] = b"SIGIL-CHALLENGE-V1";

/// Why a challenge is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// Not issued by this server process for this device, or expired.
    #[error("the challenge is not valid for this device or has expired; request a new one")]
    Invalid,
    /// Already used to open a session.
    #[error("the challenge was already used")]
    Used,
    /// The replay set is full.
    #[error("too many device logins in the last minute; retry shortly")]
    Busy,
}

/// Issues and checks challenges.
pub struct Challenges {
    key: [u8; 32],
    /// `(expiry, random)` of used challenges, ordered by expiry so expired ones are dropped
    /// from the front.
    used: Mutex<BTreeSet<(u64, [u8; 8])>>,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenges").finish_non_exhaustive()
    }
}

impl Default for Challenges {
    fn default() -> Self {
        Self::new()
    }
}

fn mac(key: &[u8; 32], device_id: &str, head: &[u8]) -> Hmac<Sha256> {
    let mut m = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    m.update(TAG);
    m.update(&(device_id.len() as u64).to_le_bytes());
    m.update(device_id.as_bytes());
    m.update(head);
    m
}

fn split(nonce: &[u8; 32]) -> (u64, [u8; 8], &[u8]) {
    let mut expiry = [0u8; 8];
    expiry.copy_from_slice(&nonce[..8]);
    let mut random = [0u8; 8];
    random.copy_from_slice(&nonce[8..16]);
    (u64::from_le_bytes(expiry), random, &nonce[16..])
}

impl Challenges {
    /// A fresh random server key and an empty replay set.
    pub fn new() -> Self {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        Challenges {
            key,
            used: Mutex::new(BTreeSet::new()),
        }
    }

    /// A challenge for `device_id`, valid until `now + CHALLENGE_TTL_SECS`. Touches no state.
    pub fn issue(&self, device_id: &str, now: u64) -> [u8; 32] {
        let mut nonce = [0u8; 32];
        nonce[..8].copy_from_slice(&now.saturating_add(CHALLENGE_TTL_SECS).to_le_bytes());
        OsRng.fill_bytes(&mut nonce[8..16]);
        let tag = mac(&self.key, device_id, &nonce[..16])
            .finalize()
            .into_bytes();
        nonce[16..].copy_from_slice(&tag[..16]);
        nonce
    }

    /// Whether this server issued `nonce` for `device_id` and it has not expired (the MAC is
    /// compared in constant time). Does not consume it.
    pub fn check(&self, device_id: &str, nonce: &[u8; 32], now: u64) -> Result<(), ChallengeError> {
        let (expiry, _, tag) = split(nonce);
        // Constant-time comparison of the truncated tag.
        let tag_ok = mac(&self.key, device_id, &nonce[..16])
            .verify_truncated_left(tag)
            .is_ok();
        if !tag_ok || expiry <= now || expiry > now.saturating_add(CHALLENGE_TTL_SECS) {
            return Err(ChallengeError::Invalid);
        }
        Ok(())
    }

    /// Marks a checked challenge used; refuses one already used.
    pub fn consume(&self, nonce: &[u8; 32], now: u64) -> Result<(), ChallengeError> {
        let (expiry, random, _) = split(nonce);
        // A panic while holding the lock cannot leave the set half-changed.
        let mut used = self
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(&first) = used.first() {
            if first.0 > now {
                break;
            }
            used.pop_first();
        }
        if used.contains(&(expiry, random)) {
            return Err(ChallengeError::Used);
        }
        if used.len() >= USED_MAX {
            return Err(ChallengeError::Busy);
        }
        used.insert((expiry, random));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_is_bound_to_its_device_and_its_lifetime() {
        let c = Challenges::new();
        let n = c.issue("pump-1", 1000);
        assert_eq!(c.check("pump-1", &n, 1000), Ok(()));
        assert_eq!(c.check("pump-1", &n, 1059), Ok(()));
        assert_eq!(c.check("pump-1", &n, 1060), Err(ChallengeError::Invalid));
        assert_eq!(c.check("pump-2", &n, 1000), Err(ChallengeError::Invalid));
        // Another process (another key) did not issue it.
        assert_eq!(
            Challenges::new().check("pump-1", &n, 1000),
            Err(ChallengeError::Invalid)
        );
    }

    #[test]
    fn every_byte_of_a_challenge_is_authenticated() {
        let c = Challenges::new();
        let n = c.issue("pump-1", 1000);
        for i in 0..32 {
            let mut m = n;
            m[i] ^= 1;
            assert_eq!(
                c.check("pump-1", &m, 1000),
                Err(ChallengeError::Invalid),
                "{i}"
            );
        }
    }

    #[test]
    fn many_challenges_are_outstanding_at_once_and_each_is_used_once() {
        let c = Challenges::new();
        let all: Vec<[u8; 32]> = (0..100).map(|_| c.issue("pump-1", 1000)).collect();
        for n in &all {
            assert_eq!(c.check("pump-1", n, 1001), Ok(()));
        }
        assert_eq!(c.consume(&all[7], 1001), Ok(()));
        assert_eq!(c.consume(&all[7], 1002), Err(ChallengeError::Used));
        assert_eq!(c.consume(&all[8], 1002), Ok(()));
        // Expired entries leave the replay set.
        assert_eq!(c.used.lock().unwrap().len(), 2);
        let later = c.issue("pump-1", 2000);
        assert_eq!(c.consume(&later, 2000), Ok(()));
        assert_eq!(c.used.lock().unwrap().len(), 1);
    }
}
