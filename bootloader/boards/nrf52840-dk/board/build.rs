//! Turns `../board.toml` into Rust constants (`config.rs`) and the linker scripts
//! (`boot/memory.x`, `app/memory.x`). The schema and the shared checks are
//! `sigil-board-build`'s; the nRF52840's rules (ACL regions, VTOR) are here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects
)] // build script: a bad board.toml must stop the build loudly

use std::fmt::Write as _;
use std::path::PathBuf;

use sigil_board_build::BoardConfig;

/// nRF52840 flash page: the ACL's address and size granularity.
const PAGE: u32 = 4096;
/// nRF52840 flash size.
const FLASH_END: u32 = 0x10_0000;

fn fail(msg: &str) -> ! {
    panic!("board.toml: {msg}");
}

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let path = manifest_dir.join("../board.toml");
    println!("cargo:rerun-if-changed={}", path.display());
    let b = BoardConfig::load(&path).unwrap_or_else(|e| fail(&sigil_board_build::report(&e)));
    let flash_size = b.flash_size().unwrap();
    if b.memory.bootloader != 0 {
        fail("the nRF52840 starts from the vector table at 0: the bootloader must be at 0");
    }
    if b.flash.base + flash_size > FLASH_END {
        fail("the flash map ends beyond the nRF52840's 1 MiB");
    }
    if b.flash.erase_size != PAGE {
        fail("erase_size must be the nRF52840's 4 KiB page");
    }
    let protected = b.layout().unwrap().protected_region();
    let start = b.flash.base + protected.start;
    let end = b.flash.base + protected.end;
    if !start.is_multiple_of(PAGE) || !end.is_multiple_of(PAGE) {
        fail("the protected state must be whole 4 KiB pages (one ACL region)");
    }
    if !b.device.payload_alignment.is_multiple_of(256) {
        fail("payload_alignment must be a multiple of 256 (VTOR: 16 + 48 vectors)");
    }

    let mut cfg = b.firmware_constants();
    writeln!(
        cfg,
        "/// Flash address range the ACL locks before the jump (whole pages).\npub const LOCKED: core::ops::Range<u32> = {start:#x}..{end:#x};"
    )
    .unwrap();
    // The bootloader keeps no RAM after the jump: the application is linked with all of it.
    sigil_board_build::write_board_files(
        "sigil-board-nrf52840-dk's build.rs",
        &cfg,
        (
            (b.memory.bootloader, b.memory.bootloader_size),
            (b.bootloader_ram_origin(), b.memory.bootloader_ram),
        ),
        (
            (b.app_origin(), b.app_len()),
            (b.memory.ram, b.memory.ram_size),
        ),
    )
    .unwrap_or_else(|e| fail(&e));
}
