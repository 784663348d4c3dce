//! The streaming verifier on arbitrary bytes, fed in chunks whose sizes come from the input.
//! Seeded with a real trust root so that inputs built from valid bundles reach the deep steps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_manifests::{BundleVerifier, DevicePolicy, ProductId, TrustRoot, MAX_ENVELOPE_LEN};

const ROOT: &[u8] = include_bytes!("../../tests/fixtures/v1/root.sigil");

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bundle)) = data.split_first() else { return };
    let Ok(root) = TrustRoot::decode(ROOT) else { return };
    let Ok(product) = ProductId::new("acme", "pump-x2") else { return };
    let mut buf = [0u8; MAX_ENVELOPE_LEN];
    let mut verifier = BundleVerifier::new(&root, DevicePolicy::device(product, 1 << 20), &mut buf);
    for piece in bundle.chunks(usize::from(chunk).max(1)) {
        if verifier.feed(piece).is_err() {
            return;
        }
    }
    let _ = verifier.finish();
});
