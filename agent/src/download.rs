//! Streaming a bundle into the staging slot while it is verified, with resume, deadlines and
//! the rule for what refuses a release for good.
//!
//! Every byte received is fed to `sigil_manifests::BundleVerifier` **before** it is written,
//! in order, so a forged header, key set or manifest is refused before any payload byte
//! reaches the flash; the payload digest is checked when the last byte arrives. Memory is one
//! write buffer (64 KiB or one sector, whichever is larger), the envelope buffer and a copy of
//! the bundle's first `HEADER_LEN + VERIFY_BUFFER_LEN` bytes (header, root chain, envelope), whatever the bundle size. The
//! verifier bounds the bundle to the slot (`DevicePolicy::device`'s slot size): an endless
//! body is cut off at the signed length.
//!
//! # Transfer faults
//!
//! | situation | what happens |
//! |---|---|
//! | connection cut, stall (no byte for `stall_timeout`), 5xx, 408, 429, 401, too many redirects | retry with `Range: bytes=N-` from the exact byte reached, after a backoff `min(max, initial × 2^k)` with full jitter |
//! | a response slower than `min_throughput` bytes/s over the sliding `throughput_window` | cut and retried the same way; such a response never counts as progress |
//! | `max_attempts` consecutive failures without progress (bytes beyond any reached before), or `max_requests` requests in all | give up ([`DownloadError::GaveUp`]); the checkpoint stays for the next cycle |
//! | `deadline` since the download started (requests, retries and backoffs included) | give up ([`DownloadError::Deadline`]); the checkpoint stays for the next cycle |
//! | a download URL or redirect target that is not `http(s)` | refused at once ([`DownloadError::Url`]) |
//! | 404, 410, 403, 416, other 4xx | give up at once ([`DownloadError::Refused`]) |
//! | `200` to a ranged request | the already-staged prefix is skipped in the body |
//! | `206` starting elsewhere than asked | counted as a failure |
//!
//! # Bytes that do not verify
//!
//! A release is refused **for good** ([`DownloadError::Rejected`]; the agent never downloads
//! it again) only for what cannot come from a fault in transit:
//!
//! - a property of the signed release itself, which the verifier only reports once the
//!   signatures have passed (FORMAT.md steps 5c and 7c–7j: revoked key set, key-set scope,
//!   wrong product or component, security counter below the floor, not newer, expired,
//!   bootloader too old, dependency unmet) **and** whose signed manifest is the release the
//!   server offered (every claim of the offer matches it, [`UpdateOffer::describes`]);
//! - or bytes that do not verify although they hash to the offered release id (the
//!   release's SHA-256): then the release itself is bad.
//!
//! Anything else — a flipped bit, a mirror that answers a resume with shifted bytes, a
//! truncated or padded body, a mirror serving another release than the offered one — is a
//! transient fault: the partial download is discarded (the checkpoint goes back to 0), and the
//! download starts over after the backoff, within the same bounds. When the bounds run out it
//! ends as [`DownloadError::GaveUp`], which the agent reports as `download_failed`, never as a
//! refusal.
//!
//! Resume across restarts: every `checkpoint_bytes` the flash is synced and
//! [`Event::Checkpoint`] lets the caller persist the offset (always sector-aligned). A new run
//! re-reads that prefix from the slot through a fresh verifier; only if it passes does it
//! continue from there (erasing the sectors after it as it goes), otherwise it starts over.

use std::collections::VecDeque;
use std::time::Duration;

use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use sigil_manifests::{
    BundleVerifier, DevicePolicy, Error as VerifyError, TrustRoot, HEADER_LEN, VERIFY_BUFFER_LEN,
};
use tokio::time::Instant;

use crate::client::{status_error, CheckIn, ClientError, ServerClient, UpdateOffer};
use crate::config::DownloadConfig;
use crate::slots::{SlotError, Slots};

/// Smallest write buffer (bytes).
const MIN_BUFFER: usize = 64 * 1024;

/// The bundle prefix kept in memory: enough for the header and any envelope, so the signed
/// manifest of a bundle refused by policy can be identified (see [`identify`]).
const HEAD_LEN: usize = HEADER_LEN + VERIFY_BUFFER_LEN;

