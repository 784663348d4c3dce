//! Compiles the trust root in: `SIGIL_TRUST_ROOT` names a file made by `sigil root init`. It is
//! decoded and validated here, so a missing or malformed root fails the build, not the device.
#![allow(clippy::unwrap_used, clippy::expect_used)] // build script: fail loudly

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=SIGIL_TRUST_ROOT");
    let Some(path) = std::env::var_os("SIGIL_TRUST_ROOT") else {
        panic!(
            "\n\nSIGIL_TRUST_ROOT is not set.\nThe bootloader compiles its trust root in: set \
             SIGIL_TRUST_ROOT to the file written by `sigil root init` (for example \
             SIGIL_TRUST_ROOT=keys/root.sigil-root cargo build --release --target \
             thumbv7em-none-eabihf).\n"
        );
    };
    let path = PathBuf::from(path);
    println!("cargo:rerun-if-changed={}", path.display());
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("\n\nSIGIL_TRUST_ROOT={}: {e}\n", path.display()));
    if let Err(e) = sigil_manifests::TrustRoot::decode(&bytes) {
        panic!(
            "\n\nSIGIL_TRUST_ROOT={} is not a valid trust root: {e}\n",
            path.display()
        );
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(out.join("trust_root.bin"), &bytes).unwrap();

    // memory.x generated from board.toml by the board crate; link.x comes from cortex-m-rt.
    let memory = std::env::var("DEP_SIGIL_BOARD_NRF52840_DK_MEMORY_DIR").unwrap();
    println!("cargo:rustc-link-search={memory}/boot");
    println!("cargo:rustc-link-arg=-Tlink.x");
    // Identical code folding: the linker keeps one copy of functions whose code is identical
    // (the aligned and unaligned variants of the memory routines, small trait impls), about
    // 0.4 KiB. lld folds only code here (read-only data needs --ignore-data-address-equality),
    // and nothing in the firmware compares function addresses.
    println!("cargo:rustc-link-arg-bins=--icf=all");
}
