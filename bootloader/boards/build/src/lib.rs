//! The board configuration file (`board.toml`) of a Sigil board port: the flash map shared by
//! the firmware build and the host tool.
//!
//! A port's build script reads its `board.toml` with [`BoardConfig::load`] (the same checks as
//! the firmware's compile-time `sigil_bootloader::Layout::new`), writes the constants the
//! firmware includes ([`BoardConfig::firmware_constants`]) and the linker scripts
//! ([`memory_x`]); `sigil-flash` assembles flash images from the same file. Board-specific
//! rules (an MPU's power-of-two regions, a flash controller's protection blocks) stay in the
//! port's own build script, after these shared checks.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sigil_bootloader::{Geometry, Layout, LayoutError};

/// Why a board configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    /// The file could not be read.
    #[error("reading board configuration {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid board configuration.
    #[error("board configuration {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: toml::de::Error,
    },
    /// The flash map is inconsistent (the same checks as the firmware build).
    #[error("board configuration {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// RAM and bootloader regions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Address the bootloader runs from.
    pub bootloader: u32,
    /// Bytes reserved for the bootloader.
    pub bootloader_size: u32,
    /// Start of RAM.
    pub ram: u32,
    /// RAM size.
    pub ram_size: u32,
    /// Bytes at the top of RAM the bootloader keeps for itself after the jump (its lock
    /// latch, flash service and fault handlers); the application gets the rest.
    pub bootloader_ram: u32,
}

/// The flash device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlashConfig {
    /// Address of flash offset 0.
    pub base: u32,
    /// Erase sector size.
    pub erase_size: u32,
    /// Write granularity.
    pub write_size: u32,
    /// Read granularity.
    pub read_size: u32,
    /// Value of an erased byte.
    pub erased: u8,
}

/// Region offsets inside the flash device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutConfig {
    /// Protected-state region (written by the bootloader only; `Layout::protected_len` bytes:
    /// 2 sectors from 1 KiB sectors up).
    pub protected: u32,
    /// Request sector (written by the application and the agent).
    pub requests: u32,
    /// Active slot.
    pub active: u32,
    /// Staging slot (one sector larger than the active slot).
    pub staging: u32,
    /// Sectors of the active slot.
    pub slot_sectors: u32,
    /// The device key store, on boards that keep the device's X25519 key pair in this flash
    /// device (one sector, written only when the device is provisioned: `sigil-flash assemble
    /// --device-key`); the board's lock must hide it from the application. Boards whose key
    /// lives elsewhere (OTP, a secure element) or that take no encrypted releases leave it out.
    #[serde(default)]
    pub device_key: Option<u32>,
}

/// What the bootloader accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Product vendor.
    pub vendor: String,
    /// Product device class.
    pub device: String,
    /// The component the active slot holds: every manifest must name it.
    pub component: String,
    /// Trial boots before a revert.
    pub trial_attempts: u8,
    /// Payload alignment images are signed with.
    pub payload_alignment: u32,
}

/// A board configuration, validated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardConfig {
    /// RAM and bootloader regions.
    pub memory: MemoryConfig,
    /// The flash device.
    pub flash: FlashConfig,
    /// Region offsets.
    pub layout: LayoutConfig,
    /// Device policy.
    pub device: DeviceConfig,
}

