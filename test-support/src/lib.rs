//! The one copy of the fixtures Sigil's test suites share (as rustls keeps its test helpers in
//! one crate): deterministic keys, the test trust root, key sets, signed bundles, and the
//! helpers that build attack-named bundles. A dev-dependency only; nothing here is for
//! production use, and nothing here validates what a test deliberately breaks.
//!
//! Every key is derived from a one-byte seed (`SigningKey::from_bytes(&[seed; 32])`), so a
//! bundle built twice is the same bytes (ed25519 signatures are deterministic) and fixtures
//! checked into the tree can be regenerated.
//!
//! | seeds | role |
//! |---|---|
//! | [`ROOT_SEEDS`] `1, 2, 3` | the test trust root, threshold 2 ([`root`]) |
//! | [`RELEASE_SEEDS`] `11, 12` | the release keys of the default key set, threshold 1 |
//! | [`FOREIGN_ROOT_SEEDS`] `21, 22, 23` | another organisation's root (bundles it signs are refused) |
//!
//! [`Spec`] describes a bundle; its defaults make a valid one (acme/pump-x2, component `app`,
//! key set version 1 signed by roots 1 and 2, manifest signed by release key 11).
//!
//! ## Moving a suite's `tests/common` here
//!
//! manifests and server use this crate. The bootloader's and the agent's copies map as
//! follows; each mapping builds the same bytes as the copy it replaces.
//!
//! | their helper | here |
//! |---|---|
//! | `key`, `public`, `ROOT_SEEDS`, `RELEASE_SEEDS`, `product` (both) | the same names |
//! | bootloader `root() -> &'static TrustRoot` | [`static_root`] |
//! | agent `root() -> TrustRoot` | [`root`] |
//! | bootloader `payload(&spec)` (`i * 31 + seed`) | [`payload`]`(spec.payload_len, spec.payload_seed)` |
//! | agent `payload(len, salt)` (multiplicative hash) | [`noise`]`(len, salt)` |
//! | bootloader `Spec { product, counter, key_set_version, version, payload_len, payload_seed, alignment }` | `Spec { product, key_set_version, alignment, payload: payload(payload_len, payload_seed), ..Spec::release(version, counter) }` |
//! | agent `Spec::new(version, counter)` with `vendor`, `device`, `key_set_version`, `root_signers`, `release_key`, `payload_len`, `declared_size`, `salt` | `Spec { product: ProductId::new(vendor, device)?, key_set_version, root_signers: root_signers.to_vec(), release_keys: vec![release_key], manifest_signers: vec![release_key], payload: noise(payload_len, salt), declared_size, ..Spec::release(version, counter) }` |
//! | `bundle(&spec)` (both) | [`bundle`]`(&spec)` |
//! | bootloader `image_id(&spec)` | `payload_digest(&spec)[..16]` ([`payload_digest`]) |
//! | agent `release_id(bytes)` | [`bundle_id`] |
//! | agent: `root().encode()` written to `DIR/root.sgl` | [`write_trust_root`]`(DIR)` |
//!
//! What is theirs alone stays with them: the bootloader's `Rig` (simulated device) and the
//! agent's flash layout, `Device`, `DeviceOptions`, `boot` and `RealServer`.

// Test fixtures: a failure here is a broken test set-up and must panic loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use sigil_manifests::{
    assemble_bundle, key_id, root_digest, verify_bundle, DevicePolicy, Error, KeySet, Manifest,
    PayloadFormat, ProductId, PublicKey, RootFloor, RootUpdate, SignatureEntry, TrustRoot,
    UnverifiedBundle, Version, VERIFY_BUFFER_LEN,
};

/// Seeds of the test trust root's three keys.
pub const ROOT_SEEDS: [u8; 3] = [1, 2, 3];
/// Seeds of the default key set's two release keys.
pub const RELEASE_SEEDS: [u8; 2] = [11, 12];
/// Seeds of a trust root the test devices and servers do not trust.
pub const FOREIGN_ROOT_SEEDS: [u8; 3] = [21, 22, 23];

/// The signing key of `seed`.
pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// The public key of `seed`.
pub fn public(seed: u8) -> PublicKey {
    key(seed).verifying_key().to_bytes()
}

