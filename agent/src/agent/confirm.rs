//! Confirming: after a trial boot, the health check decides.
//!
//! | health check | what the agent writes | report | next |
//! |---|---|---|---|
//! | healthy (or no hook) | the confirm request for the running image (its manifest digest); the bootloader makes it final and raises the floors at the next boot | `installed`, `confirmed` | `AwaitingReboot` until that boot |
//! | unhealthy | nothing; record `HealthFailed` | `installed` with the reason | reboot with permission so the bootloader reverts (or `deferred`) |

use super::{Agent, AgentError, CycleOutcome, Record, Running};
use crate::hooks::{self, HookResult};
use crate::state::{ReportState, UpdatePhase, UpdateRecord};

impl Agent {
    /// Runs the health check on the image on trial; confirms it or lets the bootloader revert.
    pub(super) async fn after_trial_boot(
        &mut self,
        running: &Running,
    ) -> Result<CycleOutcome, AgentError> {
        // Without a record (state lost), the trial image is what the flash says runs.
        let mut rec = self.state.update.clone().unwrap_or_else(|| UpdateRecord {
            deployment: None,
            release: String::new(),
            url: String::new(),
            version: Some(running.version.clone()),
            digest: Some(hex::encode(running.digest)),
            boot_sequence: None,
            phase: UpdatePhase::Installing,
        });
        let dep = rec.deployment;
        if rec.phase != UpdatePhase::HealthFailed {
            self.report(
                running,
                ReportState::Installed,
                dep,
                format!("running version {} on trial", running.version),
            )?;
        }
        let health = match &self.config.hooks.health_check {
            None => HookResult::Exited(0),
            Some(argv) => {
                let env = Self::hook_env(running, Some(&rec));
                hooks::run("health_check", argv, &env, self.config.hooks.timeout).await
            }
        };
        if health.ok() {
            self.slots.confirm(&running.digest)?;
            self.settle(
                running,
                Record::Clear,
                ReportState::Confirmed,
                dep,
                format!(
                    "version {} confirmed (the bootloader makes it final at the next boot)",
                    running.version
                ),
            )
            .await?;
            return Ok(CycleOutcome::Confirmed);
        }
        let reason = format!("the health check {health}");
        rec.phase = UpdatePhase::HealthFailed;
        self.settle(
            running,
            Record::Set(rec.clone()),
            ReportState::Installed,
            dep,
            format!(
                "{reason}: not confirming version {}; the bootloader reverts",
                running.version
            ),
        )
        .await?;
        // Reboot so the bootloader can revert, but never against the permission hook.
        if let Err(why) = self.permission(running, Some(&rec)).await {
            self.settle(
                running,
                Record::Keep,
                ReportState::Deferred,
                dep,
                format!("revert reboot deferred: {why}"),
            )
            .await?;
            return Ok(CycleOutcome::HealthCheckFailed(format!(
                "{reason}; reboot deferred: {why}"
            )));
        }
        self.reboot(running, Some(&rec)).await?;
        Ok(CycleOutcome::HealthCheckFailed(reason))
    }
}
