//! Public keys, key ids, signature entries and threshold counting (FORMAT.md §3, rules 2 and 3).

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::{Document, Error, Signed};
use crate::MAX_KEYS;

/// An ed25519 public key in its 32-byte compressed encoding.
pub type PublicKey = [u8; 32];

/// A key id: the SHA-256 of the 32-byte public key.
pub type KeyId = [u8; 32];

/// Computes the key id of a public key.
pub fn key_id(key: &PublicKey) -> KeyId {
    Sha256::digest(key).into()
}

/// One signature in a signature list: who signed (key id) and the 64-byte ed25519 signature.
///
/// The key id is not trusted: it only selects which allowed key to verify with, and a wrong id
/// makes the signature fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "alloc", derive(serde::Serialize))]
pub struct SignatureEntry {
    /// SHA-256 of the signer's public key.
    pub key_id: KeyId,
    /// The ed25519 signature over the exact signed bytes.
    #[cfg_attr(feature = "alloc", serde(with = "crate::codec::bytes64"))]
    pub signature: [u8; 64],
}

impl SignatureEntry {
    /// Reads one entry: the key id, then the signature (96 raw bytes).
    pub(crate) fn read(r: &mut crate::codec::Reader<'_>) -> Result<Self, Error> {
        Ok(SignatureEntry {
            key_id: r.array()?,
            signature: r.array()?,
        })
    }

    /// Signs `message` (the exact bytes of a key set or manifest) with `key`.
    pub fn sign(key: &ed25519_dalek::SigningKey, message: &[u8]) -> Self {
        use ed25519_dalek::Signer;
        SignatureEntry {
            key_id: key_id(&key.verifying_key().to_bytes()),
            signature: key.sign(message).to_bytes(),
        }
    }
}

/// The fixed-capacity list type for signatures.
pub type SignatureList = heapless::Vec<SignatureEntry, MAX_KEYS>;

/// The fixed-capacity list type for public keys.
pub type KeyList = heapless::Vec<PublicKey, MAX_KEYS>;

/// Checks a list of keys and its threshold: at least one key, no duplicates, every key a valid,
/// non-weak point, `1 <= threshold <= keys`.
pub fn check_keys(keys: &[PublicKey], threshold: u8, doc: Document) -> Result<(), Error> {
    if keys.is_empty() {
        return Err(Error::NoKeys(doc));
    }
    for (i, key) in keys.iter().enumerate() {
        let vk = VerifyingKey::from_bytes(key).map_err(|_| Error::InvalidPublicKey)?;
        if vk.is_weak() {
            return Err(Error::WeakPublicKey);
        }
        if keys
            .iter()
            .skip(i.saturating_add(1))
            .any(|other| other == key)
        {
            return Err(Error::DuplicateKey(doc));
        }
    }
    if threshold == 0 || usize::from(threshold) > keys.len() {
        return Err(Error::InvalidThreshold(doc));
    }
    Ok(())
}

