//! Encrypted payloads (FORMAT.md §9): per-device key records over one fleet-wide ciphertext.
//!
//! A release has a random 256-bit content key (CEK). From it and the image's SHA-256, HKDF-SHA512
//! derives the ChaCha20 key and nonce of the payload and the key commitment the signed manifest
//! carries. Each device that may install the release gets a key record (`SGL-WKEY`): the CEK
//! masked with a key-encryption key that only the device's X25519 private key re-derives.
//!
//! A device opens a record against a [`VerifiedBundle`] (steps D1–D4): the record must name
//! this device's key and this release, and the CEK it yields must match the manifest's key
//! commitment, all before anything is written. It then decrypts the payload with a
//! [`PayloadCipher`], which seeks: a resumable swap decrypts sector by sector from any offset.
//! The installed image is then verified like any other, against the manifest's plaintext
//! digest ([`crate::EncryptedPayload::Decrypted`]); no MAC is needed, because the signed
//! digests give integrity and the commitment catches a wrong key.
//!
//! The same functions make what the signer writes: [`ContentKey::encryption`] for the manifest,
//! [`ContentKey::wrap`] for each record, [`PayloadCipher`] for the ciphertext.

use chacha20::cipher::consts::U10;
use chacha20::cipher::{Block, KeyIvInit, StreamCipherCore, StreamCipherSeekCore};
use chacha20::ChaChaCore;
use curve25519_dalek::montgomery::MontgomeryPoint;
use hkdf::SimpleHkdf as Hkdf;
use sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroize;

use crate::codec::{check_prefix, FORMAT_VERSION, PREFIX_LEN};
use crate::error::{Document, Error};
use crate::manifest::{Cipher, Encryption};
use crate::verify::VerifiedBundle;

/// Domain-separation tag of a key record.
pub const KEY_RECORD_TAG: &[u8; 8] = b"SGL-WKEY";

/// Length of a key record: the prefix and four 32-byte fields.
pub const KEY_RECORD_LEN: usize = PREFIX_LEN + 4 * 32;

/// Longest payload ChaCha20 encrypts: 2^32 blocks of 64 bytes (256 GiB), its 32-bit counter.
pub const MAX_ENCRYPTED_PAYLOAD: u64 = 1 << 38;

/// HKDF info of the key commitment.
const COMMITMENT_INFO: &[u8] = b"SIGIL-CEK-COMMITMENT-V1";
/// HKDF info of the payload's ChaCha20 key and nonce.
const PAYLOAD_INFO: &[u8] = b"SIGIL-PAYLOAD-CHACHA20-V1";
/// HKDF info prefix of a key record's key-encryption key.
const WRAP_INFO: &[u8] = b"SIGIL-WKEY-V1";

/// The id of a device's encryption key: SHA-256 of its 32-byte X25519 public key.
pub fn recipient_id(public: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(public).into()
}

/// A per-device key record (`SGL-WKEY`, FORMAT.md §9). Not signed: a forged record yields a
/// content key that fails the commitment (step D4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRecord {
    /// [`recipient_id`] of the device key the record is for.
    pub recipient: [u8; 32],
    /// The ephemeral X25519 public key of this record.
    pub ephemeral: [u8; 32],
    /// The release: SHA-256 of its exact signed manifest bytes
    /// ([`VerifiedBundle::manifest_digest`]).
    pub release: [u8; 32],
    /// The content key, masked with the record's key-encryption key.
    pub wrapped_key: [u8; 32],
}

