//! Public keys, key ids, signature entries and threshold counting (FORMAT.md §3, rules 2 and 3).

use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::{EdwardsPoint, Scalar};
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256, Sha512};

use crate::error::{Document, Error, Signed};
use crate::MAX_KEYS;

/// An ed25519 public key in its 32-byte compressed encoding.
pub type PublicKey = [u8; 32];

/// A key id: the SHA-256 of the 32-byte public key.
pub type KeyId = [u8; 32];

/// Computes the key id of a public key.
pub fn key_id(key: &PublicKey) -> KeyId {
    // As a slice, like every other `Sha256::digest` of the crate: `digest` is generic over its
    // argument, and a `&[u8; 32]` would link a second copy (84 bytes).
    Sha256::digest(key.as_slice()).into()
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

/// What adding a signature to a signature list did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAdded {
    /// The key had not signed: the entry was appended.
    New,
    /// The key had signed with other bytes (say, a corrupt signature): its entry was replaced.
    Replaced,
    /// The key had already made this very signature: nothing changed.
    Unchanged,
}

/// The fixed-capacity list type for signatures.
pub type SignatureList = heapless::Vec<SignatureEntry, MAX_KEYS>;

/// The fixed-capacity list type for public keys.
pub type KeyList = heapless::Vec<PublicKey, MAX_KEYS>;

/// Whether `key` is the one canonical encoding of the point it decodes to (FORMAT.md §3): the
/// y-coordinate is reduced (below p = 2^255 - 19), and the sign bit is clear when x = 0
/// (y = 1 or y = p - 1). These are the only ways two encodings can name one point, so
/// with this check byte equality of keys is point equality. Reading bytes, with no field
/// arithmetic, keeps it free.
pub fn is_canonical_encoding(key: &PublicKey) -> bool {
    let [lo, middle @ .., hi] = key;
    let sign = hi & 0x80 != 0;
    let top = hi & 0x7f;
    let ones = middle.iter().all(|&b| b == 0xff);
    // y >= p: y = p + k for k in 0..19 (the low byte 0xed..=0xff, every other bit set).
    if top == 0x7f && ones && *lo >= 0xed {
        return false;
    }
    // x = 0 has no negative: y = 1, or y = p - 1 (low byte 0xec), with the sign bit set.
    let zeros = middle.iter().all(|&b| b == 0);
    let y_is_one = *lo == 1 && zeros && top == 0;
    let y_is_minus_one = *lo == 0xec && ones && top == 0x7f;
    !(sign && (y_is_one || y_is_minus_one))
}

/// Whether a point lies in the prime-order subgroup: `[l]P` is the identity, tested as
/// `[l - 1]P == -P`. The scalar `l - 1` (the scalar `-1`) is a constant ([`MINUS_ONE`]):
/// `-Scalar::ONE` would link a Montgomery multiplication (about 1.6 KiB of flash),
/// `Scalar::ZERO - Scalar::ONE` scalar subtraction (about 0.2 KiB).
///
/// This uses the variable-time double-base multiplication that `verify_strict` already links
/// (public keys are public, so variable time leaks nothing), rather than curve25519-dalek's
/// constant-time `is_torsion_free`: about 15% fewer instructions (`bench/keys.sh`), and the
/// bootloader links no second scalar multiplication routine for it.
// Negation here is of a curve point: a group operation, which cannot overflow (the lint is for
// integers).
#[allow(clippy::arithmetic_side_effects)]
fn in_prime_order_subgroup(point: &EdwardsPoint) -> bool {
    EdwardsPoint::vartime_double_scalar_mul_basepoint(&MINUS_ONE, point, &Scalar::ZERO) == -point
}

/// The scalar `l - 1`: l is odd (its low byte is 0xed), so `l - 1` only changes the low byte.
const MINUS_ONE: Scalar = {
    let mut bytes = GROUP_ORDER;
    bytes[0] = 0xec;
    canonical_scalar(bytes)
};

