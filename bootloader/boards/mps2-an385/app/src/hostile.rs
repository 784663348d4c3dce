//! The hostile test application: a validly signed image that attacks the device's protected
//! state from the inside, the way compromised application firmware would. It runs, like any
//! application on this board, unprivileged after the bootloader's lock.
//!
//! The QEMU test picks one attack per boot with the board's test strap, a word QEMU loads past
//! the flash device (`sigil_board_mps2_an385::TEST_STRAP`; 0, the default, is no attack). Each attack prints
//! `hostile: <attack>: <result>`; an attack the MPU stops never prints, the bootloader's fault
//! handler ends the run instead (`exit::APP_FAULT`, with a `lock:` log line).
//!
//! | word | attack | the lock's answer |
//! |---|---|---|
//! | 1 | `forged-floor`: a well-formed protected record (next sequence number, floors 0) that starts installing the staged bundle, an old validly signed image, written through the flash service | refused (`Locked`) |
//! | 2 | `erase-protected`: erase the protected state through the service | refused |
//! | 3 | `forged-rejection`: a protected record marking the staged bundle (the next fix) rejected | refused |
//! | 4 | `exhaust-sequence`: a protected record with sequence `u32::MAX` (refused), then the request sector programmed to all zeros | refused; the zeros are only invalid requests |
//! | 5 | `old-image-request`: an install request for the staged bundle, an old, validly signed image | accepted as a request; the next boot refuses the image (counter below the floor) |
//! | 6 | `store-protected`: a store into the protected state through the memory window | memory protection fault |
//! | 7 | `store-mirror`: the same store through QEMU's mirror of SSRAM1 at `0x0040_0000` | memory protection fault |
//! | 8 | `store-latch`: a store into the bootloader's RAM (the latch, the service's state) | memory protection fault |
//! | 9 | `mpu-off`: a store of 0 to `MPU_CTRL` | bus fault |
//! | 10 | `semihosting`: open `flash.bin` with its own semihosting call, past the service | debug event (QEMU refuses semihosting to unprivileged code) |
//! | 11 | `service-deputy`: the service asked to copy the bootloader's RAM into the staging slot and to print the bootloader's image | refused (`BadBuffer`) |
//! | 12 | `erase-active`: erase the active slot, the running verified image, through the service | refused (`NotWritable`) |
//! | 13 | `erase-revert-image`: on a trial boot, erase the staging slot, which holds the image to revert to | refused (`NotWritable`) |
//! | 14 | `read-key`: read the device key store (the X25519 private key) through the memory window | memory protection fault |
//! | 15 | `read-key-mirror`: the same read through QEMU's mirror of SSRAM1 at `0x0040_0000` | memory protection fault |
//! | 16 | `service-key`: the service asked to copy the key store into the staging slot and to print it | refused (`BadBuffer`) |
//! | 17 | `erase-key`: erase the key store through the service | refused (`NotWritable`) |
//!
//! With no attack it behaves like the test application: prints its banner and the state,
//! confirms a trial boot, exits with its code.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

mod digest;

use cortex_m_rt::entry;
use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
use sigil_board_mps2_an385::service::Op;
use sigil_board_mps2_an385::{
    app, app_println as println, config, dangerous_semihosting, dangerous_store_then_exit, exit,
    AppFlash, FlashError, LAYOUT,
};
use sigil_bootloader::{BootControl, BootFlash, ImageDigest, Phase};
use sigil_manifests::{BundleHeader, HEADER_LEN};

include!(concat!(env!("OUT_DIR"), "/variant.rs"));

/// Exit code when a store or a semihosting call the lock must stop went through.
const BREACHED: u8 = 0x49;

/// Where QEMU mirrors SSRAM1 (the bootloader and the flash window) a second time.
const SSRAM1_MIRROR: u32 = 0x0040_0000;

/// The MPU control register.
const MPU_CTRL: u32 = 0xE000_ED94;

/// Protected-state record format (the core's `record.rs`, read as an attacker would).
mod record {
    pub const LEN: usize = 256;
    pub const MAGIC: [u8; 4] = *b"SGPS";
    pub const SEQUENCE: usize = 4;
    pub const PHASE: usize = 9;
    pub const PHASE_SWAPPING: u8 = 3;
    pub const ATTEMPTS: usize = 10;
    pub const SWAP_PROGRESS: usize = 12;
    pub const SWAP_SECTORS: usize = 16;
    pub const FLOOR_COUNTER: usize = 20;
    pub const FLOOR_KEY_SET: usize = 24;
    pub const TRIAL_COUNTER: usize = 28;
    pub const TRIAL_KEY_SET: usize = 32;
    pub const TRIAL_IMAGE: usize = 36;
    pub const REJECTED_COUNT: usize = 68;
    pub const REJECTED: usize = 72;
    pub const CRC: usize = 252;
}