impl KeyRecord {
    /// Strict decode (step D1): tag, format version 1, exactly four 32-byte fields.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let body = check_prefix(bytes, KEY_RECORD_TAG, Document::KeyRecord)?;
        let (fields, rest) = body.as_chunks::<32>();
        match fields {
            [recipient, ephemeral, release, wrapped_key] if rest.is_empty() => Ok(KeyRecord {
                recipient: *recipient,
                ephemeral: *ephemeral,
                release: *release,
                wrapped_key: *wrapped_key,
            }),
            // More than the four fields: bytes after the value.
            [_, _, _, _, ..] => Err(Error::TrailingBytes(Document::KeyRecord)),
            // The value ends early.
            _ => Err(Error::Malformed(Document::KeyRecord)),
        }
    }

    /// The record's bytes (the postcard encoding of four byte arrays behind the prefix).
    pub fn encode(&self) -> [u8; KEY_RECORD_LEN] {
        let mut out = [0u8; KEY_RECORD_LEN];
        let fields = [
            &KEY_RECORD_TAG[..],
            &FORMAT_VERSION.to_le_bytes(),
            &self.recipient,
            &self.ephemeral,
            &self.release,
            &self.wrapped_key,
        ];
        let mut rest = &mut out[..];
        for field in fields {
            // The fields add up to KEY_RECORD_LEN exactly: every split succeeds.
            if let Some((head, tail)) = core::mem::take(&mut rest).split_at_mut_checked(field.len())
            {
                head.copy_from_slice(field);
                rest = tail;
            }
        }
        out
    }
}

/// A device's X25519 key pair (the private key lives in the bootloader's protected storage).
#[derive(Clone)]
pub struct DeviceKey {
    secret: [u8; 32],
    public: [u8; 32],
}

impl Drop for DeviceKey {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl core::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeviceKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl DeviceKey {
    /// A key pair from its provisioned halves (no scalar multiplication: the bootloader's
    /// way). A public key that does not belong to `secret` makes every record fail step D2 or
    /// D4.
    pub fn new(secret: [u8; 32], public: [u8; 32]) -> Self {
        DeviceKey { secret, public }
    }

    /// A key pair from its private key alone (RFC 7748 clamping), computing the public key.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let public = MontgomeryPoint::mul_base_clamped(secret).to_bytes();
        DeviceKey { secret, public }
    }

    /// The X25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The key's [`recipient_id`].
    pub fn id(&self) -> [u8; 32] {
        recipient_id(&self.public)
    }

    /// Steps D1–D4: the content key of `bundle` from this device's key record, checked
    /// against the manifest's key commitment before anything is written.
    pub fn open(&self, record: &[u8], bundle: &VerifiedBundle<'_>) -> Result<ContentKey, Error> {
        let encryption = bundle
            .manifest()
            .payload_format
            .encryption()
            .ok_or(Error::NotEncrypted)?;
        self.open_for(record, &bundle.manifest_digest(), encryption)
    }

    /// As [`DeviceKey::open`], for a release known by its manifest digest and encryption
    /// parameters (the caller took both from a verified manifest).
    pub fn open_for(
        &self,
        record: &[u8],
        release: &[u8; 32],
        encryption: &Encryption,
    ) -> Result<ContentKey, Error> {
        // D1: strict decode.
        let record = KeyRecord::decode(record)?;
        // D2: this device, this release.
        if record.recipient != self.id() {
            return Err(Error::KeyRecordForOtherDevice);
        }
        if record.release != *release {
            return Err(Error::KeyRecordForOtherRelease);
        }
        // D3: the key-encryption key from X25519(device secret, ephemeral).
        let shared = MontgomeryPoint(record.ephemeral).mul_clamped(self.secret);
        let mask = wrap_mask(&shared, &record.ephemeral, &self.public, release)?;
        let mut key = record.wrapped_key;
        xor(&mut key, &mask);
        let key = ContentKey(key);
        // D4: the commitment the release keys signed.
        key.check(encryption)?;
        Ok(key)
    }
}

/// A release's content encryption key (CEK).
#[derive(Clone)]
pub struct ContentKey([u8; 32]);

impl Drop for ContentKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl core::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ContentKey(..)")
    }
}

/// What HKDF-SHA512 derives from a content key for one image.
struct Derived {
    commitment: [u8; 32],
    key: [u8; 32],
    nonce: [u8; 12],
}

