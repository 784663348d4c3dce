//! Staged rollouts: which devices a phase admits, and when a rollout advances, halts or completes.
//!
//! A deployment's target devices are ranked once, at creation, by `SHA-256(deployment id, device
//! id)`: a stable, unbiased order. Phase `i` with percentage `p` admits the first
//! `ceil(N × p / 100)` ranked devices (at least one), so each phase's set contains the previous
//! one and counts are cumulative.
//!
//! After every device status change the rollout is evaluated over the admitted devices:
//!
//! | condition (admitted devices `A`)                         | result                          |
//! |----------------------------------------------------------|---------------------------------|
//! | `failed + reverted > A × max_failure_percent / 100`      | **halted** (no new assignments) |
//! | `confirmed ≥ A × min_success_percent / 100`, not last    | advance to the next phase       |
//! | every target device confirmed, failed or reverted        | completed                       |
//! | otherwise                                                | stays                           |
//!
//! The failure rate is taken over the phase's admitted devices, not over those that reported, so
//! one early failure in a large phase does not halt it, while a small canary phase halts fast.
//!
//! `download_failed` (the bundle did not arrive intact within the device's bounded retries:
//! a flaky link, a mirror serving bad bytes) is neither final nor a failure: the device keeps
//! the offer and tries again at its next check-in, and the rollout does not halt for a fault in
//! transit. Only `failed` (the device refused the signed release, or could not stage it) and
//! `reverted` count toward the halt threshold.
//!
//! A device reports a [`sigil_protocol::CheckInState`] (the enum `sigil-agent` sends); every
//! state but the neutral ones (`idle`, `deferred`, `installing`) is a [`DeviceStatus`] of the
//! same name (`store::rules::reported_status`).

use serde::{Deserialize, Serialize};

/// Per-device status within a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Admitted or waiting for its phase; nothing reported yet.
    Pending,
    /// The device is downloading the bundle.
    Downloading,
    /// The download did not deliver the bundle intact within the device's bounded retries; the
    /// device tries again later. Neither final nor a failure.
    DownloadFailed,
    /// The bundle is verified in the staging slot.
    Staged,
    /// The device rebooted into the new image (trial boot).
    Installed,
    /// The image was confirmed: success.
    Confirmed,
    /// The bootloader reverted to the previous image: failure.
    Reverted,
    /// The update failed before install: failure.
    Failed,
}

impl DeviceStatus {
    /// All statuses, in lifecycle order.
    pub const ALL: [DeviceStatus; 8] = [
        DeviceStatus::Pending,
        DeviceStatus::Downloading,
        DeviceStatus::DownloadFailed,
        DeviceStatus::Staged,
        DeviceStatus::Installed,
        DeviceStatus::Confirmed,
        DeviceStatus::Reverted,
        DeviceStatus::Failed,
    ];

    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Pending => "pending",
            DeviceStatus::Downloading => "downloading",
            DeviceStatus::DownloadFailed => "download_failed",
            DeviceStatus::Staged => "staged",
            DeviceStatus::Installed => "installed",
            DeviceStatus::Confirmed => "confirmed",
            DeviceStatus::Reverted => "reverted",
            DeviceStatus::Failed => "failed",
        }
    }

    /// Parses [`DeviceStatus::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Whether the device is done with this deployment.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeviceStatus::Confirmed | DeviceStatus::Reverted | DeviceStatus::Failed
        )
    }

    /// Whether this counts as a failure toward the halt threshold.
    pub fn is_failure(self) -> bool {
        matches!(self, DeviceStatus::Reverted | DeviceStatus::Failed)
    }
}

/// Lifecycle of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentState {
    /// Assigning to admitted devices.
    Active,
    /// Paused by an operator: no new assignments.
    Paused,
    /// Halted automatically: the failure threshold was passed.
    Halted,
    /// Cancelled by an operator (final).
    Cancelled,
    /// Every target device finished (final).
    Completed,
}

impl DeploymentState {
    /// All states.
    pub const ALL: [DeploymentState; 5] = [
        DeploymentState::Active,
        DeploymentState::Paused,
        DeploymentState::Halted,
        DeploymentState::Cancelled,
        DeploymentState::Completed,
    ];

    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Active => "active",
            DeploymentState::Paused => "paused",
            DeploymentState::Halted => "halted",
            DeploymentState::Cancelled => "cancelled",
            DeploymentState::Completed => "completed",
        }
    }

    /// Parses [`DeploymentState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// The rollout parameters of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutPolicy {
    /// Cumulative percentages of the target devices per phase, increasing, the last one 100.
    pub phases: Vec<u8>,
    /// Share of a phase's admitted devices that must confirm before the next phase starts.
    pub min_success_percent: u8,
    /// Share of admitted devices that may fail or revert before the rollout halts.
    pub max_failure_percent: u8,
    /// The rollout does not move past this phase (the canary, 0) until a second operator
    /// approves it (four-eyes policy, `approvals.deployment_second_operator`); the approval
    /// clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_after_phase: Option<usize>,
}

