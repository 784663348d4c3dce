//! The whole chain on loopback: the real `sigil-server` (in-process, as the agent's own tests
//! run it) on a free port with a temporary data directory, and devices that are a QEMU flash
//! image ([`crate::qemu::Device`]) plus a `sigil-agent` configuration for that same flash file.
//!
//! [`Stack`] owns a tokio runtime that serves the API; the tests themselves are synchronous
//! (QEMU runs block), so every API call and agent cycle is driven with [`Stack::block_on`]. An
//! agent cycle builds a new [`sigil_agent::Agent`] each time, as a fresh `sigil-agent --once`
//! process after a reboot would.
// Test harness: a broken set-up (server start, enrolment, file I/O) must stop the test loudly,
// with its cause, rather than be reported as a step's result.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sigil_agent::{Agent, AgentConfig, CycleOutcome};

use crate::qemu::{firmware, Device};
use crate::sigil::sigil;

/// The real server on a loopback port, and the runtime that serves it.
pub struct Stack {
    rt: tokio::runtime::Runtime,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The server's data directory (kept until the stack is dropped).
    pub dir: tempfile::TempDir,
    /// Operator token (enrols devices, creates deployments).
    pub operator: String,
    /// Release token (uploads bundles).
    pub release: String,
    server: Option<sigil_server::testing::LocalServer>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Stopped before the runtime and the data directory go.
        self.server.take();
    }
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack").field("url", &self.url).finish()
    }
}

/// A device identity: its id and its ed25519 key (`sigil keygen`), enrolled on the server.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Device id.
    pub id: String,
    /// The private key file.
    pub key: PathBuf,
}

impl Stack {
    /// Starts `sigil-server` with the firmware's trust root; `mirror_base_url`, when set, is
    /// where check-ins send devices to download (a mirror or CDN, trusted for nothing).
    pub fn start(mirror_base_url: Option<&str>) -> Stack {
        use sigil_server::store::Role;
        use sigil_server::testing::LocalServer;

        let fw = firmware();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root_path = fw.keys().join("root.sgl");
        let mut vars = Vec::new();
        if let Some(m) = mirror_base_url {
            vars.push(("SIGIL_MIRROR_BASE_URL", m));
        }
        let operator = "sgl_e2e_operator".to_owned();
        let release = "sgl_e2e_release".to_owned();
        let server = rt
            .block_on(LocalServer::start(
                &root_path,
                &dir.path().join("data"),
                &vars,
                &[(&operator, Role::Operator), (&release, Role::Release)],
            ))
            .unwrap();
        Stack {
            url: server.url.clone(),
            server: Some(server),
            rt,
            dir,
            operator,
            release,
        }
    }

