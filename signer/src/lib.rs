#![doc = include_str!("../README.md")]
//!
//! ## Library layout
//!
//! The binary is a thin layer over this library: `main` parses [`cli::Cli`], calls [`run`],
//! prints the error chain and exits with the code [`exit::ExitCode::of`] gives. One module per
//! subcommand ([`keygen`], [`key`], [`root`], [`keyset`], [`sign`], [`verify`], [`inspect`], [`docs`]),
//! each with its own error type.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod args;
pub mod bundle_file;
pub mod cli;
pub mod docs;
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

/// Runs one parsed command line, writing its report to `out`.
pub fn run(cli: &Cli, out: &mut dyn Write) -> anyhow::Result<()> {
    match &cli.command {
        Command::Keygen(args) => keygen::run(args, out)?,
        Command::Key(command) => key::run(command, out)?,
        Command::Root(command) => root::run(command, out)?,
        Command::Keyset(command) => keyset::run(command, out)?,
        Command::Sign(args) => sign::run(args, out)?,
        Command::Verify(args) => verify::run(args, out)?,
        Command::Inspect(args) => inspect::run(args, out)?,
        Command::Completions(args) => docs::completions(args, out)?,
        Command::Man(args) => docs::man(args, out)?,
    }
    Ok(())
}
