//! Counters for the Prometheus `/metrics` endpoint (text exposition format 0.0.4).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::rollout::{DeploymentState, DeviceStatus};
use crate::store::RolloutSummary;

/// Upper bounds of the latency histogram buckets, in seconds (Prometheus' usual spread from
/// 1 ms to 10 s; the check-in target is a p99 under 50 ms).
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A latency histogram: per-bucket counts (not cumulative; summed when rendered), the last one
/// for everything above the largest bound, and the sum. The count is the sum of the buckets, so
/// a scrape never shows a bucket above the total.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Relaxed);
        }
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            cumulative = cumulative.saturating_add(n.load(Relaxed));
            match LATENCY_BUCKETS.get(i) {
                Some(le) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    responses: [AtomicU64; 5],
    request_latency: Histogram,
    check_in_latency: Histogram,
    rate_limited: AtomicU64,
    check_ins: AtomicU64,
    download_failure_reports: AtomicU64,
    install_failure_reports: AtomicU64,
    downloads: AtomicU64,
    download_bytes: AtomicU64,
    uploads_accepted: AtomicU64,
    uploads_rejected: AtomicU64,
}

impl Metrics {
    /// Counts a response by status class.
    pub fn request(&self, status: u16) {
        let class = usize::from(status / 100).saturating_sub(1).min(4);
        if let Some(c) = self.responses.get(class) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Records how long a request took until its response (for downloads: until the headers;
    /// the body streams afterwards). Check-ins are also recorded on their own.
    pub fn latency(&self, elapsed: Duration, check_in: bool) {
        self.request_latency.observe(elapsed);
        if check_in {
            self.check_in_latency.observe(elapsed);
        }
    }

    /// Counts a request refused by the rate limiter.
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Relaxed);
    }

    /// Counts a check-in, and its report's failure if it reports one: a download failure
    /// (transport, mirror, corruption on the wire; never halts a rollout) or an install
    /// failure (refused, failed, reverted; what halting thresholds count), each on its own so
    /// that either can be alerted on.
    pub fn check_in(&self, status: Option<DeviceStatus>) {
        self.check_ins.fetch_add(1, Relaxed);
        match status {
            Some(DeviceStatus::DownloadFailed) => {
                self.download_failure_reports.fetch_add(1, Relaxed);
            }
            Some(s) if s.is_failure() => {
                self.install_failure_reports.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }

    /// Counts a download response of `bytes` body bytes.
    pub fn download(&self, bytes: u64) {
        self.downloads.fetch_add(1, Relaxed);
        self.download_bytes.fetch_add(bytes, Relaxed);
    }

    /// Counts an upload outcome.
    pub fn upload(&self, accepted: bool) {
        if accepted {
            &self.uploads_accepted
        } else {
            &self.uploads_rejected
        }
        .fetch_add(1, Relaxed);
    }

    /// Renders the exposition text, with the rollout figures.
    pub fn render(&self, rollouts: &RolloutSummary) -> String {
        let deployments = &rollouts.deployments;
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let r: Vec<u64> = self.responses.iter().map(|c| c.load(Relaxed)).collect();
        let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        let labels: Vec<String> = classes
            .iter()
            .map(|c| format!("{{class=\"{c}\"}}"))
            .collect();
        let samples: Vec<(&str, u64)> = labels
            .iter()
            .map(String::as_str)
            .zip(r.iter().copied())
            .collect();
        counter(
            "sigil_http_responses_total",
            "HTTP responses by status class.",
            &samples,
        );
        counter(
            "sigil_rate_limited_total",
            "Requests refused by the per-client rate limit.",
            &[("", self.rate_limited.load(Relaxed))],
        );
        counter(
            "sigil_check_ins_total",
            "Device check-ins.",
            &[("", self.check_ins.load(Relaxed))],
        );
        counter(
            "sigil_device_failure_reports_total",
            "Check-ins reporting a failure, by kind: download (the bundle did not arrive intact; \
             never halts a rollout) or install (refused, failed or reverted on the device).",
            &[
                (
                    "{kind=\"download\"}",
                    self.download_failure_reports.load(Relaxed),
                ),
                (
                    "{kind=\"install\"}",
                    self.install_failure_reports.load(Relaxed),
                ),
            ],
        );
        counter(
            "sigil_downloads_total",
            "Bundle download responses.",
            &[("", self.downloads.load(Relaxed))],
        );
        counter(
            "sigil_download_bytes_total",
            "Bundle bytes sent.",
            &[("", self.download_bytes.load(Relaxed))],
        );
        counter(
            "sigil_uploads_total",
            "Bundle uploads by outcome.",
            &[
                ("{result=\"accepted\"}", self.uploads_accepted.load(Relaxed)),
                ("{result=\"rejected\"}", self.uploads_rejected.load(Relaxed)),
            ],
        );
        self.request_latency.render(
            &mut out,
            "sigil_http_request_duration_seconds",
            "Time from request to response headers, every endpoint.",
        );
        self.check_in_latency.render(
            &mut out,
            "sigil_check_in_duration_seconds",
            "Time from request to response of device check-ins (including the group commit).",
        );
        let _ = writeln!(
            out,
            "# HELP sigil_deployments Deployments by state.\n# TYPE sigil_deployments gauge"
        );
        for state in DeploymentState::ALL {
            let n = deployments
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(out, "sigil_deployments{{state=\"{}\"}} {n}", state.as_str());
        }
        let _ = writeln!(
            out,
            "# HELP sigil_rollout_devices Target devices of open deployments by outcome.\n\
             # TYPE sigil_rollout_devices gauge"
        );
        let d = &rollouts.devices;
        for (outcome, n) in [
            ("confirmed", d.confirmed),
            ("failed", d.failures),
            ("in_progress", d.open),
        ] {
            let _ = writeln!(out, "sigil_rollout_devices{{outcome=\"{outcome}\"}} {n}");
        }
        out
    }
}
