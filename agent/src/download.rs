//! Streaming a bundle into the staging slot while it is verified, with resume.
//!
//! Every byte received is fed to `sigil_manifests::BundleVerifier` **before** it is written,
//! in order, so a forged header, key set or manifest is refused before any payload byte
//! reaches the flash; the payload digest is checked when the last byte arrives. Memory is one
//! write buffer (64 KiB or one sector, whichever is larger) plus the envelope buffer, whatever
//! the bundle size. The verifier bounds the bundle to the slot (`DevicePolicy::device`'s
//! slot size): an endless body is cut off at the signed length.
//!
//! | situation | what happens |
//! |---|---|
//! | connection cut, stall (no byte for `stall_timeout`), 5xx, 408, 429, 401 | retry with `Range: bytes=N-` from the exact byte reached, after a backoff `min(max, initial × 2^k)` with full jitter |
//! | `max_attempts` consecutive failures without progress, or `max_requests` requests in all | give up ([`DownloadError::GaveUp`]); the checkpoint stays for the next cycle |
//! | 404, 410, 403, 416, other 4xx | give up at once ([`DownloadError::Refused`]) |
//! | `200` to a ranged request | the already-staged prefix is skipped in the body |
//! | `206` starting elsewhere than asked | counted as a failure |
//! | verification fails | [`DownloadError::Rejected`]: nothing more is written, the slot is not marked |
//!
//! Resume across restarts: every `checkpoint_bytes` the flash is synced and
//! [`Event::Checkpoint`] lets the caller persist the offset (always sector-aligned). A new run
//! re-reads that prefix from the slot through a fresh verifier; only if it passes does it
//! continue from there (erasing the sectors after it as it goes), otherwise it starts over.

use std::time::Duration;

use rand_core::{OsRng, RngCore};
use sigil_manifests::{BundleVerifier, DevicePolicy, TrustRoot, MAX_ENVELOPE_LEN};

use crate::client::{status_error, CheckIn, ClientError, ServerClient};
use crate::config::DownloadConfig;
use crate::slots::{SlotError, Slots};

/// Smallest write buffer (bytes).
const MIN_BUFFER: usize = 64 * 1024;

