//! The agent through a fault-injecting test server: faults in transit (cuts at random offsets,
//! stalls, 5xx, 404, flipped bits, resumes answered with shifted bytes, trickles, redirects to
//! a CDN) and a hostile server (tampered, foreign, rolled-back, revoked, expired, endless
//! bundles, `file://` URLs), a corrupt state file, plus an agent process killed mid-download
//! and restarted.
//!
//! What a test asserts is what a fleet operator would check: whether the release was
//! installed, refused for good (never downloaded again, reported `failed`) or only failed to
//! arrive (reported `download_failed`, tried again next cycle).

// The scripted server's helpers panic on a broken fixture, as the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use common::*;
use serde_json::{json, Value};
use sigil_agent::state::{ReportState, UpdatePhase};
use sigil_agent::CycleOutcome;
use sigil_bootloader::Phase;

/// What one bundle request gets.
#[derive(Debug, Clone)]
enum Fault {
    /// This status and a short body.
    Status(u16),
    /// The connection drops after this many body bytes.
    CutAfter(u64),
    /// The body stops (connection open) after this many bytes.
    StallAfter(u64),
    /// The byte at this bundle offset is flipped in transit.
    Flip(u64),
    /// The whole bundle, ignoring Range (a server without Range support).
    IgnoreRange,
    /// The connection is accepted but no answer ever comes.
    NoAnswer,
    /// A ranged request is answered `206` with the Content-Range asked for, but with the bytes
    /// from this many bytes earlier (a broken mirror or cache).
    ShiftResume(u64),
    /// One byte every this long.
    Trickle(Duration),
    /// `302 Found` to this location.
    Redirect(String),
}

#[derive(Default)]
struct Script {
    /// The bundle bytes served.
    bundle: Mutex<Arc<Vec<u8>>>,
    /// After the bundle, keep sending this byte forever.
    endless: Mutex<Option<u8>>,
    /// Per-request faults, in order; then `always` (if any), then clean answers.
    faults: Mutex<VecDeque<Fault>>,
    always: Mutex<Option<Fault>>,
    /// Fields merged over the default offer (release id = the bundle's SHA-256, no claims).
    offer: Mutex<Value>,
    /// Body bytes sent, bundle requests seen.
    served: AtomicU64,
    requests: AtomicU32,
    /// Check-ins received.
    reports: Mutex<Vec<Value>>,
    /// Every request to a download path: (path, Authorization header).
    downloads: Mutex<Vec<(String, Option<String>)>>,
}

#[derive(Clone)]
struct Fake(Arc<Script>);

const TOKEN: &str = "hostile-token";

async fn challenge() -> Json<Value> {
    Json(json!({ "nonce": hex::encode([7u8; 32]), "expires_in": 60 }))
}

async fn session() -> Json<Value> {
    Json(json!({ "token": TOKEN, "expires_in": 900 }))
}

async fn checkin(State(f): State<Fake>, Json(body): Json<Value>) -> Json<Value> {
    f.0.reports.lock().unwrap().push(body);
    let bundle = Arc::clone(&f.0.bundle.lock().unwrap());
    let mut offer = json!({
        "deployment": 9,
        "release": release_id(&bundle),
        "size": bundle.len(),
        "download_url": "/bundle",
    });
    if let (Some(o), Some(extra)) = (offer.as_object_mut(), f.0.offer.lock().unwrap().as_object()) {
        o.extend(extra.clone());
    }
    // Always offers, whatever the device said: hostile.
    Json(json!({ "update": offer }))
}

fn stream_body(
    data: Arc<Vec<u8>>,
    start: u64,
    endless: Option<u8>,
    fault: Option<Fault>,
    served: Arc<Script>,
) -> Body {
    const CHUNK: u64 = 8 * 1024;
    let stream = futures_util::stream::unfold((start, 0u64), move |(pos, sent)| {
        let data = Arc::clone(&data);
        let served = Arc::clone(&served);
        let fault = fault.clone();
        async move {
            let len = data.len() as u64;
            let limit = match fault {
                Some(Fault::CutAfter(n)) | Some(Fault::StallAfter(n)) => n,
                _ => u64::MAX,
            };
            if sent >= limit {
                if matches!(fault, Some(Fault::StallAfter(_))) {
                    std::future::pending::<()>().await;
                }
                // Let what was sent reach the client before the connection drops.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Some((Err(std::io::Error::other("cut")), (pos, sent)));
            }
            let mut n = CHUNK.min(limit - sent);
            if let Some(Fault::Trickle(every)) = fault {
                tokio::time::sleep(every).await;
                n = 1;
            }
            let chunk: Vec<u8> = if pos < len {
                let end = (pos + n).min(len);
                let mut c = data[pos as usize..end as usize].to_vec();
                if let Some(Fault::Flip(at)) = fault {
                    if (pos..end).contains(&at) {
                        c[(at - pos) as usize] ^= 0x40;
                    }
                }
                c
            } else if let Some(b) = endless {
                vec![b; n as usize]
            } else {
                return None;
            };
            served
                .served
                .fetch_add(chunk.len() as u64, Ordering::SeqCst);
            let next = (pos + chunk.len() as u64, sent + chunk.len() as u64);
            Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), next))
        }
    });
    Body::from_stream(stream)
}

fn record_download(f: &Fake, path: &str, headers: &HeaderMap) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    f.0.downloads.lock().unwrap().push((path.to_owned(), auth));
}

