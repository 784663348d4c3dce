//! Benchmark builds only: the bare work a verified boot must do, measured by the same binary
//! with the same crates, as the baseline of the boot's instruction count.

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use sigil_bootloader::{BootFlash, VerifiedImage};
use sigil_manifests::{bundle::HEADER_LEN, BundleHeader, KeySet, TrustRoot, UnverifiedBundle};

/// SHA-256 of the verified payload, read in place as the boot reads it.
#[inline(never)]
pub fn payload_sha256<F: BootFlash>(flash: &F, image: &VerifiedImage) {
    let size = u32::try_from(image.payload_size()).unwrap_or(0);
    if let Some(payload) = flash.mapped(image.payload_offset(), size) {
        core::hint::black_box(Sha256::digest(payload));
    }
}

/// Verifies the root signatures over the key set and the release signatures over the manifest
/// of the bundle at flash offset `base`, with ed25519-dalek directly. Returns how many verified.
#[inline(never)]
pub fn signature_checks<F: BootFlash>(flash: &F, trust_root: &[u8], base: u32) -> Option<u32> {
    let root = TrustRoot::decode(trust_root).ok()?;
    let head: &[u8; HEADER_LEN] = flash.mapped(base, HEADER_LEN as u32)?.try_into().ok()?;
    let header = BundleHeader::parse(head).ok()?;
    let prefix = flash.mapped(base, header.envelope_end().ok()?)?;
    let bundle = UnverifiedBundle::parse(prefix).ok()?;
    let env = bundle.envelope();
    let key_set = KeySet::decode(env.signed_key_set.key_set).ok()?;
    let mut ok = 0u32;
    for (message, sigs, keys) in [
        (
            env.signed_key_set.key_set,
            &env.signed_key_set.signatures,
            &root.keys[..],
        ),
        (env.manifest, &env.manifest_signatures, key_set.keys),
    ] {
        for entry in sigs.iter() {
            for key in keys.iter() {
                if sigil_manifests::key_id(key) != entry.key_id {
                    continue;
                }
                let vk = VerifyingKey::from_bytes(key).ok()?;
                let sig = Signature::from_bytes(&entry.signature);
                if vk.verify_strict(message, &sig).is_ok() {
                    ok = ok.saturating_add(1);
                }
            }
        }
    }
    Some(ok)
}
