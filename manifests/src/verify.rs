//! The one verification sequence (FORMAT.md §6), streaming over the bundle bytes in order.
//!
//! Every consumer runs this code: `sigil verify`, the server on upload, the agent while it
//! downloads and again from the staging slot, and the bootloader on every boot. The verifier
//! is fed the bundle from its first byte to its last, in chunks of any size; it holds the
//! envelope in a caller-supplied buffer and hashes the payload as it passes, so no image is ever
//! held in memory and no allocator is needed.

use core::cmp::Ordering;

use sha2::{Digest, Sha256};

use crate::bundle::{align_up, BundleHeader, HEADER_LEN};
use crate::error::{Document, Error, Signed};
use crate::keys::verify_threshold;
use crate::keyset::{verify_key_set, KeySet};
use crate::manifest::{InstalledComponent, Manifest, ProductId, Version};
use crate::root::TrustRoot;
use crate::rotation::{walk, ChainStream, ReachedRoot, RootFloor};
use crate::view::EnvelopeView;

/// What the device (or tool) requires beyond valid signatures: the policy half of step 5 and 7.
///
/// Devices build it with [`DevicePolicy::device`]; tools that only check signatures and
/// structure (the signer, the server on upload) use [`DevicePolicy::any_device`].
#[derive(Debug, Clone, Copy)]
pub struct DevicePolicy<'a> {
    product: Option<ProductId<'a>>,
    component: Option<&'a str>,
    min_security_counter: u32,
    min_key_set_version: u32,
    max_bundle_len: u64,
    newer_than: Option<(Version<'a>, VersionOrder)>,
    now: Option<u64>,
    bootloader_version: Option<u32>,
    installed: Option<(&'a [InstalledComponent<'a>], VersionOrder)>,
    root_floor: Option<RootFloor>,
    encrypted: EncryptedPayload,
}

/// What a consumer does with a bundle whose payload is encrypted (FORMAT.md §9): the policy's
/// answer to step 7k, and which signed digest step 9 compares the payload against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptedPayload {
    /// Refuse it (step 7k): the default of [`DevicePolicy::device`], so a device that cannot
    /// decrypt never installs ciphertext.
    Refused,
    /// The fed payload is the ciphertext as bundled: step 9 checks `payload_digest`. The
    /// default of [`DevicePolicy::any_device`] (signer, server, mirrors: no key needed), and
    /// what a decrypting device uses for its staged bundle.
    Ciphertext,
    /// The fed payload is the decrypted image (the active slot after a decrypting install):
    /// step 9 checks the manifest's `plaintext_digest` instead. Everything else is unchanged.
    Decrypted,
}

/// SemVer precedence, kept beside the versions it compares: a policy that never compares
/// versions (the bootloader's, which relies on security counters) does not link it, which saves
/// the bootloader's flash.
type VersionOrder = fn(&Version<'_>, &Version<'_>) -> Ordering;

impl<'a> DevicePolicy<'a> {
    /// The policy of a device of `product` whose slot holds at most `max_bundle_len` bytes.
    pub fn device(product: ProductId<'a>, max_bundle_len: u64) -> Self {
        DevicePolicy {
            product: Some(product),
            max_bundle_len,
            encrypted: EncryptedPayload::Refused,
            ..Self::any_device()
        }
    }

    /// No device checks: any product, no minimums, no size bound. For tools that verify
    /// signatures and structure but install nothing.
    pub fn any_device() -> Self {
        DevicePolicy {
            product: None,
            component: None,
            min_security_counter: 0,
            min_key_set_version: 0,
            max_bundle_len: u64::MAX,
            newer_than: None,
            now: None,
            bootloader_version: None,
            installed: None,
            root_floor: None,
            encrypted: EncryptedPayload::Ciphertext,
        }
    }

    /// Requires a product (also usable on top of [`DevicePolicy::any_device`]).
    pub fn with_product(mut self, product: ProductId<'a>) -> Self {
        self.product = Some(product);
        self
    }

    /// Requires the manifest to target `component`.
    pub fn with_component(mut self, component: &'a str) -> Self {
        self.component = Some(component);
        self
    }