impl ContentKey {
    /// A content key from its 32 bytes (a fresh random key, or a content-key file's).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ContentKey(bytes)
    }

    /// The key's bytes (for the signer's content-key file).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// One HKDF extract (salt: the image's SHA-256, so one key over another image never
    /// repeats a keystream), then the commitment and the payload key and nonce.
    fn derive(&self, plaintext_digest: &[u8; 32]) -> Derived {
        let hkdf = Hkdf::<Sha512>::new(Some(plaintext_digest), &self.0);
        let mut commitment = [0u8; 32];
        let mut okm = [0u8; 44];
        // Both lengths are far below HKDF-SHA512's limit (255 × 64 bytes): these never fail.
        let _ = hkdf.expand(COMMITMENT_INFO, &mut commitment);
        let _ = hkdf.expand(PAYLOAD_INFO, &mut okm);
        let (key, nonce) = okm.split_at(32);
        let mut d = Derived {
            commitment,
            key: [0; 32],
            nonce: [0; 12],
        };
        d.key.copy_from_slice(key);
        d.nonce.copy_from_slice(nonce);
        okm.zeroize();
        d
    }

    /// The manifest's `payload_format` parameters for an image with this SHA-256.
    pub fn encryption(&self, plaintext_digest: [u8; 32]) -> Encryption {
        Encryption {
            cipher: Cipher::ChaCha20,
            plaintext_digest,
            key_commitment: self.derive(&plaintext_digest).commitment,
        }
    }

    /// Step D4: this key is the one the manifest commits to.
    pub fn check(&self, encryption: &Encryption) -> Result<(), Error> {
        if self.derive(&encryption.plaintext_digest).commitment == encryption.key_commitment {
            Ok(())
        } else {
            Err(Error::WrongContentKey)
        }
    }

    /// Steps D4–D5: the payload keystream of a release of `payload_size` bytes (the same
    /// transform encrypts and decrypts).
    pub fn payload_cipher(
        &self,
        encryption: &Encryption,
        payload_size: u64,
    ) -> Result<PayloadCipher, Error> {
        // One derivation gives the commitment (step D4) and the keystream's key and nonce.
        let mut d = self.derive(&encryption.plaintext_digest);
        if d.commitment != encryption.key_commitment {
            d.key.zeroize();
            return Err(Error::WrongContentKey);
        }
        match encryption.cipher {
            Cipher::ChaCha20 => {}
        }
        if payload_size > MAX_ENCRYPTED_PAYLOAD {
            d.key.zeroize();
            return Err(Error::PayloadTooLongForCipher);
        }
        let cipher = Keystream::new(&d.key, &d.nonce);
        d.key.zeroize();
        Ok(PayloadCipher {
            cipher,
            len: payload_size,
        })
    }

    /// A key record of this key for the device with X25519 public key `recipient`, for the
    /// release whose manifest digest is `release`. `ephemeral_secret` must be 32 fresh random
    /// bytes, used for this record only.
    pub fn wrap(
        &self,
        recipient: &[u8; 32],
        ephemeral_secret: [u8; 32],
        release: [u8; 32],
    ) -> Result<KeyRecord, Error> {
        let ephemeral = MontgomeryPoint::mul_base_clamped(ephemeral_secret).to_bytes();
        let shared = MontgomeryPoint(*recipient).mul_clamped(ephemeral_secret);
        let mask = wrap_mask(&shared, &ephemeral, recipient, &release)?;
        let mut wrapped_key = self.0;
        xor(&mut wrapped_key, &mask);
        Ok(KeyRecord {
            recipient: recipient_id(recipient),
            ephemeral,
            release,
            wrapped_key,
        })
    }
}

/// The key-encryption key of a record (step D3): HKDF-SHA512 of the X25519 shared secret,
/// bound to both public keys and the release. An all-zero shared secret (a small-order point
/// on either side) is refused (RFC 7748 §6.1).
fn wrap_mask(
    shared: &MontgomeryPoint,
    ephemeral: &[u8; 32],
    recipient: &[u8; 32],
    release: &[u8; 32],
) -> Result<[u8; 32], Error> {
    let mut secret = shared.to_bytes();
    if secret.iter().all(|&b| b == 0) {
        return Err(Error::WeakKeyRecord);
    }
    let hkdf = Hkdf::<Sha512>::new(None, &secret);
    secret.zeroize();
    let mut mask = [0u8; 32];
    // 32 bytes is far below HKDF-SHA512's limit: this never fails.
    let _ = hkdf.expand_multi_info(&[WRAP_INFO, ephemeral, recipient, release], &mut mask);
    Ok(mask)
}

fn xor(dst: &mut [u8; 32], mask: &[u8; 32]) {
    for (d, m) in dst.iter_mut().zip(mask) {
        *d ^= m;
    }
}

