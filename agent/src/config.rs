//! The agent's one configuration: a TOML file, validated completely at start-up.
//!
//! See `agent/sigil-agent.example.toml` for a commented example. Durations are humantime
//! strings (`"30s"`, `"5m"`, `"1h 30m"`); sizes are bytes.
//!
//! | key | required | default | meaning |
//! |---|---|---|---|
//! | `server.url` | yes | | base URL of `sigil-server` (`https://…`; `http://` only for loopback/tests) |
//! | `server.ca_file` | no | | PEM CA certificate(s) trusted in addition to the built-in web PKI roots |
//! | `server.builtin_roots` | no | `true` | trust the built-in web PKI roots (set `false` to pin `ca_file`) |
//! | `server.request_timeout` | no | `30s` | timeout of one API call (not of a download) |
//! | `device.id` | yes | | enrolled device id |
//! | `device.key` | yes | | ed25519 private key, PKCS#8 PEM (`sigil keygen`) |
//! | `device.trust_root` | yes | | encoded trust root file (`sigil root init`) |
//! | `device.product` | yes | | `vendor/device` |
//! | `device.component` | yes | | component the active slot holds ("app", "radio", …): manifests for another component are refused |
//! | `device.bootloader_version` | no | | this device's bootloader version, for manifests that require a minimum |
//! | `device.encryption_key` | no | | this device's X25519 encryption *public* key (64 hex digits, as enrolled on the server): the key records of encrypted releases must name it (FORMAT.md §9); the private key stays in the bootloader's protected storage |
//! | `device.trusted_time` | no | `false` | the system clock is set from an authenticated source (see the README): manifests past their expiry are refused (FORMAT.md step 7h) |
//! | `flash.path` | yes | | flash image file or block/MTD-block device |
//! | `flash.erase_size`, `flash.write_size` | yes | | geometry: must match the bootloader's |
//! | `flash.erased` | no | `255` | erased byte value (255 or 0) |
//! | `flash.protected_offset`, `flash.request_offset`, `flash.active_offset`, `flash.staging_offset`, `flash.slot_sectors` | yes | | the bootloader's `Layout` (protected state, request sector, slots) |
//! | `flash.key_record` | no | `"staging-slot"` | where the key record of an encrypted release goes ([`KeyRecordPlace`]): `"staging-slot"`, beside the staged bundle where the Sigil bootloader reads it; `"state-dir"`, the file `<state.dir>/staged.wkey` for a boot stage that reads it from the file system |
//! | `poll.interval` | no | `5m` | time between check-ins |
//! | `poll.jitter` | no | `30s` | up to this much random extra wait (spreads a fleet's load) |
//! | `poll.defer_interval` | no | `10m` | time before asking the install-permission hook again |
//! | `download.max_attempts` | no | `6` | consecutive failed requests without progress before giving up |
//! | `download.max_requests` | no | `64` | requests per download, in total, before giving up |
//! | `download.backoff_initial`, `download.backoff_max` | no | `1s`, `60s` | exponential backoff bounds (full jitter) |
//! | `download.stall_timeout` | no | `30s` | a response that delivers no byte for this long is cut |
//! | `download.deadline` | no | `2h` | one download (every request, retry and backoff) ends after this long; it resumes next cycle |
//! | `download.min_throughput` | no | `1024` | bytes/s a response must average over `throughput_window`, or it is cut and retried (0: off) |
//! | `download.throughput_window` | no | `60s` | the sliding window of `min_throughput` |
//! | `download.max_redirects` | no | `5` | redirects (to a mirror or CDN) followed per request; the session token never leaves the server's origin |
//! | `download.checkpoint_bytes` | no | `1048576` | resume checkpoint interval (rounded up to whole buffers/sectors) |
//! | `hooks.install_permission` | no | none: always allowed | argv; exit 0 = install now, 75 = not now |
//! | `hooks.reboot` | yes | | argv that reboots the device |
//! | `hooks.health_check` | no | none: healthy | argv run after a trial boot; exit 0 = healthy |
//! | `hooks.timeout` | no | `60s` | a hook that runs longer is killed (and counts as "no") |
//! | `state.dir` | yes | | durable agent state and the report queue |
//! | `maintenance_window.start`, `.end` | no | | `"HH:MM"` UTC; installs (reboots) only inside |
//! | `log.format` | no | `text` | `text` or `json` |

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sigil_bootloader::{Geometry, Layout};
use sigil_manifests::manifest::check_identifier;