    /// The device's stored minimum security counter.
    pub fn with_min_security_counter(mut self, minimum: u32) -> Self {
        self.min_security_counter = minimum;
        self
    }

    /// The device's stored minimum key set version.
    pub fn with_min_key_set_version(mut self, minimum: u32) -> Self {
        self.min_key_set_version = minimum;
        self
    }

    /// The largest bundle the device's slot can hold.
    pub fn with_max_bundle_len(mut self, max: u64) -> Self {
        self.max_bundle_len = max;
        self
    }

    /// Requires a version strictly newer than `running` (the agent's "newer than what runs").
    pub fn with_newer_than(mut self, running: Version<'a>) -> Self {
        self.newer_than = Some((running, |a, b| a.cmp(b)));
        self
    }

    /// The device's trusted time (seconds since the Unix epoch), enabling the expiry check.
    pub fn with_trusted_time(mut self, now: u64) -> Self {
        self.now = Some(now);
        self
    }

    /// The device's bootloader version, enabling the minimum bootloader check.
    pub fn with_bootloader_version(mut self, version: u32) -> Self {
        self.bootloader_version = Some(version);
        self
    }

    /// The device's installed components, enabling the dependency check.
    pub fn with_installed(mut self, installed: &'a [InstalledComponent<'a>]) -> Self {
        self.installed = Some((installed, |a, b| a.cmp(b)));
        self
    }

    /// The root the device has adopted through rotation (steps R2–R3 start there); without
    /// one, the device is on the root the verifier is given (its provisioned root).
    pub fn with_root_floor(mut self, floor: RootFloor) -> Self {
        self.root_floor = Some(floor);
        self
    }

    /// Accepts encrypted payloads, fed as `view` says (step 7k, step 9).
    pub fn with_encrypted_payload(mut self, view: EncryptedPayload) -> Self {
        self.encrypted = view;
        self
    }

    /// The digest step 9 compares the payload against: the ciphertext's as bundled, or the
    /// image's where the caller feeds the decrypted image.
    fn expected_digest<'m>(&self, manifest: &'m Manifest<'_>) -> &'m [u8; 32] {
        match (self.encrypted, manifest.payload_format.encryption()) {
            (EncryptedPayload::Decrypted, Some(e)) => &e.plaintext_digest,
            _ => &manifest.payload_digest,
        }
    }

    /// The largest bundle this policy accepts.
    pub fn max_bundle_len(&self) -> u64 {
        self.max_bundle_len
    }
}

/// A bundle whose every step passed: the only type that exposes what to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBundle<'a> {
    header: BundleHeader,
    manifest: Manifest<'a>,
    manifest_bytes: &'a [u8],
    key_set: KeySet<'a>,
    root: RootReached,
}

/// The root a bundle's key set was verified under (steps R1–R3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RootReached {
    version: u32,
    floor: Option<RootFloor>,
}

/// SHA-256 of a manifest's exact signed bytes ([`VerifiedBundle::manifest_digest`]): the name
/// of a release on the device, for a caller that holds the manifest bytes without a verified
/// bundle (the bootloader matching a staged manifest against the image its request names).
pub fn manifest_digest(manifest_bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(manifest_bytes).into()
}

