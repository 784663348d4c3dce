//! The boot decision: verify, install, trial, revert.
//!
//! # State machine
//!
//! One call of [`Bootloader::boot`] reads the state from flash (nothing is kept in RAM across
//! boots) and runs this machine until it can jump or must stop:
//!
//! | phase | what the bootloader does | next phase |
//! |---|---|---|
//! | Idle | verify the active bundle; raise the stored minimums to its counters if lower; jump | — |
//! | Pending | verify the staged bundle (trust root → key set → manifest → policy with the stored minimums → payload digest); refuse it if invalid or rejected before, **without touching the active slot** | Swapping, or Idle (outcome `StagedInvalid` / `AlreadyRejected`) |
//! | Swapping | run / resume the install swap, recording each half-step | Trial (budget = `trial_attempts`) |
//! | Trial, boots left > 0 | verify the active (new) bundle; record one boot used; jump | — (the app confirms → Idle) |
//! | Trial, none left or image invalid | start the revert | Reverting (outcome `Reverted` / `TrialInvalid`) |
//! | Reverting | run / resume the revert swap | Idle, image marked rejected |
//!
//! Every jump follows a full verification of the bytes it jumps into in the same boot; every
//! other path ends in [`Error`] (the safe failure state). The stored minimum security counter
//! and key-set version are raised only by a confirm (or on an Idle boot, whose image is
//! confirmed by definition), never by installing.
//!
//! # Swap (swap-offset)
//!
//! The new bundle sits at staging sectors `S[1..=n]`, the old one at active sectors `A[0..m)`.
//! With `k = max(n, m)` (at most the slot size) the install runs `2k` half-steps, each
//! followed by a progress record:
//!
//! | half-step | erase | copy | the source stays intact until |
//! |---|---|---|---|
//! | `2i` | `S[i]` (spare, or new sector `i-1` already installed) | `A[i] → S[i]` (old sector `i`) | half-step `2i+1` |
//! | `2i+1` | `A[i]` | `S[i+1] → A[i]` (new sector `i`) | half-step `2i+2` |
//!
//! After it the active slot holds the new bundle and `S[0..m)` the old one (no offset). The
//! revert runs the mirror image, `i` from `k-1` down to 0:
//!
//! | half-step | erase | copy |
//! |---|---|---|
//! | first | `S[i+1]` | `A[i] → S[i+1]` (new sector `i` back to its staged place) |
//! | second | `A[i]` | `S[i] → A[i]` (old sector `i` back) |
//!
//! A power cut inside a half-step repeats that half-step (its source is intact, its
//! destination is erased first). Each of `A[0..k)` and `S[0..k)` is erased **once** per update
//! and each of `A[0..k)` and `S[1..=k]` once per revert; sectors beyond `k` are not touched.
//! Chunks that read as erased are not written.

use embedded_storage::nor_flash::{NorFlashError, NorFlashErrorKind};
use sigil_manifests::bundle::{BundleHeader, HEADER_LEN};
use sigil_manifests::{DevicePolicy, ProductId, TrustRoot};

use crate::error::Error;
use crate::layout::{Layout, CHUNK};
use crate::record::{BootState, ImageId, Outcome, Phase};
use crate::store::{self, Loaded};
use crate::verify::{verify_at, BootFlash, ImageInfo};

/// What the device accepts: the compiled-in trust root and the device policy.
#[derive(Debug, Clone, Copy)]
pub struct BootConfig<'a> {
    /// The trust root provisioned into the bootloader.
    pub root: &'a TrustRoot,
    /// This device's product id.
    pub product: ProductId<'a>,
    /// The component the slot holds, if manifests must name it.
    pub component: Option<&'a str>,
    /// This bootloader's version, for manifests that require a minimum.
    pub bootloader_version: Option<u32>,
    /// Boots a new image gets to be confirmed before it is reverted (at least 1).
    pub trial_attempts: u8,
}

