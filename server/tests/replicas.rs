//! Several `sigil-server` replicas sharing one PostgreSQL, as behind a load balancer: a
//! simulated fleet checks in through all of them during a staged rollout while one replica is
//! SIGKILLed and restarted and PostgreSQL itself is restarted. Afterwards no acknowledged
//! report is lost, the rollout's counts match what the devices reported, it moved exactly
//! once per phase, the audit chain verifies, and every bundle downloads from every replica.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use common::postgres::TestPostgres;
use common::*;
use ed25519_dalek::Signer;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sigil_server::audit::{verify_lines, Trust};

const BIN: &str = env!("CARGO_BIN_EXE_sigil-server");
const DEVICES: u8 = 24;

struct Replica {
    child: Child,
    addr: SocketAddr,
    admin: Option<String>,
    data: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    pg: Mutex<TestPostgres>,
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl Cluster {
    /// A replica with its own (initially empty) data directory `name`, all replicas with the
    /// same audit key file.
    fn replica(&self, name: &str) -> Replica {
        self.replica_keyed(name, &self.dir.path().join("keys").join("audit.key"))
    }

    /// The environment every replica and subcommand of this cluster runs with.
    fn command(&self, key: &std::path::Path) -> Command {
        let url = self.pg.lock().unwrap().url();
        let mut cmd = Command::new(BIN);
        cmd.env("SIGIL_DATABASE_URL", &url)
            .env("SIGIL_AUDIT_KEY_FILE", key)
            .env("SIGIL_TRUST_ROOT", &self.root);
        cmd
    }

    /// A replica with its own data directory and its own copy of the audit key at `key`.
    fn replica_keyed(&self, name: &str, key: &std::path::Path) -> Replica {
        let url = self.pg.lock().unwrap().url();
        let data = self.dir.path().join(name);
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("RUST_LOG", "error")
            .env("SIGIL_DATABASE_URL", &url)
            .env("SIGIL_AUDIT_KEY_FILE", key)
            .env("SIGIL_TRUST_ROOT", &self.root)
            .env("SIGIL_PUBLIC_MIRROR", "true")
            .env("SIGIL_REPORTS_KEPT", "1000")
            .env("SIGIL_RATE_PER_SECOND", "100000")
            .env("SIGIL_RATE_BURST", "100000")
            .env("SIGIL_TOKEN_RATE_PER_SECOND", "100000")
            .env("SIGIL_TOKEN_RATE_BURST", "100000")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let banner = process::read_banner(&mut child);
        assert!(!banner.https);
        let (addr, admin) = (banner.addr, banner.admin);
        Replica {
            child,
            addr,
            admin,
            data,
        }
    }
}

fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> std::io::Result<HttpResponse> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    try_http(addr, method, path, &headers, body.as_bytes())
}

