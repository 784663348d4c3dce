//! The real `sigil-server` binary against hostile clients: held, idle, slow-header and slow-body
//! sockets under a low open-file limit, a stalled TLS connection, a download nobody reads,
//! oversized declared bodies, floods that must not share a bucket with `/healthz` or a good device, error bodies, h2c.
//!
//! Attackers connect from other loopback addresses (127.0.0.2, 127.0.0.3) than the legitimate
//! client (127.0.0.1), as they would from other hosts. Nothing here asserts on milliseconds:
//! the timeouts are set to a few seconds and a socket only has to be closed within a minute.
// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::postgres::TestDatabase;
use common::*;
use ed25519_dalek::Signer;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_sigil-server");

/// How long a socket the server should close may stay open before the test fails.
const CLOSED_WITHIN: Duration = Duration::from_secs(60);

/// Short timeouts, so that held sockets are closed within seconds.
const SHORT_TIMEOUTS: [(&str, &str); 3] = [
    ("SIGIL_HEADER_READ_TIMEOUT_SECS", "2"),
    ("SIGIL_IDLE_TIMEOUT_SECS", "3"),
    ("SIGIL_BODY_TIMEOUT_SECS", "3"),
];

struct Server {
    child: Child,
    addr: SocketAddr,
    admin: String,
    _dir: tempfile::TempDir,
    /// SQLite in `_dir`, or PostgreSQL with `TEST_DATABASE=postgres` (stopped after the
    /// server).
    _db: TestDatabase,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary, under `prlimit --nofile=N:N` when `open_files` is given.
fn command(open_files: Option<u64>) -> Command {
    match open_files {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg("--").arg(BIN);
            c
        }
        None => Command::new(BIN),
    }
}

fn start(env: &[(&str, &str)], open_files: Option<u64>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::selected();
    let mut cmd = command(open_files);
    db.apply(&mut cmd)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .env("SIGIL_RATE_BURST", "100000")
        .env("SIGIL_RATE_PER_SECOND", "100000")
        .env("SIGIL_TRUST_ROOT", write_trust_root(dir.path()))
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let banner = process::read_banner(&mut child);
    Server {
        child,
        addr: banner.addr,
        admin: banner.admin.unwrap(),
        _dir: dir,
        _db: db,
    }
}

/// A connection from the loopback address `from` (127.0.0.0/8 is all loopback on Linux).
fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stream = runtime.block_on(socket.connect(to))?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
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

/// A new API token of `role`, made with the admin token.
fn token(s: &Server, role: &str) -> String {
    let r = call(
        s,
        "POST",
        "/api/v1/tokens",
        Some(&s.admin),
        Some(json!({ "name": role, "role": role })),
    );
    assert_eq!(r.status, 201);
    r.json()["token"].as_str().unwrap().to_owned()
}

/// `GET /healthz` from 127.0.0.1 on a new connection; the status, or why there was none.
fn healthz(addr: SocketAddr) -> Result<u16, String> {
    let mut c =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    text.get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))
}

/// Reads what `c` sends until the server closes it; fails the test if it stays open.
fn assert_closed_by_server(mut c: TcpStream, what: &str) -> Vec<u8> {
    let deadline = Instant::now() + CLOSED_WITHIN;
    c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: still open after {CLOSED_WITHIN:?}"
                );
            }
            // A reset is a close too.
            Err(_) => return got,
        }
    }
}