use crate::keyrecord::KeyRecordPlace;
use crate::slots;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown keys are refused).
    #[error("configuration {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("configuration: `{key}` {message}")]
    Invalid {
        /// The offending key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    device: RawDevice,
    flash: RawFlash,
    #[serde(default)]
    poll: RawPoll,
    #[serde(default)]
    download: RawDownload,
    hooks: RawHooks,
    state: RawState,
    #[serde(default)]
    maintenance_window: Option<RawWindow>,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    url: String,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default = "yes")]
    builtin_roots: bool,
    #[serde(default)]
    request_timeout: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    id: String,
    key: PathBuf,
    trust_root: PathBuf,
    product: String,
    component: String,
    #[serde(default)]
    bootloader_version: Option<u32>,
    #[serde(default)]
    trusted_time: bool,
    #[serde(default)]
    encryption_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlash {
    path: PathBuf,
    erase_size: u32,
    write_size: u32,
    #[serde(default = "erased_ff")]
    erased: u8,
    protected_offset: u32,
    request_offset: u32,
    active_offset: u32,
    staging_offset: u32,
    slot_sectors: u32,
    #[serde(default)]
    key_record: KeyRecordPlace,
}

fn erased_ff() -> u8 {
    0xFF
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoll {
    interval: Option<String>,
    jitter: Option<String>,
    defer_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDownload {
    max_attempts: Option<u32>,
    max_requests: Option<u32>,
    backoff_initial: Option<String>,
    backoff_max: Option<String>,
    stall_timeout: Option<String>,
    checkpoint_bytes: Option<u32>,
    deadline: Option<String>,
    min_throughput: Option<u32>,
    throughput_window: Option<String>,
    max_redirects: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    #[serde(default)]
    install_permission: Option<Vec<String>>,
    reboot: Vec<String>,
    #[serde(default)]
    health_check: Option<Vec<String>>,
    #[serde(default)]
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    start: String,
    end: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default)]
    format: Option<String>,
}

/// Server connection settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Base URL, without a trailing slash.
    pub url: reqwest::Url,
    /// Extra CA certificates (PEM file).
    pub ca_file: Option<PathBuf>,
    /// Whether the built-in web PKI roots are trusted.
    pub builtin_roots: bool,
    /// Timeout of one API call.
    pub request_timeout: Duration,
}

/// Device identity and policy inputs.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Enrolled device id.
    pub id: String,
    /// Private key file (PKCS#8 PEM).
    pub key: PathBuf,
    /// Trust root file.
    pub trust_root: PathBuf,
    /// Product vendor.
    pub vendor: String,
    /// Product device class.
    pub device: String,
    /// Component the slot holds: part of every device policy.
    pub component: String,
    /// The bootloader's version, for manifests that require a minimum.
    pub bootloader_version: Option<u32>,
    /// The system clock is trusted: the manifest expiry is enforced (FORMAT.md step 7h).
    pub trusted_time: bool,
    /// This device's X25519 encryption public key (FORMAT.md §9): without one, encrypted
    /// releases are refused.
    pub encryption_key: Option<[u8; 32]>,
}

impl DeviceConfig {
    /// `vendor/device`.
    pub fn product_string(&self) -> String {
        format!("{}/{}", self.vendor, self.device)
    }
}

/// Flash device and layout.
#[derive(Debug, Clone)]
pub struct FlashConfig {
    /// Image file or device.
    pub path: PathBuf,
    /// The checked layout (identical to the bootloader's).
    pub layout: Layout,
    /// Where the key record of an encrypted release is staged.
    pub key_record: KeyRecordPlace,
}

/// Polling.
#[derive(Debug, Clone, Copy)]
pub struct PollConfig {
    /// Between check-ins.
    pub interval: Duration,
    /// Random extra wait, at most this.
    pub jitter: Duration,
    /// Before asking the install-permission hook again.
    pub defer_interval: Duration,
}

