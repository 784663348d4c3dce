//! The cycle's decisions as pure functions, tested pair by pair.
//!
//! [`phase`] reduces what the flash says ([`Boot`]: the protected phase, the pending request,
//! the last outcome) and the agent's record to a [`Phase`]; [`decide`] takes that and what the
//! server offered this cycle ([`Offer`]) to the [`Step`] the cycle takes. The agent checks in
//! before it decides, so every phase meets every offer, including "the server could not be
//! reached": local work (a health check, an install the permission hook allows) never waits
//! for the network.
//!
//! # Phase
//!
//! | protected phase | request | agent record | phase |
//! |---|---|---|---|
//! | Swapping, Reverting (or a phase this agent does not know) | any | any | `Busy` |
//! | Trial | `Confirm` of the trial image | any | `Confirmed` |
//! | Trial | other, none | `HealthFailed` | `Trial { health_failed: true }` |
//! | Trial | other, none | other, none | `Trial { health_failed: false }` |
//! | Idle | `Install(D)` | `Staged` / `Installing` for `D` (or without a digest) | `InstallRequested` |
//! | Idle | `Install(D)` | other, none | `UnknownRequest` |
//! | Idle | none | `Staged` / `Installing`, boot state unchanged since the request | `Withdrawn` |
//! | Idle | none | `Installing` / `HealthFailed`, or `Staged` after the bootloader acted | `Finished` |
//! | Idle | none | `Staged` from before boot sequences were recorded, last outcome not a refusal | `Withdrawn` |
//! | Idle | none | `Downloading` release `R` | `Downloading { release: R }` |
//! | Idle | none | none | `Idle` |
//!
//! # Step
//!
//! | phase | server unreachable | nothing offered | release offered | offered, refused before |
//! |---|---|---|---|---|
//! | `Busy` | `Busy` | `Busy` | `Busy` | `Busy` |
//! | `Trial { .. }` | `HealthCheck` | `HealthCheck` | `HealthCheck` | `HealthCheck` |
//! | `Confirmed` | `AwaitReboot` | `AwaitReboot` | `AwaitReboot` | `AwaitReboot` |
//! | `InstallRequested` | `Install` | `Install` | `Install` | `Install` |
//! | `UnknownRequest` | `Adopt` | `Adopt` | `Adopt` | `Adopt` |
//! | `Finished` | `Conclude` | `Conclude` | `Conclude` | `Conclude` |
//! | `Withdrawn` | `Forget` | `Forget` | `Forget` | `Forget` |
//! | `Downloading { R }` | `Offline` | `UpToDate` | `Download { resume: true }` if `R`, else `Download { resume: false }` | `AlreadyRefused` |
//! | `Idle` | `Offline` | `UpToDate` | `Download { resume: false }` | `AlreadyRefused` |
//!
//! `Adopt` and `Forget` change the record and the cycle decides again (at most a few times).

use sigil_bootloader::{ImageDigest, Outcome, Phase as BootPhase};

use crate::state::{UpdatePhase, UpdateRecord};

/// What the boot-control regions say, as read this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boot {
    /// The protected phase.
    pub phase: BootPhase,
    /// The sequence number of the protected record (changes whenever the bootloader writes).
    pub sequence: u32,
    /// The pending install request's image, in Idle.
    pub install_requested: Option<ImageDigest>,
    /// Whether the image on trial has its confirm request written.
    pub confirm_requested: bool,
    /// How the last request ended.
    pub outcome: Outcome,
}

/// Where the device is, before the offer is looked at (the table in the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase<'a> {
    /// The bootloader is swapping or reverting: only it may act.
    Busy,
    /// The new image runs on trial, not confirmed yet.
    Trial {
        /// Its health check failed before.
        health_failed: bool,
    },
    /// The image on trial is confirmed; the confirm takes effect at the next boot.
    Confirmed,
    /// An install request of the agent's waits for permission and a reboot.
    InstallRequested,
    /// An install request the agent has no record of (its state was lost or is older).
    UnknownRequest,
    /// The bootloader acted on the agent's install request: its outcome is to be reported.
    Finished,
    /// The agent's install request is gone without the bootloader acting on it.
    Withdrawn,
    /// A download of this release is in progress (or was interrupted).
    Downloading {
        /// The release.
        release: &'a str,
    },
    /// Nothing in progress.
    Idle,
}

/// Outcomes with which the bootloader refused a staged bundle.
fn is_refusal(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::StagedInvalid | Outcome::StagedMismatch | Outcome::AlreadyRejected
    )
}

/// Whether the record's install request is for `digest` (a record from before digests were
/// recorded matches any).
fn names(rec: &UpdateRecord, digest: &ImageDigest) -> bool {
    rec.digest
        .as_deref()
        .is_none_or(|d| d.eq_ignore_ascii_case(&hex::encode(digest)))
}