/// Why a download did not stage a verified bundle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The offered release must not be tried again (the module documentation says when).
    #[error("bundle rejected: {error}{}", if *.offered_bytes { " (the bytes received are the offered release: they hash to its id)" } else { "" })]
    Rejected {
        /// The verification step that failed.
        error: VerifyError,
        /// The refusal rests on the bytes hashing to the offered release id (not on a property
        /// of the signed manifest).
        offered_bytes: bool,
    },
    /// The download URL (or a redirect target) is not one the agent fetches.
    #[error(transparent)]
    Url(ClientError),
    /// The server refused the download in a way retrying will not fix.
    #[error("download refused")]
    Refused(#[source] ClientError),
    /// The overall download deadline passed.
    #[error("download deadline of {} passed ({received} of {total} bytes staged){}", humantime::format_duration(*.deadline), .last.as_ref().map(|l| format!("; last failure: {l}")).unwrap_or_default())]
    Deadline {
        /// The configured deadline.
        deadline: Duration,
        /// Bytes verified and staged.
        received: u64,
        /// Total length, when known (`?` otherwise).
        total: String,
        /// The last failure, if any.
        last: Option<String>,
    },
    /// Bounded retries ran out.
    #[error("gave up after {requests} requests ({received} of {total} bytes staged): {last}")]
    GaveUp {
        /// Requests made.
        requests: u32,
        /// Bytes verified and staged.
        received: u64,
        /// Total length, when known (`?` otherwise).
        total: String,
        /// The last failure.
        last: String,
    },
    /// The staging slot failed.
    #[error("staging slot")]
    Slot(#[from] SlotError),
}

impl DownloadError {
    /// Whether the offered release is refused for good (never downloaded again).
    pub fn refuses_release(&self) -> bool {
        matches!(self, DownloadError::Rejected { .. })
    }
}

/// Whether a verification error is a property of the signed release itself: the verifier
/// reports these only after the signatures over the key set (and, from step 7 on, the
/// manifest) have passed, so no fault in transit produces them (FORMAT.md steps 5c, 7c–7j).
pub fn is_release_property(e: VerifyError) -> bool {
    matches!(
        e,
        VerifyError::KeySetRolledBack
            | VerifyError::OutOfKeySetScope
            | VerifyError::WrongProduct
            | VerifyError::WrongComponent
            | VerifyError::CounterRolledBack
            | VerifyError::NotNewer
            | VerifyError::Expired
            | VerifyError::BootloaderTooOld
            | VerifyError::DependencyUnmet
    )
}

/// What the download reports along the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The manifest passed signatures and policy and is the offered release; its version (for
    /// reports only).
    Authenticated {
        /// The bundle's version.
        version: String,
    },
    /// `done` of `total` bytes received and verified so far (about every 10%).
    Progress {
        /// Bytes so far.
        done: u64,
        /// Total.
        total: u64,
    },
    /// The first `offset` bytes are synced to the slot: persist for resume. `0` after a
    /// partial download was discarded.
    Checkpoint {
        /// Sector-aligned offset.
        offset: u64,
    },
}

/// Who the device is, for live progress check-ins during a download.
#[derive(Debug, Clone)]
pub struct LiveProgress {
    /// Running version.
    pub version: String,
    /// Running security counter.
    pub security_counter: u32,
    /// Deployment the download belongs to.
    pub deployment: Option<i64>,
}

/// What to download and how to check it.
#[derive(Debug, Clone, Copy)]
pub struct DownloadRequest<'a> {
    /// The device's trust root.
    pub root: &'a TrustRoot,
    /// The device policy (the bootloader's, plus "newer than what runs").
    pub policy: DevicePolicy<'a>,
    /// The offer: download URL, release id and the claims that identify the release.
    pub offer: &'a UpdateOffer,
    /// A checkpoint of an earlier run for the same release (0: from scratch).
    pub resume_from: u64,
    /// Live progress check-ins, if wanted.
    pub live: Option<&'a LiveProgress>,
}

/// Result of a completed download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Total bundle length.
    pub total_len: u64,
    /// Body bytes received over HTTP in this run (including any skipped prefix and any
    /// discarded pass).
    pub fetched: u64,
    /// Where the pass that completed started (bytes taken from the slot after
    /// re-verification).
    pub resumed_from: u64,
    /// HTTP requests made.
    pub requests: u32,
    /// Partial downloads discarded because their bytes did not verify.
    pub discarded: u32,
}