/// The scalar whose canonical encoding is `bytes`, which the caller has checked (or computed)
/// to be below `l`: loaded as they are, with no second reduction.
///
/// curve25519-dalek 4 deprecates `Scalar::from_bits` because the scalar it makes need not be
/// reduced, and scalar-scalar arithmetic is then undefined. Here it always is reduced (below
/// `l`, so the masked top bit is already clear), and it is only ever multiplied with a point,
/// which reads its bits; so `from_bits` is `from_canonical_bytes` without the constant-time
/// reduction that checks canonicity (about 2.5 KiB of flash with the wide reduction, for bytes
/// that are public).
// See above: every caller passes bytes below l.
#[allow(deprecated)]
const fn canonical_scalar(bytes: [u8; 32]) -> Scalar {
    Scalar::from_bits(bytes)
}

/// Checks one public key of `doc` (FORMAT.md §3): its 32 bytes are the canonical encoding of
/// a curve point (`NonCanonicalKey`, `InvalidPublicKey`) that is not of small order
/// (`WeakPublicKey`) and lies in the prime-order subgroup (`KeyOutsideSubgroup`).
///
/// Keys that pass are one-to-one with the points of the prime-order subgroup, so comparing
/// their bytes compares them as points: `A` and `A` plus a point of order 8, or two encodings
/// of one point, can never pass as two keys one secret signs for. Trust roots (step 0), key
/// sets (step 5b) and enrolled device keys (step E1) all pass here.
pub fn check_public_key(key: &PublicKey, doc: Document) -> Result<VerifyingKey, Error> {
    if !is_canonical_encoding(key) {
        return Err(Error::NonCanonicalKey(doc));
    }
    let vk = VerifyingKey::from_bytes(key).map_err(|_| Error::InvalidPublicKey(doc))?;
    check_point(&vk.to_edwards(), doc)?;
    Ok(vk)
}

/// [`check_public_key`] without the [`VerifyingKey`] it returns, for key lists
/// ([`check_keys`]): the point is decoded as `VerifyingKey::from_bytes` decodes it, and is not
/// copied into one (the bootloader links only this).
fn check_key(key: &PublicKey, doc: Document) -> Result<(), Error> {
    if !is_canonical_encoding(key) {
        return Err(Error::NonCanonicalKey(doc));
    }
    let point = CompressedEdwardsY(*key)
        .decompress()
        .ok_or(Error::InvalidPublicKey(doc))?;
    check_point(&point, doc)
}

/// The point checks of [`check_public_key`]: not of small order (`VerifyingKey::is_weak`), in
/// the prime-order subgroup.
fn check_point(point: &EdwardsPoint, doc: Document) -> Result<(), Error> {
    if point.is_small_order() {
        return Err(Error::WeakPublicKey(doc));
    }
    if !in_prime_order_subgroup(point) {
        return Err(Error::KeyOutsideSubgroup(doc));
    }
    Ok(())
}

