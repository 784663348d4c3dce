//! The server's one typed configuration: defaults, then a TOML file, then `SIGIL_*` environment
//! variables, then command-line flags; validated once at start-up.
//!
//! | key (TOML)                | environment               | default                       |
//! |---------------------------|---------------------------|-------------------------------|
//! | `listen`                  | `SIGIL_LISTEN`            | `127.0.0.1:8080`              |
//! | `data_dir`                | `SIGIL_DATA_DIR`          | `./sigil-data`                |
//! | `database_url`            | `SIGIL_DATABASE_URL`      | `sqlite://<data_dir>/sigil.db`; or `postgres://…` |
//! | `database_ca_file`        | `SIGIL_DATABASE_CA_FILE`  | none: PostgreSQL without TLS unless the server offers it and `sslmode` allows |
//! | `trust_root`              | `SIGIL_TRUST_ROOT`        | none: uploads are refused     |
//! | `tls.cert`, `tls.key`     | `SIGIL_TLS_CERT`, `SIGIL_TLS_KEY` | none: plain HTTP      |
//! | `mirror_base_url`         | `SIGIL_MIRROR_BASE_URL`   | none: devices download here   |
//! | `public_mirror`           | `SIGIL_PUBLIC_MIRROR`     | `false`                       |
//! | `session_ttl_secs`        | `SIGIL_SESSION_TTL_SECS`  | `900`                         |
//! | `http2_cleartext`         | `SIGIL_HTTP2_CLEARTEXT`   | `false`: plain port is HTTP/1.1 only |
//! | `log_format`              | `SIGIL_LOG_FORMAT`        | `text` (or `json`)            |
//! | `limits.upload_max_bytes` | `SIGIL_UPLOAD_MAX_BYTES`  | 1 GiB                         |
//! | `limits.json_max_bytes`   | `SIGIL_JSON_MAX_BYTES`    | 64 KiB                        |
//! | `limits.rate_per_second`  | `SIGIL_RATE_PER_SECOND`   | `50` unauthenticated requests per client address |
//! | `limits.rate_burst`       | `SIGIL_RATE_BURST`        | `200`                         |
//! | `limits.token_rate_per_second` | `SIGIL_TOKEN_RATE_PER_SECOND` | `50` per API token or device |
//! | `limits.token_rate_burst` | `SIGIL_TOKEN_RATE_BURST`  | `200`                         |
//! | `limits.auth_failure_rate_per_second` | `SIGIL_AUTH_FAILURE_RATE_PER_SECOND` | `1` failed authentication per client address |
//! | `limits.auth_failure_burst` | `SIGIL_AUTH_FAILURE_BURST` | `20`                       |
//! | `limits.reports_kept`     | `SIGIL_REPORTS_KEPT`      | `100` reports per device      |
//! | `audit_key_file`          | `SIGIL_AUDIT_KEY_FILE`    | `<data_dir>/keys/audit.key`   |
//! | `audit_checkpoint_secs`   | `SIGIL_AUDIT_CHECKPOINT_SECS` | `3600`                    |
//! | `expiry_warning_secs`     | `SIGIL_EXPIRY_WARNING_SECS` | `2592000` (30 days)         |
//! | `limits.max_connections`  | `SIGIL_MAX_CONNECTIONS`   | `8192` open connections in total |
//! | `limits.max_connections_per_address` | `SIGIL_MAX_CONNECTIONS_PER_ADDRESS` | `256` (IPv6: per /64) |
//! | `limits.header_read_timeout_secs` | `SIGIL_HEADER_READ_TIMEOUT_SECS` | `10`               |
//! | `limits.idle_timeout_secs` | `SIGIL_IDLE_TIMEOUT_SECS` | `60`                         |
//! | `limits.body_timeout_secs` | `SIGIL_BODY_TIMEOUT_SECS` | `30`                         |
//! | `accounts.session_idle_secs` | `SIGIL_SESSION_IDLE_SECS` | `900`: a console session unused this long ends |
//! | `accounts.session_absolute_secs` | `SIGIL_SESSION_ABSOLUTE_SECS` | `43200`: any console session ends 12 h after login |
//! | `accounts.reauth_secs`    | `SIGIL_REAUTH_SECS`       | `300`: approvals, device revocation, root updates need a passphrase and code this recent |
//! | `accounts.enrolment_ttl_secs` | `SIGIL_ENROLMENT_TTL_SECS` | `86400`                  |
//! | `accounts.passphrase_min_length` | `SIGIL_PASSPHRASE_MIN_LENGTH` | `12`               |
//! | `accounts.passphrase_min_score` | `SIGIL_PASSPHRASE_MIN_SCORE` | `3` (zxcvbn, 0–4)     |
//! | `accounts.login_backoff_secs` | `SIGIL_LOGIN_BACKOFF_SECS` | `1`, doubled per failure |
//! | `accounts.lockout_after`  | `SIGIL_LOCKOUT_AFTER`     | `5` failed logins in a row    |
//! | `accounts.lockout_secs`   | `SIGIL_LOCKOUT_SECS`      | `900`                         |
//! | `accounts.argon2_memory_kib` | `SIGIL_ARGON2_MEMORY_KIB` | `65536` (64 MiB)          |
//! | `accounts.argon2_iterations` | `SIGIL_ARGON2_ITERATIONS` | `3`                       |
//! | `accounts.allowed_origins` | —                        | none: cookie requests must come from the server's own origin |
//! | `accounts.public_url`     | `SIGIL_PUBLIC_URL`        | none: passkeys are off. The console's address (`https://sigil.example[:port]`): the passkeys' relying-party id is its host, their origin its scheme, host and port |
//! | `approvals.production_channels` | `SIGIL_PRODUCTION_CHANNELS` (comma-separated) | none: no release approval needed |
//! | `approvals.deployment_second_operator` | `SIGIL_DEPLOYMENT_SECOND_OPERATOR` | `false` |
//! | `records.report_retention_days` | `SIGIL_REPORT_RETENTION_DAYS` | `365`: device reports older than this are deleted (1–3650) |
//! | `records.prune_interval_secs` | `SIGIL_PRUNE_INTERVAL_SECS` | `3600`: how often the server prunes (60–86400) |
//!
//! What the connection limits do (the `connection` module enforces them):
//! - `max_connections`, `max_connections_per_address`: a connection beyond either cap is closed
//!   as soon as it is accepted. At start-up the open-file limit (`RLIMIT_NOFILE`) is raised to
//!   `max_connections` × 9/8 + 64 (the rest: database, bundle files being served, logs); if the hard limit is
//!   lower the server refuses to start and says so.
//! - `header_read_timeout_secs`: a request's line and headers must arrive in full within this
//!   long (HTTP/1.1; hyper starts the timer when it starts waiting for a request, so it also
//!   bounds how long a keep-alive connection waits for its next one). It also bounds the TLS
//!   handshake.
//! - `idle_timeout_secs`: a connection with no request in progress is closed after this long,
//!   whatever it sends (HTTP/2, a TLS connection that never sends a request).
//! - `body_timeout_secs`: a request body that delivers nothing for this long is refused (408); a
//!   JSON body must arrive whole within it; a response the client stops reading for this long
//!   closes the connection.
//! - JSON endpoints refuse a declared `Content-Length` above `json_max_bytes` (uploads: above
//!   `upload_max_bytes`) with 413 before reading the body, so `Expect: 100-continue` gets no
//!   `100 Continue`.
//! - Rate limits are token buckets: unauthenticated requests per client address; authenticated
//!   requests per API token, or per device for device sessions; failed authentications per client
//!   address (once exhausted, tokens not seen to succeed from that address get 429 without a
//!   lookup); `/healthz` has its own bucket per address with the unauthenticated rate.
//!
//! The log filter comes from `RUST_LOG` (default `info`). Only this module reads the environment,
//! and only through the iterator [`ServerConfig::load`] is given.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for this schema.
    #[error("configuration file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// An environment variable holds a value of the wrong type.
    #[error("environment variable {name} is invalid: {message}")]
    Env {
        /// The variable.
        name: String,
        /// Why.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// TLS certificate chain and private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Input limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest bundle upload accepted, in bytes.
    pub upload_max_bytes: u64,
    /// Largest JSON request body, in bytes.
    pub json_max_bytes: usize,
    /// Sustained requests per second allowed from one client IP address.
    pub rate_per_second: u32,
    /// Burst of requests one client IP address may make above the sustained rate.
    pub rate_burst: u32,
    /// How many check-in reports are kept per device.
    pub reports_kept: u32,
    /// Sustained requests per second allowed per API token, or per device for device sessions.
    pub token_rate_per_second: u32,
    /// Burst above the sustained rate per API token or device.
    pub token_rate_burst: u32,
    /// Sustained failed authentications per second allowed from one client address.
    pub auth_failure_rate_per_second: u32,
    /// Burst of failed authentications from one client address.
    pub auth_failure_burst: u32,
    /// Open connections allowed in total.
    pub max_connections: usize,
    /// Open connections allowed from one client address (IPv6: one /64).
    pub max_connections_per_address: usize,
    /// Time allowed for a request's line and headers (and a TLS handshake), in seconds.
    pub header_read_timeout_secs: u64,
    /// Time a connection may stay open with no request in progress, in seconds.
    pub idle_timeout_secs: u64,
    /// Time a request body may go without delivering data (and a JSON body may take in all, and
    /// a response write may stay blocked), in seconds.
    pub body_timeout_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            upload_max_bytes: 1 << 30,
            json_max_bytes: 64 << 10,
            rate_per_second: 50,
            rate_burst: 200,
            reports_kept: 100,
            token_rate_per_second: 50,
            token_rate_burst: 200,
            auth_failure_rate_per_second: 1,
            auth_failure_burst: 20,
            max_connections: 8192,
            max_connections_per_address: 256,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            body_timeout_secs: 30,
        }
    }
}