/// Sends one keep-alive `GET /healthz` and reads its answer: the connection was accepted.
fn prove_accepted(c: &mut TcpStream) {
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"{\"status\":\"ok\"}") {
        let n = c.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed before answering: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn held_sockets_from_one_address_cannot_exhaust_a_low_open_file_limit() {
    // 256 open files: 150 connections need 150 + 18 + 64 = 232.
    let env = [
        ("SIGIL_MAX_CONNECTIONS", "150"),
        ("SIGIL_MAX_CONNECTIONS_PER_ADDRESS", "40"),
        ("SIGIL_IDLE_TIMEOUT_SECS", "600"),
        ("SIGIL_HEADER_READ_TIMEOUT_SECS", "600"),
    ];
    let s = start(&env, Some(256));
    // More idle sockets from one attacker than the server has file descriptors.
    let mut held = Vec::new();
    for _ in 0..400 {
        match connect_from("127.0.0.2", s.addr) {
            Ok(c) => held.push(c),
            Err(_) => break,
        }
    }
    assert!(held.len() >= 300, "could only open {} sockets", held.len());
    for _ in 0..3 {
        assert_eq!(
            healthz(s.addr),
            Ok(200),
            "healthz while 400 sockets are held"
        );
    }
    // All but the per-address cap were closed at once.
    let open = held
        .iter_mut()
        .filter(|c| {
            let mut c: &TcpStream = c;
            c.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            let mut b = [0u8; 1];
            matches!(c.read(&mut b), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
        })
        .count();
    assert!(open <= 40, "{open} sockets from one address stayed open");
    drop(held);
}

#[test]
fn start_up_refuses_a_connection_cap_the_open_file_limit_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::selected();
    let out = db
        .apply(&mut command(Some(256)))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("SIGIL_MAX_CONNECTIONS", "1000")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("RLIMIT_NOFILE") && err.contains("limits.max_connections"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "no admin token printed: {:?}",
        out.stdout
    );
}

#[test]
fn idle_slow_header_and_slow_body_sockets_are_closed_and_healthz_stays_up() {
    let mut env = SHORT_TIMEOUTS.to_vec();
    env.extend([
        ("SIGIL_MAX_CONNECTIONS", "150"),
        ("SIGIL_MAX_CONNECTIONS_PER_ADDRESS", "60"),
    ]);
    let s = start(&env, Some(256));
    let mut idle = Vec::new();
    let mut slow_header = Vec::new();
    let mut slow_body = Vec::new();
    for _ in 0..15 {
        // Never sends a byte.
        idle.push(connect_from("127.0.0.3", s.addr).unwrap());
        // Served once, then idle on keep-alive.
        let mut c = connect_from("127.0.0.3", s.addr).unwrap();
        prove_accepted(&mut c);
        idle.push(c);
        // Served once, then starts a request whose headers never end.
        let mut c = connect_from("127.0.0.3", s.addr).unwrap();
        prove_accepted(&mut c);
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            .unwrap();
        slow_header.push(c);
        // Served once, then declares a body it never sends in full.
        let mut c = connect_from("127.0.0.3", s.addr).unwrap();
        prove_accepted(&mut c);
        c.write_all(
            b"POST /api/v1/device/challenge HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"device_id\"",
        )
        .unwrap();
        slow_body.push(c);
    }
    assert_eq!(healthz(s.addr), Ok(200));
    // Keep the slow headers trickling: each byte is progress, the deadline is not reset.
    for c in &mut slow_header {
        // It may be closed already; then the write fails, which is fine.
        let _ = c.write_all(b"b");
    }
    for (i, c) in idle.into_iter().enumerate() {
        assert_closed_by_server(c, &format!("idle socket {i}"));
    }
    for (i, c) in slow_header.into_iter().enumerate() {
        assert_closed_by_server(c, &format!("slow-header socket {i}"));
    }
    for (i, c) in slow_body.into_iter().enumerate() {
        let got = assert_closed_by_server(c, &format!("slow-body socket {i}"));
        let text = String::from_utf8_lossy(&got);
        // The first answer (healthz) was read already; what follows is the refusal.
        assert!(text.starts_with("HTTP/1.1 408"), "slow body {i}: {text}");
        assert!(text.contains("\"error\":\"request_timeout\""), "{text}");
    }
    assert_eq!(healthz(s.addr), Ok(200));
}

#[test]
fn a_tls_connection_that_stalls_after_the_handshake_is_closed() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;

    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let cert = fixtures.join("test-server.pem");
    let key = fixtures.join("test-server.key");
    let mut env = SHORT_TIMEOUTS.to_vec();
    env.extend([
        ("SIGIL_TLS_CERT", cert.to_str().unwrap()),
        ("SIGIL_TLS_KEY", key.to_str().unwrap()),
    ]);
    let s = start(&env, None);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(fixtures.join("test-ca.pem")).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    for alpn in [None, Some(b"h2".to_vec())] {
        let mut config = (*config).clone();
        config.alpn_protocols = alpn.into_iter().collect();
        let mut conn = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut tcp = TcpStream::connect(s.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).unwrap();
        }
        // Handshake done; now say nothing.
        assert_closed_by_server(tcp, "stalled TLS connection");
    }
}