/// Checks a list of keys and its threshold: at least one key, every key valid
/// ([`check_public_key`]), no key twice, `1 <= threshold <= keys`.
pub fn check_keys(keys: &[PublicKey], threshold: u8, doc: Document) -> Result<(), Error> {
    if keys.is_empty() {
        return Err(Error::NoKeys(doc));
    }
    if keys.len() > MAX_KEYS {
        return Err(Error::TooLarge(doc));
    }
    for (i, key) in keys.iter().enumerate() {
        check_key(key, doc)?;
        // Canonical keys: equal bytes if and only if equal points.
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

/// The order `l = 2^252 + 27742317777372353535851937790883648493` of the prime-order
/// subgroup, little-endian: a signature's `s` must be below it (FORMAT.md §3, rule 3).
const GROUP_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Whether the little-endian integer `s` is below `l`: the canonical encoding of a scalar.
///
/// `s` is public (it is in the signature), so a variable-time comparison leaks nothing. This
/// is the check `Scalar::from_canonical_bytes` makes by reducing `s` and comparing: in the
/// bootloader that reduction inlined a second copy of the Montgomery multiplication (about
/// 1.3 KiB of flash), where comparing bytes costs a few dozen.
fn is_canonical_scalar(s: &[u8; 32]) -> bool {
    for (byte, bound) in s.iter().rev().zip(GROUP_ORDER.iter().rev()) {
        if byte != bound {
            return byte < bound;
        }
    }
    false // s = l
}

/// Strict ed25519 verification of `signature` over `message` under `key` (`None` if the key's
/// bytes are not a curve point), with exactly the
/// checks of ed25519-dalek's `VerifyingKey::verify_strict` (2.2), and the same arithmetic:
///
/// 1. `s` is canonical (`s < l`);
/// 2. `R` decodes to a curve point, and neither `R` nor the key `A` is of small order;
/// 3. the challenge `k = SHA-512(R || A || M) mod l`, and the encoding of `[s]B - [k]A` is
///    byte for byte the signature's `R` (so a non-canonical `R` never verifies).
///
/// Written out over curve25519-dalek (the crate ed25519-dalek computes with) only so that the
/// scalar work is variable time over public bytes: the canonical check of `s` is a byte
/// comparison and `s` is then used as it is, and the challenge is reduced by
/// [`crate::scalar::reduce_wide`] (the same value as curve25519-dalek's constant-time
/// reduction). The test `agrees_with_ed25519_dalek_verify_strict` holds the two to the same
/// answers.
// Negating a curve point is a group operation; it cannot overflow (the lint is for integers).
// Out of line, and the challenge in its own function: the SHA-512 state and the decoded `R`
// are then off the stack while the double-base multiplication runs (the deepest point of a
// boot; the bootloader's RAM budget is 12 KiB).
#[allow(clippy::arithmetic_side_effects)]
#[inline(never)]
fn verify_strict(key: &PublicKey, message: &[u8], signature: &[u8; 64]) -> Option<bool> {
    // The key first: bytes that are not a point are the key list's fault, not the signature's.
    let point = CompressedEdwardsY(*key).decompress()?;
    let (r, s) = signature.split_at(32);
    let (Ok(r), Ok(s)) = (<[u8; 32]>::try_from(r), <[u8; 32]>::try_from(s)) else {
        return Some(false);
    };
    if !is_canonical_scalar(&s) || !is_valid_r(&r) || point.is_small_order() {
        return Some(false);
    }
    let s = canonical_scalar(s);
    let k = challenge(&r, key, message);
    let expected = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &-point, &s);
    Some(expected.compress().to_bytes() == r)
}

/// Whether a signature's `R` decodes to a curve point that is not of small order.
#[inline(never)]
fn is_valid_r(r: &[u8; 32]) -> bool {
    CompressedEdwardsY(*r)
        .decompress()
        .is_some_and(|point| !point.is_small_order())
}

/// The challenge `k = SHA-512(R || A || M) mod l`.
#[inline(never)]
fn challenge(r: &[u8; 32], key: &PublicKey, message: &[u8]) -> Scalar {
    let k = sha512(r, &[key], message);
    canonical_scalar(crate::scalar::reduce_wide(&k))
}

/// SHA-512 of `head`, then `parts`, then `tail`: the one place the crate makes a SHA-512 hasher
/// (the challenge here, HMAC in `encryption`). Updated in place: `chain_update` moves the
/// hasher's state (about 200 bytes) per call.
pub(crate) fn sha512(head: &[u8], parts: &[&[u8]], tail: &[u8]) -> [u8; 64] {
    let mut hasher = Sha512::new();
    hasher.update(head);
    for part in parts {
        hasher.update(part);
    }
    hasher.update(tail);
    hasher.finalize().into()
}

/// Verifies that at least `threshold` distinct keys of `allowed` signed `message`.
///
/// Every signature present must name an allowed key and verify under strict ed25519 (rule 3);
/// a forged or foreign signature is an error, not something to skip. A key that signs more than
/// once counts once (rule 2).
///
/// `allowed` is a list that passed [`check_keys`], as the keys of every [`crate::TrustRoot`]
/// and [`crate::KeySet`] made by `decode` or `new` have: only then is each distinct entry a
/// distinct point of the prime-order subgroup, which is what makes distinct entries distinct
/// signers. The key check is not repeated here (it costs about three quarters of a signature
/// check per key, `bench/keys.sh`).
pub fn verify_threshold(
    message: &[u8],
    signatures: impl IntoIterator<Item = SignatureEntry>,
    allowed: &[PublicKey],
    threshold: u8,
    what: Signed,
) -> Result<(), Error> {
    // Decoders already refuse such thresholds; this also covers a root or key set built by hand
    // (the fields are public), where a zero threshold would accept no signatures at all.
    let doc = match what {
        Signed::Manifest => Document::KeySet,
        Signed::KeySet | Signed::RootUpdateByPrevious | Signed::RootUpdateByNew => {
            Document::TrustRoot
        }
    };
    if allowed.len() > MAX_KEYS {
        return Err(Error::TooLarge(doc));
    }
    if threshold == 0 || usize::from(threshold) > allowed.len() {
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
        match verify_strict(key, message, &entry.signature) {
            None => return Err(Error::InvalidPublicKey(doc)),
            Some(false) => return Err(Error::BadSignature(what)),
            Some(true) => {}
        }
        let seen = counted.get_mut(index).ok_or(Error::UnknownSigner(what))?;
        if !*seen {
            *seen = true;
            found = found.checked_add(1).ok_or(Error::TooLarge(doc))?;
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
#[allow(clippy::arithmetic_side_effects)] // curve points and fixed test bytes
mod tests {
    use super::*;
    use curve25519_dalek::constants::EIGHT_TORSION;
    use ed25519_dalek::{Signature, SigningKey};
    extern crate alloc;
    use alloc::vec::Vec;

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
            Err(Error::WeakPublicKey(Document::TrustRoot))
        );
        for t in EIGHT_TORSION {
            let key = t.compress().to_bytes();
            assert_eq!(
                check_public_key(&key, Document::KeySet).err(),
                Some(Error::WeakPublicKey(Document::KeySet))
            );
        }
    }

    #[test]
    fn bytes_that_are_not_a_point_are_refused() {
        // y = 2 is not the y-coordinate of any point on the curve.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert_eq!(
            check_keys(&[not_a_point], 1, Document::TrustRoot),
            Err(Error::InvalidPublicKey(Document::TrustRoot))
        );
    }

    /// `A` plus each point of order 2, 4 and 8: a key with a torsion component.
    fn torsion_twins(seed: u8) -> impl Iterator<Item = PublicKey> {
        let a = VerifyingKey::from_bytes(&pk(seed)).unwrap().to_edwards();
        EIGHT_TORSION[1..]
            .iter()
            .map(move |t| (a + t).compress().to_bytes())
    }

    #[test]
    fn keys_with_a_torsion_component_are_refused() {
        for doc in [Document::TrustRoot, Document::KeySet, Document::DeviceKey] {
            for twin in torsion_twins(1) {
                assert!(VerifyingKey::from_bytes(&twin).is_ok_and(|vk| !vk.is_weak()));
                assert_eq!(
                    check_public_key(&twin, doc).err(),
                    Some(Error::KeyOutsideSubgroup(doc))
                );
                assert_eq!(
                    check_keys(&[pk(1), twin], 2, doc),
                    Err(Error::KeyOutsideSubgroup(doc))
                );
            }
        }
        // Prime-order keys pass.
        for seed in 1..=40 {
            assert!(check_public_key(&pk(seed), Document::KeySet).is_ok());
        }
    }

    /// Signs `message` with the secret of `seed` as if its public key were `twin`: the
    /// signature verifies (strictly) under `twin` whenever the challenge hash is a multiple of
    /// the torsion component's order, one message in eight for a point of order 8.
    fn sign_as(seed: u8, twin: &PublicKey, message: &[u8]) -> SignatureEntry {
        let esk = ed25519_dalek::hazmat::ExpandedSecretKey::from(&[seed; 32]);
        let vk = VerifyingKey::from_bytes(twin).unwrap();
        let sig = ed25519_dalek::hazmat::raw_sign::<Sha512>(&esk, message, &vk);
        SignatureEntry {
            key_id: key_id(twin),
            signature: sig.to_bytes(),
        }
    }

    #[test]
    fn one_secret_signing_as_a_and_a_plus_torsion_does_not_meet_two_of_two() {
        // The attack: A and A + T (T of order 8) are distinct bytes and distinct key ids, and
        // one secret makes signatures that verify_strict accepts under both.
        let twin = torsion_twins(1).nth(6).unwrap();
        let key = SigningKey::from_bytes(&[1; 32]);
        let mut message = *b"SGL-MNFT\x01\x00body 00";
        let both = (0..=255u8)
            .find_map(|i| {
                message[message.len() - 1] = i;
                let forged = sign_as(1, &twin, &message);
                let vk = VerifyingKey::from_bytes(&twin).unwrap();
                vk.verify_strict(&message, &Signature::from_bytes(&forged.signature))
                    .is_ok()
                    .then(|| [SignatureEntry::sign(&key, &message), forged])
            })
            .expect("one message in eight lets the secret of A sign for A + T");
        // Unchecked, the two entries would count as two keys.
        let allowed = [pk(1), twin];
        assert_eq!(
            verify_threshold(&message, both, &allowed, 2, Signed::Manifest),
            Ok(()),
            "the premise: only the key check stands in the way"
        );
        // Every trust root and key set passes check_keys, which refuses the twin.
        assert_eq!(
            check_keys(&allowed, 2, Document::KeySet),
            Err(Error::KeyOutsideSubgroup(Document::KeySet))
        );
    }

    /// Every 32-byte string whose y is not reduced, and the negative-zero x encodings.
    fn non_canonical_encodings() -> impl Iterator<Item = PublicKey> {
        let p_plus = (0..19u8).map(|k| {
            let mut b = [0xff; 32];
            b[0] = 0xed + k;
            b[31] = 0x7f;
            b
        });
        let mut one = [0u8; 32];
        one[0] = 1;
        let mut minus_one = [0xff; 32];
        minus_one[0] = 0xec;
        minus_one[31] = 0x7f;
        p_plus
            .chain([one, minus_one])
            .flat_map(|b| {
                let mut signed = b;
                signed[31] |= 0x80;
                [b, signed]
            })
            .filter(move |b| !(b == &one || b == &minus_one))
    }

    #[test]
    fn canonical_encoding_is_what_decompress_then_compress_gives() {
        let mut decodable = 0;
        for b in non_canonical_encodings() {
            assert!(!is_canonical_encoding(&b), "{b:02x?}");
            if let Ok(vk) = VerifyingKey::from_bytes(&b) {
                decodable += 1;
                assert_ne!(vk.to_edwards().compress().to_bytes(), b);
            }
        }
        assert!(decodable > 10, "{decodable}");
        // Canonical encodings, including the sign bit on points with x != 0.
        for seed in 1..=40u8 {
            let key = pk(seed);
            assert!(is_canonical_encoding(&key));
            let vk = VerifyingKey::from_bytes(&key).unwrap();
            let minus = (-vk.to_edwards()).compress().to_bytes();
            assert_eq!(minus[31] ^ key[31], 0x80);
            assert!(is_canonical_encoding(&minus));
        }
    }

    #[test]
    fn non_canonical_encodings_never_count_as_a_second_key() {
        for b in non_canonical_encodings() {
            let Ok(vk) = VerifyingKey::from_bytes(&b) else {
                continue;
            };
            // The same point under its canonical bytes: the list never passes as two keys.
            let canonical = vk.to_edwards().compress().to_bytes();
            assert!(check_keys(&[canonical, b], 1, Document::KeySet).is_err());
            assert_eq!(
                check_public_key(&b, Document::KeySet).err(),
                Some(Error::NonCanonicalKey(Document::KeySet))
            );
            // Why comparing canonical bytes is comparing points: no point of the prime-order
            // subgroup other than the (small-order) identity has a second encoding.
            let p = vk.to_edwards();
            assert!(p.is_small_order() || !p.is_torsion_free(), "{b:02x?}");
        }
    }

    #[test]
    fn more_allowed_keys_than_the_format_holds_are_refused() {
        let msg = b"SGL-MNFT\x01\x00body";
        let keys: [PublicKey; 9] = core::array::from_fn(|i| pk(i as u8 + 1));
        let s9 = SignatureEntry::sign(&SigningKey::from_bytes(&[9; 32]), msg);
        assert_eq!(
            verify_threshold(msg, [s9], &keys, 1, Signed::Manifest),
            Err(Error::TooLarge(Document::KeySet))
        );
        assert_eq!(
            check_keys(&keys, 1, Document::TrustRoot),
            Err(Error::TooLarge(Document::TrustRoot))
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

    /// Ours and ed25519-dalek's `verify_strict`, over the same bytes; `None` where the key
    /// bytes are not a point (both refuse those before verifying).
    fn both(key: &PublicKey, message: &[u8], signature: &[u8; 64]) -> Option<(bool, bool)> {
        let vk = VerifyingKey::from_bytes(key).ok()?;
        let theirs = vk
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok();
        let ours = verify_strict(key, message, signature).unwrap();
        Some((ours, theirs))
    }

    /// `s + l` (little-endian), which fits in 32 bytes for the `s` of real signatures.
    fn plus_l(s: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(s[i]) + u16::from(GROUP_ORDER[i]) + carry;
            out[i] = sum as u8;
            carry = sum >> 8;
        }
        out
    }

    #[test]
    fn the_subgroup_scalar_is_minus_one() {
        assert_eq!(MINUS_ONE, -Scalar::ONE);
        assert_eq!(MINUS_ONE + Scalar::ONE, Scalar::ZERO);
        assert_eq!(MINUS_ONE.to_bytes(), (-Scalar::ONE).to_bytes());
    }

    #[test]
    fn canonical_scalars_are_exactly_those_below_l() {
        assert!(is_canonical_scalar(&[0; 32]));
        let mut below = GROUP_ORDER;
        below[0] -= 1;
        assert!(is_canonical_scalar(&below));
        assert!(!is_canonical_scalar(&GROUP_ORDER));
        let mut above = GROUP_ORDER;
        above[0] += 1;
        assert!(!is_canonical_scalar(&above));
        assert!(!is_canonical_scalar(&[0xff; 32]));
        // Agrees with curve25519-dalek's reduction for values around l and its high limbs.
        for (i, b) in [
            (0usize, 0xecu8),
            (15, 0x15),
            (16, 1),
            (31, 0x0f),
            (31, 0x10),
            (31, 0x11),
            (31, 0x80),
        ] {
            let mut x = GROUP_ORDER;
            x[i] = b;
            let dalek: Option<Scalar> = Scalar::from_canonical_bytes(x).into();
            assert_eq!(is_canonical_scalar(&x), dalek.is_some(), "{x:02x?}");
        }
    }

    #[test]
    fn agrees_with_ed25519_dalek_verify_strict() {
        let mut checked = 0;
        let mut accepted = 0;
        let mut check = |key: &PublicKey, message: &[u8], signature: &[u8; 64]| {
            if let Some((ours, theirs)) = both(key, message, signature) {
                assert_eq!(ours, theirs, "key {key:02x?} sig {signature:02x?}");
                checked += 1;
                accepted += usize::from(ours);
            }
        };
        let small: Vec<[u8; 32]> = EIGHT_TORSION
            .iter()
            .map(|t| t.compress().to_bytes())
            .collect();
        for seed in 1..=24u8 {
            let signer = SigningKey::from_bytes(&[seed; 32]);
            let key = signer.verifying_key().to_bytes();
            let message = [seed; 40];
            let good = SignatureEntry::sign(&signer, &message).signature;
            check(&key, &message, &good);
            // Every single-bit flip of the signature, and of the message's first byte.
            for bit in 0..512 {
                let mut bad = good;
                bad[bit / 8] ^= 1 << (bit % 8);
                check(&key, &message, &bad);
            }
            let mut other = message;
            other[0] ^= 1;
            check(&key, &other, &good);
            // Malleated s: s + l (same point equation, non-canonical), l, and 2^255 - 1.
            let mut malleated = good;
            malleated[32..].copy_from_slice(&plus_l(&good[32..]));
            check(&key, &message, &malleated);
            for s in [GROUP_ORDER, [0xff; 32]] {
                let mut bad = good;
                bad[32..].copy_from_slice(&s);
                check(&key, &message, &bad);
            }
            // Small-order and non-canonical R.
            for r in small
                .iter()
                .chain(non_canonical_encodings().collect::<Vec<_>>().iter())
            {
                let mut bad = good;
                bad[..32].copy_from_slice(r);
                check(&key, &message, &bad);
            }
            // Keys with a torsion component, signed for by the secret of A (one message in
            // eight verifies under both libraries).
            for twin in torsion_twins(seed) {
                for i in 0..16u8 {
                    let msg = [i; 8];
                    check(&twin, &msg, &sign_as(seed, &twin, &msg).signature);
                }
            }
        }
        // Small-order keys: the identity key and signature (R = identity, s = 0) "verify" under
        // the plain equation; both refuse them.
        for key in &small {
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(&small[0]);
            check(key, b"any message", &sig);
            for r in &small {
                sig[..32].copy_from_slice(r);
                check(key, b"any message", &sig);
            }
        }
        assert!(checked > 24 * 600, "{checked}");
        assert!(accepted > 24, "{accepted}");
    }
}