/// The configuration of `sigil-server`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Socket address to listen on.
    pub listen: SocketAddr,
    /// Directory holding the database and the bundle store.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` (default `sqlite://<data_dir>/sigil.db`) or `postgres://…` (a
    /// libpq-style URL; several replicas may share one PostgreSQL).
    pub database_url: Option<String>,
    /// PEM certificate(s) of the authority that signed the PostgreSQL server's certificate:
    /// with it the connection requires TLS (rustls) and verifies the server.
    pub database_ca_file: Option<PathBuf>,
    /// Trust root file (`SGL-ROOT`) that uploaded bundles are verified against.
    pub trust_root: Option<PathBuf>,
    /// Serve HTTPS with this certificate and key.
    pub tls: Option<TlsConfig>,
    /// Base URL of a mirror or CDN that serves the bundle store; check-ins point devices there.
    pub mirror_base_url: Option<String>,
    /// Serve `/mirror/{sha256}` without authentication (for a CDN to pull from).
    pub public_mirror: bool,
    /// Lifetime of a device session token, in seconds.
    pub session_ttl_secs: u64,
    /// Serve HTTP/2 without TLS (h2c, prior knowledge) on a plain-HTTP listener.
    pub http2_cleartext: bool,
    /// Log output format.
    pub log_format: LogFormat,
    /// `tracing` filter directives (from `RUST_LOG`).
    #[serde(skip)]
    pub log_filter: String,
    /// Input limits.
    pub limits: LimitsConfig,
    /// The audit signing key (ed25519 seed, hex, mode 0600); default `<data_dir>/keys/audit.key`.
    /// Keep it on other storage than the database where possible.
    pub audit_key_file: Option<PathBuf>,
    /// Seconds between signed checkpoints of the audit chain (when it has grown).
    pub audit_checkpoint_secs: u64,
    /// Warn about a release whose manifest expires within this many seconds.
    pub expiry_warning_secs: u64,
    /// People's accounts and console sessions.
    pub accounts: AccountsConfig,
    /// The four-eyes policy.
    pub approvals: ApprovalsConfig,
    /// How long records are kept (see [`crate::records`]).
    pub records: RecordsConfig,
}