impl<'a> VerifiedBundle<'a> {
    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest<'a> {
        &self.manifest
    }

    /// SHA-256 of the exact signed manifest bytes: the release's identity on the device (the
    /// bootloader's install and confirm requests name it). It changes whenever anything the
    /// manifest binds changes (payload digest, version, security counter), and does not
    /// change when signatures are added.
    pub fn manifest_digest(&self) -> [u8; 32] {
        manifest_digest(self.manifest_bytes)
    }

    /// The verified key set the manifest was signed under.
    pub fn key_set(&self) -> &KeySet<'a> {
        &self.key_set
    }

    /// The key set version (to store as the device minimum once the image is confirmed).
    pub fn key_set_version(&self) -> u32 {
        self.key_set.version
    }

    /// The version of the trust root the key set was verified under.
    pub fn root_version(&self) -> u32 {
        self.root.version
    }

    /// The root floor to store once the image is confirmed: the version and digest of the root
    /// the bundle's chain led to, or `None` if the key set was verified under the provisioned
    /// root.
    pub fn root_floor(&self) -> Option<RootFloor> {
        self.root.floor
    }

    /// The security counter (to store as the device minimum once the image is confirmed).
    pub fn security_counter(&self) -> u32 {
        self.manifest.security_counter
    }

    /// Offset of the payload from the start of the bundle.
    pub fn payload_offset(&self) -> u64 {
        u64::from(self.header.payload_offset)
    }

    /// Exact payload length.
    pub fn payload_size(&self) -> u64 {
        self.manifest.payload_size
    }

    /// Total bundle length.
    pub fn total_len(&self) -> u64 {
        // Checked in step 1; the sum fits.
        self.payload_offset().saturating_add(self.payload_size())
    }
}

/// Header, key set and manifest that passed steps 1–7.
#[derive(Debug, Clone)]
struct Checked<'a> {
    header: BundleHeader,
    manifest: Manifest<'a>,
    manifest_bytes: &'a [u8],
    key_set: KeySet<'a>,
    root: RootReached,
}

/// Where the envelope is kept while it arrives.
#[derive(Debug)]
enum EnvelopeBytes<'a> {
    /// Copied into the caller's buffer (streams of any origin).
    Copy(&'a mut [u8]),
    /// Borrowed from bytes the caller holds in memory for the whole verification
    /// ([`verify_in_place`]): the fed bytes are these very bytes, so nothing is copied.
    InPlace(&'a [u8]),
}

impl EnvelopeBytes<'_> {
    fn len(&self) -> usize {
        match self {
            EnvelopeBytes::Copy(b) => b.len(),
            EnvelopeBytes::InPlace(b) => b.len(),
        }
    }
}

#[derive(Debug)]
enum Stage<'a> {
    Header {
        buf: [u8; HEADER_LEN],
        filled: usize,
        /// The caller's envelope buffer, or (in place) the whole bundle.
        scratch: EnvelopeBytes<'a>,
    },
    /// A copied bundle's root chain, walked one update at a time (steps R1–R3).
    Chain {
        header: BundleHeader,
        stream: ChainStream<'a>,
    },
    Envelope {
        header: BundleHeader,
        bytes: EnvelopeBytes<'a>,
        filled: usize,
        /// The root the streamed chain reached; `None`: the chain (if any) is in `bytes`.
        reached: Option<ReachedRoot<'a>>,
    },
    Padding {
        remaining: u32,
    },
    Payload {
        hasher: Sha256,
        remaining: u64,
    },
    Complete,
    Failed(Error),
}

/// Streams a bundle through the verification sequence.
///
/// ```text
/// let mut v = BundleVerifier::new(&root, policy, &mut envelope_buf);
/// for chunk in source { v.feed(chunk)?; }
/// let verified = v.finish()?;
/// ```
///
/// Signatures and policy are checked as soon as the envelope has arrived, before any payload
/// byte is hashed, so a forged or unwanted bundle is refused early. After an error the verifier
/// keeps returning that error.
///
/// `IN_PLACE` is `true` only inside [`verify_in_place`] (the envelope is borrowed where it
/// lies, never copied): each program then links only the path it uses, which keeps the
/// streamed root chain's code out of a bootloader that verifies memory-mapped flash.
#[derive(Debug)]
pub struct BundleVerifier<'a, const IN_PLACE: bool = false> {
    root: &'a TrustRoot,
    policy: DevicePolicy<'a>,
    stage: Stage<'a>,
    /// Set once steps 1–7 passed; stays in place (never moved per stage) until `finish`.
    checked: Option<Checked<'a>>,
    consumed: u64,
    total: Option<u64>,
}

/// Copies as much of `data` as fits into `dst`, advancing `data`; returns the count.
fn fill(dst: &mut [u8], data: &mut &[u8]) -> usize {
    let n = dst.len().min(data.len());
    let (head, tail) = data.split_at(n);
    if let Some(d) = dst.get_mut(..n) {
        d.copy_from_slice(head);
    }
    *data = tail;
    n
}

