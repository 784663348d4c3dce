//! Counters for the Prometheus `/metrics` endpoint (text exposition format 0.0.4).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::rollout::DeploymentState;
use crate::store::RolloutSummary;

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    responses: [AtomicU64; 5],
    rate_limited: AtomicU64,
    check_ins: AtomicU64,
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

    /// Counts a request refused by the rate limiter.
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Relaxed);
    }

    /// Counts a check-in.
    pub fn check_in(&self) {
        self.check_ins.fetch_add(1, Relaxed);
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