/// How long device reports are kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordsConfig {
    /// Device reports older than this many days are deleted by the retention task.
    pub report_retention_days: u32,
    /// How often the server runs the retention task.
    pub prune_interval_secs: u64,
}

impl Default for RecordsConfig {
    fn default() -> Self {
        // A year: long enough to investigate a field complaint about an update, short enough
        // that a device's history does not accumulate for its lifetime.
        RecordsConfig {
            report_retention_days: 365,
            prune_interval_secs: 3600,
        }
    }
}

/// People's accounts: passphrases, second factors, console sessions, lockout.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsConfig {
    /// A console session with no request for this long ends.
    pub session_idle_secs: u64,
    /// A console session ends this long after its login, however busy.
    pub session_absolute_secs: u64,
    /// Approvals, device revocation and root-chain updates from a console session need a
    /// passphrase-and-code check (login or `POST /api/v1/session/reauth`) this recent.
    pub reauth_secs: u64,
    /// An enrolment code expires this long after it is issued.
    pub enrolment_ttl_secs: u64,
    /// Shortest passphrase accepted, in characters.
    pub passphrase_min_length: usize,
    /// Lowest zxcvbn score accepted (0–4).
    pub passphrase_min_score: u8,
    /// The wait after a failed login, doubled after each further failure.
    pub login_backoff_secs: u64,
    /// Failed logins in a row that lock an account.
    pub lockout_after: u32,
    /// How long a lockout lasts.
    pub lockout_secs: u64,
    /// Argon2id memory cost in KiB.
    pub argon2_memory_kib: u32,
    /// Argon2id iterations.
    pub argon2_iterations: u32,
    /// Origins (`https://console.example`) besides the server's own from which cookie-
    /// authenticated requests are accepted.
    pub allowed_origins: Vec<String>,
    /// The console's public address (`https://host[:port]`), which people's browsers show: it
    /// turns passkeys on, with the host as relying-party id and the address as origin.
    pub public_url: Option<String>,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            session_idle_secs: 900,
            session_absolute_secs: 12 * 3600,
            reauth_secs: 300,
            enrolment_ttl_secs: 86_400,
            passphrase_min_length: 12,
            passphrase_min_score: 3,
            login_backoff_secs: 1,
            lockout_after: 5,
            lockout_secs: 900,
            argon2_memory_kib: 65_536,
            argon2_iterations: 3,
            allowed_origins: Vec::new(),
            public_url: None,
        }
    }
}