/// Verifies that at least `threshold` distinct keys of `allowed` signed `message`.
///
/// Every signature present must name an allowed key and verify under strict ed25519 (rule 3);
/// a forged or foreign signature is an error, not something to skip. A key that signs more than
/// once counts once (rule 2).
pub fn verify_threshold(
    message: &[u8],
    signatures: impl IntoIterator<Item = SignatureEntry>,
    allowed: &[PublicKey],
    threshold: u8,
    what: Signed,
) -> Result<(), Error> {
    // Decoders already refuse such thresholds; this also covers a root or key set built by hand
    // (the fields are public), where a zero threshold would accept no signatures at all.
    if allowed.len() > MAX_KEYS {
        return Err(Error::TooLarge);
    }
    if threshold == 0 || usize::from(threshold) > allowed.len() {
        let doc = match what {
            Signed::KeySet => Document::TrustRoot,
            Signed::Manifest => Document::KeySet,
        };
        return Err(Error::InvalidThreshold(doc));
    }
    let mut counted = [false; MAX_KEYS];
    let mut found: u8 = 0;
    for entry in signatures {
        let entry = &entry;
        // Key ids are recomputed per signature rather than kept in a table: at most eight
        // 32-byte hashes, and the bootloader's stack stays smaller.
        let index = allowed
            .iter()
            .position(|key| key_id(key) == entry.key_id)
            .ok_or(Error::UnknownSigner(what))?;
        let key = allowed.get(index).ok_or(Error::UnknownSigner(what))?;
        let vk = VerifyingKey::from_bytes(key).map_err(|_| Error::InvalidPublicKey)?;
        vk.verify_strict(message, &Signature::from_bytes(&entry.signature))
            .map_err(|_| Error::BadSignature(what))?;
        let seen = counted.get_mut(index).ok_or(Error::UnknownSigner(what))?;
        if !*seen {
            *seen = true;
            found = found.checked_add(1).ok_or(Error::TooLarge)?;
        }
    }
    if found < threshold {
        return Err(Error::ThresholdNotMet {
            what,
            found,
            required: threshold,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn pk(seed: u8) -> PublicKey {
        SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes()
    }

    #[test]
    fn key_lists_are_checked() {
        let d = Document::KeySet;
        assert_eq!(check_keys(&[], 1, d), Err(Error::NoKeys(d)));
        assert_eq!(
            check_keys(&[pk(1), pk(1)], 1, d),
            Err(Error::DuplicateKey(d))
        );
        assert_eq!(check_keys(&[pk(1)], 0, d), Err(Error::InvalidThreshold(d)));
        assert_eq!(check_keys(&[pk(1)], 2, d), Err(Error::InvalidThreshold(d)));
        assert_eq!(check_keys(&[pk(1), pk(2)], 2, d), Ok(()));
    }

    #[test]
    fn small_order_keys_are_refused() {
        // The identity point (y = 1): every signature "verifies" under lax checks.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            check_keys(&[identity], 1, Document::TrustRoot),
            Err(Error::WeakPublicKey)
        );
    }

    #[test]
    fn bytes_that_are_not_a_point_are_refused() {
        // y = 2 is not the y-coordinate of any point on the curve.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert_eq!(
            check_keys(&[not_a_point], 1, Document::TrustRoot),
            Err(Error::InvalidPublicKey)
        );
    }

    #[test]
    fn more_allowed_keys_than_the_format_holds_are_refused() {
        let msg = b"SGL-MNFT\x01\x00body";
        let keys: [PublicKey; 9] = core::array::from_fn(|i| pk(i as u8 + 1));
        let s9 = SignatureEntry::sign(&SigningKey::from_bytes(&[9; 32]), msg);
        assert_eq!(
            verify_threshold(msg, [s9], &keys, 1, Signed::Manifest),
            Err(Error::TooLarge)
        );
    }

    #[test]
    fn each_key_counts_once_and_every_signature_must_verify() {
        let msg = b"SGL-MNFT\x01\x00body";
        let keys = [pk(1), pk(2)];
        let s1 = SignatureEntry::sign(&SigningKey::from_bytes(&[1; 32]), msg);
        let s2 = SignatureEntry::sign(&SigningKey::from_bytes(&[2; 32]), msg);
        let m = Signed::Manifest;
        assert_eq!(verify_threshold(msg, [s1, s2], &keys, 2, m), Ok(()));
        assert_eq!(
            verify_threshold(msg, [s1, s1], &keys, 2, m),
            Err(Error::ThresholdNotMet {
                what: m,
                found: 1,
                required: 2
            })
        );
        let mut forged = s2;
        forged.signature[5] ^= 1;
        assert_eq!(
            verify_threshold(msg, [s1, forged], &keys, 1, m),
            Err(Error::BadSignature(m))
        );
        let foreign = SignatureEntry::sign(&SigningKey::from_bytes(&[9; 32]), msg);
        assert_eq!(
            verify_threshold(msg, [s1, foreign], &keys, 1, m),
            Err(Error::UnknownSigner(m))
        );
        assert_eq!(
            verify_threshold(msg, [], &keys, 1, m),
            Err(Error::ThresholdNotMet {
                what: m,
                found: 0,
                required: 1
            })
        );
    }
}
