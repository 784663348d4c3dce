//! Sets up a simulated fleet for `bench/server.sh` (not part of the server).
//!
//! ```text
//! bench_fleet root OUT_FILE
//!     writes a trust root (fixed test keys) for the server to start with
//! bench_fleet setup ADDR ADMIN_TOKEN DEVICES PAYLOAD_BYTES OUT_DIR
//!     uploads a bundle, enrols DEVICES devices, deploys the bundle to them, opens one session
//!     per device; writes OUT_DIR/bundle.sgl, OUT_DIR/sessions.txt (one token per line) and
//!     prints the release id
//! ```
// A setup tool for a benchmark: any failure aborts the run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sigil_manifests::*;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn device_key(i: u32) -> SigningKey {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    SigningKey::from_bytes(&seed)
}

fn root() -> TrustRoot {
    TrustRoot::new(1, 1, &[key(1).verifying_key().to_bytes()]).unwrap()
}

fn bundle(payload_len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..payload_len)
        .map(|i| (i as u8).wrapping_mul(31))
        .collect();
    let manifest = Manifest {
        product: ProductId::new("acme", "pump-x2").unwrap(),
        component: "app",
        version: Version::parse("2.0.0").unwrap(),
        security_counter: 2,
        payload_size: payload.len() as u64,
        payload_digest: Sha256::digest(&payload).into(),
        payload_format: PayloadFormat::Raw,
        payload_alignment: 4096,
        min_bootloader_version: None,
        dependencies: heapless::Vec::new(),
        created: 1_700_000_000,
        expires: None,
        release_notes_digest: None,
        sbom_digest: None,
    }
    .encode()
    .unwrap();
    let ks = KeySet::new(1, 1, None, &[key(11).verifying_key().to_bytes()])
        .unwrap()
        .encode()
        .unwrap();
    assemble_bundle(&ks, &[&key(1)], &manifest, &[&key(11)], &payload).unwrap()
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
        _ => {
            eprintln!("usage: bench_fleet root OUT | bench_fleet setup ADDR ADMIN DEVICES PAYLOAD_BYTES OUT_DIR");
            std::process::exit(2);
        }
    }
}
