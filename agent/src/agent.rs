//! The update cycle: what the agent does each time it wakes up.
//!
//! Each cycle reads the boot-control regions and the running image, sends the queued reports
//! and checks in, then takes the step that [`decide`] gives for what the flash and the agent's
//! record say and what the server offered (the tables are in [`decide`]). The steps live in
//! three modules:
//!
//! | module | steps | reports |
//! |---|---|---|
//! | `stage` | download (resume from the checkpoint) → verify again from the slot → request the install; adopt an install request the agent has no record of | `downloading` (progress), `staged`, `download_failed` (the release is not refused: the next cycle tries again), or `failed` with the reason |
//! | `install` | ask permission (maintenance window, hook), then reboot; after the bootloader acted, report its outcome | `deferred`, `installing`; `reverted`, `confirmed`, or `failed` (bootloader refused the bundle) |
//! | `confirm` | on a trial boot, run the health check: healthy → write the confirm request (final at the next boot); unhealthy → do not confirm, reboot (with permission) so the bootloader reverts | `installed`, then `confirmed` (or `installed` + reason) |
//!
//! Every state change goes through one helper that saves the record, queues the report and
//! sends the queue. Reports are queued durably first and sent in order; one that cannot be
//! sent stays queued. A state file that could not be read is recovered (see
//! [`crate::state`]) and the recovery is reported at the start of the next cycle.

mod confirm;
pub mod decide;
mod install;
mod stage;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::SigningKey;
use rand_core::{OsRng, RngCore};
use sigil_bootloader::{BootConfig, BootState, ImageDigest, Layout, Phase};
use sigil_manifests::{DevicePolicy, ProductId, TrustRoot, Version, VERIFY_BUFFER_LEN};
use zeroize::Zeroizing;

use crate::client::{CheckIn, ClientError, ServerClient, UpdateOffer};
use crate::config::{AgentConfig, ConfigError};
use crate::slots::{self, SlotError, Slots};
use crate::state::{
    AgentState, Recovery, Report, ReportState, StateDir, StateError, UpdatePhase, UpdateRecord,
};
use decide::{Offer, Step};

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
    /// Boot control given to [`Agent::with_slots`] uses another layout than the configuration.
    #[error("the boot control's flash layout is not the configured one (flash.*)")]
    LayoutMismatch,
    /// Only the bootloader may act in this phase.
    #[error("the bootloader is in phase \"{0}\"; the agent leaves the flash alone")]
    Busy(Phase),
    /// The cycle's decisions did not settle (a record changed under the agent each time).
    #[error("the update cycle did not reach a decision; it is tried again next cycle")]
    Undecided,
}

/// What one cycle did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CycleOutcome {
    /// No update offered.
    UpToDate,
    /// The offered release was refused before; not downloaded again.
    AlreadyRefused(String),
    /// Staged and requested, but the install is deferred (the reason).
    Deferred(String),
    /// The reboot hook ran; the next boot installs the update.
    RebootRequested,
    /// The trial image was healthy and is confirmed (final at the next boot).
    Confirmed,
    /// The trial image is confirmed already; the confirm takes effect at the next boot.
    AwaitingReboot,
    /// The bootloader reverted the update.
    Reverted,
    /// The trial image failed its health check: not confirmed, reboot requested (or deferred).
    HealthCheckFailed(String),
    /// The bundle did not arrive intact within the bounds (reported `download_failed`); the
    /// release is not refused and the next cycle tries again, resuming when it can.
    DownloadFailed(String),
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
    /// Key-set version it was signed under.
    pub key_set_version: u32,
    /// Its manifest digest: the image identity boot control's requests name.
    pub digest: ImageDigest,
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

/// What a state change does to the agent's record.
enum Record {
    /// Leaves it as it is (it may have been changed in place).
    Keep,
    /// Replaces it.
    Set(UpdateRecord),
    /// Clears it: no update in progress.
    Clear,
}

/// Owned inputs of the device policy, so that a policy can borrow them while the agent is
/// used mutably (during a download).
struct PolicyInputs {
    root: TrustRoot,
    vendor: String,
    device: String,
    component: String,
    bootloader_version: Option<u32>,
    layout: Layout,
    boot: BootState,
    running: Running,
    trusted_time: Option<u64>,
    /// The device has an encryption key: encrypted releases are accepted, verified as
    /// ciphertext (the bootloader decrypts; FORMAT.md §9).
    encrypted: bool,
}