async fn bundle_route(State(f): State<Fake>, headers: HeaderMap) -> Response {
    record_download(&f, "/bundle", &headers);
    f.0.requests.fetch_add(1, Ordering::SeqCst);
    let fault =
        f.0.faults
            .lock()
            .unwrap()
            .pop_front()
            .or_else(|| f.0.always.lock().unwrap().clone());
    if let Some(Fault::NoAnswer) = fault {
        std::future::pending::<()>().await;
    }
    if let Some(Fault::Status(code)) = fault {
        let status = StatusCode::from_u16(code).unwrap();
        return (
            status,
            Json(json!({ "error": "scripted", "message": format!("scripted {code}") })),
        )
            .into_response();
    }
    if let Some(Fault::Redirect(to)) = &fault {
        return (StatusCode::FOUND, [("location", to.clone())]).into_response();
    }
    let data = Arc::clone(&f.0.bundle.lock().unwrap());
    let endless = *f.0.endless.lock().unwrap();
    let len = data.len() as u64;
    let asked = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    // Where the body starts, and where the answer claims it starts.
    let (start, claimed) = match fault {
        Some(Fault::IgnoreRange) => (0, 0),
        Some(Fault::ShiftResume(k)) => (asked.saturating_sub(k), asked),
        _ => (asked, asked),
    };
    let body = stream_body(data, start, endless, fault, Arc::clone(&f.0));
    if endless.is_some() {
        return (StatusCode::OK, body).into_response();
    }
    let mut h = HeaderMap::new();
    h.insert("content-length", (len - start).to_string().parse().unwrap());
    if claimed > 0 {
        h.insert(
            "content-range",
            format!("bytes {claimed}-{}/{len}", len - 1)
                .parse()
                .unwrap(),
        );
        (StatusCode::PARTIAL_CONTENT, h, body).into_response()
    } else {
        (StatusCode::OK, h, body).into_response()
    }
}

/// A CDN's own hop: `/hop` redirects (same origin) to `/bundle`.
async fn hop_route(State(f): State<Fake>, headers: HeaderMap) -> Response {
    record_download(&f, "/hop", &headers);
    (StatusCode::TEMPORARY_REDIRECT, [("location", "/bundle")]).into_response()
}

/// Redirects to itself, for ever.
async fn loop_route(State(f): State<Fake>, headers: HeaderMap) -> Response {
    record_download(&f, "/loop", &headers);
    (StatusCode::FOUND, [("location", "/loop")]).into_response()
}

struct FakeServer {
    url: String,
    script: Arc<Script>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    async fn start(bundle: Vec<u8>) -> FakeServer {
        let script = Arc::new(Script::default());
        *script.bundle.lock().unwrap() = Arc::new(bundle);
        *script.offer.lock().unwrap() = json!({});
        let app = Router::new()
            .route("/api/v1/device/challenge", post(challenge))
            .route("/api/v1/device/session", post(session))
            .route("/api/v1/device/checkin", post(checkin))
            .route("/bundle", get(bundle_route))
            .route("/hop", get(hop_route))
            .route("/loop", get(loop_route))
            .with_state(Fake(Arc::clone(&script)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeServer {
            url: format!("http://{addr}"),
            script,
            task,
        }
    }

    fn faults(&self, faults: &[Fault]) {
        self.script
            .faults
            .lock()
            .unwrap()
            .extend(faults.iter().cloned());
    }

    fn always(&self, fault: Option<Fault>) {
        *self.script.always.lock().unwrap() = fault;
    }

    /// Merges these fields over the default offer.
    fn offer(&self, fields: Value) {
        *self.script.offer.lock().unwrap() = fields;
    }

    /// The release id offered (the served bundle's SHA-256 unless the offer says otherwise).
    fn release(&self) -> String {
        match self.script.offer.lock().unwrap()["release"].as_str() {
            Some(r) => r.to_owned(),
            None => release_id(&self.script.bundle.lock().unwrap()),
        }
    }

    fn served(&self) -> u64 {
        self.script.served.load(Ordering::SeqCst)
    }

    fn requests(&self) -> u32 {
        self.script.requests.load(Ordering::SeqCst)
    }

    fn downloads(&self) -> Vec<(String, Option<String>)> {
        self.script.downloads.lock().unwrap().clone()
    }

    /// (state, detail) of every check-in.
    fn reports(&self) -> Vec<(String, String)> {
        self.script
            .reports
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["state"].as_str().unwrap_or_default().to_owned(),
                    r["detail"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    fn reported(&self, state: &str) -> bool {
        self.reports().iter().any(|(s, _)| s == state)
    }
}

/// The claims the real server makes about a bundle it offers (product, component, version,
/// security counter, payload digest).
fn claims(spec: &Spec) -> Value {
    let payload = payload(spec.payload_len, spec.salt);
    json!({
        "product": { "vendor": spec.vendor, "device": spec.device },
        "component": "app",
        "version": spec.version,
        "security_counter": spec.counter,
        "payload_digest": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&payload)),
    })
}

/// Deterministic pseudo-random offsets (xorshift).
fn offsets(seed: u64, n: usize, below: u64) -> Vec<u64> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + x % (below - 1)
        })
        .collect()
}

