//! Decrypt while swapping (feature `encryption`, FORMAT.md §9).
//!
//! # Where the keys come from
//!
//! - **Device key:** the board gives the device's X25519 key pair ([`DeviceSecret`]) from the
//!   bootloader's protected storage through [`crate::BootConfig::with_device_key`]. The
//!   application never sees it.
//! - **Key record:** the agent writes the 138-byte `SGL-WKEY` record into the staging slot
//!   beside the staged bundle, at bundle offset `align_up(total_len, 256)` (the first 256-byte
//!   boundary after the bundle's last byte; the rest of that 256-byte unit stays erased). The
//!   bundle plus that unit must fit the slot. The swap does not erase the sector holding the
//!   record before the last half-step that decrypts has finished (it lies in staging sector
//!   `n` or beyond, for a bundle of `n` sectors), so every resumed boot of an install finds it.
//!
//! # What each half-step does to the bytes
//!
//! | half-step | bytes | transform |
//! |---|---|---|
//! | install, active → staging (previous image) | whole sector | device-local keystream, role 0 |
//! | install, staging → active (new image) | payload bytes of the sector | the release's payload keystream (decrypts); header, chain, envelope and padding as they are |
//! | revert, active → staging (trial image) | whole sector | device-local keystream, role 1 |
//! | revert, staging → active (previous image) | whole sector | device-local keystream, role 0 (undoes the install's) |
//!
//! The device-local keystream is ChaCha20 under `key ‖ nonce = HKDF-SHA512(salt = trial image
//! digest ‖ swap id, IKM = device X25519 private key, info = "SIGIL-SWAP-V1" ‖ role, 44 bytes)`,
//! at the byte's offset within the slot. The swap id ([`crate::record::SwapId`], in the
//! protected state from the start of the install until the next one) is the sequence number the
//! install started from and the head of the replaced image's digest: installing one release
//! twice, over image A and later over image C, uses two unrelated keystreams, so whoever reads
//! the external flash after each install learns nothing from the XOR of the two ciphertexts
//! (with the trial digest alone it would be A XOR C). Every resumed boot of the install or its
//! revert reads the same swap id back. A chunk that reads as erased is copied as erased, not
//! transformed, both ways, so an erased tail of a slot stays erased. Every transform is a pure
//! function of the intact source, the keys and the offset: a repeated half-step writes the
//! same bytes. The staging slot therefore never holds a plaintext sector of an image that was
//! active (raw or encrypted) on a device with a key, and the revert puts back the previous
//! image byte for byte.

use embedded_storage::nor_flash::{NorFlash, NorFlashError};
use sigil_manifests::bundle::{BundleHeader, HEADER_LEN};
use sigil_manifests::encryption::{DeviceKey, Keystream, PayloadCipher, KEY_RECORD_LEN};
use sigil_manifests::{EnvelopeView, Manifest};
use zeroize::Zeroize;

use crate::error::Error;
use crate::layout::{Layout, CHUNK};
use crate::record::{ImageDigest, SwapId};
use crate::verify::BootFlash;

/// HKDF info prefix of the device-local swap keystreams.
const SWAP_INFO: &[u8] = b"SIGIL-SWAP-V1";

/// Bytes of the device key record a board keeps in its key store ([`DeviceSecret::decode`]).
pub const DEVICE_KEY_RECORD_LEN: usize = 76;

/// First bytes of a device key record.
const DEVICE_KEY_MAGIC: &[u8; 8] = b"SGL-DKEY";

/// Why the record in a board's key store is refused (the device then has no key: it boots raw
/// releases and refuses encrypted ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyStoreError {
    /// The store holds something that is not a device key record.
    NotAKeyRecord,
    /// The record's checksum does not match (a torn or damaged provisioning write).
    BadChecksum,
}

impl core::fmt::Display for KeyStoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            KeyStoreError::NotAKeyRecord => "the key store holds no device key record",
            KeyStoreError::BadChecksum => "the device key record's checksum does not match",
        })
    }
}

impl core::error::Error for KeyStoreError {}

/// The device's X25519 key pair, from the bootloader's protected storage (the board port reads
/// it from OTP, a key store or the locked protected-state sector; see FORMAT.md §9).
pub struct DeviceSecret {
    secret: [u8; 32],
    public: [u8; 32],
}

impl DeviceSecret {
    /// The provisioned halves of the key pair (the bootloader does no scalar multiplication to
    /// find the public key; a mismatched pair refuses every key record).
    pub fn new(secret: [u8; 32], public: [u8; 32]) -> Self {
        DeviceSecret { secret, public }
    }

