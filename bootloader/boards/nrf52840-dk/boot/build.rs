//! Compiles the trust root in (`SIGIL_TRUST_ROOT`, a file made by `sigil root init`, validated
//! here so a missing or malformed root fails the build, not the device) and links with the
//! `memory.x` the board crate generated from board.toml.
#![allow(clippy::panic)] // build script: fail loudly

fn main() {
    let done = sigil_board_build::compile_trust_root("thumbv7em-none-eabihf").and_then(|()| {
        sigil_board_build::link_with("DEP_SIGIL_BOARD_NRF52840_DK_MEMORY_DIR", "boot")
    });
    if let Err(e) = done {
        panic!("{e}");
    }
    // Identical code folding, as on mps2-an385 (nothing compares function addresses).
    println!("cargo:rustc-link-arg-bins=--icf=all");
}