/// The four-eyes policy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// Channels whose devices receive a release only after a person with the approver role,
    /// other than its uploader, approved it.
    pub production_channels: Vec<String>,
    /// A deployment with more than one phase stays in its first (canary) phase until an
    /// operator other than its creator approves it.
    pub deployment_second_operator: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("sigil-data"),
            database_url: None,
            database_ca_file: None,
            trust_root: None,
            tls: None,
            mirror_base_url: None,
            public_mirror: false,
            session_ttl_secs: 900,
            http2_cleartext: false,
            log_format: LogFormat::Text,
            log_filter: "info".to_owned(),
            limits: LimitsConfig::default(),
            audit_key_file: None,
            audit_checkpoint_secs: 3600,
            expiry_warning_secs: 30 * 86_400,
            accounts: AccountsConfig::default(),
            approvals: ApprovalsConfig::default(),
            records: RecordsConfig::default(),
        }
    }
}

/// Command-line overrides (highest precedence).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
}

fn parse_env<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| ConfigError::Env {
        name: name.to_owned(),
        message: e.to_string(),
    })
}

impl ServerConfig {
    /// The Argon2id cost of new passphrase hashes.
    pub fn password_cost(&self) -> crate::accounts::HashCost {
        crate::accounts::HashCost {
            memory_kib: self.accounts.argon2_memory_kib,
            iterations: self.accounts.argon2_iterations,
        }
    }

    /// Backoff and lockout after failed logins.
    pub fn lockout(&self) -> crate::store::accounts::LockoutPolicy {
        crate::store::accounts::LockoutPolicy {
            backoff_base_secs: self.accounts.login_backoff_secs,
            lockout_after: self.accounts.lockout_after,
            lockout_secs: self.accounts.lockout_secs,
        }
    }

