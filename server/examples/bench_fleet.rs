//! Sets up a simulated fleet for `bench/server.sh` (not part of the server).
//!
//! ```text
//! bench_fleet root OUT_FILE
//!     writes a trust root (fixed test keys) for the server to start with
//! bench_fleet setup ADDR ADMIN_TOKEN DEVICES PAYLOAD_BYTES OUT_DIR
//!     uploads a bundle, enrols DEVICES devices, deploys the bundle to them, opens one session
//!     per device; writes OUT_DIR/bundle.sgl, OUT_DIR/sessions.txt (one token per line) and
//!     prints the release id
//! bench_fleet pace ADDR SESSIONS_FILE RATE CONNECTIONS SECONDS
//!     check-ins at a fixed rate (open loop, like wrk2): request k is due at k / RATE seconds,
//!     spread round-robin over CONNECTIONS keep-alive connections, and its latency is counted
//!     from when it was due, so a server stall shows in every request it delays, including the
//!     ones that could not be sent on time (no coordinated omission). Prints
//!     `RATE_ACHIEVED P50_MS P99_MS P999_MS MAX_MS ERRORS`.
//! bench_fleet flood ADDR SESSIONS_FILE RATE CONNECTIONS ATTACKERS SECONDS
//!     `pace` over CONNECTIONS keep-alive connections (from 127.0.1.x, at most 200 per address)
//!     while ATTACKERS connections (from 127.0.2.x) are held idle, as slow headers (a byte a
//!     second) or as slow bodies (a byte a second), each reopened as soon as the server closes
//!     it; and `GET /healthz` 20 times a second on a new connection each. Prints
//!     `RATE P50_MS P99_MS P999_MS MAX_MS ERRORS HEALTH_P50_MS HEALTH_P99_MS HEALTH_MAX_MS
//!     HEALTH_ERRORS OPEN_AT_START ATTACKER_CLOSES`.
//! ```
// A setup tool for a benchmark: any failure aborts the run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use sigil_manifests::TrustRoot;
use sigil_test_support::{payload, root_of, Spec};

fn device_key(i: u32) -> SigningKey {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    SigningKey::from_bytes(&seed)
}

/// The fixed test root: root key 1 alone.
fn root() -> TrustRoot {
    root_of([1], 1)
}

/// Version 2.0.0, counter 2, signed by root key 1 and release key 11, payload aligned to 4 KiB.
fn bundle(payload_len: usize) -> Vec<u8> {
    sigil_test_support::bundle(&Spec {
        release_keys: vec![11],
        root_signers: vec![1],
        alignment: 4096,
        payload: payload(payload_len, 0),
        ..Spec::release("2.0.0", 2)
    })
}

fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    ct: &str,
    body: &[u8],
) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&raw[9..12]).parse().unwrap();
    (
        status,
        serde_json::from_slice(&raw[split + 4..]).unwrap_or(Value::Null),
    )
}

fn post(addr: SocketAddr, path: &str, token: Option<&str>, body: Value) -> Value {
    let (status, v) = http(
        addr,
        "POST",
        path,
        token,
        "application/json",
        body.to_string().as_bytes(),
    );
    assert!((200..300).contains(&status), "POST {path}: {status} {v}");
    v
}

/// One request and its response on a keep-alive connection; the response's status.
async fn exchange(
    stream: &mut tokio::net::TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    stream.write_all(request).await?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    let mut head_end = None;
    loop {
        if let Some((end, len, status)) = head_end {
            if buf.len() >= end + len {
                return Ok(status);
            }
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if head_end.is_none() {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("header"))?;
                let status = head
                    .get(9..12)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("status"))?;
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                head_end = Some((end + 4, len, status));
            }
        }
    }
}

