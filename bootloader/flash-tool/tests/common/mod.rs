//! Fixtures shared by the `sigil-flash` tests.

use sigil_manifests::ProductId;

/// A validly signed bundle (`sigil-test-support`'s keys) for the reference board, security
/// counter `seed`, with a `len`-byte payload: the tool only needs it well formed.
#[allow(clippy::unwrap_used)]
pub fn bundle(seed: u8, len: usize) -> Vec<u8> {
    sigil_test_support::bundle(&sigil_test_support::Spec {
        product: ProductId::new("sigil-test", "qemu-mps2-an385").unwrap(),
        alignment: 4096,
        payload: sigil_test_support::payload(len, seed),
        ..sigil_test_support::Spec::release("1.0.0", u32::from(seed))
    })
}