    /// Loads defaults, then `file` (if any), then the `SIGIL_*` variables and `RUST_LOG` among
    /// `env`, then `overrides`; then validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: Overrides,
    ) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?
            }
            None => ServerConfig::default(),
        };
        let mut tls_cert = config.tls.as_ref().map(|t| t.cert.clone());
        let mut tls_key = config.tls.as_ref().map(|t| t.key.clone());
        for (name, value) in env {
            let n = name.as_str();
            match n {
                "RUST_LOG" => config.log_filter = value,
                "SIGIL_LISTEN" => config.listen = parse_env(n, &value)?,
                "SIGIL_DATA_DIR" => config.data_dir = PathBuf::from(value),
                "SIGIL_DATABASE_URL" => config.database_url = Some(value),
                "SIGIL_DATABASE_CA_FILE" => config.database_ca_file = Some(PathBuf::from(value)),
                "SIGIL_TRUST_ROOT" => config.trust_root = Some(PathBuf::from(value)),
                "SIGIL_TLS_CERT" => tls_cert = Some(PathBuf::from(value)),
                "SIGIL_TLS_KEY" => tls_key = Some(PathBuf::from(value)),
                "SIGIL_MIRROR_BASE_URL" => config.mirror_base_url = Some(value),
                "SIGIL_PUBLIC_MIRROR" => config.public_mirror = parse_env(n, &value)?,
                "SIGIL_SESSION_TTL_SECS" => config.session_ttl_secs = parse_env(n, &value)?,
                "SIGIL_HTTP2_CLEARTEXT" => config.http2_cleartext = parse_env(n, &value)?,
                "SIGIL_LOG_FORMAT" => {
                    config.log_format = match value.as_str() {
                        "text" => LogFormat::Text,
                        "json" => LogFormat::Json,
                        _ => {
                            return Err(ConfigError::Env {
                                name: name.clone(),
                                message: "expected `text` or `json`".to_owned(),
                            })
                        }
                    }
                }
                "SIGIL_UPLOAD_MAX_BYTES" => config.limits.upload_max_bytes = parse_env(n, &value)?,
                "SIGIL_JSON_MAX_BYTES" => config.limits.json_max_bytes = parse_env(n, &value)?,
                "SIGIL_RATE_PER_SECOND" => config.limits.rate_per_second = parse_env(n, &value)?,
                "SIGIL_RATE_BURST" => config.limits.rate_burst = parse_env(n, &value)?,
                "SIGIL_REPORTS_KEPT" => config.limits.reports_kept = parse_env(n, &value)?,
                "SIGIL_AUDIT_KEY_FILE" => config.audit_key_file = Some(PathBuf::from(value)),
                "SIGIL_AUDIT_CHECKPOINT_SECS" => {
                    config.audit_checkpoint_secs = parse_env(n, &value)?
                }
                "SIGIL_EXPIRY_WARNING_SECS" => config.expiry_warning_secs = parse_env(n, &value)?,
                "SIGIL_TOKEN_RATE_PER_SECOND" => {
                    config.limits.token_rate_per_second = parse_env(n, &value)?
                }
                "SIGIL_TOKEN_RATE_BURST" => config.limits.token_rate_burst = parse_env(n, &value)?,
                "SIGIL_AUTH_FAILURE_RATE_PER_SECOND" => {
                    config.limits.auth_failure_rate_per_second = parse_env(n, &value)?
                }
                "SIGIL_AUTH_FAILURE_BURST" => {
                    config.limits.auth_failure_burst = parse_env(n, &value)?
                }
                "SIGIL_MAX_CONNECTIONS" => config.limits.max_connections = parse_env(n, &value)?,
                "SIGIL_MAX_CONNECTIONS_PER_ADDRESS" => {
                    config.limits.max_connections_per_address = parse_env(n, &value)?
                }
                "SIGIL_HEADER_READ_TIMEOUT_SECS" => {
                    config.limits.header_read_timeout_secs = parse_env(n, &value)?
                }
                "SIGIL_IDLE_TIMEOUT_SECS" => {
                    config.limits.idle_timeout_secs = parse_env(n, &value)?
                }
                "SIGIL_BODY_TIMEOUT_SECS" => {
                    config.limits.body_timeout_secs = parse_env(n, &value)?
                }
                "SIGIL_SESSION_IDLE_SECS" => {
                    config.accounts.session_idle_secs = parse_env(n, &value)?
                }
                "SIGIL_SESSION_ABSOLUTE_SECS" => {
                    config.accounts.session_absolute_secs = parse_env(n, &value)?
                }
                "SIGIL_REAUTH_SECS" => config.accounts.reauth_secs = parse_env(n, &value)?,
                "SIGIL_PUBLIC_URL" => config.accounts.public_url = Some(value),
                "SIGIL_ENROLMENT_TTL_SECS" => {
                    config.accounts.enrolment_ttl_secs = parse_env(n, &value)?
                }
                "SIGIL_PASSPHRASE_MIN_LENGTH" => {
                    config.accounts.passphrase_min_length = parse_env(n, &value)?
                }
                "SIGIL_PASSPHRASE_MIN_SCORE" => {
                    config.accounts.passphrase_min_score = parse_env(n, &value)?
                }
                "SIGIL_LOGIN_BACKOFF_SECS" => {
                    config.accounts.login_backoff_secs = parse_env(n, &value)?
                }
                "SIGIL_LOCKOUT_AFTER" => config.accounts.lockout_after = parse_env(n, &value)?,
                "SIGIL_LOCKOUT_SECS" => config.accounts.lockout_secs = parse_env(n, &value)?,
                "SIGIL_ARGON2_MEMORY_KIB" => {
                    config.accounts.argon2_memory_kib = parse_env(n, &value)?
                }
                "SIGIL_ARGON2_ITERATIONS" => {
                    config.accounts.argon2_iterations = parse_env(n, &value)?
                }
                "SIGIL_PRODUCTION_CHANNELS" => {
                    config.approvals.production_channels = value
                        .split(',')
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned)
                        .collect()
                }
                "SIGIL_DEPLOYMENT_SECOND_OPERATOR" => {
                    config.approvals.deployment_second_operator = parse_env(n, &value)?
                }
                "SIGIL_REPORT_RETENTION_DAYS" => {
                    config.records.report_retention_days = parse_env(n, &value)?
                }
                "SIGIL_PRUNE_INTERVAL_SECS" => {
                    config.records.prune_interval_secs = parse_env(n, &value)?
                }
                "SIGIL_CONFIG" => {}
                _ if n.starts_with("SIGIL_") => {
                    return Err(ConfigError::Env {
                        name: name.clone(),
                        message: "unknown SIGIL_ variable (typo?)".to_owned(),
                    })
                }
                _ => {}
            }
        }
        config.tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig { cert, key }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "TLS needs both a certificate and a key".to_owned(),
                ))
            }
        };
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(dir) = overrides.data_dir {
            config.data_dir = dir;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and consistency.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if !(10..=86_400).contains(&self.session_ttl_secs) {
            return invalid("session_ttl_secs must be between 10 and 86400");
        }
        if self.limits.upload_max_bytes < 1024 {
            return invalid("limits.upload_max_bytes must be at least 1024");
        }
        if !(1024..=16 << 20).contains(&self.limits.json_max_bytes) {
            return invalid("limits.json_max_bytes must be between 1 KiB and 16 MiB");
        }
        if self.limits.rate_per_second == 0 || self.limits.rate_burst == 0 {
            return invalid("limits.rate_per_second and limits.rate_burst must be positive");
        }
        if !(1..=10_000).contains(&self.limits.reports_kept) {
            return invalid("limits.reports_kept must be between 1 and 10000");
        }
        let a = &self.accounts;
        if !(10..=86_400).contains(&a.session_idle_secs)
            || !(a.session_idle_secs..=30 * 86_400).contains(&a.session_absolute_secs)
        {
            return invalid(
                "accounts.session_idle_secs must be 10..=86400 and accounts.session_absolute_secs \
                 between it and 30 days",
            );
        }
        if !(10..=a.session_absolute_secs).contains(&a.reauth_secs) {
            return invalid("accounts.reauth_secs must be between 10 and the absolute timeout");
        }
        if !(60..=30 * 86_400).contains(&a.enrolment_ttl_secs) {
            return invalid("accounts.enrolment_ttl_secs must be between 60 s and 30 days");
        }
        if !(8..=128).contains(&a.passphrase_min_length) || a.passphrase_min_score > 4 {
            return invalid(
                "accounts.passphrase_min_length must be 8..=128 and passphrase_min_score 0..=4",
            );
        }
        if a.lockout_after == 0 || a.lockout_secs == 0 || a.login_backoff_secs > a.lockout_secs {
            return invalid(
                "accounts.lockout_after and lockout_secs must be positive, login_backoff_secs \
                 at most lockout_secs",
            );
        }
        crate::accounts::check_cost(self.password_cost())
            .map_err(|e| ConfigError::Invalid(format!("accounts.argon2_*: {e}")))?;
        for origin in &a.allowed_origins {
            if !(origin.starts_with("https://") || origin.starts_with("http://"))
                || origin.trim_end_matches('/') != origin
            {
                return Err(ConfigError::Invalid(format!(
                    "accounts.allowed_origins: {origin:.100} is not an origin (scheme://host[:port])"
                )));
            }
        }
        if let Some(url) = &a.public_url {
            crate::passkeys::RelyingParty::new(url)
                .map_err(|e| ConfigError::Invalid(format!("accounts.public_url: {e}")))?;
        }
        for channel in &self.approvals.production_channels {
            if sigil_manifests::manifest::check_identifier(channel).is_err() {
                return Err(ConfigError::Invalid(format!(
                    "approvals.production_channels: {channel:.100} is not a channel name"
                )));
            }
        }
        let l = &self.limits;
        if [
            l.token_rate_per_second,
            l.token_rate_burst,
            l.auth_failure_rate_per_second,
            l.auth_failure_burst,
        ]
        .contains(&0)
        {
            return invalid(
                "limits.token_rate_per_second, token_rate_burst, auth_failure_rate_per_second \
                 and auth_failure_burst must be positive",
            );
        }
        if !(1..=1_000_000).contains(&l.max_connections) {
            return invalid("limits.max_connections must be between 1 and 1000000");
        }
        if !(1..=l.max_connections).contains(&l.max_connections_per_address) {
            return invalid(
                "limits.max_connections_per_address must be between 1 and limits.max_connections",
            );
        }
        for (name, secs) in [
            ("header_read_timeout_secs", l.header_read_timeout_secs),
            ("idle_timeout_secs", l.idle_timeout_secs),
            ("body_timeout_secs", l.body_timeout_secs),
        ] {
            if !(1..=3600).contains(&secs) {
                return Err(ConfigError::Invalid(format!(
                    "limits.{name} must be between 1 and 3600"
                )));
            }
        }
        if let Some(url) = &mut self.mirror_base_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return invalid("mirror_base_url must start with http:// or https://");
            }
            while url.ends_with('/') {
                url.pop();
            }
        }
        if !(1..=3650).contains(&self.records.report_retention_days) {
            return invalid("records.report_retention_days must be between 1 and 3650");
        }
        if !(60..=86_400).contains(&self.records.prune_interval_secs) {
            return invalid("records.prune_interval_secs must be between 60 and 86400");
        }
        if !(1..=86_400).contains(&self.audit_checkpoint_secs) {
            return invalid("audit_checkpoint_secs must be between 1 and 86400");
        }
        self.database()?;
        Ok(())
    }

    /// The audit key file (`audit_key_file` or its default).
    pub fn audit_key_path(&self) -> PathBuf {
        self.audit_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys").join("audit.key"))
    }

    /// The database `database_url` names (or the default SQLite file).
    pub fn database(&self) -> Result<Database, ConfigError> {
        match &self.database_url {
            None => Ok(Database::Sqlite(self.data_dir.join("sigil.db"))),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Database::Postgres(url.clone()))
            }
            Some(url) => match url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
            {
                Some(path) if !path.is_empty() => Ok(Database::Sqlite(PathBuf::from(path))),
                _ => Err(ConfigError::Invalid(format!(
                    "database_url {url:?} is neither sqlite://PATH nor postgres://…"
                ))),
            },
        }
    }

    /// The SQLite database file named by `database_url` (or its default); an error for
    /// PostgreSQL.
    pub fn database_path(&self) -> Result<PathBuf, ConfigError> {
        match self.database()? {
            Database::Sqlite(path) => Ok(path),
            Database::Postgres(_) => Err(ConfigError::Invalid(
                "database_url names PostgreSQL, not an SQLite file".to_owned(),
            )),
        }
    }
}

