//! Runs the real `sigil` command-line code (the `sigil-signer` library behind the binary).

use std::ffi::OsString;

use clap::Parser;

/// Runs `sigil ARGS...` in-process and returns its standard output, or the error chain.
pub fn sigil<I, S>(args: I) -> Result<String, String>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let argv = std::iter::once(OsString::from("sigil")).chain(args.into_iter().map(Into::into));
    let cli = sigil_signer::cli::Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    sigil_signer::run(&cli, &mut out).map_err(|e| format!("{e:#}"))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}