/// Download retries and resume.
#[derive(Debug, Clone, Copy)]
pub struct DownloadConfig {
    /// Consecutive failed requests without progress before giving up.
    pub max_attempts: u32,
    /// Requests in total per download before giving up.
    pub max_requests: u32,
    /// First backoff.
    pub backoff_initial: Duration,
    /// Backoff cap.
    pub backoff_max: Duration,
    /// No byte for this long cuts the response.
    pub stall_timeout: Duration,
    /// Resume checkpoint interval in bytes.
    pub checkpoint_bytes: u32,
    /// One download, retries and backoffs included, ends after this long.
    pub deadline: Duration,
    /// Bytes per second a response must average over `throughput_window` (0: no minimum).
    pub min_throughput: u32,
    /// The sliding window over which `min_throughput` is measured.
    pub throughput_window: Duration,
    /// Redirects followed per request.
    pub max_redirects: u32,
}

/// Hook commands (argv, no shell).
#[derive(Debug, Clone)]
pub struct HooksConfig {
    /// Asked before every reboot into an update; `None`: always allowed.
    pub install_permission: Option<Vec<String>>,
    /// Reboots the device.
    pub reboot: Vec<String>,
    /// Run after a trial boot; `None`: healthy.
    pub health_check: Option<Vec<String>>,
    /// Kill a hook after this long.
    pub timeout: Duration,
}

/// A daily window, UTC, in minutes since midnight; `start > end` wraps past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceWindow {
    /// Opens at (minutes after 00:00 UTC).
    pub start: u32,
    /// Closes at (minutes after 00:00 UTC).
    pub end: u32,
}

impl MaintenanceWindow {
    /// Whether `unix_secs` lies inside the window.
    pub fn contains(&self, unix_secs: u64) -> bool {
        let minute = u32::try_from((unix_secs / 60) % (24 * 60)).unwrap_or(0);
        if self.start <= self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Server.
    pub server: ServerConfig,
    /// Device.
    pub device: DeviceConfig,
    /// Flash.
    pub flash: FlashConfig,
    /// Polling.
    pub poll: PollConfig,
    /// Downloads.
    pub download: DownloadConfig,
    /// Hooks.
    pub hooks: HooksConfig,
    /// State directory.
    pub state_dir: PathBuf,
    /// Optional maintenance window.
    pub maintenance_window: Option<MaintenanceWindow>,
    /// Log format.
    pub log_format: LogFormat,
}

fn duration(
    key: &'static str,
    v: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s).map_err(|e| {
            invalid(
                key,
                format!("is not a duration like \"30s\" or \"5m\": {e}"),
            )
        }),
    }
}

