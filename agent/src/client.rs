//! The device side of `sigil-server`'s device API: challenge → session token, check-ins,
//! bundle requests.
//!
//! | call | request | answer |
//! |---|---|---|
//! | `POST /api/v1/device/challenge` | `{device_id}` | `{nonce, expires_in}` |
//! | `POST /api/v1/device/session` | `{device_id, nonce, signature}` | `{token, expires_in}` |
//! | `POST /api/v1/device/checkin` (Bearer) | `{version, security_counter, state, deployment?, detail?, root_version?}` | `{update: null \| offer, root_chain?, withheld?}` |
//! | `GET <download_url>` (Bearer if same origin) | `Range: bytes=N-` | `200` / `206`, or a redirect to a mirror / CDN |
//!
//! The session signature covers `"SIGIL-DEVICE-AUTH-V1" ‖ u64le(len(id)) ‖ id ‖ nonce`. The
//! token is renewed at three quarters of its lifetime, and once more after a `401`. Nothing
//! the server says is trusted beyond routing: the bundle is verified by the agent itself.
//!
//! # Download URLs and redirects
//!
//! A download URL (as offered, and every redirect target) must be `http` or `https`; anything
//! else (`file://`, `ftp://`, `data:`) is refused at once ([`ClientError::Url`]). Redirects
//! (301, 302, 303, 307, 308) are followed by [`ServerClient::fetch`] itself, at most
//! `download.max_redirects` per request, and the session token goes on a hop only if that hop's
//! origin (scheme, host, port) is the server's: a mirror or CDN never sees it, whatever the
//! chain. reqwest's own redirect following is off (`Policy::none`): its sensitive-header
//! stripping compares each hop only with the one before, and the follow-redirect layer under it
//! restores the original headers on every hop, so a chain server → CDN → same CDN would carry
//! the `Authorization` header to the CDN on the second hop.

use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};

use crate::config::ServerConfig;

/// Longest error body kept for a message.
const MAX_ERROR_BODY: usize = 512;

/// Why a server call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No HTTP answer (connection refused, reset, timeout, TLS).
    #[error("{what} {url}: no answer")]
    Transport {
        /// The call.
        what: &'static str,
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("{what} {url}: HTTP {status}: {message}")]
    Status {
        /// The call.
        what: &'static str,
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// The server's message (truncated).
        message: String,
    },
    /// The answer does not have the expected shape.
    #[error("{what} {url}: unexpected answer: {message}")]
    Protocol {
        /// The call.
        what: &'static str,
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The HTTP client could not be built (bad CA file).
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    /// A download URL or redirect target that the agent refuses to fetch.
    #[error("download URL {url} refused: {message}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// More redirects than `download.max_redirects`.
    #[error("download {url}: more than {max} redirects")]
    TooManyRedirects {
        /// The URL first asked for.
        url: String,
        /// The limit.
        max: u32,
    },
}

impl ClientError {
    /// A 4xx answer that retrying the same request will not change (not 401, 408 or 429).
    pub fn is_permanent(&self) -> bool {
        matches!(self, ClientError::Status { status, .. }
            if (400..500).contains(status) && ![401, 408, 429].contains(status))
    }
}

/// A check-in (also the carrier of every report).
#[derive(Debug, Clone, Serialize)]
pub struct CheckIn<'a> {
    /// Running version.
    pub version: &'a str,
    /// Running image's security counter.
    pub security_counter: u32,
    /// Agent state: the wire enum shared with the server.
    pub state: crate::state::ReportState,
    /// Deployment the report concerns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<i64>,
    /// Detail (progress, reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
    /// The newest trust root version the device knows (root rotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_version: Option<u32>,
}

/// The server's answer to a check-in.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CheckInReply {
    /// The assigned update, if any.
    pub update: Option<UpdateOffer>,
    /// Hex of the root chain, when the device reported an older root than the server holds.
    #[serde(default)]
    pub root_chain: Option<String>,
    /// Why an assigned release is not offered (an encrypted release without this device's
    /// key record).
    #[serde(default)]
    pub withheld: Option<String>,
}

/// The update the server assigns. `release`, `deployment` and `download_url` are used to act.
/// The rest is unauthenticated: it identifies the offered release (a bundle whose signed
/// manifest differs from a claim is not the offered release, see
/// [`UpdateOffer::describes`]) and is never trusted to decide what to install.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UpdateOffer {
    /// Deployment id.
    pub deployment: i64,
    /// Release id: the SHA-256 (hex) of the bundle's bytes.
    pub release: String,
    /// Claimed version (empty: not claimed).
    #[serde(default)]
    pub version: String,
    /// Claimed bundle size.
    #[serde(default)]
    pub size: u64,
    /// Where to download the bundle (absolute, or relative to the server URL).
    pub download_url: String,
    /// Claimed product.
    #[serde(default)]
    pub product: Option<OfferedProduct>,
    /// Claimed component.
    #[serde(default)]
    pub component: Option<String>,
    /// Claimed security counter.
    #[serde(default)]
    pub security_counter: Option<u32>,
    /// Claimed payload digest (hex).
    #[serde(default)]
    pub payload_digest: Option<String>,
    /// For an encrypted release: this device's key record (SGL-WKEY, hex; FORMAT.md §9),
    /// checked against the staged release before it is staged beside the bundle.
    #[serde(default)]
    pub key_record: Option<String>,
}