/// Exponential backoff with full jitter: uniform in `[0, min(max, initial × 2^k)]`.
pub fn backoff(cfg: &DownloadConfig, failures: u32) -> Duration {
    let exp = cfg
        .backoff_initial
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let cap = exp.min(cfg.backoff_max);
    let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(OsRng.next_u64() % millis.saturating_add(1))
}

/// Bytes received over a sliding window, for the minimum-throughput rule.
///
/// Samples are coalesced into buckets of a sixteenth of the window, timed at their first
/// byte, so memory is bounded whatever the chunk rate; a bucket leaves the window as a whole,
/// which makes the measured rate at most a sixteenth lower than the exact one.
#[derive(Debug)]
pub struct Throughput {
    min: u64,
    window: Duration,
    started: std::time::Instant,
    samples: VecDeque<(std::time::Instant, u64)>,
    sum: u64,
}

impl Throughput {
    /// A window for a response that started at `now`; `min` bytes/s (0: no minimum).
    pub fn new(min: u32, window: Duration, now: std::time::Instant) -> Self {
        Throughput {
            min: u64::from(min),
            window,
            started: now,
            samples: VecDeque::new(),
            sum: 0,
        }
    }

    /// Records `bytes` received at `now`. Once a whole window has passed since the start,
    /// `Some(rate)` (bytes/s over the last window) if that is below the minimum.
    pub fn observe(&mut self, now: std::time::Instant, bytes: u64) -> Option<u64> {
        if self.min == 0 {
            return None;
        }
        let bucket = self.window / 16;
        match self.samples.back_mut() {
            Some((at, n)) if now.saturating_duration_since(*at) < bucket => {
                *n = n.saturating_add(bytes);
            }
            _ => self.samples.push_back((now, bytes)),
        }
        self.sum = self.sum.saturating_add(bytes);
        while let Some(&(at, n)) = self.samples.front() {
            if now.saturating_duration_since(at) <= self.window {
                break;
            }
            self.samples.pop_front();
            self.sum = self.sum.saturating_sub(n);
        }
        if now.saturating_duration_since(self.started) < self.window {
            return None;
        }
        let window_ms = u128::max(self.window.as_millis(), 1);
        let rate = u128::from(self.sum).saturating_mul(1000) / window_ms;
        (rate < u128::from(self.min)).then(|| u64::try_from(rate).unwrap_or(u64::MAX))
    }
}

/// The signed manifest in a bundle prefix, checked against the offer: `None` if the prefix
/// does not authenticate even without a device policy, else whether the offer describes it.
/// Used after a policy refusal only, to tell the offered release from another signed one;
/// nothing is installed from it.
fn identify(root: &TrustRoot, offer: &UpdateOffer, head: &[u8]) -> Option<Result<(), String>> {
    let mut env = vec![0u8; VERIFY_BUFFER_LEN];
    let mut v = BundleVerifier::new(root, DevicePolicy::any_device(), &mut env);
    // The payload part of the prefix is only hashed; an error leaves no manifest to read.
    let _ = v.feed(head);
    v.authenticated_manifest().map(|m| offer.describes(m))
}

/// The staging writer: erases sectors just before they are first written, programs whole
/// buffers, syncs at checkpoints.
struct Writer<'s> {
    slots: &'s mut dyn Slots,
    buf: Vec<u8>,
    cap: usize,
    written: u64,
    erased_to: u64,
    sector: u64,
    write_size: usize,
    erased: u8,
    checkpoint_every: u64,
    next_checkpoint: u64,
}