/// Where the server keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file (one server).
    Sqlite(PathBuf),
    /// A PostgreSQL URL (one or several replicas).
    Postgres(String),
}

impl Database {
    /// The URL with any password replaced by `***`, for messages and logs.
    pub fn redacted(&self) -> String {
        match self {
            Database::Sqlite(path) => format!("sqlite://{}", path.display()),
            Database::Postgres(url) => redact_url(url),
        }
    }
}

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn zero_configuration_listens_on_loopback() {
        let c = ServerConfig::load(None, env(&[]), Overrides::default()).unwrap();
        assert!(c.listen.ip().is_loopback());
        assert_eq!(
            c.database_path().unwrap(),
            PathBuf::from("sigil-data/sigil.db")
        );
    }

    #[test]
    fn file_then_environment_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sigil.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/a\"\n[limits]\nupload_max_bytes = 4096\n",
        )
        .unwrap();
        let c = ServerConfig::load(
            Some(&file),
            env(&[
                ("SIGIL_DATA_DIR", "/b"),
                ("SIGIL_MIRROR_BASE_URL", "https://cdn.example/b/"),
            ]),
            Overrides {
                listen: Some("127.0.0.1:9001".parse().unwrap()),
                data_dir: None,
            },
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.data_dir, PathBuf::from("/b"));
        assert_eq!(c.limits.upload_max_bytes, 4096);
        assert_eq!(c.mirror_base_url.as_deref(), Some("https://cdn.example/b"));
    }

    #[test]
    fn the_readme_example_configuration_loads() {
        let readme = include_str!("../README.md");
        let start = readme.find("```toml\n").unwrap() + "```toml\n".len();
        let end = start + readme[start..].find("```").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(&file, &readme[start..end]).unwrap();
        let c = ServerConfig::load(Some(&file), env(&[]), Overrides::default()).unwrap();
        assert_eq!(c.listen.port(), 8443);
        assert!(c.tls.is_some());
        assert_eq!(c.limits.rate_burst, 200);
        assert_eq!(c.approvals.production_channels, ["stable"]);
        assert!(c.approvals.deployment_second_operator);
        assert_eq!(c.accounts.lockout_after, 5);
        assert_eq!(c.records.report_retention_days, 365);
        assert_eq!(c.records.prune_interval_secs, 3600);
    }

    #[test]
    fn account_and_approval_settings_are_validated() {
        let c = ServerConfig::load(
            None,
            env(&[
                ("SIGIL_PRODUCTION_CHANNELS", "stable, clinic,"),
                ("SIGIL_DEPLOYMENT_SECOND_OPERATOR", "true"),
                ("SIGIL_LOCKOUT_AFTER", "3"),
            ]),
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.approvals.production_channels, ["stable", "clinic"]);
        assert!(c.approvals.deployment_second_operator);
        assert_eq!(c.lockout().lockout_after, 3);
        assert_eq!(c.accounts.public_url, None);
        let c = ServerConfig::load(
            None,
            env(&[("SIGIL_PUBLIC_URL", "https://sigil.example:8443")]),
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            c.accounts.public_url.as_deref(),
            Some("https://sigil.example:8443")
        );
        for (var, value, named) in [
            ("SIGIL_PASSPHRASE_MIN_SCORE", "5", "passphrase_min_score"),
            ("SIGIL_PASSPHRASE_MIN_LENGTH", "4", "passphrase_min_length"),
            ("SIGIL_ARGON2_MEMORY_KIB", "1", "argon2"),
            ("SIGIL_SESSION_IDLE_SECS", "1", "session_idle_secs"),
            ("SIGIL_LOCKOUT_AFTER", "0", "lockout_after"),
            (
                "SIGIL_PRODUCTION_CHANNELS",
                "no spaces",
                "production_channels",
            ),
            // Passkeys cannot work there: refused at start-up, not at the first login.
            ("SIGIL_PUBLIC_URL", "http://sigil.example", "public_url"),
            ("SIGIL_PUBLIC_URL", "https://10.1.2.3:8443", "IP address"),
        ] {
            let e =
                ServerConfig::load(None, env(&[(var, value)]), Overrides::default()).unwrap_err();
            assert!(e.to_string().contains(named), "{var}={value}: {e}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_their_name() {
        let e = ServerConfig::load(
            None,
            env(&[("SIGIL_RATE_BURST", "lots")]),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("SIGIL_RATE_BURST"), "{e}");
        let e = ServerConfig::load(None, env(&[("SIGIL_LISTN", "x")]), Overrides::default())
            .unwrap_err();
        assert!(e.to_string().contains("SIGIL_LISTN"), "{e}");
        let e = ServerConfig::load(
            None,
            env(&[("SIGIL_TLS_CERT", "c.pem")]),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("TLS"), "{e}");
        let e = ServerConfig::load(
            None,
            env(&[("SIGIL_DATABASE_URL", "mysql://db/sigil")]),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("postgres://"), "{e}");
        let c = ServerConfig::load(
            None,
            env(&[("SIGIL_DATABASE_URL", "postgres://sigil:hunter2@db/sigil")]),
            Overrides::default(),
        )
        .unwrap();
        let db = c.database().unwrap();
        assert_eq!(
            db,
            Database::Postgres("postgres://sigil:hunter2@db/sigil".into())
        );
        assert_eq!(db.redacted(), "postgres://sigil:***@db/sigil");
        let e = ServerConfig::load(
            None,
            env(&[("SIGIL_AUDIT_CHECKPOINT_SECS", "0")]),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("audit_checkpoint_secs"), "{e}");
    }

    #[test]
    fn the_audit_key_lives_apart_from_the_database_by_default() {
        let c = ServerConfig::load(None, env(&[]), Overrides::default()).unwrap();
        assert_eq!(
            c.audit_key_path(),
            PathBuf::from("sigil-data/keys/audit.key")
        );
        let c = ServerConfig::load(
            None,
            env(&[("SIGIL_AUDIT_KEY_FILE", "/secure/audit.key")]),
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.audit_key_path(), PathBuf::from("/secure/audit.key"));
    }
}