/// A product as the server names it in an offer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OfferedProduct {
    /// Vendor.
    pub vendor: String,
    /// Device class.
    pub device: String,
}

impl UpdateOffer {
    /// Whether an authenticated manifest is the release this offer describes: every field the
    /// server claimed matches it (`Err` names the first that does not). A mirror that serves
    /// another validly signed release (an older one, another product's) is thereby told apart
    /// from the offered release, which must not be refused for it.
    pub fn describes(&self, m: &sigil_manifests::Manifest<'_>) -> Result<(), String> {
        let differs = |what: &str,
                       claimed: &dyn std::fmt::Display,
                       signed: &dyn std::fmt::Display| {
            Err(format!(
                "the bundle is not the offered release: {what} {signed} is signed, {claimed} was offered"
            ))
        };
        if let Some(p) = &self.product {
            if p.vendor != m.product.vendor || p.device != m.product.device {
                return differs(
                    "product",
                    &format_args!("{}/{}", p.vendor, p.device),
                    &format_args!("{}/{}", m.product.vendor, m.product.device),
                );
            }
        }
        if let Some(c) = &self.component {
            if c != m.component {
                return differs("component", c, &m.component);
            }
        }
        if !self.version.is_empty() {
            let signed = m.version.to_string();
            if self.version != signed {
                return differs("version", &self.version, &signed);
            }
        }
        if let Some(n) = self.security_counter {
            if n != m.security_counter {
                return differs("security counter", &n, &m.security_counter);
            }
        }
        if let Some(d) = &self.payload_digest {
            let signed = hex::encode(m.payload_digest);
            if !d.eq_ignore_ascii_case(&signed) {
                return differs("payload digest", d, &signed);
            }
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
struct ChallengeAnswer {
    nonce: String,
}

#[derive(Debug, Deserialize)]
struct SessionAnswer {
    token: String,
    expires_in: u64,
}

struct Session {
    token: String,
    renew_at: Instant,
}

/// The message a device signs to open a session (FORMAT.md §8, shared with the server).
pub use sigil_manifests::device_auth::message as auth_message;

/// A client for one device.
pub struct ServerClient {
    http: reqwest::Client,
    base: Url,
    device_id: String,
    key: SigningKey,
    session: Option<Session>,
    timeout: Duration,
    max_redirects: u32,
}

impl std::fmt::Debug for ServerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key or the token.
        f.debug_struct("ServerClient")
            .field("base", &self.base.as_str())
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl ServerClient {
    /// A client for `device_id` authenticating with `key`, following at most `max_redirects`
    /// redirects per download request.
    pub fn new(
        config: &ServerConfig,
        max_redirects: u32,
        device_id: &str,
        key: SigningKey,
    ) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.request_timeout)
            .tls_built_in_root_certs(config.builtin_roots)
            .user_agent(concat!("sigil-agent/", env!("CARGO_PKG_VERSION")))
            // Redirects are followed by `fetch`, which decides per hop whether the token goes
            // along (the module documentation says why not by reqwest).
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| ClientError::Setup(format!("cannot read {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ClientError::Setup(format!("{}: {e}", path.display())))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(ServerClient {
            http,
            base: config.url.clone(),
            device_id: device_id.to_owned(),
            key,
            session: None,
            timeout: config.request_timeout,
            max_redirects,
        })
    }

    fn api(&self, path: &str) -> String {
        format!("{}{path}", self.base.as_str().trim_end_matches('/'))
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        path: &str,
        body: &impl Serialize,
        token: Option<&str>,
    ) -> Result<T, ClientError> {
        let url = self.api(path);
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Protocol {
            what,
            url: url.clone(),
            message: e.to_string(),
        })?;
        let mut req = self
            .http
            .post(&url)
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.map_err(|source| ClientError::Transport {
            what,
            url: url.clone(),
            source,
        })?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(|source| ClientError::Transport {
            what,
            url: url.clone(),
            source,
        })?;
        if !status.is_success() {
            return Err(status_error(what, &url, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            what,
            url,
            message: e.to_string(),
        })
    }

    /// Opens a new session (challenge, signature, token).
    pub async fn authenticate(&mut self) -> Result<(), ClientError> {
        let id = self.device_id.clone();
        let c: ChallengeAnswer = self
            .post(
                "challenge",
                "/api/v1/device/challenge",
                &serde_json::json!({ "device_id": id }),
                None,
            )
            .await?;
        let mut nonce = [0u8; 32];
        hex::decode_to_slice(&c.nonce, &mut nonce).map_err(|_| ClientError::Protocol {
            what: "challenge",
            url: self.api("/api/v1/device/challenge"),
            message: "nonce is not 32 bytes of hex".to_owned(),
        })?;
        let signature = self.key.sign(&auth_message(&id, &nonce));
        let s: SessionAnswer = self
            .post(
                "session",
                "/api/v1/device/session",
                &serde_json::json!({
                    "device_id": id,
                    "nonce": c.nonce,
                    "signature": hex::encode(signature.to_bytes()),
                }),
                None,
            )
            .await?;
        // Renew at three quarters of the lifetime (at least 1 s ahead of expiry).
        let life = Duration::from_secs(s.expires_in);
        let renew = life.saturating_sub((life / 4).max(Duration::from_secs(1)));
        self.session = Some(Session {
            token: s.token,
            renew_at: Instant::now() + renew,
        });
        tracing::debug!(expires_in = s.expires_in, "session opened");
        Ok(())
    }

    /// Drops the session (the next call authenticates again).
    pub fn forget_session(&mut self) {
        self.session = None;
    }

    async fn token(&mut self) -> Result<String, ClientError> {
        let fresh = self
            .session
            .as_ref()
            .is_some_and(|s| Instant::now() < s.renew_at);
        if !fresh {
            self.authenticate().await?;
        }
        self.session
            .as_ref()
            .map(|s| s.token.clone())
            .ok_or_else(|| ClientError::Protocol {
                what: "session",
                url: self.api("/api/v1/device/session"),
                message: "no session after authentication".to_owned(),
            })
    }

    /// Checks in; the update offered, if any. Re-authenticates once on `401`.
    pub async fn check_in(&mut self, c: &CheckIn<'_>) -> Result<CheckInReply, ClientError> {
        for attempt in 0..2 {
            let token = self.token().await?;
            match self
                .post::<CheckInReply>("check-in", "/api/v1/device/checkin", c, Some(&token))
                .await
            {
                Ok(a) => return Ok(a),
                Err(ClientError::Status { status: 401, .. }) if attempt == 0 => {
                    self.forget_session();
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Protocol {
            what: "check-in",
            url: self.api("/api/v1/device/checkin"),
            message: "still unauthorised after a new session".to_owned(),
        })
    }

    /// Resolves a download URL against the server URL; only `http` and `https` are accepted.
    pub fn resolve(&self, download_url: &str) -> Result<Url, ClientError> {
        let url = self.base.join(download_url).map_err(|e| ClientError::Url {
            url: download_url.to_owned(),
            message: format!("not a URL ({e})"),
        })?;
        check_scheme(url)
    }

    /// Starts `GET url` from byte `from` (the caller streams the body), following redirects
    /// (at most `max_redirects`). The session token is sent only on hops to the server's own
    /// origin, never to a mirror or CDN.
    pub async fn fetch(&mut self, url: &Url, from: u64) -> Result<reqwest::Response, ClientError> {
        let mut at = check_scheme(url.clone())?;
        let mut hops = 0u32;
        loop {
            let mut req = self.http.get(at.clone());
            if from > 0 {
                req = req.header(reqwest::header::RANGE, format!("bytes={from}-"));
            }
            if at.origin() == self.base.origin() {
                req = req.bearer_auth(self.token().await?);
            }
            let res = req.send().await.map_err(|source| ClientError::Transport {
                what: "download",
                url: at.to_string(),
                source,
            })?;
            let Some(next) = redirect_target(&res)? else {
                return Ok(res);
            };
            if hops >= self.max_redirects {
                return Err(ClientError::TooManyRedirects {
                    url: url.to_string(),
                    max: self.max_redirects,
                });
            }
            hops = hops.saturating_add(1);
            tracing::debug!(from = %at, to = %next, "download redirected");
            at = next;
        }
    }
}

/// Refuses every scheme but `http` and `https`.
fn check_scheme(url: Url) -> Result<Url, ClientError> {
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(ClientError::Url {
            message: format!("scheme {other:?} is not http or https"),
            url: url.into(),
        }),
    }
}

/// Where a redirect answer points (resolved against the URL it answered, scheme checked), or
/// `None` for any other answer.
fn redirect_target(res: &reqwest::Response) -> Result<Option<Url>, ClientError> {
    if !matches!(res.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
        return Ok(None);
    }
    let here = res.url();
    let location = res
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ClientError::Protocol {
            what: "download",
            url: here.to_string(),
            message: format!("HTTP {} without a usable Location header", res.status()),
        })?;
    let next = here.join(location).map_err(|e| ClientError::Url {
        url: location.to_owned(),
        message: format!("redirect from {here} is not a URL ({e})"),
    })?;
    check_scheme(next).map(Some)
}

/// An error from a non-success status and its body.
pub fn status_error(what: &'static str, url: &str, status: StatusCode, body: &[u8]) -> ClientError {
    let text = String::from_utf8_lossy(body.get(..MAX_ERROR_BODY).unwrap_or(body));
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.get("error"))
                .and_then(|e| e.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| text.trim().to_owned());
    ClientError::Status {
        what,
        url: url.to_owned(),
        status: status.as_u16(),
        message,
    }
}
