#![doc = include_str!("../README.md")]
//!
//! ## Library layout
//!
//! The binary is a thin layer over this library: `main` parses [`cli::Cli`], calls [`run`],
//! prints the error chain and exits with the code of the [`exit::Failure`] `run` builds from
//! the command's error (each command error knows its code). One module per
//! subcommand ([`keygen`], [`key`], [`root`], [`keyset`], [`sign`], [`verify`], [`inspect`], [`encrypt`], [`docs`]),
//! each with its own error type.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod args;
pub mod bundle_file;
pub mod cli;
pub mod docs;
pub mod encrypt;
pub mod exit;
pub mod files;
pub mod hsm;
pub mod inspect;
pub mod key;
pub mod key_source;
pub mod keyfile;
pub mod keygen;
pub mod keyset;
pub mod pkcs11_uri;
pub mod report;
pub mod root;
pub mod sign;
pub mod verify;

use std::io::Write;

use cli::{Cli, Command};
use exit::Failure;

/// Runs one parsed command line, writing its report to `out`. A failure carries the exit code
/// of the command's error.
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<(), Failure> {
    /// The failure of a command error that knows its exit code.
    macro_rules! fail {
        ($e:expr) => {
            $e.map_err(|e| Failure::new(e.exit_code(), e))
        };
    }
    match &cli.command {
        Command::Keygen(args) => fail!(keygen::run(args, out)),
        Command::Key(command) => fail!(key::run(command, out)),
        Command::Root(command) => fail!(root::run(command, out)),
        Command::Keyset(command) => fail!(keyset::run(command, out)),
        Command::Sign(args) => fail!(sign::run(args, out)),
        Command::Verify(args) => fail!(verify::run(args, out)),
        Command::Inspect(args) => fail!(inspect::run(args, out)),
        Command::Encrypt(command) => fail!(encrypt::run(command, out)),
        Command::Decrypt(args) => fail!(encrypt::decrypt(args, out)),
        Command::Completions(args) => fail!(docs::completions(args, out)),
        Command::Man(args) => fail!(docs::man(args, out)),
    }
}
