//! The application-side boot-control API, for the std agent and for no_std firmware alike.
//!
//! The application reads the protected state and writes **requests** (and the staged bundle);
//! it never writes the protected state, which the board locks before the application runs.
//! A request takes effect at the next boot, after the bootloader has checked it (the table in
//! [`crate::boot`]).
//!
//! | call | allowed in | effect |
//! |---|---|---|
//! | [`BootControl::state`], [`BootControl::request`] | any phase | the protected state and the newest pending request, as read at construction (or the last write / [`BootControl::reload`]) |
//! | [`BootControl::erase_staging`], [`BootControl::write_staging`] | Idle | erase / program the staged-bundle area, `Layout::staged_bundle_offset()..+N×S` |
//! | [`BootControl::request_install`] | Idle | request `Install(D)`: the next boot verifies the staged bundle, checks that its manifest digest is `D` and that `D` was not rejected, and installs it |
//! | [`BootControl::cancel`] | Idle | request `Cancel`: withdraws an install request |
//! | [`BootControl::confirm`] | Trial, for the trial image (Idle: no-op) | request `Confirm(D)`: at the next boot the image becomes final and the floors rise to its counters |
//! | [`BootControl::verify_staged`], [`BootControl::verify_active`] | any phase | run the one verification sequence over a slot |
//!
//! Writing a bundle: erase the sectors it needs with `erase_staging(len)`, write it byte for
//! byte from its first byte with `write_staging(offset, bytes)` (offsets relative to the
//! bundle start, write-aligned; pad the last write with the erased value), `verify_staged`
//! (which gives the manifest digest), then `request_install(digest)` and reboot. Staging is
//! refused outside Idle because during a swap or a trial the staging slot holds the only copy
//! of the previous image.

use core::ops::Range;

use embedded_storage::nor_flash::{NorFlash, NorFlashError};
use sigil_manifests::{DevicePolicy, TrustRoot, VerifiedBundle};

use crate::error::Error;
use crate::layout::Layout;
use crate::record::{BootState, ImageDigest, Phase};
use crate::request::{self, Request, Requests};
use crate::store;
use crate::verify::verify_at;

/// Boot-control access for the running application.
#[derive(Debug)]
pub struct BootControl<F> {
    flash: F,
    layout: Layout,
    state: BootState,
    requests: Requests,
}

impl<F: NorFlash> BootControl<F> {
    /// Checks `layout` against the flash device and reads the state and the requests.
    pub fn new(flash: F, layout: Layout) -> Result<Self, Error> {
        layout.check_flash::<F>(flash.capacity())?;
        let mut flash = flash;
        let state = store::load(&mut flash, &layout)?.state;
        let requests = request::read(&mut flash, &layout)?;
        Ok(BootControl {
            flash,
            layout,
            state,
            requests,
        })
    }

    /// The protected state (read-only for the application).
    pub fn state(&self) -> BootState {
        self.state
    }

    /// The newest request the bootloader has not acted on yet.
    pub fn request(&self) -> Option<Request> {
        self.requests.newest
    }

    /// Whether the image on trial is confirmed (the confirm request is written; the floors
    /// rise at the next boot).
    pub fn confirm_requested(&self) -> bool {
        self.state.phase == Phase::Trial
            && self.requests.newest == Some(Request::Confirm(self.state.trial_image))
    }

    /// Whether an install request is pending, and for which image.
    pub fn install_requested(&self) -> Option<ImageDigest> {
        match self.requests.newest {
            Some(Request::Install(d)) if self.state.phase == Phase::Idle => Some(d),
            _ => None,
        }
    }

