//! `sigil-server`: the update server binary.
//!
//! Exit codes: 0 success, 1 error (configuration, I/O, database, including a database refused
//! as tampered at start-up), 2 usage error, 3 the audit export does not verify.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
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
    /// People and service accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Records kept about devices: retention and export.
    Records {
        #[command(subcommand)]
        command: RecordsCommand,
    },
    /// Move an SQLite installation (database and bundles) into an empty PostgreSQL database,
    /// audit chain included, and verify the copy. Stop the server first.
    Migrate {
        /// The SQLite installation's data directory (holding `sigil.db` and `bundles/`).
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL database: `postgres://user@host/db` (libpq URL syntax).
        #[arg(long)]
        to: String,
        /// CA certificate(s) (PEM) of the PostgreSQL server, for TLS.
        #[arg(long)]
        database_ca_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum RecordsCommand {
    /// Delete the device reports older than `records.report_retention_days` now (the server
    /// also does this every `records.prune_interval_secs`); audited as `records.prune`.
    Prune,
    /// Print everything held about one device as JSON; audited as `records.export`.
    Export {
        /// The device id.
        #[arg(long)]
        device: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create an account. A person gets a one-time enrolment code (and link) to set a
    /// passphrase and a second factor; there is no default account. The first admin is made
    /// this way.
    Add {
        /// The account name (the audit actor): 1 to 64 characters of [A-Za-z0-9._+-].
        name: String,
        /// A role it holds (admin, release, operator, auditor, approver); repeat for more.
        #[arg(long = "role", required = true, value_parser = parse_role)]
        roles: Vec<sigil_server::store::Role>,
        /// A service account (automation: API tokens only, never logs in).
        #[arg(long)]
        service: bool,
    },
    /// Give a person a new enrolment code (lost authenticator, forgotten passphrase): the old
    /// credentials and sessions end.
    Enrolment {
        /// The person's account name.
        name: String,
    },
}

fn parse_role(text: &str) -> Result<sigil_server::store::Role, String> {
    match sigil_server::store::Role::parse(text) {
        Some(sigil_server::store::Role::Device) | None => Err(format!(
            "{text} is not a role (admin, release, operator, auditor, approver)"
        )),
        Some(role) => Ok(role),
    }
}

/// Prints an enrolment code and where to use it.
fn print_enrolment(config: &ServerConfig, code: &sigil_server::api::accounts::EnrolmentCode) {
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!(
        "enrolment code for {} (single use, expires at {} s since the Unix epoch): {}",
        code.name, code.expires_at, code.enrolment_code
    );
    println!(
        "enrolment link: {scheme}://{}/enrol#{}",
        config.listen, code.enrolment_code
    );
    println!(
        "(or POST /api/v1/enrolment {{\"enrolment_code\", \"passphrase\"}}, then \
         POST /api/v1/enrolment/confirm {{\"enrolment_code\", \"totp\"}})"
    );
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify an exported audit trail (JSON lines) offline: detects edited, removed or
    /// reordered entries, and with the server's public key, entries appended or rewritten by
    /// anyone without the audit key.
    Verify {
        /// The export (`GET /api/v1/audit/export`).
        file: PathBuf,
        /// The server's audit public key (hex; `sigil-server audit public-key`). Repeat for
        /// keys the server rotated through.
        #[arg(long = "public-key")]
        public_keys: Vec<String>,
        /// The latest checkpoint kept earlier (`GET /api/v1/audit/checkpoint`, JSON): the
        /// export must contain its entry unchanged.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The head hash recorded earlier (`GET /api/v1/audit/head`): the export must end there.
        #[arg(long)]
        head: Option<String>,
    },
    /// Print the server's audit public key (hex), for auditors to keep.
    PublicKey,
    /// Replace the audit key: the old key signs a checkpoint naming the new one (the key
    /// staged by `stage-key`, if there is one).
    RotateKey,
    /// Write the next audit key to `<audit_key_file>.next` (or keep the one there) and print
    /// its path and public key: copy it to every replica, then `rotate-key` on any one; each
    /// replica switches to it at its next checkpoint.
    StageKey,
}

fn parse_key(text: &str) -> anyhow::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key)
        .map_err(|_| anyhow::anyhow!("--public-key {text:.80} is not 64 hex digits"))?;
    Ok(key)
}

fn read_checkpoint(path: &std::path::Path) -> anyhow::Result<sigil_server::audit::Checkpoint> {
    use sigil_server::audit::{Checkpoint, ExportLine};
    let bytes = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read checkpoint {}: {e}", path.display()))?;
    if let Ok(cp) = serde_json::from_slice::<Checkpoint>(&bytes) {
        return Ok(cp);
    }
    match serde_json::from_slice::<ExportLine>(&bytes) {
        Ok(ExportLine::Checkpoint { checkpoint }) => Ok(checkpoint),
        _ => anyhow::bail!("{} is not a checkpoint", path.display()),
    }
}

