//! The manifest digest that names an image in requests (`sigil_bootloader::ImageDigest`),
//! computed from a slot's bytes in place. Both test applications use it: the test application
//! to confirm the image it is (the bytes the bootloader verified before the jump), the hostile
//! one to name the staged bundle.

use sha2::{Digest, Sha256};
use sigil_board_mps2_an385::AppFlash;
use sigil_bootloader::{BootFlash, ImageDigest};
use sigil_manifests::{BundleHeader, UnverifiedBundle, HEADER_LEN};

/// SHA-256 of the manifest bytes of the bundle at flash offset `base`, if it parses.
pub fn manifest_digest(flash: &AppFlash, base: u32) -> Option<ImageDigest> {
    let head: &[u8; HEADER_LEN] = flash.mapped(base, HEADER_LEN as u32)?.try_into().ok()?;
    let end = BundleHeader::parse(head).ok()?.envelope_end().ok()?;
    let bundle = UnverifiedBundle::parse(flash.mapped(base, end)?).ok()?;
    Some(Sha256::digest(bundle.envelope().manifest).into())
}