/// Splits off at most `max` bytes from the front of `data`.
fn take<'d>(data: &mut &'d [u8], max: u64) -> &'d [u8] {
    let n = usize::try_from(max).unwrap_or(usize::MAX).min(data.len());
    let (head, tail) = data.split_at(n);
    *data = tail;
    head
}

impl<'a> BundleVerifier<'a> {
    /// Starts verification against the device's trust root and policy. `envelope_buf` holds the
    /// envelope while it is checked (and a root chain, one update at a time):
    /// [`crate::MIN_VERIFY_BUFFER_LEN`] bytes accept every valid bundle,
    /// [`crate::MAX_ENVELOPE_LEN`] every valid bundle without a root chain.
    pub fn new(root: &'a TrustRoot, policy: DevicePolicy<'a>, envelope_buf: &'a mut [u8]) -> Self {
        BundleVerifier {
            root,
            policy,
            stage: Stage::Header {
                buf: [0; HEADER_LEN],
                filled: 0,
                scratch: EnvelopeBytes::Copy(envelope_buf),
            },
            checked: None,
            consumed: 0,
            total: None,
        }
    }
}

impl<'a, const IN_PLACE: bool> BundleVerifier<'a, IN_PLACE> {
    /// The bundle's total length, known once the header has passed step 1.
    pub fn total_len(&self) -> Option<u64> {
        self.total
    }

