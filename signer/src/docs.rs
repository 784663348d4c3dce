//! `sigil completions` and `sigil man`: generated from the same clap definitions as the parser.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::cli::Cli;
use crate::exit::ExitCode;

/// Arguments of `sigil completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

/// Arguments of `sigil man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write one page per command (sigil.1, sigil-sign.1, ...) into this directory instead of
    /// printing sigil(1) to stdout.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Errors generating documentation.
#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    /// Writing failed.
    #[error("cannot write {what}")]
    Write {
        /// What was being written.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl DocsError {
    /// The exit code of this error (see [`crate::exit`]).
    pub fn exit_code(&self) -> ExitCode {
        // Bad input documents, keys or files: operational errors, never a verdict on a bundle.
        ExitCode::Failure
    }
}

/// Prints shell completions.
pub fn completions(args: &CompletionsArgs, out: &mut dyn Write) -> Result<(), DocsError> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "sigil", &mut buf);
    out.write_all(&buf).map_err(|source| DocsError::Write {
        what: "completions".into(),
        source,
    })
}

/// Prints the man page, or writes all pages to a directory.
pub fn man(args: &ManArgs, out: &mut dyn Write) -> Result<(), DocsError> {
    let cmd = Cli::command();
    match &args.out_dir {
        Some(dir) => {
            clap_mangen::generate_to(cmd, dir).map_err(|source| DocsError::Write {
                what: dir.display().to_string(),
                source,
            })?;
            writeln!(out, "man pages written to {}", dir.display()).map_err(|source| {
                DocsError::Write {
                    what: "report".into(),
                    source,
                }
            })
        }
        None => clap_mangen::Man::new(cmd)
            .render(out)
            .map_err(|source| DocsError::Write {
                what: "man page".into(),
                source,
            }),
    }
}
