//! The wire vocabulary shared by `sigil-agent` and `sigil-server`: one enum for the state a
//! device reports at check-in, so that the two sides cannot drift apart in spelling.
//!
//! `no_std` and dependency-light (serde derive only): any device-side client can use it.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use serde::{Deserialize, Serialize};

/// The state a device reports at check-in (`"state"` in `POST /api/v1/device/checkin`).
///
/// Seven of them are also a device's status within a deployment (the server's
/// `DeviceStatus`); `idle`, `deferred` and `installing` are recorded but leave the deployment
/// status alone ([`CheckInState::is_neutral`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckInState {
    /// Nothing in progress.
    Idle,
    /// Downloading (the detail carries the progress).
    Downloading,
    /// The bundle did not arrive intact within the bounded retries (a fault in transit, a
    /// mirror serving other bytes, a deadline); the release is not refused, the next cycle tries
    /// again. Not an install failure.
    DownloadFailed,
    /// Verified in the staging slot and marked pending.
    Staged,
    /// The install-permission hook (or the maintenance window) said "not now".
    Deferred,
    /// Rebooting into the update.
    Installing,
    /// Running the update on trial.
    Installed,
    /// The update is confirmed.
    Confirmed,
    /// The bootloader reverted to the previous image.
    Reverted,
    /// The update failed: the signed release was refused, or it could not be staged or
    /// installed (the detail says why).
    Failed,
}

impl CheckInState {
    /// Every state, in lifecycle order.
    pub const ALL: [CheckInState; 10] = [
        CheckInState::Idle,
        CheckInState::Downloading,
        CheckInState::DownloadFailed,
        CheckInState::Staged,
        CheckInState::Deferred,
        CheckInState::Installing,
        CheckInState::Installed,
        CheckInState::Confirmed,
        CheckInState::Reverted,
        CheckInState::Failed,
    ];

    /// The wire name (also the name stored by the server).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckInState::Idle => "idle",
            CheckInState::Downloading => "downloading",
            CheckInState::DownloadFailed => "download_failed",
            CheckInState::Staged => "staged",
            CheckInState::Deferred => "deferred",
            CheckInState::Installing => "installing",
            CheckInState::Installed => "installed",
            CheckInState::Confirmed => "confirmed",
            CheckInState::Reverted => "reverted",
            CheckInState::Failed => "failed",
        }
    }

    /// Parses [`CheckInState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// States that are recorded (device state, report, audit) but count neither as success
    /// nor as failure of a deployment: `idle`, `deferred`, `installing`.
    pub fn is_neutral(self) -> bool {
        matches!(
            self,
            CheckInState::Idle | CheckInState::Deferred | CheckInState::Installing
        )
    }
}

impl core::fmt::Display for CheckInState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn serde_and_as_str_spell_every_state_alike() {
        for s in CheckInState::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, std::format!("\"{}\"", s.as_str()));
            assert_eq!(CheckInState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::from_str::<CheckInState>(&json).unwrap(), s);
        }
        assert_eq!(CheckInState::parse("Idle"), None);
        assert_eq!(CheckInState::parse(""), None);
    }

    #[test]
    fn neutral_states_are_idle_deferred_installing() {
        let neutral: std::vec::Vec<&str> = CheckInState::ALL
            .into_iter()
            .filter(|s| s.is_neutral())
            .map(CheckInState::as_str)
            .collect();
        assert_eq!(neutral, ["idle", "deferred", "installing"]);
    }
}