    /// Decodes the record a board's key store holds: `SGL-DKEY` ‖ private key (32) ‖ public
    /// key (32) ‖ CRC-32 of the preceding 72 bytes (little-endian). A store that reads as
    /// erased holds no key (`Ok(None)`): the device was not provisioned.
    pub fn decode(
        record: &[u8; DEVICE_KEY_RECORD_LEN],
        erased: u8,
    ) -> Result<Option<Self>, KeyStoreError> {
        if record.iter().all(|&b| b == erased) {
            return Ok(None);
        }
        let (magic, rest) = record.split_at(DEVICE_KEY_MAGIC.len());
        let (secret, rest) = rest.split_at(32);
        let (public, crc) = rest.split_at(32);
        if magic != DEVICE_KEY_MAGIC {
            return Err(KeyStoreError::NotAKeyRecord);
        }
        let body = record
            .get(..DEVICE_KEY_RECORD_LEN.saturating_sub(4))
            .ok_or(KeyStoreError::NotAKeyRecord)?;
        if crc != crate::crc::crc32(body).to_le_bytes() {
            return Err(KeyStoreError::BadChecksum);
        }
        let mut pair = DeviceSecret::new([0; 32], [0; 32]);
        pair.secret.copy_from_slice(secret);
        pair.public.copy_from_slice(public);
        Ok(Some(pair))
    }

    /// The key store record of this key pair ([`DeviceSecret::decode`]), for the provisioning
    /// tool. It holds the private key: the caller wipes it after writing it.
    pub fn encode(&self) -> [u8; DEVICE_KEY_RECORD_LEN] {
        let mut out = [0u8; DEVICE_KEY_RECORD_LEN];
        let (magic, rest) = out.split_at_mut(DEVICE_KEY_MAGIC.len());
        let (secret, rest) = rest.split_at_mut(32);
        let (public, _) = rest.split_at_mut(32);
        magic.copy_from_slice(DEVICE_KEY_MAGIC);
        secret.copy_from_slice(&self.secret);
        public.copy_from_slice(&self.public);
        let (body, crc) = out.split_at_mut(DEVICE_KEY_RECORD_LEN.saturating_sub(4));
        crc.copy_from_slice(&crate::crc::crc32(body).to_le_bytes());
        out
    }

    /// The X25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    fn key(&self) -> DeviceKey {
        DeviceKey::new(self.secret, self.public)
    }

    /// The device-local keystream of `role` (0: the image active before the install, 1: the
    /// image installed) for the swap of the image `trial` in the install `swap`.
    fn local(&self, trial: &ImageDigest, swap: &SwapId, role: u8) -> Keystream {
        let mut salt = [0u8; 48];
        let (t, s) = salt.split_at_mut(32);
        t.copy_from_slice(trial);
        s.copy_from_slice(swap);
        Keystream::derive(&salt, &self.secret, &[SWAP_INFO, &[role]])
    }
}

impl Drop for DeviceSecret {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl core::fmt::Debug for DeviceSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeviceSecret")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// The payload keystream of the image being installed, at its place in the bundle.
pub(crate) struct Payload {
    cipher: PayloadCipher,
    /// Bundle offsets of the payload's first byte and one past its last.
    start: u32,
    end: u32,
}

/// The keystreams of one swap.
pub(crate) struct SwapKeys {
    old: Keystream,
    new: Keystream,
    payload: Option<Payload>,
}

/// What a half-step applies to the bytes it copies.
#[derive(Clone, Copy)]
pub(crate) enum Transform {
    /// Device-local keystream of `role`, at slot offset `base` of the sector.
    Local { role: u8, base: u32 },
    /// The new image's payload keystream, at bundle offset `base` of the sector.
    Payload { base: u32 },
}

impl SwapKeys {
    /// The keystreams of the swap of image `trial` in the install `swap` (the protected
    /// state's [`SwapId`]). For an install with decrypting half-steps
    /// left (`progress` half-steps done) it re-reads the new bundle's header and manifest from
    /// wherever they lie now (header and envelope bytes are copied unchanged), checks the
    /// manifest against the digest the protected state recorded, and reopens the key record.
    pub(crate) fn new<F: BootFlash>(
        flash: &mut F,
        layout: &Layout,
        device: &DeviceSecret,
        trial: &ImageDigest,
        swap: &SwapId,
        install_progress: Option<u32>,
        envelope_buf: &mut [u8],
    ) -> Result<Self, Error> {
        let payload = match install_progress {
            Some(progress) => staged_payload(flash, layout, device, trial, progress, envelope_buf)?,
            None => None,
        };
        Ok(SwapKeys {
            old: device.local(trial, swap, 0),
            new: device.local(trial, swap, 1),
            payload,
        })
    }

