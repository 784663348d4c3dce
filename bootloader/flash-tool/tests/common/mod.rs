//! Fixtures shared by the `sigil-flash` tests.

/// A validly signed bundle for the reference board (the bootloader verifies it at boot; the
/// tool only needs it well formed).
#[allow(clippy::unwrap_used)]
pub fn bundle(seed: u8, len: usize) -> Vec<u8> {
    use ed25519_dalek::SigningKey;
    use sha2::{Digest, Sha256};
    use sigil_manifests::*;
    let key = SigningKey::from_bytes(&[seed; 32]);
    let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect();
    let manifest = Manifest {
        product: ProductId::new("sigil-test", "qemu-mps2-an385").unwrap(),
        component: "app",
        version: Version::parse("1.0.0").unwrap(),
        security_counter: u32::from(seed),
        payload_size: payload.len() as u64,
        payload_digest: Sha256::digest(&payload).into(),
        payload_format: PayloadFormat::Raw,
        payload_alignment: 4096,
        min_bootloader_version: None,
        dependencies: heapless::Vec::new(),
        created: 1_700_000_000,
        expires: None,
        release_notes_digest: None,
        sbom_digest: None,
    }
    .encode()
    .unwrap();
    let public = key.verifying_key().to_bytes();
    let ks = KeySet::new(1, 1, None, &[public])
        .unwrap()
        .encode()
        .unwrap();
    assemble_bundle(&ks, &[&key], &manifest, &[&key], &payload).unwrap()
}
