//! The agent against a scripted test server: faults in transit (cuts at random offsets,
//! stalls, 5xx, 404) and a hostile server (tampered, foreign, rolled-back, revoked, endless
//! bundles), plus an agent process killed mid-download and restarted.

// The scripted server's helpers panic on a broken fixture, as the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::VecDeque;
use std::convert::Infallible;
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
use sigil_agent::state::UpdatePhase;
use sigil_agent::CycleOutcome;
use sigil_bootloader::Phase;

/// What one bundle request gets.
#[derive(Debug, Clone, Copy)]
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
    /// Body bytes sent, bundle requests seen.
    served: AtomicU64,
    requests: AtomicU32,
    /// Check-ins received.
    reports: Mutex<Vec<Value>>,
}

#[derive(Clone)]
struct Fake(Arc<Script>);

async fn challenge() -> Json<Value> {
    Json(json!({ "nonce": hex::encode([7u8; 32]), "expires_in": 60 }))
}

async fn session() -> Json<Value> {
    Json(json!({ "token": "hostile-token", "expires_in": 900 }))
}

async fn checkin(State(f): State<Fake>, Json(body): Json<Value>) -> Json<Value> {
    f.0.reports.lock().unwrap().push(body);
    let size = f.0.bundle.lock().unwrap().len();
    // Always offers, whatever the device said: hostile.
    Json(json!({ "update": {
        "deployment": 9,
        "release": "hostile-release",
        "version": "9.9.9",
        "size": size,
        "download_url": "/bundle",
    }}))
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
            let n = CHUNK.min(limit - sent);
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

async fn bundle_route(State(f): State<Fake>, headers: HeaderMap) -> Response {
    f.0.requests.fetch_add(1, Ordering::SeqCst);
    let fault =
        f.0.faults
            .lock()
            .unwrap()
            .pop_front()
            .or(*f.0.always.lock().unwrap());
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
    let data = Arc::clone(&f.0.bundle.lock().unwrap());
    let endless = *f.0.endless.lock().unwrap();
    let len = data.len() as u64;
    let mut start = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if matches!(fault, Some(Fault::IgnoreRange)) {
        start = 0;
    }
    let body = stream_body(data, start, endless, fault, Arc::clone(&f.0));
    if endless.is_some() {
        return (StatusCode::OK, body).into_response();
    }
    let mut h = HeaderMap::new();
    h.insert("content-length", (len - start).to_string().parse().unwrap());
    if start > 0 {
        h.insert(
            "content-range",
            format!("bytes {start}-{}/{len}", len - 1).parse().unwrap(),
        );
        (StatusCode::PARTIAL_CONTENT, h, body).into_response()
    } else {
        (StatusCode::OK, h, body).into_response()
    }
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
        let app = Router::new()
            .route("/api/v1/device/challenge", post(challenge))
            .route("/api/v1/device/session", post(session))
            .route("/api/v1/device/checkin", post(checkin))
            .route("/bundle", get(bundle_route))
            .with_state(Fake(Arc::clone(&script)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
            let _: Result<(), Infallible> = Ok(());
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
            .extend(faults.iter().copied());
    }

    fn served(&self) -> u64 {
        self.script.served.load(Ordering::SeqCst)
    }

    fn requests(&self) -> u32 {
        self.script.requests.load(Ordering::SeqCst)
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
    assert_eq!(
        device.boot_state().phase,
        Phase::Idle,
        "the slot must not be marked pending"
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_failures_give_up_after_bounded_retries() {
    let update = bundle(&Spec::new("1.1.0", 2));
    for always in [Fault::Status(503), Fault::StallAfter(0), Fault::CutAfter(0)] {
        let server = FakeServer::start(update.clone()).await;
        *server.script.always.lock().unwrap() = Some(always);
        let opts = DeviceOptions::new(&server.url);
        let device = Device::provision(&opts);
        let mut agent = device.agent();
        let outcome = agent.run_once().await.unwrap();
        assert!(
            matches!(outcome, CycleOutcome::DownloadInterrupted(_)),
            "{always:?}: {outcome:?}"
        );
        // StallAfter makes progress on the first request only; the others fail outright.
        assert!(
            server.requests() <= opts.max_attempts + 1,
            "{always:?}: {} requests",
            server.requests()
        );
        assert_not_marked(&device);
        // Cycle after cycle it stays bounded, then the update is reported failed.
        let mut last = outcome;
        for _ in 0..sigil_agent::agent::MAX_INTERRUPTED_CYCLES {
            last = agent.run_once().await.unwrap();
            if matches!(last, CycleOutcome::Failed(_)) {
                break;
            }
        }
        assert!(
            matches!(&last, CycleOutcome::Failed(why) if why.contains("giving up")),
            "{always:?}: {last:?}"
        );
        assert_not_marked(&device);
        let reports = server.reports();
        assert!(
            reports
                .iter()
                .any(|(s, d)| s == "downloading" && d.contains("interrupted")),
            "{reports:?}"
        );
        assert_eq!(reports.last().map(|r| r.0.as_str()), Some("failed"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_gives_up_at_once() {
    let server = FakeServer::start(bundle(&Spec::new("1.1.0", 2))).await;
    *server.script.always.lock().unwrap() = Some(Fault::Status(404));
    let device = Device::provision(&DeviceOptions::new(&server.url));
    let outcome = device.agent().run_once().await.unwrap();
    assert!(
        matches!(&outcome, CycleOutcome::Failed(why) if why.contains("404")),
        "{outcome:?}"
    );
    assert_eq!(server.requests(), 1, "a 404 is not retried");
    assert_not_marked(&device);
    let reports = server.reports();
    assert!(
        reports
            .iter()
            .any(|(s, d)| s == "failed" && d.contains("scripted 404")),
        "{reports:?}"
    );
}

/// Serves `bytes` as the offered update; the agent must refuse it, report it and leave the
/// slot unmarked, and must not download it again.
async fn refused(
    name: &str,
    bytes: Vec<u8>,
    endless: Option<u8>,
    opts: impl Fn(&mut DeviceOptions),
    expect: &str,
) {
    let server = FakeServer::start(bytes).await;
    *server.script.endless.lock().unwrap() = endless;
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
    assert!(agent.state().update.is_none(), "{name}");
    // Offered again: refused without a download. Counted in requests, not bytes: an endless
    // body's server side may still be writing into the closed connection for a moment.
    let requests = server.requests();
    assert_eq!(
        agent.run_once().await.unwrap(),
        CycleOutcome::AlreadyRefused("hostile-release".into()),
        "{name}"
    );
    assert_eq!(server.requests(), requests, "{name}: not downloaded again");
    // The device still boots its own image.
    let image = device.reboot();
    assert!(!image.is_trial(), "{name}");
    assert_eq!(image.security_counter(), 1, "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_server_bundles_are_rejected_reported_and_never_marked() {
    let good = bundle(&Spec::new("1.1.0", 2));

    // tampered-payload: one payload byte changed after signing.
    let mut tampered = good.clone();
    let at = tampered.len() - 1000;
    tampered[at] ^= 1;
    refused("tampered-payload", tampered, None, |_| {}, "digest").await;

    // tampered-manifest: a byte inside the signed envelope changed.
    let mut forged = good.clone();
    forged[200] ^= 1;
    refused("tampered-manifest", forged, None, |_| {}, "bundle rejected").await;

    // foreign-product: validly signed, for another device class.
    let mut foreign = Spec::new("1.1.0", 2);
    foreign.device = "monitor-m1";
    refused(
        "foreign-product",
        bundle(&foreign),
        None,
        |_| {},
        "another product",
    )
    .await;

    // rolled-back-version: a validly signed older release (replay).
    refused(
        "rolled-back-version",
        bundle(&Spec::new("0.9.0", 1)),
        None,
        |_| {},
        "not newer",
    )
    .await;

    // rolled-back-counter: newer version, but a security counter below the device minimum.
    refused(
        "rolled-back-counter",
        bundle(&Spec::new("2.0.0", 0)),
        None,
        |_| {},
        "counter",
    )
    .await;

    // revoked-key-set: the device confirmed key set 2; a bundle under key set 1 is refused.
    refused(
        "revoked-key-set",
        bundle(&Spec::new("1.1.0", 2)),
        None,
        |o| o.active_key_set_version = 2,
        "key set",
    )
    .await;

    // foreign-root: signed by keys the device's trust root does not know.
    let mut rogue = Spec::new("1.1.0", 2);
    rogue.root_signers = [31, 32];
    refused(
        "foreign-root",
        bundle(&rogue),
        None,
        |_| {},
        "bundle rejected",
    )
    .await;

    // endless-body: a signed header declaring far more than the slot, body never ends.
    let mut endless = Spec::new("1.1.0", 2);
    endless.declared_size = Some(1 << 30);
    let mut prefix = bundle(&endless);
    prefix.truncate(prefix.len() - endless.payload_len);
    refused(
        "endless-body",
        prefix,
        Some(0x55),
        |_| {},
        "larger than the slot",
    )
    .await;

    // endless-garbage: no bundle at all, an infinite stream of bytes.
    refused(
        "endless-garbage",
        Vec::new(),
        Some(0xEE),
        |_| {},
        "bundle rejected",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_corrupted_in_transit_are_never_marked_pending() {
    let update = bundle(&Spec::new("1.1.0", 2));
    let server = FakeServer::start(update.clone()).await;
    server.faults(&[Fault::Flip(update.len() as u64 / 2)]);
    let device = Device::provision(&DeviceOptions::new(&server.url));
    let outcome = device.agent().run_once().await.unwrap();
    assert!(
        matches!(&outcome, CycleOutcome::Failed(why) if why.contains("digest")),
        "{outcome:?}"
    );
    assert_not_marked(&device);
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
        queued
            .iter()
            .any(|r| r.state == sigil_agent::state::ReportState::Deferred),
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