/// The test trust root: version 1, the keys of [`ROOT_SEEDS`], threshold 2.
pub fn root() -> TrustRoot {
    root_of(ROOT_SEEDS, 2)
}

/// [`root`], built once, for configurations that borrow it for `'static`.
pub fn static_root() -> &'static TrustRoot {
    static ROOT: OnceLock<TrustRoot> = OnceLock::new();
    ROOT.get_or_init(root)
}

/// A version-1 trust root of the keys of `seeds` with `threshold`.
pub fn root_of<const N: usize>(seeds: [u8; N], threshold: u8) -> TrustRoot {
    TrustRoot::new(1, threshold, &seeds.map(public)).unwrap()
}

/// Writes the encoded test trust root to `dir/root.sgl`; its path.
pub fn write_trust_root(dir: &Path) -> PathBuf {
    let path = dir.join("root.sgl");
    std::fs::write(&path, root().encode().unwrap()).unwrap();
    path
}

/// The test devices' product, `acme/pump-x2`.
pub fn product() -> ProductId<'static> {
    ProductId::new("acme", "pump-x2").unwrap()
}

/// `len` bytes that differ with `salt`: `i * 31 + salt`.
pub fn payload(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

/// `len` bytes without short periods (a multiplicative hash of the index), for tests where
/// repeating bytes would hide a shifted or resumed transfer.
pub fn noise(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ salt)
        .collect()
}

/// Hex SHA-256 of a whole bundle: the release id the server gives it.
pub fn bundle_id(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Everything a test may vary in a bundle. `Spec::default()` is a valid bundle for
/// [`policy`]; change fields with struct update syntax.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Key set version.
    pub key_set_version: u32,
    /// Release keys needed to sign the manifest.
    pub key_set_threshold: u8,
    /// Seeds of the key set's release keys.
    pub release_keys: Vec<u8>,
    /// Seeds of the root keys that sign the key set.
    pub root_signers: Vec<u8>,
    /// Seeds of the release keys that sign the manifest.
    pub manifest_signers: Vec<u8>,
    /// The key set's product scope.
    pub scope: Option<ProductId<'static>>,
    /// The manifest's product.
    pub product: ProductId<'static>,
    /// The manifest's component.
    pub component: &'static str,
    /// Security counter.
    pub counter: u32,
    /// SemVer version.
    pub version: &'static str,
    /// Payload alignment.
    pub alignment: u32,
    /// Creation time (Unix seconds).
    pub created: u64,
    /// Expiry (Unix seconds).
    pub expires: Option<u64>,
    /// The payload.
    pub payload: Vec<u8>,
    /// The payload size the manifest (and header) declare, if not the payload's length: an
    /// "endless" or short bundle.
    pub declared_size: Option<u64>,
    /// The trust root version the key set names (`None`: a format version 1 key set).
    pub root_version: Option<u32>,
    /// The root chain the bundle carries (an encoded `SGL-RCHN` document), if any.
    pub chain: Option<Vec<u8>>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            key_set_version: 1,
            key_set_threshold: 1,
            release_keys: RELEASE_SEEDS.to_vec(),
            root_signers: vec![1, 2],
            manifest_signers: vec![11],
            scope: None,
            product: product(),
            component: "app",
            counter: 5,
            version: "1.2.0",
            alignment: 64,
            created: 1_700_000_000,
            expires: None,
            payload: (0..1000u32).map(|i| (i * 7) as u8).collect(),
            declared_size: None,
            root_version: None,
            chain: None,
        }
    }
}

impl Spec {
    /// A valid default bundle of `version` and security `counter`.
    pub fn release(version: &'static str, counter: u32) -> Self {
        Spec {
            version,
            counter,
            ..Spec::default()
        }
    }
}

/// A valid bundle of `version` and security `counter` with a 5000-byte payload salted by the
/// counter: a distinct release per counter.
pub fn release_bundle(version: &'static str, counter: u32) -> Vec<u8> {
    bundle(&Spec {
        payload: payload(5000, counter as u8),
        ..Spec::release(version, counter)
    })
}