    /// Reads the state and the requests from flash again (after another process wrote them,
    /// or after a reboot).
    pub fn reload(&mut self) -> Result<BootState, Error> {
        self.state = store::load(&mut self.flash, &self.layout)?.state;
        self.requests = request::read(&mut self.flash, &self.layout)?;
        Ok(self.state)
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The flash range a staged bundle occupies at most.
    pub fn staging_area(&self) -> Range<u32> {
        let start = self.layout.staged_bundle_offset();
        start..start.saturating_add(self.layout.max_bundle_len())
    }

    /// Writes the key record of an encrypted bundle of `bundle_len` bytes beside it in the
    /// staging slot, at [`Layout::key_record_offset`] (the agent's last write before it
    /// requests the install). The staging area must have been erased for
    /// `offset + KEY_RECORD_UNIT` bytes ([`BootControl::erase_staging`]).
    pub fn write_key_record(&mut self, bundle_len: u64, record: &[u8]) -> Result<(), Error> {
        let offset = self
            .layout
            .key_record_offset(bundle_len)
            .ok_or(Error::OutOfBounds)?;
        let mut unit = [self.layout.geometry().erased; crate::layout::KEY_RECORD_UNIT as usize];
        unit.get_mut(..record.len())
            .ok_or(Error::OutOfBounds)?
            .copy_from_slice(record);
        // The unit is a multiple of every write size up to 256 bytes; a flash with larger
        // writes cannot place a record (refused, not padded over the next bytes).
        let w =
            usize::try_from(self.layout.geometry().write_size).map_err(|_| Error::OutOfBounds)?;
        if w > unit.len() {
            return Err(Error::OutOfBounds);
        }
        self.write_staging(offset, &unit)
    }

    /// The flash device.
    pub fn flash(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Gives the flash device back.
    pub fn into_flash(self) -> F {
        self.flash
    }

    fn require(&self, phase: Phase) -> Result<(), Error> {
        if self.state.phase == phase {
            Ok(())
        } else {
            Err(Error::WrongPhase(self.state.phase))
        }
    }

    /// Erases the staging sectors a bundle of `len` bytes needs (Idle only).
    pub fn erase_staging(&mut self, len: u32) -> Result<(), Error> {
        self.require(Phase::Idle)?;
        if len > self.layout.max_bundle_len() {
            return Err(Error::OutOfBounds);
        }
        let sectors = self.layout.sectors_for(u64::from(len));
        let from = self.layout.staged_bundle_offset();
        let to = sectors
            .checked_mul(self.layout.sector_size())
            .and_then(|n| n.checked_add(from))
            .ok_or(Error::OutOfBounds)?;
        self.flash
            .erase(from, to)
            .map_err(|e| Error::Flash(e.kind()))
    }

    /// Programs `bytes` at `offset` from the staged bundle's start (Idle only; `offset` and the
    /// length must be multiples of the write size, and the sectors erased).
    pub fn write_staging(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Error> {
        self.require(Phase::Idle)?;
        let len = u32::try_from(bytes.len()).map_err(|_| Error::OutOfBounds)?;
        let end = offset.checked_add(len).ok_or(Error::OutOfBounds)?;
        let w = self.layout.geometry().write_size;
        if end > self.layout.max_bundle_len()
            || offset.checked_rem(w) != Some(0)
            || len.checked_rem(w) != Some(0)
        {
            return Err(Error::OutOfBounds);
        }
        let at = self
            .layout
            .staged_bundle_offset()
            .checked_add(offset)
            .ok_or(Error::OutOfBounds)?;
        self.flash
            .write(at, bytes)
            .map_err(|e| Error::Flash(e.kind()))
    }

    fn append(&mut self, request: Request) -> Result<(), Error> {
        request::append(&mut self.flash, &self.layout, &mut self.requests, request)
    }

    /// Asks the bootloader to install the staged bundle, whose manifest digest is `digest`, at
    /// the next boot (Idle only). The bootloader verifies it in full first; a bundle that
    /// fails, that is not `digest`, or that was rejected before is refused without touching
    /// the active slot.
    pub fn request_install(&mut self, digest: &ImageDigest) -> Result<(), Error> {
        self.require(Phase::Idle)?;
        self.append(Request::Install(*digest))
    }

    /// Withdraws an install request (Idle only; without one this does nothing).
    pub fn cancel(&mut self) -> Result<(), Error> {
        self.require(Phase::Idle)?;
        if self.install_requested().is_none() {
            return Ok(());
        }
        self.append(Request::Cancel)
    }

    /// Confirms the image on trial, whose manifest digest is `digest`: at the next boot the
    /// update is final and the stored floors rise to the image's counters (they never fall).
    /// Until then the bootloader no longer counts trial boots against it. In Idle this does
    /// nothing; during a swap or a revert, or for another image than the one on trial, it is
    /// refused.
    pub fn confirm(&mut self, digest: &ImageDigest) -> Result<(), Error> {
        match self.state.phase {
            Phase::Idle => Ok(()),
            Phase::Trial if *digest != self.state.trial_image => Err(Error::WrongImage),
            Phase::Trial if self.confirm_requested() => Ok(()),
            Phase::Trial => self.append(Request::Confirm(*digest)),
            other => Err(Error::WrongPhase(other)),
        }
    }

    /// Verifies the staged bundle (`Error::Verify` if it is not valid under `policy`).
    pub fn verify_staged<'b>(
        &mut self,
        root: &'b TrustRoot,
        policy: DevicePolicy<'b>,
        envelope_buf: &'b mut [u8],
    ) -> Result<VerifiedBundle<'b>, Error> {
        let base = self.layout.staged_bundle_offset();
        self.verify_slot(base, root, policy, envelope_buf)
    }

    /// Verifies the active bundle: its manifest gives the running image's version and counter.
    pub fn verify_active<'b>(
        &mut self,
        root: &'b TrustRoot,
        policy: DevicePolicy<'b>,
        envelope_buf: &'b mut [u8],
    ) -> Result<VerifiedBundle<'b>, Error> {
        let base = self.layout.active_offset();
        self.verify_slot(base, root, policy, envelope_buf)
    }

    fn verify_slot<'b>(
        &mut self,
        base: u32,
        root: &'b TrustRoot,
        policy: DevicePolicy<'b>,
        envelope_buf: &'b mut [u8],
    ) -> Result<VerifiedBundle<'b>, Error> {
        verify_at(
            &mut self.flash,
            &self.layout,
            base,
            root,
            policy,
            envelope_buf,
        )?
        .map_err(Error::Verify)
    }
}