/// The ChaCha20 keystream of one payload, applied at any offset (step D5).
pub struct PayloadCipher {
    cipher: Keystream,
    len: u64,
}

/// A ChaCha20 keystream (RFC 8439: 256-bit key, 96-bit nonce, 32-bit block counter from 0),
/// applied at any byte offset. Without feature `alloc` (the bootloader) it drives the
/// `chacha20` crate's block function directly, one 64-byte block at a time, without the
/// crate's buffering stream wrapper: about 1 KiB less flash. The host tools (feature `alloc`)
/// keep the wrapper, whose SIMD backends make several blocks at once. Both give the same bytes
/// (`the_bare_block_keystream_is_the_stream_ciphers`).
pub struct Keystream {
    #[cfg(feature = "alloc")]
    stream: chacha20::ChaCha20,
    #[cfg(not(feature = "alloc"))]
    core: ChaChaCore<U10>,
}

impl core::fmt::Debug for Keystream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Keystream").finish_non_exhaustive()
    }
}

impl Keystream {
    /// The keystream of `key` and `nonce`.
    pub fn new(key: &[u8; 32], nonce: &[u8; 12]) -> Self {
        Keystream {
            #[cfg(feature = "alloc")]
            stream: KeyIvInit::new(key.into(), nonce.into()),
            #[cfg(not(feature = "alloc"))]
            core: ChaChaCore::new(key.into(), nonce.into()),
        }
    }

    /// XORs the keystream from byte `offset` on into `data`. Fails with `OutsidePayload`,
    /// changing nothing, if that passes the 2^32 blocks of the counter.
    pub fn apply(&mut self, offset: u64, data: &mut [u8]) -> Result<(), Error> {
        let len = u64::try_from(data.len()).map_err(|_| Error::OutsidePayload)?;
        let end = offset.checked_add(len).ok_or(Error::OutsidePayload)?;
        if end > MAX_ENCRYPTED_PAYLOAD {
            return Err(Error::OutsidePayload);
        }
        #[cfg(feature = "alloc")]
        {
            use chacha20::cipher::{StreamCipher, StreamCipherSeek};
            self.stream
                .try_seek(offset)
                .map_err(|_| Error::OutsidePayload)?;
            self.stream
                .try_apply_keystream(data)
                .map_err(|_| Error::OutsidePayload)
        }
        #[cfg(not(feature = "alloc"))]
        {
            apply_blocks(&mut self.core, offset, data);
            Ok(())
        }
    }
}

/// XORs the keystream of `core` from byte `offset` into `data`, block by block; the caller
/// checked that `offset + data.len()` is within 2^32 blocks.
#[cfg_attr(all(feature = "alloc", not(test)), allow(dead_code))]
fn apply_blocks(core: &mut ChaChaCore<U10>, offset: u64, data: &mut [u8]) {
    let mut block = offset / 64;
    let mut skip = (offset % 64) as usize;
    let mut keystream = Block::<ChaChaCore<U10>>::default();
    let mut rest = data;
    while !rest.is_empty() {
        // Below 2^32 blocks: the caller's check.
        core.set_block_pos(block as u32);
        core.write_keystream_block(&mut keystream);
        let take = rest.len().min(64usize.saturating_sub(skip));
        let (now, tail) = core::mem::take(&mut rest).split_at_mut(take);
        for (d, k) in now.iter_mut().zip(keystream.iter().skip(skip)) {
            *d ^= k;
        }
        rest = tail;
        skip = 0;
        block = block.saturating_add(1);
    }
    keystream.as_mut_slice().zeroize();
}