impl BoardConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, BoardError> {
        let text = std::fs::read_to_string(path).map_err(|source| BoardError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates configuration text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, BoardError> {
        let board: BoardConfig = toml::from_str(text).map_err(|source| BoardError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |reason: String| BoardError::Invalid {
            path: path.to_owned(),
            reason,
        };
        board
            .layout()
            .map_err(|e: LayoutError| invalid(format!("flash layout: {e}")))?;
        let size = board
            .flash_size()
            .ok_or_else(|| invalid("flash size overflows".into()))?;
        if let Some(store) = board.device_key_region() {
            let layout = board
                .layout()
                .map_err(|e: LayoutError| invalid(format!("flash layout: {e}")))?;
            let sector = board.flash.erase_size;
            let regions = [
                layout.protected_region(),
                layout.request_region(),
                layout.active_offset()
                    ..layout
                        .active_offset()
                        .saturating_add(layout.max_bundle_len()),
                layout.staging_offset()
                    ..layout
                        .staged_bundle_offset()
                        .saturating_add(layout.max_bundle_len()),
            ];
            if !store.start.is_multiple_of(sector)
                || regions
                    .iter()
                    .any(|r| r.start < store.end && store.start < r.end)
            {
                return Err(invalid(
                    "device_key must be a sector of its own, sector-aligned, outside every other region"
                        .into(),
                ));
            }
        }
        let a = board.device.payload_alignment;
        if !a.is_power_of_two() || a < 256 || a >= board.slot_len() {
            return Err(invalid(
                "payload_alignment must be a power of two, >= 256 and smaller than the slot".into(),
            ));
        }
        let flash_end = u64::from(board.flash.base) + u64::from(size);
        let boot_end = u64::from(board.memory.bootloader) + u64::from(board.memory.bootloader_size);
        if boot_end > u64::from(board.flash.base) {
            return Err(invalid(
                "the bootloader region overlaps the flash device".into(),
            ));
        }
        let ram = u64::from(board.memory.ram);
        let ram_end = ram + u64::from(board.memory.ram_size);
        if ram < flash_end && u64::from(board.flash.base) < ram_end {
            return Err(invalid("RAM overlaps the flash device".into()));
        }
        if board.memory.bootloader_ram == 0 || board.memory.bootloader_ram >= board.memory.ram_size
        {
            return Err(invalid(
                "bootloader_ram must be non-zero and leave RAM for the application".into(),
            ));
        }
        Ok(board)
    }

    /// The checked layout, as the firmware computes it.
    pub fn layout(&self) -> Result<Layout, LayoutError> {
        let geometry = Geometry {
            erase_size: self.flash.erase_size,
            write_size: self.flash.write_size,
            read_size: self.flash.read_size,
            erased: self.flash.erased,
        };
        Layout::new(
            geometry,
            self.layout.protected,
            self.layout.requests,
            self.layout.active,
            self.layout.staging,
            self.layout.slot_sectors,
        )
    }

    fn slot_len(&self) -> u32 {
        self.layout
            .slot_sectors
            .saturating_mul(self.flash.erase_size)
    }

    /// Size of the flash image: up to the end of the last region (`None` for a layout that
    /// does not check).
    pub fn flash_size(&self) -> Option<u32> {
        let l = self.layout().ok()?;
        let store_end = match self.layout.device_key {
            Some(at) => at.checked_add(self.flash.erase_size)?,
            None => 0,
        };
        [
            l.protected_region().end,
            l.request_region().end,
            l.active_offset().checked_add(l.max_bundle_len())?,
            l.staged_bundle_offset().checked_add(l.max_bundle_len())?,
            store_end,
        ]
        .into_iter()
        .max()
    }

    /// The device key store's sector (flash offsets), if the board has one.
    pub fn device_key_region(&self) -> Option<std::ops::Range<u32>> {
        let at = self.layout.device_key?;
        Some(at..at.saturating_add(self.flash.erase_size))
    }

    /// Address the application image must be linked at: where an installed bundle's payload
    /// lands.
    pub fn app_origin(&self) -> u32 {
        self.flash
            .base
            .saturating_add(self.layout.active)
            .saturating_add(self.device.payload_alignment)
    }

    /// Bytes the application image may occupy: the active slot after the payload alignment.
    pub fn app_len(&self) -> u32 {
        self.slot_len()
            .saturating_sub(self.device.payload_alignment)
    }

    /// Start of the RAM the bootloader runs in (and, on ports with a service, keeps after the
    /// jump): the top `bootloader_ram` bytes of RAM.
    pub fn bootloader_ram_origin(&self) -> u32 {
        self.memory
            .ram
            .saturating_add(self.memory.ram_size)
            .saturating_sub(self.memory.bootloader_ram)
    }

    /// The Rust source of the constants every port's firmware includes (`config.rs`): the
    /// memory map, the flash geometry, the layout offsets and the device policy. Call on a
    /// configuration from [`BoardConfig::load`] (validated).
    pub fn firmware_constants(&self) -> String {
        let mut out = String::new();
        let mut c = |name: &str, ty: &str, value: String, doc: &str| {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "/// {doc}\npub const {name}: {ty} = {value};");
        };
        let hex = |v: u32| format!("{v:#x}");
        let m = &self.memory;
        c(
            "BOOTLOADER_ORIGIN",
            "u32",
            hex(m.bootloader),
            "Address the bootloader runs from.",
        );
        c(
            "BOOTLOADER_SIZE",
            "u32",
            hex(m.bootloader_size),
            "Size reserved for the bootloader.",
        );
        c("RAM_ORIGIN", "u32", hex(m.ram), "Start of RAM.");
        c("RAM_SIZE", "u32", hex(m.ram_size), "RAM size.");
        c(
            "BOOTLOADER_RAM",
            "u32",
            hex(self.bootloader_ram_origin()),
            "Start of the bootloader's RAM (the top of RAM).",
        );
        c(
            "BOOTLOADER_RAM_SIZE",
            "u32",
            hex(m.bootloader_ram),
            "Bytes of RAM the bootloader runs in.",
        );
        let f = &self.flash;
        c(
            "FLASH_BASE",
            "u32",
            hex(f.base),
            "Address of flash offset 0.",
        );
        c(
            "FLASH_SIZE",
            "usize",
            format!("{:#x}", self.flash_size().unwrap_or(0)),
            "Flash device size: up to the end of the last region.",
        );
        c(
            "ERASE_SIZE",
            "usize",
            f.erase_size.to_string(),
            "Erase sector size.",
        );
        c(
            "WRITE_SIZE",
            "usize",
            f.write_size.to_string(),
            "Write granularity.",
        );
        c(
            "READ_SIZE",
            "usize",
            f.read_size.to_string(),
            "Read granularity.",
        );
        c(
            "ERASED",
            "u8",
            format!("{:#x}", f.erased),
            "Value of an erased byte.",
        );
        let l = &self.layout;
        c(
            "PROTECTED",
            "u32",
            hex(l.protected),
            "Offset of the protected-state region (written by the bootloader only).",
        );
        c(
            "REQUESTS",
            "u32",
            hex(l.requests),
            "Offset of the request sector (written by the application).",
        );
        c("ACTIVE", "u32", hex(l.active), "Offset of the active slot.");
        c(
            "STAGING",
            "u32",
            hex(l.staging),
            "Offset of the staging slot.",
        );
        c(
            "DEVICE_KEY",
            "Option<u32>",
            match l.device_key {
                Some(at) => format!("Some({})", hex(at)),
                None => "None".into(),
            },
            "Offset of the device key store sector, if this board keeps the key in this flash.",
        );
        c(
            "SLOT_SECTORS",
            "u32",
            l.slot_sectors.to_string(),
            "Sectors per slot.",
        );
        let d = &self.device;
        c(
            "VENDOR",
            "&str",
            format!("{:?}", d.vendor),
            "Product vendor.",
        );
        c(
            "DEVICE",
            "&str",
            format!("{:?}", d.device),
            "Product device class.",
        );
        c(
            "COMPONENT",
            "&str",
            format!("{:?}", d.component),
            "The component the active slot holds.",
        );
        c(
            "TRIAL_ATTEMPTS",
            "u8",
            d.trial_attempts.to_string(),
            "Trial boots before a revert.",
        );
        c(
            "PAYLOAD_ALIGNMENT",
            "u32",
            hex(d.payload_alignment),
            "Payload alignment the images are signed with.",
        );
        c(
            "APP_ORIGIN",
            "u32",
            hex(self.app_origin()),
            "Where the application is linked: the payload of the installed bundle.",
        );
        out
    }
}

/// A cortex-m-rt `memory.x`: one `FLASH` and one `RAM` region. `generator` names the build
/// script in the file's header.
pub fn memory_x(generator: &str, flash: (u32, u32), ram: (u32, u32)) -> String {
    let ((origin, len), (ram, ram_len)) = (flash, ram);
    format!(
        "/* Generated from board.toml by {generator}. */\nMEMORY\n{{\n  FLASH : ORIGIN = {origin:#x}, LENGTH = {len:#x}\n  RAM : ORIGIN = {ram:#x}, LENGTH = {ram_len:#x}\n}}\n"
    )
}

/// `error` with its chain of causes, one line (what a build script panics with).
pub fn report(error: &dyn std::error::Error) -> String {
    let mut msg = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(msg, ": {cause}");
        source = cause.source();
    }
    msg
}