    /// Bytes fed so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// The manifest once steps 1–7 passed (signatures and policy), before the payload is
    /// verified. For progress reports only: nothing may be installed from it.
    pub fn authenticated_manifest(&self) -> Option<&Manifest<'a>> {
        match self.stage {
            Stage::Failed(_) => None,
            _ => self.checked.as_ref().map(|c| &c.manifest),
        }
    }

    /// Feeds the next bytes of the bundle.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), Error> {
        if let Stage::Failed(e) = self.stage {
            return Err(e);
        }
        while !data.is_empty() {
            let before = data.len();
            let result = self.step(&mut data);
            let used = before.saturating_sub(data.len());
            self.consumed = self.consumed.saturating_add(used as u64);
            if let Err(e) = result {
                self.stage = Stage::Failed(e);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Ends the stream: the verified bundle, or why it is not one.
    pub fn finish(self) -> Result<VerifiedBundle<'a>, Error> {
        match (self.stage, self.checked) {
            (Stage::Complete, Some(checked)) => Ok(VerifiedBundle {
                header: checked.header,
                manifest: checked.manifest,
                manifest_bytes: checked.manifest_bytes,
                key_set: checked.key_set,
                root: checked.root,
            }),
            (Stage::Failed(e), _) => Err(e),
            _ => Err(Error::Truncated),
        }
    }

    /// Consumes some of `data` in the current stage. The stage is updated in place, and the
    /// verified key set and manifest are written once into `checked` and never moved by a
    /// stage change, so feeding costs the same whatever the chunk size.
    fn step(&mut self, data: &mut &[u8]) -> Result<(), Error> {
        match &mut self.stage {
            Stage::Header {
                buf,
                filled,
                scratch,
            } => {
                let got = fill(buf.get_mut(*filled..).unwrap_or(&mut []), data);
                *filled = filled.saturating_add(got);
                if *filled < HEADER_LEN {
                    return Ok(());
                }
                // Step 1: the header's structure and bounds.
                let header = BundleHeader::parse(buf)?;
                let total = header.total_len()?;
                if total > self.policy.max_bundle_len {
                    return Err(Error::BundleTooLarge);
                }
                self.total = Some(total);
                let bytes = match core::mem::replace(scratch, EnvelopeBytes::InPlace(&[])) {
                    // A copied chain is walked as it arrives, one update in the buffer at a
                    // time; then the envelope follows the reached root's document there.
                    EnvelopeBytes::Copy(buf) if !IN_PLACE && header.chain_len > 0 => {
                        let stream = ChainStream::new(
                            buf,
                            header.chain_len as usize,
                            self.root.root_version,
                            self.policy.root_floor,
                        )?;
                        self.stage = Stage::Chain { header, stream };
                        return Ok(());
                    }
                    EnvelopeBytes::Copy(buf) if !IN_PLACE => EnvelopeBytes::Copy(
                        buf.get_mut(..header.envelope_len as usize)
                            .ok_or(Error::BufferTooSmall)?,
                    ),
                    // In place, the root chain and the envelope are read together (steps R1
                    // and 2).
                    EnvelopeBytes::InPlace(bundle) if IN_PLACE => {
                        let len = (header.envelope_end()? as usize).saturating_sub(HEADER_LEN);
                        EnvelopeBytes::InPlace(
                            bundle
                                .get(HEADER_LEN..)
                                .and_then(|rest| rest.get(..len))
                                .ok_or(Error::Truncated)?,
                        )
                    }
                    // Only `new` copies and only `verify_in_place` borrows.
                    EnvelopeBytes::Copy(_) | EnvelopeBytes::InPlace(_) => {
                        return Err(Error::Truncated)
                    }
                };
                self.stage = Stage::Envelope {
                    header,
                    bytes,
                    filled: 0,
                    reached: None,
                };
            }
            Stage::Chain { header, stream } => {
                // Only a copying verifier streams a chain (see the header stage).
                if IN_PLACE {
                    return Err(Error::Truncated);
                }
                // Steps R1–R3, over the chain bytes at the front of `data`.
                if !stream.feed(self.root.as_ref(), data)? {
                    return Ok(());
                }
                let header = *header;
                let (reached, rest) = stream.finish(self.root.as_ref())?;
                let bytes = rest
                    .get_mut(..header.envelope_len as usize)
                    .ok_or(Error::BufferTooSmall)?;
                self.stage = Stage::Envelope {
                    header,
                    bytes: EnvelopeBytes::Copy(bytes),
                    filled: 0,
                    reached: Some(reached),
                };
            }
            Stage::Envelope {
                header,
                bytes,
                filled,
                reached,
            } => {
                let got = match bytes {
                    EnvelopeBytes::Copy(buf) if !IN_PLACE => {
                        fill(buf.get_mut(*filled..).unwrap_or(&mut []), data)
                    }
                    // The fed bytes are the borrowed ones (`verify_in_place`): only skip them.
                    EnvelopeBytes::InPlace(env) if IN_PLACE => {
                        let want = env.len().saturating_sub(*filled) as u64;
                        take(data, want).len()
                    }
                    // Only `new` copies and only `verify_in_place` borrows.
                    EnvelopeBytes::Copy(_) | EnvelopeBytes::InPlace(_) => {
                        return Err(Error::Truncated)
                    }
                };
                *filled = filled.saturating_add(got);
                if *filled < bytes.len() {
                    return Ok(());
                }
                let header = *header;
                let envelope: &'a [u8] =
                    match core::mem::replace(bytes, EnvelopeBytes::InPlace(&[])) {
                        EnvelopeBytes::Copy(buf) => buf,
                        EnvelopeBytes::InPlace(env) => env,
                    };
                let reached = *reached;
                // Written in place: a `Checked` returned by value would sit in this frame
                // during the signature checks, the deepest point of a boot.
                check_envelope(
                    self.root,
                    &self.policy,
                    header,
                    envelope,
                    reached,
                    &mut self.checked,
                )?;
                // Through the padding stage even without padding (it then only hands over to
                // the payload): one place starts the payload hash.
                self.stage = Stage::Padding {
                    remaining: header.padding_len()?,
                };
            }
            Stage::Padding { remaining, .. } => {
                // Step 8: padding is outside the signatures, so it must be zero.
                let chunk = take(data, u64::from(*remaining));
                if chunk.iter().any(|&b| b != 0) {
                    return Err(Error::NonZeroPadding);
                }
                *remaining = remaining.saturating_sub(chunk.len() as u32);
                if *remaining == 0 {
                    let checked = self.checked.as_ref().ok_or(Error::Truncated)?;
                    self.stage = Stage::Payload {
                        hasher: Sha256::new(),
                        remaining: checked.manifest.payload_size,
                    };
                }
            }
            Stage::Payload { hasher, remaining } => {
                // Step 9: exactly payload_size bytes, hashed as they pass.
                let chunk = take(data, *remaining);
                hasher.update(chunk);
                *remaining = remaining.saturating_sub(chunk.len() as u64);
                if *remaining > 0 {
                    return Ok(());
                }
                let digest: [u8; 32] = hasher.finalize_reset().into();
                let checked = self.checked.as_ref().ok_or(Error::Truncated)?;
                // Over the installed image of an encrypted release, the plaintext digest.
                if digest != *self.policy.expected_digest(&checked.manifest) {
                    return Err(Error::DigestMismatch);
                }
                self.stage = Stage::Complete;
            }
            Stage::Complete => return Err(Error::TrailingData),
            Stage::Failed(e) => return Err(*e),
        }
        Ok(())
    }
}

