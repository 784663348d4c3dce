//! The update cycle: what the agent does each time it wakes up.
//!
//! # State machine
//!
//! The agent's record ([`UpdatePhase`], in `state.json`) and the boot-control phase (read
//! from flash) together decide the step:
//!
//! | boot phase | agent record | step | reports |
//! |---|---|---|---|
//! | Trial | any | run the health-check hook; healthy → `confirm`; unhealthy → record `HealthFailed`, do not confirm, reboot (with permission) so the bootloader reverts | `installed`, then `confirmed` (or `installed` + reason) |
//! | Idle | `Installing` / `HealthFailed` | the bootloader finished: read its outcome | `reverted`, `confirmed`, or `failed` (bootloader refused the bundle) |
//! | Pending | `Staged` / `Installing` | ask permission again (maintenance window, hook), then reboot | `deferred` or `installing` |
//! | Idle | none / `Downloading` | check in; on an offer: download (resume from the checkpoint) → verify again from the slot → `mark_pending` → ask permission → reboot | `downloading` (progress), `staged`, `deferred`, `installing`, or `failed` with the reason |
//! | Swapping / Reverting | — | nothing (only the bootloader runs then) | — |
//!
//! Reports are queued durably first and sent in order; one that cannot be sent stays queued.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::SigningKey;
use rand_core::{OsRng, RngCore};
use sigil_bootloader::{BootConfig, Outcome, Phase};
use sigil_manifests::{DevicePolicy, ProductId, TrustRoot, Version, MAX_ENVELOPE_LEN};
use zeroize::Zeroizing;

use crate::client::{CheckIn, ClientError, ServerClient, UpdateOffer};
use crate::config::{AgentConfig, ConfigError};
use crate::download::{self, DownloadError, Event};
use crate::hooks::{self, HookEnv, HookResult, EXIT_NOT_NOW};
use crate::slots::{self, SlotError, Slots};
use crate::state::{
    AgentState, Report, ReportState, StateDir, StateError, UpdatePhase, UpdateRecord,
};

/// Download cycles a release may be interrupted in before the agent reports it failed.
pub const MAX_INTERRUPTED_CYCLES: u32 = 5;