/// Compiles the trust root into a bootloader (its build script calls this):
/// `SIGIL_TRUST_ROOT` names a file made by `sigil root init`; it is decoded and validated here,
/// so a missing or malformed root fails the build, not the device, and copied to
/// `$OUT_DIR/trust_root.bin` for `include_bytes!`. `target` names the Rust target in the
/// message that says how to set it.
pub fn compile_trust_root(target: &str) -> Result<(), String> {
    println!("cargo:rerun-if-env-changed=SIGIL_TRUST_ROOT");
    let Some(path) = std::env::var_os("SIGIL_TRUST_ROOT") else {
        return Err(format!(
            "\n\nSIGIL_TRUST_ROOT is not set.\nThe bootloader compiles its trust root in: set \
             SIGIL_TRUST_ROOT to the file written by `sigil root init` (for example \
             SIGIL_TRUST_ROOT=keys/root.sigil-root cargo build --release --target {target}).\n"
        ));
    };
    let path = PathBuf::from(path);
    println!("cargo:rerun-if-changed={}", path.display());
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("\n\nSIGIL_TRUST_ROOT={}: {e}\n", path.display()))?;
    if let Err(e) = sigil_manifests::TrustRoot::decode(&bytes) {
        return Err(format!(
            "\n\nSIGIL_TRUST_ROOT={} is not a valid trust root: {e}\n",
            path.display()
        ));
    }
    let out = out_dir()?;
    std::fs::write(out.join("trust_root.bin"), &bytes).map_err(|e| e.to_string())
}

