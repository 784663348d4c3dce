//! `sigil-server`: the update server binary.
//!
//! Exit codes: 0 success, 1 error (configuration, I/O, database), 2 usage error, 3 the audit
//! export does not verify.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sigil_server::config::{LogFormat, Overrides, ServerConfig};

/// Sigil update server: releases, devices, deployments, staged rollouts, audit trail.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (also `SIGIL_CONFIG`).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Address to listen on (overrides the file and `SIGIL_LISTEN`).
    #[arg(long, global = true)]
    listen: Option<std::net::SocketAddr>,
    /// Data directory (overrides the file and `SIGIL_DATA_DIR`).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Create an admin API token and print it.
    AdminToken {
        /// Name of the token holder.
        #[arg(long, default_value = "admin")]
        name: String,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify an exported audit trail (JSON lines): detects edited, removed or reordered entries.
    Verify {
        /// The export (`GET /api/v1/audit/export`).
        file: PathBuf,
        /// The head hash recorded earlier (`GET /api/v1/audit/head`): detects a truncated tail.
        #[arg(long)]
        head: Option<String>,
    },
}

fn load_config(args: &Args) -> anyhow::Result<ServerConfig> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let file = args.config.clone().or_else(|| {
        env.iter()
            .find(|(k, _)| k == "SIGIL_CONFIG")
            .map(|(_, v)| PathBuf::from(v))
    });
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
    };
    Ok(ServerConfig::load(file.as_deref(), env, overrides)?)
}

fn init_logging(config: &ServerConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        Some(Command::Audit {
            command: AuditCommand::Verify { file, head },
        }) => {
            let input = std::fs::File::open(file)
                .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
            match sigil_server::audit::verify_lines(std::io::BufReader::new(input), head.as_deref())
            {
                Ok(summary) => {
                    println!(
                        "audit trail verified: {} entries, head {}",
                        summary.entries, summary.head
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("audit trail does NOT verify: {e}");
                    Ok(ExitCode::from(3))
                }
            }
        }
        Some(Command::AdminToken { name }) => {
            let config = load_config(&args)?;
            init_logging(&config);
            let (store, _) = sigil_server::serve::open_storage(&config)?;
            let token = sigil_server::serve::create_admin_token(&store, name, "cli")?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Serve) | None => {
            let config = load_config(&args)?;
            init_logging(&config);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(sigil_server::serve::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sigil-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}
