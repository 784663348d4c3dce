//! Compiles the trust root in (`SIGIL_TRUST_ROOT`, a file made by `sigil root init`, validated
//! here so a missing or malformed root fails the build, not the device) and links with the
//! `memory.x` the board crate generated from board.toml.
#![allow(clippy::panic)] // build script: fail loudly

fn main() {
    let done = sigil_board_build::compile_trust_root("thumbv7m-none-eabi").and_then(|()| {
        sigil_board_build::link_with("DEP_SIGIL_BOARD_MPS2_AN385_MEMORY_DIR", "boot")
    });
    if let Err(e) = done {
        panic!("{e}");
    }
    // Identical code folding: the linker keeps one copy of functions whose code is identical
    // (the aligned and unaligned variants of the memory routines, small trait impls), about
    // 0.4 KiB. lld folds only code here (read-only data needs --ignore-data-address-equality),
    // and nothing in the firmware compares function addresses.
    println!("cargo:rustc-link-arg-bins=--icf=all");
}