/// Steps R1–R3 and 2–7: walk the root chain to the root the key set is signed under, decode the
/// envelope, verify the key set under that root, verify the manifest under the key set, decode
/// the manifest and apply the cross-checks and the device policy. `region` is the root chain
/// and the envelope, or the envelope alone when the chain was streamed (to `reached`).
fn check_envelope<'a>(
    root: &'a TrustRoot,
    policy: &DevicePolicy<'_>,
    header: BundleHeader,
    region: &'a [u8],
    reached: Option<ReachedRoot<'a>>,
    out: &mut Option<Checked<'a>>,
) -> Result<(), Error> {
    let (reached, envelope) = match reached {
        Some(reached) => (reached, region),
        None => {
            let (chain, envelope) = region
                .split_at_checked(header.chain_len as usize)
                .ok_or(Error::Truncated)?;
            // Steps R1–R3: from the device's root along the chain, one version at a time.
            let chain = (header.chain_len > 0).then_some(chain);
            (walk(root.as_ref(), policy.root_floor, chain)?, envelope)
        }
    };
    let root_info = RootReached {
        version: reached.root.root_version,
        floor: reached.floor(),
    };

    // Step 2: strict, canonical parse of the envelope, signatures left in place.
    let envelope = EnvelopeView::parse(envelope)?;

    // Steps 3–5: the key set, signed by the root threshold over its exact bytes, then decoded.
    let key_set = verify_key_set(
        envelope.key_set,
        envelope.key_set_signatures.iter(),
        reached.root,
        reached.digest.is_some(),
    )?
    .into_key_set();
    // Step 5c: a key set older than the device has confirmed is revoked.
    if key_set.version < policy.min_key_set_version {
        return Err(Error::KeySetRolledBack);
    }

    // Step 6: the release threshold of the key set signed the exact manifest bytes.
    verify_threshold(
        envelope.manifest,
        envelope.manifest_signatures.iter(),
        key_set.keys,
        key_set.threshold,
        Signed::Manifest,
    )?;

    check_manifest(policy, header, key_set, envelope.manifest, root_info, out)
}

/// Step 7 over a manifest whose signatures passed. Kept out of line: its temporaries then never
/// sit on the stack below the signature checks, the deepest part of verification (this is
/// what keeps the bootloader within its RAM budget).
#[inline(never)]
fn check_manifest<'a>(
    policy: &DevicePolicy<'_>,
    header: BundleHeader,
    key_set: KeySet<'a>,
    manifest_bytes: &'a [u8],
    root: RootReached,
    out: &mut Option<Checked<'a>>,
) -> Result<(), Error> {
    // Step 7a: strict decode of the signed manifest and its field ranges.
    let manifest = Manifest::decode(manifest_bytes)?;
    if manifest.payload_size == 0 {
        return Err(Error::BadLength(Document::Manifest));
    }
    // Step 7b: the unsigned header agrees with the signed manifest.
    if header.payload_size != manifest.payload_size {
        return Err(Error::PayloadSizeMismatch);
    }
    if header.payload_offset != align_up(header.envelope_end()?, manifest.payload_alignment)? {
        return Err(Error::BadPayloadOffset);
    }
    // Step 7c: the key set's product scope.
    if let Some(scope) = &key_set.product_scope {
        if *scope != manifest.product {
            return Err(Error::OutOfKeySetScope);
        }
    }
    check_policy(policy, &manifest)?;
    *out = Some(Checked {
        header,
        manifest,
        manifest_bytes,
        key_set,
        root,
    });
    Ok(())
}

