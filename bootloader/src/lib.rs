#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Flash contents reach every index and every offset sum in this crate: all are checked.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]

#[cfg(feature = "std")]
extern crate std;

#[macro_use]
mod log;

pub mod boot;
pub mod control;
mod crc;
#[cfg(feature = "encryption")]
pub mod crypt;
mod error;
pub mod layout;
pub mod lock;
pub mod record;
pub mod request;
#[cfg(feature = "sim")]
pub mod sim;
mod store;
pub mod swap;
mod verify;

pub use boot::{BootConfig, Bootloader, VerifiedImage};
pub use control::BootControl;
#[cfg(feature = "encryption")]
pub use crypt::{DeviceSecret, KeyStoreError, DEVICE_KEY_RECORD_LEN};
pub use error::Error;
pub use layout::{Geometry, Layout, LayoutError, KEY_RECORD_UNIT};
pub use lock::{LockFailed, StateLock};
pub use record::{BootState, Floors, ImageDigest, Outcome, Phase, SwapId};
pub use request::Request;
pub use store::provision;
pub use verify::BootFlash;
