//! Benchmark builds only: the bare work a verified boot must do, measured by the same binary
//! with the same crates, as the baseline of the boot's instruction count.

use sha2::{Digest, Sha256};
use sigil_bootloader::{BootFlash, VerifiedImage};
use sigil_manifests::keys::verify_threshold;
use sigil_manifests::{
    bundle::HEADER_LEN, BundleHeader, KeySet, SignatureEntry, Signed, TrustRoot, UnverifiedBundle,
};

/// SHA-256 of the verified payload, read in place as the boot reads it.
#[inline(never)]
pub fn payload_sha256<F: BootFlash>(flash: &F, image: &VerifiedImage) {
    let size = u32::try_from(image.payload_size()).unwrap_or(0);
    if let Some(payload) = flash.mapped(image.payload_offset(), size) {
        core::hint::black_box(Sha256::digest(payload));
    }
}

/// Most signature checks a benchmark bundle takes (its root and release signatures).
const MAX_CHECKS: usize = 4;

/// One signature check: the signed message (in the mapped flash), the signature, the key.
type Check<'a> = (&'a [u8], [u8; 64], [u8; 32]);

/// Verifies the root signatures over the key set and the release signatures over the manifest
/// of the bundle at flash offset `base`, each alone (threshold 1 of its one key) through
/// `sigil_manifests::keys::verify_threshold`, the strict ed25519 check the boot makes: calling
/// another verifier would make the compiler keep a second copy of the verification and change
/// the boot's own stack. Returns how many verified. The checks are
/// collected first ([`collect_checks`]), so the decoded documents are off the stack while the
/// signatures are verified (a 16 KiB part has no room for both).
#[inline(never)]
pub fn signature_checks<F: BootFlash>(flash: &F, trust_root: &[u8], base: u32) -> Option<u32> {
    let mut checks: [Option<Check<'_>>; MAX_CHECKS] = [None; MAX_CHECKS];
    collect_checks(flash, trust_root, base, &mut checks)?;
    let mut ok = 0u32;
    for (message, signature, key) in checks.iter().flatten() {
        let entry = SignatureEntry {
            key_id: sigil_manifests::key_id(key),
            signature: *signature,
        };
        if verify_threshold(
            message,
            [entry],
            core::slice::from_ref(key),
            1,
            Signed::Manifest,
        )
        .is_ok()
        {
            ok = ok.saturating_add(1);
        }
    }
    Some(ok)
}

/// Up to [`MAX_CHECKS`] public keys, copied out of a decoded document.
type Keys = [Option<[u8; 32]>; MAX_CHECKS];

/// Up to [`MAX_CHECKS`] signatures over one message: (key id, signature).
type Sigs = [Option<([u8; 32], [u8; 64])>; MAX_CHECKS];

/// The (message, signature, key) triples of the bundle at `base`, matched by key id. Each
/// document is decoded in a function of its own that returns only the bytes needed, so the
/// decoders' key checks (curve arithmetic) never run on top of another document's frame.
#[inline(never)]
fn collect_checks<'a, F: BootFlash>(
    flash: &'a F,
    trust_root: &[u8],
    base: u32,
    out: &mut [Option<Check<'a>>; MAX_CHECKS],
) -> Option<()> {
    let root_keys = root_keys(trust_root)?;
    let (key_set, key_set_sigs, manifest, manifest_sigs) = envelope(flash, base)?;
    let release_keys = key_set_keys(key_set)?;
    let mut slots = out.iter_mut();
    for (message, sigs, keys) in [
        (key_set, key_set_sigs, root_keys),
        (manifest, manifest_sigs, release_keys),
    ] {
        for (id, signature) in sigs.iter().flatten() {
            for key in keys.iter().flatten() {
                if sigil_manifests::key_id(key) == *id {
                    *slots.next()? = Some((message, *signature, *key));
                }
            }
        }
    }
    Some(())
}

fn copy_keys(keys: &[[u8; 32]]) -> Keys {
    let mut out: Keys = [None; MAX_CHECKS];
    for (slot, key) in out.iter_mut().zip(keys) {
        *slot = Some(*key);
    }
    out
}

#[inline(never)]
fn root_keys(trust_root: &[u8]) -> Option<Keys> {
    let root = TrustRoot::decode(trust_root).ok()?;
    Some(copy_keys(&root.keys))
}

#[inline(never)]
fn key_set_keys(key_set: &[u8]) -> Option<Keys> {
    Some(copy_keys(KeySet::decode(key_set).ok()?.keys))
}

/// The signed key set and manifest of the bundle at `base`, with their signatures.
#[inline(never)]
fn envelope<F: BootFlash>(flash: &F, base: u32) -> Option<(&[u8], Sigs, &[u8], Sigs)> {
    let head: &[u8; HEADER_LEN] = flash.mapped(base, HEADER_LEN as u32)?.try_into().ok()?;
    let header = BundleHeader::parse(head).ok()?;
    let prefix = flash.mapped(base, header.envelope_end().ok()?)?;
    let bundle = UnverifiedBundle::parse(prefix).ok()?;
    let env = bundle.envelope();
    let sigs = |list: &[SignatureEntry]| {
        let mut out: Sigs = [None; MAX_CHECKS];
        for (slot, e) in out.iter_mut().zip(list) {
            *slot = Some((e.key_id, e.signature));
        }
        out
    };
    Some((
        env.signed_key_set.key_set,
        sigs(&env.signed_key_set.signatures),
        env.manifest,
        sigs(&env.manifest_signatures),
    ))
}