fn ok(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Value {
    let r = call(addr, method, path, token, body).unwrap();
    assert!(
        (200..300).contains(&r.status),
        "{method} {path}: {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

fn login(addr: SocketAddr, id: &str, seed: u8) -> String {
    let c = ok(
        addr,
        "POST",
        "/api/v1/device/challenge",
        None,
        Some(json!({ "device_id": id })),
    );
    let nonce = c["nonce"].as_str().unwrap();
    let n: [u8; 32] = hex::decode(nonce).unwrap().try_into().unwrap();
    let sig = key(seed).sign(&sigil_server::api::auth_message(id, &n));
    let body = json!({ "device_id": id, "nonce": nonce, "signature": hex::encode(sig.to_bytes()) });
    ok(addr, "POST", "/api/v1/device/session", None, Some(body))["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A simulated device: its session (valid on every replica) and what it has had acknowledged.
struct Device {
    id: String,
    session: String,
    acknowledged: u64,
    confirmed: bool,
}

/// Counts of answers the fleet got.
#[derive(Default)]
struct Answers {
    ok: AtomicU64,
    unavailable: AtomicU64,
    refused: AtomicU64,
}

/// One check-in cycle of `d` through `addr`: an idle check-in; when offered the update, the
/// download (checked against its address) and a `confirmed` report.
fn cycle(addr: SocketAddr, d: &mut Device, answers: &Answers) {
    let idle = json!({ "version": "1.0.0", "security_counter": 1, "state": "idle" });
    let offer = match call(
        addr,
        "POST",
        "/api/v1/device/checkin",
        Some(&d.session),
        Some(idle),
    ) {
        Ok(r) if r.status == 200 => {
            d.acknowledged += 1;
            answers.ok.fetch_add(1, Ordering::Relaxed);
            r.json()["update"].clone()
        }
        Ok(r) if r.status == 503 => {
            assert_eq!(r.json()["error"], "unavailable", "a clear 503");
            assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("1"));
            answers.unavailable.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Ok(r) => panic!(
            "check-in: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ),
        Err(_) => {
            answers.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    if offer.is_null() || d.confirmed {
        return;
    }
    let release = offer["release"].as_str().unwrap();
    let bundle = match call(
        addr,
        "GET",
        &format!("/api/v1/bundles/{release}"),
        Some(&d.session),
        None,
    ) {
        Ok(r) if r.status == 200 => r.body,
        Ok(r) if r.status == 503 => return,
        Ok(r) => panic!(
            "download: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ),
        Err(_) => return,
    };
    assert_eq!(
        hex::encode(Sha256::digest(&bundle)),
        release,
        "bundle bytes"
    );
    let done = json!({
        "version": "1.2.0", "security_counter": 5, "state": "confirmed",
        "deployment": offer["deployment"],
    });
    match call(
        addr,
        "POST",
        "/api/v1/device/checkin",
        Some(&d.session),
        Some(done),
    ) {
        Ok(r) if r.status == 200 => {
            d.acknowledged += 1;
            d.confirmed = true;
            answers.ok.fetch_add(1, Ordering::Relaxed);
        }
        Ok(r) if r.status == 503 => {
            answers.unavailable.fetch_add(1, Ordering::Relaxed);
        }
        Ok(r) => panic!("report: {} {}", r.status, String::from_utf8_lossy(&r.body)),
        Err(_) => {
            answers.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Every device cycles once, spread over `addrs` (device `i` through replica `i + round`).
fn round(addrs: &[SocketAddr], fleet: &Mutex<Vec<Device>>, round: usize, answers: &Answers) {
    let mut devices = std::mem::take(&mut *fleet.lock().unwrap());
    std::thread::scope(|s| {
        for (i, chunk) in devices.chunks_mut(6).enumerate() {
            s.spawn(move || {
                for (j, d) in chunk.iter_mut().enumerate() {
                    cycle(addrs[(i * 6 + j + round) % addrs.len()], d, answers);
                }
            });
        }
    });
    *fleet.lock().unwrap() = devices;
}

fn deployment_state(addr: SocketAddr, token: &str, id: i64) -> Value {
    ok(
        addr,
        "GET",
        &format!("/api/v1/deployments/{id}"),
        Some(token),
        None,
    )
}

#[test]
fn three_replicas_survive_a_killed_replica_and_a_database_restart_without_losing_reports() {
    let dir = tempfile::tempdir().unwrap();
    let root = write_trust_root(dir.path());
    let cluster = Cluster {
        pg: Mutex::new(TestPostgres::start()),
        dir,
        root,
    };
    let a = cluster.replica("a");
    let admin = a
        .admin
        .clone()
        .expect("the first replica creates the bootstrap token");
    let mut b = cluster.replica("b");
    let c = cluster.replica("c");
    assert!(
        b.admin.is_none() && c.admin.is_none(),
        "one bootstrap token for the cluster"
    );
    let token = |role: &str| -> String {
        ok(
            a.addr,
            "POST",
            "/api/v1/tokens",
            Some(&admin),
            Some(json!({ "name": format!("{role}-1"), "role": role })),
        )["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (operator, releaser, auditor) = (token("operator"), token("release"), token("auditor"));

    // Upload through A, the same bundle again through C: one release.
    let bundle = release_bundle("1.2.0", 5);
    let auth = format!("Bearer {releaser}");
    let up = |addr| {
        http(
            addr,
            "POST",
            "/api/v1/releases",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/octet-stream"),
            ],
            &bundle,
        )
    };
    let first = up(a.addr);
    assert_eq!(
        first.status,
        201,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(
        up(c.addr).status,
        200,
        "the same bundle through another replica"
    );
    let release = first.json()["id"].as_str().unwrap().to_owned();

    let addrs = [a.addr, b.addr, c.addr];
    let mut fleet = Vec::new();
    for seed in 1..=DEVICES {
        let id = format!("pump-{seed:02}");
        let body = json!({ "id": id, "product": { "vendor": "acme", "device": "pump-x2" }, "public_key": hex::encode(public(seed)) });
        ok(
            addrs[usize::from(seed) % 3],
            "POST",
            "/api/v1/devices",
            Some(&operator),
            Some(body),
        );
        let session = login(addrs[usize::from(seed + 1) % 3], &id, seed);
        fleet.push(Device {
            id,
            session,
            acknowledged: 0,
            confirmed: false,
        });
    }
    let dep = ok(
        c.addr,
        "POST",
        "/api/v1/deployments",
        Some(&operator),
        Some(json!({
            "release": release,
            "target": { "kind": "channel", "value": "stable" },
            "phases": [25, 50, 100], "min_success_percent": 100, "max_failure_percent": 50,
        })),
    );
    let dep_id = dep["id"].as_i64().unwrap();
    let fleet = Mutex::new(fleet);
    let answers = Answers::default();

    // Phase 0 confirms; the rollout advances.
    round(&addrs, &fleet, 0, &answers);
    round(&addrs, &fleet, 1, &answers);
    let d = deployment_state(a.addr, &auditor, dep_id);
    assert!(d["phase"].as_i64().unwrap() >= 1, "{d}");

    // B is SIGKILLed mid-rollout; the fleet goes on through all three addresses (B's refuse).
    Command::new("kill")
        .args(["-KILL", &b.child.id().to_string()])
        .status()
        .unwrap();
    let _ = b.child.wait();
    round(&addrs, &fleet, 2, &answers);
    b = cluster.replica("b");
    let addrs = [a.addr, b.addr, c.addr];
    round(&addrs, &fleet, 3, &answers);

    // PostgreSQL restarts while the fleet checks in: clear 503s meanwhile, then service again.
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let hammer = s.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                round(&addrs, &fleet, 4 + n, &answers);
                n += 1;
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        cluster.pg.lock().unwrap().restart();
        std::thread::sleep(std::time::Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        hammer.join().unwrap();
    });
    for n in 0..40 {
        round(&addrs, &fleet, 100 + n, &answers);
        if fleet.lock().unwrap().iter().all(|d| d.confirmed) {
            break;
        }
    }
    assert!(answers.ok.load(Ordering::Relaxed) > u64::from(DEVICES) * 4);
    assert!(
        answers.refused.load(Ordering::Relaxed) > 0,
        "B's address refused while it was down"
    );

    // The rollout: completed, once per phase, counts as the devices reported.
    let d = deployment_state(c.addr, &auditor, dep_id);
    assert_eq!(d["state"], "completed", "{d}");
    let counts: HashMap<String, u64> = serde_json::from_value(d["counts"].clone()).unwrap();
    let fleet = fleet.into_inner().unwrap();
    let confirmed = fleet.iter().filter(|d| d.confirmed).count() as u64;
    assert_eq!(confirmed, u64::from(DEVICES));
    assert_eq!(counts.get("confirmed").copied(), Some(confirmed), "{d}");

    // No acknowledged report lost.
    for dev in &fleet {
        let reports = ok(
            b.addr,
            "GET",
            &format!("/api/v1/devices/{}/reports?limit=1000", dev.id),
            Some(&auditor),
            None,
        );
        let stored = reports.as_array().unwrap().len() as u64;
        assert!(
            stored >= dev.acknowledged,
            "{}: {stored} stored, {} acknowledged",
            dev.id,
            dev.acknowledged
        );
    }

    // One audit chain, verified; the rollout moved exactly once per phase.
    let export = call(a.addr, "GET", "/api/v1/audit/export", Some(&auditor), None).unwrap();
    assert_eq!(export.status, 200);
    verify_lines(export.body.as_slice(), Trust::default()).unwrap();
    let actions: Vec<String> = String::from_utf8_lossy(&export.body)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["action"].as_str().map(str::to_owned))
        .collect();
    let count = |a: &str| actions.iter().filter(|x| *x == a).count();
    assert_eq!(count("deployment.advance"), 2, "advanced once per phase");
    assert_eq!(count("deployment.complete"), 1);
    assert_eq!(count("release.upload"), 1);
    assert_eq!(count("device.status"), usize::from(DEVICES));

    // Every bundle from every replica, a fresh one with an empty cache included.
    let d_replica = cluster.replica("d");
    for addr in [a.addr, b.addr, c.addr, d_replica.addr] {
        let r = call(addr, "GET", &format!("/mirror/{release}"), None, None).unwrap();
        assert_eq!(r.status, 200, "{addr}");
        assert_eq!(hex::encode(Sha256::digest(&r.body)), release);
    }
    assert!(
        d_replica.data.join("bundles").join(&release).is_file(),
        "cached, verified"
    );
    eprintln!(
        "answers: {} ok, {} unavailable (503), {} refused connections",
        answers.ok.load(Ordering::Relaxed),
        answers.unavailable.load(Ordering::Relaxed),
        answers.refused.load(Ordering::Relaxed)
    );
    assert!(
        answers.unavailable.load(Ordering::Relaxed) > 0,
        "check-ins during the database restart were answered 503"
    );
}

/// Copies a key file as the operator's secret distribution would: a 0700 directory, the file
/// 0600.
fn distribute(from: &std::path::Path, to: &std::path::Path) {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(to.parent().unwrap())
        .unwrap();
    std::fs::copy(from, to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn a_staged_audit_key_rotation_reaches_every_replica_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = write_trust_root(dir.path());
    let cluster = Cluster {
        pg: Mutex::new(TestPostgres::start()),
        dir,
        root,
    };
    let key_a = cluster.dir.path().join("a-keys/audit.key");
    let key_b = cluster.dir.path().join("b-keys/audit.key");
    let a = cluster.replica_keyed("a", &key_a);
    // The key the first replica generated reaches the second through the secret store.
    distribute(&key_a, &key_b);
    let b = cluster.replica_keyed("b", &key_b);
    let admin = a.admin.clone().unwrap();
    let auditor = ok(
        a.addr,
        "POST",
        "/api/v1/tokens",
        Some(&admin),
        Some(json!({ "name": "auditor-1", "role": "auditor" })),
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_key = ok(
        b.addr,
        "GET",
        "/api/v1/audit/checkpoint",
        Some(&auditor),
        None,
    )["public_key"]
        .as_str()
        .unwrap()
        .to_owned();

    // Stage the next key on one replica, hand it to the other, rotate on the first.
    let out = cluster
        .command(&key_a)
        .args(["audit", "stage-key", "--data-dir"])
        .arg(&a.data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let staged = String::from_utf8(out.stdout).unwrap();
    let (path, staged_key) = staged.trim().split_once(' ').unwrap();
    assert_eq!(PathBuf::from(path), key_a.with_file_name("audit.key.next"));
    distribute(
        &key_a.with_file_name("audit.key.next"),
        &key_b.with_file_name("audit.key.next"),
    );
    let out = cluster
        .command(&key_a)
        .args(["audit", "rotate-key", "--data-dir"])
        .arg(&a.data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), staged_key);
    assert_ne!(staged_key, old_key);

    // The running second replica signs its next checkpoint with the staged key: it finds it
    // beside its own key file and completes the hand-over itself.
    ok(
        b.addr,
        "POST",
        "/api/v1/tokens",
        Some(&admin),
        Some(json!({ "name": "auditor-2", "role": "auditor" })),
    );
    let cp = ok(
        b.addr,
        "GET",
        "/api/v1/audit/checkpoint",
        Some(&auditor),
        None,
    );
    assert_eq!(cp["public_key"], staged_key);
    assert_eq!(
        std::fs::read(&key_b).unwrap(),
        std::fs::read(&key_a).unwrap(),
        "the second replica's key file now holds the new key"
    );
    assert!(!key_b.with_file_name("audit.key.next").exists());
    // And the whole trail, rotation included, verifies from the old key.
    let export = call(b.addr, "GET", "/api/v1/audit/export", Some(&auditor), None).unwrap();
    assert_eq!(export.status, 200);
    let trust = Trust {
        keys: vec![hex_key(&old_key)],
        ..Trust::default()
    };
    verify_lines(&export.body[..], trust).unwrap();
}

fn hex_key(text: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    hex::decode_to_slice(text, &mut key).unwrap();
    key
}