/// Why a cycle could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The device key cannot be loaded (the key itself is never printed).
    #[error("device key {path}: {message}")]
    Key {
        /// The key file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The trust root cannot be loaded.
    #[error("trust root {path}: {message}")]
    TrustRoot {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Flash / boot control.
    #[error("flash")]
    Slot(#[from] SlotError),
    /// The active slot does not verify, so the running version is unknown.
    #[error("the active slot does not hold a bundle that verifies for this device")]
    ActiveInvalid(#[source] SlotError),
    /// The state directory.
    #[error("state directory")]
    State(#[from] StateError),
    /// The server.
    #[error("server")]
    Server(#[from] ClientError),
    /// Only the bootloader may act in this phase.
    #[error("the bootloader is in phase \"{0}\"; the agent leaves the flash alone")]
    Busy(Phase),
}

/// What one cycle did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CycleOutcome {
    /// No update offered.
    UpToDate,
    /// The offered release was refused before; not downloaded again.
    AlreadyRefused(String),
    /// Staged and pending, but the install is deferred (the reason).
    Deferred(String),
    /// The reboot hook ran; the next boot installs the update.
    RebootRequested,
    /// The trial image was healthy and is confirmed.
    Confirmed,
    /// The bootloader reverted the update.
    Reverted,
    /// The trial image failed its health check: not confirmed, reboot requested (or deferred).
    HealthCheckFailed(String),
    /// The download was interrupted; it resumes next cycle (the reason).
    DownloadInterrupted(String),
    /// The update failed (reported with this reason).
    Failed(String),
}

/// The running image, read from the active slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// Version.
    pub version: String,
    /// Security counter.
    pub security_counter: u32,
}

/// The error and its sources, `: `-separated (the `{:#}` of anyhow, for report details).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Loads an ed25519 private key from a PKCS#8 PEM file (`sigil keygen`'s format).
pub fn load_device_key(path: &std::path::Path) -> Result<SigningKey, AgentError> {
    let err = |message: String| AgentError::Key {
        path: path.display().to_string(),
        message,
    };
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?);
    // The pkcs8 error says what is malformed, never the key bytes.
    SigningKey::from_pkcs8_pem(&text)
        .map_err(|e| err(format!("not an ed25519 PKCS#8 PEM private key ({e})")))
}

/// Loads an encoded trust root.
pub fn load_trust_root(path: &std::path::Path) -> Result<TrustRoot, AgentError> {
    let err = |message: String| AgentError::TrustRoot {
        path: path.display().to_string(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    TrustRoot::decode(&bytes).map_err(|e| err(e.to_string()))
}

/// The device agent.
pub struct Agent {
    config: AgentConfig,
    root: TrustRoot,
    slots: Box<dyn Slots>,
    client: ServerClient,
    dir: StateDir,
    state: AgentState,
    /// The running image, keyed by the boot-control sequence number it was read under: the
    /// active slot changes only through the bootloader, which always writes a new record.
    running_cache: Option<(u32, Running)>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("device", &self.config.device.id)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Loads the key, trust root, flash and state named by `config`.
    pub fn new(config: AgentConfig) -> Result<Self, AgentError> {
        let key = load_device_key(&config.device.key)?;
        let root = load_trust_root(&config.device.trust_root)?;
        let slots = slots::open(&config.flash.path, config.flash.layout)?;
        let client = ServerClient::new(&config.server, &config.device.id, key)?;
        let dir = StateDir::open(&config.state_dir)?;
        let state = dir.load()?;
        Ok(Agent {
            config,
            root,
            slots,
            client,
            dir,
            state,
            running_cache: None,
        })
    }

    /// The agent's durable state.
    pub fn state(&self) -> &AgentState {
        &self.state
    }

    /// Reports still queued.
    pub fn queued_reports(&self) -> Result<Vec<Report>, AgentError> {
        Ok(self.dir.queued()?)
    }

    /// Reads the running image's version and counter from the active slot (verified in full;
    /// cached until the boot-control state changes).
    pub fn running(&mut self) -> Result<Running, AgentError> {
        let sequence = self.slots.state().sequence;
        if let Some((seq, running)) = &self.running_cache {
            if *seq == sequence {
                return Ok(running.clone());
            }
        }
        let layout = self.slots.layout();
        let product = ProductId::new(&self.config.device.vendor, &self.config.device.device)
            .map_err(|_| ConfigError::Invalid {
                key: "device.product",
                message: "is not a valid product id".to_owned(),
            })?;
        let policy = DevicePolicy::device(product, u64::from(layout.max_bundle_len()));
        let mut buf = vec![0u8; MAX_ENVELOPE_LEN];
        let v = self
            .slots
            .verify_active(&self.root, policy, &mut buf)
            .map_err(AgentError::ActiveInvalid)?;
        let running = Running {
            version: v.manifest().version.to_string(),
            security_counter: v.security_counter(),
        };
        self.running_cache = Some((sequence, running.clone()));
        Ok(running)
    }

    fn save(&self) -> Result<(), AgentError> {
        Ok(self.dir.save(&self.state)?)
    }

    fn report(
        &self,
        running: &Running,
        state: ReportState,
        deployment: Option<i64>,
        detail: impl Into<String>,
    ) -> Result<(), AgentError> {
        let detail = detail.into();
        tracing::info!(state = state.as_str(), deployment, detail, "report");
        self.dir.enqueue(Report {
            seq: 0,
            at: now_secs(),
            state,
            deployment,
            detail: (!detail.is_empty()).then_some(detail),
            version: running.version.clone(),
            security_counter: running.security_counter,
        })?;
        Ok(())
    }

    /// Sends every queued report in order; stops at the first one the server does not take
    /// (it stays queued). A report the server refuses as malformed is dropped, logged.
    pub async fn flush_reports(&mut self) -> Result<(), AgentError> {
        for r in self.dir.queued()? {
            let c = CheckIn {
                version: &r.version,
                security_counter: r.security_counter,
                state: r.state.as_str(),
                deployment: r.deployment,
                detail: r.detail.as_deref(),
            };
            match self.client.check_in(&c).await {
                Ok(_) => self.dir.remove(r.seq)?,
                Err(e) if e.is_permanent() => {
                    tracing::error!(error = %chain(&e), seq = r.seq, state = r.state.as_str(), "server refused a report: dropped");
                    self.dir.remove(r.seq)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn flush_best_effort(&mut self) {
        if let Err(e) = self.flush_reports().await {
            tracing::warn!(error = %chain(&e), "reports stay queued");
        }
    }

    fn current_state(&self) -> (ReportState, Option<i64>) {
        match &self.state.update {
            None => (ReportState::Idle, None),
            Some(u) => (
                match u.phase {
                    UpdatePhase::Downloading { .. } => ReportState::Downloading,
                    UpdatePhase::Staged { .. } => ReportState::Staged,
                    UpdatePhase::Installing => ReportState::Installing,
                    UpdatePhase::HealthFailed => ReportState::Installed,
                },
                u.deployment,
            ),
        }
    }

    async fn check_in(&mut self, running: &Running) -> Result<Option<UpdateOffer>, AgentError> {
        let (state, deployment) = self.current_state();
        let c = CheckIn {
            version: &running.version,
            security_counter: running.security_counter,
            state: state.as_str(),
            deployment,
            detail: None,
        };
        Ok(self.client.check_in(&c).await?)
    }

    /// One full cycle (see the module documentation).
    pub async fn run_once(&mut self) -> Result<CycleOutcome, AgentError> {
        let boot = self.slots.reload()?;
        if matches!(boot.phase, Phase::Swapping | Phase::Reverting) {
            return Err(AgentError::Busy(boot.phase));
        }
        let running = self.running()?;
        tracing::debug!(phase = %boot.phase, version = running.version, "cycle");
        match boot.phase {
            Phase::Trial => return self.after_trial_boot(&running).await,
            Phase::Idle if self.slots.install_requested().is_some() => {
                match self.state.update.clone() {
                    Some(rec)
                        if matches!(
                            rec.phase,
                            UpdatePhase::Staged { .. } | UpdatePhase::Installing
                        ) =>
                    {
                        self.flush_best_effort().await;
                        return self.try_install(&running, rec).await;
                    }
                    _ => {
                        // Requested without a record of ours (state lost): withdraw it, so the
                        // device never installs something the agent did not check this run.
                        tracing::warn!("install requested without an agent record: withdrawing it");
                        self.slots.cancel()?;
                        self.state.update = None;
                        self.save()?;
                    }
                }
            }
            Phase::Idle => {
                if let Some(rec) = self.state.update.clone() {
                    match rec.phase {
                        UpdatePhase::Installing | UpdatePhase::HealthFailed => {
                            return self.after_final_boot(&running, rec, boot.outcome).await;
                        }
                        UpdatePhase::Staged { .. } => {
                            tracing::warn!(
                                release = rec.release,
                                "the pending request was withdrawn outside the agent"
                            );
                            self.state.update = None;
                            self.save()?;
                        }
                        UpdatePhase::Downloading { .. } => {}
                    }
                }
            }
            _ => {}
        }

        self.flush_reports().await?;
        let Some(offer) = self.check_in(&running).await? else {
            if self.state.update.take().is_some() {
                tracing::info!("the server no longer offers the interrupted download: dropped");
                self.save()?;
            }
            return Ok(CycleOutcome::UpToDate);
        };
        if self.state.is_rejected(&offer.release) {
            tracing::info!(
                release = offer.release,
                "offered release was refused before: ignored"
            );
            return Ok(CycleOutcome::AlreadyRefused(offer.release));
        }
        self.stage(&running, offer).await
    }

    async fn stage(
        &mut self,
        running: &Running,
        offer: UpdateOffer,
    ) -> Result<CycleOutcome, AgentError> {
        let (resume, interrupted, version) = match &self.state.update {
            Some(UpdateRecord {
                release,
                phase:
                    UpdatePhase::Downloading {
                        checkpoint,
                        interrupted,
                    },
                version,
                ..
            }) if *release == offer.release => (*checkpoint, *interrupted, version.clone()),
            _ => (0, 0, None),
        };
        let dep = Some(offer.deployment);
        self.state.update = Some(UpdateRecord {
            deployment: dep,
            release: offer.release.clone(),
            url: offer.download_url.clone(),
            version,
            phase: UpdatePhase::Downloading {
                checkpoint: resume,
                interrupted,
            },
        });
        self.save()?;
        let what = if resume > 0 {
            "resuming"
        } else {
            "downloading"
        };
        self.report(
            running,
            ReportState::Downloading,
            dep,
            format!(
                "{what} release {} (claimed version {}, {} bytes)",
                offer.release, offer.version, offer.size
            ),
        )?;
        self.flush_best_effort().await;

        let layout = self.slots.layout();
        let boot_state = self.slots.state();
        // Owned copies: the policy borrows them while `self` is used mutably below.
        let (vendor, device) = (
            self.config.device.vendor.clone(),
            self.config.device.device.clone(),
        );
        let component = self.config.device.component.clone();
        let trust_root = self.root.clone();
        let product = ProductId::new(&vendor, &device).map_err(|_| ConfigError::Invalid {
            key: "device.product",
            message: "is not a valid product id".to_owned(),
        })?;
        let mut boot_config = BootConfig::new(&trust_root, product, &component);
        if let Some(v) = self.config.device.bootloader_version {
            boot_config = boot_config.with_bootloader_version(v);
        }
        let running_version = Version::parse(&running.version).map_err(|e| {
            AgentError::ActiveInvalid(SlotError::Boot(sigil_bootloader::Error::Verify(e)))
        })?;
        // The bootloader's own policy (product, component, stored minimums, slot size), plus
        // "newer than what runs".
        let policy = boot_config
            .policy(&layout, &boot_state)
            .with_newer_than(running_version);

        let live = download::LiveProgress {
            version: running.version.clone(),
            security_counter: running.security_counter,
            deployment: dep,
        };
        let Agent {
            slots,
            client,
            dir,
            state,
            config,
            ..
        } = self;
        let mut on = |e: Event| match e {
            Event::Checkpoint { offset } => {
                if let Some(UpdateRecord {
                    phase: UpdatePhase::Downloading { checkpoint, .. },
                    ..
                }) = state.update.as_mut()
                {
                    *checkpoint = offset;
                }
                if let Err(e) = dir.save(state) {
                    tracing::warn!(error = %chain(&e), "cannot save the download checkpoint");
                }
            }
            Event::Authenticated { version } => {
                tracing::info!(version, "bundle manifest authenticated");
                if let Some(u) = state.update.as_mut() {
                    u.version = Some(version);
                }
                if let Err(e) = dir.save(state) {
                    tracing::warn!(error = %chain(&e), "cannot save state");
                }
            }
            Event::Progress { done, total } => {
                tracing::debug!(done, total, "download progress");
            }
        };
        let result = download::download(
            slots.as_mut(),
            client,
            &config.download,
            &trust_root,
            policy,
            &offer.download_url,
            resume,
            Some(&live),
            &mut on,
        )
        .await;

        let downloaded = match result {
            Ok(d) => d,
            Err(e) => return self.download_failed(running, &offer, e, interrupted).await,
        };
        tracing::info!(
            total = downloaded.total_len,
            fetched = downloaded.fetched,
            resumed_from = downloaded.resumed_from,
            requests = downloaded.requests,
            "bundle downloaded and verified while streaming"
        );

        // Verify again, from the flash: what the bootloader will read.
        let mut buf = vec![0u8; MAX_ENVELOPE_LEN];
        let (staged_version, digest) = match self.slots.verify_staged(&trust_root, policy, &mut buf)
        {
            Ok(v) => (v.manifest().version.to_string(), v.manifest_digest()),
            Err(e) => {
                let reason = format!(
                    "the staged bundle does not verify from flash: {}",
                    chain(&e)
                );
                return self.fail(running, dep, reason).await;
            }
        };
        self.slots.request_install(&digest)?;
        let rec = UpdateRecord {
            deployment: dep,
            release: offer.release.clone(),
            url: offer.download_url.clone(),
            version: Some(staged_version.clone()),
            phase: UpdatePhase::Staged { deferrals: 0 },
        };
        self.state.update = Some(rec.clone());
        self.save()?;
        self.report(
            running,
            ReportState::Staged,
            dep,
            format!("version {staged_version} verified in the staging slot and marked pending"),
        )?;
        self.flush_best_effort().await;
        self.try_install(running, rec).await
    }

    async fn fail(
        &mut self,
        running: &Running,
        dep: Option<i64>,
        reason: String,
    ) -> Result<CycleOutcome, AgentError> {
        tracing::error!(reason, "update failed");
        self.state.update = None;
        self.save()?;
        self.report(running, ReportState::Failed, dep, reason.clone())?;
        self.flush_best_effort().await;
        Ok(CycleOutcome::Failed(reason))
    }

    async fn download_failed(
        &mut self,
        running: &Running,
        offer: &UpdateOffer,
        e: DownloadError,
        interrupted: u32,
    ) -> Result<CycleOutcome, AgentError> {
        let dep = Some(offer.deployment);
        let reason = chain(&e);
        match e {
            DownloadError::Rejected(_) => {
                self.state.reject(&offer.release);
                self.fail(running, dep, reason).await
            }
            DownloadError::Refused(_) | DownloadError::Slot(_) => {
                self.fail(running, dep, reason).await
            }
            DownloadError::GaveUp { .. } | DownloadError::ResumeCorrupt(_) => {
                let interrupted = interrupted.saturating_add(1);
                if interrupted >= MAX_INTERRUPTED_CYCLES {
                    return self
                        .fail(
                            running,
                            dep,
                            format!("{reason} (interrupted {interrupted} times; giving up)"),
                        )
                        .await;
                }
                if let Some(UpdateRecord {
                    phase:
                        UpdatePhase::Downloading {
                            checkpoint,
                            interrupted: n,
                        },
                    ..
                }) = self.state.update.as_mut()
                {
                    *n = interrupted;
                    if matches!(e, DownloadError::ResumeCorrupt(_)) {
                        *checkpoint = 0;
                    }
                }
                self.save()?;
                tracing::warn!(reason, "download interrupted; it resumes next cycle");
                self.report(
                    running,
                    ReportState::Downloading,
                    dep,
                    format!("interrupted: {reason}; will resume"),
                )?;
                self.flush_best_effort().await;
                Ok(CycleOutcome::DownloadInterrupted(reason))
            }
        }
    }

    fn hook_env<'a>(running: &'a Running, rec: Option<&'a UpdateRecord>) -> HookEnv<'a> {
        HookEnv {
            running_version: &running.version,
            update_version: rec.and_then(|r| r.version.as_deref()),
            release: rec.map(|r| r.release.as_str()),
            deployment: rec.and_then(|r| r.deployment),
        }
    }

    /// Maintenance window and install-permission hook: `Ok(())` to go ahead, or the reason
    /// for "not now".
    async fn permission(
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

    async fn try_install(
        &mut self,
        running: &Running,
        mut rec: UpdateRecord,
    ) -> Result<CycleOutcome, AgentError> {
        if let Err(reason) = self.permission(running, Some(&rec)).await {
            let deferrals = match rec.phase {
                UpdatePhase::Staged { deferrals } => deferrals.saturating_add(1),
                _ => 1,
            };
            rec.phase = UpdatePhase::Staged { deferrals };
            let dep = rec.deployment;
            self.state.update = Some(rec);
            self.save()?;
            self.report(
                running,
                ReportState::Deferred,
                dep,
                format!("install deferred: {reason}"),
            )?;
            self.flush_best_effort().await;
            return Ok(CycleOutcome::Deferred(reason));
        }
        rec.phase = UpdatePhase::Installing;
        let dep = rec.deployment;
        let version = rec.version.clone().unwrap_or_default();
        self.state.update = Some(rec.clone());
        self.save()?;
        self.report(
            running,
            ReportState::Installing,
            dep,
            format!("rebooting to install version {version}"),
        )?;
        self.flush_best_effort().await;
        self.reboot(running, Some(&rec)).await
    }

    async fn reboot(
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

    async fn after_trial_boot(&mut self, running: &Running) -> Result<CycleOutcome, AgentError> {
        let mut rec = self.state.update.clone().unwrap_or_else(|| UpdateRecord {
            deployment: None,
            release: String::new(),
            url: String::new(),
            version: Some(running.version.clone()),
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
            self.slots.confirm()?;
            self.state.update = None;
            self.save()?;
            self.report(
                running,
                ReportState::Confirmed,
                dep,
                format!("version {} confirmed", running.version),
            )?;
            self.flush_best_effort().await;
            return Ok(CycleOutcome::Confirmed);
        }
        let reason = format!("the health check {health}");
        rec.phase = UpdatePhase::HealthFailed;
        self.state.update = Some(rec.clone());
        self.save()?;
        self.report(
            running,
            ReportState::Installed,
            dep,
            format!(
                "{reason}: not confirming version {}; the bootloader reverts",
                running.version
            ),
        )?;
        self.flush_best_effort().await;
        // Reboot so the bootloader can revert, but never against the permission hook.
        if let Err(why) = self.permission(running, Some(&rec)).await {
            self.report(
                running,
                ReportState::Deferred,
                dep,
                format!("revert reboot deferred: {why}"),
            )?;
            self.flush_best_effort().await;
            return Ok(CycleOutcome::HealthCheckFailed(format!(
                "{reason}; reboot deferred: {why}"
            )));
        }
        self.reboot(running, Some(&rec)).await?;
        Ok(CycleOutcome::HealthCheckFailed(reason))
    }

    async fn after_final_boot(
        &mut self,
        running: &Running,
        rec: UpdateRecord,
        outcome: Outcome,
    ) -> Result<CycleOutcome, AgentError> {
        let dep = rec.deployment;
        let version = rec.version.clone().unwrap_or_default();
        self.state.update = None;
        let result = match outcome {
            Outcome::Reverted | Outcome::TrialInvalid => {
                self.report(
                    running,
                    ReportState::Reverted,
                    dep,
                    format!("version {version} was not confirmed ({outcome}); the bootloader reverted to {}", running.version),
                )?;
                CycleOutcome::Reverted
            }
            Outcome::Confirmed if running.version == version => {
                self.report(
                    running,
                    ReportState::Confirmed,
                    dep,
                    format!("version {version} confirmed"),
                )?;
                CycleOutcome::Confirmed
            }
            other => {
                self.state.reject(&rec.release);
                let reason = format!("the bootloader did not install version {version}: {other}");
                self.report(running, ReportState::Failed, dep, reason.clone())?;
                CycleOutcome::Failed(reason)
            }
        };
        self.save()?;
        self.flush_best_effort().await;
        Ok(result)
    }

    /// How long to sleep after a cycle that ended with `outcome`: the poll interval (the
    /// defer interval after a deferral) plus a random jitter.
    pub fn next_wait(&self, outcome: Option<&CycleOutcome>) -> Duration {
        let base = match outcome {
            Some(CycleOutcome::Deferred(_)) => self.config.poll.defer_interval,
            _ => self.config.poll.interval,
        };
        let jitter_ms = u64::try_from(self.config.poll.jitter.as_millis()).unwrap_or(u64::MAX);
        let extra = if jitter_ms == 0 {
            0
        } else {
            OsRng.next_u64() % jitter_ms.saturating_add(1)
        };
        base.saturating_add(Duration::from_millis(extra))
    }

    /// Runs cycles until `shutdown` completes. A failing cycle is logged and retried after
    /// the poll interval.
    pub async fn run(&mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let outcome = tokio::select! {
                r = self.run_once() => r,
                () = &mut shutdown => {
                    tracing::info!("shutting down (an interrupted download resumes at the next start)");
                    return;
                }
            };
            let outcome = match outcome {
                Ok(o) => {
                    tracing::info!(outcome = ?o, "cycle finished");
                    Some(o)
                }
                Err(e) => {
                    tracing::error!(error = %chain(&e), "cycle failed");
                    None
                }
            };
            let wait = self.next_wait(outcome.as_ref());
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut shutdown => {
                    tracing::info!("shutting down");
                    return;
                }
            }
        }
    }
}
