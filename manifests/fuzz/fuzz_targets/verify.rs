//! The streaming verifier on arbitrary bytes, fed in chunks whose sizes come from the input,
//! must give the same verdict as verification in place over the same bytes. Seeded with a real
//! trust root so that inputs built from valid bundles reach the deep steps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_manifests::{
    verify_in_place, BundleVerifier, DevicePolicy, Error, ProductId, TrustRoot, MAX_ENVELOPE_LEN,
};

const ROOT: &[u8] = include_bytes!("../../tests/fixtures/v1/root.sigil");

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bundle)) = data.split_first() else { return };
    let Ok(root) = TrustRoot::decode(ROOT) else { return };
    let Ok(product) = ProductId::new("acme", "pump-x2") else { return };
    let mut buf = [0u8; MAX_ENVELOPE_LEN];
    let policy = DevicePolicy::device(product, 1 << 20);
    let mut verifier = BundleVerifier::new(&root, policy, &mut buf);
    let streamed = bundle
        .chunks(usize::from(chunk).max(1))
        .try_for_each(|piece| verifier.feed(piece))
        .and_then(|()| verifier.finish())
        .map(|v| (v.security_counter(), v.key_set_version(), v.payload_size()));
    let in_place = verify_in_place(&root, policy, bundle)
        .map(|v| (v.security_counter(), v.key_set_version(), v.payload_size()));
    // Fed whole, a stream with bytes after the bundle fails with TrailingData; in place, those
    // bytes are simply not read. Everything else must agree exactly.
    if streamed != Err(Error::TrailingData) {
        assert_eq!(streamed, in_place, "streamed and in-place verdicts differ");
    }
});