impl Writer<'_> {
    fn to_u32(v: u64) -> Result<u32, SlotError> {
        u32::try_from(v).map_err(|_| SlotError::Boot(sigil_bootloader::Error::OutOfBounds))
    }

    fn program(&mut self, len: usize, on: &mut dyn FnMut(Event)) -> Result<(), SlotError> {
        let end = self.written.saturating_add(len as u64);
        if end > self.erased_to {
            let to = end.div_ceil(self.sector).saturating_mul(self.sector);
            self.slots
                .erase_staged(Self::to_u32(self.erased_to)?, Self::to_u32(to)?)?;
            self.erased_to = to;
        }
        let data = self.buf.get(..len).unwrap_or(&self.buf);
        self.slots.write_staged(Self::to_u32(self.written)?, data)?;
        self.buf.drain(..len.min(self.buf.len()));
        self.written = end;
        if self.written >= self.next_checkpoint && self.written.is_multiple_of(self.sector) {
            self.slots.sync()?;
            on(Event::Checkpoint {
                offset: self.written,
            });
            self.next_checkpoint = self.written.saturating_add(self.checkpoint_every);
        }
        Ok(())
    }

    fn push(&mut self, mut data: &[u8], on: &mut dyn FnMut(Event)) -> Result<(), SlotError> {
        while !data.is_empty() {
            let room = self.cap.saturating_sub(self.buf.len());
            let (head, tail) = data.split_at(room.min(data.len()));
            self.buf.extend_from_slice(head);
            data = tail;
            if self.buf.len() >= self.cap {
                self.program(self.cap, on)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self, on: &mut dyn FnMut(Event)) -> Result<(), SlotError> {
        if !self.buf.is_empty() {
            let w = self.write_size.max(1);
            let padded = self.buf.len().div_ceil(w).saturating_mul(w);
            self.buf.resize(padded, self.erased);
            self.program(padded, on)?;
        }
        self.slots.sync()
    }
}

/// How one pass over the bundle (from the start or from a resume point) ended.
enum Pass {
    /// The whole bundle is staged and verified.
    Done { total_len: u64, resumed_from: u64 },
    /// Its bytes do not verify and are not the offered release: start over (the reason).
    Discard(String),
    /// The download ends.
    Fail(DownloadError),
}

/// Why a response's body ended early.
enum Cut {
    /// Too slow over the throughput window (bytes/s): never counts as progress.
    Slow(u64),
    /// Stalled, dropped or ended short (the reason).
    Other(String),
}

/// One download: what stays the same across its passes and what is counted across them
/// (the staging slot is passed to each pass beside it).
struct Transfer<'a, 'r> {
    client: &'a mut ServerClient,
    cfg: &'a DownloadConfig,
    req: DownloadRequest<'r>,
    url: reqwest::Url,
    sector: u64,
    cap: usize,
    checkpoint_every: u64,
    deadline: Instant,
    requests: u32,
    failures: u32,
    /// The most bytes verified in any pass: only bytes beyond it count as progress.
    best: u64,
    fetched: u64,
    discarded: u32,
    last: Option<String>,
    quarter: u64,
}

fn total_of(v: &BundleVerifier<'_>) -> String {
    v.total_len().map_or("?".to_owned(), |t| t.to_string())
}

impl Transfer<'_, '_> {
    /// `d` from now, but never past the deadline.
    fn until(&self, d: Duration) -> Instant {
        Instant::now()
            .checked_add(d)
            .map_or(self.deadline, |t| t.min(self.deadline))
    }

    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    fn deadline_passed(&self, received: u64, v: &BundleVerifier<'_>) -> Pass {
        Pass::Fail(DownloadError::Deadline {
            deadline: self.cfg.deadline,
            received,
            total: total_of(v),
            last: self.last.clone(),
        })
    }

    fn failed(&mut self, reason: String) {
        tracing::warn!(reason, "download request failed");
        self.last = Some(reason);
        self.failures = self.failures.saturating_add(1);
    }

    /// A feed error: refused for good, or a transient fault to discard (the module
    /// documentation's rule). `complete`: every byte of the bundle was fed.
    fn verdict(&self, e: VerifyError, head: &[u8], hasher: &Sha256, complete: bool) -> Pass {
        if is_release_property(e) {
            return match identify(self.req.root, self.req.offer, head) {
                Some(Ok(())) => Pass::Fail(DownloadError::Rejected {
                    error: e,
                    offered_bytes: false,
                }),
                Some(Err(other)) => Pass::Discard(format!("{other} ({e})")),
                None => Pass::Discard(format!("{e}, but the manifest cannot be identified")),
            };
        }
        if complete {
            let id = hex::encode(hasher.clone().finalize());
            if id.eq_ignore_ascii_case(&self.req.offer.release) {
                return Pass::Fail(DownloadError::Rejected {
                    error: e,
                    offered_bytes: true,
                });
            }
            return Pass::Discard(format!(
                "the bytes received do not verify ({e}) and are not the offered release (their SHA-256 is {id})"
            ));
        }
        Pass::Discard(format!("the bytes received do not verify ({e})"))
    }

    /// Opens the body of the next request from byte `received`: the response and how many
    /// bytes of its body to skip, or `Err(None)` after a counted failure, or `Err(Some(end))`.
    async fn open(
        &mut self,
        received: u64,
        v: &BundleVerifier<'_>,
    ) -> Result<(reqwest::Response, u64), Option<Pass>> {
        self.requests = self.requests.saturating_add(1);
        // The answer's head is bounded by the stall timeout too: a server that accepts the
        // connection and never answers must not hang the agent.
        let answer = tokio::time::timeout_at(
            self.until(self.cfg.stall_timeout),
            self.client.fetch(&self.url, received),
        )
        .await;
        let response = match answer {
            Ok(Ok(r)) => r,
            Err(_) if self.expired() => return Err(Some(self.deadline_passed(received, v))),
            Err(_) => {
                self.failed(format!("no answer within {:?}", self.cfg.stall_timeout));
                return Err(None);
            }
            Ok(Err(e @ ClientError::Url { .. })) => {
                return Err(Some(Pass::Fail(DownloadError::Url(e))))
            }
            Ok(Err(e)) => {
                self.failed(e.to_string());
                return Err(None);
            }
        };
        let status = response.status();
        match status.as_u16() {
            200 => {
                if received > 0 {
                    tracing::warn!(
                        skip = received,
                        "server ignored Range: skipping the staged prefix"
                    );
                }
                Ok((response, received))
            }
            206 => {
                let start = response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split_once('-'))
                    .and_then(|(a, _)| a.trim().parse::<u64>().ok());
                if start == Some(received) {
                    Ok((response, 0))
                } else {
                    self.failed(format!(
                        "206 answer starts at {start:?}, asked for {received}"
                    ));
                    Err(None)
                }
            }
            code => {
                let at = response.url().to_string();
                let bytes =
                    tokio::time::timeout_at(self.until(self.cfg.stall_timeout), response.bytes())
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or_default();
                let e = status_error("download", &at, status, &bytes);
                if code == 401 {
                    self.client.forget_session();
                } else if e.is_permanent() {
                    return Err(Some(Pass::Fail(DownloadError::Refused(e))));
                }
                self.failed(e.to_string());
                Err(None)
            }
        }
    }

    /// Tells the server the progress, every quarter (best effort, bounded; not queued:
    /// progress is stale by the next quarter anyway).
    async fn live_progress(&mut self, received: u64, total: u64) {
        let Some(live) = self.req.live else {
            return;
        };
        let q = received.saturating_mul(4) / total.max(1);
        if q <= self.quarter || received >= total {
            return;
        }
        self.quarter = q;
        let detail = format!(
            "{received} of {total} bytes ({}%)",
            received.saturating_mul(100) / total.max(1)
        );
        let c = CheckIn {
            version: &live.version,
            security_counter: live.security_counter,
            state: crate::state::ReportState::Downloading,
            deployment: live.deployment,
            detail: Some(&detail),
            root_version: None,
        };
        let until = self.until(self.cfg.stall_timeout);
        match tokio::time::timeout_at(until, self.client.check_in(&c)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "progress check-in failed"),
            Err(_) => tracing::debug!("progress check-in timed out"),
        }
    }

    /// One pass: requests from `start` until the bundle is complete, then the verdict.
    async fn pass(
        &mut self,
        slots: &mut dyn Slots,
        mut verifier: BundleVerifier<'_>,
        mut hasher: Sha256,
        mut head: Vec<u8>,
        start: u64,
        on: &mut dyn FnMut(Event),
    ) -> Pass {
        let layout = slots.layout();
        let mut writer = Writer {
            slots,
            buf: Vec::with_capacity(self.cap),
            cap: self.cap,
            written: start,
            erased_to: start,
            sector: self.sector,
            write_size: layout.geometry().write_size as usize,
            erased: layout.geometry().erased,
            checkpoint_every: self.checkpoint_every,
            next_checkpoint: start.saturating_add(self.checkpoint_every),
        };
        let mut received = start;
        let mut authenticated = verifier.authenticated_manifest().is_some();
        let mut next_progress = 0u64;
        loop {
            if verifier.total_len().is_some_and(|t| received >= t) {
                break;
            }
            if self.failures >= self.cfg.max_attempts || self.requests >= self.cfg.max_requests {
                return Pass::Fail(DownloadError::GaveUp {
                    requests: self.requests,
                    received,
                    total: total_of(&verifier),
                    last: self.last.clone().unwrap_or_default(),
                });
            }
            if self.failures > 0 {
                let wait = backoff(self.cfg, self.failures);
                tracing::info!(?wait, failures = self.failures, "download: backing off");
                tokio::time::sleep_until(self.until(wait)).await;
            }
            if self.expired() {
                return self.deadline_passed(received, &verifier);
            }
            let (mut response, mut skip) = match self.open(received, &verifier).await {
                Ok(r) => r,
                Err(None) => continue,
                Err(Some(end)) => return end,
            };
            let best_before = self.best;
            let mut rate = Throughput::new(
                self.cfg.min_throughput,
                self.cfg.throughput_window,
                std::time::Instant::now(),
            );
            let end: Result<(), Cut> = loop {
                let until = self.until(self.cfg.stall_timeout);
                let chunk = match tokio::time::timeout_at(until, response.chunk()).await {
                    Err(_) if self.expired() => return self.deadline_passed(received, &verifier),
                    Err(_) => {
                        break Err(Cut::Other(format!(
                            "stalled: no data for {:?}",
                            self.cfg.stall_timeout
                        )))
                    }
                    Ok(Err(e)) => break Err(Cut::Other(format!("connection failed: {e}"))),
                    Ok(Ok(None)) => break Ok(()),
                    Ok(Ok(Some(c))) => c,
                };
                self.fetched = self.fetched.saturating_add(chunk.len() as u64);
                let mut data: &[u8] = &chunk;
                if skip > 0 {
                    let n = usize::try_from(skip).unwrap_or(usize::MAX).min(data.len());
                    data = data.get(n..).unwrap_or(&[]);
                    skip -= n as u64;
                }
                // Never take a byte past the signed length.
                if let Some(total) = verifier.total_len() {
                    let room =
                        usize::try_from(total.saturating_sub(received)).unwrap_or(usize::MAX);
                    if data.len() > room {
                        tracing::warn!(
                            extra = data.len() - room,
                            "server sent more than the signed bundle length: ignored"
                        );
                        data = data.get(..room).unwrap_or(data);
                    }
                }
                if !data.is_empty() {
                    let keep = HEAD_LEN.saturating_sub(head.len()).min(data.len());
                    head.extend_from_slice(data.get(..keep).unwrap_or_default());
                    hasher.update(data);
                    if let Err(e) = verifier.feed(data) {
                        let complete = verifier
                            .total_len()
                            .is_some_and(|t| received.saturating_add(data.len() as u64) >= t);
                        return self.verdict(e, &head, &hasher, complete);
                    }
                    received = received.saturating_add(data.len() as u64);
                    self.best = self.best.max(received);
                    if !authenticated {
                        if let Some(m) = verifier.authenticated_manifest() {
                            authenticated = true;
                            if let Err(other) = self.req.offer.describes(m) {
                                return Pass::Discard(other);
                            }
                            on(Event::Authenticated {
                                version: m.version.to_string(),
                            });
                        }
                    }
                    if let Err(e) = writer.push(data, on) {
                        return Pass::Fail(e.into());
                    }
                    if let Some(total) = verifier.total_len() {
                        if received >= next_progress || received >= total {
                            on(Event::Progress {
                                done: received,
                                total,
                            });
                            next_progress = received.saturating_add((total / 10).max(1));
                        }
                        self.live_progress(received, total).await;
                        if received >= total {
                            break Ok(());
                        }
                    }
                }
                if let Some(r) = rate.observe(std::time::Instant::now(), chunk.len() as u64) {
                    break Err(Cut::Slow(r));
                }
            };
            match end {
                Err(Cut::Slow(r)) => self.failed(format!(
                    "too slow: {r} bytes/s over the last {}, the minimum is {} bytes/s",
                    humantime::format_duration(self.cfg.throughput_window),
                    self.cfg.min_throughput
                )),
                other => {
                    if self.best > best_before {
                        self.failures = 0;
                    }
                    match other {
                        Err(Cut::Other(reason)) => self.failed(reason),
                        _ if verifier.total_len().is_none_or(|t| received < t) => {
                            self.failed(format!("body ended early at byte {received}"));
                        }
                        _ => {}
                    }
                }
            }
        }
        if let Err(e) = writer.finish(on) {
            return Pass::Fail(e.into());
        }
        let total_len = verifier.total_len().unwrap_or(received);
        match verifier.finish() {
            Ok(_) => Pass::Done {
                total_len,
                resumed_from: start,
            },
            Err(e) => self.verdict(e, &head, &hasher, true),
        }
    }
}

