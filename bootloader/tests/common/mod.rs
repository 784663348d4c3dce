//! Test rig: signed bundles, a simulated device, and the invariants every trial checks.
// Each test crate uses a different part of the rig; unwrap failures are test failures.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use sigil_bootloader::sim::{RecordingLock, SimFlash};
use sigil_bootloader::{
    BootConfig, BootControl, BootState, Bootloader, Error, Geometry, ImageDigest, Layout,
    VerifiedImage,
};
use sigil_manifests::*;

pub use sigil_test_support::product;

pub fn root() -> &'static TrustRoot {
    sigil_test_support::static_root()
}

/// What a test varies in a bundle (the rest is `sigil_test_support::Spec::default()`).
#[derive(Clone)]
pub struct Spec {
    pub product: ProductId<'static>,
    pub counter: u32,
    pub key_set_version: u32,
    pub version: &'static str,
    pub payload_len: usize,
    pub payload_seed: u8,
    pub alignment: u32,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            product: product(),
            counter: 1,
            key_set_version: 1,
            version: "1.0.0",
            payload_len: 700,
            payload_seed: 1,
            alignment: 64,
        }
    }
}

/// A bundle signed by the root threshold (2 of 3) and one release key.
pub fn bundle(spec: &Spec) -> Vec<u8> {
    sigil_test_support::bundle(&sigil_test_support::Spec {
        product: spec.product,
        key_set_version: spec.key_set_version,
        alignment: spec.alignment,
        payload: sigil_test_support::payload(spec.payload_len, spec.payload_seed),
        ..sigil_test_support::Spec::release(spec.version, spec.counter)
    })
}

/// The release with security counter `counter` (0–4, version `counter.0.0`) and a payload of
/// `len` bytes seeded by the counter.
pub fn release(counter: u32, len: usize) -> Vec<u8> {
    bundle(&Spec {
        counter,
        version: ["0.0.0", "1.0.0", "2.0.0", "3.0.0", "4.0.0"][counter as usize],
        payload_len: len,
        payload_seed: counter as u8,
        ..Spec::default()
    })
}

/// The identity the bootloader gives a bundle: its manifest digest (zero if it does not verify
/// at all, which the bootloader then refuses whatever the request names).
pub fn digest_of(bundle: &[u8]) -> ImageDigest {
    let mut buf = vec![0u8; VERIFY_BUFFER_LEN];
    verify_bundle(root(), DevicePolicy::any_device(), bundle, &mut buf)
        .map(|v| v.manifest_digest())
        .unwrap_or([0; 32])
}

/// The identity of the bundle `spec` describes.
pub fn digest(spec: &Spec) -> ImageDigest {
    digest_of(&bundle(spec))
}

/// A simulated device: protected state (2 banks) | requests (1 sector) | active slot (N) |
/// staging slot (N + 1). `R` is the read size.
#[derive(Clone)]
pub struct Rig<const W: usize, const E: usize, const R: usize = 1> {
    pub flash: SimFlash<W, E, R>,
    pub layout: Layout,
    pub attempts: u8,
    /// Boot as a port with memory-mapped flash: verify in place, no envelope buffer.
    pub mapped: bool,
    /// Otherwise, the envelope buffer's length (`VERIFY_BUFFER_LEN`, or the
    /// `MIN_VERIFY_BUFFER_LEN` of a port such as the nRF52840-DK).
    pub buffer: usize,
    /// The lock of the last boot.
    pub lock: RecordingLock,
    /// The device's X25519 key pair, as the board's protected storage gives it.
    #[cfg(feature = "encryption")]
    pub device: Option<&'static sigil_bootloader::DeviceSecret>,
}

impl<const W: usize, const E: usize, const R: usize> Rig<W, E, R> {
    pub fn new(slot_sectors: u32, erased: u8) -> Self {
        let s = E as u32;
        let geometry = Geometry::of::<SimFlash<W, E, R>>(erased);
        let p = Layout::protected_len(geometry);
        let active = p + s;
        let staging = active + slot_sectors * s;
        let layout = Layout::new(geometry, 0, p, active, staging, slot_sectors).unwrap();
        let sectors = (p / s + 2 + 2 * slot_sectors) as usize;
        Rig {
            flash: SimFlash::new(sectors, erased),
            layout,
            attempts: 2,
            mapped: false,
            buffer: VERIFY_BUFFER_LEN,
            lock: RecordingLock::default(),
            #[cfg(feature = "encryption")]
            device: None,
        }
    }