fn assert_not_marked(device: &Device) {
    assert_eq!(device.boot_state().phase, Phase::Idle);
    assert!(
        !device.install_requested(),
        "the install must not be requested"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_at_random_offsets_resume_with_range_and_stage() {
    let update = bundle(&Spec::new("1.1.0", 2));
    let total = update.len() as u64;
    for seed in [1u64, 42, 2026] {
        let server = FakeServer::start(update.clone()).await;
        // Each cut happens at a random offset of the *remaining* body.
        let cuts: Vec<Fault> = offsets(seed, 3, total / 3)
            .into_iter()
            .map(Fault::CutAfter)
            .collect();
        server.faults(&cuts);
        let device = Device::provision(&DeviceOptions::new(&server.url));
        let outcome = device.agent().run_once().await.unwrap();
        assert_eq!(outcome, CycleOutcome::RebootRequested, "seed {seed}");
        assert_eq!(server.requests(), 4, "three cuts, three resumes");
        // Resumed from the exact byte: nothing was fetched twice.
        assert_eq!(server.served(), total, "seed {seed}");
        assert!(device.install_requested());
        // What the bootloader installs is the bundle, intact.
        assert!(device.reboot().is_trial());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_5xx_and_a_server_without_range_are_survived() {
    let update = bundle(&Spec::new("1.1.0", 2));
    let server = FakeServer::start(update.clone()).await;
    server.faults(&[
        Fault::NoAnswer,
        Fault::StallAfter(20_000),
        Fault::Status(503),
        Fault::Status(500),
        Fault::CutAfter(30_000),
        Fault::IgnoreRange,
    ]);
    let device = Device::provision(&DeviceOptions::new(&server.url));
    let started = std::time::Instant::now();
    let outcome = device.agent().run_once().await.unwrap();
    assert_eq!(outcome, CycleOutcome::RebootRequested);
    assert_eq!(server.requests(), 6);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the stall timeout and backoff"
    );
    assert!(device.reboot().is_trial());
}

/// Checks a cycle that ended as a download failure: reported `download_failed` (never
/// `failed`), nothing requested, the release not refused.
fn assert_download_failed(
    name: &str,
    device: &Device,
    agent: &sigil_agent::Agent,
    server: &FakeServer,
    outcome: &CycleOutcome,
    expect: &str,
) {
    assert!(
        matches!(outcome, CycleOutcome::DownloadFailed(why) if why.contains(expect)),
        "{name}: {outcome:?} should be a download failure mentioning {expect:?}"
    );
    assert_not_marked(device);
    let reports = server.reports();
    assert!(
        reports
            .iter()
            .any(|(s, d)| s == "download_failed" && d.contains(expect)),
        "{name}: {reports:?}"
    );
    assert!(!server.reported("failed"), "{name}: {reports:?}");
    assert!(
        !agent.state().is_rejected(&server.release()),
        "{name}: the release must not be refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_faults_are_bounded_download_failures_that_never_refuse_the_release() {
    let update = bundle(&Spec::new("1.1.0", 2));
    for always in [Fault::Status(503), Fault::StallAfter(0), Fault::CutAfter(0)] {
        let name = format!("{always:?}");
        let server = FakeServer::start(update.clone()).await;
        server.always(Some(always));
        let opts = DeviceOptions::new(&server.url);
        let device = Device::provision(&opts);
        let mut agent = device.agent();
        // Cycle after cycle: bounded, reported as a download failure, tried again.
        for cycle in 1..=3u32 {
            let before = server.requests();
            let outcome = agent.run_once().await.unwrap();
            assert_download_failed(&name, &device, &agent, &server, &outcome, "gave up");
            let made = server.requests() - before;
            assert!(
                (1..=opts.max_attempts).contains(&made),
                "{name}, cycle {cycle}: {made} requests"
            );
            assert!(
                matches!(
                    agent.state().update.as_ref().map(|u| &u.phase),
                    Some(UpdatePhase::Downloading { interrupted, .. }) if *interrupted == cycle
                ),
                "{name}: {:?}",
                agent.state()
            );
        }
        // Once the fault clears, the same release installs.
        server.always(None);
        assert_eq!(
            agent.run_once().await.unwrap(),
            CycleOutcome::RebootRequested,
            "{name}"
        );
        assert!(device.reboot().is_trial(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_is_a_download_failure_at_once() {
    let server = FakeServer::start(bundle(&Spec::new("1.1.0", 2))).await;
    server.always(Some(Fault::Status(404)));
    let device = Device::provision(&DeviceOptions::new(&server.url));
    let agent_ = &mut device.agent();
    let outcome = agent_.run_once().await.unwrap();
    assert_download_failed("404", &device, agent_, &server, &outcome, "scripted 404");
    assert_eq!(server.requests(), 1, "a 404 is not retried");
}

/// Serves `bytes` as the offered update (with `claims` merged into the offer); the agent must
/// refuse the release for good, report it `failed`, leave the slot unmarked, and must not
/// download it again.
async fn refused(
    name: &str,
    bytes: Vec<u8>,
    claims: Value,
    opts: impl Fn(&mut DeviceOptions),
    expect: &str,
) {
    let server = FakeServer::start(bytes).await;
    server.offer(claims);
    let mut o = DeviceOptions::new(&server.url);
    opts(&mut o);
    let device = Device::provision(&o);
    let mut agent = device.agent();
    let outcome = agent.run_once().await.unwrap();
    assert!(
        matches!(&outcome, CycleOutcome::Failed(why) if why.contains(expect)),
        "{name}: {outcome:?} should mention {expect:?}"
    );
    assert_not_marked(&device);
    let reports = server.reports();
    assert!(
        reports
            .iter()
            .any(|(s, d)| s == "failed" && d.contains(expect)),
        "{name}: {reports:?}"
    );
    assert!(!server.reported("download_failed"), "{name}: {reports:?}");
    assert!(agent.state().update.is_none(), "{name}");
    assert!(agent.state().is_rejected(&server.release()), "{name}");
    // Offered again: refused without a download.
    let requests = server.requests();
    assert_eq!(
        agent.run_once().await.unwrap(),
        CycleOutcome::AlreadyRefused(server.release()),
        "{name}"
    );
    assert_eq!(server.requests(), requests, "{name}: not downloaded again");
    // The device still boots its own image.
    let image = device.reboot();
    assert!(!image.is_trial(), "{name}");
    assert_eq!(image.security_counter(), 1, "{name}");
}

/// Serves `bytes` (then `endless` bytes, if set) for the offer (with `claims` merged into
/// it); the agent must not install it and must not refuse the release: each cycle is a bounded
/// download failure and the next cycle downloads again.
async fn not_refused(name: &str, bytes: Vec<u8>, endless: Option<u8>, claims: Value, expect: &str) {
    let server = FakeServer::start(bytes).await;
    *server.script.endless.lock().unwrap() = endless;
    server.offer(claims);
    let opts = DeviceOptions::new(&server.url);
    let device = Device::provision(&opts);
    let mut agent = device.agent();
    for cycle in 0..2 {
        let before = server.requests();
        let outcome = agent.run_once().await.unwrap();
        assert_download_failed(name, &device, &agent, &server, &outcome, expect);
        let made = server.requests() - before;
        assert!(
            (1..=opts.max_attempts).contains(&made),
            "{name}, cycle {cycle}: {made} requests (each pass discarded, bounded)"
        );
    }
    let image = device.reboot();
    assert!(!image.is_trial(), "{name}");
    assert_eq!(image.security_counter(), 1, "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_of_the_signed_release_and_offered_bytes_that_fail_refuse_it() {
    let good_spec = Spec::new("1.1.0", 2);
    let good = bundle(&good_spec);

    // tampered-release: the offered release itself (its bytes hash to its id) has a payload
    // byte changed after signing: no retry can fix it.
    let mut tampered = good.clone();
    let at = tampered.len() - 1000;
    tampered[at] ^= 1;
    refused("tampered-release", tampered, json!({}), |_| {}, "digest").await;

    // foreign-product: validly signed, for another device class, and offered as such.
    let mut foreign = Spec::new("1.1.0", 2);
    foreign.device = "monitor-m1";
    refused(
        "foreign-product",
        bundle(&foreign),
        claims(&foreign),
        |_| {},
        "another product",
    )
    .await;

    // rolled-back-version: a validly signed older release (replay), offered as such.
    let old = Spec::new("0.9.0", 1);
    refused(
        "rolled-back-version",
        bundle(&old),
        claims(&old),
        |_| {},
        "not newer",
    )
    .await;

    // rolled-back-counter: newer version, but a security counter below the device minimum.
    refused(
        "rolled-back-counter",
        bundle(&Spec::new("2.0.0", 0)),
        json!({}),
        |_| {},
        "counter",
    )
    .await;

    // revoked-key-set: the device confirmed key set 2; a bundle under key set 1 is refused.
    refused(
        "revoked-key-set",
        good.clone(),
        claims(&good_spec),
        |o| o.active_key_set_version = 2,
        "key set",
    )
    .await;

    // expired-manifest: on a device with trusted time.
    let mut expired = Spec::new("1.1.0", 2);
    expired.expires = Some(1_700_000_100);
    refused(
        "expired-manifest",
        bundle(&expired),
        json!({}),
        |o| o.device_extra = "trusted_time = true".to_owned(),
        "expired",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_the_offered_release_never_refuse_it() {
    let good_spec = Spec::new("1.1.0", 2);
    let good = bundle(&good_spec);
    let genuine = json!({ "release": release_id(&good) });

    // mirror-flipped-payload: a mirror that always flips a payload byte of the genuine
    // release: the bytes do not hash to the offered id.
    let mut tampered = good.clone();
    let at = tampered.len() - 1000;
    tampered[at] ^= 1;
    not_refused(
        "mirror-flipped-payload",
        tampered,
        None,
        genuine.clone(),
        "do not verify (step 9: payload digest",
    )
    .await;

    // tampered-manifest: a byte inside the signed envelope changed (caught before the payload).
    let mut forged = good.clone();
    forged[200] ^= 1;
    not_refused(
        "tampered-manifest",
        forged,
        None,
        genuine.clone(),
        "do not verify",
    )
    .await;

    // foreign-root: signed by keys the device's trust root does not know.
    let mut rogue = Spec::new("1.1.0", 2);
    rogue.root_signers = [31, 32];
    not_refused("foreign-root", bundle(&rogue), None, json!({}), "step 4").await;

    // mirror-replays-old-release: the offer is 1.1.0, the mirror serves the validly signed
    // 0.9.0: "not newer", but not the offered release.
    let mut offered = claims(&good_spec);
    offered["release"] = json!(release_id(&good));
    not_refused(
        "mirror-replays-old-release",
        bundle(&Spec::new("0.9.0", 1)),
        None,
        offered.clone(),
        "not the offered release: version 0.9.0 is signed, 1.1.0 was offered",
    )
    .await;

    // mirror-serves-another-product: validly signed for another product, offered as ours.
    let mut foreign = Spec::new("1.1.0", 2);
    foreign.device = "monitor-m1";
    not_refused(
        "mirror-serves-another-product",
        bundle(&foreign),
        None,
        offered,
        "product acme/monitor-m1 is signed",
    )
    .await;

    // endless-body: a header declaring far more than the slot (unsigned), body never ends.
    let mut endless = Spec::new("1.1.0", 2);
    endless.declared_size = Some(1 << 30);
    let mut prefix = bundle(&endless);
    prefix.truncate(prefix.len() - endless.payload_len);
    not_refused(
        "endless-body",
        prefix,
        Some(0x55),
        json!({}),
        "larger than the slot",
    )
    .await;

    // endless-garbage: no bundle at all, an infinite stream of bytes.
    not_refused(
        "endless-garbage",
        Vec::new(),
        Some(0xEE),
        json!({ "release": release_id(&good) }),
        "do not verify",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_delivery_followed_by_a_clean_one_installs_the_release() {
    let update = bundle(&Spec::new("1.1.0", 2));
    let total = update.len() as u64;
    // A flipped bit in the header, the envelope, the payload and the very last byte.
    for at in [3, 300, total / 2, total - 1] {
        let server = FakeServer::start(update.clone()).await;
        server.faults(&[Fault::Flip(at)]);
        let device = Device::provision(&DeviceOptions::new(&server.url));
        let mut agent = device.agent();
        let outcome = agent.run_once().await.unwrap();
        assert_eq!(outcome, CycleOutcome::RebootRequested, "flip at {at}");
        assert_eq!(
            server.requests(),
            2,
            "flip at {at}: discarded, then downloaded again"
        );
        assert!(
            !server.reported("failed") && !server.reported("download_failed"),
            "flip at {at}: {:?}",
            server.reports()
        );
        assert!(!agent.state().is_rejected(&server.release()));
        assert!(
            device.reboot().is_trial(),
            "flip at {at}: the clean bytes installed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_answered_with_shifted_bytes_does_not_refuse_the_release() {
    let update = bundle(&Spec::new("1.1.0", 2));
    // Once, then on every ranged request (a broken cache in front of the mirror).
    for always in [false, true] {
        let server = FakeServer::start(update.clone()).await;
        server.faults(&[Fault::CutAfter(70_000), Fault::ShiftResume(1000)]);
        if always {
            server.always(Some(Fault::ShiftResume(1000)));
        }
        let device = Device::provision(&DeviceOptions::new(&server.url));
        let mut agent = device.agent();
        let outcome = agent.run_once().await.unwrap();
        // The shifted resume does not verify: discarded, downloaded again from byte 0 (no
        // Range, so no shift), installed.
        assert_eq!(outcome, CycleOutcome::RebootRequested, "always: {always}");
        assert_eq!(server.requests(), 3, "always: {always}");
        assert!(!server.reported("failed"), "{:?}", server.reports());
        assert!(!agent.state().is_rejected(&server.release()));
        assert!(device.reboot().is_trial(), "always: {always}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_trickle_ends_at_the_deadline() {
    // One byte every 2.5 s: under the stall timeout, so only the deadline ends it.
    let server = FakeServer::start(bundle(&Spec::new("1.1.0", 2))).await;
    server.always(Some(Fault::Trickle(Duration::from_millis(2500))));
    let mut opts = DeviceOptions::new(&server.url);
    opts.stall_timeout = "30s";
    opts.download_extra = "deadline = \"4s\"\nmin_throughput = 0\n".to_owned();
    let device = Device::provision(&opts);
    // The real `--once`, as a bench tester or cron runs it.
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sigil-agent"))
        .args(["--once", "--config"])
        .arg(&device.config_path)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("--once is still running 30 s into a 4 s deadline");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = started.elapsed();
    assert_eq!(
        status.code(),
        Some(5),
        "exit 5: download failed, tried again later"
    );
    assert!(elapsed >= Duration::from_secs(4), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(20),
        "ended near the deadline: {elapsed:?}"
    );
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(out.contains("download deadline of 4s passed"), "{out}");
    assert!(
        server
            .reports()
            .iter()
            .any(|(s, d)| s == "download_failed" && d.contains("deadline")),
        "{:?}",
        server.reports()
    );
    assert_not_marked(&device);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_below_the_minimum_throughput_is_cut_and_retried_within_bounds() {
    let server = FakeServer::start(bundle(&Spec::new("1.1.0", 2))).await;
    // About 20 bytes/s, each byte well inside the stall timeout.
    server.always(Some(Fault::Trickle(Duration::from_millis(50))));
    let mut opts = DeviceOptions::new(&server.url);
    opts.max_attempts = 2;
    opts.stall_timeout = "30s";
    opts.download_extra =
        "deadline = \"1h\"\nmin_throughput = 1000\nthroughput_window = \"1s\"\n".to_owned();
    let device = Device::provision(&opts);
    let mut agent = device.agent();
    let started = std::time::Instant::now();
    let outcome = agent.run_once().await.unwrap();
    assert_download_failed("trickle", &device, &agent, &server, &outcome, "too slow");
    assert_eq!(
        server.requests(),
        2,
        "each slow response is cut after one window"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_is_recovered_from_the_flash_and_reported() {
    let update = bundle(&Spec::new("1.1.0", 2));
    let server = FakeServer::start(update.clone()).await;
    let hooks = tempfile::tempdir().unwrap();
    let allow = hooks.path().join("allow");
    let mut opts = DeviceOptions::new(&server.url);
    // "Not now" until the file exists.
    opts.install_permission = Some(format!("test -e {} || exit 75", allow.display()));
    let device = Device::provision(&opts);
    assert!(matches!(
        device.agent().run_once().await.unwrap(),
        CycleOutcome::Deferred(_)
    ));
    assert!(device.install_requested());

    // Both generations of the state file rot (a torn write on a filesystem without atomic
    // rename, bit rot): nothing of the agent's record survives.
    let state = device.path("state");
    std::fs::write(state.join("state.json"), b"{\"update\": {\"phase\": \"stag").unwrap();
    std::fs::write(state.join("state.json.prev"), b"\x00\x00\x00").unwrap();

    let mut agent = device.agent();
    assert!(
        matches!(
            agent.recovery(),
            Some(sigil_agent::state::Recovery::Rebuilt { .. })
        ),
        "{:?}",
        agent.recovery()
    );
    // The agent rebuilds its record from the flash: the staged bundle still verifies as the
    // requested image, so the request is kept (and the permission hook asked again).
    let outcome = agent.run_once().await.unwrap();
    assert!(matches!(outcome, CycleOutcome::Deferred(_)), "{outcome:?}");
    assert!(device.install_requested(), "the verified request is kept");
    let rec = agent.state().update.clone().expect("record rebuilt");
    assert_eq!(
        rec.release,
        release_id(&update),
        "the release id is the staged bundle's hash"
    );
    assert_eq!(
        rec.deployment,
        Some(9),
        "the deployment comes back from the offer"
    );
    assert_eq!(rec.version.as_deref(), Some("1.1.0"));
    let reports = server.reports();
    assert!(
        reports.iter().any(|(_, d)| d.contains("agent state")
            && d.contains("state.json is corrupt")
            && d.contains("rebuilt from the flash")
            && d.contains("install of")),
        "the recovery is reported: {reports:?}"
    );
    assert!(agent.recovery().is_none(), "reported once");

    // Only the current generation rots now: the previous one is used.
    drop(agent);
    std::fs::write(state.join("state.json"), b"not json").unwrap();
    let mut agent = device.agent();
    assert!(
        matches!(
            agent.recovery(),
            Some(sigil_agent::state::Recovery::Previous { .. })
        ),
        "{:?}",
        agent.recovery()
    );
    std::fs::write(&allow, b"").unwrap();
    assert_eq!(
        agent.run_once().await.unwrap(),
        CycleOutcome::RebootRequested
    );
    assert!(server
        .reports()
        .iter()
        .any(|(_, d)| d.contains("recovered the previous generation")));
    assert!(device.reboot().is_trial());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_without_a_request_is_reported_and_the_agent_carries_on() {
    let server = FakeServer::start(bundle(&Spec::new("1.1.0", 2))).await;
    let device = Device::provision(&DeviceOptions::new(&server.url));
    let state = device.path("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("state.json"), b"{{{{").unwrap();
    // `--once`, the binary: it must neither refuse to start nor fall silent.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sigil-agent"))
        .args(["--once", "--config"])
        .arg(&device.config_path)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(device.install_requested(), "the update went ahead");
    assert!(server
        .reports()
        .iter()
        .any(|(_, d)| d.contains("state.json is corrupt") && d.contains("no generation")));
    assert!(state.join("state.json.corrupt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdn_redirect_is_followed_without_the_session_token() {
    let update = bundle(&Spec::new("1.1.0", 2));
    let server = FakeServer::start(update.clone()).await;
    let cdn = FakeServer::start(update.clone()).await;
    // Server → CDN (another origin: same host, another port) → the CDN's own hop → bundle.
    server.always(Some(Fault::Redirect(format!("{}/hop", cdn.url))));
    // A cut on the CDN: the resume goes through the redirects again.
    cdn.faults(&[Fault::CutAfter(50_000)]);
    let device = Device::provision(&DeviceOptions::new(&server.url));
    let outcome = device.agent().run_once().await.unwrap();
    assert_eq!(outcome, CycleOutcome::RebootRequested);
    assert!(device.reboot().is_trial());

    let at_server = server.downloads();
    assert_eq!(at_server.len(), 2, "{at_server:?}");
    assert!(
        at_server
            .iter()
            .all(|(_, auth)| auth.as_deref() == Some(&format!("Bearer {TOKEN}"))),
        "the server's own origin gets the token: {at_server:?}"
    );
    let at_cdn = cdn.downloads();
    assert_eq!(
        at_cdn.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["/hop", "/bundle", "/hop", "/bundle"],
        "{at_cdn:?}"
    );
    assert!(
        at_cdn.iter().all(|(_, auth)| auth.is_none()),
        "the token never reaches the CDN, on any hop: {at_cdn:?}"
    );
    assert_eq!(cdn.served(), update.len() as u64, "resumed at the CDN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_bounded() {
    let server = FakeServer::start(bundle(&Spec::new("1.1.0", 2))).await;
    server.always(Some(Fault::Redirect(format!("{}/loop", server.url))));
    let mut opts = DeviceOptions::new(&server.url);
    opts.max_attempts = 2;
    opts.download_extra = "max_redirects = 3\n".to_owned();
    let device = Device::provision(&opts);
    let agent_ = &mut device.agent();
    let outcome = agent_.run_once().await.unwrap();
    assert_download_failed(
        "loop",
        &device,
        agent_,
        &server,
        &outcome,
        "more than 3 redirects",
    );
    // Two attempts, each: the bundle URL, then three hops of /loop (the fourth is not taken).
    let loops = server
        .downloads()
        .iter()
        .filter(|(p, _)| p == "/loop")
        .count();
    assert_eq!(loops, 2 * 3, "{:?}", server.downloads());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_and_other_non_http_urls_are_refused_at_once() {
    for (url, redirect) in [
        ("file:///etc/passwd", false),
        ("ftp://mirror.example/bundle", false),
        ("data:application/octet-stream,AAAA", false),
        ("file:///dev/zero", true),
    ] {
        let server = FakeServer::start(bundle(&Spec::new("1.1.0", 2))).await;
        if redirect {
            server.always(Some(Fault::Redirect(url.to_owned())));
        } else {
            server.offer(json!({ "download_url": url }));
        }
        let device = Device::provision(&DeviceOptions::new(&server.url));
        let agent_ = &mut device.agent();
        let started = std::time::Instant::now();
        let outcome = agent_.run_once().await.unwrap();
        let scheme = url.split(':').next().unwrap();
        let expect = format!("scheme \"{scheme}\" is not http or https");
        assert_download_failed(url, &device, agent_, &server, &outcome, &expect);
        assert_eq!(
            server.requests(),
            u32::from(redirect),
            "{url}: refused at once, not retried"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_is_the_higher_of_the_stored_floor_and_the_running_counter() {
    // The factory provisioned floor 0 and the device never booted since: the stored floor
    // lags behind the running image (counter 3).
    let lagging = |o: &mut DeviceOptions| {
        o.active_version = "1.0.0";
        o.active_counter = 3;
        o.boot_after_provisioning = false;
    };
    let server = FakeServer::start(bundle(&Spec::new("1.1.0", 2))).await;
    let mut opts = DeviceOptions::new(&server.url);
    lagging(&mut opts);
    let device = Device::provision(&opts);
    assert_eq!(device.boot_state().min_security_counter, 0, "premise");
    let mut agent = device.agent();
    let outcome = agent.run_once().await.unwrap();
    assert!(
        matches!(&outcome, CycleOutcome::Failed(why) if why.contains("security counter is below")),
        "a counter below the running image's is a rollback: {outcome:?}"
    );
    assert_not_marked(&device);
    assert!(agent.state().is_rejected(&server.release()));

    // The running image's own counter is allowed (equal counters: a same-security release).
    let server = FakeServer::start(bundle(&Spec::new("1.1.0", 3))).await;
    let mut opts = DeviceOptions::new(&server.url);
    lagging(&mut opts);
    let device = Device::provision(&opts);
    assert_eq!(
        device.agent().run_once().await.unwrap(),
        CycleOutcome::RebootRequested
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_enforced_only_with_trusted_time() {
    let mut expired = Spec::new("1.1.0", 2);
    expired.expires = Some(1_700_000_100);
    // Without trusted time the device cannot tell: the expired manifest installs.
    let server = FakeServer::start(bundle(&expired)).await;
    let device = Device::provision(&DeviceOptions::new(&server.url));
    assert_eq!(
        device.agent().run_once().await.unwrap(),
        CycleOutcome::RebootRequested
    );
    // With trusted time, a manifest that expires in the future still installs.
    let mut fresh = Spec::new("1.1.0", 2);
    fresh.expires = Some(u64::from(u32::MAX) * 4);
    let server = FakeServer::start(bundle(&fresh)).await;
    let mut opts = DeviceOptions::new(&server.url);
    opts.device_extra = "trusted_time = true".to_owned();
    let device = Device::provision(&opts);
    assert_eq!(
        device.agent().run_once().await.unwrap(),
        CycleOutcome::RebootRequested
    );
    // (The refusal with trusted time is `expired-manifest` among the refused fixtures.)
}

#[test]
fn report_states_are_spelled_as_the_server_accepts_them() {
    use sigil_server::rollout::DeviceStatus;
    // One wire enum (sigil-protocol) on both sides; the server maps every non-neutral state to
    // the deployment status of the same name.
    for state in ReportState::ALL {
        let status = sigil_server::store::rules::reported_status(state);
        assert_eq!(status.is_none(), state.is_neutral(), "{state}");
        if let Some(status) = status {
            assert_eq!(status.as_str(), state.as_str());
        }
    }
    assert_eq!(
        sigil_server::store::rules::reported_status(ReportState::DownloadFailed),
        Some(DeviceStatus::DownloadFailed)
    );
    let down = DeviceStatus::DownloadFailed;
    assert!(!down.is_final() && !down.is_failure());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_download_resumes_from_the_slot() {
    let update = bundle(&Spec::new("1.1.0", 2));
    let total = update.len() as u64;
    let server = FakeServer::start(update.clone()).await;
    let cut = 140_000u64;
    server.faults(&[Fault::StallAfter(cut)]);
    let mut opts = DeviceOptions::new(&server.url);
    opts.stall_timeout = "60s";
    let device = Device::provision(&opts);

    // A real agent process, killed (SIGKILL) while the server holds the connection open.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sigil-agent"))
        .args(["--once", "--config"])
        .arg(&device.config_path)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server.served() < cut {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never downloaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Kill once the agent has checkpointed the last whole buffer before the stall (waited for
    // on its state file, not for a fixed time, so a loaded host cannot make it early).
    let state_file = device.dir.path().join("state/state.json");
    let checkpointed = || {
        let Ok(bytes) = std::fs::read(&state_file) else {
            return 0;
        };
        match serde_json::from_slice::<sigil_agent::state::AgentState>(&bytes) {
            Ok(sigil_agent::state::AgentState {
                update:
                    Some(sigil_agent::state::UpdateRecord {
                        phase: UpdatePhase::Downloading { checkpoint, .. },
                        ..
                    }),
                ..
            }) => checkpoint,
            _ => 0,
        }
    };
    while checkpointed() + 65_536 < cut {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never checkpointed the bytes it received"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_not_marked(&device);
    let first = server.served();

    // The state survived; a new agent re-verifies the slot prefix and fetches only the rest.
    let mut agent = device.agent();
    let checkpoint = match &agent.state().update {
        Some(u) => match u.phase {
            UpdatePhase::Downloading { checkpoint, .. } => checkpoint,
            ref other => panic!("unexpected phase {other:?}"),
        },
        None => panic!("the download record did not survive"),
    };
    assert!(checkpoint >= 65_536, "checkpointed at {checkpoint}");
    assert_eq!(
        agent.run_once().await.unwrap(),
        CycleOutcome::RebootRequested
    );
    let second = server.served() - first;
    assert_eq!(
        second,
        total - checkpoint,
        "only the bytes after the checkpoint are fetched again"
    );
    assert!(
        cut - checkpoint <= 65_536,
        "re-downloaded at most one buffer: {}",
        cut - checkpoint
    );
    assert!(device.reboot().is_trial());
    assert!(first + second < 2 * total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_maintenance_window_the_install_is_deferred() {
    let server = FakeServer::start(bundle(&Spec::new("1.1.0", 2))).await;
    let now_min = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 60
        % (24 * 60);
    // A one-hour window starting two hours from now (UTC).
    let (start, end) = ((now_min + 120) % 1440, (now_min + 180) % 1440);
    let mut opts = DeviceOptions::new(&server.url);
    opts.reboot = "exit 99".to_owned();
    opts.extra = format!(
        "[maintenance_window]\nstart = \"{:02}:{:02}\"\nend = \"{:02}:{:02}\"\n",
        start / 60,
        start % 60,
        end / 60,
        end % 60
    );
    let device = Device::provision(&opts);
    let outcome = device.agent().run_once().await.unwrap();
    assert!(
        matches!(&outcome, CycleOutcome::Deferred(why) if why.contains("maintenance window")),
        "{outcome:?}"
    );
    assert!(device.install_requested(), "staged, waiting for the window");
    let reports = server.reports();
    assert!(
        reports
            .iter()
            .any(|(s, d)| s == "deferred" && d.contains("maintenance window")),
        "{reports:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_queued_durably_while_the_server_is_down() {
    let update = bundle(&Spec::new("1.1.0", 2));
    let server = FakeServer::start(update.clone()).await;
    let mut opts = DeviceOptions::new(&server.url);
    opts.install_permission = Some("exit 75".to_owned());
    let device = Device::provision(&opts);
    assert!(matches!(
        device.agent().run_once().await.unwrap(),
        CycleOutcome::Deferred(_)
    ));
    let old_url = server.url.clone();
    drop(server);

    // Server gone: the deferral is decided locally and its report is queued.
    let mut agent = device.agent();
    assert!(matches!(
        agent.run_once().await.unwrap(),
        CycleOutcome::Deferred(_)
    ));
    let queued = agent.queued_reports().unwrap();
    assert!(
        queued.iter().any(|r| r.state == ReportState::Deferred),
        "{queued:?}"
    );
    drop(agent);

    // The queue survives a restart and is delivered, in order, once the server is back.
    let agent = device.agent();
    assert_eq!(agent.queued_reports().unwrap().len(), queued.len());
    drop(agent);
    let server = FakeServer::start(update).await;
    let text = std::fs::read_to_string(&device.config_path).unwrap();
    std::fs::write(&device.config_path, text.replace(&old_url, &server.url)).unwrap();
    let mut agent = device.agent();
    assert!(matches!(
        agent.run_once().await.unwrap(),
        CycleOutcome::Deferred(_)
    ));
    assert!(agent.queued_reports().unwrap().is_empty());
    let deferred = server
        .reports()
        .iter()
        .filter(|(s, _)| s == "deferred")
        .count();
    assert_eq!(deferred, queued.len() + 1, "{:?}", server.reports());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_stages_reboots_and_stops_on_sigterm() {
    let server = FakeServer::start(bundle(&Spec::new("1.1.0", 2))).await;
    let hooks = tempfile::tempdir().unwrap();
    let rebooted = hooks.path().join("rebooted");
    let mut opts = DeviceOptions::new(&server.url);
    opts.reboot = format!("touch {}", rebooted.display());
    let device = Device::provision(&opts);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sigil-agent"))
        .arg("--config")
        .arg(&device.config_path)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !rebooted.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never asked for the reboot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(code.success(), "{code:?}");
    assert!(device.install_requested());
    assert!(server.reports().iter().any(|(s, _)| s == "installing"));
}