/// Sends a request head and returns the first bytes of the answer (waiting at most 20 s).
fn first_answer(addr: SocketAddr, head: &str) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(head.as_bytes()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                let head_done = raw.windows(4).any(|w| w == b"\r\n\r\n");
                if head_done && (raw.starts_with(b"HTTP/1.1 100") || raw.ends_with(b"}")) {
                    break;
                }
            }
            Err(e) => panic!(
                "no answer within 20 s ({e}); got {:?}",
                String::from_utf8_lossy(&raw)
            ),
        }
    }
    String::from_utf8_lossy(&raw).into_owned()
}

#[test]
fn a_declared_body_above_the_limit_is_refused_before_it_is_sent() {
    let s = start(&[], None);
    for path in [
        "/api/v1/device/challenge",
        "/api/v1/tokens",
        "/api/v1/devices",
    ] {
        let text = first_answer(
            s.addr,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n",
                s.admin
            ),
        );
        assert!(text.starts_with("HTTP/1.1 413"), "{path}: {text}");
        assert!(text.contains("\"error\":\"payload_too_large\""), "{text}");
    }
    // Expect: 100-continue with 10 MB: refused, never invited.
    let text = first_answer(
        s.addr,
        "POST /api/v1/device/challenge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 10000000\r\nExpect: 100-continue\r\n\r\n",
    );
    assert!(!text.contains("100 Continue"), "{text}");
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    // Within the limit, the client is invited to send.
    let text = first_answer(
        s.addr,
        "POST /api/v1/device/challenge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 20\r\nExpect: 100-continue\r\n\r\n",
    );
    assert!(text.starts_with("HTTP/1.1 100 Continue"), "{text}");
}