fn hhmm(key: &'static str, v: &str) -> Result<u32, ConfigError> {
    let bad = || invalid(key, format!("{v:?} is not a time of day \"HH:MM\" (UTC)"));
    let (h, m) = v.split_once(':').ok_or_else(bad)?;
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn argv(key: &'static str, v: Option<Vec<String>>) -> Result<Option<Vec<String>>, ConfigError> {
    match v {
        Some(a) if a.first().is_none_or(|p| p.is_empty()) => Err(invalid(
            key,
            "must be a non-empty argv list like [\"/usr/bin/prog\", \"arg\"]",
        )),
        other => Ok(other),
    }
}

impl AgentConfig {
    /// Reads and validates the configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates configuration text; `path` names it in errors and anchors
    /// relative paths (relative to the file's directory).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rel = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };

        // Server.
        let url = reqwest::Url::parse(raw.server.url.trim_end_matches('/'))
            .map_err(|e| invalid("server.url", format!("is not a URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" => {
                let loopback = url.host_str() == Some("localhost")
                    || url
                        .host_str()
                        .and_then(|h| h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok())
                        .is_some_and(|ip| ip.is_loopback());
                if !loopback {
                    return Err(invalid(
                        "server.url",
                        "must use https:// (plain http:// is allowed only for loopback test servers)",
                    ));
                }
            }
            other => {
                return Err(invalid(
                    "server.url",
                    format!("scheme {other:?} is not http(s)"),
                ))
            }
        }
        if !raw.server.builtin_roots && raw.server.ca_file.is_none() && url.scheme() == "https" {
            return Err(invalid(
                "server.builtin_roots",
                "is false but no server.ca_file is given: no certificate could be trusted",
            ));
        }
        let server = ServerConfig {
            url,
            ca_file: raw.server.ca_file.map(rel),
            builtin_roots: raw.server.builtin_roots,
            request_timeout: duration(
                "server.request_timeout",
                raw.server.request_timeout.as_deref(),
                Duration::from_secs(30),
            )?,
        };

        // Device.
        check_identifier(&raw.device.id)
            .map_err(|_| invalid("device.id", "must be 1 to 64 characters of [A-Za-z0-9._+-]"))?;
        let (vendor, dev) = raw
            .device
            .product
            .split_once('/')
            .ok_or_else(|| invalid("device.product", "must be \"vendor/device\""))?;
        sigil_manifests::ProductId::new(vendor, dev).map_err(|_| {
            invalid(
                "device.product",
                "vendor and device must be 1 to 64 characters of [A-Za-z0-9._+-]",
            )
        })?;
        check_identifier(&raw.device.component).map_err(|_| {
            invalid(
                "device.component",
                "must be 1 to 64 characters of [A-Za-z0-9._+-]",
            )
        })?;
        let encryption_key = raw
            .device
            .encryption_key
            .as_deref()
            .map(|h| {
                let mut key = [0u8; 32];
                hex::decode_to_slice(h, &mut key)
                    .map(|()| key)
                    .map_err(|_| {
                        invalid(
                            "device.encryption_key",
                            "must be an X25519 public key: 32 bytes as 64 hex digits",
                        )
                    })
            })
            .transpose()?;
        let device = DeviceConfig {
            id: raw.device.id,
            key: rel(raw.device.key),
            trust_root: rel(raw.device.trust_root),
            vendor: vendor.to_owned(),
            device: dev.to_owned(),
            component: raw.device.component,
            bootloader_version: raw.device.bootloader_version,
            trusted_time: raw.device.trusted_time,
            encryption_key,
        };

        // Flash.
        let f = raw.flash;
        if f.erased != 0xFF && f.erased != 0x00 {
            return Err(invalid("flash.erased", "must be 255 (0xFF) or 0"));
        }
        if !slots::supported(f.erase_size, f.write_size) {
            return Err(invalid(
                "flash.erase_size",
                format!(
                    "{} with write_size {} is not supported (erase sizes {:?}, write sizes {:?})",
                    f.erase_size,
                    f.write_size,
                    slots::SUPPORTED_ERASE_SIZES,
                    slots::SUPPORTED_WRITE_SIZES
                ),
            ));
        }
        let geometry = Geometry {
            erase_size: f.erase_size,
            write_size: f.write_size,
            read_size: 1,
            erased: f.erased,
        };
        let layout = Layout::new(
            geometry,
            f.protected_offset,
            f.request_offset,
            f.active_offset,
            f.staging_offset,
            f.slot_sectors,
        )
        .map_err(|e| invalid("flash", format!("layout refused: {e}")))?;
        let flash = FlashConfig {
            path: rel(f.path),
            layout,
            key_record: f.key_record,
        };

        // Poll.
        let poll = PollConfig {
            interval: duration(
                "poll.interval",
                raw.poll.interval.as_deref(),
                Duration::from_secs(300),
            )?,
            jitter: duration(
                "poll.jitter",
                raw.poll.jitter.as_deref(),
                Duration::from_secs(30),
            )?,
            defer_interval: duration(
                "poll.defer_interval",
                raw.poll.defer_interval.as_deref(),
                Duration::from_secs(600),
            )?,
        };
        if poll.interval < Duration::from_secs(1) {
            return Err(invalid("poll.interval", "must be at least 1s"));
        }
        if poll.jitter > poll.interval {
            return Err(invalid("poll.jitter", "must not exceed poll.interval"));
        }
        if poll.defer_interval < Duration::from_secs(1) {
            return Err(invalid("poll.defer_interval", "must be at least 1s"));
        }

        // Download.
        let d = raw.download;
        let download = DownloadConfig {
            max_attempts: d.max_attempts.unwrap_or(6),
            max_requests: d.max_requests.unwrap_or(64),
            backoff_initial: duration(
                "download.backoff_initial",
                d.backoff_initial.as_deref(),
                Duration::from_secs(1),
            )?,
            backoff_max: duration(
                "download.backoff_max",
                d.backoff_max.as_deref(),
                Duration::from_secs(60),
            )?,
            stall_timeout: duration(
                "download.stall_timeout",
                d.stall_timeout.as_deref(),
                Duration::from_secs(30),
            )?,
            checkpoint_bytes: d.checkpoint_bytes.unwrap_or(1 << 20),
            deadline: duration(
                "download.deadline",
                d.deadline.as_deref(),
                Duration::from_secs(2 * 3600),
            )?,
            min_throughput: d.min_throughput.unwrap_or(1024),
            throughput_window: duration(
                "download.throughput_window",
                d.throughput_window.as_deref(),
                Duration::from_secs(60),
            )?,
            max_redirects: d.max_redirects.unwrap_or(5),
        };
        if !(1..=100).contains(&download.max_attempts) {
            return Err(invalid(
                "download.max_attempts",
                "must be between 1 and 100",
            ));
        }
        if !(1..=10_000).contains(&download.max_requests) {
            return Err(invalid(
                "download.max_requests",
                "must be between 1 and 10000",
            ));
        }
        if download.backoff_initial > download.backoff_max {
            return Err(invalid(
                "download.backoff_initial",
                "must not exceed download.backoff_max",
            ));
        }
        if download.stall_timeout < Duration::from_millis(100) {
            return Err(invalid("download.stall_timeout", "must be at least 100ms"));
        }
        if download.checkpoint_bytes == 0 {
            return Err(invalid("download.checkpoint_bytes", "must be positive"));
        }
        if download.deadline < Duration::from_secs(1) {
            return Err(invalid(
                "download.deadline",
                "must be at least 1s (a download that cannot finish in time resumes next cycle)",
            ));
        }
        if download.throughput_window < Duration::from_secs(1) {
            return Err(invalid("download.throughput_window", "must be at least 1s"));
        }
        if download.min_throughput > 0 && download.throughput_window > download.deadline {
            return Err(invalid(
                "download.throughput_window",
                "must not exceed download.deadline while download.min_throughput is set \
                 (the minimum could never be measured; set min_throughput = 0 to turn it off)",
            ));
        }
        if download.min_throughput > 1 << 30 {
            return Err(invalid(
                "download.min_throughput",
                "must be at most 1073741824 bytes/s (0 turns the minimum off)",
            ));
        }
        if download.max_redirects > 20 {
            return Err(invalid(
                "download.max_redirects",
                "must be between 0 and 20",
            ));
        }

        // Hooks.
        let hooks = HooksConfig {
            install_permission: argv("hooks.install_permission", raw.hooks.install_permission)?,
            reboot: argv("hooks.reboot", Some(raw.hooks.reboot))?.unwrap_or_default(),
            health_check: argv("hooks.health_check", raw.hooks.health_check)?,
            timeout: duration(
                "hooks.timeout",
                raw.hooks.timeout.as_deref(),
                Duration::from_secs(60),
            )?,
        };
        if hooks.timeout < Duration::from_millis(100) {
            return Err(invalid("hooks.timeout", "must be at least 100ms"));
        }

        let maintenance_window = match raw.maintenance_window {
            None => None,
            Some(w) => {
                let start = hhmm("maintenance_window.start", &w.start)?;
                let end = hhmm("maintenance_window.end", &w.end)?;
                if start == end {
                    return Err(invalid("maintenance_window", "start and end must differ"));
                }
                Some(MaintenanceWindow { start, end })
            }
        };
        let log_format = match raw.log.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "log.format",
                    format!("{other:?} is not \"text\" or \"json\""),
                ))
            }
        };

        Ok(AgentConfig {
            server,
            device,
            flash,
            poll,
            download,
            hooks,
            state_dir: rel(raw.state.dir),
            maintenance_window,
            log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
url = "http://127.0.0.1:8080"
[device]
id = "pump-1"
key = "device.key"
trust_root = "root.sgl"
product = "acme/pump-x2"
component = "app"
[flash]
path = "flash.img"
erase_size = 4096
write_size = 8
protected_offset = 0
request_offset = 8192
active_offset = 12288
staging_offset = 65536
slot_sectors = 8
[hooks]
reboot = ["/sbin/reboot"]
[state]
dir = "/var/lib/sigil-agent"
[maintenance_window]
start = "22:00"
end = "04:30"
"#;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(text, Path::new("/etc/sigil/agent.toml"))
    }

    #[test]
    fn accepts_the_minimal_config_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.device.key, Path::new("/etc/sigil/device.key"));
        assert_eq!(c.poll.interval, Duration::from_secs(300));
        assert_eq!(c.flash.layout.staged_bundle_offset(), 65536 + 4096);
        assert_eq!(c.flash.key_record, KeyRecordPlace::StagingSlot);
        let w = c.maintenance_window.unwrap();
        assert!(w.contains(23 * 3600));
        assert!(w.contains(4 * 3600 + 29 * 60));
        assert!(!w.contains(12 * 3600));
    }

    #[test]
    fn download_bounds_and_trusted_time_have_defaults_and_can_be_set() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.download.deadline, Duration::from_secs(7200));
        assert_eq!(c.download.min_throughput, 1024);
        assert_eq!(c.download.throughput_window, Duration::from_secs(60));
        assert_eq!(c.download.max_redirects, 5);
        assert!(
            !c.device.trusted_time,
            "expiry is enforced only when asked for"
        );
        let c = parse(&format!(
            "{}\n[download]\ndeadline = \"90s\"\nmin_throughput = 0\nthroughput_window = \"10s\"\nmax_redirects = 0\n",
            GOOD.replace("component = \"app\"", "component = \"app\"\ntrusted_time = true")
        ))
        .unwrap();
        assert_eq!(c.download.deadline, Duration::from_secs(90));
        assert_eq!(c.download.min_throughput, 0);
        assert_eq!(c.download.throughput_window, Duration::from_secs(10));
        assert_eq!(c.download.max_redirects, 0);
        assert!(c.device.trusted_time);
    }

    #[test]
    fn the_key_record_placement_is_chosen_by_name() {
        let with = |v: &str| {
            GOOD.replace(
                "slot_sectors =",
                &format!("key_record = {v}\nslot_sectors ="),
            )
        };
        let c = parse(&with("\"state-dir\"")).unwrap();
        assert_eq!(c.flash.key_record, KeyRecordPlace::StateDir);
        let c = parse(&with("\"staging-slot\"")).unwrap();
        assert_eq!(c.flash.key_record, KeyRecordPlace::StagingSlot);
        let e = parse(&with("\"beside\"")).unwrap_err().to_string();
        assert!(e.contains("staging-slot"), "{e}");
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let c = AgentConfig::parse(
            include_str!("../sigil-agent.example.toml"),
            Path::new("/etc/sigil/agent.toml"),
        )
        .unwrap();
        assert_eq!(c.device.product_string(), "acme/pump-x2");
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(c.hooks.install_permission.is_some());
    }

    #[test]
    fn refuses_with_the_key_named() {
        let cases = [
            (
                GOOD.replace("http://127.0.0.1:8080", "http://updates.example.com"),
                "server.url",
            ),
            (GOOD.replace("pump-1", "pump 1"), "device.id"),
            (GOOD.replace("acme/pump-x2", "acme"), "device.product"),
            (
                GOOD.replace("staging_offset = 65536", "staging_offset = 16384"),
                "flash",
            ),
            (
                GOOD.replace("write_size = 8", "write_size = 3"),
                "flash.erase_size",
            ),
            (GOOD.replace("[\"/sbin/reboot\"]", "[]"), "hooks.reboot"),
            (
                GOOD.replace("\"22:00\"", "\"25:00\""),
                "maintenance_window.start",
            ),
            (
                format!("{GOOD}\n[poll]\ninterval = \"10s\"\njitter = \"1m\"\n"),
                "poll.jitter",
            ),
            (
                format!("{GOOD}\n[poll]\ninterval = \"soon\"\n"),
                "poll.interval",
            ),
            (
                format!("{GOOD}\n[download]\ndeadline = \"500ms\"\n"),
                "download.deadline",
            ),
            (
                format!("{GOOD}\n[download]\ndeadline = \"10s\"\nthroughput_window = \"1m\"\n"),
                "download.throughput_window",
            ),
            (
                format!("{GOOD}\n[download]\nmax_redirects = 50\n"),
                "download.max_redirects",
            ),
            (
                GOOD.replace(
                    "component = \"app\"",
                    "component = \"app\"\ntrusted_time = \"yes\"",
                ),
                "trusted_time",
            ),
        ];
        for (text, key) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.to_string().contains(key), "{key}: {e}");
        }
        let e = parse(&GOOD.replace("[state]", "[state]\ntypo = 1")).unwrap_err();
        assert!(e.to_string().contains("typo"), "{e}");
    }
}
