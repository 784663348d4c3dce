//! Installing: permission (maintenance window, install-permission hook), the reboot hook, and
//! after the bootloader acted on the install request, its outcome.
//!
//! | bootloader outcome (Idle after the request) | report | the release |
//! |---|---|---|
//! | `Reverted`, `TrialInvalid` | `reverted` | (the bootloader rejects the image itself) |
//! | `Confirmed`, running the update's version | `confirmed` | — |
//! | `StagedInvalid`, `StagedMismatch`, `AlreadyRejected`, anything else | `failed` | refused for good (it must not cause another reboot) |

use sigil_bootloader::Outcome;

use super::{now_secs, Agent, AgentError, CycleOutcome, Record, Running};
use crate::hooks::{self, HookEnv, HookResult, EXIT_NOT_NOW};
use crate::state::{ReportState, UpdatePhase, UpdateRecord};

impl Agent {
    pub(super) fn hook_env<'a>(running: &'a Running, rec: Option<&'a UpdateRecord>) -> HookEnv<'a> {
        HookEnv {
            running_version: &running.version,
            update_version: rec.and_then(|r| r.version.as_deref()),
            release: rec.map(|r| r.release.as_str()),
            deployment: rec.and_then(|r| r.deployment),
        }
    }

    /// Maintenance window and install-permission hook: `Ok(())` to go ahead, or the reason
    /// for "not now".
    pub(super) async fn permission(
        &self,
        running: &Running,
        rec: Option<&UpdateRecord>,
    ) -> Result<(), String> {
        if let Some(w) = self.config.maintenance_window {
            if !w.contains(now_secs()) {
                return Err("outside the maintenance window".to_owned());
            }
        }
        let Some(argv) = &self.config.hooks.install_permission else {
            return Ok(());
        };
        let env = Self::hook_env(running, rec);
        match hooks::run("install_permission", argv, &env, self.config.hooks.timeout).await {
            HookResult::Exited(0) => Ok(()),
            HookResult::Exited(EXIT_NOT_NOW) => {
                Err("the install-permission hook answered not now (exit 75)".to_owned())
            }
            other => Err(format!(
                "the install-permission hook {other}; treated as not now"
            )),
        }
    }

    /// Asks for permission; with it, records `Installing`, reports and reboots. Without it,
    /// records one more deferral.
    pub(super) async fn try_install(
        &mut self,
        running: &Running,
        mut rec: UpdateRecord,
    ) -> Result<CycleOutcome, AgentError> {
        let dep = rec.deployment;
        if let Err(reason) = self.permission(running, Some(&rec)).await {
            let deferrals = match rec.phase {
                UpdatePhase::Staged { deferrals } => deferrals.saturating_add(1),
                _ => 1,
            };
            rec.phase = UpdatePhase::Staged { deferrals };
            self.settle(
                running,
                Record::Set(rec),
                ReportState::Deferred,
                dep,
                format!("install deferred: {reason}"),
            )
            .await?;
            return Ok(CycleOutcome::Deferred(reason));
        }
        rec.phase = UpdatePhase::Installing;
        let version = rec.version.clone().unwrap_or_default();
        self.settle(
            running,
            Record::Set(rec.clone()),
            ReportState::Installing,
            dep,
            format!("rebooting to install version {version}"),
        )
        .await?;
        self.reboot(running, Some(&rec)).await
    }

    /// Runs the reboot hook.
    pub(super) async fn reboot(
        &mut self,
        running: &Running,
        rec: Option<&UpdateRecord>,
    ) -> Result<CycleOutcome, AgentError> {
        let env = Self::hook_env(running, rec);
        let result = hooks::run(
            "reboot",
            &self.config.hooks.reboot,
            &env,
            self.config.hooks.timeout,
        )
        .await;
        if result.ok() {
            Ok(CycleOutcome::RebootRequested)
        } else {
            let reason = format!("the reboot hook {result}; asking again next cycle");
            tracing::error!(reason);
            Ok(CycleOutcome::Failed(reason))
        }
    }

    /// The bootloader acted on the install request: reports its outcome (the table in the
    /// module documentation).
    pub(super) async fn after_final_boot(
        &mut self,
        running: &Running,
        rec: UpdateRecord,
        outcome: Outcome,
    ) -> Result<CycleOutcome, AgentError> {
        let dep = rec.deployment;
        let version = rec.version.clone().unwrap_or_default();
        let (state, detail, result) = match outcome {
            Outcome::Reverted | Outcome::TrialInvalid => (
                ReportState::Reverted,
                format!(
                    "version {version} was not confirmed ({outcome}); the bootloader reverted to {}",
                    running.version
                ),
                CycleOutcome::Reverted,
            ),
            Outcome::Confirmed if running.version == version => (
                ReportState::Confirmed,
                format!("version {version} confirmed"),
                CycleOutcome::Confirmed,
            ),
            other => {
                self.state.reject(&rec.release);
                let reason = format!("the bootloader did not install version {version}: {other}");
                (
                    ReportState::Failed,
                    reason.clone(),
                    CycleOutcome::Failed(reason),
                )
            }
        };
        self.settle(running, Record::Clear, state, dep, detail)
            .await?;
        Ok(result)
    }
}