fn verify(
    file: &std::path::Path,
    public_keys: &[String],
    checkpoint: Option<&std::path::Path>,
    head: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let keys = public_keys
        .iter()
        .map(|k| parse_key(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let kept = checkpoint.map(read_checkpoint).transpose()?;
    if kept.is_some() && keys.is_empty() {
        anyhow::bail!("--checkpoint needs the server's --public-key");
    }
    let input = std::fs::File::open(file)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
    let trust = sigil_server::audit::Trust {
        require_coverage: !keys.is_empty(),
        keys,
        kept,
        head: head.map(str::to_owned),
        trust_first_key: false,
    };
    match sigil_server::audit::verify_lines(std::io::BufReader::new(input), trust) {
        Ok(s) if s.signed => {
            println!(
                "audit trail verified: {} entries, head {}, {} checkpoints signed by the server's audit key",
                s.entries, s.head, s.checkpoints
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(s) => {
            println!(
                "audit chain verified: {} entries, head {}; checkpoint signatures NOT checked \
                 (give the server's --public-key)",
                s.entries, s.head
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("audit trail does NOT verify: {e}");
            Ok(ExitCode::from(3))
        }
    }
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
            command:
                AuditCommand::Verify {
                    file,
                    public_keys,
                    checkpoint,
                    head,
                },
        }) => verify(file, public_keys, checkpoint.as_deref(), head.as_deref()),
        Some(Command::Audit {
            command: AuditCommand::PublicKey,
        }) => {
            let config = load_config(&args)?;
            init_logging(&config);
            let (_store, _) = sigil_server::serve::open_storage(&config)?;
            let keys = sigil_server::audit_key::KeyFile::of(&config);
            let key = keys
                .load()?
                .ok_or_else(|| anyhow::anyhow!("no audit key yet"))?;
            println!("{}", hex::encode(key.verifying_key().to_bytes()));
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Audit {
            command: AuditCommand::RotateKey,
        }) => {
            let config = load_config(&args)?;
            init_logging(&config);
            let (store, _) = sigil_server::serve::open_storage(&config)?;
            let keys = sigil_server::audit_key::KeyFile::of(&config);
            let new = sigil_server::audit_key::rotate(&*store, &keys, "cli")?;
            println!("{new}");
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Audit {
            command: AuditCommand::StageKey,
        }) => {
            let config = load_config(&args)?;
            init_logging(&config);
            let keys = sigil_server::audit_key::KeyFile::of(&config);
            let (path, public) = sigil_server::audit_key::stage_next(&keys)?;
            println!("{} {public}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::User {
            command:
                UserCommand::Add {
                    name,
                    roles,
                    service,
                },
        }) => {
            let config = load_config(&args)?;
            init_logging(&config);
            let (store, _) = sigil_server::serve::open_storage(&config)?;
            let kind = if *service {
                sigil_server::store::accounts::AccountKind::Service
            } else {
                sigil_server::store::accounts::AccountKind::Person
            };
            let code = sigil_server::api::accounts::create_account(
                &*store, &config, name, kind, roles, "cli",
            )
            .map_err(|e| anyhow::anyhow!("cannot create account {name}: {e}"))?;
            match code {
                Some(code) => print_enrolment(&config, &code),
                None => println!(
                    "service account {name} created; give it tokens with POST /api/v1/tokens"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::User {
            command: UserCommand::Enrolment { name },
        }) => {
            let config = load_config(&args)?;
            init_logging(&config);
            let (store, _) = sigil_server::serve::open_storage(&config)?;
            let code =
                sigil_server::api::accounts::reissue_enrolment(&*store, &config, name, "cli")
                    .map_err(|e| anyhow::anyhow!("cannot issue an enrolment for {name}: {e}"))?;
            print_enrolment(&config, &code);
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Records {
            command: RecordsCommand::Prune,
        }) => {
            let config = load_config(&args)?;
            init_logging(&config);
            let (store, _) = sigil_server::serve::open_storage(&config)?;
            let now = sigil_server::store::now_secs();
            let o = sigil_server::records::prune(&*store, &config, now, "cli")
                .context("cannot prune device reports")?;
            println!(
                "pruned {} reports older than {} ({} days) in {} batches",
                o.reports, o.before, config.records.report_retention_days, o.batches
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Records {
            command: RecordsCommand::Export { device },
        }) => {
            let config = load_config(&args)?;
            init_logging(&config);
            let (store, _) = sigil_server::serve::open_storage(&config)?;
            let now = sigil_server::store::now_secs();
            let export = sigil_server::records::export_device(&*store, device, "cli", now)
                .with_context(|| format!("cannot export device {device}"))?
                .ok_or_else(|| anyhow::anyhow!("no device {device}"))?;
            println!("{}", serde_json::to_string_pretty(&export)?);
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::AdminToken { name }) => {
            let config = load_config(&args)?;
            init_logging(&config);
            let (store, _) = sigil_server::serve::open_storage(&config)?;
            let token = sigil_server::serve::create_admin_token(&*store, name, "cli")?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Migrate {
            from,
            to,
            database_ca_file,
        }) => {
            let config = load_config(&args)?;
            init_logging(&config);
            let target = sigil_server::config::redact_url(to);
            let pg = sigil_server::store::PgStore::open(to, database_ca_file.as_deref())
                .with_context(|| format!("cannot open {target}"))?;
            let m = sigil_server::store::migrate::sqlite_to_postgres(from, &pg)
                .with_context(|| format!("cannot migrate {} to {target}", from.display()))?;
            for (table, rows) in &m.rows {
                println!("{table}: {rows} rows");
            }
            println!(
                "migrated and verified: {} bundles, audit chain of {} entries ending at {}",
                m.bundles, m.audit_entries, m.audit_head
            );
            println!(
                "every replica needs the audit key: copy {} to its audit_key_file",
                from.join("keys").join("audit.key").display()
            );
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
