//! Builders for test bundles: deterministic keys, a trust root, a key set and signed bundles.
#![allow(dead_code)]
// Test builders: a failure here is a broken test set-up and should panic loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use sigil_manifests::*;

pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn public(seed: u8) -> PublicKey {
    key(seed).verifying_key().to_bytes()
}

pub const ROOT_SEEDS: [u8; 3] = [1, 2, 3];
pub const RELEASE_SEEDS: [u8; 2] = [11, 12];

pub fn root() -> TrustRoot {
    TrustRoot::new(1, 2, &ROOT_SEEDS.map(public)).unwrap()
}

pub fn product() -> ProductId<'static> {
    ProductId::new("acme", "pump-x2").unwrap()
}

/// Everything a test may want to vary in a bundle.
pub struct Spec {
    pub key_set_version: u32,
    pub key_set_threshold: u8,
    pub release_keys: Vec<u8>,
    pub root_signers: Vec<u8>,
    pub manifest_signers: Vec<u8>,
    pub scope: Option<ProductId<'static>>,
    pub product: ProductId<'static>,
    pub counter: u32,
    pub version: &'static str,
    pub alignment: u32,
    pub payload: Vec<u8>,
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
            counter: 5,
            version: "1.2.0",
            alignment: 64,
            payload: (0..1000u32).map(|i| (i * 7) as u8).collect(),
        }
    }
}

pub fn manifest_for<'a>(spec: &'a Spec) -> Manifest<'a> {
    Manifest {
        product: spec.product,
        component: "app",
        version: Version::parse(spec.version).unwrap(),
        security_counter: spec.counter,
        payload_size: spec.payload.len() as u64,
        payload_digest: Sha256::digest(&spec.payload).into(),
        payload_format: PayloadFormat::Raw,
        payload_alignment: spec.alignment,
        min_bootloader_version: None,
        dependencies: heapless::Vec::new(),
        created: 1_700_000_000,
        expires: None,
        release_notes_digest: None,
        sbom_digest: None,
    }
}

pub fn key_set_bytes(spec: &Spec) -> Vec<u8> {
    let keys: Vec<PublicKey> = spec.release_keys.iter().map(|&s| public(s)).collect();
    KeySet::new(
        spec.key_set_version,
        spec.key_set_threshold,
        spec.scope,
        &keys,
    )
    .unwrap()
    .encode()
    .unwrap()
}

pub fn bundle_from(spec: &Spec, manifest_bytes: &[u8]) -> Vec<u8> {
    let roots: Vec<_> = spec.root_signers.iter().map(|&s| key(s)).collect();
    let releases: Vec<_> = spec.manifest_signers.iter().map(|&s| key(s)).collect();
    assemble_bundle(
        &key_set_bytes(spec),
        &roots.iter().collect::<Vec<_>>(),
        manifest_bytes,
        &releases.iter().collect::<Vec<_>>(),
        &spec.payload,
    )
    .unwrap()
}

pub fn bundle(spec: &Spec) -> Vec<u8> {
    let m = manifest_for(spec).encode().unwrap();
    bundle_from(spec, &m)
}

pub fn policy() -> DevicePolicy<'static> {
    DevicePolicy::device(product(), 1 << 20)
}

pub fn verify(bytes: &[u8], policy: DevicePolicy<'_>) -> Result<(u32, u32), Error> {
    let root = root();
    let mut buf = [0u8; MAX_ENVELOPE_LEN];
    let v = verify_bundle(&root, policy, bytes, &mut buf)?;
    Ok((v.security_counter(), v.key_set_version()))
}
