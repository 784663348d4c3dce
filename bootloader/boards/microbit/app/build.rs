//! Build-time variants of the test application (`SIGIL_APP_VERSION`, `SIGIL_APP_EXIT_CODE`:
//! `sigil_board_build::app_variant`), linked where an installed bundle's payload lands
//! (board.toml).
#![allow(clippy::panic)] // build script: fail loudly

fn main() {
    let done = sigil_board_build::app_variant()
        .and_then(|()| sigil_board_build::link_with("DEP_SIGIL_BOARD_MICROBIT_MEMORY_DIR", "app"));
    if let Err(e) = done {
        panic!("{e}");
    }
}
