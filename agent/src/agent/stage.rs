//! Staging: download the offered release into the staging slot (verified while it streams),
//! verify it again from the flash, request its install; and adopting an install request the
//! agent has no record of.
//!
//! | download ends with | the release | report | record |
//! |---|---|---|---|
//! | a verified bundle, verified again from the slot | install requested | `staged` | `Staged` |
//! | [`DownloadError::Rejected`] (a property of the signed release, or bytes that are the offered release and do not verify) | refused for good | `failed` | cleared |
//! | the slot failing, or the staged bundle not verifying from the flash | not refused | `failed` | cleared |
//! | bounds run out, deadline, URL refused, 4xx | not refused | `download_failed` | `Downloading`, checkpoint kept (0 after a discard) |

use sha2::{Digest, Sha256};
use sigil_manifests::VERIFY_BUFFER_LEN;

use super::{chain, Agent, AgentError, CycleOutcome, Record, Running};
use crate::client::UpdateOffer;
use crate::download::{self, DownloadError, DownloadRequest, Event, LiveProgress};
use crate::keyrecord;
use crate::slots::SlotError;
use crate::state::{ReportState, UpdatePhase, UpdateRecord};

impl Agent {
    /// Downloads, verifies and stages `offer`, then asks for permission to install it.
    pub(super) async fn stage(
        &mut self,
        running: &Running,
        offer: UpdateOffer,
        resume: bool,
    ) -> Result<CycleOutcome, AgentError> {
        let (checkpoint, interrupted, version) = match &self.state.update {
            Some(UpdateRecord {
                phase:
                    UpdatePhase::Downloading {
                        checkpoint,
                        interrupted,
                    },
                version,
                ..
            }) if resume => (*checkpoint, *interrupted, version.clone()),
            _ => (0, 0, None),
        };
        let dep = Some(offer.deployment);
        let what = if checkpoint > 0 {
            "resuming"
        } else {
            "downloading"
        };
        self.settle(
            running,
            Record::Set(UpdateRecord {
                deployment: dep,
                release: offer.release.clone(),
                url: offer.download_url.clone(),
                version,
                digest: None,
                boot_sequence: None,
                phase: UpdatePhase::Downloading {
                    checkpoint,
                    interrupted,
                },
            }),
            ReportState::Downloading,
            dep,
            format!(
                "{what} release {} (claimed version {}, {} bytes)",
                offer.release, offer.version, offer.size
            ),
        )
        .await?;

        let inputs = self.policy_inputs(running);
        let policy = inputs.policy()?;
        let live = LiveProgress {
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
        let request = DownloadRequest {
            root: &inputs.root,
            policy,
            offer: &offer,
            resume_from: checkpoint,
            live: Some(&live),
        };
        let result =
            download::download(slots.as_mut(), client, &config.download, request, &mut on).await;
        let downloaded = match result {
            Ok(d) => d,
            Err(e) => return self.download_failed(running, &offer, e).await,
        };
        tracing::info!(
            total = downloaded.total_len,
            fetched = downloaded.fetched,
            resumed_from = downloaded.resumed_from,
            requests = downloaded.requests,
            discarded = downloaded.discarded,
            "bundle downloaded and verified while streaming"
        );

        // Verify again, from the flash: what the bootloader will read.
        let mut buf = vec![0u8; VERIFY_BUFFER_LEN];
        let (staged_version, digest, encrypted, bundle_len) = match self.slots.verify_staged(
            &inputs.root,
            policy,
            &mut buf,
        ) {
            Ok(v) if v.root_version() < self.root_version() => {
                let reason = format!(
                        "the bundle is signed under trust root {}, older than root {} of the staged root chain",
                        v.root_version(),
                        self.root_version()
                    );
                return self.fail(running, dep, reason).await;
            }
            Ok(v) => (
                v.manifest().version.to_string(),
                v.manifest_digest(),
                v.manifest().payload_format.encryption().is_some(),
                v.total_len(),
            ),
            Err(e) => {
                let reason = format!(
                    "the staged bundle does not verify from flash: {}",
                    chain(&e)
                );
                return self.fail(running, dep, reason).await;
            }
        };
        // Encrypted release: its key record (steps D1–D2 with the device's public key), staged
        // and synced for the bootloader before the install is requested (the order
        // `keyrecord` documents for power cuts); a plain release clears any.
        let mut placement = keyrecord::placement(
            self.config.flash.key_record,
            self.slots.as_mut(),
            &self.config.state_dir,
        );
        if encrypted {
            let placed = keyrecord::check(
                offer.key_record.as_deref(),
                self.config.device.encryption_key.as_ref(),
                &digest,
            )
            .and_then(|record| placement.place(bundle_len, &record));
            drop(placement);
            if let Err(e) = placed {
                let reason = format!("encrypted release {}: {}", offer.release, chain(&e));
                return self.fail(running, dep, reason).await;
            }
        } else {
            let cleared = placement.clear();
            drop(placement);
            if let Err(e) = cleared {
                let reason = format!(
                    "cannot clear the key record of an earlier stage: {}",
                    chain(&e)
                );
                return self.fail(running, dep, reason).await;
            }
        }
        self.slots.request_install(&digest)?;
        let rec = UpdateRecord {
            deployment: dep,
            release: offer.release.clone(),
            url: offer.download_url.clone(),
            version: Some(staged_version.clone()),
            digest: Some(hex::encode(digest)),
            boot_sequence: Some(self.slots.state().sequence),
            phase: UpdatePhase::Staged { deferrals: 0 },
        };
        self.settle(
            running,
            Record::Set(rec.clone()),
            ReportState::Staged,
            dep,
            format!("version {staged_version} verified in the staging slot; install requested"),
        )
        .await?;
        self.try_install(running, rec).await
    }

    /// Ends the update with an install failure (`failed`), the release not refused.
    pub(super) async fn fail(
        &mut self,
        running: &Running,
        dep: Option<i64>,
        reason: String,
    ) -> Result<CycleOutcome, AgentError> {
        tracing::error!(reason, "update failed");
        self.settle(
            running,
            Record::Clear,
            ReportState::Failed,
            dep,
            reason.clone(),
        )
        .await?;
        Ok(CycleOutcome::Failed(reason))
    }

    /// A download that did not stage the bundle: refused for good, an install failure, or a
    /// download failure the next cycle retries (the table in the module documentation).
    async fn download_failed(
        &mut self,
        running: &Running,
        offer: &UpdateOffer,
        e: DownloadError,
    ) -> Result<CycleOutcome, AgentError> {
        let dep = Some(offer.deployment);
        let reason = chain(&e);
        if e.refuses_release() {
            self.state.reject(&offer.release);
            return self.fail(running, dep, reason).await;
        }
        if let DownloadError::Slot(_) = e {
            return self.fail(running, dep, reason).await;
        }
        let mut failures = 1;
        if let Some(UpdateRecord {
            phase: UpdatePhase::Downloading { interrupted, .. },
            ..
        }) = self.state.update.as_mut()
        {
            *interrupted = interrupted.saturating_add(1);
            failures = *interrupted;
        }
        tracing::warn!(
            reason,
            failures,
            "download failed; the next cycle tries again"
        );
        self.settle(
            running,
            Record::Keep,
            ReportState::DownloadFailed,
            dep,
            format!(
                "{reason}; the release is not refused, the next cycle tries again \
                 (failed downloads in a row: {failures})"
            ),
        )
        .await?;
        Ok(CycleOutcome::DownloadFailed(reason))
    }

    /// An install request the agent has no record of (its state was lost, or is an older
    /// generation): kept only if the staged bundle verifies now, under today's policy, as the
    /// requested image; then the record is rebuilt from the flash (the release id is the
    /// staged bundle's SHA-256, the deployment the offer's if it is the same release).
    /// Otherwise the request is withdrawn, so that nothing the agent did not check is
    /// installed.
    pub(super) async fn adopt(
        &mut self,
        running: &Running,
        offer: Option<&UpdateOffer>,
    ) -> Result<(), AgentError> {
        let Some(requested) = self.slots.install_requested() else {
            return Ok(());
        };
        let inputs = self.policy_inputs(running);
        let policy = inputs.policy()?;
        let mut buf = vec![0u8; VERIFY_BUFFER_LEN];
        let staged = match self.slots.verify_staged(&inputs.root, policy, &mut buf) {
            Ok(v) if v.manifest_digest() == requested => {
                Ok((v.manifest().version.to_string(), v.total_len()))
            }
            Ok(_) => Err("the staged bundle is not the requested image".to_owned()),
            Err(e) => Err(format!("the staged bundle does not verify ({})", chain(&e))),
        };
        let (version, total_len) = match staged {
            Ok(s) => s,
            Err(why) => {
                tracing::warn!(
                    why,
                    "install requested without an agent record: withdrawing it"
                );
                self.slots.cancel()?;
                self.state.update = None;
                self.save()?;
                return Ok(());
            }
        };
        let release = self.staged_release_id(total_len)?;
        let deployment = offer
            .filter(|o| o.release.eq_ignore_ascii_case(&release))
            .map(|o| o.deployment);
        let rec = UpdateRecord {
            deployment,
            url: offer.map(|o| o.download_url.clone()).unwrap_or_default(),
            release,
            version: Some(version.clone()),
            digest: Some(hex::encode(requested)),
            boot_sequence: Some(self.slots.state().sequence),
            phase: UpdatePhase::Staged { deferrals: 0 },
        };
        tracing::warn!(
            release = rec.release,
            version,
            "install requested without an agent record: the staged bundle verifies, adopted"
        );
        self.settle(
            running,
            Record::Set(rec),
            ReportState::Staged,
            deployment,
            format!(
                "version {version} found staged and requested without an agent record; verified again and kept"
            ),
        )
        .await
    }

    /// The SHA-256 (hex) of the staged bundle's `len` bytes: its release id.
    fn staged_release_id(&mut self, len: u64) -> Result<String, AgentError> {
        let mut hasher = Sha256::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut at = 0u64;
        while at < len {
            let n = usize::try_from(len - at)
                .unwrap_or(chunk.len())
                .min(chunk.len());
            let part = chunk.get_mut(..n).unwrap_or(&mut []);
            let offset = u32::try_from(at)
                .map_err(|_| SlotError::Boot(sigil_bootloader::Error::OutOfBounds))?;
            self.slots.read_staged(offset, part)?;
            hasher.update(&*part);
            at = at.saturating_add(n as u64);
        }
        Ok(hex::encode(hasher.finalize()))
    }
}