fn pace(addr: SocketAddr, tokens: Vec<String>, rate: f64, connections: u64, seconds: f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = r#"{"version":"1.0.0","security_counter":1,"state":"idle"}"#;
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        tokens
            .iter()
            .map(|t| {
                format!(
                    "POST /api/v1/device/checkin HTTP/1.1\r\nHost: {addr}\r\n\
                     Authorization: Bearer {t}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            })
            .collect(),
    );
    let total = (rate * seconds) as u64;
    let (latencies, errors, elapsed) = rt.block_on(async move {
        let start = tokio::time::Instant::now() + Duration::from_millis(100);
        let mut tasks = Vec::new();
        for c in 0..connections {
            let requests = Arc::clone(&requests);
            tasks.push(tokio::spawn(async move {
                let connect = || async {
                    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
                    s.set_nodelay(true).unwrap();
                    s
                };
                let mut stream = connect().await;
                let (mut latencies, mut errors) = (Vec::new(), 0u64);
                let mut buf = Vec::with_capacity(4096);
                let mut k = c;
                while k < total {
                    let due = start + Duration::from_secs_f64(k as f64 / rate);
                    tokio::time::sleep_until(due).await;
                    let request = &requests[(k as usize).wrapping_mul(7919) % requests.len()];
                    match exchange(&mut stream, request, &mut buf).await {
                        Ok(200) => {}
                        Ok(_) => errors += 1,
                        Err(_) => {
                            errors += 1;
                            stream = connect().await;
                        }
                    }
                    latencies.push(due.elapsed().as_micros() as u64);
                    k += connections;
                }
                (latencies, errors)
            }));
        }
        let (mut all, mut errors) = (Vec::new(), 0);
        for t in tasks {
            let (l, e) = t.await.unwrap();
            all.extend(l);
            errors += e;
        }
        (all, errors, start.elapsed())
    });
    let mut l = latencies;
    l.sort_unstable();
    let pct = |p: f64| {
        let i = ((l.len() as f64 * p / 100.0).ceil() as usize).clamp(1, l.len().max(1)) - 1;
        l.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    println!(
        "{:.1} {:.3} {:.3} {:.3} {:.3} {errors}",
        l.len() as f64 / elapsed.as_secs_f64(),
        pct(50.0),
        pct(99.0),
        pct(99.9),
        pct(100.0)
    );
}

/// A connection from the loopback address 127.0.`net`.`host` (all of 127/8 is loopback).
async fn connect_from(
    addr: SocketAddr,
    net: u8,
    index: u64,
) -> std::io::Result<tokio::net::TcpStream> {
    let host = u8::try_from(index / 200 % 250 + 1).unwrap();
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, net, host], 0)))?;
    let s = socket.connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Percentiles of latencies in microseconds, as milliseconds.
fn percentiles(mut l: Vec<u64>, ps: &[f64]) -> Vec<f64> {
    l.sort_unstable();
    ps.iter()
        .map(|p| {
            let i = ((l.len() as f64 * p / 100.0).ceil() as usize).clamp(1, l.len().max(1)) - 1;
            l.get(i).copied().unwrap_or(0) as f64 / 1000.0
        })
        .collect()
}

/// One attacker: holds a connection the way `kind` says, reopens it when the server closes it;
/// returns how many times it was closed.
async fn attacker(addr: SocketAddr, index: u64, kind: u64, until: tokio::time::Instant) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut closes = 0;
    while tokio::time::Instant::now() < until {
        let Ok(mut s) = connect_from(addr, 2, index).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let opening: &[u8] = match kind {
            0 => b"",
            1 => b"POST /api/v1/device/checkin HTTP/1.1\r\nHost: x\r\nX-Slow: ",
            _ => b"POST /api/v1/device/challenge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
        };
        if s.write_all(opening).await.is_err() {
            closes += 1;
            continue;
        }
        let mut buf = [0u8; 512];
        loop {
            let tick = tokio::time::sleep(Duration::from_secs(1));
            tokio::select! {
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => { closes += 1; break; }
                    Ok(_) => {}
                },
                () = tick => {
                    if tokio::time::Instant::now() >= until {
                        return closes;
                    }
                    if kind != 0 && s.write_all(b"a").await.is_err() {
                        closes += 1;
                        break;
                    }
                }
            }
        }
    }
    closes
}