/// The manifest `spec` describes.
pub fn manifest_for(spec: &Spec) -> Manifest<'_> {
    Manifest {
        product: spec.product,
        component: spec.component,
        version: Version::parse(spec.version).unwrap(),
        security_counter: spec.counter,
        payload_size: spec.declared_size.unwrap_or(spec.payload.len() as u64),
        payload_digest: Sha256::digest(&spec.payload).into(),
        payload_format: PayloadFormat::Raw,
        payload_alignment: spec.alignment,
        min_bootloader_version: None,
        dependencies: heapless::Vec::new(),
        created: spec.created,
        expires: spec.expires,
        release_notes_digest: None,
        sbom_digest: None,
    }
}

/// The encoded (signed bytes of the) key set `spec` describes.
pub fn key_set_bytes(spec: &Spec) -> Vec<u8> {
    let keys: Vec<PublicKey> = spec.release_keys.iter().map(|&s| public(s)).collect();
    let set = KeySet::new(
        spec.key_set_version,
        spec.key_set_threshold,
        spec.scope,
        &keys,
    )
    .unwrap();
    match spec.root_version {
        Some(v) => set.with_root_version(v),
        None => set,
    }
    .encode()
    .unwrap()
}

/// The bundle of `spec` carrying `manifest_bytes` (signed by `spec.manifest_signers`) instead
/// of the manifest `spec` describes.
pub fn bundle_from(spec: &Spec, manifest_bytes: &[u8]) -> Vec<u8> {
    bundle_with(&key_set_bytes(spec), spec, manifest_bytes)
}

/// The bundle of `spec` with `key_set` (signed by `spec.root_signers`) as its key set: for key
/// sets no builder would make.
pub fn bundle_with(key_set: &[u8], spec: &Spec, manifest_bytes: &[u8]) -> Vec<u8> {
    let roots: Vec<_> = spec.root_signers.iter().map(|&s| key(s)).collect();
    let releases: Vec<_> = spec.manifest_signers.iter().map(|&s| key(s)).collect();
    let b = assemble_bundle(
        key_set,
        &roots.iter().collect::<Vec<_>>(),
        manifest_bytes,
        &releases.iter().collect::<Vec<_>>(),
        &spec.payload,
    )
    .unwrap();
    match &spec.chain {
        Some(chain) => with_chain(&b, chain),
        None => b,
    }
}

/// `bundle` with `chain` (an encoded root chain, or any bytes) as its root chain section.
pub fn with_chain(bundle: &[u8], chain: &[u8]) -> Vec<u8> {
    let parsed = UnverifiedBundle::parse(bundle).unwrap();
    let offset = parsed.header().payload_offset as usize;
    let mut out = parsed
        .into_envelope()
        .encode_prefix_with_chain(Some(chain))
        .unwrap();
    out.extend_from_slice(&bundle[offset..]);
    out
}

/// Seeds of the three keys of trust root generation `n` (threshold 2): generation 1 is
/// [`ROOT_SEEDS`], generation `n >= 2` is `10n + 11, 10n + 12, 10n + 13` (31–33, 41–43, …).
pub fn root_seeds(n: u32) -> [u8; 3] {
    if n <= 1 {
        return ROOT_SEEDS;
    }
    let base = (10 * n + 10) as u8;
    [base + 1, base + 2, base + 3]
}

/// Trust root generation `n`: version `n`, the keys of [`root_seeds`]`(n)`, threshold 2.
pub fn root_generation(n: u32) -> TrustRoot {
    TrustRoot::new(n, 2, &root_seeds(n).map(public)).unwrap()
}

/// The encoded document of trust root generation `n`.
pub fn root_generation_bytes(n: u32) -> Vec<u8> {
    root_generation(n).encode().unwrap()
}

/// A root update to `root` (document bytes) signed by the keys of `by_previous` and `by_new`.
pub fn root_update_of(root: &[u8], by_previous: &[u8], by_new: &[u8]) -> Vec<u8> {
    let mut update = RootUpdate::new(root);
    for &s in by_previous {
        update
            .add_by_previous(SignatureEntry::sign(&key(s), root))
            .unwrap();
    }
    for &s in by_new {
        update
            .add_by_new(SignatureEntry::sign(&key(s), root))
            .unwrap();
    }
    update.encode().unwrap()
}

/// The valid update from generation `n - 1` to generation `n`: two keys of each sign.
pub fn root_update(n: u32) -> Vec<u8> {
    let (old, new) = (root_seeds(n - 1), root_seeds(n));
    root_update_of(&root_generation_bytes(n), &old[..2], &new[..2])
}

