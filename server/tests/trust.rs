//! Issue 13, the trust-and-state half, against the real `sigil-server` binary on a loopback
//! port: device login a stranger cannot block, no enumeration oracle, bad enrolment keys,
//! retired / paused / expired releases, a tampered database refused at start-up and caught by
//! `audit verify` against a signed checkpoint, key rotation, U+2028 in exports.
// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use ed25519_dalek::Signer;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sigil_manifests::*;
use sigil_server::audit::{entry_hash, export_line, AuditEntry, ExportLine};

const BIN: &str = env!("CARGO_BIN_EXE_sigil-server");

struct Server {
    child: Child,
    addr: SocketAddr,
    admin: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(data: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .env("SIGIL_RATE_BURST", "100000")
        .env("SIGIL_RATE_PER_SECOND", "100000")
        .envs(env.iter().copied());
    cmd
}

fn start(data: &Path, env: &[(&str, &str)]) -> Server {
    let mut child = command(data, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let banner = process::read_banner(&mut child);
    assert!(!banner.https);
    Server {
        child,
        addr: banner.addr,
        admin: banner.admin,
    }
}

/// Starts the server expecting it to refuse; returns its stderr.
fn refused_start(data: &Path) -> String {
    let out = command(data, &[]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the server must refuse to start"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn call(
    s: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> HttpResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    http(s.addr, method, path, &headers, body.as_bytes())
}

fn token_for(s: &Server, role: &str) -> String {
    let r = call(
        s,
        "POST",
        "/api/v1/tokens",
        s.admin.as_deref(),
        Some(json!({ "name": format!("{role}-1"), "role": role })),
    );
    assert_eq!(r.status, 201);
    r.json()["token"].as_str().unwrap().to_owned()
}

fn upload(s: &Server, token: &str, bundle: &[u8]) -> HttpResponse {
    let auth = format!("Bearer {token}");
    http(
        s.addr,
        "POST",
        "/api/v1/releases",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/octet-stream"),
        ],
        bundle,
    )
}

fn enrol(s: &Server, operator: &str, id: &str, seed: u8) {
    let body = json!({ "id": id, "product": { "vendor": "acme", "device": "pump-x2" }, "public_key": hex::encode(public(seed)) });
    assert_eq!(
        call(s, "POST", "/api/v1/devices", Some(operator), Some(body)).status,
        201
    );
}

fn challenge(s: &Server, id: &str) -> HttpResponse {
    call(
        s,
        "POST",
        "/api/v1/device/challenge",
        None,
        Some(json!({ "device_id": id })),
    )
}

fn sign_in(s: &Server, id: &str, seed: u8, nonce: &str) -> HttpResponse {
    let n: [u8; 32] = hex::decode(nonce).unwrap().try_into().unwrap();
    let sig = key(seed).sign(&sigil_server::api::auth_message(id, &n));
    let body = json!({ "device_id": id, "nonce": nonce, "signature": hex::encode(sig.to_bytes()) });
    call(s, "POST", "/api/v1/device/session", None, Some(body))
}

fn login(s: &Server, id: &str, seed: u8) -> String {
    let c = challenge(s, id).json();
    let r = sign_in(s, id, seed, c["nonce"].as_str().unwrap());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["token"].as_str().unwrap().to_owned()
}

fn check_in(s: &Server, session: &str) -> Value {
    let body = json!({ "version": "1.0.0", "security_counter": 1, "state": "idle" });
    let r = call(
        s,
        "POST",
        "/api/v1/device/checkin",
        Some(session),
        Some(body),
    );
    assert_eq!(r.status, 200);
    r.json()["update"].clone()
}

fn download(s: &Server, session: &str, release: &str) -> u16 {
    let auth = format!("Bearer {session}");
    http(
        s.addr,
        "GET",
        &format!("/api/v1/bundles/{release}"),
        &[("Authorization", &auth)],
        b"",
    )
    .status
}

/// A bundle for acme/pump-x2 whose manifest expires at `expires`.
fn bundle_expiring(expires: Option<u64>, version: &str, salt: u8) -> Vec<u8> {
    let payload = payload(3000, salt);
    let manifest = Manifest {
        product: ProductId::new("acme", "pump-x2").unwrap(),
        component: "app",
        version: Version::parse(version).unwrap(),
        security_counter: 5,
        payload_size: payload.len() as u64,
        payload_digest: Sha256::digest(&payload).into(),
        payload_format: PayloadFormat::Raw,
        payload_alignment: 64,
        min_bootloader_version: None,
        dependencies: heapless::Vec::new(),
        created: 1_700_000_000,
        expires,
        release_notes_digest: None,
        sbom_digest: None,
    }
    .encode()
    .unwrap();
    let ks = KeySet::new(1, 1, None, &[public(11), public(12)])
        .unwrap()
        .encode()
        .unwrap();
    let (r1, r2) = (key(ROOT_SEEDS[0]), key(ROOT_SEEDS[1]));
    assemble_bundle(&ks, &[&r1, &r2], &manifest, &[&key(11)], &payload).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A server with a trust root, a release, a device `pump-1` (key seed 41), and tokens.
struct Fleet {
    dir: tempfile::TempDir,
    s: Server,
    release: String,
    operator: String,
}

fn fleet(env: &[(&str, &str)]) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let root = write_trust_root(dir.path());
    let mut vars = vec![("SIGIL_TRUST_ROOT", root.to_str().unwrap())];
    vars.extend_from_slice(env);
    let s = start(&dir.path().join("data"), &vars);
    let release = token_for(&s, "release");
    let operator = token_for(&s, "operator");
    enrol(&s, &operator, "pump-1", 41);
    Fleet {
        s,
        release,
        operator,
        dir,
    }
}

fn deploy(f: &Fleet, release: &str) -> i64 {
    let dep = json!({ "release": release, "target": { "kind": "devices", "value": ["pump-1"] } });
    let r = call(
        &f.s,
        "POST",
        "/api/v1/deployments",
        Some(&f.operator),
        Some(dep),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()["id"].as_i64().unwrap()
}

#[test]
fn a_strangers_challenges_do_not_void_a_device_login() {
    let f = fleet(&[]);
    let mine = challenge(&f.s, "pump-1").json();
    // A stranger asks for challenges for the same device, many times.
    let theirs: Vec<String> = (0..100)
        .map(|_| {
            let r = challenge(&f.s, "pump-1");
            assert_eq!(r.status, 200);
            r.json()["nonce"].as_str().unwrap().to_owned()
        })
        .collect();
    let r = sign_in(&f.s, "pump-1", 41, mine["nonce"].as_str().unwrap());
    assert_eq!(
        r.status,
        200,
        "the device's login survives: {}",
        String::from_utf8_lossy(&r.body)
    );
    // Several challenges are outstanding at once; each opens one session only.
    assert_eq!(sign_in(&f.s, "pump-1", 41, &theirs[50]).status, 200);
    assert_eq!(
        sign_in(&f.s, "pump-1", 41, &theirs[50]).status,
        401,
        "replayed"
    );
    assert_eq!(
        sign_in(&f.s, "pump-1", 41, mine["nonce"].as_str().unwrap()).status,
        401,
        "replayed"
    );
    // A challenge is bound to its device id.
    enrol(&f.s, &f.operator, "pump-2", 42);
    assert_eq!(sign_in(&f.s, "pump-2", 42, &theirs[7]).status, 401);
    // A forged challenge (not issued by this server) is refused.
    let mut forged = hex::decode(&theirs[8]).unwrap();
    forged[20] ^= 1;
    assert_eq!(
        sign_in(&f.s, "pump-1", 41, &hex::encode(forged)).status,
        401
    );
}

#[test]
fn challenge_and_session_answer_alike_for_enrolled_and_unknown_ids() {
    let f = fleet(&[]);
    let shape = |r: &HttpResponse| {
        let v = r.json();
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        (
            r.status,
            keys,
            v["nonce"].as_str().unwrap().len(),
            v["expires_in"].clone(),
        )
    };
    let known = challenge(&f.s, "pump-1");
    let unknown = challenge(&f.s, "ghost-1");
    assert_eq!(known.status, 200);
    assert_eq!(shape(&known), shape(&unknown));
    // A revoked device too.
    enrol(&f.s, &f.operator, "pump-3", 43);
    let r = call(
        &f.s,
        "POST",
        "/api/v1/devices/pump-3/revoke",
        Some(&f.operator),
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(shape(&challenge(&f.s, "pump-3")), shape(&known));
    // Session: unknown id, revoked device and wrong key get the same answer.
    let answer = |id: &str, seed: u8| {
        let c = challenge(&f.s, id).json();
        let r = sign_in(&f.s, id, seed, c["nonce"].as_str().unwrap());
        (r.status, r.json())
    };
    let wrong_key = answer("pump-1", 99);
    assert_eq!(wrong_key.0, 401);
    assert_eq!(answer("ghost-1", 99), wrong_key);
    assert_eq!(answer("pump-3", 43), wrong_key);
}

#[test]
fn enrolment_refuses_keys_outside_the_prime_order_subgroup() {
    let f = fleet(&[]);
    let cases = [
        ("ff".repeat(32), "non-canonical (y not reduced)"),
        (
            format!("01{}", "00".repeat(31)),
            "the identity, small order",
        ),
        (
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a".to_owned(),
            "a point of order 8",
        ),
        (
            // public(77) plus a point of order 8: on the curve, not small order, but with a
            // torsion component.
            "89e2f2da55315139793c77d30d929bc04246b186f4cdf48f262778155ef92373".to_owned(),
            "torsion component",
        ),
        (format!("02{}", "00".repeat(31)), "not a curve point"),
    ];
    for (i, (key, what)) in cases.iter().enumerate() {
        let body = json!({ "id": format!("bad-{i}"), "product": { "vendor": "acme", "device": "pump-x2" }, "public_key": key });
        let r = call(
            &f.s,
            "POST",
            "/api/v1/devices",
            Some(&f.operator),
            Some(body),
        );
        assert_eq!(
            r.status,
            400,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            r.json()["message"].as_str().unwrap().contains("public_key"),
            "{what}"
        );
    }
    // The honest key the torsion case was built from is accepted.
    assert_eq!(
        hex::encode(public(77)),
        "62a611b472d89b0e5fc93c069b9f700b4c552d55bc0e87b56008ef17b6b2bebe"
    );
    enrol(&f.s, &f.operator, "good-77", 77);
}

#[test]
fn a_retired_release_is_neither_offered_nor_downloadable() {
    let f = fleet(&[("SIGIL_PUBLIC_MIRROR", "true")]);
    let id = upload(&f.s, &f.release, &release_bundle("1.1.0", 3)).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    deploy(&f, &id);
    let session = login(&f.s, "pump-1", 41);
    assert_eq!(check_in(&f.s, &session)["release"], id.as_str());
    assert_eq!(download(&f.s, &session, &id), 200);
    assert_eq!(
        call(&f.s, "GET", &format!("/mirror/{id}"), None, None).status,
        200
    );
    let r = call(
        &f.s,
        "POST",
        &format!("/api/v1/releases/{id}/retire"),
        Some(&f.release),
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(check_in(&f.s, &session), Value::Null);
    assert_eq!(
        download(&f.s, &session, &id),
        403,
        "not through the still-active deployment"
    );
    assert_eq!(
        call(&f.s, "GET", &format!("/mirror/{id}"), None, None).status,
        404
    );
}

#[test]
fn a_paused_deployment_offers_and_serves_nothing_until_resumed() {
    let f = fleet(&[]);
    let id = upload(&f.s, &f.release, &release_bundle("1.1.0", 3)).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dep = deploy(&f, &id);
    let session = login(&f.s, "pump-1", 41);
    assert_eq!(check_in(&f.s, &session)["release"], id.as_str());
    let act = |a: &str| {
        call(
            &f.s,
            "POST",
            &format!("/api/v1/deployments/{dep}/{a}"),
            Some(&f.operator),
            None,
        )
        .status
    };
    assert_eq!(act("pause"), 200);
    assert_eq!(check_in(&f.s, &session), Value::Null);
    assert_eq!(download(&f.s, &session, &id), 403);
    assert_eq!(act("resume"), 200);
    assert_eq!(check_in(&f.s, &session)["release"], id.as_str());
    assert_eq!(download(&f.s, &session, &id), 200);
}

#[test]
fn expired_bundles_are_refused_and_expiring_releases_warn_then_stop_being_served() {
    let f = fleet(&[]);
    // Expired in 1970: refused with a JSON error, nothing stored.
    let r = upload(&f.s, &f.release, &bundle_expiring(Some(1), "1.0.1", 1));
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["message"].as_str().unwrap().contains("expired"),
        "{:?}",
        r.json()
    );
    assert_eq!(
        call(&f.s, "GET", "/api/v1/releases", Some(&f.release), None).json(),
        json!([])
    );

    // Expiring within the warning horizon (30 days by default): stored, with a warning, also
    // in the release view.
    let r = upload(
        &f.s,
        &f.release,
        &bundle_expiring(Some(now() + 3 * 86_400), "1.0.2", 2),
    );
    assert_eq!(r.status, 201);
    let warnings = r.json()["warnings"].clone();
    assert!(
        warnings[0].as_str().unwrap().contains("expires"),
        "{warnings}"
    );
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let view = call(
        &f.s,
        "GET",
        &format!("/api/v1/releases/{id}"),
        Some(&f.release),
        None,
    )
    .json();
    assert!(
        view["warnings"][0].as_str().unwrap().contains("expires"),
        "{view}"
    );
    // Far from expiry: no warning.
    let r = upload(
        &f.s,
        &f.release,
        &bundle_expiring(Some(now() + 400 * 86_400), "1.0.3", 3),
    );
    assert_eq!(r.status, 201);
    assert!(r.json().get("warnings").is_none(), "{:?}", r.json());

    // A release that expires while deployed is no longer offered or served.
    let soon = now() + 3;
    let r = upload(&f.s, &f.release, &bundle_expiring(Some(soon), "1.0.4", 4));
    assert_eq!(r.status, 201);
    let short = r.json()["id"].as_str().unwrap().to_owned();
    deploy(&f, &short);
    let session = login(&f.s, "pump-1", 41);
    assert_eq!(check_in(&f.s, &session)["release"], short.as_str());
    assert_eq!(download(&f.s, &session, &short), 200);
    while now() <= soon {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        check_in(&f.s, &session),
        Value::Null,
        "an expired release is never offered"
    );
    assert_eq!(download(&f.s, &session, &short), 403);
    let dep = json!({ "release": short, "target": { "kind": "devices", "value": ["pump-1"] } });
    let r = call(
        &f.s,
        "POST",
        "/api/v1/deployments",
        Some(&f.operator),
        Some(dep),
    );
    assert_eq!(r.status, 409, "no new deployment of an expired release");
}

/// An audited server: devices enrolled, the auditor's kept checkpoint and export, the audit
/// public key; the server stopped.
struct Audited {
    dir: tempfile::TempDir,
    data: PathBuf,
    kept: PathBuf,
    export: PathBuf,
    public_key: String,
    admin: String,
}

fn audited() -> Audited {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = start(&data, &[]);
    let admin = s.admin.clone().unwrap();
    let operator = token_for(&s, "operator");
    let auditor = token_for(&s, "auditor");
    for i in 0..4 {
        enrol(&s, &operator, &format!("d{i}"), 60 + i);
    }
    let kept = dir.path().join("kept-checkpoint.json");
    let r = call(&s, "GET", "/api/v1/audit/checkpoint", Some(&auditor), None);
    assert_eq!(r.status, 200);
    std::fs::write(&kept, &r.body).unwrap();
    let export = dir.path().join("audit.jsonl");
    let r = call(&s, "GET", "/api/v1/audit/export", Some(&auditor), None);
    assert_eq!(r.status, 200);
    std::fs::write(&export, &r.body).unwrap();
    drop(s);
    let out = Command::new(BIN)
        .args(["audit", "public-key", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public_key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(public_key.len(), 64);
    Audited {
        dir,
        data,
        kept,
        export,
        public_key,
        admin,
    }
}

fn verify(file: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(file)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn database(data: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(data.join("sigil.db")).unwrap()
}

fn stored_entries(conn: &rusqlite::Connection) -> Vec<AuditEntry> {
    let mut stmt = conn
        .prepare("SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| {
        Ok(AuditEntry {
            seq: r.get::<_, i64>(0)? as u64,
            at: r.get::<_, i64>(1)? as u64,
            actor: r.get(2)?,
            action: r.get(3)?,
            subject: r.get(4)?,
            detail: r.get(5)?,
            prev_hash: r.get(6)?,
            hash: r.get(7)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// What someone with the database file can make: the entries re-chained from the first one
/// so that every link and hash is right again.
fn rechain(mut entries: Vec<AuditEntry>) -> Vec<AuditEntry> {
    let mut prev = sigil_server::audit::GENESIS_HASH.to_owned();
    for e in &mut entries {
        e.prev_hash = prev;
        e.hash = e.computed_hash();
        prev = e.hash.clone();
    }
    entries
}

fn write_export(path: &Path, entries: &[AuditEntry]) {
    let text: String = entries
        .iter()
        .map(|e| export_line(&ExportLine::Entry(e.clone())).unwrap())
        .collect();
    std::fs::write(path, text).unwrap();
}

fn trigger_sql(conn: &rusqlite::Connection, name: &str) -> String {
    conn.query_row(
        "SELECT sql FROM sqlite_master WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn the_genuine_export_verifies_against_the_public_key_and_the_kept_checkpoint() {
    let a = audited();
    let (kept, key) = (a.kept.to_str().unwrap(), a.public_key.as_str());
    let (code, out) = verify(&a.export, &["--public-key", key, "--checkpoint", kept]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signed by the server's audit key"), "{out}");
    // Under another key it does not.
    let other = hex::encode(public(5));
    let (code, out) = verify(&a.export, &["--public-key", &other]);
    assert_eq!(code, 3, "{out}");
    // Entries appended by someone without the key are not covered by a checkpoint.
    let text = std::fs::read_to_string(&a.export).unwrap();
    let entries: Vec<AuditEntry> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let last = entries.last().unwrap();
    let seq = last.seq + 1;
    let (actor, action, subject, detail) = ("ops", "device.enrol", "d9", "{}");
    let hash = entry_hash(seq, last.at, actor, action, subject, detail, &last.hash);
    let extra = AuditEntry {
        seq,
        at: last.at,
        actor: actor.into(),
        action: action.into(),
        subject: subject.into(),
        detail: detail.into(),
        prev_hash: last.hash.clone(),
        hash,
    };
    let appended = a.dir.path().join("appended.jsonl");
    std::fs::write(
        &appended,
        text + &export_line(&ExportLine::Entry(extra)).unwrap(),
    )
    .unwrap();
    assert_eq!(verify(&appended, &[]).0, 0, "the chain alone cannot tell");
    let (code, out) = verify(&appended, &["--public-key", key]);
    assert_eq!(code, 3);
    assert!(out.contains("not covered"), "{out}");
}

#[test]
fn insert_or_replace_tampering_is_refused_at_start_up_and_by_audit_verify() {
    let a = audited();
    let conn = database(&a.data);
    let replace = "INSERT OR REPLACE INTO audit (seq, at, actor, action, subject, detail, prev_hash, hash) \
                   SELECT seq, at, 'mallory', action, subject, detail, prev_hash, hash FROM audit WHERE seq = 2";
    // The append-only triggers now refuse it outright.
    let e = conn.execute(replace, []).unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    // Someone who sets the trigger aside, rewrites entry 2 and puts the trigger back leaves
    // an intact schema.
    let trigger = trigger_sql(&conn, "audit_append_only");
    conn.execute_batch("DROP TRIGGER audit_append_only")
        .unwrap();
    assert_eq!(conn.execute(replace, []).unwrap(), 1);
    conn.execute_batch(&trigger).unwrap();
    let tampered = stored_entries(&conn);
    drop(conn);
    assert_eq!(tampered[1].actor, "mallory");

    let err = refused_start(&a.data);
    assert!(err.contains("tampered") && err.contains("entry 2"), "{err}");

    // The tamperer's export, re-chained so that the chain alone verifies, fails against the
    // server's public key and the checkpoint the auditor kept.
    let forged = a.dir.path().join("forged.jsonl");
    write_export(&forged, &rechain(tampered));
    assert_eq!(verify(&forged, &[]).0, 0, "the chain alone cannot tell");
    let (kept, key) = (a.kept.to_str().unwrap(), a.public_key.as_str());
    let (code, out) = verify(&forged, &["--public-key", key, "--checkpoint", kept]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("differs from the checkpoint you kept"),
        "{out}"
    );
    let (code, out) = verify(&forged, &["--public-key", key]);
    assert_eq!(code, 3, "{out}");
}

#[test]
fn a_renamed_and_recreated_audit_table_is_refused_at_start_up() {
    let a = audited();
    let conn = database(&a.data);
    let table = trigger_sql(&conn, "audit");
    conn.execute_batch(&format!(
        "ALTER TABLE audit RENAME TO audit_old; {table}; INSERT INTO audit SELECT * FROM audit_old;"
    ))
    .unwrap();
    // The new table has no guard: anything goes.
    conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 3", [])
        .unwrap();
    drop(conn);
    let err = refused_start(&a.data);
    assert!(err.contains("tampered") && err.contains("schema"), "{err}");
    assert!(err.contains("audit_old"), "{err}");
    assert!(err.contains("audit_no_update"), "{err}");
}

#[test]
fn a_rechained_log_behind_a_restored_schema_is_refused_at_start_up() {
    let a = audited();
    let conn = database(&a.data);
    let triggers: Vec<String> = ["audit_no_update", "audit_no_delete", "audit_append_only"]
        .iter()
        .map(|t| trigger_sql(&conn, t))
        .collect();
    conn.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete; DROP TRIGGER audit_append_only;")
        .unwrap();
    let mut entries = stored_entries(&conn);
    entries[1].subject = "someone-else".into();
    for e in rechain(entries) {
        conn.execute(
            "UPDATE audit SET subject = ?2, prev_hash = ?3, hash = ?4 WHERE seq = ?1",
            rusqlite::params![e.seq as i64, e.subject, e.prev_hash, e.hash],
        )
        .unwrap();
    }
    for t in &triggers {
        conn.execute_batch(t).unwrap();
    }
    drop(conn);
    let err = refused_start(&a.data);
    assert!(
        err.contains("tampered") && err.contains("checkpoint"),
        "{err}"
    );
}

#[test]
fn a_log_cut_short_is_refused_at_start_up() {
    let a = audited();
    let conn = database(&a.data);
    let trigger = trigger_sql(&conn, "audit_no_delete");
    let n = stored_entries(&conn).len() as i64;
    conn.execute_batch("DROP TRIGGER audit_no_delete").unwrap();
    conn.execute("DELETE FROM audit WHERE seq >= ?1", [n - 1])
        .unwrap();
    conn.execute_batch(&trigger).unwrap();
    drop(conn);
    let err = refused_start(&a.data);
    assert!(
        err.contains("tampered") && err.contains("checkpoint"),
        "{err}"
    );
}

#[test]
fn an_older_copy_of_the_database_is_refused_at_start_up() {
    let a = audited();
    let backup = a.dir.path().join("old");
    std::fs::create_dir(&backup).unwrap();
    let files = ["sigil.db", "sigil.db-wal", "sigil.db-shm"];
    for f in files {
        if a.data.join(f).exists() {
            std::fs::copy(a.data.join(f), backup.join(f)).unwrap();
        }
    }
    // More happens and is checkpointed (every start signs one); then the old copy is put back.
    let out = Command::new(BIN)
        .args(["admin-token", "--name", "later", "--data-dir"])
        .arg(&a.data)
        .output()
        .unwrap();
    assert!(out.status.success());
    drop(start(&a.data, &[]));
    for f in files {
        let _ = std::fs::remove_file(a.data.join(f));
        if backup.join(f).exists() {
            std::fs::copy(backup.join(f), a.data.join(f)).unwrap();
        }
    }
    let err = refused_start(&a.data);
    assert!(
        err.contains("tampered") && err.contains("checkpoint"),
        "{err}"
    );
}

#[test]
fn the_audit_key_is_private_and_rotates_with_a_signed_hand_over() {
    let a = audited();
    let key_file = a.data.join("keys/audit.key");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let out = Command::new(BIN)
        .args(["audit", "rotate-key", "--data-dir"])
        .arg(&a.data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_ne!(new_key, a.public_key);
    let mut s = start(&a.data, &[]);
    s.admin = Some(a.admin.clone());
    let auditor = token_for(&s, "auditor");
    let r = call(&s, "GET", "/api/v1/audit/export", Some(&auditor), None);
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.contains("\"action\":\"audit.key_rotate\""));
    let export = a.dir.path().join("after.jsonl");
    std::fs::write(&export, &text).unwrap();
    // The auditor who kept the old key and checkpoint follows the hand-over.
    let (code, out) = verify(
        &export,
        &[
            "--public-key",
            &a.public_key,
            "--checkpoint",
            a.kept.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    // The old key signs nothing after the rotation.
    let cp = call(&s, "GET", "/api/v1/audit/checkpoint", Some(&auditor), None).json();
    assert_eq!(cp["public_key"], new_key.as_str());
    // A key file others can read is refused.
    drop(s);
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = refused_start(&a.data);
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn exports_escape_unicode_line_separators() {
    let f = fleet(&[]);
    let session = login(&f.s, "pump-1", 41);
    let body = json!({ "version": "1.0.0", "security_counter": 1, "state": "idle", "detail": "ward\u{2028}3\u{2029}bed 4" });
    assert_eq!(
        call(
            &f.s,
            "POST",
            "/api/v1/device/checkin",
            Some(&session),
            Some(body)
        )
        .status,
        200
    );
    let auditor = token_for(&f.s, "auditor");
    let r = call(&f.s, "GET", "/api/v1/audit/export", Some(&auditor), None);
    let text = String::from_utf8(r.body).unwrap();
    assert!(
        !text.contains('\u{2028}') && !text.contains('\u{2029}'),
        "raw separators in the export"
    );
    assert!(text.contains("ward\\u20283\\u2029bed 4"), "{text}");
    // Split on every Unicode line break, the export still has one JSON value per line.
    for line in text
        .split(['\n', '\u{2028}', '\u{2029}'])
        .filter(|l| !l.is_empty())
    {
        serde_json::from_str::<Value>(line).unwrap();
    }
    let file = f.dir.path().join("export.jsonl");
    std::fs::write(&file, &text).unwrap();
    assert_eq!(verify(&file, &[]).0, 0);
}

fn report(s: &Server, session: &str, state: &str, deployment: i64) -> HttpResponse {
    let body = json!({ "version": "1.0.0", "security_counter": 1, "state": state, "deployment": deployment });
    call(
        s,
        "POST",
        "/api/v1/device/checkin",
        Some(session),
        Some(body),
    )
}

fn deployment_state(f: &Fleet, dep: i64) -> Value {
    call(
        &f.s,
        "GET",
        &format!("/api/v1/deployments/{dep}"),
        Some(&f.operator),
        None,
    )
    .json()["state"]
        .clone()
}

#[test]
fn a_transport_failure_report_does_not_halt_the_rollout() {
    let f = fleet(&[]);
    enrol(&f.s, &f.operator, "pump-2", 42);
    enrol(&f.s, &f.operator, "pump-3", 43);
    let id = upload(&f.s, &f.release, &release_bundle("1.1.0", 3)).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Halts past 10% failures of three devices: one failure is enough.
    let dep = json!({ "release": id, "target": { "kind": "devices", "value": ["pump-1", "pump-2", "pump-3"] }, "max_failure_percent": 10 });
    let r = call(
        &f.s,
        "POST",
        "/api/v1/deployments",
        Some(&f.operator),
        Some(dep),
    );
    assert_eq!(r.status, 201);
    let dep = r.json()["id"].as_i64().unwrap();
    let one = login(&f.s, "pump-1", 41);
    let two = login(&f.s, "pump-2", 42);
    // One corrupted delivery: recorded, shown, not a failure.
    assert_eq!(report(&f.s, &one, "downloading", dep).status, 200);
    let r = report(&f.s, &one, "download_failed", dep);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        deployment_state(&f, dep),
        "active",
        "a transport failure does not halt"
    );
    let view = call(
        &f.s,
        "GET",
        &format!("/api/v1/deployments/{dep}"),
        Some(&f.operator),
        None,
    )
    .json();
    assert_eq!(view["counts"]["download_failed"], 1, "{view}");
    // The device keeps its offer and tries again.
    assert_eq!(check_in(&f.s, &one)["release"], id.as_str());
    assert_eq!(download(&f.s, &one, &id), 200);
    // An install failure does halt: the threshold works.
    assert_eq!(report(&f.s, &two, "failed", dep).status, 200);
    assert_eq!(deployment_state(&f, dep), "halted");
    // Each kind is counted on its own, for alerts.
    let metrics = call(&f.s, "GET", "/metrics", None, None);
    let text = String::from_utf8_lossy(&metrics.body);
    for line in [
        "sigil_device_failure_reports_total{kind=\"download\"} 1",
        "sigil_device_failure_reports_total{kind=\"install\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
}

#[test]
fn checkpoints_are_signed_at_the_configured_interval() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = start(&data, &[("SIGIL_AUDIT_CHECKPOINT_SECS", "1")]);
    let operator = token_for(&s, "operator");
    enrol(&s, &operator, "pump-1", 41);
    let auditor = token_for(&s, "auditor");
    let head = call(&s, "GET", "/api/v1/audit/head", Some(&auditor), None).json();
    // Without an export or a checkpoint request, the latest checkpoint kept beside the key
    // catches up with the head.
    let kept = data.join("keys/audit.checkpoint.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let cp: Value = serde_json::from_slice(&std::fs::read(&kept).unwrap()).unwrap();
        if cp["seq"] == head["seq"] {
            assert_eq!(cp["head"], head["hash"]);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint of {head} in time: {cp}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