    /// Applies `t` to `data`, the chunk at `off` within its sector.
    pub(crate) fn apply(
        &mut self,
        t: Transform,
        off: u32,
        data: &mut [u8],
        erased: u8,
    ) -> Result<(), Error> {
        match t {
            Transform::Local { role, base } => {
                if data.iter().all(|&b| b == erased) {
                    return Ok(());
                }
                let cipher = if role == 0 {
                    &mut self.old
                } else {
                    &mut self.new
                };
                let at = base.checked_add(off).ok_or(Error::Corrupt)?;
                cipher.apply(u64::from(at), data).map_err(Error::Verify)
            }
            Transform::Payload { base } => {
                let Some(p) = self.payload.as_mut() else {
                    return Ok(());
                };
                // The chunk's bundle offsets `start..end`, cut to the payload's.
                let start = base.checked_add(off).ok_or(Error::Corrupt)?;
                let end = u32::try_from(data.len())
                    .ok()
                    .and_then(|len| start.checked_add(len))
                    .ok_or(Error::Corrupt)?;
                let (from, to) = (start.max(p.start), end.min(p.end));
                if from >= to {
                    return Ok(());
                }
                let part = usize::try_from(from.saturating_sub(start))
                    .ok()
                    .zip(usize::try_from(to.saturating_sub(start)).ok())
                    .and_then(|(lo, hi)| data.get_mut(lo..hi))
                    .ok_or(Error::Corrupt)?;
                p.cipher
                    .apply(u64::from(from.saturating_sub(p.start)), part)
                    .map_err(Error::Verify)
            }
        }
    }
}

/// Whether the install of the staged image `trial` (no half-step done yet) decrypts: its
/// manifest is encrypted and the key record beside it opens with `device`'s key (steps D1-D4,
/// the check every resumed boot of the install repeats in [`SwapKeys::new`]).
pub(crate) fn staged_opens<F: BootFlash>(
    flash: &mut F,
    layout: &Layout,
    device: &DeviceSecret,
    trial: &ImageDigest,
    envelope_buf: &mut [u8],
) -> Result<bool, Error> {
    staged_payload(flash, layout, device, trial, 0, envelope_buf).map(|p| p.is_some())
}

/// Reads the new bundle at bundle offset `off` during an install with `progress` half-steps
/// done: bundle sector `j` is in the active slot once half-step `2j+1` is done, else in
/// staging sector `j+1`.
fn read_new<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    progress: u32,
    off: u32,
    buf: &mut [u8],
) -> Result<(), Error> {
    let at = new_place(layout, progress, off)?;
    flash.read(at, buf).map_err(|e| Error::Flash(e.kind()))
}

/// The flash offset of the new bundle's byte at bundle offset `off` during an install with
/// `progress` half-steps done (see [`read_new`]).
fn new_place(layout: &Layout, progress: u32, off: u32) -> Result<u32, Error> {
    let sector = layout.sector_size();
    let j = off.checked_div(sector).ok_or(Error::Corrupt)?;
    let within = off.checked_rem(sector).ok_or(Error::Corrupt)?;
    let moved = j
        .checked_mul(2)
        .and_then(|s| s.checked_add(1))
        .is_some_and(|step| step < progress);
    let place = if moved {
        layout.active_sector(j)
    } else {
        layout.staging_sector(j.saturating_add(1))
    };
    place
        .and_then(|p| p.checked_add(within))
        .ok_or(Error::Corrupt)
}

/// The new bundle's bytes `from .. from + len` in place, on a memory-mapped flash, when they
/// lie in one sector of the bundle (so in one place, wherever the swap has moved it).
fn mapped_new<'f, F: BootFlash>(
    flash: &'f F,
    layout: &Layout,
    progress: u32,
    from: u32,
    len: u32,
) -> Option<&'f [u8]> {
    let last = from.checked_add(len)?.checked_sub(1)?;
    let sector = layout.sector_size();
    if !F::MAPPED || from.checked_div(sector)? != last.checked_div(sector)? {
        return None;
    }
    flash.mapped(new_place(layout, progress, from).ok()?, len)
}

