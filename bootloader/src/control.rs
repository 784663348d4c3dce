//! The application-side boot-control API, for the std agent and for no_std firmware alike.
//!
//! | call | allowed in | effect |
//! |---|---|---|
//! | [`BootControl::state`] | any phase | the state read at construction (or the last write) |
//! | [`BootControl::erase_staging`], [`BootControl::write_staging`] | Idle | erase / program the staged-bundle area, `Layout::staged_bundle_offset()..+N×S` |
//! | [`BootControl::mark_pending`] | Idle | Pending: the next boot verifies and installs the staged bundle |
//! | [`BootControl::cancel_pending`] | Pending | back to Idle |
//! | [`BootControl::confirm`] | Trial (Idle: no-op) | Idle; the stored minimum security counter and key-set version are raised to the image's |
//! | [`BootControl::verify_staged`], [`BootControl::verify_active`] | any phase | run the one verification sequence over a slot |
//!
//! Writing a bundle: erase the sectors it needs with `erase_staging(len)`, write it byte for
//! byte from its first byte with `write_staging(offset, bytes)` (offsets relative to the
//! bundle start, write-aligned; pad the last write with the erased value), optionally
//! `verify_staged`, then `mark_pending` and reboot. Staging is refused outside Idle because
//! during a swap or a trial the staging slot holds the only copy of the previous image.

use core::ops::Range;

use embedded_storage::nor_flash::{NorFlash, NorFlashError};
use sigil_manifests::{DevicePolicy, TrustRoot, VerifiedBundle};

use crate::error::Error;
use crate::layout::Layout;
use crate::record::{BootState, Outcome, Phase};
use crate::store::{self, Loaded};
use crate::verify::verify_at;

/// Boot-control access for the running application.
#[derive(Debug)]
pub struct BootControl<F> {
    flash: F,
    layout: Layout,
    loaded: Loaded,
}

impl<F: NorFlash> BootControl<F> {
    /// Checks `layout` against the flash device and reads the state.
    pub fn new(flash: F, layout: Layout) -> Result<Self, Error> {
        layout.check_flash::<F>(flash.capacity())?;
        let mut flash = flash;
        let loaded = store::load(&mut flash, &layout)?;
        Ok(BootControl {
            flash,
            layout,
            loaded,
        })
    }

    /// The current state.
    pub fn state(&self) -> BootState {
        self.loaded.state
    }

    /// Reads the state from flash again (after another process wrote it).
    pub fn reload(&mut self) -> Result<BootState, Error> {
        self.loaded = store::load(&mut self.flash, &self.layout)?;
        Ok(self.loaded.state)
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

    /// The flash device.
    pub fn flash(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Gives the flash device back.
    pub fn into_flash(self) -> F {
        self.flash
    }

    fn require(&self, phase: Phase) -> Result<(), Error> {
        if self.loaded.state.phase == phase {
            Ok(())
        } else {
            Err(Error::WrongPhase(self.loaded.state.phase))
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

    /// Asks the bootloader to install the staged bundle at the next boot (Idle only). The
    /// bootloader verifies it in full first; a bundle that fails, or that was rejected
    /// before, is refused without touching the active slot.
    pub fn mark_pending(&mut self) -> Result<(), Error> {
        self.require(Phase::Idle)?;
        let next = BootState {
            attempts_left: 0,
            ..self.loaded.state.with_phase(Phase::Pending)
        };
        self.loaded.commit(&mut self.flash, &self.layout, next)
    }

    /// Withdraws a pending request.
    pub fn cancel_pending(&mut self) -> Result<(), Error> {
        self.require(Phase::Pending)?;
        let next = self.loaded.state.with_phase(Phase::Idle);
        self.loaded.commit(&mut self.flash, &self.layout, next)
    }

    /// Confirms the image on trial: the update is final and the stored minimum security
    /// counter and key-set version rise to the image's (they never fall). In Idle this does
    /// nothing; during a swap or a revert it is refused.
    pub fn confirm(&mut self) -> Result<(), Error> {
        let state = self.loaded.state;
        match state.phase {
            Phase::Idle => Ok(()),
            Phase::Trial => {
                let next = BootState {
                    min_security_counter: state
                        .min_security_counter
                        .max(state.trial_security_counter),
                    min_key_set_version: state.min_key_set_version.max(state.trial_key_set_version),
                    attempts_left: 0,
                    outcome: Outcome::Confirmed,
                    ..state.with_phase(Phase::Idle)
                };
                self.loaded.commit(&mut self.flash, &self.layout, next)
            }
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

    /// Verifies the active bundle: its manifest gives the running image's version and counter.
    pub fn verify_active<'b>(
        &mut self,
        root: &'b TrustRoot,
        policy: DevicePolicy<'b>,
        envelope_buf: &'b mut [u8],
    ) -> Result<VerifiedBundle<'b>, Error> {
        let base = self.layout.active_offset();
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