#[entry]
fn main() -> ! {
    println!("app: sigil test application {} running", VERSION);
    let Ok(flash) = AppFlash::new() else {
        println!("app: flash unavailable");
        app::exit(exit::FLASH_ERROR)
    };
    let mut control = match BootControl::new(flash, LAYOUT) {
        Ok(control) => control,
        Err(e) => {
            println!("app: boot-control state unreadable: {}", e);
            app::exit(exit::FLASH_ERROR)
        }
    };
    let state = control.state();
    println!(
        "app: phase {}, trial boots left {}, minimum security counter {}",
        state.phase, state.attempts_left, state.min_security_counter
    );
    match sigil_board_mps2_an385::test_strap() {
        0 => benign(&mut control),
        1 => forged_floor(control.flash()),
        2 => erase_protected(control.flash()),
        3 => forged_rejection(control.flash()),
        4 => exhaust_sequence(control.flash()),
        5 => old_image_request(&mut control),
        6 => store("store-protected", protected_address()),
        7 => store(
            "store-mirror",
            protected_address().saturating_add(SSRAM1_MIRROR),
        ),
        8 => store("store-latch", config::BOOTLOADER_RAM),
        9 => store("mpu-off", MPU_CTRL),
        10 => semihosting(),
        11 => service_deputy(control.flash()),
        12 => erase_sector("erase-active", control.flash(), LAYOUT.active_offset()),
        13 => erase_sector(
            "erase-revert-image",
            control.flash(),
            LAYOUT.staged_bundle_offset(),
        ),
        14 => read_key(control.flash()),
        15 => load(
            "read-key-mirror",
            key_address().saturating_add(SSRAM1_MIRROR),
        ),
        16 => service_key(control.flash()),
        17 => erase_sector("erase-key", control.flash(), key_offset()),
        other => println!("hostile: no attack {}", other),
    }
    println!("app: exiting with code {}", EXIT_CODE);
    app::exit(EXIT_CODE)
}

fn benign(control: &mut BootControl<AppFlash>) {
    if control.state().phase == Phase::Trial {
        let running = digest::manifest_digest(control.flash(), LAYOUT.active_offset());
        match running.map(|d| control.confirm(&d)) {
            Some(Ok(())) => println!("app: confirmed; the floors rise at the next boot"),
            Some(Err(e)) => println!("app: confirm failed: {}", e),
            None => println!("app: confirm failed: the active bundle does not parse"),
        }
    }
}

fn protected_address() -> u32 {
    config::FLASH_BASE.saturating_add(LAYOUT.protected_region().start)
}

/// The device key store (board.toml `device_key`; this board always has one).
fn key_offset() -> u32 {
    config::DEVICE_KEY.unwrap_or(0)
}

fn key_address() -> u32 {
    config::FLASH_BASE.saturating_add(key_offset())
}

/// A read of the key store through the application's flash driver (the memory window).
fn read_key(flash: &mut AppFlash) {
    let mut word = [0u8; 4];
    match flash.read(key_offset(), &mut word) {
        Ok(()) => {
            println!("hostile: read-key: READ {:02x?}", word);
            app::exit(BREACHED)
        }
        Err(e) => println!("hostile: read-key: {}", e),
    }
}

/// A raw word load from `addr`: a read the MPU lets through ends the run as a breach.
fn load(attack: &str, addr: u32) {
    let word = sigil_board_mps2_an385::dangerous_load(addr);
    println!("hostile: {}: READ {:#010x}", attack, word);
    app::exit(BREACHED)
}

/// The flash service as a deputy for the key store.
fn service_key(flash: &mut AppFlash) {
    let staging = LAYOUT.staged_bundle_offset();
    let status = flash.raw_service_call(Op::Write, staging, key_address(), 256);
    println!("hostile: service-key: copy key store: {}", status);
    let status = flash.raw_service_call(Op::Console, key_address(), 64, 0);
    println!("hostile: service-key: print key store: {}", status);
}