impl<'a> BootConfig<'a> {
    /// A configuration with no component check, no bootloader version and 3 trial boots.
    pub fn new(root: &'a TrustRoot, product: ProductId<'a>) -> Self {
        BootConfig {
            root,
            product,
            component: None,
            bootloader_version: None,
            trial_attempts: 3,
        }
    }

    /// Requires manifests to target `component`.
    pub fn with_component(mut self, component: &'a str) -> Self {
        self.component = Some(component);
        self
    }

    /// Declares this bootloader's version.
    pub fn with_bootloader_version(mut self, version: u32) -> Self {
        self.bootloader_version = Some(version);
        self
    }

    /// Sets the trial budget (0 is raised to 1: an image must get one chance to confirm).
    pub fn with_trial_attempts(mut self, attempts: u8) -> Self {
        self.trial_attempts = attempts.max(1);
        self
    }

    /// The device policy for `state`: product, component, bootloader version, slot size and the
    /// stored minimum security counter and key-set version. The agent uses the same policy to
    /// check a bundle before it marks it pending.
    pub fn policy(&self, layout: &Layout, state: &BootState) -> DevicePolicy<'a> {
        let mut policy = DevicePolicy::device(self.product, u64::from(layout.max_bundle_len()))
            .with_min_security_counter(state.min_security_counter)
            .with_min_key_set_version(state.min_key_set_version);
        if let Some(component) = self.component {
            policy = policy.with_component(component);
        }
        if let Some(version) = self.bootloader_version {
            policy = policy.with_bootloader_version(version);
        }
        policy
    }
}

/// The boot decision: a verified image to jump to. Only [`Bootloader::boot`] makes one, right
/// after verifying the bytes it describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedImage {
    entry: u32,
    size: u64,
    security_counter: u32,
    key_set_version: u32,
    id: ImageId,
    trial: bool,
    attempts_left: u8,
}

impl VerifiedImage {
    /// Flash offset of the verified payload (the executable image): `active + payload_offset`.
    /// The board port adds its flash base address and jumps. The payload is aligned within
    /// the bundle to the manifest's `payload_alignment`; a device whose CPU needs an aligned
    /// vector table (Cortex-M: 128 bytes or more) declares at least that alignment and places
    /// the active slot on such a boundary.
    pub fn payload_offset(&self) -> u32 {
        self.entry
    }

    /// Length of the verified payload.
    pub fn payload_size(&self) -> u64 {
        self.size
    }

    /// Security counter of the image.
    pub fn security_counter(&self) -> u32 {
        self.security_counter
    }

    /// Key-set version the image was signed under.
    pub fn key_set_version(&self) -> u32 {
        self.key_set_version
    }

    /// Identity of the image (first 16 bytes of its payload digest).
    pub fn image_id(&self) -> ImageId {
        self.id
    }

    /// Whether the image runs on trial and must be confirmed.
    pub fn is_trial(&self) -> bool {
        self.trial
    }

    /// On trial: boots left after this one before the bootloader reverts.
    pub fn attempts_left(&self) -> u8 {
        self.attempts_left
    }
}

/// Which way a swap moves the images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Install,
    Revert,
}

/// The portable boot logic over one flash device.
#[derive(Debug)]
pub struct Bootloader<'a, F> {
    flash: F,
    layout: Layout,
    config: BootConfig<'a>,
}

/// Most phase transitions one boot can make (Pending → Swapping → Trial → Reverting → Idle).
const MAX_TRANSITIONS: usize = 8;

impl<'a, F: BootFlash> Bootloader<'a, F> {
    /// Checks `layout` against the flash device.
    pub fn new(flash: F, layout: Layout, config: BootConfig<'a>) -> Result<Self, Error> {
        layout.check_flash::<F>(flash.capacity())?;
        Ok(Bootloader {
            flash,
            layout,
            config,
        })
    }

