//! The boot decision: the protected state and the newest request, as a table.
//!
//! # State and request table
//!
//! One call of [`Bootloader::boot`] reads the protected state and the newest request from
//! flash (nothing is kept in RAM across boots), rewrites a newest protected record that has
//! lost one of its two copies, then runs this table until it can jump or must stop. The
//! request is checked against the protected state **as read at the start of the boot**, and
//! only in the row that names it; in every other row it is stale and ignored. Before the jump
//! the request sector is erased (if anything is in it) and the board locks the protected
//! state ([`crate::StateLock`]); a failed lock means no jump.
//!
//! | protected phase | request | what the bootloader does | transition | next |
//! |---|---|---|---|---|
//! | Idle | `Install(D)` | verify the active bundle and raise the floors to its counters if lower; verify the staged bundle against the floors (trust root → key set → manifest → policy → payload digest); refuse it if invalid, if its manifest digest is not `D`, or if `D` was rejected before, **without touching the active slot** | `start_install`, or `refuse_install` (outcome `StagedInvalid` / `StagedMismatch` / `AlreadyRejected`) | Swapping, or Idle |
//! | Idle | none, or any other | verify the active bundle against the floors; raise the floors to its counters if lower; jump | `raise_floors` (written only if it changes something, or on the first boot) | — |
//! | Swapping | any (stale) | run / resume the install swap, recording each half-step | `swap_progressed`, then `enter_trial` (budget = `trial_attempts`) | Trial |
//! | Trial | `Confirm(D)`, `D` = trial image | verify the active bundle, check its digest is the trial image's; jump, not on trial | `confirm_trial`: floors rise to the image's counters and the root floor to the root it verified under (root rotation takes effect here), outcome `Confirmed` | — (Idle) |
//! | Trial, boots left > 0 | none, or any other | verify the active bundle, check its digest is the trial image's; record one boot used; jump on trial | `use_trial_boot` | — |
//! | Trial, no boots left, or the image does not verify | none, or any other | start the revert | `start_revert` (outcome `Reverted` / `TrialInvalid`) | Reverting |
//! | Reverting | any (stale) | run / resume the revert swap | `swap_progressed`, then `finish_revert`: trial image added to the rejected list | Idle |
//!
//! What a forged, stale or replayed request can do, row by row: `Install(D)` in Idle can at
//! worst install a staged image that passes the full verification against the protected
//! floors and is not rejected; a `Confirm(D)` counts only for the image on trial, which the
//! bootloader itself installed and verifies again; nothing else is read from a request. The
//! floors change only in `raise_floors` (to the counters of a verified image), an image is
//! rejected only by `finish_revert`, and the sequence number advances only by the bootloader's
//! own writes, a bounded number per boot.
//!
//! Every jump follows a full verification of the bytes it jumps into in the same boot; every
//! other path ends in [`Error`] (the safe failure state). The swap itself is in
//! [`crate::swap`].

use embedded_storage::nor_flash::NorFlashErrorKind;
use sigil_manifests::{DevicePolicy, ProductId, TrustRoot};

use crate::error::Error;
use crate::layout::Layout;
use crate::lock::StateLock;
use crate::record::{BootState, Floors, ImageDigest, Outcome, Phase};
use crate::request::{self, Request};
use crate::store::{self, Loaded};
use crate::swap::{self, Direction};
use crate::verify::{verify_at, BootFlash, ImageInfo};

/// What the device accepts: the compiled-in trust root and the device policy.
#[derive(Debug, Clone, Copy)]
pub struct BootConfig<'a> {
    /// The trust root provisioned into the bootloader.
    pub root: &'a TrustRoot,
    /// This device's product id.
    pub product: ProductId<'a>,
    /// The component the active slot holds ("app", "radio", …): every manifest must name it.
    pub component: &'a str,
    /// This bootloader's version, for manifests that require a minimum.
    pub bootloader_version: Option<u32>,
    /// Boots a new image gets to be confirmed before it is reverted (at least 1).
    pub trial_attempts: u8,
    /// The device's X25519 key pair from the bootloader's protected storage (feature
    /// `encryption`): with it the device installs encrypted releases (FORMAT.md §9) and
    /// encrypts every image that leaves the active slot; without it encrypted releases are
    /// refused (step 7k).
    #[cfg(feature = "encryption")]
    pub device_key: Option<&'a crate::crypt::DeviceSecret>,
}

impl<'a> BootConfig<'a> {
    /// A configuration for the slot holding `component` of `product`, with no bootloader
    /// version and 3 trial boots.
    pub fn new(root: &'a TrustRoot, product: ProductId<'a>, component: &'a str) -> Self {
        BootConfig {
            root,
            product,
            component,
            bootloader_version: None,
            trial_attempts: 3,
            #[cfg(feature = "encryption")]
            device_key: None,
        }
    }