/// Enrols device `id` and opens a session for it; returns the session token.
fn device_session(s: &Server, id: &str, seed: u8) -> String {
    let operator = token(s, "operator");
    let enrol = json!({ "id": id, "product": { "vendor": "acme", "device": "pump-x2" }, "public_key": hex::encode(public(seed)) });
    assert_eq!(
        call(s, "POST", "/api/v1/devices", Some(&operator), Some(enrol)).status,
        201
    );
    let c = call(
        s,
        "POST",
        "/api/v1/device/challenge",
        None,
        Some(json!({ "device_id": id })),
    )
    .json();
    let nonce: [u8; 32] = hex::decode(c["nonce"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let sig = key(seed).sign(&sigil_server::api::auth_message(id, &nonce));
    let body =
        json!({ "device_id": id, "nonce": c["nonce"], "signature": hex::encode(sig.to_bytes()) });
    let r = call(s, "POST", "/api/v1/device/session", None, Some(body));
    assert_eq!(r.status, 200, "{:?}", r.json());
    r.json()["token"].as_str().unwrap().to_owned()
}

#[test]
fn a_bad_token_flood_does_not_block_healthz_or_a_good_device_behind_the_same_address() {
    let s = start(
        &[
            ("SIGIL_RATE_PER_SECOND", "1"),
            ("SIGIL_RATE_BURST", "10"),
            ("SIGIL_AUTH_FAILURE_RATE_PER_SECOND", "1"),
            ("SIGIL_AUTH_FAILURE_BURST", "5"),
        ],
        None,
    );
    let session = device_session(&s, "pump-7", 77);
    let check = json!({ "version": "1.0.0", "security_counter": 1, "state": "idle" });
    assert_eq!(
        call(
            &s,
            "POST",
            "/api/v1/device/checkin",
            Some(&session),
            Some(check.clone())
        )
        .status,
        200
    );
    // The flood, from the device's own address.
    let bad = format!("sgl_{}", "0".repeat(64));
    let statuses: Vec<u16> = (0..40)
        .map(|_| call(&s, "GET", "/api/v1/devices", Some(&bad), None).status)
        .collect();
    assert!(statuses[..5].iter().all(|&st| st == 401), "{statuses:?}");
    // Refilled at one per second, so only a few more get as far as a lookup.
    let limited = statuses.iter().filter(|&&st| st == 429).count();
    assert!(
        limited >= 20,
        "failed authentications are limited: {statuses:?}"
    );
    // An unauthenticated flood too.
    let anon: Vec<u16> = (0..30)
        .map(|_| {
            call(
                &s,
                "POST",
                "/api/v1/device/challenge",
                None,
                Some(json!({ "device_id": "pump-7" })),
            )
            .status
        })
        .collect();
    let limited = anon.iter().filter(|&&st| st == 429).count();
    assert!(
        limited >= 10,
        "unauthenticated requests are limited: {anon:?}"
    );
    // Neither touches /healthz or the device that authenticated.
    for _ in 0..5 {
        assert_eq!(healthz(s.addr), Ok(200));
        let r = call(
            &s,
            "POST",
            "/api/v1/device/checkin",
            Some(&session),
            Some(check.clone()),
        );
        assert_eq!(r.status, 200, "{:?}", r.json());
    }
}

#[test]
fn every_client_error_is_json() {
    let s = start(&[], None);
    let auth = format!("Bearer {}", token(&s, "operator"));
    let cases: [(&str, &str, &[u8], u16, &str); 6] = [
        ("GET", "/api/v1/devices/%FF%FE", b"", 400, "bad_request"),
        ("GET", "/no/such/endpoint", b"", 404, "not_found"),
        ("DELETE", "/healthz", b"", 405, "method_not_allowed"),
        ("PUT", "/api/v1/devices", b"", 405, "method_not_allowed"),
        ("GET", "/api/v1/devices?limit=many", b"", 400, "bad_request"),
        (
            "POST",
            "/api/v1/tokens",
            b"{\"name\": 7",
            400,
            "bad_request",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let r = http(
            s.addr,
            method,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body,
        );
        let text = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, status, "{method} {path}: {text}");
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("application/json"),
            "{method} {path}"
        );
        let v = r.json();
        assert_eq!(v["error"], code, "{method} {path}: {text}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{text}"
        );
    }
}

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Whether the server answered an HTTP/2 preface with an HTTP/2 SETTINGS frame.
fn speaks_h2c(addr: SocketAddr) -> bool {
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(H2_PREFACE).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < 9 {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    // A frame header: 24-bit length, type 0x04 (SETTINGS), flags, stream 0.
    got.len() >= 9 && got[3] == 0x04 && got[5..9] == [0, 0, 0, 0]
}

#[test]
fn h2c_is_off_by_default_and_on_when_configured() {
    let s = start(&[], None);
    assert!(!speaks_h2c(s.addr), "HTTP/2 without TLS is off by default");
    assert_eq!(healthz(s.addr), Ok(200));
    drop(s);
    let s = start(&[("SIGIL_HTTP2_CLEARTEXT", "true")], None);
    assert!(speaks_h2c(s.addr), "SIGIL_HTTP2_CLEARTEXT=true serves h2c");
    assert_eq!(healthz(s.addr), Ok(200), "HTTP/1.1 still served");
}

#[test]
fn a_client_that_stops_reading_a_download_is_closed_after_the_write_timeout() {
    let mut env = SHORT_TIMEOUTS.to_vec();
    env.push(("SIGIL_PUBLIC_MIRROR", "true"));
    let s = start(&env, None);
    let release = token(&s, "release");
    // Larger than what the kernel buffers between the two ends of a loopback connection (the
    // server's send buffer autotunes to a few MiB; the client's receive buffer is kept small).
    let bundle = bundle(&Spec {
        payload: noise(24 << 20, 7),
        ..Spec::release("1.1.0", 3)
    });
    let auth = format!("Bearer {release}");
    let r = http(
        s.addr,
        "POST",
        "/api/v1/releases",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/octet-stream"),
        ],
        &bundle,
    );
    assert_eq!(r.status, 201, "{:?}", r.json());
    let id = r.json()["id"].as_str().unwrap().to_owned();

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .bind(SocketAddr::new("127.0.0.2".parse().unwrap(), 0))
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut stalled = runtime
        .block_on(socket.connect(s.addr))
        .unwrap()
        .into_std()
        .unwrap();
    stalled.set_nonblocking(false).unwrap();
    write!(stalled, "GET /mirror/{id} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // Read the start of the answer, then stop reading: the server's writes block.
    let mut head = [0u8; 12];
    stalled.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(healthz(s.addr), Ok(200), "the server still answers others");
    // The server gave up on the stalled write (3 s): what is left to read ends well before
    // the whole bundle, in a close.
    let rest = assert_closed_by_server(stalled, "a download nobody reads");
    assert!(
        rest.len() < bundle.len() / 2,
        "the server closed the connection instead of sending all {} bytes (sent {} more)",
        bundle.len(),
        rest.len()
    );
}
