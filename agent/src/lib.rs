#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod agent;
pub mod client;
pub mod config;
pub mod download;
pub mod flash;
pub mod hooks;
pub mod keyrecord;
pub mod roots;
pub mod slots;
pub mod state;

pub use agent::{Agent, AgentError, CycleOutcome, Running};
pub use config::AgentConfig;
pub use flash::{FileFlash, FlashError, SyncMode};