/// Build-time variants of a test application: `SIGIL_APP_VERSION` (printed; sign the bundle
/// with the same version) and `SIGIL_APP_EXIT_CODE` (its distinctive exit code, 0..=255), as
/// `$OUT_DIR/variant.rs` (`VERSION`, `EXIT_CODE`).
pub fn app_variant() -> Result<(), String> {
    println!("cargo:rerun-if-env-changed=SIGIL_APP_VERSION");
    println!("cargo:rerun-if-env-changed=SIGIL_APP_EXIT_CODE");
    let version = std::env::var("SIGIL_APP_VERSION").unwrap_or_else(|_| "0.0.0-dev".into());
    let code: u8 = std::env::var("SIGIL_APP_EXIT_CODE")
        .unwrap_or_else(|_| "16".into())
        .parse()
        .map_err(|_| "SIGIL_APP_EXIT_CODE must be a number in 0..=255".to_string())?;
    std::fs::write(
        out_dir()?.join("variant.rs"),
        format!("const VERSION: &str = {version:?};\nconst EXIT_CODE: u8 = {code};\n"),
    )
    .map_err(|e| e.to_string())
}

/// Links a firmware binary with cortex-m-rt's `link.x` and the `memory.x` its board crate
/// generated into `memory_dir/part` (`part` is `boot` or `app`; `memory_dir` is the board
/// crate's `cargo:memory_dir`, read from `DEP_<LINKS>_MEMORY_DIR`).
pub fn link_with(memory_dir_var: &str, part: &str) -> Result<(), String> {
    let memory =
        std::env::var(memory_dir_var).map_err(|_| format!("{memory_dir_var} is not set"))?;
    println!("cargo:rustc-link-search={memory}/{part}");
    println!("cargo:rustc-link-arg=-Tlink.x");
    Ok(())
}

/// Writes the board crate's generated files: `config.rs` (`constants`) and the linker scripts
/// `boot/memory.x` and `app/memory.x` (each a flash and a RAM region: `(origin, length)`), and
/// tells the firmware build scripts where they are (`cargo:memory_dir`).
pub fn write_board_files(
    generator: &str,
    constants: &str,
    boot: ((u32, u32), (u32, u32)),
    app: ((u32, u32), (u32, u32)),
) -> Result<PathBuf, String> {
    let out = out_dir()?;
    std::fs::write(out.join("config.rs"), constants).map_err(|e| e.to_string())?;
    for (dir, (flash, ram)) in [("boot", boot), ("app", app)] {
        let d = out.join(dir);
        std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
        std::fs::write(d.join("memory.x"), memory_x(generator, flash, ram))
            .map_err(|e| e.to_string())?;
    }
    println!("cargo:memory_dir={}", out.display());
    Ok(out)
}

fn out_dir() -> Result<PathBuf, String> {
    std::env::var_os("OUT_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| "OUT_DIR is not set (call from a build script)".to_string())
}
