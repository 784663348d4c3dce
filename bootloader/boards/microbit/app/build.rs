//! Build-time variants of the test application: `SIGIL_APP_VERSION` (printed; sign the bundle
//! with the same version) and `SIGIL_APP_EXIT_CODE` (the distinctive QEMU exit code, 1..=255).
#![allow(clippy::unwrap_used, clippy::expect_used)] // build script: fail loudly

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=SIGIL_APP_VERSION");
    println!("cargo:rerun-if-env-changed=SIGIL_APP_EXIT_CODE");
    let version = std::env::var("SIGIL_APP_VERSION").unwrap_or_else(|_| "0.0.0-dev".into());
    let code: u8 = std::env::var("SIGIL_APP_EXIT_CODE")
        .unwrap_or_else(|_| "16".into())
        .parse()
        .expect("SIGIL_APP_EXIT_CODE must be a number in 0..=255");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(
        out.join("variant.rs"),
        format!("const VERSION: &str = {version:?};\nconst EXIT_CODE: u8 = {code};\n"),
    )
    .unwrap();
    // The application is linked where an installed bundle's payload lands (board.toml).
    let memory = std::env::var("DEP_SIGIL_BOARD_MICROBIT_MEMORY_DIR").unwrap();
    println!("cargo:rustc-link-search={memory}/app");
    println!("cargo:rustc-link-arg=-Tlink.x");
}