/// Why a download did not stage a verified bundle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The bundle failed verification (forged, tampered, wrong product, rollback, revoked key
    /// set, too large, not newer): the release must not be tried again.
    #[error("bundle rejected: {0}")]
    Rejected(sigil_manifests::Error),
    /// The digest did not match after a resumed download: the staged prefix may have been
    /// damaged (power cut); the next attempt starts from scratch.
    #[error("resumed bundle does not verify ({0}); will download it again from the start")]
    ResumeCorrupt(sigil_manifests::Error),
    /// The server refused the download in a way retrying will not fix.
    #[error("download refused")]
    Refused(#[source] ClientError),
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

/// What the download reports along the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The manifest passed signatures and policy; its version (for reports only).
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
    /// The first `offset` bytes are synced to the slot: persist for resume.
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

/// Result of a completed download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Total bundle length.
    pub total_len: u64,
    /// Body bytes received over HTTP in this run (including any skipped prefix).
    pub fetched: u64,
    /// Where this run started (bytes taken from the slot after re-verification).
    pub resumed_from: u64,
    /// HTTP requests made.
    pub requests: u32,
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

/// Downloads `url` into the staging slot, verifying as it goes; `resume_from` is a
/// checkpoint of an earlier run for the same release (0: from scratch). The slot must be
/// Idle. Nothing is marked pending here.
#[allow(clippy::too_many_arguments)]
pub async fn download(
    slots: &mut dyn Slots,
    client: &mut ServerClient,
    cfg: &DownloadConfig,
    root: &TrustRoot,
    policy: DevicePolicy<'_>,
    url: &str,
    resume_from: u64,
    live: Option<&LiveProgress>,
    on: &mut dyn FnMut(Event),
) -> Result<Downloaded, DownloadError> {
    let url = client.resolve(url).map_err(DownloadError::Refused)?;
    let layout = slots.layout();
    let sector = u64::from(layout.sector_size());
    let cap = MIN_BUFFER.max(layout.sector_size() as usize);
    let checkpoint_every = u64::from(cfg.checkpoint_bytes)
        .div_ceil(cap as u64)
        .saturating_mul(cap as u64)
        .max(cap as u64);

    // Resume: re-verify the staged prefix through a fresh verifier.
    let mut env_resume = vec![0u8; MAX_ENVELOPE_LEN];
    let mut env_fresh = vec![0u8; MAX_ENVELOPE_LEN];
    let mut resumed = None;
    if resume_from > 0
        && resume_from.is_multiple_of(sector)
        && resume_from.is_multiple_of(cap as u64)
        && resume_from <= u64::from(layout.max_bundle_len())
    {
        let mut v = BundleVerifier::new(root, policy, &mut env_resume);
        let mut chunk = vec![0u8; cap];
        let mut at = 0u64;
        let mut ok = true;
        while at < resume_from {
            let n = usize::try_from(resume_from - at).unwrap_or(cap).min(cap);
            let part = chunk.get_mut(..n).unwrap_or(&mut []);
            slots.read_staged(Writer::to_u32(at)?, part)?;
            if let Err(e) = v.feed(part) {
                tracing::warn!(error = %e, offset = at, "staged prefix does not verify: downloading from the start");
                ok = false;
                break;
            }
            at = at.saturating_add(n as u64);
        }
        // A prefix that already holds the whole bundle is not a resume point.
        if ok && v.total_len().is_some_and(|t| t > resume_from) {
            tracing::info!(offset = resume_from, "resuming: staged prefix re-verified");
            resumed = Some(v);
        }
    }
    let resumed_from = if resumed.is_some() { resume_from } else { 0 };
    let mut verifier = match resumed {
        Some(v) => v,
        None => BundleVerifier::new(root, policy, &mut env_fresh),
    };

    let w = layout.geometry().write_size as usize;
    slots.set_bulk(true);
    let mut writer = Writer {
        slots,
        buf: Vec::with_capacity(cap),
        cap,
        written: resumed_from,
        erased_to: resumed_from,
        sector,
        write_size: w,
        erased: layout.geometry().erased,
        checkpoint_every,
        next_checkpoint: resumed_from.saturating_add(checkpoint_every),
    };

    let mut received = resumed_from;
    let mut fetched = 0u64;
    let mut requests = 0u32;
    let mut failures = 0u32;
    let mut last = String::from("no request made");
    let mut authenticated = verifier.authenticated_manifest().is_some();
    let mut next_progress = 0u64;
    let mut quarter = 0u64;

    let outcome: Result<(), DownloadError> = 'outer: loop {
        if verifier.total_len().is_some_and(|t| received >= t) {
            break Ok(());
        }
        if failures >= cfg.max_attempts || requests >= cfg.max_requests {
            break Err(DownloadError::GaveUp {
                requests,
                received,
                total: verifier
                    .total_len()
                    .map_or("?".to_owned(), |t| t.to_string()),
                last,
            });
        }
        if failures > 0 {
            let wait = backoff(cfg, failures);
            tracing::info!(?wait, failures, "download: backing off");
            tokio::time::sleep(wait).await;
        }
        requests = requests.saturating_add(1);
        // The answer's head is bounded by the stall timeout too: a server that accepts the
        // connection and never answers must not hang the agent.
        let answer = tokio::time::timeout(cfg.stall_timeout, client.fetch(&url, received)).await;
        let mut response = match answer {
            Ok(Ok(r)) => r,
            Err(_) => {
                last = format!("no answer within {:?}", cfg.stall_timeout);
                tracing::warn!("download request: {last}");
                failures = failures.saturating_add(1);
                continue;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "download request failed");
                last = e.to_string();
                failures = failures.saturating_add(1);
                continue;
            }
        };
        let status = response.status();
        let mut skip = 0u64;
        match status.as_u16() {
            200 => {
                if received > 0 {
                    tracing::warn!(
                        skip = received,
                        "server ignored Range: skipping the staged prefix"
                    );
                }
                skip = received;
            }
            206 => {
                let start = response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split_once('-'))
                    .and_then(|(a, _)| a.trim().parse::<u64>().ok());
                if start != Some(received) {
                    last = format!("206 answer starts at {start:?}, asked for {received}");
                    tracing::warn!("{last}");
                    failures = failures.saturating_add(1);
                    continue;
                }
            }
            code => {
                let bytes = tokio::time::timeout(cfg.stall_timeout, response.bytes())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                let e = status_error("download", url.as_str(), status, &bytes);
                if code == 401 {
                    client.forget_session();
                } else if e.is_permanent() {
                    break Err(DownloadError::Refused(e));
                }
                tracing::warn!(error = %e, "download answered with an error");
                last = e.to_string();
                failures = failures.saturating_add(1);
                continue;
            }
        }

        let before = received;
        // Stream the body.
        let end: Result<(), String> = loop {
            let chunk = match tokio::time::timeout(cfg.stall_timeout, response.chunk()).await {
                Err(_) => break Err(format!("stalled: no data for {:?}", cfg.stall_timeout)),
                Ok(Err(e)) => break Err(format!("connection failed: {e}")),
                Ok(Ok(None)) => break Ok(()),
                Ok(Ok(Some(c))) => c,
            };
            fetched = fetched.saturating_add(chunk.len() as u64);
            let mut data: &[u8] = &chunk;
            if skip > 0 {
                let n = usize::try_from(skip).unwrap_or(usize::MAX).min(data.len());
                data = data.get(n..).unwrap_or(&[]);
                skip -= n as u64;
            }
            // Never take a byte past the signed length.
            if let Some(total) = verifier.total_len() {
                let room = usize::try_from(total.saturating_sub(received)).unwrap_or(usize::MAX);
                if data.len() > room {
                    tracing::warn!(
                        extra = data.len() - room,
                        "server sent more than the signed bundle length: ignored"
                    );
                    data = data.get(..room).unwrap_or(data);
                }
            }
            if data.is_empty() {
                if verifier.total_len().is_some_and(|t| received >= t) {
                    break Ok(());
                }
                continue;
            }
            if let Err(e) = verifier.feed(data) {
                let e = if resumed_from > 0 && e == sigil_manifests::Error::DigestMismatch {
                    DownloadError::ResumeCorrupt(e)
                } else {
                    DownloadError::Rejected(e)
                };
                break 'outer Err(e);
            }
            received = received.saturating_add(data.len() as u64);
            if !authenticated {
                if let Some(m) = verifier.authenticated_manifest() {
                    authenticated = true;
                    on(Event::Authenticated {
                        version: m.version.to_string(),
                    });
                }
            }
            if let Err(e) = writer.push(data, on) {
                break 'outer Err(e.into());
            }
            if let Some(total) = verifier.total_len() {
                if received >= next_progress || received >= total {
                    on(Event::Progress {
                        done: received,
                        total,
                    });
                    next_progress = received.saturating_add((total / 10).max(1));
                }
                // Every quarter, tell the server live (best effort, bounded; not queued:
                // progress is stale by the next quarter anyway).
                let q = received.saturating_mul(4) / total.max(1);
                if let (Some(live), true) = (live, q > quarter && received < total) {
                    quarter = q;
                    let detail = format!(
                        "{received} of {total} bytes ({}%)",
                        received.saturating_mul(100) / total.max(1)
                    );
                    let c = CheckIn {
                        version: &live.version,
                        security_counter: live.security_counter,
                        state: "downloading",
                        deployment: live.deployment,
                        detail: Some(&detail),
                    };
                    match tokio::time::timeout(cfg.stall_timeout, client.check_in(&c)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::debug!(error = %e, "progress check-in failed"),
                        Err(_) => tracing::debug!("progress check-in timed out"),
                    }
                }
                if received >= total {
                    break Ok(());
                }
            }
        };
        if received > before {
            failures = 0;
        }
        if let Err(reason) = end {
            tracing::warn!(reason, received, "download interrupted");
            last = reason;
            failures = failures.saturating_add(1);
        } else if verifier.total_len().is_none_or(|t| received < t) {
            last = format!("body ended early at byte {received}");
            tracing::warn!("{last}");
            failures = failures.saturating_add(1);
        }
    };
    let finished = outcome.and_then(|()| Ok(writer.finish(on)?));
    writer.slots.set_bulk(false);
    finished?;
    let total_len = verifier.total_len().unwrap_or(received);
    let verdict = verifier.finish().map(|_| ());
    match verdict {
        Ok(()) => Ok(Downloaded {
            total_len,
            fetched,
            resumed_from,
            requests,
        }),
        Err(e) if resumed_from > 0 && e == sigil_manifests::Error::DigestMismatch => {
            Err(DownloadError::ResumeCorrupt(e))
        }
        Err(e) => Err(DownloadError::Rejected(e)),
    }
}