impl RolloutPolicy {
    /// Checks the parameters; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.phases.is_empty() || self.phases.len() > 10 {
            return Err("phases must list 1 to 10 percentages".into());
        }
        if self.phases.windows(2).any(|w| w.first() >= w.get(1)) {
            return Err("phase percentages must increase".into());
        }
        if self.phases.first().is_some_and(|&p| p == 0) || self.phases.last() != Some(&100) {
            return Err("phase percentages must be above 0 and end at 100".into());
        }
        if !(1..=100).contains(&self.min_success_percent) {
            return Err("min_success_percent must be 1..=100".into());
        }
        if self.max_failure_percent > 100 {
            return Err("max_failure_percent must be 0..=100".into());
        }
        Ok(())
    }
}

/// How many of `total` ranked devices a phase of `percent` admits.
pub fn admitted(total: usize, percent: u8) -> usize {
    if total == 0 || percent == 0 {
        return 0;
    }
    let n = (total.saturating_mul(usize::from(percent))).div_ceil(100);
    n.clamp(1, total)
}

/// The phase (bucket) that first admits the device of rank `rank` among `total`.
pub fn bucket(policy: &RolloutPolicy, total: usize, rank: usize) -> usize {
    policy
        .phases
        .iter()
        .position(|&p| rank < admitted(total, p))
        .unwrap_or(policy.phases.len().saturating_sub(1))
}

/// Status counts over the devices admitted up to some phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Devices that confirmed.
    pub confirmed: usize,
    /// Devices that failed or reverted.
    pub failures: usize,
    /// Devices not finished yet.
    pub open: usize,
}

impl Counts {
    /// Adds one device of `status`.
    pub fn add(&mut self, status: DeviceStatus) {
        let c = match status {
            DeviceStatus::Confirmed => &mut self.confirmed,
            s if s.is_failure() => &mut self.failures,
            _ => &mut self.open,
        };
        *c = c.saturating_add(1);
    }
}

/// The outcome of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    /// Current phase index.
    pub phase: usize,
    /// Resulting state.
    pub state: DeploymentState,
}