/// A root chain document holding `updates` verbatim (no checks: for chains no builder makes).
pub fn dangerous_chain(updates: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"SGL-RCHN\x01\x00".to_vec();
    let lists: Vec<&[u8]> = updates.iter().map(|u| u.as_slice()).collect();
    out.extend(postcard::to_allocvec(&lists).unwrap());
    out
}

/// The valid root chain from generation `from` (exclusive) to `to` (inclusive).
pub fn chain(from: u32, to: u32) -> Vec<u8> {
    let updates: Vec<Vec<u8>> = (from + 1..=to).map(root_update).collect();
    sigil_manifests::rotation::encode_chain(&updates).unwrap()
}

/// A valid bundle signed under root generation `n`: its key set names version `n` and is
/// signed by two of that generation's keys, and it carries the chain from generation 1.
pub fn spec_under_root(n: u32) -> Spec {
    let seeds = root_seeds(n);
    Spec {
        root_signers: seeds[..2].to_vec(),
        root_version: Some(n),
        chain: (n > 1).then(|| chain(1, n)),
        ..Spec::default()
    }
}

/// The floor of a device that adopted root generation `n`.
pub fn floor_of(n: u32) -> RootFloor {
    RootFloor {
        version: n,
        digest: root_digest(&root_generation_bytes(n)),
    }
}

/// The bundle `spec` describes.
pub fn bundle(spec: &Spec) -> Vec<u8> {
    let m = manifest_for(spec).encode().unwrap();
    bundle_from(spec, &m)
}

/// The SHA-256 of the payload of `spec`.
pub fn payload_digest(spec: &Spec) -> [u8; 32] {
    Sha256::digest(&spec.payload).into()
}

/// The policy of a test device: acme/pump-x2, a 1 MiB slot, no minimums.
pub fn policy() -> DevicePolicy<'static> {
    DevicePolicy::device(product(), 1 << 20)
}

/// Verifies `bytes` under the test root and `policy`: the security counter and key set
/// version of the verified bundle.
pub fn verify(bytes: &[u8], policy: DevicePolicy<'_>) -> Result<(u32, u32), Error> {
    let root = root();
    let mut buf = vec![0u8; VERIFY_BUFFER_LEN];
    let v = verify_bundle(&root, policy, bytes, &mut buf)?;
    Ok((v.security_counter(), v.key_set_version()))
}

/// The "torsion twin" of `seed`'s public key: the key plus a point of order 8. Distinct bytes
/// and a distinct key id, yet the secret of `seed` signs for it (see
/// [`sign_as_torsion_twin`]); a verifier that took both as keys would let one secret count
/// twice toward a threshold.
pub fn torsion_twin(seed: u8) -> PublicKey {
    let a = VerifyingKey::from_bytes(&public(seed))
        .unwrap()
        .to_edwards();
    let t = curve25519_dalek::constants::EIGHT_TORSION[1];
    (a + t).compress().to_bytes()
}

/// Signs `message` with the secret of `seed` under the public key [`torsion_twin`]`(seed)`.
/// `Some` when that signature verifies strictly under the twin, which happens for one message
/// in eight (when the challenge hash is a multiple of 8); vary the message until it does.
pub fn sign_as_torsion_twin(seed: u8, message: &[u8]) -> Option<SignatureEntry> {
    let twin = torsion_twin(seed);
    let vk = VerifyingKey::from_bytes(&twin).unwrap();
    let esk = ed25519_dalek::hazmat::ExpandedSecretKey::from(&[seed; 32]);
    let signature = ed25519_dalek::hazmat::raw_sign::<sha2::Sha512>(&esk, message, &vk);
    vk.verify_strict(message, &signature).ok()?;
    Some(SignatureEntry {
        key_id: key_id(&twin),
        signature: signature.to_bytes(),
    })
}

/// A non-canonical encoding of a curve point: y = p + 3 (y = 3 reduced). Decompresses, but
/// its canonical encoding is other bytes.
pub fn non_canonical_point() -> PublicKey {
    let mut b = [0xff; 32];
    b[0] = 0xed + 3;
    b[31] = 0x7f;
    b
}

