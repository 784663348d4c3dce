//! `sigil-flash`: assemble, stage into and inspect device flash images for a Sigil board port.
//!
//! Exit codes: 0 success, 1 error (printed with its cause chain), 2 invalid command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sigil_bootloader::{Floors, Phase, Request};
use sigil_flash::{payload_from_elf, BoardConfig, BootStatus, FlashImage};

/// Prepare the flash of a device running the Sigil bootloader.
#[derive(Debug, Parser)]
#[command(
    name = "sigil-flash",
    version,
    after_help = "Exit codes: 0 success, 1 error, 2 invalid command line."
)]
struct Args {
    /// The board configuration (flash map), e.g. bootloader/boards/mps2-an385/board.toml.
    #[arg(long, env = "SIGIL_BOARD", value_name = "FILE")]
    board: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a new flash image: the installed bundle in the active slot, optionally the
    /// factory floors, a staged bundle and an install request.
    Assemble {
        /// The bundle to install (as a factory programmer would).
        #[arg(long, value_name = "BUNDLE")]
        installed: PathBuf,
        /// Factory provisioning: the device never boots or installs an image with a lower
        /// security counter. Without this (and --min-key-set-version) the protected state stays
        /// blank and the first boot takes the floors of the installed image.
        #[arg(long, value_name = "N")]
        min_security_counter: Option<u32>,
        /// Factory provisioning: the lowest key-set version the device accepts.
        #[arg(long, value_name = "N")]
        min_key_set_version: Option<u32>,
        /// A bundle to write into the staging slot.
        #[arg(long, value_name = "BUNDLE")]
        staged: Option<PathBuf>,
        /// The key record of the staged encrypted bundle for this device (`SGL-WKEY`, from
        /// `sigil sign --encrypt-to`), written beside it.
        #[arg(long, value_name = "FILE", requires = "staged")]
        key_record: Option<PathBuf>,
        /// Request the install of the staged bundle at the next boot.
        #[arg(long, requires = "staged")]
        pending: bool,
        /// Factory provisioning: the device's X25519 private key (PKCS#8 PEM from `sigil keygen
        /// --x25519`), written into the board's device key store (board.toml `device_key`),
        /// which the bootloader reads and hides from the application. Without it the device
        /// boots raw releases only and refuses encrypted ones.
        #[arg(long, value_name = "PEM")]
        device_key: Option<PathBuf>,
        /// The flash image to write (flash offset 0 first).
        #[arg(short, long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Write a bundle into the staging slot of an existing image, as the device agent does
    /// (refused unless the device is idle).
    Stage {
        /// The flash image to update in place.
        #[arg(long, value_name = "FILE")]
        flash: PathBuf,
        /// The bundle to stage.
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
        /// The key record of an encrypted bundle for this device (`SGL-WKEY`), written beside
        /// it.
        #[arg(long, value_name = "FILE")]
        key_record: Option<PathBuf>,
        /// Request its install at the next boot.
        #[arg(long)]
        pending: bool,
    },
    /// Print the protected boot state and the pending request recorded in a flash image.
    State {
        /// The flash image.
        #[arg(long, value_name = "FILE")]
        flash: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Extract the payload to sign from an application ELF, checking it is linked at the
    /// board's application address.
    Payload {
        /// The application ELF.
        #[arg(value_name = "ELF")]
        elf: PathBuf,
        /// The raw image to write (sign it with `sigil sign --alignment <payload_alignment>`).
        #[arg(short, long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Overwrite the active slot of an existing image with a bundle, bypassing the update
    /// process — what an attacker with a flash programmer can do. For testing that the
    /// bootloader refuses what it must refuse; never part of an update.
    DangerousOverwriteActive {
        /// The flash image to update in place.
        #[arg(long, value_name = "FILE")]
        flash: PathBuf,
        /// The bundle to write.
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
    },
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let board = BoardConfig::load(&args.board)?;
    match args.command {
        Command::Assemble {
            installed,
            min_security_counter,
            min_key_set_version,
            staged,
            key_record,
            pending,
            device_key,
            out,
        } => {
            let mut image = FlashImage::erased(&board)?;
            if let Some(path) = device_key {
                let key = sigil_flash::read_device_key(&path)?;
                image
                    .provision_device_key(&key)
                    .context("provisioning the device key")?;
            }
            image
                .install(&read(&installed)?)
                .with_context(|| format!("installing {}", installed.display()))?;
            if min_security_counter.is_some() || min_key_set_version.is_some() {
                image
                    .provision(Floors {
                        security_counter: min_security_counter.unwrap_or(0),
                        key_set_version: min_key_set_version.unwrap_or(0),
                        root: None,
                    })
                    .context("provisioning the floors")?;
            }
            if let Some(staged) = staged {
                stage(&mut image, &staged, key_record.as_deref(), pending)?;
            }
            image.save(&out)?;
            println!(
                "{}: {} bytes, load at {:#010x}",
                out.display(),
                image.bytes().len(),
                board.flash.base
            );
        }
        Command::Stage {
            flash,
            bundle,
            key_record,
            pending,
        } => {
            let mut image = FlashImage::open(&board, &flash)?;
            let state = stage(&mut image, &bundle, key_record.as_deref(), pending)?;
            image.save(&flash)?;
            let request = image.status()?.request;
            println!(
                "staged {}; phase: {}; pending request: {}",
                bundle.display(),
                state.phase,
                request_text(request)
            );
        }
        Command::State { flash, json } => {
            let image = FlashImage::open(&board, &flash)?;
            let status = image.status()?;
            // The recipient id of the provisioned device key (never the key itself).
            let device_key = board
                .device_key_region()
                .map(|_| match image.device_public_key() {
                    Ok(Some(public)) => {
                        hex::encode(sigil_manifests::encryption::recipient_id(&public))
                    }
                    Ok(None) => "none".to_owned(),
                    Err(e) => format!("refused: {:#}", anyhow::Error::new(e)),
                });
            if json {
                let mut value = state_json(&status);
                if let Some(key) = device_key {
                    value["device_key"] = serde_json::Value::String(key);
                }
                println!("{value}");
            } else {
                print!("{}", state_text(&status));
                if let Some(key) = device_key {
                    println!("device key:           {key}");
                }
            }
        }
        Command::Payload { elf, out } => {
            let payload = payload_from_elf(&read(&elf)?, &board)
                .with_context(|| format!("reading {}", elf.display()))?;
            std::fs::write(&out, &payload).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "{}: {} bytes, runs at {:#010x}; sign with --alignment {}",
                out.display(),
                payload.len(),
                board.app_origin(),
                board.device.payload_alignment
            );
        }
        Command::DangerousOverwriteActive { flash, bundle } => {
            let mut image = FlashImage::open(&board, &flash)?;
            image.install(&read(&bundle)?)?;
            image.save(&flash)?;
            println!(
                "active slot of {} overwritten with {}",
                flash.display(),
                bundle.display()
            );
        }
    }
    Ok(())
}

fn stage(
    image: &mut FlashImage,
    bundle: &Path,
    key_record: Option<&Path>,
    pending: bool,
) -> anyhow::Result<sigil_bootloader::BootState> {
    let bytes = read(bundle)?;
    let staged = match key_record {
        Some(record) => image.stage_encrypted(&bytes, &read(record)?, pending),
        None => image.stage(&bytes, pending),
    };
    staged.with_context(|| format!("staging {}", bundle.display()))
}

fn request_text(r: Option<Request>) -> String {
    match r {
        None => "none".into(),
        Some(Request::Install(d)) => format!("install {}", hex::encode(d)),
        Some(Request::Confirm(d)) => format!("confirm {}", hex::encode(d)),
        Some(Request::Cancel) => "cancel".into(),
    }
}

fn state_json(status: &BootStatus) -> serde_json::Value {
    let s = &status.state;
    serde_json::json!({
        "sequence": s.sequence,
        "phase": s.phase.to_string(),
        "attempts_left": s.attempts_left,
        "swap_progress": s.swap_progress,
        "swap_sectors": s.swap_sectors,
        "min_security_counter": s.min_security_counter,
        "min_key_set_version": s.min_key_set_version,
        "trial_security_counter": s.trial_security_counter,
        "trial_key_set_version": s.trial_key_set_version,
        "trial_image": hex::encode(s.trial_image),
        "rejected": s.rejected().iter().map(hex::encode).collect::<Vec<_>>(),
        "outcome": s.outcome.to_string(),
        "request": request_text(status.request),
    })
}

fn state_text(status: &BootStatus) -> String {
    let s = &status.state;
    let mut text = format!(
        "phase:                {}\nlast request outcome: {}\nsequence:             {}\n\
         min security counter: {}\nmin key-set version:  {}\npending request:      {}\n",
        s.phase,
        s.outcome,
        s.sequence,
        s.min_security_counter,
        s.min_key_set_version,
        request_text(status.request),
    );
    match s.phase {
        Phase::Trial => text.push_str(&format!("trial boots left:     {}\n", s.attempts_left)),
        Phase::Swapping | Phase::Reverting => text.push_str(&format!(
            "swap progress:        {}/{} half-steps\n",
            s.swap_progress,
            s.swap_sectors.saturating_mul(2)
        )),
        _ => {}
    }
    for digest in s.rejected() {
        text.push_str(&format!("rejected image:       {}\n", hex::encode(digest)));
    }
    text
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sigil-flash: {e:#}");
            ExitCode::FAILURE
        }
    }
}
