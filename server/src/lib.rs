#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod accounts;
pub mod api;
pub mod audit;
pub mod audit_key;
pub mod bundles;
pub mod challenge;
pub mod config;
pub mod connection;
pub mod error;
pub mod metrics;
pub mod passkeys;
pub mod range;
pub mod ratelimit;
pub mod records;
pub mod rollout;
pub mod roots;
pub mod serve;
pub mod store;
#[cfg(feature = "test-support")]
pub mod testing;
