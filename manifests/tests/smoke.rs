mod common;
use common::*;

#[test]
fn valid_bundle_verifies() {
    let b = bundle(&Spec::default());
    assert_eq!(verify(&b, policy()), Ok((5, 1)));
}
