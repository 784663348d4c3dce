//! Shared set-up for the agent tests: signed bundles, a provisioned device (flash image with
//! a confirmed v1.0.0, key, trust root, configuration), the bootloader's host boot logic on
//! the same flash file, and the real `sigil-server` on a loopback port.
#![allow(dead_code)]
// Test set-up: a failure here is a broken fixture and should panic loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use embedded_storage::nor_flash::NorFlash;
use sha2::{Digest, Sha256};
use sigil_agent::{AgentConfig, FileFlash};
use sigil_bootloader::{BootConfig, BootState, Bootloader, Geometry, Layout, VerifiedImage};
use sigil_manifests::*;

/// Test flash: 4 KiB sectors, 8-byte program unit.
pub type Flash = FileFlash<4096, 8>;
pub const SECTOR: u32 = 4096;
pub const SLOT_SECTORS: u32 = 64;
pub const GEOMETRY: Geometry = Geometry {
    erase_size: SECTOR,
    write_size: 8,
    read_size: 1,
    erased: 0xFF,
};
pub const REQUESTS: u32 = 2 * SECTOR;
pub const ACTIVE: u32 = 3 * SECTOR;
pub const STAGING: u32 = ACTIVE + SLOT_SECTORS * SECTOR;
pub const FLASH_SECTORS: usize = (3 + SLOT_SECTORS + SLOT_SECTORS + 1) as usize;

pub fn layout() -> Layout {
    Layout::new(GEOMETRY, 0, REQUESTS, ACTIVE, STAGING, SLOT_SECTORS).unwrap()
}

pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn public(seed: u8) -> PublicKey {
    key(seed).verifying_key().to_bytes()
}

pub const ROOT_SEEDS: [u8; 3] = [1, 2, 3];
pub const DEVICE_SEED: u8 = 77;
pub const DEVICE_ID: &str = "pump-0001";

pub fn root() -> TrustRoot {
    TrustRoot::new(1, 2, &ROOT_SEEDS.map(public)).unwrap()
}

pub fn product() -> ProductId<'static> {
    ProductId::new("acme", "pump-x2").unwrap()
}

/// What a test bundle looks like.
#[derive(Clone)]
pub struct Spec {
    pub vendor: &'static str,
    pub device: &'static str,
    pub version: &'static str,
    pub counter: u32,
    pub key_set_version: u32,
    pub root_signers: [u8; 2],
    pub release_key: u8,
    pub payload_len: usize,
    /// Declared payload size if different from the real one (an "endless" header).
    pub declared_size: Option<u64>,
    pub salt: u8,
    /// Manifest expiry (Unix seconds).
    pub expires: Option<u64>,
}

impl Spec {
    pub fn new(version: &'static str, counter: u32) -> Self {
        Spec {
            vendor: "acme",
            device: "pump-x2",
            version,
            counter,
            key_set_version: 1,
            root_signers: [1, 2],
            release_key: 11,
            payload_len: 150_000,
            declared_size: None,
            salt: counter as u8,
            expires: None,
        }
    }
}

pub fn payload(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ salt)
        .collect()
}

/// A signed bundle.
pub fn bundle(spec: &Spec) -> Vec<u8> {
    let payload = payload(spec.payload_len, spec.salt);
    let manifest = Manifest {
        product: ProductId::new(spec.vendor, spec.device).unwrap(),
        component: "app",
        version: Version::parse(spec.version).unwrap(),
        security_counter: spec.counter,
        payload_size: spec.declared_size.unwrap_or(payload.len() as u64),
        payload_digest: Sha256::digest(&payload).into(),
        payload_format: PayloadFormat::Raw,
        payload_alignment: 64,
        min_bootloader_version: None,
        dependencies: heapless::Vec::new(),
        created: 1_700_000_000,
        expires: spec.expires,
        release_notes_digest: None,
        sbom_digest: None,
    }
    .encode()
    .unwrap();
    let ks = KeySet::new(spec.key_set_version, 1, None, &[public(spec.release_key)])
        .unwrap()
        .encode()
        .unwrap();
    let [r1, r2] = spec.root_signers.map(key);
    assemble_bundle(
        &ks,
        &[&r1, &r2],
        &manifest,
        &[&key(spec.release_key)],
        &payload,
    )
    .unwrap()
}