    /// Runs `f` to completion on the stack's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Spawns `f` on the stack's runtime (a hostile mirror, for example).
    pub fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt.spawn(f)
    }

    /// One API call: the status and the JSON body (a string if it is not JSON).
    pub fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        self.block_on(self.server().call(method, path, token, body))
            .unwrap()
    }

    fn server(&self) -> &sigil_server::testing::LocalServer {
        self.server
            .as_ref()
            .expect("the server runs until the stack is dropped")
    }

    /// `GET path` as the operator; panics unless 200.
    pub fn get(&self, path: &str) -> Value {
        let (status, v) = self.call("GET", path, &self.operator, None);
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// Uploads a bundle file as the release engineer: the HTTP status and the answer.
    pub fn upload(&self, bundle: &Path) -> (u16, Value) {
        let bytes = std::fs::read(bundle).unwrap();
        self.block_on(self.server().upload(&self.release, bytes))
            .unwrap()
    }

    /// Uploads a bundle that must be accepted; its release id.
    pub fn release_id(&self, bundle: &Path) -> String {
        let (status, v) = self.upload(bundle);
        assert_eq!(status, 201, "upload of {}: {v}", bundle.display());
        v["id"].as_str().unwrap().to_owned()
    }

    /// Creates `n` device keys with `sigil keygen` in `dir` and enrols them on `channel`.
    pub fn enrol(&self, dir: &Path, prefix: &str, n: usize, channel: &str) -> Vec<Identity> {
        let fw = firmware();
        let board = fw.board();
        (1..=n)
            .map(|i| {
                let id = format!("{prefix}-{i}");
                let key = dir.join(format!("{id}.pem"));
                sigil([
                    "keygen".into(),
                    "--out".into(),
                    key.clone().into_os_string(),
                ])
                .unwrap();
                let public = sigil_agent::agent::load_device_key(&key)
                    .unwrap()
                    .verifying_key()
                    .to_bytes();
                let (status, v) = self.call(
                    "POST",
                    "/api/v1/devices",
                    &self.operator,
                    Some(json!({
                        "id": id,
                        "product": { "vendor": board.device.vendor, "device": board.device.device },
                        "public_key": hex::encode(public),
                        "channel": channel,
                    })),
                );
                assert_eq!(status, 201, "enrol {id}: {v}");
                Identity { id, key }
            })
            .collect()
    }

    /// Enrols `public` as device `id`'s X25519 encryption key (operator).
    pub fn set_encryption_key(&self, id: &str, public: &[u8; 32]) {
        let (status, v) = self.call(
            "PUT",
            &format!("/api/v1/devices/{id}/encryption-key"),
            &self.operator,
            Some(json!({ "encryption_key": hex::encode(public) })),
        );
        assert_eq!(status, 200, "encryption key of {id}: {v}");
    }

    /// Uploads the key records (`.wkey` files of `sigil sign --encrypt-to`) of `release` as
    /// the release engineer; panics unless 201. The answer (the devices they name).
    pub fn upload_key_records(&self, release: &str, records: &[PathBuf]) -> Value {
        let mut body = Vec::new();
        for r in records {
            body.extend_from_slice(&std::fs::read(r).unwrap());
        }
        let url = format!("{}/api/v1/releases/{release}/key-records", self.url);
        let token = self.release.clone();
        let (status, text) = self.block_on(async move {
            let res = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/octet-stream")
                .body(body)
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        });
        assert_eq!(status, 201, "key records: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Creates a deployment of `release` to `channel` with rollout `phases` and failure
    /// threshold; its id.
    pub fn deploy(&self, release: &str, channel: &str, phases: &[u8], max_failure: u8) -> i64 {
        let (status, v) = self.call(
            "POST",
            "/api/v1/deployments",
            &self.operator,
            Some(json!({
                "release": release,
                "target": { "kind": "channel", "value": channel },
                "phases": phases,
                "max_failure_percent": max_failure,
            })),
        );
        assert_eq!(status, 201, "deployment: {v}");
        v["id"].as_i64().unwrap()
    }

    /// A deployment: state, phase, counts and members.
    pub fn deployment(&self, id: i64) -> Value {
        self.get(&format!("/api/v1/deployments/{id}"))
    }

    /// The device ids the deployment's current phase admits.
    pub fn admitted(&self, deployment: i64) -> Vec<String> {
        self.deployment(deployment)["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["admitted"] == json!(true))
            .map(|m| m["device_id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// A device's status in a deployment.
    pub fn member_status(&self, deployment: i64, device: &str) -> String {
        self.deployment(deployment)["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["device_id"] == json!(device))
            .map(|m| m["status"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    /// The server's view of a device (version, state, ...).
    pub fn device(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/devices/{id}"))
    }

    /// A device's reports, oldest first: (state, detail).
    pub fn reports(&self, id: &str) -> Vec<(String, String)> {
        let v = self.get(&format!("/api/v1/devices/{id}/reports?limit=100"));
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

/// Hooks of a device's agent (shell snippets; `None` = the agent's default), and the
/// device's encryption key as its agent is configured with it.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// The health check run after a trial boot the application did not confirm itself.
    pub health_check: Option<String>,
    /// The device's X25519 encryption public key (`device.encryption_key`).
    pub encryption_key: Option<[u8; 32]>,
}

/// A QEMU device with its agent: the flash file both use, the agent's key, trust root,
/// configuration and state directory.
#[derive(Debug)]
pub struct E2eDevice {
    /// The emulated board and its flash file.
    pub qemu: Device,
    /// Device id.
    pub id: String,
    dir: tempfile::TempDir,
    config_path: PathBuf,
}

fn sh(script: &str) -> String {
    format!(
        "[\"/bin/sh\", \"-c\", \"{}\"]",
        script.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

impl E2eDevice {
    /// Writes the agent's configuration for `identity` against `server_url`, on the flash
    /// file of `qemu` (the board's flash map from `board.toml`). The install-permission hook
    /// records that it was asked and allows; the reboot hook records the request (the test
    /// then powers QEMU on).
    pub fn new(qemu: Device, identity: &Identity, server_url: &str, hooks: &Hooks) -> E2eDevice {
        let fw = firmware();
        let board = fw.board();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::copy(&identity.key, d.join("device.pem")).unwrap();
        std::fs::copy(fw.keys().join("root.sgl"), d.join("root.sgl")).unwrap();
        let mut hook_lines = format!(
            "install_permission = {}\nreboot = {}\n",
            sh(&format!(
                "echo \"$SIGIL_UPDATE_VERSION\" >> {}",
                d.join("permission-asked").display()
            )),
            sh(&format!("touch {}", d.join("reboot-requested").display())),
        );
        if let Some(h) = &hooks.health_check {
            hook_lines.push_str(&format!("health_check = {}\n", sh(h)));
        }
        let encryption = hooks
            .encryption_key
            .map(|k| format!("encryption_key = \"{}\"\n", hex::encode(k)))
            .unwrap_or_default();
        let config = format!(
            r#"[server]
url = "{url}"
request_timeout = "10s"

[device]
id = "{id}"
key = "device.pem"
trust_root = "root.sgl"
product = "{vendor}/{device}"
component = "{component}"
{encryption}
[flash]
path = "{flash}"
erase_size = {erase}
write_size = {write}
erased = {erased}
protected_offset = {protected}
request_offset = {requests}
active_offset = {active}
staging_offset = {staging}
slot_sectors = {slots}

[poll]
interval = "1s"
jitter = "0s"
defer_interval = "1s"

[download]
max_attempts = 3
max_requests = 16
backoff_initial = "10ms"
backoff_max = "50ms"
stall_timeout = "2s"
checkpoint_bytes = 65536

[hooks]
{hook_lines}timeout = "20s"

[state]
dir = "state"
"#,
            url = server_url,
            id = identity.id,
            vendor = board.device.vendor,
            device = board.device.device,
            flash = qemu.flash_path().display(),
            erase = board.flash.erase_size,
            write = board.flash.write_size,
            erased = board.flash.erased,
            protected = board.layout.protected,
            requests = board.layout.requests,
            component = board.device.component,
            active = board.layout.active,
            staging = board.layout.staging,
            slots = board.layout.slot_sectors,
        );
        let config_path = d.join("agent.toml");
        std::fs::write(&config_path, config).unwrap();
        E2eDevice {
            qemu,
            id: identity.id.clone(),
            dir,
            config_path,
        }
    }

    /// The agent configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// A fresh agent (as a new `sigil-agent --once` process would start).
    pub fn agent(&self) -> Agent {
        Agent::new(AgentConfig::load(&self.config_path).unwrap()).unwrap()
    }

    /// One agent cycle (`sigil-agent --once`).
    pub fn run_agent(&self, stack: &Stack) -> CycleOutcome {
        let mut agent = self.agent();
        let outcome = stack.block_on(agent.run_once());
        let outcome = outcome
            .unwrap_or_else(|e| panic!("agent cycle failed: {}", sigil_agent::agent::chain(&e)));
        let queued = agent.queued_reports().unwrap();
        assert!(queued.is_empty(), "reports not delivered: {queued:?}");
        outcome
    }

    /// The versions the install-permission hook was asked about, in order.
    pub fn permission_asked(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("permission-asked"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Whether the reboot hook ran since the last call (and clears the mark).
    pub fn take_reboot_request(&self) -> bool {
        std::fs::remove_file(self.dir.path().join("reboot-requested")).is_ok()
    }
}