impl core::fmt::Debug for PayloadCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PayloadCipher")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl PayloadCipher {
    /// The payload length the keystream covers.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the payload is empty (never, for a verified manifest).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// XORs the keystream at payload offset `offset` into `data` (encrypts plaintext,
    /// decrypts ciphertext). `offset + data.len()` must lie within the payload.
    pub fn apply(&mut self, offset: u64, data: &mut [u8]) -> Result<(), Error> {
        let end = u64::try_from(data.len())
            .ok()
            .and_then(|n| offset.checked_add(n))
            .ok_or(Error::OutsidePayload)?;
        if end > self.len {
            return Err(Error::OutsidePayload);
        }
        self.cipher.apply(offset, data)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // fixed test sizes
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    #[test]
    fn the_bare_block_keystream_is_the_stream_ciphers() {
        use chacha20::cipher::{StreamCipher, StreamCipherSeek};
        let (key, nonce) = ([7u8; 32], [9u8; 12]);
        let mut core: ChaChaCore<U10> = ChaChaCore::new((&key).into(), (&nonce).into());
        let mut stream: chacha20::ChaCha20 = KeyIvInit::new((&key).into(), (&nonce).into());
        // Offsets inside and across blocks, lengths from 0 to several blocks.
        for (offset, len) in [
            (0u64, 0usize),
            (0, 1),
            (0, 64),
            (1, 63),
            (63, 2),
            (64, 64),
            (100, 300),
            (4095, 4097),
            (1 << 20, 256),
            ((1 << 38) - 4096, 1000),
        ] {
            let mut a: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut b = a.clone();
            apply_blocks(&mut core, offset, &mut a);
            stream.seek(offset);
            stream.apply_keystream(&mut b);
            assert_eq!(a, b, "offset {offset}, len {len}");
        }
    }

    fn encryption_for(key: &ContentKey, image: &[u8]) -> Encryption {
        key.encryption(Sha256::digest(image).into())
    }

    #[test]
    fn key_record_round_trip_and_strict_decode() {
        let record = KeyRecord {
            recipient: [1; 32],
            ephemeral: [2; 32],
            release: [3; 32],
            wrapped_key: [4; 32],
        };
        let bytes = record.encode();
        assert_eq!(&bytes[..8], b"SGL-WKEY");
        assert_eq!(KeyRecord::decode(&bytes), Ok(record));
        assert_eq!(
            KeyRecord::decode(&bytes[..KEY_RECORD_LEN - 1]),
            Err(Error::Malformed(Document::KeyRecord))
        );
        for extra in [1, 31, 32, 33] {
            let mut long = bytes.to_vec();
            long.extend_from_slice(&[0; 33][..extra]);
            assert_eq!(
                KeyRecord::decode(&long),
                Err(Error::TrailingBytes(Document::KeyRecord)),
                "{extra}"
            );
        }
        let mut v2 = bytes;
        v2[8] = 2;
        assert_eq!(
            KeyRecord::decode(&v2),
            Err(Error::UnsupportedVersion(Document::KeyRecord, 2))
        );
        let mut tag = bytes;
        tag[0] = b'X';
        assert_eq!(
            KeyRecord::decode(&tag),
            Err(Error::WrongTag(Document::KeyRecord))
        );
    }

    #[test]
    fn wrap_then_open_yields_the_content_key() {
        let device = DeviceKey::from_secret([7; 32]);
        let other = DeviceKey::from_secret([8; 32]);
        let cek = ContentKey::from_bytes([9; 32]);
        let enc = encryption_for(&cek, b"image");
        let release = [5; 32];
        let record = cek.wrap(&device.public_key(), [11; 32], release).unwrap();
        assert_eq!(record.recipient, device.id());
        let opened = device.open_for(&record.encode(), &release, &enc).unwrap();
        assert_eq!(opened.to_bytes(), cek.to_bytes());
        // Another device, another release, a tampered wrapped key.
        assert_eq!(
            other
                .open_for(&record.encode(), &release, &enc)
                .unwrap_err(),
            Error::KeyRecordForOtherDevice
        );
        assert_eq!(
            device
                .open_for(&record.encode(), &[6; 32], &enc)
                .unwrap_err(),
            Error::KeyRecordForOtherRelease
        );
        let mut bad = record;
        bad.wrapped_key[0] ^= 1;
        assert_eq!(
            device.open_for(&bad.encode(), &release, &enc).unwrap_err(),
            Error::WrongContentKey
        );
        // A record for another device relabelled with this device's id yields garbage.
        let foreign = cek.wrap(&other.public_key(), [12; 32], release).unwrap();
        let relabelled = KeyRecord {
            recipient: device.id(),
            ..foreign
        };
        assert_eq!(
            device
                .open_for(&relabelled.encode(), &release, &enc)
                .unwrap_err(),
            Error::WrongContentKey
        );
        // A small-order ephemeral key (the identity, u = 0) is refused.
        let weak = KeyRecord {
            ephemeral: [0; 32],
            ..record
        };
        assert_eq!(
            device.open_for(&weak.encode(), &release, &enc).unwrap_err(),
            Error::WeakKeyRecord
        );
        assert_eq!(
            cek.wrap(&[0; 32], [13; 32], release).unwrap_err(),
            Error::WeakKeyRecord
        );
    }

    #[test]
    fn commitment_binds_key_and_image() {
        let cek = ContentKey::from_bytes([1; 32]);
        let enc = encryption_for(&cek, b"image one");
        assert!(cek.check(&enc).is_ok());
        assert_eq!(
            ContentKey::from_bytes([2; 32]).check(&enc),
            Err(Error::WrongContentKey)
        );
        let other_image = encryption_for(&cek, b"image two");
        assert_ne!(enc.key_commitment, other_image.key_commitment);
    }

    #[test]
    fn one_key_over_two_images_gives_two_keystreams() {
        let cek = ContentKey::from_bytes([3; 32]);
        let (a, b) = (
            encryption_for(&cek, b"first"),
            encryption_for(&cek, b"second"),
        );
        let mut ka = [0u8; 64];
        let mut kb = [0u8; 64];
        cek.payload_cipher(&a, 64)
            .unwrap()
            .apply(0, &mut ka)
            .unwrap();
        cek.payload_cipher(&b, 64)
            .unwrap()
            .apply(0, &mut kb)
            .unwrap();
        assert_ne!(ka, kb);
    }

    #[test]
    fn transform_at_any_offset_and_chunking_matches_one_pass() {
        let cek = ContentKey::from_bytes([4; 32]);
        let image: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + 3) as u8).collect();
        let enc = encryption_for(&cek, &image);
        let mut whole = image.clone();
        let mut c = cek.payload_cipher(&enc, image.len() as u64).unwrap();
        c.apply(0, &mut whole).unwrap();
        assert_ne!(whole, image);
        for chunk in [1usize, 63, 64, 65, 4096, 9999] {
            // Chunks applied out of order (last first), as a resumed swap would.
            let mut pieces = image.clone();
            let starts: Vec<usize> = (0..image.len()).step_by(chunk).collect();
            for &start in starts.iter().rev() {
                let end = (start + chunk).min(image.len());
                c.apply(start as u64, &mut pieces[start..end]).unwrap();
            }
            assert_eq!(pieces, whole, "chunk {chunk}");
        }
        // Decrypting restores the image.
        c.apply(0, &mut whole).unwrap();
        assert_eq!(whole, image);
    }

    #[test]
    fn transform_refuses_bytes_outside_the_payload() {
        let cek = ContentKey::from_bytes([5; 32]);
        let enc = encryption_for(&cek, b"x");
        let mut c = cek.payload_cipher(&enc, 100).unwrap();
        let mut buf = [0u8; 10];
        assert!(c.apply(90, &mut buf).is_ok());
        assert_eq!(c.apply(91, &mut buf), Err(Error::OutsidePayload));
        assert_eq!(c.apply(u64::MAX, &mut buf), Err(Error::OutsidePayload));
        assert_eq!(
            cek.payload_cipher(&enc, MAX_ENCRYPTED_PAYLOAD + 1)
                .unwrap_err(),
            Error::PayloadTooLongForCipher
        );
        // The last block of the largest payload is reachable.
        let mut big = cek.payload_cipher(&enc, MAX_ENCRYPTED_PAYLOAD).unwrap();
        assert!(big.apply(MAX_ENCRYPTED_PAYLOAD - 10, &mut buf).is_ok());
        assert_eq!(
            ContentKey::from_bytes([6; 32])
                .payload_cipher(&enc, 100)
                .unwrap_err(),
            Error::WrongContentKey
        );
    }

    #[test]
    fn device_key_from_parts_equals_from_secret() {
        let k = DeviceKey::from_secret([9; 32]);
        let parts = DeviceKey::new([9; 32], k.public_key());
        assert_eq!(parts.id(), k.id());
    }
}
