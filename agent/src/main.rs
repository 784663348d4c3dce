//! `sigil-agent`: parse the command line, load the configuration, run the library, map the
//! outcome to an exit code.
//!
//! | exit code | meaning |
//! |---|---|
//! | 0 | success (`--once`: the cycle ran; `--check-config`: the configuration is valid) |
//! | 1 | the cycle failed (server unreachable, flash error, …); details on stderr |
//! | 2 | usage error (clap) |
//! | 3 | the configuration, device key, trust root or flash layout is invalid |
//! | 4 | `--once`: the update failed or was reverted (reported to the server) |
//! | 5 | `--once`: the download failed (bounded retries or the deadline ran out, reported `download_failed`); the release is not refused, the next run tries again and resumes when it can |

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sigil_agent::config::LogFormat;
use sigil_agent::{Agent, AgentConfig, AgentError, CycleOutcome};

/// Sigil device agent: pulls, verifies and stages signed updates, reboots into them with
/// permission, confirms or lets the bootloader revert, and reports every step.
#[derive(Debug, Parser)]
#[command(version, about)]
struct AgentArgs {
    /// Configuration file.
    #[arg(
        short,
        long,
        env = "SIGIL_AGENT_CONFIG",
        default_value = "/etc/sigil/agent.toml"
    )]
    config: PathBuf,
    /// Run one full cycle, then exit (for cron, tests and bench testers).
    #[arg(long)]
    once: bool,
    /// Validate the configuration (and load the key, trust root and flash), then exit.
    #[arg(long, conflicts_with = "once")]
    check_config: bool,
    /// Log JSON lines (overrides `log.format`).
    #[arg(long)]
    json_logs: bool,
}

const EXIT_FAILED: u8 = 1;
const EXIT_CONFIG: u8 = 3;
const EXIT_UPDATE_FAILED: u8 = 4;
const EXIT_RESUME_LATER: u8 = 5;

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            if let Err(e) = r {
                tracing::error!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
        () = term => {}
    }
}

fn is_setup_error(e: &AgentError) -> bool {
    matches!(
        e,
        AgentError::Config(_) | AgentError::Key { .. } | AgentError::TrustRoot { .. }
    ) || matches!(e, AgentError::Slot(sigil_agent::slots::SlotError::Open(_)))
        || matches!(
            e,
            AgentError::Slot(sigil_agent::slots::SlotError::Boot(
                sigil_bootloader::Error::Layout(_)
            ))
        )
}

fn run(args: AgentArgs) -> Result<u8, (u8, anyhow::Error)> {
    let config = AgentConfig::load(&args.config).map_err(|e| (EXIT_CONFIG, e.into()))?;
    init_logs(args.json_logs || config.log_format == LogFormat::Json);
    let agent = Agent::new(config);
    if args.check_config {
        if let Err(AgentError::State(sigil_agent::state::StateError::Busy { .. })) = &agent {
            // Everything before the state directory was checked; a running agent holds it.
            println!(
                "configuration {} is valid (its state directory is in use by the running agent)",
                args.config.display()
            );
            return Ok(0);
        }
    }
    let mut agent = agent.map_err(|e| {
        let code = if is_setup_error(&e) {
            EXIT_CONFIG
        } else {
            EXIT_FAILED
        };
        (
            code,
            anyhow::Error::new(e).context("cannot start the agent"),
        )
    })?;
    if args.check_config {
        println!("configuration {} is valid", args.config.display());
        return Ok(0);
    }
    // One task does everything in order: a single-threaded runtime keeps memory small.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(|e| (EXIT_FAILED, e))?;
    if args.once {
        let outcome = runtime
            .block_on(agent.run_once())
            .context("update cycle failed")
            .map_err(|e| (EXIT_FAILED, e))?;
        tracing::info!(outcome = ?outcome, "cycle finished");
        println!("{}", describe(&outcome));
        return Ok(match outcome {
            CycleOutcome::Failed(_) | CycleOutcome::Reverted => EXIT_UPDATE_FAILED,
            CycleOutcome::DownloadFailed(_) => EXIT_RESUME_LATER,
            _ => 0,
        });
    }
    tracing::info!("sigil-agent started");
    runtime.block_on(agent.run(shutdown_signal()));
    Ok(0)
}

fn describe(o: &CycleOutcome) -> String {
    match o {
        CycleOutcome::UpToDate => "up to date".to_owned(),
        CycleOutcome::AlreadyRefused(r) => format!("release {r} was refused before; ignored"),
        CycleOutcome::Deferred(why) => format!("update staged; install deferred: {why}"),
        CycleOutcome::RebootRequested => "update staged; reboot requested".to_owned(),
        CycleOutcome::Confirmed => "update confirmed (final at the next boot)".to_owned(),
        CycleOutcome::AwaitingReboot => {
            "update confirmed; the confirm takes effect at the next boot".to_owned()
        }
        CycleOutcome::Reverted => "update reverted by the bootloader".to_owned(),
        CycleOutcome::HealthCheckFailed(why) => format!("update not confirmed: {why}"),
        CycleOutcome::DownloadFailed(why) => {
            format!("download failed (the next run tries again): {why}")
        }
        CycleOutcome::Failed(why) => format!("update failed: {why}"),
        other => format!("{other:?}"),
    }
}

fn main() -> ExitCode {
    let args = AgentArgs::parse();
    match run(args) {
        Ok(code) => ExitCode::from(code),
        Err((code, e)) => {
            eprintln!("sigil-agent: error: {e:#}");
            ExitCode::from(code)
        }
    }
}