/// Re-verifies the staged prefix `..resume_from` through a fresh verifier: the verifier, the
/// bundle hash and the head so far, ready to continue, or `None` to start over.
fn resume<'v>(
    slots: &mut dyn Slots,
    req: &DownloadRequest<'v>,
    env: &'v mut [u8],
    cap: usize,
) -> Result<Option<(BundleVerifier<'v>, Sha256, Vec<u8>)>, DownloadError> {
    let resume_from = req.resume_from;
    let layout = slots.layout();
    let sector = u64::from(layout.sector_size());
    if resume_from == 0
        || !resume_from.is_multiple_of(sector)
        || !resume_from.is_multiple_of(cap as u64)
        || resume_from > u64::from(layout.max_bundle_len())
    {
        return Ok(None);
    }
    let mut v = BundleVerifier::new(req.root, req.policy, env);
    let mut hasher = Sha256::new();
    let mut head = Vec::new();
    let mut chunk = vec![0u8; cap];
    let mut at = 0u64;
    while at < resume_from {
        let n = usize::try_from(resume_from - at).unwrap_or(cap).min(cap);
        let part = chunk.get_mut(..n).unwrap_or(&mut []);
        slots.read_staged(Writer::to_u32(at)?, part)?;
        if let Err(e) = v.feed(part) {
            tracing::warn!(error = %e, offset = at, "staged prefix does not verify: downloading from the start");
            return Ok(None);
        }
        let keep = HEAD_LEN.saturating_sub(head.len()).min(part.len());
        head.extend_from_slice(part.get(..keep).unwrap_or_default());
        hasher.update(&*part);
        at = at.saturating_add(n as u64);
    }
    // A prefix that already holds the whole bundle is not a resume point.
    if v.total_len().is_none_or(|t| t <= resume_from) {
        return Ok(None);
    }
    if let Some(m) = v.authenticated_manifest() {
        if let Err(other) = req.offer.describes(m) {
            tracing::warn!(
                reason = other,
                "staged prefix is another release: downloading from the start"
            );
            return Ok(None);
        }
    }
    tracing::info!(offset = resume_from, "resuming: staged prefix re-verified");
    Ok(Some((v, hasher, head)))
}

