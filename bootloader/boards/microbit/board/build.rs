//! Turns the board configuration (`../board.toml`, or the file `SIGIL_BOARD_TOML` names: the
//! benchmark's larger flash) into Rust constants (`config.rs`) and the linker scripts
//! (`boot/memory.x`, `app/memory.x`). The schema and the shared checks are
//! `sigil-board-build`'s; the nRF51's rules are here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects
)] // build script: a bad board.toml must stop the build loudly

use std::fmt::Write as _;
use std::path::PathBuf;

use sigil_board_build::BoardConfig;

/// The nRF51's flash protection block (MPU `PROTENSET0/1`: 64 blocks over 256 KiB).
const PROTECTION_BLOCK: u32 = 4096;

/// Bytes of RAM the exception forwarding record takes (board/src/glue.rs).
const VECTOR_RECORD_SIZE: u32 = 8;

fn fail(msg: &str) -> ! {
    panic!("board.toml: {msg}");
}

fn main() {
    println!("cargo:rerun-if-env-changed=SIGIL_BOARD_TOML");
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let path = std::env::var_os("SIGIL_BOARD_TOML")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("../board.toml"));
    println!("cargo:rerun-if-changed={}", path.display());
    let b = BoardConfig::load(&path).unwrap_or_else(|e| fail(&sigil_board_build::report(&e)));
    let flash_size = b.flash_size().unwrap();
    if b.memory.bootloader != 0 {
        fail("the Cortex-M0 starts from the vector table at 0: the bootloader must be at 0");
    }
    // The protected state must fill whole protection blocks that hold nothing else, so the
    // lock covers it and never the request sector or a slot.
    let layout = b.layout().unwrap();
    let protected = layout.protected_region();
    let start = b.flash.base + protected.start;
    let end = b.flash.base + protected.end;
    let block_end = end.next_multiple_of(PROTECTION_BLOCK);
    if !start.is_multiple_of(PROTECTION_BLOCK) {
        fail("the protected state must start on a 4 KiB protection block");
    }
    let others = [
        layout.request_region().start,
        b.layout.active,
        b.layout.staging,
    ];
    if others
        .iter()
        .any(|&o| (start..block_end).contains(&(b.flash.base + o)))
    {
        fail("the protected state's 4 KiB protection blocks must hold nothing else");
    }
    if (b.flash.base + flash_size) > 64 * PROTECTION_BLOCK * 2 {
        fail("the flash ends beyond the nRF51's protection registers (512 KiB)");
    }

    let mut cfg = b.firmware_constants();
    writeln!(
        cfg,
        "/// Flash address range the lock protects (whole 4 KiB protection blocks).\npub const LOCKED: core::ops::Range<u32> = {start:#x}..{block_end:#x};"
    )
    .unwrap();
    // The exception forwarding record (board/src/glue.rs): the first 8 bytes of RAM, below
    // the bootloader's RAM and outside the application's.
    if b.bootloader_ram_origin() < b.memory.ram + VECTOR_RECORD_SIZE {
        fail("the bootloader's RAM must leave the first 8 bytes of RAM to the forwarding record");
    }
    writeln!(
        cfg,
        "/// RAM address of the exception forwarding record (two words: the started image's vector\n/// table and its complement), outside both firmware images' RAM.\npub const VECTOR_RECORD: u32 = {:#x};",
        b.memory.ram
    )
    .unwrap();
    // The bootloader keeps no RAM after the jump: the application is linked with all of it
    // but the forwarding record.
    sigil_board_build::write_board_files(
        "sigil-board-microbit's build.rs",
        &cfg,
        (
            (b.memory.bootloader, b.memory.bootloader_size),
            (b.bootloader_ram_origin(), b.memory.bootloader_ram),
        ),
        (
            (b.app_origin(), b.app_len()),
            (
                b.memory.ram + VECTOR_RECORD_SIZE,
                b.memory.ram_size - VECTOR_RECORD_SIZE,
            ),
        ),
    )
    .unwrap_or_else(|e| fail(&e));
}