    /// The flash device.
    pub fn flash(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Gives the flash device back.
    pub fn into_flash(self) -> F {
        self.flash
    }

    /// Decides what to boot: `Ok` only with a verified image; `Err` means stay in the safe
    /// failure state. `envelope_buf` holds a bundle's envelope while it is verified
    /// (`sigil_manifests::MAX_ENVELOPE_LEN` bytes accept every bundle).
    pub fn boot(&mut self, envelope_buf: &mut [u8]) -> Result<VerifiedImage, Error> {
        let mut loaded = store::load(&mut self.flash, &self.layout)?;
        log_info!("boot: phase {}", loaded.state.phase);
        for _ in 0..MAX_TRANSITIONS {
            let state = loaded.state;
            match state.phase {
                Phase::Idle => return self.boot_idle(&mut loaded, envelope_buf),
                Phase::Pending => self.start_update(&mut loaded, envelope_buf)?,
                Phase::Swapping => {
                    self.swap(&mut loaded, Direction::Install)?;
                    let next = BootState {
                        attempts_left: self.config.trial_attempts.max(1),
                        ..loaded.state.with_phase(Phase::Trial)
                    };
                    self.commit(&mut loaded, next)?;
                }
                Phase::Trial => {
                    if let Some(image) = self.boot_trial(&mut loaded, envelope_buf)? {
                        return Ok(image);
                    }
                }
                Phase::Reverting => {
                    self.swap(&mut loaded, Direction::Revert)?;
                    let next = BootState {
                        rejected: Some(state.trial_image),
                        attempts_left: 0,
                        ..loaded.state.with_phase(Phase::Idle)
                    };
                    self.commit(&mut loaded, next)?;
                }
            }
        }
        Err(Error::Corrupt)
    }

    fn commit(&mut self, loaded: &mut Loaded, next: BootState) -> Result<(), Error> {
        loaded.commit(&mut self.flash, &self.layout, next)
    }

    /// Verifies the bundle at `base` with the policy of `state`.
    fn verify(
        &mut self,
        base: u32,
        state: &BootState,
        envelope_buf: &mut [u8],
    ) -> Result<Result<ImageInfo, sigil_manifests::Error>, Error> {
        let policy = self.config.policy(&self.layout, state);
        if F::MAPPED {
            let region = self
                .flash
                .mapped(base, self.layout.max_bundle_len())
                .ok_or(Error::Flash(NorFlashErrorKind::OutOfBounds))?;
            // The region is the slot's bundle space: nothing outside it is read.
            let verified = sigil_manifests::verify_in_place(self.config.root, policy, region);
            return Ok(verified.map(|v| ImageInfo::of(&v)));
        }
        let verified = verify_at(
            &mut self.flash,
            &self.layout,
            base,
            self.config.root,
            policy,
            envelope_buf,
        )?;
        Ok(verified.map(|v| ImageInfo::of(&v)))
    }

    fn image(
        &self,
        info: &ImageInfo,
        trial: bool,
        attempts_left: u8,
    ) -> Result<VerifiedImage, Error> {
        let entry = u32::try_from(info.payload_offset)
            .ok()
            .and_then(|o| o.checked_add(self.layout.active_offset()))
            .ok_or(Error::Corrupt)?;
        Ok(VerifiedImage {
            entry,
            size: info.payload_size,
            security_counter: info.security_counter,
            key_set_version: info.key_set_version,
            id: info.id,
            trial,
            attempts_left,
        })
    }

    fn boot_idle(
        &mut self,
        loaded: &mut Loaded,
        envelope_buf: &mut [u8],
    ) -> Result<VerifiedImage, Error> {
        let state = loaded.state;
        let info = match self.verify(self.layout.active_offset(), &state, envelope_buf)? {
            Ok(info) => info,
            Err(e) => {
                log_warn!("active slot does not verify: {}", e);
                return Err(Error::NoBootableImage(e));
            }
        };
        // An image that boots in Idle is confirmed: its counters are the device's floor.
        if info.security_counter > state.min_security_counter
            || info.key_set_version > state.min_key_set_version
        {
            let next = BootState {
                min_security_counter: state.min_security_counter.max(info.security_counter),
                min_key_set_version: state.min_key_set_version.max(info.key_set_version),
                ..state
            };
            self.commit(loaded, next)?;
        }
        self.image(&info, false, 0)
    }

    /// Pending: verify the staged bundle and either start the swap or refuse it.
    fn start_update(&mut self, loaded: &mut Loaded, envelope_buf: &mut [u8]) -> Result<(), Error> {
        let state = loaded.state;
        let staged = match self.verify(self.layout.staged_bundle_offset(), &state, envelope_buf)? {
            Ok(info) => info,
            Err(e) => {
                log_warn!("staged bundle refused: {}", e);
                let next = BootState {
                    outcome: Outcome::StagedInvalid,
                    ..state.with_phase(Phase::Idle)
                };
                return self.commit(loaded, next);
            }
        };
        if state.rejected == Some(staged.id) {
            log_warn!("staged bundle was rejected before: not retried");
            let next = BootState {
                outcome: Outcome::AlreadyRejected,
                ..state.with_phase(Phase::Idle)
            };
            return self.commit(loaded, next);
        }
        let old = self.active_extent()?;
        let sectors = self
            .layout
            .sectors_for(staged.total_len)
            .max(old)
            .min(self.layout.slot_sectors());
        // The swap, the trial boots and the confirm must all fit in the log before anything
        // moves: 2k progress records, the trial budget, the transitions and the confirm.
        let needed = sectors
            .saturating_mul(2)
            .saturating_add(u32::from(self.config.trial_attempts))
            .saturating_add(4);
        if state.sequence.checked_add(needed).is_none() {
            let next = BootState {
                outcome: Outcome::StagedInvalid,
                ..state.with_phase(Phase::Idle)
            };
            return self.commit(loaded, next);
        }
        log_info!(
            "installing: {} sectors, counter {}",
            sectors,
            staged.security_counter
        );
        let next = BootState {
            swap_progress: 0,
            swap_sectors: sectors,
            trial_security_counter: staged.security_counter,
            trial_key_set_version: staged.key_set_version,
            trial_image: staged.id,
            attempts_left: 0,
            ..state.with_phase(Phase::Swapping)
        };
        self.commit(loaded, next)
    }

    /// Sectors the active bundle occupies, for sizing the swap only.
    ///
    /// Only as many sectors as the two bundles occupy move. The length comes from the active
    /// bundle's header alone (step 1 of the format), which saves hashing the old image on every
    /// update: if the active bundle is valid, step 7 has cross-checked that header against its
    /// signed manifest on every boot, so the length is exact; if it is not valid, nothing
    /// bootable can be lost. A header that does not parse preserves the whole slot.
    fn active_extent(&mut self) -> Result<u32, Error> {
        let mut head = [0u8; HEADER_LEN];
        self.flash
            .read(self.layout.active_offset(), &mut head)
            .map_err(|e| Error::Flash(e.kind()))?;
        let len = BundleHeader::parse(&head).and_then(|h| h.total_len());
        Ok(match len {
            Ok(len) if len <= u64::from(self.layout.max_bundle_len()) => {
                self.layout.sectors_for(len)
            }
            _ => self.layout.slot_sectors(),
        })
    }

    /// Trial: `Some(image)` to jump to, or `None` after starting the revert.
    fn boot_trial(
        &mut self,
        loaded: &mut Loaded,
        envelope_buf: &mut [u8],
    ) -> Result<Option<VerifiedImage>, Error> {
        let state = loaded.state;
        let outcome = if state.attempts_left == 0 {
            log_warn!("trial image not confirmed in time: reverting");
            Outcome::Reverted
        } else {
            match self.verify(self.layout.active_offset(), &state, envelope_buf)? {
                Ok(info) if info.id == state.trial_image => {
                    let left = state.attempts_left.saturating_sub(1);
                    self.commit(
                        loaded,
                        BootState {
                            attempts_left: left,
                            ..state
                        },
                    )?;
                    return self.image(&info, true, left).map(Some);
                }
                _ => {
                    log_warn!("trial image does not verify: reverting");
                    Outcome::TrialInvalid
                }
            }
        };
        let next = BootState {
            swap_progress: 0,
            attempts_left: 0,
            outcome,
            ..state.with_phase(Phase::Reverting)
        };
        self.commit(loaded, next)?;
        Ok(None)
    }

    /// Runs or resumes a swap from the recorded progress.
    fn swap(&mut self, loaded: &mut Loaded, direction: Direction) -> Result<(), Error> {
        let total = loaded
            .state
            .swap_sectors
            .checked_mul(2)
            .ok_or(Error::Corrupt)?;
        let mut progress = loaded.state.swap_progress;
        while progress < total {
            self.half_step(direction, loaded.state.swap_sectors, progress)?;
            progress = progress.saturating_add(1);
            // The phase change that follows the last half-step records its completion.
            if progress < total {
                let state = loaded.state;
                self.commit(
                    loaded,
                    BootState {
                        swap_progress: progress,
                        ..state
                    },
                )?;
            }
        }
        Ok(())
    }

    fn half_step(&mut self, direction: Direction, sectors: u32, step: u32) -> Result<(), Error> {
        let l = self.layout;
        let pair = step / 2;
        let first_half = step.is_multiple_of(2);
        let (erase, src, dst) = match direction {
            Direction::Install => {
                let i = pair;
                if first_half {
                    (l.staging_sector(i), l.active_sector(i), l.staging_sector(i))
                } else {
                    (
                        l.active_sector(i),
                        l.staging_sector(i.saturating_add(1)),
                        l.active_sector(i),
                    )
                }
            }
            Direction::Revert => {
                let i = sectors
                    .checked_sub(1)
                    .and_then(|k| k.checked_sub(pair))
                    .ok_or(Error::Corrupt)?;
                if first_half {
                    let up = l.staging_sector(i.saturating_add(1));
                    (up, l.active_sector(i), up)
                } else {
                    (l.active_sector(i), l.staging_sector(i), l.active_sector(i))
                }
            }
        };
        let (erase, src, dst) = match (erase, src, dst) {
            (Some(e), Some(s), Some(d)) => (e, s, d),
            _ => return Err(Error::Corrupt),
        };
        let erase_end = erase.checked_add(l.sector_size()).ok_or(Error::Corrupt)?;
        self.flash
            .erase(erase, erase_end)
            .map_err(|e| Error::Flash(e.kind()))?;
        self.copy_sector(src, dst)
    }

    fn copy_sector(&mut self, src: u32, dst: u32) -> Result<(), Error> {
        let chunk = self.layout.chunk();
        let chunk_len = usize::try_from(chunk).map_err(|_| Error::Corrupt)?;
        let erased = self.layout.geometry().erased;
        let mut storage = [0u8; CHUNK as usize];
        let buf = storage.get_mut(..chunk_len).ok_or(Error::Corrupt)?;
        let mut off = 0u32;
        while off < self.layout.sector_size() {
            let from = src.checked_add(off).ok_or(Error::Corrupt)?;
            let to = dst.checked_add(off).ok_or(Error::Corrupt)?;
            self.flash
                .read(from, buf)
                .map_err(|e| Error::Flash(e.kind()))?;
            if buf.iter().any(|&b| b != erased) {
                self.flash
                    .write(to, buf)
                    .map_err(|e| Error::Flash(e.kind()))?;
            }
            off = off.checked_add(chunk).ok_or(Error::Corrupt)?;
        }
        Ok(())
    }
}
