//! People in tests: created by the admin token, enrolled with a passphrase and a TOTP
//! secret, logged in with a session cookie; the codes an authenticator app would show.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, Response, StatusCode};
use serde_json::{json, Value};
use sigil_server::store::Role;

use super::Harness;

/// A passphrase zxcvbn rates 4.
pub const PASSPHRASE: &str = "quartz lantern orbit meadow 47";

/// Cheap Argon2 for tests (the parameters are checked the same way), and no backoff so a
/// test can fail a login and retry at once.
pub const ENV: &[(&str, &str)] = &[
    ("SIGIL_ARGON2_MEMORY_KIB", "1024"),
    ("SIGIL_ARGON2_ITERATIONS", "1"),
    ("SIGIL_LOGIN_BACKOFF_SECS", "0"),
];

/// An enrolled person and their authenticator.
pub struct Person {
    pub name: String,
    pub secret: Vec<u8>,
    /// The last TOTP step used: the server never accepts a step twice.
    pub last_step: Option<u64>,
    /// `sigil_session=…` once logged in.
    pub cookie: String,
    pub csrf: String,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn totp_at(secret: &[u8], step: u64) -> String {
    totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 0, 30, secret.to_vec())
        .unwrap()
        .generate(step * 30)
}

impl Person {
    /// A person with their authenticator's secret, not logged in.
    pub fn new(name: &str, secret: Vec<u8>) -> Self {
        Person {
            name: name.to_owned(),
            secret,
            last_step: None,
            cookie: String::new(),
            csrf: String::new(),
        }
    }

    /// The next code the server accepts: the earliest step after the last used one among
    /// the previous, current and next; waits for the clock when all three are used.
    pub fn code(&mut self) -> String {
        loop {
            let current = now() / 30;
            let step = [current - 1, current, current + 1]
                .into_iter()
                .find(|s| self.last_step.is_none_or(|l| *s > l));
            if let Some(step) = step {
                self.last_step = Some(step);
                return totp_at(&self.secret, step);
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }

    /// A code for a step the server rejects (two steps ahead).
    pub fn wrong_code(&self) -> String {
        totp_at(&self.secret, now() / 30 + 3)
    }
}

/// Sends a request with optional bearer token, cookie and extra headers; status, headers
/// and JSON body.
pub async fn request(
    h: &Harness,
    method: &str,
    uri: &str,
    token: Option<&str>,
    person: Option<&Person>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(p) = person {
        req = req.header("cookie", &p.cookie);
        if !p.csrf.is_empty() {
            req = req.header("x-csrf-token", &p.csrf);
        }
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let (status, headers, bytes) = read(h.send(req).await).await;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, value)
}

/// A request in `person`'s session (cookie and CSRF token).
pub async fn as_person(
    h: &Harness,
    person: &Person,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (s, _, v) = request(h, method, uri, None, Some(person), &[], body).await;
    (s, v)
}

/// A response's status, headers and whole body.
pub async fn read(res: Response<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, bytes)
}

/// Confirms an enrolment with the code an authenticator shows.
pub async fn confirm(h: &Harness, code: &str, totp: &str) -> (StatusCode, Value) {
    h.call(
        "POST",
        "/api/v1/enrolment/confirm",
        None,
        Some(json!({ "enrolment_code": code, "totp": totp })),
    )
    .await
}

/// Creates a person with the admin token; the enrolment code.
pub async fn create(h: &Harness, name: &str, roles: &[Role]) -> String {
    let (s, v) = h
        .call(
            "POST",
            "/api/v1/users",
            Some(h.token(Role::Admin)),
            Some(json!({ "name": name, "roles": roles })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["enrolment_code"].as_str().unwrap().to_owned()
}

/// Sets the passphrase with an enrolment code; the TOTP secret.
pub async fn start_enrolment(h: &Harness, code: &str) -> Vec<u8> {
    let (s, v) = h
        .call(
            "POST",
            "/api/v1/enrolment",
            None,
            Some(json!({ "enrolment_code": code, "passphrase": PASSPHRASE })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    totp_rs::Secret::Encoded(v["secret"].as_str().unwrap().to_owned())
        .to_bytes()
        .unwrap()
}

/// A person created, enrolled and logged in.
pub async fn person(h: &Harness, name: &str, roles: &[Role]) -> Person {
    let code = create(h, name, roles).await;
    let secret = start_enrolment(h, &code).await;
    let mut p = Person::new(name, secret);
    let totp = p.code();
    let (s, v) = confirm(h, &code, &totp).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, _, v) = login(h, &mut p, PASSPHRASE).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    p
}

/// Logs in with `passphrase` and the next code; on success the person holds the session.
pub async fn login(
    h: &Harness,
    p: &mut Person,
    passphrase: &str,
) -> (StatusCode, HeaderMap, Value) {
    let before = p.last_step;
    let totp = p.code();
    let out = login_with(h, p, passphrase, &totp).await;
    if out.0 != StatusCode::OK {
        // The server spends a code only on a successful login.
        p.last_step = before;
    }
    out
}

/// Logs in with the given passphrase and code.
pub async fn login_with(
    h: &Harness,
    p: &mut Person,
    passphrase: &str,
    totp: &str,
) -> (StatusCode, HeaderMap, Value) {
    let (s, headers, v) = request(
        h,
        "POST",
        "/api/v1/session",
        None,
        None,
        &[],
        Some(json!({ "name": p.name, "passphrase": passphrase, "totp": totp })),
    )
    .await;
    if s == StatusCode::OK {
        let cookie = headers["set-cookie"].to_str().unwrap();
        p.cookie = cookie.split(';').next().unwrap().to_owned();
        p.csrf = v["csrf_token"].as_str().unwrap().to_owned();
    }
    (s, headers, v)
}

/// Re-authenticates in the person's session.
pub async fn reauth(h: &Harness, p: &mut Person) -> StatusCode {
    let totp = p.code();
    as_person(
        h,
        p,
        "POST",
        "/api/v1/session/reauth",
        Some(json!({ "passphrase": PASSPHRASE, "totp": totp })),
    )
    .await
    .0
}

/// The audit export (the auditor token), as it is sent.
pub async fn audit_export(h: &Harness) -> Bytes {
    let req = Request::get("/api/v1/audit/export")
        .header(
            "authorization",
            format!("Bearer {}", h.token(Role::Auditor)),
        )
        .body(Body::empty())
        .unwrap();
    let (status, _, bytes) = read(h.send(req).await).await;
    assert_eq!(status, StatusCode::OK);
    bytes
}

/// The exported audit entries (not checkpoints) as JSON.
pub async fn audit(h: &Harness) -> Vec<Value> {
    let bytes = audit_export(h).await;
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("action").is_some())
        .collect()
}

/// The audit entries of one action.
pub async fn audited(h: &Harness, action: &str) -> Vec<Value> {
    audit(h)
        .await
        .into_iter()
        .filter(|e| e["action"] == action)
        .collect()
}
