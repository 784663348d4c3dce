//! The board configuration file (`board.toml`): the flash map shared with the firmware build.

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
        [
            l.protected_region().end,
            l.request_region().end,
            l.active_offset().checked_add(l.max_bundle_len())?,
            l.staged_bundle_offset().checked_add(l.max_bundle_len())?,
        ]
        .into_iter()
        .max()
    }

    /// Address the application image must be linked at: where an installed bundle's payload
    /// lands.
    pub fn app_origin(&self) -> u32 {
        self.flash
            .base
            .saturating_add(self.layout.active)
            .saturating_add(self.device.payload_alignment)
    }
}
