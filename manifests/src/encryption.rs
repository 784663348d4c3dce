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

#[cfg(feature = "alloc")]
use chacha20::cipher::KeyIvInit;
use curve25519_dalek::montgomery::MontgomeryPoint;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::codec::{check_prefix, FORMAT_VERSION, PREFIX_LEN};
use crate::error::{Document, Error};
use crate::keys::sha512;
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
    // As a slice: one instantiation of the generic `digest` (see `keys::key_id`).
    Sha256::digest(public.as_slice()).into()
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
        let [recipient, ephemeral, release, wrapped_key] = Self::fields(bytes)?;
        Ok(KeyRecord {
            recipient: *recipient,
            ephemeral: *ephemeral,
            release: *release,
            wrapped_key: *wrapped_key,
        })
    }

    /// [`KeyRecord::decode`] without copying: the four fields, in place in `bytes`.
    fn fields(bytes: &[u8]) -> Result<[&[u8; 32]; 4], Error> {
        let body = check_prefix(bytes, KEY_RECORD_TAG, Document::KeyRecord)?;
        let (fields, rest) = body.as_chunks::<32>();
        match fields {
            [recipient, ephemeral, release, wrapped_key] if rest.is_empty() => {
                Ok([recipient, ephemeral, release, wrapped_key])
            }
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
        let key = self.unwrap(record, release)?;
        // D4: the commitment the release keys signed.
        key.check(encryption)?;
        Ok(key)
    }

    /// Steps D1–D5 in one: the payload keystream of the release known by its manifest digest
    /// and encryption parameters (from a verified manifest), for a payload of `payload_size`
    /// bytes. The same as [`DeviceKey::open_for`] then [`ContentKey::payload_cipher`], with
    /// one HKDF derivation of the content key instead of two.
    pub fn open_cipher(
        &self,
        record: &[u8],
        release: &[u8; 32],
        encryption: &Encryption,
        payload_size: u64,
    ) -> Result<PayloadCipher, Error> {
        // D4 and D5: `payload_cipher` checks the commitment before it keys the stream.
        self.unwrap(record, release)?
            .payload_cipher(encryption, payload_size)
    }

    /// Steps D1–D3: the content key a record wraps for this device and release (not yet
    /// checked against the commitment).
    fn unwrap(&self, record: &[u8], release: &[u8; 32]) -> Result<ContentKey, Error> {
        // D1: strict decode (the fields stay in place).
        let [recipient, ephemeral, record_release, wrapped_key] = KeyRecord::fields(record)?;
        // D2: this device, this release.
        if *recipient != self.id() {
            return Err(Error::KeyRecordForOtherDevice);
        }
        if record_release != release {
            return Err(Error::KeyRecordForOtherRelease);
        }
        // D3: the key-encryption key from X25519(device secret, ephemeral).
        let shared = MontgomeryPoint(*ephemeral).mul_clamped(self.secret);
        let mut mask = wrap_mask(&shared, ephemeral, &self.public, release)?;
        let mut key = *wrapped_key;
        xor(&mut key, &mask);
        mask.zeroize();
        Ok(ContentKey(key))
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

/// What HKDF-SHA512 derives from a content key for one image: the commitment, and the first
/// output block of the payload info (its first 44 bytes are the keystream's key and nonce).
struct Derived {
    commitment: [u8; 32],
    payload: [u8; 64],
}

impl Drop for Derived {
    fn drop(&mut self) {
        self.payload.zeroize();
    }
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
        let mut prk = hkdf_extract(plaintext_digest, &self.0);
        let mut commitment = [0u8; 32];
        let mut block = hkdf_expand(&prk, &[COMMITMENT_INFO]);
        commitment.copy_from_slice(block.split_at(32).0);
        block.zeroize();
        let payload = hkdf_expand(&prk, &[PAYLOAD_INFO]);
        prk.zeroize();
        Derived {
            commitment,
            payload,
        }
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
        let d = self.derive(&encryption.plaintext_digest);
        if d.commitment != encryption.key_commitment {
            return Err(Error::WrongContentKey);
        }
        match encryption.cipher {
            Cipher::ChaCha20 => {}
        }
        if payload_size > MAX_ENCRYPTED_PAYLOAD {
            return Err(Error::PayloadTooLongForCipher);
        }
        Ok(PayloadCipher {
            cipher: Keystream::from_okm(&d.payload),
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
        let mut mask = wrap_mask(&shared, &ephemeral, recipient, &release)?;
        let mut wrapped_key = self.0;
        xor(&mut wrapped_key, &mask);
        mask.zeroize();
        Ok(KeyRecord {
            recipient: recipient_id(recipient),
            ephemeral,
            release,
            wrapped_key,
        })
    }
}

/// The key-encryption key of a record (step D3): HKDF-SHA512 of the X25519 shared secret,
/// bound to both public keys and the release; its first 32 bytes mask the content key (the
/// caller zeroizes the block). An all-zero shared secret (a small-order point on either side)
/// is refused (RFC 7748 §6.1).
fn wrap_mask(
    shared: &MontgomeryPoint,
    ephemeral: &[u8; 32],
    recipient: &[u8; 32],
    release: &[u8; 32],
) -> Result<[u8; 64], Error> {
    let mut secret = shared.to_bytes();
    // Every byte is read, without an early exit at the first non-zero one: only whether the
    // secret is all zero (then public, by the refusal) depends on its bytes.
    if secret.iter().fold(0u8, |acc, &b| acc | b) == 0 {
        return Err(Error::WeakKeyRecord);
    }
    // No salt: RFC 5869's default of 64 zero bytes, which HMAC pads like the empty key.
    let mut prk = hkdf_extract(&[], &secret);
    secret.zeroize();
    let block = hkdf_expand(&prk, &[WRAP_INFO, ephemeral, recipient, release]);
    prk.zeroize();
    Ok(block)
}

/// HKDF-Extract with SHA-512 (RFC 5869 §2.2): the pseudorandom key of `ikm` under `salt`.
fn hkdf_extract(salt: &[u8], ikm: &[u8]) -> [u8; 64] {
    hmac_sha512(salt, &[ikm], &[])
}

/// HKDF-Expand with SHA-512 (RFC 5869 §2.3), the first output block `T(1)`: every Sigil
/// derivation takes at most 64 bytes, so its output is a prefix of this block.
fn hkdf_expand(prk: &[u8; 64], info: &[&[u8]]) -> [u8; 64] {
    hmac_sha512(prk, info, &[1])
}

/// HMAC-SHA512 (RFC 2104) under `key` of the concatenation of `parts` and `tail`, over the
/// `sha2` hasher the signature check links anyway: one instantiation of the hasher's
/// `new`/`update`/`finalize` for every derivation (the `hkdf` and `hmac` crates linked about
/// 1 KiB of their own). Held to the `hkdf` crate by tests (`hkdf_is_the_hkdf_crates`).
fn hmac_sha512(key: &[u8], parts: &[&[u8]], tail: &[u8]) -> [u8; 64] {
    // The key, zero-padded to SHA-512's 128-byte block; a longer key is replaced by its hash.
    let mut pad = [0u8; 128];
    match pad.get_mut(..key.len()) {
        Some(head) => head.copy_from_slice(key),
        None => {
            if let Some(head) = pad.first_chunk_mut::<64>() {
                *head = sha512(key, &[], &[]);
            }
        }
    }
    for b in pad.iter_mut() {
        *b ^= 0x36;
    }
    let mut hash = sha512(&pad, parts, tail);
    // From the inner pad (key ^ 0x36) to the outer one (key ^ 0x5c).
    for b in pad.iter_mut() {
        *b ^= 0x36 ^ 0x5c;
    }
    let mac = sha512(&pad, &[], &hash);
    pad.zeroize();
    hash.zeroize();
    mac
}

/// XORs the first 32 bytes of `mask` into `dst`.
fn xor(dst: &mut [u8; 32], mask: &[u8; 64]) {
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
/// applied at any byte offset. Without feature `alloc` (the bootloader) it is this module's
/// block function (`ChaCha20Block`), one 64-byte block at a time: about 300 bytes less flash
/// than driving the `chacha20` crate's block function, and 1.3 KiB less than the crate's
/// buffering stream wrapper. The host tools (feature `alloc`) keep the wrapper, whose SIMD
/// backends make several blocks at once. Both give the same bytes
/// (`the_block_function_keystream_is_the_chacha20_crates`).
pub struct Keystream {
    #[cfg(feature = "alloc")]
    stream: chacha20::ChaCha20,
    #[cfg(not(feature = "alloc"))]
    core: ChaCha20Block,
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
            core: ChaCha20Block::new(key, nonce),
        }
    }

    /// The keystream whose key and nonce are the first 32 + 12 bytes of
    /// HKDF-SHA512(`salt`, `ikm`, the concatenation of `info`) (RFC 5869; an empty salt is
    /// its default one). The payload keystream is this of the content key (FORMAT.md §9);
    /// the bootloader's device-local swap keystream is this of the device key.
    pub fn derive(salt: &[u8], ikm: &[u8], info: &[&[u8]]) -> Self {
        let mut prk = hkdf_extract(salt, ikm);
        let mut okm = hkdf_expand(&prk, info);
        prk.zeroize();
        let cipher = Keystream::from_okm(&okm);
        okm.zeroize();
        cipher
    }

    /// The keystream of the key and nonce at the start of one HKDF output block.
    fn from_okm(okm: &[u8; 64]) -> Self {
        let (key, rest) = okm.split_at(32);
        let (nonce, _) = rest.split_at(12);
        Keystream {
            // Both lengths are those of the types: `from_slice` cannot fail.
            #[cfg(feature = "alloc")]
            stream: KeyIvInit::new(
                chacha20::Key::from_slice(key),
                chacha20::Nonce::from_slice(nonce),
            ),
            #[cfg(not(feature = "alloc"))]
            core: ChaCha20Block::new(key, nonce),
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
            self.core.apply(offset, data);
            Ok(())
        }
    }
}

/// The ChaCha20 block function of RFC 8439 §2.3 over one key and nonce: 20 rounds of
/// additions, XORs and fixed rotations of 32-bit words, so its time depends on no key or data
/// bit. Held to the `chacha20` crate by tests, at offsets inside, across and at the end of
/// the 2^32 blocks.
#[cfg_attr(all(feature = "alloc", not(test)), allow(dead_code))]
struct ChaCha20Block {
    /// The input block: constants, key, counter (word 12, set per block), nonce.
    state: [u32; 16],
}

impl Drop for ChaCha20Block {
    fn drop(&mut self) {
        self.state.zeroize();
    }
}

#[cfg_attr(all(feature = "alloc", not(test)), allow(dead_code))]
impl ChaCha20Block {
    /// The state of a 32-byte `key` and a 12-byte `nonce` (both lengths are the callers'
    /// types).
    fn new(key: &[u8], nonce: &[u8]) -> Self {
        // "expand 32-byte k", key, counter 0, nonce, as 16 little-endian words (§2.3).
        let mut state = [
            0x6170_7865,
            0x3320_646e,
            0x7962_2d32,
            0x6b20_6574,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        for (word, bytes) in state.iter_mut().skip(4).zip(key.as_chunks::<4>().0) {
            *word = u32::from_le_bytes(*bytes);
        }
        for (word, bytes) in state.iter_mut().skip(13).zip(nonce.as_chunks::<4>().0) {
            *word = u32::from_le_bytes(*bytes);
        }
        ChaCha20Block { state }
    }

    /// The keystream block `counter` (§2.3: 10 double rounds, then the input added).
    fn block(&self, counter: u32, out: &mut [u8; 64]) {
        let mut input = self.state;
        input[12] = counter;
        let mut x = input;
        for _ in 0..10 {
            for words in &QUARTER_ROUNDS {
                quarter_round(&mut x, *words);
            }
        }
        let words = x.iter().zip(input.iter());
        for (bytes, (word, start)) in out.as_chunks_mut::<4>().0.iter_mut().zip(words) {
            *bytes = word.wrapping_add(*start).to_le_bytes();
        }
        x.zeroize();
        input.zeroize();
    }

    /// XORs the keystream from byte `offset` into `data`, block by block; the caller checked
    /// that `offset + data.len()` is within 2^32 blocks.
    fn apply(&self, offset: u64, data: &mut [u8]) {
        // Below 2^32 blocks (the caller's check): the block number fits the counter, and it
        // only wraps after the last block, when no data is left.
        let mut block = (offset / 64) as u32;
        let mut skip = (offset % 64) as usize;
        let mut keystream = [0u8; 64];
        let mut rest = data;
        while !rest.is_empty() {
            self.block(block, &mut keystream);
            let take = rest.len().min(64usize.saturating_sub(skip));
            let (now, tail) = core::mem::take(&mut rest).split_at_mut(take);
            for (d, k) in now.iter_mut().zip(keystream.iter().skip(skip)) {
                *d ^= k;
            }
            rest = tail;
            skip = 0;
            block = block.wrapping_add(1);
        }
        keystream.zeroize();
    }
}

/// The words of the eight quarter rounds of a double round (RFC 8439 §2.3): the four columns,
/// then the four diagonals.
const QUARTER_ROUNDS: [[u8; 4]; 8] = [
    [0, 4, 8, 12],
    [1, 5, 9, 13],
    [2, 6, 10, 14],
    [3, 7, 11, 15],
    [0, 5, 10, 15],
    [1, 6, 11, 12],
    [2, 7, 8, 13],
    [3, 4, 9, 14],
];

/// The quarter round of RFC 8439 §2.1 on words `a`, `b`, `c`, `d` of `x`.
#[cfg_attr(all(feature = "alloc", not(test)), allow(dead_code))]
#[inline(never)]
// Every index is masked below 16, the length of `x`: none can fail, and none depends on data.
#[allow(clippy::indexing_slicing)]
fn quarter_round(x: &mut [u32; 16], [a, b, c, d]: [u8; 4]) {
    let (a, b, c, d) = (
        usize::from(a) & 15,
        usize::from(b) & 15,
        usize::from(c) & 15,
        usize::from(d) & 15,
    );
    let (mut wa, mut wb, mut wc, mut wd) = (x[a], x[b], x[c], x[d]);
    wa = wa.wrapping_add(wb);
    wd = (wd ^ wa).rotate_left(16);
    wc = wc.wrapping_add(wd);
    wb = (wb ^ wc).rotate_left(12);
    wa = wa.wrapping_add(wb);
    wd = (wd ^ wa).rotate_left(8);
    wc = wc.wrapping_add(wd);
    wb = (wb ^ wc).rotate_left(7);
    (x[a], x[b], x[c], x[d]) = (wa, wb, wc, wd);
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
    fn the_block_function_keystream_is_the_chacha20_crates() {
        use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
        for (key, nonce) in [([7u8; 32], [9u8; 12]), ([0xff; 32], [0; 12])] {
            let core = ChaCha20Block::new(&key, &nonce);
            let mut stream: chacha20::ChaCha20 = KeyIvInit::new((&key).into(), (&nonce).into());
            // Offsets inside and across blocks, lengths from 0 to several blocks, the last
            // blocks of the counter.
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
                core.apply(offset, &mut a);
                stream.seek(offset);
                stream.apply_keystream(&mut b);
                assert_eq!(a, b, "offset {offset}, len {len}");
            }
            // Single blocks up to the last one of the counter (which the crate's stream
            // wrapper does not reach), against the crate's block function.
            use chacha20::cipher::{StreamCipherCore, StreamCipherSeekCore};
            let mut reference: chacha20::ChaChaCore<chacha20::cipher::consts::U10> =
                KeyIvInit::new((&key).into(), (&nonce).into());
            for counter in [0u32, 1, 1 << 31, u32::MAX - 1, u32::MAX] {
                let mut ours = [0u8; 64];
                core.block(counter, &mut ours);
                let mut theirs = Default::default();
                reference.set_block_pos(counter);
                reference.write_keystream_block(&mut theirs);
                assert_eq!(ours[..], theirs[..], "block {counter}");
            }
        }
    }

    #[test]
    fn chacha20_block_function_test_vector() {
        // RFC 8439 §2.3.2: key 00..1f, nonce 00 00 00 09 00 00 00 4a 00 00 00 00, counter 1.
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        let nonce = [0, 0, 0, 9, 0, 0, 0, 0x4a, 0, 0, 0, 0];
        let mut out = [0u8; 64];
        ChaCha20Block::new(&key, &nonce).block(1, &mut out);
        assert_eq!(
            hex::encode(out),
            "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e\
             d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"
        );
    }

    /// The crate's HKDF (extract, then one expand of 1 to 64 bytes) against `hkdf` 0.12.
    fn reference_hkdf(salt: &[u8], ikm: &[u8], info: &[&[u8]], len: usize) -> Vec<u8> {
        let salt = if salt.is_empty() { None } else { Some(salt) };
        let hkdf = hkdf::Hkdf::<sha2::Sha512>::new(salt, ikm);
        let mut okm = std::vec![0u8; len];
        hkdf.expand_multi_info(info, &mut okm).unwrap();
        okm
    }

    #[test]
    fn hkdf_is_the_hkdf_crates() {
        // Salts and keys around SHA-512's 128-byte block (longer ones are hashed first), info
        // split into several parts, every output length the crate uses and the whole block.
        for salt_len in [0usize, 1, 32, 48, 64, 127, 128, 129, 200] {
            for ikm_len in [0usize, 32, 64, 128, 129] {
                let salt: Vec<u8> = (0..salt_len).map(|i| i as u8 ^ 0xa5).collect();
                let ikm: Vec<u8> = (0..ikm_len).map(|i| (i * 3) as u8).collect();
                let info: [&[u8]; 3] = [b"SIGIL-TEST", &salt[..salt_len.min(7)], &[9; 130]];
                let block = hkdf_expand(&hkdf_extract(&salt, &ikm), &info);
                for len in [1usize, 32, 44, 64] {
                    assert_eq!(
                        block[..len],
                        reference_hkdf(&salt, &ikm, &info, len)[..],
                        "salt {salt_len}, ikm {ikm_len}, len {len}"
                    );
                }
                assert_eq!(
                    hkdf_expand(&hkdf_extract(&salt, &ikm), &[])[..],
                    reference_hkdf(&salt, &ikm, &[], 64)[..]
                );
            }
        }
        // No salt is RFC 5869's 64 zero bytes.
        assert_eq!(hkdf_extract(&[], b"ikm"), hkdf_extract(&[0; 64], b"ikm"));
    }

    #[test]
    fn keystream_derive_keys_with_the_first_44_bytes() {
        let (salt, ikm, info) = ([1u8; 48], [2u8; 32], [&b"SIGIL-SWAP-V1"[..], &[1]]);
        let okm = reference_hkdf(&salt, &ikm, &info, 44);
        let mut a = [0u8; 200];
        let mut b = [0u8; 200];
        Keystream::derive(&salt, &ikm, &info)
            .apply(5, &mut a)
            .unwrap();
        Keystream::new(okm[..32].try_into().unwrap(), okm[32..].try_into().unwrap())
            .apply(5, &mut b)
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn open_cipher_is_open_for_then_payload_cipher() {
        let device = DeviceKey::from_secret([7; 32]);
        let cek = ContentKey::from_bytes([9; 32]);
        let enc = encryption_for(&cek, b"image");
        let release = [5; 32];
        let record = cek
            .wrap(&device.public_key(), [11; 32], release)
            .unwrap()
            .encode();
        let mut a = [0u8; 300];
        let mut b = [0u8; 300];
        device
            .open_cipher(&record, &release, &enc, 1000)
            .unwrap()
            .apply(100, &mut a)
            .unwrap();
        device
            .open_for(&record, &release, &enc)
            .unwrap()
            .payload_cipher(&enc, 1000)
            .unwrap()
            .apply(100, &mut b)
            .unwrap();
        assert_eq!(a, b);
        // Every refusal of the two steps, in the same order.
        let other = DeviceKey::from_secret([8; 32]);
        let mut bad = record;
        bad[KEY_RECORD_LEN - 1] ^= 1;
        for (key, bytes, rel, size, err) in [
            (
                &other,
                &record[..],
                release,
                10,
                Error::KeyRecordForOtherDevice,
            ),
            (
                &device,
                &record[..],
                [6; 32],
                10,
                Error::KeyRecordForOtherRelease,
            ),
            (
                &device,
                &record[..KEY_RECORD_LEN - 1],
                release,
                10,
                Error::Malformed(Document::KeyRecord),
            ),
            (&device, &bad[..], release, 10, Error::WrongContentKey),
            (&device, &bad[..], release, u64::MAX, Error::WrongContentKey),
            (
                &device,
                &record[..],
                release,
                MAX_ENCRYPTED_PAYLOAD + 1,
                Error::PayloadTooLongForCipher,
            ),
        ] {
            assert_eq!(key.open_cipher(bytes, &rel, &enc, size).unwrap_err(), err);
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