/// The phase of the device (the table in the module documentation).
pub fn phase<'a>(boot: &Boot, record: Option<&'a UpdateRecord>) -> Phase<'a> {
    let rec_phase = record.map(|r| &r.phase);
    match boot.phase {
        BootPhase::Trial if boot.confirm_requested => Phase::Confirmed,
        BootPhase::Trial => Phase::Trial {
            health_failed: rec_phase == Some(&UpdatePhase::HealthFailed),
        },
        BootPhase::Idle => match (boot.install_requested, record) {
            (Some(d), Some(r))
                if matches!(
                    r.phase,
                    UpdatePhase::Staged { .. } | UpdatePhase::Installing
                ) && names(r, &d) =>
            {
                Phase::InstallRequested
            }
            (Some(_), _) => Phase::UnknownRequest,
            (None, None) => Phase::Idle,
            (None, Some(r)) => match &r.phase {
                UpdatePhase::Downloading { .. } => Phase::Downloading {
                    release: &r.release,
                },
                UpdatePhase::HealthFailed => Phase::Finished,
                UpdatePhase::Staged { .. } | UpdatePhase::Installing => match r.boot_sequence {
                    Some(s) if s == boot.sequence => Phase::Withdrawn,
                    Some(_) => Phase::Finished,
                    None if r.phase == UpdatePhase::Installing || is_refusal(boot.outcome) => {
                        Phase::Finished
                    }
                    None => Phase::Withdrawn,
                },
            },
        },
        // Swapping, Reverting, and any phase a newer bootloader adds: only it acts then.
        _ => Phase::Busy,
    }
}

/// What the server said at this cycle's check-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer<'a> {
    /// The check-in failed.
    Unreachable,
    /// No update assigned.
    Nothing,
    /// This release is offered.
    Release {
        /// Its id.
        release: &'a str,
        /// The agent refused it before.
        refused: bool,
    },
}

/// What the cycle does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Stop: the bootloader is mid-swap.
    Busy,
    /// Run the health check; confirm the trial image or let the bootloader revert it.
    HealthCheck,
    /// Nothing to do until the next boot makes the confirm final.
    AwaitReboot,
    /// Ask for permission and reboot into the requested install.
    Install,
    /// Verify the staged bundle of an unknown install request: adopt it or withdraw it.
    Adopt,
    /// Report how the bootloader handled the install request.
    Conclude,
    /// Drop the record of a withdrawn install request.
    Forget,
    /// The server is unreachable and there is nothing to do locally.
    Offline,
    /// Nothing offered (an interrupted download of a release no longer offered is dropped).
    UpToDate,
    /// The offered release was refused before: not downloaded again.
    AlreadyRefused,
    /// Download the offered release, resuming the interrupted download of it if `resume`.
    Download {
        /// The record's checkpoint is for this release.
        resume: bool,
    },
}