    /// Gives the device's X25519 key pair (feature `encryption`): the board reads it from the
    /// bootloader's protected storage.
    #[cfg(feature = "encryption")]
    pub fn with_device_key(mut self, key: &'a crate::crypt::DeviceSecret) -> Self {
        self.device_key = Some(key);
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
    /// stored floors. The agent uses the same policy to check a bundle before it requests the
    /// install.
    pub fn policy(&self, layout: &Layout, state: &BootState) -> DevicePolicy<'a> {
        self.policy_at(layout, state.floors())
    }

    /// The device policy at `floors`.
    pub fn policy_at(&self, layout: &Layout, floors: Floors) -> DevicePolicy<'a> {
        let policy = DevicePolicy::device(self.product, u64::from(layout.max_bundle_len()))
            .with_component(self.component)
            .with_min_security_counter(floors.security_counter)
            .with_min_key_set_version(floors.key_set_version);
        // Steps R1-R3 start at the adopted root.
        let policy = match floors.root {
            Some(root) => policy.with_root_floor(root),
            None => policy,
        };
        match self.bootloader_version {
            Some(version) => policy.with_bootloader_version(version),
            None => policy,
        }
    }
}

/// The boot decision: a verified image to jump to. Only [`Bootloader::boot`] makes one, right
/// after verifying the bytes it describes and locking the protected state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedImage {
    entry: u32,
    size: u64,
    security_counter: u32,
    key_set_version: u32,
    digest: ImageDigest,
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

    /// Identity of the image: its manifest digest.
    pub fn digest(&self) -> ImageDigest {
        self.digest
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

/// The portable boot logic over one flash device.
#[derive(Debug)]
pub struct Bootloader<'a, F> {
    flash: F,
    layout: Layout,
    config: BootConfig<'a>,
}