/// Steps 7d–7j: the device policy.
fn check_policy(policy: &DevicePolicy<'_>, manifest: &Manifest<'_>) -> Result<(), Error> {
    // 7d: product.
    if let Some(product) = &policy.product {
        if *product != manifest.product {
            return Err(Error::WrongProduct);
        }
    }
    // 7e: component.
    if let Some(component) = policy.component {
        if component != manifest.component {
            return Err(Error::WrongComponent);
        }
    }
    // 7f: anti-rollback; equal counters are allowed (same-security re-release).
    if manifest.security_counter < policy.min_security_counter {
        return Err(Error::CounterRolledBack);
    }
    // 7g: newer than what runs.
    if let Some((running, order)) = &policy.newer_than {
        if order(&manifest.version, running) != Ordering::Greater {
            return Err(Error::NotNewer);
        }
    }
    // 7h: expiry, only where the device has trusted time.
    if let (Some(now), Some(expires)) = (policy.now, manifest.expires) {
        if now >= expires {
            return Err(Error::Expired);
        }
    }
    // 7i: minimum bootloader version.
    if let (Some(have), Some(need)) = (policy.bootloader_version, manifest.min_bootloader_version) {
        if have < need {
            return Err(Error::BootloaderTooOld);
        }
    }
    // 7j: dependencies.
    if let Some((installed, order)) = policy.installed {
        for dep in &manifest.dependencies {
            let ok = installed.iter().any(|c| {
                c.component == dep.component
                    && order(&c.version, &dep.min_version) != Ordering::Less
            });
            if !ok {
                return Err(Error::DependencyUnmet);
            }
        }
    }
    // 7k: an encrypted payload only where the consumer accepts one.
    if policy.encrypted == EncryptedPayload::Refused
        && manifest.payload_format.encryption().is_some()
    {
        return Err(Error::EncryptedPayloadRefused);
    }
    Ok(())
}

/// Verifies the bundle at the start of `region` without copying its envelope: for bundles the
/// caller can read in place for the whole verification, such as memory-mapped flash in a
/// bootloader. Bytes after the bundle's end are not read. The same stages run as for a stream;
/// only the envelope stays where it is, so no envelope buffer is needed.
pub fn verify_in_place<'a>(
    root: &'a TrustRoot,
    policy: DevicePolicy<'a>,
    region: &'a [u8],
) -> Result<VerifiedBundle<'a>, Error> {
    let mut verifier = BundleVerifier::<'a, true> {
        root,
        policy,
        stage: Stage::Header {
            buf: [0; HEADER_LEN],
            filled: 0,
            scratch: EnvelopeBytes::InPlace(region),
        },
        checked: None,
        consumed: 0,
        total: None,
    };
    let header = region.get(..HEADER_LEN).ok_or(Error::Truncated)?;
    verifier.feed(header)?;
    let total = verifier.total_len().ok_or(Error::Truncated)?;
    // Feed up to the bundle's end, or what the region holds: a short region then ends as a
    // truncated stream would, after the checks its bytes allow.
    let body = region.get(HEADER_LEN..).unwrap_or(&[]);
    let len = usize::try_from(total.saturating_sub(HEADER_LEN as u64)).unwrap_or(usize::MAX);
    verifier.feed(body.get(..len).unwrap_or(body))?;
    verifier.finish()
}

/// Verifies a bundle held entirely in memory (tests, small bundles, tools).
pub fn verify_bundle<'a>(
    root: &'a TrustRoot,
    policy: DevicePolicy<'a>,
    bundle: &[u8],
    envelope_buf: &'a mut [u8],
) -> Result<VerifiedBundle<'a>, Error> {
    let mut verifier = BundleVerifier::new(root, policy, envelope_buf);
    verifier.feed(bundle)?;
    verifier.finish()
}
