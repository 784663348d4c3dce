//! Encrypted releases (manifests/FORMAT.md §9) through the real server: the agent stages the
//! ciphertext bundle and, beside it, the key record the server handed it; a device whose
//! configured encryption key is not the record's recipient refuses to stage.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use sha2::{Digest, Sha256};
use sigil_agent::keyrecord::STAGED_RECORD_FILE;
use sigil_agent::CycleOutcome;
use sigil_manifests::encryption::{ContentKey, DeviceKey};
use sigil_manifests::*;

const X25519_SEED: u8 = 21;

/// The bundle of `spec` with its payload encrypted under `key`, and its manifest digest.
fn encrypted_bundle(spec: &Spec, cek: &ContentKey) -> (Vec<u8>, [u8; 32]) {
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
    (bundle, digest)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_stages_the_record_beside_the_encrypted_bundle() {
    let server = RealServer::start().await;
    let (bundle, digest) =
        encrypted_bundle(&Spec::new("1.1.0", 2), &ContentKey::from_bytes([0x33; 32]));
    let record = serve(&server, bundle, digest).await;
    let mut opts = DeviceOptions::new(&server.url);
    opts.device_extra = format!(
        "encryption_key = \"{}\"\n",
        hex::encode(DeviceKey::from_secret([X25519_SEED; 32]).public_key())
    );
    let device = Device::provision(&opts);
    let mut agent = device.agent();
    assert_eq!(
        agent.run_once().await.unwrap(),
        CycleOutcome::RebootRequested
    );
    assert!(device.install_requested());
    let staged = std::fs::read(device.path("state").join(STAGED_RECORD_FILE)).unwrap();
    assert_eq!(staged, record);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_for_another_device_key_is_refused_and_nothing_is_requested() {
    let server = RealServer::start().await;
    let (bundle, digest) =
        encrypted_bundle(&Spec::new("1.1.0", 2), &ContentKey::from_bytes([0x33; 32]));
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
    let reports = server.reports().await;
    assert!(
        reports
            .iter()
            .any(|(s, d)| s == "failed" && d.contains("key record is for another device")),
        "{reports:?}"
    );
}
