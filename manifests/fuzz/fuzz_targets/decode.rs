//! Every decoder on arbitrary bytes: must return, never panic or overrun.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_manifests::{Envelope, KeySet, Manifest, SignedKeySet, TrustRoot, UnverifiedBundle};

fuzz_target!(|data: &[u8]| {
    let _ = TrustRoot::decode(data);
    let _ = KeySet::decode(data);
    let _ = SignedKeySet::decode(data);
    let _ = Manifest::decode(data);
    let _ = Envelope::decode(data);
    if let Ok(bundle) = UnverifiedBundle::parse(data) {
        let _ = bundle.unverified_manifest();
        let _ = bundle.unverified_key_set();
    }
});
