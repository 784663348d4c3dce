//! The `sigil` binary: parse, run, print the error chain, exit with a documented code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use sigil_signer::cli::Cli;
use sigil_signer::exit;

fn main() -> ExitCode {
    // clap prints usage errors itself and exits with code 2 (`exit::ExitCode::Usage`).
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = sigil_signer::run(&cli, &mut out);
    let _ = out.flush();
    match result {
        Ok(()) => exit::ExitCode::Ok.into(),
        Err(f) if is_broken_pipe(&f.error) => {
            // The reader went away (`sigil inspect x | head`): not an error worth a message.
            exit::ExitCode::Ok.into()
        }
        Err(f) => {
            eprintln!("sigil: {:#}", f.error);
            f.code.into()
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