/// The key set of `spec`, encoded without the checks of `KeySet::new`, listing `keys`
/// verbatim: for key sets that name keys no builder accepts.
pub fn dangerous_key_set_bytes(spec: &Spec, keys: &[PublicKey]) -> Vec<u8> {
    KeySet {
        version: spec.key_set_version,
        threshold: spec.key_set_threshold,
        product_scope: spec.scope,
        keys,
        root_version: spec.root_version,
    }
    .encode()
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_spec_is_a_valid_bundle() {
        assert_eq!(verify(&bundle(&Spec::default()), policy()), Ok((5, 1)));
    }

    #[test]
    fn a_bundle_under_root_three_verifies_from_root_one() {
        assert_eq!(verify(&bundle(&spec_under_root(3)), policy()), Ok((5, 1)));
    }

    #[test]
    fn a_torsion_twin_signs_for_one_message_in_eight() {
        let signed = (0..64u8)
            .filter(|&i| sign_as_torsion_twin(11, &[i; 40]).is_some())
            .count();
        assert!((2..=20).contains(&signed), "{signed} of 64");
        assert_ne!(torsion_twin(11), public(11));
    }

    #[test]
    fn the_non_canonical_point_is_a_point_under_other_bytes() {
        let vk = VerifyingKey::from_bytes(&non_canonical_point()).unwrap();
        assert_ne!(vk.to_edwards().compress().to_bytes(), non_canonical_point());
    }
}

/// Encrypted releases (FORMAT.md §9): deterministic content keys, device keys, bundles and key
/// records, so that fixtures regenerate byte for byte.
pub mod encrypted {
    use sha2::{Digest, Sha256};
    use sigil_manifests::encryption::{ContentKey, DeviceKey};
    use sigil_manifests::{Encryption, PayloadFormat, UnverifiedBundle};

    use crate::{bundle_from, manifest_for, Spec};

    /// The content key of release `n` of the fixtures.
    pub fn content_key(n: u8) -> ContentKey {
        ContentKey::from_bytes([0x40 ^ n; 32])
    }

    /// Test device `seed`'s X25519 key: the private key is 32 bytes of `seed`.
    pub fn device(seed: u8) -> DeviceKey {
        DeviceKey::from_secret([seed; 32])
    }

    /// `spec` with its payload encrypted under `key`: the spec of the bundle (its payload is the
    /// ciphertext) and the manifest's encryption parameters.
    pub fn encrypted_spec(spec: &Spec, key: &ContentKey) -> (Spec, Encryption) {
        let encryption = key.encryption(Sha256::digest(&spec.payload).into());
        let mut ciphertext = spec.payload.clone();
        key.payload_cipher(&encryption, ciphertext.len() as u64)
            .unwrap()
            .apply(0, &mut ciphertext)
            .unwrap();
        (
            Spec {
                payload: ciphertext,
                ..spec.clone()
            },
            encryption,
        )
    }

    /// The encrypted bundle of `spec` under `key` (manifest format version 2).
    pub fn bundle(spec: &Spec, key: &ContentKey) -> Vec<u8> {
        let (cipher_spec, encryption) = encrypted_spec(spec, key);
        let mut manifest = manifest_for(&cipher_spec);
        manifest.payload_format = PayloadFormat::Encrypted(encryption);
        bundle_from(&cipher_spec, &manifest.encode().unwrap())
    }

    /// SHA-256 of a bundle's exact manifest bytes: the release a key record names.
    pub fn release_of(bundle: &[u8]) -> [u8; 32] {
        let parsed = UnverifiedBundle::parse(bundle).unwrap();
        Sha256::digest(parsed.envelope().manifest).into()
    }

    /// The key record of `bundle`'s content `key` for device `seed`, with ephemeral secret
    /// `[ephemeral; 32]`.
    pub fn record(bundle: &[u8], key: &ContentKey, seed: u8, ephemeral: u8) -> Vec<u8> {
        key.wrap(
            &device(seed).public_key(),
            [ephemeral; 32],
            release_of(bundle),
        )
        .unwrap()
        .encode()
        .to_vec()
    }

    /// `bundle` as the active slot holds it after a decrypting install: the payload replaced
    /// by `image`.
    pub fn installed(bundle: &[u8], image: &[u8]) -> Vec<u8> {
        let offset = UnverifiedBundle::parse(bundle)
            .unwrap()
            .header()
            .payload_offset as usize;
        let mut out = bundle[..offset].to_vec();
        out.extend_from_slice(image);
        out
    }
}