/// The step for a phase and an offer (the table in the module documentation).
pub fn decide(phase: Phase<'_>, offer: Offer<'_>) -> Step {
    match phase {
        Phase::Busy => Step::Busy,
        Phase::Trial { .. } => Step::HealthCheck,
        Phase::Confirmed => Step::AwaitReboot,
        Phase::InstallRequested => Step::Install,
        Phase::UnknownRequest => Step::Adopt,
        Phase::Finished => Step::Conclude,
        Phase::Withdrawn => Step::Forget,
        Phase::Downloading { release: current } => match offer {
            Offer::Unreachable => Step::Offline,
            Offer::Nothing => Step::UpToDate,
            Offer::Release { refused: true, .. } => Step::AlreadyRefused,
            Offer::Release { release, .. } => Step::Download {
                resume: release == current,
            },
        },
        Phase::Idle => match offer {
            Offer::Unreachable => Step::Offline,
            Offer::Nothing => Step::UpToDate,
            Offer::Release { refused: true, .. } => Step::AlreadyRefused,
            Offer::Release { .. } => Step::Download { resume: false },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHASES: [Phase<'static>; 10] = [
        Phase::Busy,
        Phase::Trial {
            health_failed: false,
        },
        Phase::Trial {
            health_failed: true,
        },
        Phase::Confirmed,
        Phase::InstallRequested,
        Phase::UnknownRequest,
        Phase::Finished,
        Phase::Withdrawn,
        Phase::Downloading { release: "r1" },
        Phase::Idle,
    ];

    const OFFERS: [Offer<'static>; 6] = [
        Offer::Unreachable,
        Offer::Nothing,
        Offer::Release {
            release: "r1",
            refused: false,
        },
        Offer::Release {
            release: "r2",
            refused: false,
        },
        Offer::Release {
            release: "r1",
            refused: true,
        },
        Offer::Release {
            release: "r2",
            refused: true,
        },
    ];

    #[test]
    fn every_phase_meets_every_offer() {
        use Step::*;
        const RESUME: Step = Download { resume: true };
        const FRESH: Step = Download { resume: false };
        // One row per phase, one column per offer, in the order of PHASES and OFFERS:
        // unreachable, nothing, r1, r2, r1 refused, r2 refused.
        let table: [[Step; 6]; 10] = [
            [Busy; 6],
            [HealthCheck; 6],
            [HealthCheck; 6],
            [AwaitReboot; 6],
            [Install; 6],
            [Adopt; 6],
            [Conclude; 6],
            [Forget; 6],
            [
                Offline,
                UpToDate,
                RESUME,
                FRESH,
                AlreadyRefused,
                AlreadyRefused,
            ],
            [
                Offline,
                UpToDate,
                FRESH,
                FRESH,
                AlreadyRefused,
                AlreadyRefused,
            ],
        ];
        for (phase, row) in PHASES.iter().zip(table) {
            for (offer, expected) in OFFERS.iter().zip(row) {
                assert_eq!(decide(*phase, *offer), expected, "{phase:?} × {offer:?}");
            }
        }
    }

    fn boot(phase: BootPhase) -> Boot {
        Boot {
            phase,
            sequence: 7,
            install_requested: None,
            confirm_requested: false,
            outcome: Outcome::None,
        }
    }

    fn record(phase: UpdatePhase) -> UpdateRecord {
        UpdateRecord {
            deployment: Some(3),
            release: "r1".into(),
            url: "/bundle".into(),
            version: Some("1.1.0".into()),
            digest: Some(hex::encode([0xD1u8; 32])),
            boot_sequence: Some(7),
            phase,
        }
    }

    #[test]
    fn the_flash_and_the_record_give_the_phase() {
        let d1 = [0xD1u8; 32];
        let staged = record(UpdatePhase::Staged { deferrals: 0 });
        let installing = record(UpdatePhase::Installing);
        let health_failed = record(UpdatePhase::HealthFailed);
        let downloading = record(UpdatePhase::Downloading {
            checkpoint: 0,
            interrupted: 0,
        });
        let requested = |d: ImageDigest| Boot {
            install_requested: Some(d),
            ..boot(BootPhase::Idle)
        };
        let moved_on = Boot {
            sequence: 8,
            ..boot(BootPhase::Idle)
        };
        let legacy = |phase| UpdateRecord {
            boot_sequence: None,
            digest: None,
            ..record(phase)
        };
        let legacy_staged = legacy(UpdatePhase::Staged { deferrals: 1 });
        let legacy_installing = legacy(UpdatePhase::Installing);
        let legacy_fresh = legacy(UpdatePhase::Staged { deferrals: 0 });
        let cases: Vec<(Boot, Option<&UpdateRecord>, Phase<'_>)> = vec![
            (boot(BootPhase::Swapping), Some(&installing), Phase::Busy),
            (boot(BootPhase::Reverting), None, Phase::Busy),
            (
                boot(BootPhase::Trial),
                Some(&installing),
                Phase::Trial {
                    health_failed: false,
                },
            ),
            (
                boot(BootPhase::Trial),
                None,
                Phase::Trial {
                    health_failed: false,
                },
            ),
            (
                boot(BootPhase::Trial),
                Some(&health_failed),
                Phase::Trial {
                    health_failed: true,
                },
            ),
            (
                Boot {
                    confirm_requested: true,
                    ..boot(BootPhase::Trial)
                },
                Some(&health_failed),
                Phase::Confirmed,
            ),
            (requested(d1), Some(&staged), Phase::InstallRequested),
            (requested(d1), Some(&installing), Phase::InstallRequested),
            (requested([0xEE; 32]), Some(&staged), Phase::UnknownRequest),
            (requested(d1), Some(&downloading), Phase::UnknownRequest),
            (requested(d1), None, Phase::UnknownRequest),
            (
                requested([0xEE; 32]),
                Some(&legacy_staged),
                Phase::InstallRequested,
            ),
            (boot(BootPhase::Idle), None, Phase::Idle),
            (
                boot(BootPhase::Idle),
                Some(&downloading),
                Phase::Downloading { release: "r1" },
            ),
            (boot(BootPhase::Idle), Some(&health_failed), Phase::Finished),
            (moved_on, Some(&installing), Phase::Finished),
            (moved_on, Some(&staged), Phase::Finished),
            (boot(BootPhase::Idle), Some(&installing), Phase::Withdrawn),
            (boot(BootPhase::Idle), Some(&staged), Phase::Withdrawn),
            (
                boot(BootPhase::Idle),
                Some(&legacy_installing),
                Phase::Finished,
            ),
            (
                Boot {
                    outcome: Outcome::StagedInvalid,
                    ..boot(BootPhase::Idle)
                },
                Some(&legacy_fresh),
                Phase::Finished,
            ),
            (
                Boot {
                    outcome: Outcome::Confirmed,
                    ..boot(BootPhase::Idle)
                },
                Some(&legacy_fresh),
                Phase::Withdrawn,
            ),
        ];
        for (b, rec, expected) in cases {
            assert_eq!(phase(&b, rec), expected, "{b:?} with {rec:?}");
        }
    }
}