impl PolicyInputs {
    /// The policy a bundle must pass before the agent requests its install: the bootloader's
    /// (product, component, slot size, floors), with the floors raised to the running image's
    /// counters (the stored floor can lag behind what runs), plus "newer than what runs" and,
    /// with trusted time, the expiry (FORMAT.md step 7h).
    fn policy(&self) -> Result<DevicePolicy<'_>, AgentError> {
        let product =
            ProductId::new(&self.vendor, &self.device).map_err(|_| ConfigError::Invalid {
                key: "device.product",
                message: "is not a valid product id".to_owned(),
            })?;
        let mut config = BootConfig::new(&self.root, product, &self.component);
        if let Some(v) = self.bootloader_version {
            config = config.with_bootloader_version(v);
        }
        let running_version = Version::parse(&self.running.version).map_err(|e| {
            AgentError::ActiveInvalid(SlotError::Boot(sigil_bootloader::Error::Verify(e)))
        })?;
        let floor = self
            .boot
            .min_security_counter
            .max(self.running.security_counter);
        let key_set_floor = self
            .boot
            .min_key_set_version
            .max(self.running.key_set_version);
        let policy = config
            .policy(&self.layout, &self.boot)
            .with_min_security_counter(floor)
            .with_min_key_set_version(key_set_floor)
            .with_newer_than(running_version);
        let policy = if self.encrypted {
            policy.with_encrypted_payload(sigil_manifests::EncryptedPayload::Ciphertext)
        } else {
            policy
        };
        Ok(match self.trusted_time {
            Some(now) => policy.with_trusted_time(now),
            None => policy,
        })
    }
}

/// The device agent.
pub struct Agent {
    config: AgentConfig,
    root: TrustRoot,
    slots: Box<dyn Slots>,
    client: ServerClient,
    dir: StateDir,
    state: AgentState,
    /// How the state file was recovered at start-up, until it is reported.
    recovery: Option<Recovery>,
    /// The running image, keyed by the boot-control sequence number it was read under: the
    /// active slot changes only through the bootloader, which always writes a new record.
    running_cache: Option<(u32, Running)>,
    /// The root chain staged from the server (root rotation).
    chain: crate::roots::StagedChain,
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
    /// Loads the key, trust root, flash and state named by `config`. A state file that cannot
    /// be read does not stop the agent: it is recovered (see [`crate::state`]).
    pub fn new(config: AgentConfig) -> Result<Self, AgentError> {
        let slots = slots::open(&config.flash.path, config.flash.layout)?;
        Self::with_slots(config, slots)
    }

    /// [`Agent::new`] over boot control the caller opened (a board's own flash driver, or a
    /// test double), which must use `config.flash.layout`.
    pub fn with_slots(config: AgentConfig, slots: Box<dyn Slots>) -> Result<Self, AgentError> {
        if slots.layout() != config.flash.layout {
            return Err(AgentError::LayoutMismatch);
        }
        let key = load_device_key(&config.device.key)?;
        let root = load_trust_root(&config.device.trust_root)?;
        let client = ServerClient::new(
            &config.server,
            config.download.max_redirects,
            &config.device.id,
            key,
        )?;
        let dir = StateDir::open(&config.state_dir)?;
        let loaded = dir.load();
        let chain =
            crate::roots::StagedChain::load(&config.state_dir, &root, slots.state().root_floor);
        Ok(Agent {
            config,
            root,
            slots,
            client,
            dir,
            state: loaded.state,
            recovery: loaded.recovery,
            running_cache: None,
            chain,
        })
    }

    /// The agent's durable state.
    pub fn state(&self) -> &AgentState {
        &self.state
    }

    /// How the state file was recovered at start-up, while that is not reported yet.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    /// Reports still queued.
    pub fn queued_reports(&self) -> Result<Vec<Report>, AgentError> {
        Ok(self.dir.queued()?)
    }