/// Reads `out.len()` bytes of the new bundle from bundle offset `from` (any alignment).
fn read_new_bytes<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    progress: u32,
    from: u32,
    out: &mut [u8],
) -> Result<(), Error> {
    let chunk = layout.chunk();
    let chunk_len = usize::try_from(chunk).map_err(|_| Error::Corrupt)?;
    let mut storage = [0u8; CHUNK as usize];
    let buf = storage.get_mut(..chunk_len).ok_or(Error::Corrupt)?;
    let mut done = 0usize;
    while done < out.len() {
        let pos = u32::try_from(done)
            .ok()
            .and_then(|d| from.checked_add(d))
            .ok_or(Error::Corrupt)?;
        let skip = pos.checked_rem(chunk).ok_or(Error::Corrupt)?;
        read_new(flash, layout, progress, pos.saturating_sub(skip), buf)?;
        let skip = usize::try_from(skip).map_err(|_| Error::Corrupt)?;
        let take = chunk_len
            .saturating_sub(skip)
            .min(out.len().saturating_sub(done));
        let src = buf
            .get(skip..skip.saturating_add(take))
            .ok_or(Error::Corrupt)?;
        out.get_mut(done..done.saturating_add(take))
            .ok_or(Error::Corrupt)?
            .copy_from_slice(src);
        done = done.saturating_add(take);
    }
    Ok(())
}

/// The encryption parameters of the manifest in `envelope`, checked to be the manifest of
/// image `trial`; `None` for a raw image.
#[inline(never)] // its decoded manifest leaves the stack before the key derivations run
fn staged_encryption(
    envelope: &[u8],
    trial: &ImageDigest,
) -> Result<Option<sigil_manifests::Encryption>, Error> {
    let envelope = EnvelopeView::parse(envelope).map_err(Error::Verify)?;
    if sigil_manifests::manifest_digest(envelope.manifest) != *trial {
        return Err(Error::WrongImage);
    }
    let manifest = Manifest::decode(envelope.manifest).map_err(Error::Verify)?;
    Ok(manifest.payload_format.encryption().copied())
}

/// The new image's payload keystream, or `None` for a raw image or when no half-step that
/// decrypts is left.
#[inline(never)] // its frame is not under the device-local derivations of `SwapKeys::new`
fn staged_payload<F: BootFlash>(
    flash: &mut F,
    layout: &Layout,
    device: &DeviceSecret,
    trial: &ImageDigest,
    progress: u32,
    envelope_buf: &mut [u8],
) -> Result<Option<Payload>, Error> {
    let mut head = [0u8; HEADER_LEN];
    read_new_bytes(flash, layout, progress, 0, &mut head)?;
    let header = BundleHeader::parse(&head).map_err(Error::Verify)?;
    let total = header.total_len().map_err(Error::Verify)?;
    // Half-steps 2j+1 for the bundle's n sectors decrypt; none left: nothing to open.
    let last = layout.sectors_for(total).saturating_mul(2);
    if progress >= last {
        return Ok(None);
    }
    let start = header.envelope_start().map_err(Error::Verify)?;
    let end = header.envelope_end().map_err(Error::Verify)?;
    let len = end.saturating_sub(start);
    // A memory-mapped flash is read in place (the envelope lies in the bundle's first
    // sector whenever the payload alignment is a sector, as on the board ports); otherwise
    // the envelope is copied into `envelope_buf`.
    let env = match mapped_new(flash, layout, progress, start, len) {
        Some(bytes) => bytes,
        None => {
            let len = usize::try_from(len).map_err(|_| Error::Corrupt)?;
            let env = envelope_buf
                .get_mut(..len)
                .ok_or(Error::Verify(sigil_manifests::Error::BufferTooSmall))?;
            read_new_bytes(flash, layout, progress, start, env)?;
            env
        }
    };
    let Some(encryption) = staged_encryption(env, trial)? else {
        return Ok(None);
    };
    let encryption = &encryption;
    let at = layout
        .key_record_offset(total)
        .ok_or(Error::Verify(sigil_manifests::Error::Truncated))?;
    // In place on a memory-mapped flash (a 256-byte record unit never spans a sector).
    let mut copy = [0u8; KEY_RECORD_LEN];
    let len = u32::try_from(KEY_RECORD_LEN).map_err(|_| Error::Corrupt)?;
    let bytes = match mapped_new(flash, layout, progress, at, len) {
        Some(bytes) => bytes,
        None => {
            read_new_bytes(flash, layout, progress, at, &mut copy)?;
            &copy[..]
        }
    };
    let cipher = device
        .key()
        .open_cipher(bytes, trial, encryption, header.payload_size)
        .map_err(Error::Verify)?;
    // A verified header keeps the payload inside the bundle: its end fits 32 bits.
    let start = header.payload_offset;
    let end = u32::try_from(cipher.len())
        .ok()
        .and_then(|len| start.checked_add(len))
        .ok_or(Error::Corrupt)?;
    Ok(Some(Payload { cipher, start, end }))
}