/// Evaluates an active rollout of `total` devices in `phase`. `counts(p)` gives the status
/// counts over the devices admitted up to phase `p` (the store keeps them per phase, so this
/// costs no scan of the devices).
pub fn evaluate<E>(
    policy: &RolloutPolicy,
    phase: usize,
    total: usize,
    mut counts: impl FnMut(usize) -> Result<Counts, E>,
) -> Result<Evaluation, E> {
    let last = policy.phases.len().saturating_sub(1);
    let mut phase = phase.min(last);
    loop {
        let n = admitted(total, policy.phases.get(phase).copied().unwrap_or(100));
        let c = counts(phase)?;
        let state = if c.failures.saturating_mul(100)
            > n.saturating_mul(usize::from(policy.max_failure_percent))
        {
            DeploymentState::Halted
        } else if phase == last && c.open == 0 {
            DeploymentState::Completed
        } else if phase < last
            && policy.hold_after_phase.is_none_or(|hold| phase < hold)
            && c.confirmed.saturating_mul(100)
                >= n.saturating_mul(usize::from(policy.min_success_percent))
        {
            phase = phase.saturating_add(1);
            continue;
        } else {
            DeploymentState::Active
        };
        return Ok(Evaluation { phase, state });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeviceStatus::*;

    /// Evaluates over statuses in rank order, counting the way the store does.
    fn eval(policy: &RolloutPolicy, phase: usize, ranked: &[DeviceStatus]) -> Evaluation {
        let total = ranked.len();
        let counts = |p: usize| -> Result<Counts, ()> {
            let mut c = Counts::default();
            for (rank, s) in ranked.iter().enumerate() {
                if bucket(policy, total, rank) <= p {
                    c.add(*s);
                }
            }
            Ok(c)
        };
        evaluate(policy, phase, total, counts).unwrap()
    }

    #[test]
    fn buckets_follow_the_admission_order() {
        let p = policy();
        let buckets: Vec<usize> = (0..50).map(|r| bucket(&p, 50, r)).collect();
        assert_eq!(buckets[0], 0);
        assert!(buckets[1..5].iter().all(|&b| b == 1));
        assert!(buckets[5..].iter().all(|&b| b == 2));
    }

    fn policy() -> RolloutPolicy {
        RolloutPolicy {
            phases: vec![1, 10, 100],
            min_success_percent: 100,
            max_failure_percent: 20,
            hold_after_phase: None,
        }
    }

    #[test]
    fn phases_admit_nested_rounded_up_sets() {
        assert_eq!(admitted(1000, 1), 10);
        assert_eq!(admitted(50, 1), 1);
        assert_eq!(admitted(50, 10), 5);
        assert_eq!(admitted(50, 100), 50);
        assert_eq!(admitted(0, 100), 0);
    }

    #[test]
    fn successes_advance_phase_by_phase() {
        let mut s = vec![Pending; 50];
        assert_eq!(
            eval(&policy(), 0, &s),
            Evaluation {
                phase: 0,
                state: DeploymentState::Active
            }
        );
        s[0] = Confirmed;
        assert_eq!(eval(&policy(), 0, &s).phase, 1);
        s[1..5].fill(Confirmed);
        assert_eq!(eval(&policy(), 1, &s).phase, 2);
        s.fill(Confirmed);
        assert_eq!(eval(&policy(), 2, &s).state, DeploymentState::Completed);
    }

    #[test]
    fn a_hold_keeps_the_rollout_in_its_phase_but_still_halts_it() {
        let held = RolloutPolicy {
            hold_after_phase: Some(0),
            ..policy()
        };
        let mut s = vec![Confirmed; 50];
        assert_eq!(
            eval(&held, 0, &s),
            Evaluation {
                phase: 0,
                state: DeploymentState::Active
            },
            "every device confirmed, yet held at the canary"
        );
        s[0] = Failed;
        assert_eq!(eval(&held, 0, &s).state, DeploymentState::Halted);
    }

    #[test]
    fn failures_past_the_threshold_halt() {
        let mut s = vec![Pending; 50];
        s[..5].fill(Confirmed);
        // In phase 1 (5 devices) one failure is 20%: at the threshold, not past it.
        s[4] = Failed;
        assert_eq!(eval(&policy(), 1, &s).state, DeploymentState::Active);
        s[3] = Reverted;
        assert_eq!(
            eval(&policy(), 1, &s),
            Evaluation {
                phase: 1,
                state: DeploymentState::Halted
            }
        );
    }

    #[test]
    fn unadmitted_devices_do_not_count() {
        let mut s = vec![Pending; 50];
        s[40..].fill(Failed);
        assert_eq!(eval(&policy(), 0, &s).state, DeploymentState::Active);
    }

    #[test]
    fn download_failed_is_spelled_for_the_wire_and_is_neither_final_nor_a_failure() {
        assert_eq!(DownloadFailed.as_str(), "download_failed");
        assert_eq!(DeviceStatus::parse("download_failed"), Some(DownloadFailed));
        assert_eq!(
            serde_json::to_value(DownloadFailed).unwrap(),
            serde_json::json!("download_failed")
        );
        assert_eq!(
            serde_json::from_value::<DeviceStatus>(serde_json::json!("download_failed")).unwrap(),
            DownloadFailed
        );
        assert!(!DownloadFailed.is_final());
        assert!(!DownloadFailed.is_failure());
        // Every status round-trips through its wire name, in both encodings.
        for s in DeviceStatus::ALL {
            assert_eq!(DeviceStatus::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
            // Every status but `pending` (the server's, never reported) is a check-in state.
            match sigil_protocol::CheckInState::parse(s.as_str()) {
                Some(state) => assert!(!state.is_neutral(), "{s:?}"),
                None => assert_eq!(s, Pending),
            }
        }
    }

    #[test]
    fn download_failures_never_halt_a_rollout() {
        let mut s = vec![Pending; 50];
        // Every device of phase 1 failed its download: still active, not completed.
        s[..5].fill(DownloadFailed);
        assert_eq!(
            eval(&policy(), 1, &s),
            Evaluation {
                phase: 1,
                state: DeploymentState::Active
            }
        );
        s.fill(DownloadFailed);
        assert_eq!(eval(&policy(), 2, &s).state, DeploymentState::Active);
        // The same share of install failures halts.
        s[..5].fill(Failed);
        assert_eq!(eval(&policy(), 1, &s).state, DeploymentState::Halted);
    }

    #[test]
    fn policy_validation_names_the_problem() {
        let mut p = policy();
        assert!(p.validate().is_ok());
        p.phases = vec![10, 5, 100];
        assert!(p.validate().unwrap_err().contains("increase"));
        p.phases = vec![10, 50];
        assert!(p.validate().unwrap_err().contains("100"));
    }
}
