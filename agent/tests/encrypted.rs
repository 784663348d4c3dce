//! Encrypted releases (manifests/FORMAT.md §9) through the real server: the agent stages the
//! ciphertext bundle and the key record the server handed it into the staging slot, where the
//! host bootloader (feature `encryption`, the device key given) opens it and decrypts while it
//! installs; power cuts at every flash operation of the stage; the `state-dir` placement; a
//! device whose configured encryption key is not the record's recipient refuses to stage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use futures_util::FutureExt;
use sha2::{Digest, Sha256};
use sigil_agent::keyrecord::STAGED_RECORD_FILE;
use sigil_agent::slots::{SlotError, Slots};
use sigil_agent::CycleOutcome;
use sigil_bootloader::{
    BootConfig, BootState, Bootloader, DeviceSecret, ImageDigest, Layout, VerifiedImage,
    KEY_RECORD_UNIT,
};
use sigil_manifests::encryption::{ContentKey, DeviceKey};
use sigil_manifests::*;

const X25519_SEED: u8 = 21;

/// The bundle of `spec` with its payload encrypted under `key`, and its manifest digest.
fn encrypted_bundle(spec: &Spec, cek: &ContentKey) -> (Vec<u8>, [u8; 32]) {
    let (bundle, digest, _) = encrypted_bundle_and_plain(spec, cek);
    (bundle, digest)
}

/// [`encrypted_bundle`] and the plaintext payload.
fn encrypted_bundle_and_plain(spec: &Spec, cek: &ContentKey) -> (Vec<u8>, [u8; 32], Vec<u8>) {
    let plain = payload(spec.payload_len, spec.salt);
    let encryption = cek.encryption(Sha256::digest(&plain).into());
    let mut cipher = plain.clone();
    cek.payload_cipher(&encryption, cipher.len() as u64)
        .unwrap()
        .apply(0, &mut cipher)
        .unwrap();
    let manifest = Manifest {
        product: product(),
        component: "app",
        version: Version::parse(spec.version).unwrap(),
        security_counter: spec.counter,
        payload_size: cipher.len() as u64,
        payload_digest: Sha256::digest(&cipher).into(),
        payload_format: PayloadFormat::Encrypted(encryption),
        payload_alignment: 64,
        min_bootloader_version: None,
        dependencies: heapless::Vec::new(),
        created: 1_700_000_000,
        expires: None,
        release_notes_digest: None,
        sbom_digest: None,
    }
    .encode()
    .unwrap();
    let digest: [u8; 32] = Sha256::digest(&manifest).into();
    let ks = KeySet::new(1, 1, None, &[public(spec.release_key)])
        .unwrap()
        .encode()
        .unwrap();
    let [r1, r2] = spec.root_signers.map(key);
    let bundle = assemble_bundle(
        &ks,
        &[&r1, &r2],
        &manifest,
        &[&key(spec.release_key)],
        &cipher,
    )
    .unwrap();
    (bundle, digest, plain)
}

