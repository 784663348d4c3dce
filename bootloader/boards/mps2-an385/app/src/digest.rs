//! The manifest digest that names an image in requests (`sigil_bootloader::ImageDigest`),
//! computed from a slot's bytes in place: the hostile application names the staged bundle with
//! it, as an attacker would (`sigil_board_common::manifest_digest`).

pub use sigil_board_common::manifest_digest;