    pub fn config(&self) -> BootConfig<'static> {
        let config = BootConfig::new(root(), product(), "app").with_trial_attempts(self.attempts);
        #[cfg(feature = "encryption")]
        if let Some(device) = self.device {
            return config.with_device_key(device);
        }
        config
    }

    /// Factory programming: the bundle straight into the active slot.
    pub fn provision(&mut self, bundle: &[u8]) {
        let at = self.layout.active_offset() as usize;
        self.flash.bytes_mut()[at..at + bundle.len()].copy_from_slice(bundle);
    }

    /// One boot after a reset, with all RAM state rebuilt from flash. On success the lock the
    /// bootloader set stays on the simulated flash until the next boot, as on a board.
    pub fn boot(&mut self) -> Result<VerifiedImage, Error> {
        self.flash.reset();
        let config = self.config();
        let mut lock = RecordingLock {
            fail: self.lock.fail,
            ..RecordingLock::default()
        };
        let result = if self.mapped {
            let flash = sigil_bootloader::sim::Mapped(&mut self.flash);
            Bootloader::new(flash, self.layout, config)?.boot(&mut [], &mut lock)
        } else {
            let mut bl = Bootloader::new(&mut self.flash, self.layout, config)?;
            let mut buf = vec![0u8; self.buffer];
            bl.boot(&mut buf, &mut lock)
        };
        if result.is_ok() {
            let range = lock.locked.clone().expect("booted without locking");
            assert_eq!(range, self.layout.protected_region());
            self.flash.lock(range);
        }
        self.lock = lock;
        result
    }

    pub fn control(&mut self) -> BootControl<&mut SimFlash<W, E, R>> {
        BootControl::new(&mut self.flash, self.layout).unwrap()
    }

    pub fn state(&mut self) -> BootState {
        self.control().state()
    }

    /// The application confirms the image on trial (takes effect at the next boot).
    pub fn confirm(&mut self) -> Result<(), Error> {
        let mut ctl = BootControl::new(&mut self.flash, self.layout)?;
        let trial = ctl.state().trial_image;
        ctl.confirm(&trial)
    }

    /// Writes `bundle` one sector into the staging slot (padded to the write size with the
    /// erased value), as the agent does.
    pub fn write_staged(&mut self, bundle: &[u8]) -> Result<(), Error> {
        let erased = self.flash.erased();
        let layout = self.layout;
        let mut ctl = BootControl::new(&mut self.flash, layout)?;
        ctl.erase_staging(bundle.len() as u32)?;
        let mut padded = bundle.to_vec();
        padded.resize(bundle.len().div_ceil(W) * W, erased);
        for (i, chunk) in padded.chunks(256.max(W)).enumerate() {
            ctl.write_staging((i * 256.max(W)) as u32, chunk)?;
        }
        Ok(())
    }

    /// The agent's job: write the bundle into the staging slot and request its install.
    pub fn stage(&mut self, bundle: &[u8]) -> Result<(), Error> {
        self.write_staged(bundle)?;
        self.request_install(&digest_of(bundle))
    }

    pub fn request_install(&mut self, digest: &ImageDigest) -> Result<(), Error> {
        BootControl::new(&mut self.flash, self.layout)?.request_install(digest)
    }

    /// The bytes of the active slot.
    pub fn active(&self) -> &[u8] {
        let at = self.layout.active_offset() as usize;
        &self.flash.bytes()[at..at + self.layout.max_bundle_len() as usize]
    }

    /// Whether the active slot starts with `bundle`.
    pub fn active_holds(&self, bundle: &[u8]) -> bool {
        self.active().starts_with(bundle)
    }

    /// Sector index (in the simulator) of active sector `i` and staging sector `i`.
    pub fn active_sector(&self, i: u32) -> usize {
        (self.layout.active_offset() / E as u32 + i) as usize
    }

    pub fn staging_sector(&self, i: u32) -> usize {
        (self.layout.staging_offset() / E as u32 + i) as usize
    }

    /// The manifest digest of the bundle in the staging slot (zero if it does not verify).
    pub fn staged_digest(&self) -> ImageDigest {
        let at = self.layout.staged_bundle_offset() as usize;
        let len = self.layout.max_bundle_len() as usize;
        let bytes = &self.flash.bytes()[at..at + len];
        verify_in_place(root(), DevicePolicy::any_device(), bytes)
            .map(|v| v.manifest_digest())
            .unwrap_or([0; 32])
    }

    /// Simulator sector indices of the protected region.
    pub fn protected_sectors(&self) -> std::ops::Range<usize> {
        let r = self.layout.protected_region();
        (r.start / E as u32) as usize..(r.end / E as u32) as usize
    }
}