/// Enrols the device with its encryption key, uploads the encrypted release and its record,
/// deploys it; the record.
async fn serve(server: &RealServer, bundle: Vec<u8>, digest: [u8; 32]) -> Vec<u8> {
    let device_public = DeviceKey::from_secret([X25519_SEED; 32]).public_key();
    let (s, v) = server
        .call(
            "POST",
            "/api/v1/devices",
            &server.operator,
            Some(serde_json::json!({
                "id": DEVICE_ID,
                "product": { "vendor": "acme", "device": "pump-x2" },
                "public_key": hex::encode(public(DEVICE_SEED)),
                "encryption_key": hex::encode(device_public),
            })),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = server.upload(bundle).await;
    assert_eq!(s, 201, "{v}");
    let release = v["id"].as_str().unwrap().to_owned();
    let record = ContentKey::from_bytes([0x33; 32])
        .wrap(&device_public, [5; 32], digest)
        .unwrap()
        .encode()
        .to_vec();
    let res = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/releases/{release}/key-records",
            server.url
        ))
        .bearer_auth(&server.release)
        .header("content-type", "application/octet-stream")
        .body(record.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let (s, v) = server
        .call(
            "POST",
            "/api/v1/deployments",
            &server.operator,
            Some(serde_json::json!({
                "release": release,
                "target": { "kind": "devices", "value": [DEVICE_ID] },
            })),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    record
}

fn device_public() -> [u8; 32] {
    DeviceKey::from_secret([X25519_SEED; 32]).public_key()
}

fn options(server: &RealServer) -> DeviceOptions {
    let mut opts = DeviceOptions::new(&server.url);
    opts.device_extra = format!("encryption_key = \"{}\"\n", hex::encode(device_public()));
    opts
}

/// One boot of the host bootloader with this device's X25519 key in its protected storage.
fn boot_with_key(flash_path: &Path) -> Result<VerifiedImage, sigil_bootloader::Error> {
    struct Unlocked;
    impl sigil_bootloader::StateLock for Unlocked {
        fn lock(&mut self, _: std::ops::Range<u32>) -> Result<(), sigil_bootloader::LockFailed> {
            Ok(())
        }
    }
    let secret = DeviceSecret::new([X25519_SEED; 32], device_public());
    let flash = Flash::open(flash_path, 0xFF).unwrap();
    let root = root();
    let config = BootConfig::new(&root, product(), "app")
        .with_trial_attempts(1)
        .with_device_key(&secret);
    let mut bl = Bootloader::new(flash, layout(), config).unwrap();
    let mut buf = vec![0u8; MAX_ENVELOPE_LEN];
    bl.boot(&mut buf, &mut Unlocked)
}

/// The flash image's bytes in `range`.
fn flash_bytes(device: &Device, range: std::ops::Range<u32>) -> Vec<u8> {
    let all = std::fs::read(&device.flash_path).unwrap();
    all[range.start as usize..range.end as usize].to_vec()
}

/// The 256-byte unit at the key-record offset of a staged bundle of `len` bytes.
fn record_unit(device: &Device, len: u64) -> Vec<u8> {
    let at = layout().staged_bundle_offset() + layout().key_record_offset(len).unwrap();
    flash_bytes(device, at..at + KEY_RECORD_UNIT)
}

/// The record as its unit holds it: the record, then erased bytes.
fn unit_of(record: &[u8]) -> Vec<u8> {
    let mut unit = record.to_vec();
    unit.resize(KEY_RECORD_UNIT as usize, 0xFF);
    unit
}

/// Panics if the staging slot holds a 32-byte-aligned block of `plain` (the payload is
/// 64-byte aligned in its bundle and sectors are multiples of 32 bytes).
fn assert_no_plaintext_in_staging(device: &Device, plain: &[u8], when: &str) {
    let secret: HashSet<&[u8]> = plain.chunks_exact(32).collect();
    let l = layout();
    let slot = flash_bytes(
        device,
        l.staging_offset()..l.staging_offset() + (SLOT_SECTORS + 1) * SECTOR,
    );
    let hits = slot.chunks_exact(32).filter(|b| secret.contains(b)).count();
    assert_eq!(
        hits, 0,
        "{when}: the staging slot holds {hits} plaintext blocks"
    );
}

/// The encrypted release v1.1.0 whose bundle is `len` bytes long (within a few bytes: the
/// payload is sized to it), its digest and plaintext.
fn release_of_len(len: usize) -> (Vec<u8>, [u8; 32], Vec<u8>) {
    let cek = ContentKey::from_bytes([0x33; 32]);
    let mut spec = Spec::new("1.1.0", 2);
    spec.payload_len = 1000;
    let fixed = encrypted_bundle(&spec, &cek).0.len() - spec.payload_len;
    spec.payload_len = len - fixed;
    let out = encrypted_bundle_and_plain(&spec, &cek);
    assert_eq!(
        out.0.len(),
        len,
        "the envelope's length does not depend on the payload size"
    );
    out
}

/// Boots the staged install and checks the image the bootloader decrypted: v1.1.0 on trial,
/// its payload in the active slot the plaintext, none of it left in the staging slot.
fn boot_and_check_decrypted(device: &Device, plain: &[u8]) {
    let image = boot_with_key(&device.flash_path).expect("the encrypted install boots");
    assert!(image.is_trial());
    assert_eq!(image.security_counter(), 2, "the new image is active");
    let at = image.payload_offset();
    assert_eq!(image.payload_size(), plain.len() as u64);
    assert!(
        flash_bytes(device, at..at + plain.len() as u32) == plain,
        "the active slot holds the decrypted payload"
    );
    assert_no_plaintext_in_staging(device, plain, "after the install");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_goes_into_the_staging_slot_and_the_bootloader_decrypts_the_install() {
    let server = RealServer::start().await;
    let (bundle, digest, plain) = release_of_len(150_000);
    let len = bundle.len() as u64;
    let record = serve(&server, bundle, digest).await;
    let device = Device::provision(&options(&server));
    let mut agent = device.agent();
    assert_eq!(
        agent.run_once().await.unwrap(),
        CycleOutcome::RebootRequested
    );
    assert!(device.install_requested());
    // Where the bootloader reads it, in a unit of its own; no file in the state directory.
    assert_eq!(record_unit(&device, len), unit_of(&record));
    assert!(!device.path("state").join(STAGED_RECORD_FILE).exists());
    assert_no_plaintext_in_staging(&device, &plain, "staged");

    boot_and_check_decrypted(&device, &plain);
    drop(agent);
    let mut agent = device.agent();
    assert_eq!(agent.run_once().await.unwrap(), CycleOutcome::Confirmed);
    let image = boot_with_key(&device.flash_path).unwrap();
    assert!(!image.is_trial(), "confirmed");
    assert_eq!(image.security_counter(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_alone_in_the_sector_after_the_bundle_is_written_over_stale_bytes() {
    let server = RealServer::start().await;
    // The bundle fills its last sector: the record's unit starts the next one.
    let (bundle, digest, plain) = release_of_len(20 * SECTOR as usize);
    let len = bundle.len() as u64;
    assert_eq!(layout().key_record_offset(len), Some(20 * SECTOR));
    let record = serve(&server, bundle, digest).await;
    let device = Device::provision(&options(&server));
    // That sector holds bytes of an older, longer bundle (or a torn record).
    {
        use embedded_storage::nor_flash::NorFlash;
        let mut flash = Flash::open(&device.flash_path, 0xFF).unwrap();
        let at = layout().staged_bundle_offset() + 20 * SECTOR;
        flash.erase(at, at + SECTOR).unwrap();
        flash.write(at, &[0x5A; 512]).unwrap();
    }
    let mut agent = device.agent();
    assert_eq!(
        agent.run_once().await.unwrap(),
        CycleOutcome::RebootRequested
    );
    assert_eq!(record_unit(&device, len), unit_of(&record));
    boot_and_check_decrypted(&device, &plain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_dir_placement_writes_the_record_beside_the_bundle_as_a_file() {
    let server = RealServer::start().await;
    let (bundle, digest, _) = release_of_len(150_000);
    let len = bundle.len() as u64;
    let record = serve(&server, bundle, digest).await;
    let mut opts = options(&server);
    opts.flash_extra = "key_record = \"state-dir\"\n".to_owned();
    let device = Device::provision(&opts);
    let mut agent = device.agent();
    assert_eq!(
        agent.run_once().await.unwrap(),
        CycleOutcome::RebootRequested
    );
    assert!(device.install_requested());
    let staged = std::fs::read(device.path("state").join(STAGED_RECORD_FILE)).unwrap();
    assert_eq!(staged, record);
    assert_eq!(
        record_unit(&device, len),
        vec![0xFF; KEY_RECORD_UNIT as usize]
    );
}

/// Boot control that loses power at its `at`-th flash operation (erase, program, request),
/// counting from 0: the operation does not happen (`torn`: a program writes its first half),
/// and the agent stops there, as a device losing power does (a panic that the test catches;
/// nothing the agent would do after it reaches the flash, the state file or the server).
struct PowerCut {
    inner: Box<dyn Slots>,
    ops: Arc<AtomicUsize>,
    at: usize,
    torn: bool,
}

const CUT: &str = "power cut";

impl PowerCut {
    fn op(&mut self) -> bool {
        self.ops.fetch_add(1, Ordering::SeqCst) == self.at
    }
}

impl Slots for PowerCut {
    fn reload(&mut self) -> Result<BootState, SlotError> {
        self.inner.reload()
    }
    fn state(&self) -> BootState {
        self.inner.state()
    }
    fn layout(&self) -> Layout {
        self.inner.layout()
    }
    fn erase_staged(&mut self, from: u32, to: u32) -> Result<(), SlotError> {
        if self.op() {
            panic!("{CUT}");
        }
        self.inner.erase_staged(from, to)
    }
    fn write_staged(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SlotError> {
        if self.op() {
            if self.torn {
                let half = bytes.len() / 2 / 8 * 8;
                let _ = self.inner.write_staged(offset, &bytes[..half]);
            }
            panic!("{CUT}");
        }
        self.inner.write_staged(offset, bytes)
    }
    fn read_staged(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), SlotError> {
        self.inner.read_staged(offset, buf)
    }
    fn write_key_record(&mut self, bundle_len: u64, record: &[u8]) -> Result<(), SlotError> {
        if self.op() {
            if self.torn {
                // The record's unit, first half programmed.
                let at = self.layout().key_record_offset(bundle_len).unwrap();
                let _ = self.inner.write_staged(at, &record[..64]);
            }
            panic!("{CUT}");
        }
        self.inner.write_key_record(bundle_len, record)
    }
    fn set_bulk(&mut self, bulk: bool) {
        self.inner.set_bulk(bulk)
    }
    fn sync(&mut self) -> Result<(), SlotError> {
        self.inner.sync()
    }
    fn request_install(&mut self, digest: &ImageDigest) -> Result<(), SlotError> {
        if self.op() {
            panic!("{CUT}");
        }
        self.inner.request_install(digest)
    }
    fn install_requested(&self) -> Option<ImageDigest> {
        self.inner.install_requested()
    }
    fn cancel(&mut self) -> Result<(), SlotError> {
        if self.op() {
            panic!("{CUT}");
        }
        self.inner.cancel()
    }
    fn confirm(&mut self, digest: &ImageDigest) -> Result<(), SlotError> {
        if self.op() {
            panic!("{CUT}");
        }
        self.inner.confirm(digest)
    }
    fn confirm_requested(&self) -> bool {
        self.inner.confirm_requested()
    }
    fn verify_staged<'b>(
        &mut self,
        root: &'b TrustRoot,
        policy: DevicePolicy<'b>,
        envelope_buf: &'b mut [u8],
    ) -> Result<VerifiedBundle<'b>, SlotError> {
        self.inner.verify_staged(root, policy, envelope_buf)
    }
    fn verify_active<'b>(
        &mut self,
        root: &'b TrustRoot,
        policy: DevicePolicy<'b>,
        envelope_buf: &'b mut [u8],
    ) -> Result<VerifiedBundle<'b>, SlotError> {
        self.inner.verify_active(root, policy, envelope_buf)
    }
}

/// One cycle of an agent over `PowerCut` boot control; `true` if the power was cut.
async fn cycle_with_cut(device: &Device, at: usize, torn: bool, ops: &Arc<AtomicUsize>) -> bool {
    let config = device.config();
    let inner = sigil_agent::slots::open(&config.flash.path, config.flash.layout).unwrap();
    let slots = PowerCut {
        inner,
        ops: ops.clone(),
        at,
        torn,
    };
    let mut agent = sigil_agent::Agent::with_slots(config, Box::new(slots)).unwrap();
    let run = std::panic::AssertUnwindSafe(agent.run_once())
        .catch_unwind()
        .await;
    match run {
        Ok(outcome) => {
            assert_eq!(outcome.unwrap(), CycleOutcome::RebootRequested);
            false
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .unwrap_or_default();
            assert_eq!(what, CUT, "only the power cut stops the agent");
            true
        }
    }
}

/// Cuts the power at every flash operation of an encrypted stage (whole, and torn programs),
/// for a record in the bundle's last sector and for one alone in the next sector. After each
/// cut: an install request exists only with the complete record beside a complete bundle; the
/// agent started again stages the release, and the bootloader decrypts and boots it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_at_any_flash_operation_of_the_stage_never_leaves_a_request_for_an_incomplete_stage(
) {
    // Silence the expected panics' messages; others still print.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<String>().map(String::as_str) != Some(CUT) {
            default_hook(info);
        }
    }));
    for len in [3 * SECTOR as usize - 1000, 3 * SECTOR as usize] {
        let (bundle, digest, plain) = release_of_len(len);
        let mut at = 0;
        loop {
            let mut completed = false;
            for torn in [false, true] {
                let when = format!("bundle of {len} bytes, cut at operation {at} (torn: {torn})");
                let server = RealServer::start().await;
                let record = serve(&server, bundle.clone(), digest).await;
                let device = Device::provision(&options(&server));
                let ops = Arc::new(AtomicUsize::new(0));
                if !cycle_with_cut(&device, at, torn, &ops).await {
                    // Past the stage's last operation: it completed uncut.
                    assert!(device.install_requested(), "{when}");
                    assert_eq!(record_unit(&device, len as u64), unit_of(&record), "{when}");
                    boot_and_check_decrypted(&device, &plain);
                    completed = true;
                    continue;
                }
                if device.install_requested() {
                    assert_eq!(
                        record_unit(&device, len as u64),
                        unit_of(&record),
                        "{when}: an install request beside an incomplete record"
                    );
                }
                assert_no_plaintext_in_staging(&device, &plain, &when);
                // Power back: the agent starts again (a cycle may report the interrupted
                // stage; one of the next stages the release again).
                let mut outcome = None;
                for _ in 0..3 {
                    let mut agent = device.agent();
                    let o = agent.run_once().await.unwrap();
                    if o == CycleOutcome::RebootRequested {
                        outcome = Some(o);
                        break;
                    }
                }
                assert_eq!(outcome, Some(CycleOutcome::RebootRequested), "{when}");
                assert_eq!(record_unit(&device, len as u64), unit_of(&record), "{when}");
                boot_and_check_decrypted(&device, &plain);
            }
            if completed {
                // At least: erase, program the bundle, the record, the request.
                assert!(at >= 4, "only {at} flash operations in the stage");
                break;
            }
            at += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_for_another_device_key_is_refused_and_nothing_is_requested() {
    let server = RealServer::start().await;
    let (bundle, digest) =
        encrypted_bundle(&Spec::new("1.1.0", 2), &ContentKey::from_bytes([0x33; 32]));
    let len = bundle.len() as u64;
    serve(&server, bundle, digest).await;
    let mut opts = DeviceOptions::new(&server.url);
    // Configured with another device's encryption key: the record is not for it.
    opts.device_extra = format!(
        "encryption_key = \"{}\"\n",
        hex::encode(DeviceKey::from_secret([X25519_SEED + 1; 32]).public_key())
    );
    let device = Device::provision(&opts);
    let mut agent = device.agent();
    let outcome = agent.run_once().await.unwrap();
    assert!(matches!(outcome, CycleOutcome::Failed(_)), "{outcome:?}");
    assert!(!device.install_requested());
    assert!(!device.path("state").join(STAGED_RECORD_FILE).exists());
    assert_eq!(
        record_unit(&device, len),
        vec![0xFF; KEY_RECORD_UNIT as usize]
    );
    let reports = server.reports().await;
    assert!(
        reports
            .iter()
            .any(|(s, d)| s == "failed" && d.contains("key record is for another device")),
        "{reports:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_the_server_withholds_the_release_from_reports_why_once() {
    let server = RealServer::start().await;
    let (bundle, digest) =
        encrypted_bundle(&Spec::new("1.1.0", 2), &ContentKey::from_bytes([0x33; 32]));
    serve(&server, bundle, digest).await;
    // The device's enrolled encryption key changes: the record names the old one.
    let other = DeviceKey::from_secret([X25519_SEED + 2; 32]).public_key();
    let (s, v) = server
        .call(
            "PUT",
            &format!("/api/v1/devices/{DEVICE_ID}/encryption-key"),
            &server.operator,
            Some(serde_json::json!({ "encryption_key": hex::encode(other) })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut opts = DeviceOptions::new(&server.url);
    opts.device_extra = format!("encryption_key = \"{}\"\n", hex::encode(other));
    let device = Device::provision(&opts);
    let mut agent = device.agent();
    assert_eq!(agent.run_once().await.unwrap(), CycleOutcome::UpToDate);
    assert_eq!(agent.run_once().await.unwrap(), CycleOutcome::UpToDate);
    assert!(!device.install_requested());
    let told: Vec<_> = server
        .reports()
        .await
        .into_iter()
        .filter(|(_, d)| d.contains("withheld by the server"))
        .collect();
    assert_eq!(told.len(), 1, "reported once: {told:?}");
    assert!(told[0].1.contains("no key record for device"), "{told:?}");
    assert_eq!(told[0].0, "idle");
}