/// Downloads the offered bundle into the staging slot, verifying as it goes (the module
/// documentation gives the rules). The slot must be Idle. Nothing is requested here.
pub async fn download(
    slots: &mut dyn Slots,
    client: &mut ServerClient,
    cfg: &DownloadConfig,
    req: DownloadRequest<'_>,
    on: &mut dyn FnMut(Event),
) -> Result<Downloaded, DownloadError> {
    let url = client
        .resolve(&req.offer.download_url)
        .map_err(DownloadError::Url)?;
    let layout = slots.layout();
    let cap = MIN_BUFFER.max(layout.sector_size() as usize);
    let checkpoint_every = u64::from(cfg.checkpoint_bytes)
        .div_ceil(cap as u64)
        .saturating_mul(cap as u64)
        .max(cap as u64);
    let deadline = Instant::now()
        .checked_add(cfg.deadline)
        .unwrap_or_else(Instant::now);
    slots.set_bulk(true);
    let mut t = Transfer {
        client,
        cfg,
        req,
        url,
        sector: u64::from(layout.sector_size()),
        cap,
        checkpoint_every,
        deadline,
        requests: 0,
        failures: 0,
        best: 0,
        fetched: 0,
        discarded: 0,
        last: None,
        quarter: 0,
    };
    let mut resume_from = req.resume_from;
    let result = loop {
        let mut env_resume = vec![0u8; VERIFY_BUFFER_LEN];
        let mut env_fresh = vec![0u8; VERIFY_BUFFER_LEN];
        let pass_req = DownloadRequest {
            resume_from,
            ..t.req
        };
        let resumed = match resume(&mut *slots, &pass_req, &mut env_resume, cap) {
            Ok(r) => r,
            Err(e) => break Err(e),
        };
        let pass = match resumed {
            Some((v, hasher, head)) => t.pass(&mut *slots, v, hasher, head, resume_from, on).await,
            None => {
                let v = BundleVerifier::new(t.req.root, t.req.policy, &mut env_fresh);
                t.pass(&mut *slots, v, Sha256::new(), Vec::new(), 0, on)
                    .await
            }
        };
        match pass {
            Pass::Done {
                total_len,
                resumed_from,
            } => {
                break Ok(Downloaded {
                    total_len,
                    fetched: t.fetched,
                    resumed_from,
                    requests: t.requests,
                    discarded: t.discarded,
                })
            }
            Pass::Fail(e) => break Err(e),
            Pass::Discard(reason) => {
                tracing::warn!(reason, "discarding the partial download; starting over");
                t.discarded = t.discarded.saturating_add(1);
                t.failed(format!("{reason}; discarded"));
                resume_from = 0;
                on(Event::Checkpoint { offset: 0 });
            }
        }
    };
    slots.set_bulk(false);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_properties_of_the_signed_release_refuse_it_by_themselves() {
        use sigil_manifests::{Document, Signed};
        for e in [
            VerifyError::KeySetRolledBack,
            VerifyError::OutOfKeySetScope,
            VerifyError::WrongProduct,
            VerifyError::WrongComponent,
            VerifyError::CounterRolledBack,
            VerifyError::NotNewer,
            VerifyError::Expired,
            VerifyError::BootloaderTooOld,
            VerifyError::DependencyUnmet,
        ] {
            assert!(is_release_property(e), "{e}");
        }
        // What a flipped bit, a shifted resume or a truncated body produces.
        for e in [
            VerifyError::DigestMismatch,
            VerifyError::Truncated,
            VerifyError::TrailingData,
            VerifyError::BadSignature(Signed::Manifest),
            VerifyError::BadSignature(Signed::KeySet),
            VerifyError::Malformed(Document::Manifest),
            VerifyError::WrongTag(Document::Header),
            VerifyError::NonZeroPadding,
            VerifyError::BundleTooLarge,
            VerifyError::PayloadSizeMismatch,
            VerifyError::ThresholdNotMet {
                what: Signed::Manifest,
                found: 0,
                required: 1,
            },
        ] {
            assert!(!is_release_property(e), "{e}");
        }
    }

    #[test]
    fn throughput_is_judged_over_the_sliding_window_only() {
        let t0 = std::time::Instant::now();
        let s = Duration::from_secs;
        let mut tp = Throughput::new(100, s(10), t0);
        // Slow, but the first window has not passed: never cut.
        assert_eq!(tp.observe(t0 + s(1), 10), None);
        assert_eq!(tp.observe(t0 + s(9), 10), None);
        // After a whole window: 20 bytes in 10 s is 2 bytes/s.
        assert_eq!(tp.observe(t0 + s(10), 0), Some(2));
        // A fast burst inside the window lifts the rate over the minimum...
        assert_eq!(tp.observe(t0 + s(11), 2000), None);
        // ...until it slides out of the window.
        assert_eq!(tp.observe(t0 + s(20), 0), None);
        assert_eq!(tp.observe(t0 + s(22), 0), Some(0));
    }

    #[test]
    fn a_steady_fast_stream_is_never_cut_and_zero_means_no_minimum() {
        let t0 = std::time::Instant::now();
        let mut tp = Throughput::new(1000, Duration::from_secs(2), t0);
        for ms in (0..60_000u64).step_by(5) {
            // 8 bytes every 5 ms: 1600 bytes/s.
            assert_eq!(
                tp.observe(t0 + Duration::from_millis(ms), 8),
                None,
                "{ms} ms"
            );
        }
        assert!(tp.samples.len() <= 17, "bounded: {}", tp.samples.len());
        let mut off = Throughput::new(0, Duration::from_secs(1), t0);
        assert_eq!(off.observe(t0 + Duration::from_secs(100), 0), None);
    }

    #[test]
    fn a_trickle_of_one_byte_every_two_and_a_half_seconds_is_cut_after_one_window() {
        let t0 = std::time::Instant::now();
        let mut tp = Throughput::new(1024, Duration::from_secs(60), t0);
        let mut cut = None;
        for i in 1..=100u64 {
            let at = t0 + Duration::from_millis(2500 * i);
            if let Some(r) = tp.observe(at, 1) {
                cut = Some((at - t0, r));
                break;
            }
        }
        assert_eq!(cut, Some((Duration::from_secs(60), 0)));
    }
}
