//! Turns `../board.toml` into Rust constants (`config.rs`) and the two linker scripts
//! (`boot/memory.x`, `app/memory.x`), so the flash map has a single source.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects
)] // build script: a bad board.toml must stop the build loudly

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Board {
    memory: Memory,
    flash: Flash,
    layout: Layout,
    device: Device,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Memory {
    bootloader: u32,
    bootloader_size: u32,
    ram: u32,
    ram_size: u32,
    bootloader_ram: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Flash {
    base: u32,
    erase_size: u32,
    write_size: u32,
    read_size: u32,
    erased: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Layout {
    protected: u32,
    requests: u32,
    active: u32,
    staging: u32,
    slot_sectors: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Device {
    vendor: String,
    device: String,
    component: String,
    trial_attempts: u8,
    payload_alignment: u32,
}

fn fail(msg: &str) -> ! {
    panic!("board.toml: {msg}");
}

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let path = manifest_dir.join("../board.toml");
    println!("cargo:rerun-if-changed={}", path.display());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| fail(&format!("{e}")));
    let b: Board = toml::from_str(&text).unwrap_or_else(|e| fail(&format!("{e}")));

    let s = b.flash.erase_size;
    let slot = b.layout.slot_sectors * s;
    // The same checks as the firmware's compile-time `Layout::new` (and sigil-flash's), so a
    // bad map fails here with the core's message.
    let geometry = sigil_bootloader::Geometry {
        erase_size: s,
        write_size: b.flash.write_size,
        read_size: b.flash.read_size,
        erased: b.flash.erased,
    };
    let layout = sigil_bootloader::Layout::new(
        geometry,
        b.layout.protected,
        b.layout.requests,
        b.layout.active,
        b.layout.staging,
        b.layout.slot_sectors,
    )
    .unwrap_or_else(|e| fail(&format!("flash layout: {e}")));
    let flash_size = [
        layout.protected_region().end,
        layout.request_region().end,
        b.layout.active + slot,
        b.layout.staging + slot + s,
    ]
    .into_iter()
    .max()
    .unwrap();
    // The bootloader's own image, RAM and the flash device must not overlap: the linker
    // places nothing inside the flash device, which the driver accesses as plain memory.
    let boot_end = b.memory.bootloader + b.memory.bootloader_size;
    if boot_end > b.flash.base {
        fail("the bootloader region overlaps the flash device");
    }
    let ram_end = b.memory.ram + b.memory.ram_size;
    if b.memory.ram < b.flash.base + flash_size && b.flash.base < ram_end {
        fail("RAM overlaps the flash device");
    }
    // The lock (src/lock.rs) covers each of these with one MPU region (PMSAv7: a power of two
    // of at least 32 bytes, aligned to its size).
    let mpu_region =
        |base: u32, size: u32| size >= 32 && size.is_power_of_two() && base.is_multiple_of(size);
    if !mpu_region(b.memory.bootloader, b.memory.bootloader_size) {
        fail("bootloader .. bootloader + bootloader_size must be one MPU region (a power of two, aligned)");
    }
    if !mpu_region(b.memory.ram, b.memory.ram_size) {
        fail("ram .. ram + ram_size must be one MPU region (a power of two, aligned)");
    }
    let boot_ram = b.memory.bootloader_ram;
    if boot_ram >= b.memory.ram_size || !mpu_region(ram_end - boot_ram, boot_ram) {
        fail("bootloader_ram must be a power of two smaller than ram_size");
    }
    let app_ram_size = b.memory.ram_size - boot_ram;
    // Unprivileged code may read (and run) every address from 0 to the end of the flash
    // device, rounded up to a power of two: the application's image and the flash window.
    let code_region = (b.flash.base + flash_size).next_power_of_two();
    if b.memory.bootloader != 0 {
        fail("the MPU code region starts at 0: the bootloader must run from address 0");
    }
    let a = b.device.payload_alignment;
    if !a.is_power_of_two() || a < 256 || a >= slot {
        fail("payload_alignment must be a power of two, >= 256 (vector table) and < the slot");
    }
    let app_origin = b.flash.base + b.layout.active + a;
    let app_len = slot - a;

    let mut cfg = String::new();
    let mut c = |name: &str, ty: &str, value: String, doc: &str| {
        writeln!(cfg, "/// {doc}\npub const {name}: {ty} = {value};").unwrap();
    };
    c(
        "BOOTLOADER_ORIGIN",
        "u32",
        format!("{:#x}", b.memory.bootloader),
        "Address the bootloader runs from.",
    );
    c(
        "BOOTLOADER_SIZE",
        "u32",
        format!("{:#x}", b.memory.bootloader_size),
        "Size reserved for the bootloader.",
    );
    c(
        "RAM_ORIGIN",
        "u32",
        format!("{:#x}", b.memory.ram),
        "Start of RAM.",
    );
    c(
        "RAM_SIZE",
        "u32",
        format!("{:#x}", b.memory.ram_size),
        "RAM size.",
    );
    c(
        "BOOTLOADER_RAM",
        "u32",
        format!("{:#x}", ram_end - boot_ram),
        "Start of the RAM the bootloader keeps after the jump (the top of RAM).",
    );
    c(
        "BOOTLOADER_RAM_SIZE",
        "u32",
        format!("{boot_ram:#x}"),
        "Bytes of RAM the bootloader keeps after the jump.",
    );
    c(
        "APP_RAM_SIZE",
        "u32",
        format!("{app_ram_size:#x}"),
        "RAM the application may use: `RAM_ORIGIN .. RAM_ORIGIN + APP_RAM_SIZE`.",
    );
    c(
        "CODE_REGION_SIZE",
        "u32",
        format!("{code_region:#x}"),
        "Addresses `0 .. CODE_REGION_SIZE` (bootloader, flash device) form the MPU code region.",
    );
    c(
        "FLASH_BASE",
        "u32",
        format!("{:#x}", b.flash.base),
        "Address of flash offset 0.",
    );
    c(
        "FLASH_SIZE",
        "usize",
        format!("{flash_size:#x}"),
        "Flash device size: up to the end of the staging slot.",
    );
    c(
        "ERASE_SIZE",
        "usize",
        format!("{}", b.flash.erase_size),
        "Erase sector size.",
    );
    c(
        "WRITE_SIZE",
        "usize",
        format!("{}", b.flash.write_size),
        "Write granularity.",
    );
    c(
        "READ_SIZE",
        "usize",
        format!("{}", b.flash.read_size),
        "Read granularity.",
    );
    c(
        "ERASED",
        "u8",
        format!("{:#x}", b.flash.erased),
        "Value of an erased byte.",
    );
    c(
        "PROTECTED",
        "u32",
        format!("{:#x}", b.layout.protected),
        "Offset of the protected-state region (written by the bootloader only).",
    );
    c(
        "REQUESTS",
        "u32",
        format!("{:#x}", b.layout.requests),
        "Offset of the request sector (written by the application).",
    );
    c(
        "ACTIVE",
        "u32",
        format!("{:#x}", b.layout.active),
        "Offset of the active slot.",
    );
    c(
        "STAGING",
        "u32",
        format!("{:#x}", b.layout.staging),
        "Offset of the staging slot.",
    );
    c(
        "SLOT_SECTORS",
        "u32",
        format!("{}", b.layout.slot_sectors),
        "Sectors per slot.",
    );
    c(
        "VENDOR",
        "&str",
        format!("{:?}", b.device.vendor),
        "Product vendor.",
    );
    c(
        "DEVICE",
        "&str",
        format!("{:?}", b.device.device),
        "Product device class.",
    );
    c(
        "COMPONENT",
        "&str",
        format!("{:?}", b.device.component),
        "The component the active slot holds.",
    );
    c(
        "TRIAL_ATTEMPTS",
        "u8",
        format!("{}", b.device.trial_attempts),
        "Trial boots before a revert.",
    );
    c(
        "PAYLOAD_ALIGNMENT",
        "u32",
        format!("{a}"),
        "Payload alignment images are signed with.",
    );
    c(
        "APP_ORIGIN",
        "u32",
        format!("{app_origin:#x}"),
        "Where the application image is linked.",
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(out.join("config.rs"), cfg).unwrap();

    // The bootloader's RAM is the top of RAM (its stack ends at the top), the application's
    // the rest: after the jump the MPU keeps the application out of the bootloader's part.
    for (dir, origin, len, ram, ram_len) in [
        (
            "boot",
            b.memory.bootloader,
            b.memory.bootloader_size,
            ram_end - boot_ram,
            boot_ram,
        ),
        ("app", app_origin, app_len, b.memory.ram, app_ram_size),
    ] {
        let ram = format!("  RAM : ORIGIN = {ram:#x}, LENGTH = {ram_len:#x}\n");
        let d = out.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        let x = format!(
            "/* Generated from board.toml by sigil-board-mps2-an385's build.rs. */\nMEMORY\n{{\n  FLASH : ORIGIN = {origin:#x}, LENGTH = {len:#x}\n{ram}}}\n"
        );
        std::fs::write(d.join("memory.x"), x).unwrap();
        // cortex-m-rt's `device` feature (the bootloader's own interrupt table, glue.rs)
        // includes this file; no device-specific handler names are needed.
        std::fs::write(
            d.join("device.x"),
            "/* Generated by sigil-board-mps2-an385's build.rs: no device interrupt handlers. */\n",
        )
        .unwrap();
    }
    println!("cargo:memory_dir={}", out.display());
}
