#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Every index and every length sum in this crate is checked: input reaches all of them.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod bundle;
pub mod codec;
pub mod device_auth;
#[cfg(feature = "encryption")]
pub mod encryption;
mod error;
pub mod keys;
pub mod keyset;
pub mod manifest;
pub mod root;
pub mod rotation;
mod scalar;
pub mod verify;
pub mod view;

#[cfg(feature = "alloc")]
pub use bundle::assemble_bundle;
pub use bundle::{BundleHeader, Envelope, UnverifiedBundle, HEADER_LEN};
pub use error::{Document, Error, Signed};
pub use keys::{key_id, KeyId, PublicKey, SignatureAdded, SignatureEntry};
pub use keyset::{KeySet, SignedKeySet, VerifiedKeySet};
pub use manifest::{
    Cipher, Dependency, Encryption, InstalledComponent, Manifest, PayloadFormat, ProductId, Version,
};
pub use root::{TrustRoot, TrustRootRef};
pub use rotation::{
    root_digest, RootChainView, RootFloor, RootUpdateView, MAX_ROOT_CHAIN, MAX_ROOT_LEN,
};
#[cfg(feature = "alloc")]
pub use rotation::{verify_root_chain, RootUpdate};
pub use verify::{
    manifest_digest, verify_bundle, verify_in_place, BundleVerifier, DevicePolicy,
    EncryptedPayload, VerifiedBundle,
};
pub use view::{EnvelopeView, SignatureBytes};

/// Most keys in a trust root or key set, and most signatures in one signature list.
pub const MAX_KEYS: usize = 8;

/// Most dependencies one manifest may name.
pub const MAX_DEPENDENCIES: usize = 4;

/// Longest identifier (vendor, device, component, pre-release), in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Largest envelope a bundle may carry; a verifier buffer of this size accepts every bundle
/// without a root chain.
pub const MAX_ENVELOPE_LEN: usize = 4096;

/// A verifier buffer of this size accepts every bundle: [`BundleVerifier`] walks a root chain
/// one update at a time (each at most about 1.8 KiB) and then keeps only the reached root's
/// document ([`MAX_ROOT_LEN`]) in front of the envelope. For devices that read flash by copy.
pub const MIN_VERIFY_BUFFER_LEN: usize = MAX_ENVELOPE_LEN + MAX_ROOT_LEN;

/// The largest root chain and envelope together: the bundle bytes before the padding, which a
/// tool that reads a bundle's head at once (the agent) holds. As a verifier buffer it accepts
/// every bundle, as [`MIN_VERIFY_BUFFER_LEN`] does.
pub const VERIFY_BUFFER_LEN: usize = MAX_ENVELOPE_LEN + rotation::MAX_CHAIN_LEN;

/// Largest payload alignment (1 MiB).
pub const MAX_ALIGNMENT: u32 = 1 << 20;