pub fn release_id(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Options of a provisioned device.
#[derive(Clone)]
pub struct DeviceOptions {
    pub server_url: String,
    pub install_permission: Option<String>,
    pub health_check: Option<String>,
    pub reboot: String,
    pub max_attempts: u32,
    pub max_requests: u32,
    pub stall_timeout: &'static str,
    pub active_key_set_version: u32,
    /// Version and security counter of the image in the active slot.
    pub active_version: &'static str,
    pub active_counter: u32,
    /// Boot once after provisioning (the bootloader raises the stored floors to the active
    /// image's); `false`: the factory provisioned floor 0 and the device never booted since.
    pub boot_after_provisioning: bool,
    /// Appended to the `[device]` table.
    pub device_extra: String,
    /// Appended to the `[flash]` table.
    pub flash_extra: String,
    /// Appended to the `[download]` table.
    pub download_extra: String,
    /// Appended to the configuration file.
    pub extra: String,
}

impl DeviceOptions {
    pub fn new(server_url: &str) -> Self {
        DeviceOptions {
            server_url: server_url.to_owned(),
            install_permission: None,
            health_check: None,
            reboot: "exit 0".to_owned(),
            max_attempts: 4,
            max_requests: 32,
            stall_timeout: "500ms",
            active_key_set_version: 1,
            active_version: "1.0.0",
            active_counter: 1,
            boot_after_provisioning: true,
            device_extra: String::new(),
            flash_extra: String::new(),
            download_extra: String::new(),
            extra: String::new(),
        }
    }
}

/// A provisioned device in a temporary directory.
pub struct Device {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub flash_path: PathBuf,
}

fn sh(script: &str) -> String {
    format!("[\"/bin/sh\", \"-c\", {}]", toml_str(script))
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Device {
    /// Flash with a confirmed v1.0.0 (counter 1) in the active slot, key, root, config.
    pub fn provision(opts: &DeviceOptions) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let flash_path = d.join("flash.img");
        let mut flash = Flash::create(&flash_path, FLASH_SECTORS, 0xFF).unwrap();
        let mut spec = Spec::new(opts.active_version, opts.active_counter);
        spec.key_set_version = opts.active_key_set_version;
        spec.payload_len = 20_000;
        let mut active = bundle(&spec);
        active.resize(active.len().div_ceil(8) * 8, 0xFF);
        flash.erase(ACTIVE, ACTIVE + SLOT_SECTORS * SECTOR).unwrap();
        flash.write(ACTIVE, &active).unwrap();
        if opts.boot_after_provisioning {
            drop(flash);
            let image = boot(&flash_path).expect("the provisioned image boots");
            assert!(!image.is_trial());
        } else {
            let floors = sigil_bootloader::Floors {
                security_counter: 0,
                key_set_version: 0,
                root: None,
            };
            sigil_bootloader::provision(&mut flash, &layout(), floors).unwrap();
            drop(flash);
        }

        std::fs::write(
            d.join("device.pem"),
            key(DEVICE_SEED)
                .to_pkcs8_pem(Default::default())
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        std::fs::write(d.join("root.sgl"), root().encode().unwrap()).unwrap();
        let mut hooks = format!("reboot = {}\n", sh(&opts.reboot));
        if let Some(p) = &opts.install_permission {
            hooks.push_str(&format!("install_permission = {}\n", sh(p)));
        }
        if let Some(h) = &opts.health_check {
            hooks.push_str(&format!("health_check = {}\n", sh(h)));
        }
        let config = format!(
            r#"
[server]
url = "{url}"
request_timeout = "10s"

[device]
id = "{DEVICE_ID}"
key = "device.pem"
trust_root = "root.sgl"
product = "acme/pump-x2"
component = "app"
{device_extra}
[flash]
path = "flash.img"
erase_size = {SECTOR}
write_size = 8
protected_offset = 0
request_offset = {REQUESTS}
active_offset = {ACTIVE}
staging_offset = {STAGING}
slot_sectors = {SLOT_SECTORS}
{flash_extra}
[poll]
interval = "1s"
jitter = "0s"
defer_interval = "1s"

[download]
max_attempts = {attempts}
max_requests = {requests}
backoff_initial = "10ms"
backoff_max = "40ms"
stall_timeout = "{stall}"
checkpoint_bytes = 65536
{download_extra}

[hooks]
{hooks}timeout = "20s"

[state]
dir = "state"
{extra}
"#,
            url = opts.server_url,
            attempts = opts.max_attempts,
            requests = opts.max_requests,
            stall = opts.stall_timeout,
            device_extra = opts.device_extra,
            flash_extra = opts.flash_extra,
            download_extra = opts.download_extra,
            extra = opts.extra,
        );
        let config_path = d.join("agent.toml");
        std::fs::write(&config_path, config).unwrap();
        Device {
            dir,
            config_path,
            flash_path,
        }
    }

    pub fn config(&self) -> AgentConfig {
        AgentConfig::load(&self.config_path).unwrap()
    }

    pub fn agent(&self) -> sigil_agent::Agent {
        sigil_agent::Agent::new(self.config()).unwrap()
    }

    /// The protected boot state on the flash.
    pub fn boot_state(&self) -> BootState {
        let flash = Flash::open(&self.flash_path, 0xFF).unwrap();
        sigil_bootloader::BootControl::new(flash, layout())
            .unwrap()
            .state()
    }

    /// Whether the image on trial has its confirm request written.
    pub fn confirm_requested(&self) -> bool {
        let flash = Flash::open(&self.flash_path, 0xFF).unwrap();
        sigil_bootloader::BootControl::new(flash, layout())
            .unwrap()
            .confirm_requested()
    }

    /// Whether an install request waits for the next boot.
    pub fn install_requested(&self) -> bool {
        let flash = Flash::open(&self.flash_path, 0xFF).unwrap();
        sigil_bootloader::BootControl::new(flash, layout())
            .unwrap()
            .install_requested()
            .is_some()
    }

    /// Plays a reboot: the bootloader's host boot logic on the same flash file.
    pub fn reboot(&self) -> VerifiedImage {
        boot(&self.flash_path).expect("the device boots a verified image")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The host agent tests model no lock: the agent is the device's application, and what it
/// may write is what `BootControl` lets it write (the lock is tested in the bootloader's
/// hostile-application suite and on the reference board).
struct Unlocked;

impl sigil_bootloader::StateLock for Unlocked {
    fn lock(&mut self, _: std::ops::Range<u32>) -> Result<(), sigil_bootloader::LockFailed> {
        Ok(())
    }
}

/// One boot with trial budget 1.
pub fn boot(flash_path: &Path) -> Result<VerifiedImage, sigil_bootloader::Error> {
    let flash = Flash::open(flash_path, 0xFF).unwrap();
    let root = root();
    let config = BootConfig::new(&root, product(), "app").with_trial_attempts(1);
    let mut bl = Bootloader::new(flash, layout(), config).unwrap();
    let mut buf = vec![0u8; MAX_ENVELOPE_LEN];
    // The host agent tests model no lock (the device's application is the agent itself).
    bl.boot(&mut buf, &mut Unlocked)
}

/// The real sigil-server, in-process on a loopback port.
pub struct RealServer {
    // First, so it stops before its data directory goes.
    server: sigil_server::testing::LocalServer,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub operator: String,
    pub release: String,
}

/// The administrator's API token of [`RealServer`].
pub const ADMIN_TOKEN: &str = "sgl_test_admin";

impl RealServer {
    pub async fn start() -> RealServer {
        Self::start_with(&[]).await
    }

    /// With these server environment settings (e.g. `SIGIL_MIRROR_BASE_URL`).
    pub async fn start_with(vars: &[(&str, &str)]) -> RealServer {
        use sigil_server::store::Role;
        use sigil_server::testing::LocalServer;

        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root.sgl");
        std::fs::write(&root_path, root().encode().unwrap()).unwrap();
        let operator = "sgl_test_operator".to_owned();
        let release = "sgl_test_release".to_owned();
        let admin = ADMIN_TOKEN.to_owned();
        let server = LocalServer::start(
            &root_path,
            &dir.path().join("data"),
            vars,
            &[
                (&operator, Role::Operator),
                (&release, Role::Release),
                (&admin, Role::Admin),
            ],
        )
        .await
        .unwrap();
        RealServer {
            url: server.url.clone(),
            dir,
            operator,
            release,
            server,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        self.server.call(method, path, token, body).await.unwrap()
    }

    /// Uploads `bundle` with the release token.
    pub async fn upload(&self, bundle: Vec<u8>) -> (u16, serde_json::Value) {
        self.server.upload(&self.release, bundle).await.unwrap()
    }

    /// Gives the server the root chain `chain` as the administrator (root rotation).
    pub async fn put_root_chain(&self, chain: Vec<u8>) -> (u16, serde_json::Value) {
        self.server
            .put_root_chain(ADMIN_TOKEN, chain)
            .await
            .unwrap()
    }

    /// Enrols the test device, uploads `bundle` and deploys it to the device; the deployment id.
    pub async fn enrol_upload_deploy(&self, bundle: Vec<u8>) -> (String, i64) {
        let (s, v) = self
            .call(
                "POST",
                "/api/v1/devices",
                &self.operator,
                Some(serde_json::json!({
                    "id": DEVICE_ID,
                    "product": { "vendor": "acme", "device": "pump-x2" },
                    "public_key": hex::encode(public(DEVICE_SEED)),
                })),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let (s, v) = self.server.upload(&self.release, bundle).await.unwrap();
        assert_eq!(s, 201, "{v}");
        let release = v["id"].as_str().unwrap().to_owned();
        let (s, v) = self
            .call(
                "POST",
                "/api/v1/deployments",
                &self.operator,
                Some(serde_json::json!({
                    "release": release,
                    "target": { "kind": "devices", "value": [DEVICE_ID] },
                })),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        (release, v["id"].as_i64().unwrap())
    }

    /// The device's status in a deployment.
    pub async fn member_status(&self, deployment: i64) -> String {
        let (_, v) = self
            .call(
                "GET",
                &format!("/api/v1/deployments/{deployment}"),
                &self.operator,
                None,
            )
            .await;
        v["members"][0]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The device's reports, oldest first: (state, detail).
    pub async fn reports(&self) -> Vec<(String, String)> {
        let (_, v) = self
            .call(
                "GET",
                &format!("/api/v1/devices/{DEVICE_ID}/reports?limit=100"),
                &self.operator,
                None,
            )
            .await;
        let mut out: Vec<(String, String)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["state"].as_str().unwrap().to_owned(),
                    r["detail"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        out.reverse();
        out
    }
}