fn report(attack: &str, result: Result<(), FlashError>) {
    match result {
        Ok(()) => println!("hostile: {}: WRITTEN", attack),
        Err(e) => println!("hostile: {}: {}", attack, e),
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// The newest valid protected record (as the bootloader would pick it) and the offset of the
/// first erased slot after it, where a forged record goes.
fn newest_record(flash: &mut AppFlash) -> Option<([u8; record::LEN], u32)> {
    let region = LAYOUT.protected_region();
    let mut best: Option<(u32, [u8; record::LEN])> = None;
    let mut free = None;
    let mut at = region.start;
    while at.saturating_add(record::LEN as u32) <= region.end {
        let mut slot = [0u8; record::LEN];
        flash.read(at, &mut slot).ok()?;
        if slot.iter().all(|&b| b == config::ERASED) {
            free.get_or_insert(at);
        } else if slot.get(..4) == Some(&record::MAGIC[..]) {
            let body = slot.get(..record::CRC)?;
            let crc = u32::from_le_bytes(slot.get(record::CRC..)?.try_into().ok()?);
            let seq = u32::from_le_bytes(
                slot.get(record::SEQUENCE..record::SEQUENCE + 4)?
                    .try_into()
                    .ok()?,
            );
            if crc32(body) == crc && best.is_none_or(|(s, _)| seq > s) {
                best = Some((seq, slot));
                free = None;
            }
        }
        at = at.saturating_add(record::LEN as u32);
    }
    let (_, newest) = best?;
    Some((newest, free.unwrap_or(region.start)))
}

/// Writes `forged` twice (the core writes every record twice) at `at`, through the service.
fn write_forged(
    flash: &mut AppFlash,
    mut forged: [u8; record::LEN],
    at: u32,
) -> Result<(), FlashError> {
    let crc = crc32(forged.get(..record::CRC).unwrap_or(&[]));
    if let Some(field) = forged.get_mut(record::CRC..) {
        field.copy_from_slice(&crc.to_le_bytes());
    }
    flash.write(at, &forged)?;
    flash.write(at.saturating_add(record::LEN as u32), &forged)
}

fn put_u32(record: &mut [u8; record::LEN], at: usize, value: u32) {
    if let Some(field) = record.get_mut(at..at.saturating_add(4)) {
        field.copy_from_slice(&value.to_le_bytes());
    }
}

fn sequence(record: &[u8; record::LEN]) -> u32 {
    let mut bytes = [0u8; 4];
    if let Some(field) = record.get(record::SEQUENCE..record::SEQUENCE + 4) {
        bytes.copy_from_slice(field);
    }
    u32::from_le_bytes(bytes)
}

/// Sectors a bundle at `base` occupies (the swap's extent), if it parses.
fn bundle_sectors(flash: &AppFlash, base: u32) -> Option<u32> {
    let head: &[u8; HEADER_LEN] = flash.mapped(base, HEADER_LEN as u32)?.try_into().ok()?;
    let len = BundleHeader::parse(head).ok()?.total_len().ok()?;
    u32::try_from(len.div_ceil(config::ERASE_SIZE as u64)).ok()
}

/// The record the bootloader writes when it starts installing a verified update, forged for
/// the staged bundle: phase swapping from half-step 0, floors 0, trial counters 0. The next
/// boot would swap the staged image in and run it on trial; its confirm would set floors 0.
fn forged_floor(flash: &mut AppFlash) {
    let staged = LAYOUT.staged_bundle_offset();
    let (Some(digest), Some(new), Some(old)) = (
        staged_digest(flash),
        bundle_sectors(flash, staged),
        bundle_sectors(flash, LAYOUT.active_offset()),
    ) else {
        println!("hostile: forged-floor: no staged bundle");
        return;
    };
    let Some((mut forged, at)) = newest_record(flash) else {
        println!("hostile: forged-floor: no protected record to forge from");
        return;
    };
    let next = sequence(&forged).saturating_add(1);
    put_u32(&mut forged, record::SEQUENCE, next);
    if let Some(phase) = forged.get_mut(record::PHASE..=record::ATTEMPTS) {
        phase.copy_from_slice(&[record::PHASE_SWAPPING, 0]);
    }
    put_u32(&mut forged, record::SWAP_PROGRESS, 0);
    put_u32(&mut forged, record::SWAP_SECTORS, new.max(old));
    for field in [
        record::FLOOR_COUNTER,
        record::FLOOR_KEY_SET,
        record::TRIAL_COUNTER,
        record::TRIAL_KEY_SET,
    ] {
        put_u32(&mut forged, field, 0);
    }
    if let Some(entry) = forged.get_mut(record::TRIAL_IMAGE..record::TRIAL_IMAGE + 32) {
        entry.copy_from_slice(&digest);
    }
    report("forged-floor", write_forged(flash, forged, at));
}

fn erase_protected(flash: &mut AppFlash) {
    let region = LAYOUT.protected_region();
    report("erase-protected", flash.erase(region.start, region.end));
}

/// The staged bundle's manifest digest, from its bytes (an attacker needs no trust root to name
/// an image).
fn staged_digest(flash: &AppFlash) -> Option<ImageDigest> {
    digest::manifest_digest(flash, LAYOUT.staged_bundle_offset())
}

fn forged_rejection(flash: &mut AppFlash) {
    let Some(digest) = staged_digest(flash) else {
        println!("hostile: forged-rejection: no staged bundle");
        return;
    };
    let Some((mut forged, at)) = newest_record(flash) else {
        println!("hostile: forged-rejection: no protected record to forge from");
        return;
    };
    let next = sequence(&forged).saturating_add(1);
    put_u32(&mut forged, record::SEQUENCE, next);
    if let Some(count) = forged.get_mut(record::REJECTED_COUNT) {
        *count = 1;
    }
    if let Some(entry) = forged.get_mut(record::REJECTED..record::REJECTED + 32) {
        entry.copy_from_slice(&digest);
    }
    report("forged-rejection", write_forged(flash, forged, at));
}

fn exhaust_sequence(flash: &mut AppFlash) {
    match newest_record(flash) {
        Some((mut forged, at)) => {
            put_u32(&mut forged, record::SEQUENCE, u32::MAX);
            report("exhaust-sequence", write_forged(flash, forged, at));
        }
        None => println!("hostile: exhaust-sequence: no protected record to forge from"),
    }
    // The request sector is the application's to write: all zeros is a sector of invalid
    // requests, which the next boot must simply ignore.
    let requests = LAYOUT.request_region();
    let zeros = [0u8; 256];
    let mut result = Ok(());
    let mut at = requests.start;
    while at < requests.end && result.is_ok() {
        result = flash.write(at, &zeros);
        at = at.saturating_add(zeros.len() as u32);
    }
    report("flood-requests", result);
}

fn old_image_request(control: &mut BootControl<AppFlash>) {
    let Some(digest) = staged_digest(control.flash()) else {
        println!("hostile: old-image-request: no staged bundle");
        return;
    };
    match control.request_install(&digest) {
        Ok(()) => println!("hostile: old-image-request: install requested"),
        Err(e) => println!("hostile: old-image-request: {}", e),
    }
}

fn erase_sector(attack: &str, flash: &mut AppFlash, at: u32) {
    let end = at.saturating_add(config::ERASE_SIZE as u32);
    report(attack, flash.erase(at, end));
}

fn store(attack: &str, addr: u32) {
    println!("hostile: {}: storing to {:#010x}", attack, addr);
    dangerous_store_then_exit(addr, 0, BREACHED)
}

fn semihosting() {
    const SYS_OPEN: u32 = 0x01;
    const MODE_READ_WRITE_BINARY: u32 = 3;
    let name = c"flash.bin";
    let param = [
        name.as_ptr() as u32,
        MODE_READ_WRITE_BINARY,
        name.count_bytes() as u32,
    ];
    println!("hostile: semihosting: opening flash.bin directly");
    let fd = dangerous_semihosting(SYS_OPEN, &param);
    println!("hostile: semihosting: ANSWERED (handle {:#x})", fd);
    app::exit(BREACHED)
}

fn service_deputy(flash: &mut AppFlash) {
    let staging = LAYOUT.staged_bundle_offset();
    let status = flash.raw_service_call(Op::Write, staging, config::BOOTLOADER_RAM, 256);
    println!("hostile: service-deputy: copy bootloader RAM: {}", status);
    let status = flash.raw_service_call(Op::Console, config::BOOTLOADER_ORIGIN, 64, 0);
    println!(
        "hostile: service-deputy: print bootloader image: {}",
        status
    );
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("app: panic: {}", info);
    app::exit(exit::PANIC)
}
