//! Back-compatibility: version-1 files checked in under `fixtures/v1/` must keep decoding and
//! verifying, and today's encoder must still produce them byte for byte. A change that breaks
//! either is a format break (FORMAT.md §7). `SIGIL_BLESS=1` writes them.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use sigil_manifests::*;
use sigil_test_support::*;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn golden_spec() -> Spec {
    Spec {
        key_set_threshold: 2,
        manifest_signers: vec![11, 12],
        scope: Some(product()),
        version: "2.0.1-rc.1",
        ..Spec::default()
    }
}

fn check(name: &str, built: &[u8]) -> Vec<u8> {
    let path = dir().join(name);
    if std::env::var_os("SIGIL_BLESS").is_some() {
        std::fs::create_dir_all(dir()).unwrap();
        std::fs::write(&path, built).unwrap();
    }
    let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        stored, built,
        "{name}: encoder output changed (format break?)"
    );
    stored
}

#[test]
fn v1_trust_root_is_stable() {
    let stored = check("root.sigil", &root().encode().unwrap());
    assert_eq!(TrustRoot::decode(&stored).unwrap(), root());
    assert_eq!(&stored[..10], b"SGL-ROOT\x01\x00");
}

#[test]
fn v1_signed_key_set_is_stable() {
    let spec = golden_spec();
    let ks = key_set_bytes(&spec);
    let mut signed = SignedKeySet {
        key_set: &ks,
        signatures: Default::default(),
    };
    signed
        .add_signature(SignatureEntry::sign(&key(1), &ks))
        .unwrap();
    signed
        .add_signature(SignatureEntry::sign(&key(3), &ks))
        .unwrap();
    let stored = check("keyset.sigil", &signed.encode().unwrap());
    let decoded = SignedKeySet::decode(&stored).unwrap();
    let verified = decoded.verify(&root()).unwrap();
    assert_eq!(verified.key_set().version, 1);
    assert_eq!(verified.key_set().threshold, 2);
    assert_eq!(verified.key_set().product_scope, Some(product()));
}

#[test]
fn v1_bundle_is_stable_and_verifies() {
    let spec = golden_spec();
    let stored = check("bundle.sigil", &bundle(&spec));
    let root = root();
    let mut buf = [0u8; MAX_ENVELOPE_LEN];
    let v = verify_bundle(&root, policy().with_component("app"), &stored, &mut buf).unwrap();
    let m = v.manifest();
    assert_eq!(m.version, Version::parse("2.0.1-rc.1").unwrap());
    assert_eq!(m.security_counter, 5);
    assert_eq!(m.payload_size, 1000);
    assert_eq!(v.payload_offset(), 640);
    assert_eq!(v.payload_offset() % 64, 0);
    assert_eq!(&stored[..8], b"SGL-BNDL");
}