    /// Reads the running image's version and counters from the active slot (verified in full;
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
        // A device with an encryption key runs decrypted images of encrypted releases: the
        // bootloader decrypted the payload while installing, so step 9 compares it against the
        // signed plaintext digest, as the bootloader does on every boot.
        let policy = if self.config.device.encryption_key.is_some() {
            policy.with_encrypted_payload(sigil_manifests::EncryptedPayload::Decrypted)
        } else {
            policy
        };
        let mut buf = vec![0u8; VERIFY_BUFFER_LEN];
        let v = self
            .slots
            .verify_active(&self.root, policy, &mut buf)
            .map_err(AgentError::ActiveInvalid)?;
        let running = Running {
            version: v.manifest().version.to_string(),
            security_counter: v.security_counter(),
            key_set_version: v.key_set_version(),
            digest: v.manifest_digest(),
        };
        self.running_cache = Some((sequence, running.clone()));
        Ok(running)
    }

    fn policy_inputs(&self, running: &Running) -> PolicyInputs {
        PolicyInputs {
            root: self.root.clone(),
            vendor: self.config.device.vendor.clone(),
            device: self.config.device.device.clone(),
            component: self.config.device.component.clone(),
            bootloader_version: self.config.device.bootloader_version,
            layout: self.slots.layout(),
            boot: self.slots.state(),
            running: running.clone(),
            trusted_time: self.config.device.trusted_time.then(now_secs),
            encrypted: self.config.device.encryption_key.is_some(),
        }
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

    /// One state change: updates and saves the record, queues the report, sends the queue
    /// (best effort: what cannot be sent stays queued).
    async fn settle(
        &mut self,
        running: &Running,
        record: Record,
        state: ReportState,
        deployment: Option<i64>,
        detail: impl Into<String>,
    ) -> Result<(), AgentError> {
        match record {
            Record::Keep => {}
            Record::Set(r) => self.state.update = Some(r),
            Record::Clear => self.state.update = None,
        }
        self.save()?;
        self.report(running, state, deployment, detail)?;
        self.flush_best_effort().await;
        Ok(())
    }

    /// Sends every queued report in order; stops at the first one the server does not take
    /// (it stays queued). A report the server refuses as malformed is dropped, logged.
    pub async fn flush_reports(&mut self) -> Result<(), AgentError> {
        for r in self.dir.queued()? {
            let c = CheckIn {
                version: &r.version,
                security_counter: r.security_counter,
                state: r.state,
                deployment: r.deployment,
                detail: r.detail.as_deref(),
                root_version: None,
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

    /// Sends the queued reports, then checks in: the offer, if any.
    async fn check_in(&mut self, running: &Running) -> Result<Option<UpdateOffer>, AgentError> {
        self.flush_reports().await?;
        let (state, deployment) = self.current_state();
        let c = CheckIn {
            version: &running.version,
            security_counter: running.security_counter,
            state,
            deployment,
            detail: None,
            root_version: Some(self.root_version()),
        };
        let reply = self.client.check_in(&c).await?;
        if let Some(hex_chain) = &reply.root_chain {
            let floor = self.slots.state().root_floor;
            match self.chain.take(hex_chain, &self.root, floor) {
                Ok(version) => {
                    tracing::debug!(root_version = version, "root chain from the server")
                }
                // A chain that does not verify changes nothing; the offer is still judged by
                // the bundle's own verification.
                Err(e) => tracing::warn!(error = %chain(&e), "root chain from the server refused"),
            }
        }
        if reply.withheld != self.state.withheld {
            // Told once per reason, so that the operator sees why this device is not updating.
            self.state.withheld = reply.withheld.clone();
            self.save()?;
            if let Some(reason) = &reply.withheld {
                tracing::warn!(reason, "the server withholds an assigned release");
                self.report(
                    running,
                    state,
                    deployment,
                    format!("an assigned release is withheld by the server: {reason}"),
                )?;
                self.flush_best_effort().await;
            }
        }
        Ok(reply.update)
    }

    /// The newest trust root version the device knows: the staged chain's, else the root the
    /// bootloader adopted, else the provisioned root's.
    pub fn root_version(&self) -> u32 {
        let adopted = self
            .slots
            .state()
            .root_floor
            .map_or(self.root.root_version, |f| f.version);
        self.chain.root_version(adopted)
    }

    /// What the boot-control regions say now.
    fn boot_view(&self) -> decide::Boot {
        let state = self.slots.state();
        decide::Boot {
            phase: state.phase,
            sequence: state.sequence,
            install_requested: self.slots.install_requested(),
            confirm_requested: self.slots.confirm_requested(),
            outcome: state.outcome,
        }
    }

    /// Queues the report of a state-file recovery, with what the flash says.
    fn report_recovery(&self, running: &Running, recovery: &Recovery) -> Result<(), AgentError> {
        let boot = self.boot_view();
        let (state, deployment) = self.current_state();
        let request = match (boot.install_requested, boot.confirm_requested) {
            (Some(d), _) => format!("install of {} requested", hex::encode(d)),
            (None, true) => "confirm requested".to_owned(),
            (None, false) => "no request".to_owned(),
        };
        self.report(
            running,
            state,
            deployment,
            format!(
                "agent state {recovery}; the flash says: boot phase {}, {request}, last outcome {}, running version {}",
                boot.phase, boot.outcome, running.version
            ),
        )
    }

    /// One full cycle (see the module documentation).
    pub async fn run_once(&mut self) -> Result<CycleOutcome, AgentError> {
        let boot = self.slots.reload()?;
        if matches!(boot.phase, Phase::Swapping | Phase::Reverting) {
            return Err(AgentError::Busy(boot.phase));
        }
        let running = self.running()?;
        tracing::debug!(phase = %boot.phase, version = running.version, "cycle");
        if let Some(recovery) = self.recovery.take() {
            if let Err(e) = self.report_recovery(&running, &recovery) {
                self.recovery = Some(recovery);
                return Err(e);
            }
        }
        let (offer, mut offline) = match self.check_in(&running).await {
            Ok(offer) => (offer, None),
            Err(e) => {
                tracing::warn!(error = %chain(&e), "check-in failed; only local steps run");
                (None, Some(e))
            }
        };
        // `Adopt` and `Forget` change the record and decide again; each settles in one round.
        for _ in 0..3 {
            let boot = self.boot_view();
            let step = {
                let offered = match (&offline, &offer) {
                    (Some(_), _) => Offer::Unreachable,
                    (None, None) => Offer::Nothing,
                    (None, Some(o)) => Offer::Release {
                        release: &o.release,
                        refused: self.state.is_rejected(&o.release),
                    },
                };
                decide::decide(decide::phase(&boot, self.state.update.as_ref()), offered)
            };
            tracing::debug!(?step, "decided");
            match step {
                Step::Busy => return Err(AgentError::Busy(boot.phase)),
                Step::HealthCheck => return self.after_trial_boot(&running).await,
                Step::AwaitReboot => {
                    tracing::info!("the trial image is confirmed; final at the next boot");
                    return Ok(CycleOutcome::AwaitingReboot);
                }
                Step::Install => match self.state.update.clone() {
                    Some(rec) => return self.try_install(&running, rec).await,
                    None => return Err(AgentError::Undecided),
                },
                Step::Adopt => self.adopt(&running, offer.as_ref()).await?,
                Step::Conclude => match self.state.update.clone() {
                    Some(rec) => return self.after_final_boot(&running, rec, boot.outcome).await,
                    None => return Err(AgentError::Undecided),
                },
                Step::Forget => {
                    tracing::warn!("the install request was withdrawn outside the agent");
                    self.state.update = None;
                    self.save()?;
                }
                Step::Offline => return Err(offline.take().unwrap_or(AgentError::Undecided)),
                Step::UpToDate => {
                    if self.state.update.take().is_some() {
                        tracing::info!(
                            "the server no longer offers the interrupted download: dropped"
                        );
                        self.save()?;
                    }
                    return Ok(CycleOutcome::UpToDate);
                }
                Step::AlreadyRefused => {
                    let release = offer.map(|o| o.release).unwrap_or_default();
                    tracing::info!(release, "offered release was refused before: ignored");
                    return Ok(CycleOutcome::AlreadyRefused(release));
                }
                Step::Download { resume } => match offer {
                    Some(o) => return self.stage(&running, o, resume).await,
                    None => return Err(AgentError::Undecided),
                },
            }
        }
        Err(AgentError::Undecided)
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
