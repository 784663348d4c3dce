//! Every decoder on arbitrary bytes: must return, never panic or overrun, and whatever a decoder
//! accepts must be the one encoding of what it decoded (it re-encodes to the very same bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_manifests::{Envelope, KeySet, Manifest, SignedKeySet, TrustRoot, UnverifiedBundle};

fuzz_target!(|data: &[u8]| {
    if let Ok(root) = TrustRoot::decode(data) {
        assert_eq!(root.encode().ok().as_deref(), Some(data), "trust root not canonical");
    }
    if let Ok(set) = KeySet::decode(data) {
        assert_eq!(set.encode().ok().as_deref(), Some(data), "key set not canonical");
    }
    if let Ok(signed) = SignedKeySet::decode(data) {
        assert_eq!(signed.encode().ok().as_deref(), Some(data), "signed key set not canonical");
    }
    if let Ok(manifest) = Manifest::decode(data) {
        assert_eq!(manifest.encode().ok().as_deref(), Some(data), "manifest not canonical");
    }
    if let Ok(envelope) = Envelope::decode(data) {
        assert_eq!(envelope.encode().ok().as_deref(), Some(data), "envelope not canonical");
    }
    if let Ok(bundle) = UnverifiedBundle::parse(data) {
        let _ = bundle.unverified_manifest();
        let _ = bundle.unverified_key_set();
    }
});