/// Most rows one boot runs (Idle+Install → Swapping → Trial, or Trial → Reverting → Idle).
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

    /// Decides what to boot: `Ok` only with a verified image, after the request sector has
    /// been consumed and `lock` has locked the protected state; `Err` means stay in the safe
    /// failure state. `envelope_buf` holds a bundle's envelope while it is verified, and a
    /// root chain one update at a time (`sigil_manifests::MIN_VERIFY_BUFFER_LEN` bytes accept
    /// every bundle, `MAX_ENVELOPE_LEN` every bundle without a root chain; empty for mapped
    /// flash).
    pub fn boot<L: StateLock>(
        &mut self,
        envelope_buf: &mut [u8],
        lock: &mut L,
    ) -> Result<VerifiedImage, Error> {
        let mut loaded = store::load(&mut self.flash, &self.layout)?;
        loaded.heal(&mut self.flash, &self.layout)?;
        let requests = request::read(&mut self.flash, &self.layout)?;
        log_info!("boot: phase {}", loaded.state.phase);
        let image = self.decide(&mut loaded, requests.newest, envelope_buf)?;
        if requests.dirty() {
            request::erase(&mut self.flash, &self.layout)?;
        }
        lock.lock(self.layout.protected_region())
            .map_err(|_| Error::LockFailed)?;
        Ok(image)
    }

    /// Runs the state-and-request table (module documentation) until there is an image.
    fn decide(
        &mut self,
        loaded: &mut Loaded,
        request: Option<Request>,
        envelope_buf: &mut [u8],
    ) -> Result<VerifiedImage, Error> {
        // The request applies to the state as read at boot, in its own row only.
        let mut request = request;
        for _ in 0..MAX_TRANSITIONS {
            match (loaded.state.phase, request.take()) {
                (Phase::Idle, Some(Request::Install(digest))) => {
                    self.start_update(loaded, &digest, envelope_buf)?;
                }
                (Phase::Idle, _) => return self.boot_idle(loaded, envelope_buf),
                (Phase::Swapping, _) => {
                    self.swap(loaded, Direction::Install, envelope_buf)?;
                    loaded.state.enter_trial(self.config.trial_attempts.max(1));
                    self.commit(loaded)?;
                }
                (Phase::Trial, request) => {
                    let confirm = request == Some(Request::Confirm(loaded.state.trial_image));
                    if let Some(image) = self.boot_trial(loaded, confirm, envelope_buf)? {
                        return Ok(image);
                    }
                }
                (Phase::Reverting, _) => {
                    self.swap(loaded, Direction::Revert, envelope_buf)?;
                    loaded.state.finish_revert();
                    self.commit(loaded)?;
                }
            }
        }
        Err(Error::Corrupt)
    }

    /// Runs or resumes a swap, with the device's keystreams when it has a key.
    fn swap(
        &mut self,
        loaded: &mut Loaded,
        direction: Direction,
        envelope_buf: &mut [u8],
    ) -> Result<(), Error> {
        #[cfg(feature = "encryption")]
        let mut keys = match self.config.device_key {
            Some(device) => {
                let progress = match direction {
                    Direction::Install => Some(loaded.state.swap_progress),
                    Direction::Revert => None,
                };
                Some(crate::crypt::SwapKeys::new(
                    &mut self.flash,
                    &self.layout,
                    device,
                    &loaded.state.trial_image,
                    &loaded.state.swap_id,
                    progress,
                    envelope_buf,
                )?)
            }
            None => None,
        };
        #[cfg(feature = "encryption")]
        let keys = keys.as_mut();
        #[cfg(not(feature = "encryption"))]
        let keys = {
            let _ = envelope_buf;
            Default::default()
        };
        swap::run(&mut self.flash, &self.layout, loaded, direction, keys)
    }

    fn commit(&mut self, loaded: &mut Loaded) -> Result<(), Error> {
        loaded.commit(&mut self.flash, &self.layout)
    }

    /// Verifies the bundle at `base` with the device policy at the floors of `state`.
    /// `Error::Verify`: the bytes are not a valid bundle for this device; any other error is a
    /// flash failure.
    fn verify(
        &mut self,
        base: u32,
        state: &BootState,
        envelope_buf: &mut [u8],
    ) -> Result<ImageInfo, Error> {
        let policy = self.config.policy(&self.layout, state);
        // A device with a key verifies the staged bundle as ciphertext and the active slot as
        // the decrypted image (the same cost as a raw image).
        #[cfg(feature = "encryption")]
        let policy = match self.config.device_key {
            Some(_) if base == self.layout.staged_bundle_offset() => {
                policy.with_encrypted_payload(sigil_manifests::EncryptedPayload::Ciphertext)
            }
            Some(_) => policy.with_encrypted_payload(sigil_manifests::EncryptedPayload::Decrypted),
            None => policy,
        };
        if F::MAPPED {
            let region = self
                .flash
                .mapped(base, self.layout.max_bundle_len())
                .ok_or(Error::Flash(NorFlashErrorKind::OutOfBounds))?;
            // The region is the slot's bundle space: nothing outside it is read.
            let verified = sigil_manifests::verify_in_place(self.config.root, policy, region);
            return verified.map(|v| ImageInfo::of(&v)).map_err(Error::Verify);
        }
        let verified = verify_at(
            &mut self.flash,
            &self.layout,
            base,
            self.config.root,
            policy,
            envelope_buf,
        )?;
        verified.map(|v| ImageInfo::of(&v)).map_err(Error::Verify)
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
            digest: info.digest,
            trial,
            attempts_left,
        })
    }

    /// Idle: boot the active image; its counters become the floor (it is confirmed).
    fn boot_idle(
        &mut self,
        loaded: &mut Loaded,
        envelope_buf: &mut [u8],
    ) -> Result<VerifiedImage, Error> {
        let info = match self.verify(self.layout.active_offset(), &loaded.state, envelope_buf) {
            Ok(info) => info,
            Err(Error::Verify(e)) => {
                log_warn!("active slot does not verify: {}", e);
                return Err(Error::NoBootableImage(e));
            }
            Err(e) => return Err(e),
        };
        if loaded.state.raise_floors(info.counters().floors()) || store::is_blank(loaded) {
            self.commit(loaded)?;
        }
        self.image(&info, false, 0)
    }

    /// Idle + `Install(digest)`: verify the staged bundle and either start the swap or refuse.
    fn start_update(
        &mut self,
        loaded: &mut Loaded,
        digest: &ImageDigest,
        envelope_buf: &mut [u8],
    ) -> Result<(), Error> {
        // The running image is confirmed: its counters are a floor even on a device that has
        // never booted without a request (a factory image assembled with one), so nothing
        // below it is installed.
        #[cfg(feature = "encryption")]
        let mut previous = None;
        match self.verify(self.layout.active_offset(), &loaded.state, envelope_buf) {
            Ok(active) => {
                if loaded.state.raise_floors(active.counters().floors()) {
                    self.commit(loaded)?;
                }
                #[cfg(feature = "encryption")]
                {
                    previous = Some(active.digest);
                }
            }
            Err(Error::Verify(_)) => {}
            Err(e) => return Err(e),
        }
        // The install's swap id (the device-local keystreams of encrypted builds).
        #[cfg(feature = "encryption")]
        let swap_id = loaded.state.next_swap_id(previous.as_ref());
        #[cfg(not(feature = "encryption"))]
        let swap_id = [0; 16];
        let staged = match self.verify(
            self.layout.staged_bundle_offset(),
            &loaded.state,
            envelope_buf,
        ) {
            Ok(info) => info,
            Err(Error::Verify(_e)) => {
                log_warn!("staged bundle refused: {}", _e);
                return self.refuse(loaded, Outcome::StagedInvalid);
            }
            Err(e) => return Err(e),
        };
        if staged.digest != *digest {
            log_warn!("staged bundle is not the requested image: not installed");
            return self.refuse(loaded, Outcome::StagedMismatch);
        }
        if loaded.state.is_rejected(&staged.digest) {
            log_warn!("staged bundle was rejected before: not retried");
            return self.refuse(loaded, Outcome::AlreadyRejected);
        }
        // Steps D1-D4 before any slot is written: the key record beside the staged bundle must
        // yield the content key the manifest commits to. The check is the one every resumed
        // boot of the install repeats (from the same bytes), so an install that starts can
        // always resume; an envelope buffer too small to re-read the manifest refuses here.
        #[cfg(feature = "encryption")]
        if staged.encryption.is_some() && !self.key_record_opens(&staged.digest, envelope_buf)? {
            return self.refuse(loaded, Outcome::KeyRefused);
        }
        let old = swap::active_extent(&mut self.flash, &self.layout)?;
        let sectors = self
            .layout
            .sectors_for(staged.total_len)
            .max(old)
            .min(self.layout.slot_sectors());
        // The swap, the trial boots, the confirm and a heal must fit in the log before anything
        // moves: 2k progress records, the trial budget, the transitions.
        let needed = sectors
            .saturating_mul(2)
            .saturating_add(u32::from(self.config.trial_attempts))
            .saturating_add(6);
        if loaded.state.sequence.checked_add(needed).is_none() {
            return self.refuse(loaded, Outcome::StagedInvalid);
        }
        log_info!(
            "installing: {} sectors, counter {}",
            sectors,
            staged.security_counter
        );
        loaded
            .state
            .start_install(&staged.counters(), sectors, swap_id);
        self.commit(loaded)
    }

    /// Whether the key record beside the staged encrypted bundle `digest` opens it (steps
    /// D1-D4) with this device's key; `Err` only for a flash error. Out of line: the
    /// keystream it builds stays off the stack of the boots that do not install.
    #[cfg(feature = "encryption")]
    #[inline(never)]
    fn key_record_opens(
        &mut self,
        digest: &ImageDigest,
        envelope_buf: &mut [u8],
    ) -> Result<bool, Error> {
        let Some(device) = self.config.device_key else {
            return Ok(false);
        };
        let opened =
            crate::crypt::staged_opens(&mut self.flash, &self.layout, device, digest, envelope_buf);
        match opened {
            Ok(opens) => Ok(opens),
            Err(Error::Flash(kind)) => Err(Error::Flash(kind)),
            Err(_e) => {
                log_warn!("key record refused: {}", _e);
                Ok(false)
            }
        }
    }

    fn refuse(&mut self, loaded: &mut Loaded, why: Outcome) -> Result<(), Error> {
        loaded.state.refuse_install(why);
        self.commit(loaded)
    }

    /// Trial: `Some(image)` to jump to, or `None` after starting the revert. With a
    /// `Confirm(trial image)` request (`confirm`) the image becomes final, without one it boots
    /// on trial while boots are left; either way only after the active image verified as the
    /// trial image in this boot. Out of line: inlined into the table it costs more flash, and
    /// its frame under the signature check is smaller than the table's.
    #[inline(never)]
    fn boot_trial(
        &mut self,
        loaded: &mut Loaded,
        confirm: bool,
        envelope_buf: &mut [u8],
    ) -> Result<Option<VerifiedImage>, Error> {
        let trial = loaded.state.trial_image;
        let why = if !confirm && loaded.state.attempts_left == 0 {
            log_warn!("trial image not confirmed in time: reverting");
            Outcome::Reverted
        } else {
            match self.verify(self.layout.active_offset(), &loaded.state, envelope_buf) {
                Ok(info) if info.digest == trial => {
                    let state = &mut loaded.state;
                    if confirm {
                        log_info!("trial image confirmed: counter {}", info.security_counter);
                        state.confirm_trial(info.root);
                    } else {
                        state.use_trial_boot();
                    }
                    let attempts_left = state.attempts_left;
                    self.commit(loaded)?;
                    return self.image(&info, !confirm, attempts_left).map(Some);
                }
                Err(e) if !matches!(e, Error::Verify(_)) => return Err(e),
                _ => {
                    log_warn!(
                        "{} image does not verify: reverting",
                        if confirm { "confirmed" } else { "trial" }
                    );
                    Outcome::TrialInvalid
                }
            }
        };
        loaded.state.start_revert(why);
        self.commit(loaded)?;
        Ok(None)
    }
}
