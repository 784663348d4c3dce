//! Fixtures and harnesses for Sigil's cross-component tests.
//!
//! [`qemu`] builds the mps2-an385 bootloader and test application firmware, signs application
//! images into bundles with the `sigil` CLI code, assembles flash images with `sigil-flash`
//! and boots them in `qemu-system-arm`, optionally under [`gdb`] to cut the power at an exact
//! flash write. [`e2e`] adds the real `sigil-server` on loopback and
//! `sigil-agent` configurations for those flash images, for the end-to-end stories in
//! `tests/e2e.rs`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod e2e;
pub mod gdb;
pub mod qemu;
pub mod scenarios;
pub mod sigil;
