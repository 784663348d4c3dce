//! Tests against the real `sigil-server` binary on a loopback port, on SQLite files or (with
//! `TEST_DATABASE=postgres`) on a throwaway PostgreSQL of each test's own.
// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::postgres::TestDatabase;
use common::*;
use ed25519_dalek::Signer;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_sigil-server");

struct Server {
    child: Child,
    addr: SocketAddr,
    bootstrap: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary, pointed at the test's database.
fn bin(db: &TestDatabase) -> Command {
    let mut cmd = Command::new(BIN);
    db.apply(&mut cmd);
    cmd
}

fn start(db: &TestDatabase, data: &Path, trust_root: Option<&Path>) -> Server {
    start_with(db, data, trust_root, &[])
}

fn start_with(
    db: &TestDatabase,
    data: &Path,
    trust_root: Option<&Path>,
    env: &[(&str, &str)],
) -> Server {
    let mut cmd = bin(db);
    cmd.envs(env.iter().copied());
    cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .env("SIGIL_RATE_BURST", "100000")
        .env("SIGIL_RATE_PER_SECOND", "100000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(root) = trust_root {
        cmd.env("SIGIL_TRUST_ROOT", root);
    }
    let mut child = cmd.spawn().unwrap();
    let banner = process::read_banner(&mut child);
    Server {
        child,
        addr: banner.addr,
        bootstrap: banner.admin,
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn call(
    s: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> HttpResponse {
    let auth = token.map(bearer);
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

fn token_for(s: &Server, admin: &str, role: &str) -> String {
    let r = call(
        s,
        "POST",
        "/api/v1/tokens",
        Some(admin),
        Some(json!({ "name": format!("{role}-1"), "role": role })),
    );
    assert_eq!(r.status, 201);
    r.json()["token"].as_str().unwrap().to_owned()
}

fn upload(s: &Server, token: &str, bundle: &[u8]) -> HttpResponse {
    let auth = bearer(token);
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

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends the headers and part of an upload body on an open connection.
fn partial_upload(s: &Server, token: &str, bundle: &[u8], sent: usize) -> TcpStream {
    let mut c = TcpStream::connect(s.addr).unwrap();
    write!(
        c,
        "POST /api/v1/releases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        bundle.len()
    )
    .unwrap();
    c.write_all(&bundle[..sent]).unwrap();
    c.flush().unwrap();
    c
}

fn big_bundle(salt: u8) -> Vec<u8> {
    bundle(&Spec {
        payload: payload(60_000, salt),
        ..Spec::release("3.0.0", 9)
    })
}

#[test]
fn zero_setup_start_prints_a_working_admin_token_and_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::selected();
    let data = dir.path().join("data");
    let mut s = start(&db, &data, None);
    let admin = s
        .bootstrap
        .clone()
        .expect("first start prints an admin token");
    assert_eq!(call(&s, "GET", "/healthz", None, None).status, 200);
    assert_eq!(
        call(&s, "GET", "/api/v1/tokens", Some(&admin), None).status,
        200
    );
    // SQLite's file is in the data directory; on PostgreSQL there is none.
    assert_eq!(data.join("sigil.db").exists(), db.pg.is_none());
    assert!(data.join("bundles").is_dir());
    let release = token_for(&s, &admin, "release");
    let r = upload(&s, &release, &release_bundle("1.0.0", 1));
    assert_eq!(r.status, 503, "no trust root configured");
    assert!(String::from_utf8_lossy(&r.body).contains("trust root"));

    // SIGTERM: graceful shutdown, exit status 0.
    Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");

    // The second start keeps the tokens and prints none.
    let s = start(&db, &data, None);
    assert!(s.bootstrap.is_none());
    assert_eq!(
        call(&s, "GET", "/api/v1/tokens", Some(&admin), None).status,
        200
    );
    drop(s);

    // `sigil-server admin-token` issues another one.
    let out = bin(&db)
        .args(["admin-token", "--name", "second", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    let second = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let s = start(&db, &data, None);
    assert_eq!(
        call(&s, "GET", "/api/v1/tokens", Some(&second), None).status,
        200
    );
}

#[test]
fn client_disconnect_mid_upload_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::selected();
    let data = dir.path().join("data");
    let root = write_trust_root(dir.path());
    let s = start(&db, &data, Some(&root));
    let admin = s.bootstrap.clone().unwrap();
    let release = token_for(&s, &admin, "release");
    let b = big_bundle(1);
    let c = partial_upload(&s, &release, &b, b.len() / 2);
    wait_for("the upload to start", || store_counts(&data).1 == 1);
    drop(c);
    wait_for("the temporary file to go", || store_counts(&data).1 == 0);
    assert_eq!(store_counts(&data), (0, 0));
    let list = call(&s, "GET", "/api/v1/releases", Some(&release), None);
    assert_eq!(list.json(), json!([]));
    // The whole upload then works.
    assert_eq!(upload(&s, &release, &b).status, 201);
    assert_eq!(store_counts(&data), (1, 0));
}

#[test]
fn sigkill_during_upload_and_writes_leaves_store_and_database_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::selected();
    let data = dir.path().join("data");
    let root = write_trust_root(dir.path());
    let mut s = start(&db, &data, Some(&root));
    let admin = s.bootstrap.clone().unwrap();
    let release = token_for(&s, &admin, "release");
    let operator = token_for(&s, &admin, "operator");
    let auditor = token_for(&s, &admin, "auditor");
    let b = big_bundle(2);

    // Writers enrol devices continuously while an upload is half sent.
    let addr = s.addr;
    let op = operator.clone();
    let enrolled = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let progress = std::sync::Arc::clone(&enrolled);
    let writer = std::thread::spawn(move || {
        let mut enrolled = 0u32;
        for i in 0..10_000u32 {
            let body = json!({
                "id": format!("dev-{i}"),
                "product": { "vendor": "acme", "device": "pump-x2" },
                "public_key": hex::encode(public((i % 200) as u8 + 30)),
            })
            .to_string();
            let auth = bearer(&op);
            let r = std::panic::catch_unwind(|| {
                http(
                    addr,
                    "POST",
                    "/api/v1/devices",
                    &[
                        ("Authorization", &auth),
                        ("Content-Type", "application/json"),
                    ],
                    body.as_bytes(),
                )
            });
            match r {
                Ok(r) if r.status == 201 => {
                    enrolled += 1;
                    progress.store(enrolled, std::sync::atomic::Ordering::Relaxed);
                }
                _ => break,
            }
        }
        enrolled
    });
    let _c = partial_upload(&s, &release, &b, b.len() - 100);
    wait_for("the upload to start", || store_counts(&data).1 == 1);
    // Kill while writes are in flight: some enrolments done since the upload began.
    let before = enrolled.load(std::sync::atomic::Ordering::Relaxed);
    wait_for("more enrolments", || {
        enrolled.load(std::sync::atomic::Ordering::Relaxed) >= before + 5
    });
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    let enrolled = writer.join().unwrap();
    assert!(enrolled > 0, "writes were happening");

    let s = start(&db, &data, Some(&root));
    assert_eq!(
        store_counts(&data),
        (0, 0),
        "no partial bundle or temporary file survives"
    );
    assert_eq!(
        call(&s, "GET", "/api/v1/releases", Some(&release), None).json(),
        json!([])
    );
    // Every acknowledged enrolment is stored, and the audit trail verifies and matches.
    let devices = call(&s, "GET", "/api/v1/devices", Some(&operator), None).json();
    let stored = devices.as_array().unwrap().len() as u32;
    assert!(
        stored >= enrolled,
        "acknowledged writes survive: {stored} < {enrolled}"
    );
    let export = call(&s, "GET", "/api/v1/audit/export", Some(&auditor), None);
    assert_eq!(export.status, 200);
    let summary = sigil_server::audit::verify_lines(&export.body[..], Default::default()).unwrap();
    let text = String::from_utf8(export.body).unwrap();
    assert_eq!(
        text.matches("\"action\":\"device.enrol\"").count() as u32,
        stored,
        "one audit entry per device"
    );
    assert!(summary.entries > u64::from(stored));
    // And the store works after the crash.
    assert_eq!(upload(&s, &release, &b).status, 201);
}

#[test]
fn device_session_check_in_and_range_download_over_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::selected();
    let data = dir.path().join("data");
    let root = write_trust_root(dir.path());
    let s = start(&db, &data, Some(&root));
    let admin = s.bootstrap.clone().unwrap();
    let release = token_for(&s, &admin, "release");
    let operator = token_for(&s, &admin, "operator");
    let b = big_bundle(3);
    let id = upload(&s, &release, &b).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let enrol = json!({ "id": "pump-7", "product": { "vendor": "acme", "device": "pump-x2" }, "public_key": hex::encode(public(77)) });
    assert_eq!(
        call(&s, "POST", "/api/v1/devices", Some(&operator), Some(enrol)).status,
        201
    );
    let dep = json!({ "release": id, "target": { "kind": "devices", "value": ["pump-7"] } });
    assert_eq!(
        call(
            &s,
            "POST",
            "/api/v1/deployments",
            Some(&operator),
            Some(dep)
        )
        .status,
        201
    );

    let c = call(
        &s,
        "POST",
        "/api/v1/device/challenge",
        None,
        Some(json!({ "device_id": "pump-7" })),
    )
    .json();
    let nonce: [u8; 32] = hex::decode(c["nonce"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let sig = key(77).sign(&sigil_server::api::auth_message("pump-7", &nonce));
    let body = json!({ "device_id": "pump-7", "nonce": c["nonce"], "signature": hex::encode(sig.to_bytes()) });
    let session = call(&s, "POST", "/api/v1/device/session", None, Some(body)).json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let check = json!({ "version": "2.0.0", "security_counter": 8, "state": "idle" });
    let offer = call(
        &s,
        "POST",
        "/api/v1/device/checkin",
        Some(&session),
        Some(check),
    )
    .json();
    let url = offer["update"]["download_url"].as_str().unwrap().to_owned();

    let auth = bearer(&session);
    let r = http(
        s.addr,
        "GET",
        &url,
        &[("Authorization", &auth), ("Range", "bytes=40000-")],
        b"",
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b[40_000..]);
    assert_eq!(r.headers["content-length"], (b.len() - 40_000).to_string());
    let r = http(
        s.addr,
        "GET",
        &url,
        &[
            ("Authorization", &auth),
            ("Range", "bytes=0-31, 50000-50099"),
        ],
        b"",
    );
    assert_eq!(r.status, 206);
    assert!(r.headers["content-type"].starts_with("multipart/byteranges"));
    assert_eq!(r.headers["content-length"], r.body.len().to_string());
    let r = http(s.addr, "GET", &url, &[("Authorization", &auth)], b"");
    assert_eq!((r.status, r.body == b), (200, true));
}

fn run_verify(file: &Path, head: Option<&str>) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["audit", "verify"]).arg(file);
    if let Some(h) = head {
        cmd.args(["--head", h]);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn audit_verify_command_detects_tampering_in_an_export() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::selected();
    let data = dir.path().join("data");
    let s = start(&db, &data, None);
    let admin = s.bootstrap.clone().unwrap();
    let auditor = token_for(&s, &admin, "auditor");
    let operator = token_for(&s, &admin, "operator");
    for i in 0..3 {
        let body = json!({ "id": format!("d{i}"), "product": { "vendor": "acme", "device": "pump-x2" }, "public_key": hex::encode(public(60 + i)) });
        assert_eq!(
            call(&s, "POST", "/api/v1/devices", Some(&operator), Some(body)).status,
            201
        );
    }
    let export =
        String::from_utf8(call(&s, "GET", "/api/v1/audit/export", Some(&auditor), None).body)
            .unwrap();
    let head = call(&s, "GET", "/api/v1/audit/head", Some(&auditor), None).json()["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let file: PathBuf = dir.path().join("audit.jsonl");

    std::fs::write(&file, &export).unwrap();
    let (code, out) = run_verify(&file, Some(&head));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verified"));

    let edited = export.replacen("\"subject\":\"d1\"", "\"subject\":\"d9\"", 1);
    assert_ne!(edited, export);
    std::fs::write(&file, &edited).unwrap();
    let (code, out) = run_verify(&file, None);
    assert_eq!(code, 3);
    assert!(out.contains("edited"), "{out}");

    let lines: Vec<&str> = export.lines().collect();
    let removed: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    std::fs::write(&file, removed).unwrap();
    assert_eq!(run_verify(&file, None).0, 3);

    let mut reordered = lines.clone();
    reordered.swap(1, 2);
    std::fs::write(&file, reordered.join("\n")).unwrap();
    assert_eq!(run_verify(&file, None).0, 3);

    // The last entry and the export's checkpoint of it cut off.
    assert!(lines[lines.len() - 1].starts_with("{\"checkpoint\""));
    let truncated: String = lines[..lines.len() - 2]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&file, truncated).unwrap();
    assert_eq!(
        run_verify(&file, None).0,
        0,
        "a shorter chain is valid on its own"
    );
    assert_eq!(
        run_verify(&file, Some(&head)).0,
        3,
        "but not against the recorded head"
    );
}

#[test]
fn serves_https_with_the_configured_certificate() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::io::Read;
    use std::sync::Arc;

    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let cert = fixtures.join("test-server.pem");
    let key = fixtures.join("test-server.key");
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::selected();
    let s = start_with(
        &db,
        &dir.path().join("data"),
        None,
        &[
            ("SIGIL_TLS_CERT", cert.to_str().unwrap()),
            ("SIGIL_TLS_KEY", key.to_str().unwrap()),
        ],
    );
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(fixtures.join("test-ca.pem")).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(s.addr).unwrap());
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    // The server may close without close_notify after Connection: close; what arrived counts.
    let _ = tls.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"status\":\"ok\""), "{text}");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(s.addr).unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP/1.1 200"));
}

#[test]
fn a_failed_start_does_not_use_up_the_first_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::selected();
    let busy = start(&db, &dir.path().join("a"), None);
    let data = dir.path().join("b");
    // `b`'s database of its own (on PostgreSQL, `a` made the first admin token of its own).
    let db_b = TestDatabase::selected();
    let out = bin(&db_b)
        .args(["--listen", &busy.addr.to_string(), "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
    let out = bin(&db_b)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("SIGIL_TLS_CERT", dir.path().join("missing.pem"))
        .env("SIGIL_TLS_KEY", dir.path().join("missing.key"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLS certificate"));
    assert!(
        start(&db_b, &data, None).bootstrap.is_some(),
        "the token is printed by the first real start"
    );
}

#[test]
fn invalid_configuration_is_refused_at_start_up_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::selected();
    let out = bin(&db)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("SIGIL_UPLOAD_MAX_BYTES", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SIGIL_UPLOAD_MAX_BYTES"));
    let missing = dir.path().join("missing.sgl");
    let out = bin(&db)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("SIGIL_TRUST_ROOT", &missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("trust root"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn json_logs_on_request_and_no_secrets_in_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::selected();
    let mut child = bin(&db)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("SIGIL_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let banner = process::read_banner(&mut child);
    assert!(!banner.https);
    let addr = banner.addr;
    let token = banner.admin.unwrap();
    let auth = bearer(&token);
    assert_eq!(
        http(
            addr,
            "GET",
            "/api/v1/tokens",
            &[("Authorization", &auth)],
            b""
        )
        .status,
        200
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    child.wait().unwrap();
    let events: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["path"] == "/api/v1/tokens" && e["fields"]["status"] == 200),
        "{stderr}"
    );
    assert!(!stderr.contains(&token), "the token never reaches the log");
}

#[test]
fn a_dropped_audit_guard_trigger_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::selected();
    let data = dir.path().join("data");
    drop(start(&db, &data, None));
    match &db.pg {
        Some(pg) => pg
            .client()
            .batch_execute("DROP TRIGGER audit_no_update ON audit")
            .unwrap(),
        None => rusqlite::Connection::open(data.join("sigil.db"))
            .unwrap()
            .execute_batch("DROP TRIGGER audit_no_update")
            .unwrap(),
    }
    let out = bin(&db)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("schema") && err.contains("audit_no_update"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing served: {:?}", out.stdout);
}