fn flood(
    addr: SocketAddr,
    tokens: Vec<String>,
    rate: f64,
    connections: u64,
    attackers: u64,
    seconds: f64,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = r#"{"version":"1.0.0","security_counter":1,"state":"idle"}"#;
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        tokens
            .iter()
            .map(|t| {
                format!(
                    "POST /api/v1/device/checkin HTTP/1.1\r\nHost: {addr}\r\n\
                     Authorization: Bearer {t}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            })
            .collect(),
    );
    let total = (rate * seconds) as u64;
    let out = rt.block_on(async move {
        // The fleet's connections are open before the measurement starts (a fleet does not
        // connect all at once), then the attackers arrive.
        let mut connecting = Vec::new();
        for c in 0..connections {
            connecting.push(tokio::spawn(
                async move { connect_from(addr, 1, c).await.ok() },
            ));
        }
        let mut streams = Vec::new();
        for c in connecting {
            streams.push(c.await.unwrap());
        }
        let open = streams.iter().filter(|s| s.is_some()).count() as u64;
        let start = tokio::time::Instant::now() + Duration::from_secs(3);
        let until = start + Duration::from_secs_f64(seconds);
        // The attackers are other hosts: they run on a thread of their own, so that their
        // bursts (every held socket ticks at the same instant) delay the server, not this
        // thread's sending and timing of the fleet's requests.
        let attack = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let mut attack = Vec::new();
                    for i in 0..attackers {
                        attack.push(tokio::spawn(attacker(addr, i, i % 3, until)));
                    }
                    let mut closes = 0;
                    for a in attack {
                        closes += a.await.unwrap();
                    }
                    closes
                })
        });
        let mut tasks = Vec::new();
        for (c, stream) in (0..connections).zip(streams) {
            let requests = Arc::clone(&requests);
            tasks.push(tokio::spawn(async move {
                let mut stream = stream;
                let (mut latencies, mut errors) = (Vec::new(), 0u64);
                let mut buf = Vec::with_capacity(4096);
                let mut k = c;
                while k < total {
                    let due = start + Duration::from_secs_f64(k as f64 / rate);
                    tokio::time::sleep_until(due).await;
                    let request = &requests[(k as usize).wrapping_mul(7919) % requests.len()];
                    let ok = match stream.as_mut() {
                        Some(s) => matches!(exchange(s, request, &mut buf).await, Ok(200)),
                        None => false,
                    };
                    if !ok {
                        errors += 1;
                        stream = connect_from(addr, 1, c).await.ok();
                    }
                    latencies.push(due.elapsed().as_micros() as u64);
                    k += connections;
                }
                (latencies, errors)
            }));
        }
        let health = tokio::spawn(async move {
            let request =
                format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            let mut buf = Vec::with_capacity(1024);
            let n = (seconds * 20.0) as u64;
            for k in 0..n {
                let due = start + Duration::from_millis(k * 50);
                tokio::time::sleep_until(due).await;
                let ok = match tokio::net::TcpStream::connect(addr).await {
                    Ok(mut s) => matches!(
                        exchange(&mut s, request.as_bytes(), &mut buf).await,
                        Ok(200)
                    ),
                    Err(_) => false,
                };
                errors += u64::from(!ok);
                latencies.push(due.elapsed().as_micros() as u64);
            }
            (latencies, errors)
        });
        let open_at_start = open;
        let (mut all, mut errors) = (Vec::new(), 0);
        for t in tasks {
            let (l, e) = t.await.unwrap();
            all.extend(l);
            errors += e;
        }
        let elapsed = start.elapsed();
        let (health_latencies, health_errors) = health.await.unwrap();
        let closes = tokio::task::spawn_blocking(move || attack.join().unwrap())
            .await
            .unwrap();
        (
            all,
            errors,
            elapsed,
            health_latencies,
            health_errors,
            open_at_start,
            closes,
        )
    });
    let (latencies, errors, elapsed, health, health_errors, open_at_start, closes) = out;
    let n = latencies.len();
    let c = percentiles(latencies, &[50.0, 99.0, 99.9, 100.0]);
    let h = percentiles(health, &[50.0, 99.0, 100.0]);
    println!(
        "{:.1} {:.3} {:.3} {:.3} {:.3} {errors} {:.3} {:.3} {:.3} {health_errors} {} {closes}",
        n as f64 / elapsed.as_secs_f64(),
        c[0],
        c[1],
        c[2],
        c[3],
        h[0],
        h[1],
        h[2],
        open_at_start + attackers,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("root") => std::fs::write(&args[2], root().encode().unwrap()).unwrap(),
        Some("setup") => {
            let addr: SocketAddr = args[2].parse().unwrap();
            let admin = &args[3];
            let devices: u32 = args[4].parse().unwrap();
            let payload: usize = args[5].parse().unwrap();
            let out = std::path::Path::new(&args[6]);
            let token = |role: &str| {
                post(
                    addr,
                    "/api/v1/tokens",
                    Some(admin),
                    json!({ "name": format!("bench-{role}"), "role": role }),
                )["token"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            let (release, operator) = (token("release"), token("operator"));
            let b = bundle(payload);
            std::fs::write(out.join("bundle.sgl"), &b).unwrap();
            let (status, r) = http(
                addr,
                "POST",
                "/api/v1/releases",
                Some(&release),
                "application/octet-stream",
                &b,
            );
            assert!(status == 201 || status == 200, "upload: {status} {r}");
            let id = r["id"].as_str().unwrap().to_owned();
            let mut sessions = String::new();
            for i in 0..devices {
                let device = format!("bench-{i}");
                let k = device_key(i);
                post(
                    addr,
                    "/api/v1/devices",
                    Some(&operator),
                    json!({
                        "id": device,
                        "product": { "vendor": "acme", "device": "pump-x2" },
                        "public_key": hex::encode(k.verifying_key().to_bytes()),
                    }),
                );
            }
            post(
                addr,
                "/api/v1/deployments",
                Some(&operator),
                json!({ "release": id, "target": { "kind": "channel", "value": "stable" } }),
            );
            for i in 0..devices {
                let device = format!("bench-{i}");
                let c = post(
                    addr,
                    "/api/v1/device/challenge",
                    None,
                    json!({ "device_id": device }),
                );
                let nonce: [u8; 32] = hex::decode(c["nonce"].as_str().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap();
                let sig = device_key(i).sign(&sigil_server::api::auth_message(&device, &nonce));
                let s = post(
                    addr,
                    "/api/v1/device/session",
                    None,
                    json!({ "device_id": device, "nonce": c["nonce"], "signature": hex::encode(sig.to_bytes()) }),
                );
                sessions.push_str(s["token"].as_str().unwrap());
                sessions.push('\n');
            }
            std::fs::write(out.join("sessions.txt"), sessions).unwrap();
            println!("{id}");
        }
        Some("pace") => {
            let tokens: Vec<String> = std::fs::read_to_string(&args[3])
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect();
            assert!(!tokens.is_empty(), "no session tokens in {}", args[3]);
            pace(
                args[2].parse().unwrap(),
                tokens,
                args[4].parse().unwrap(),
                args[5].parse().unwrap(),
                args[6].parse().unwrap(),
            );
        }
        Some("flood") => {
            let tokens: Vec<String> = std::fs::read_to_string(&args[3])
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect();
            assert!(!tokens.is_empty(), "no session tokens in {}", args[3]);
            flood(
                args[2].parse().unwrap(),
                tokens,
                args[4].parse().unwrap(),
                args[5].parse().unwrap(),
                args[6].parse().unwrap(),
                args[7].parse().unwrap(),
            );
        }
        _ => {
            eprintln!("usage: bench_fleet root OUT | bench_fleet setup ADDR ADMIN DEVICES PAYLOAD_BYTES OUT_DIR | bench_fleet pace ADDR SESSIONS RATE CONNECTIONS SECONDS | bench_fleet flood ADDR SESSIONS RATE CONNECTIONS ATTACKERS SECONDS");
            std::process::exit(2);
        }
    }
}
