//! Shared test fixtures: signed bundles, an in-process app with one token per role, a raw
//! HTTP/1.1 client for the real binary.
// Not every test crate uses every helper; a failed unwrap is a failed test.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use ed25519_dalek::Signer;
use serde_json::{json, Value};
use sigil_manifests::TrustRoot;
use sigil_server::api::{auth_message, router, token_hash, AppState};
use sigil_server::config::{Overrides, ServerConfig};
use sigil_server::store::prelude::*;
use sigil_server::store::{Role, TokenGrant};
use tower::ServiceExt;

pub mod people;
pub mod postgres;
pub mod process;

// The fixtures (keys, trust root, bundles) are the shared ones.
pub use sigil_test_support::*;

/// An in-process server with one token per role, on SQLite or (with
/// `TEST_DATABASE=postgres`) on a throwaway PostgreSQL of its own.
pub struct Harness {
    pub app: Router,
    pub state: AppState,
    pub store: Arc<dyn Store>,
    pub dir: tempfile::TempDir,
    pub tokens: HashMap<Role, String>,
    /// The PostgreSQL server, when the suite runs on PostgreSQL (dropped last).
    pub pg: Option<postgres::TestPostgres>,
}

pub fn test_config(dir: &Path, env: &[(&str, &str)]) -> ServerConfig {
    let root = write_trust_root(dir);
    let mut vars: Vec<(String, String)> = vec![
        ("SIGIL_TRUST_ROOT".into(), root.display().to_string()),
        ("SIGIL_UPLOAD_MAX_BYTES".into(), "65536".into()),
        ("SIGIL_RATE_PER_SECOND".into(), "100000".into()),
        ("SIGIL_RATE_BURST".into(), "100000".into()),
        ("SIGIL_TOKEN_RATE_PER_SECOND".into(), "100000".into()),
        ("SIGIL_TOKEN_RATE_BURST".into(), "100000".into()),
        ("SIGIL_AUTH_FAILURE_RATE_PER_SECOND".into(), "100000".into()),
        ("SIGIL_AUTH_FAILURE_BURST".into(), "100000".into()),
        ("SIGIL_REPORTS_KEPT".into(), "5".into()),
    ];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    ServerConfig::load(
        None,
        vars,
        Overrides {
            listen: None,
            data_dir: Some(dir.join("data")),
        },
    )
    .unwrap()
}

impl Harness {
    pub fn new() -> Self {
        Self::with_env(&[])
    }

    pub fn with_env(env: &[(&str, &str)]) -> Self {
        // The PostgreSQL client blocks: set up off the test's async runtime.
        std::thread::scope(|s| s.spawn(|| Self::build(env)).join().unwrap())
    }

    fn build(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pg = postgres::postgres_selected().then(postgres::TestPostgres::start);
        let url = pg.as_ref().map(|pg| pg.url());
        let mut env = env.to_vec();
        if let Some(url) = &url {
            env.push(("SIGIL_DATABASE_URL", url));
        }
        let config = test_config(dir.path(), &env);
        let (store, bundles) = sigil_server::serve::open_storage(&config).unwrap();
        let mut tokens = HashMap::new();
        for role in [
            Role::Admin,
            Role::Release,
            Role::Operator,
            Role::Auditor,
            Role::Approver,
        ] {
            let token = format!("sgl_test_{}", role.as_str());
            let hash = token_hash(&token);
            let grant = TokenGrant {
                hash: &hash,
                name: role.as_str(),
                role,
                device_id: None,
                expires_at: None,
                owner: None,
            };
            store.create_token(&grant, 1, None).unwrap();
            tokens.insert(role, token);
        }
        let root =
            TrustRoot::decode(&std::fs::read(config.trust_root.clone().unwrap()).unwrap()).unwrap();
        let state = AppState::new(config, store.clone(), bundles, Some(root));
        Harness {
            app: router(state.clone()),
            state,
            store,
            dir,
            tokens,
            pg,
        }
    }

    /// Runs `f` against the store off the async runtime (the PostgreSQL client blocks).
    pub fn blocking<T: Send>(&self, f: impl FnOnce(&dyn Store) -> T + Send) -> T {
        let store = &*self.store;
        std::thread::scope(|s| s.spawn(|| f(store)).join().unwrap())
    }

    /// One integer from raw SQL on the backend's tables (the same SQL on both).
    pub fn raw_i64(&self, sql: &str) -> i64 {
        std::thread::scope(|s| {
            s.spawn(|| match &self.pg {
                Some(pg) => pg.client().query_one(sql, &[]).unwrap().get(0),
                None => rusqlite::Connection::open(self.data().join("sigil.db"))
                    .unwrap()
                    .query_row(sql, [], |r| r.get(0))
                    .unwrap(),
            })
            .join()
            .unwrap()
        })
    }

    /// Raw SQL statements, as an attacker with database access would run them: `sqlite` on
    /// SQLite, `postgres` on PostgreSQL.
    pub fn raw_execute(&self, sqlite: &str, postgres: &str) {
        std::thread::scope(|s| {
            s.spawn(|| match &self.pg {
                Some(pg) => pg.client().batch_execute(postgres).unwrap(),
                None => rusqlite::Connection::open(self.data().join("sigil.db"))
                    .unwrap()
                    .execute_batch(sqlite)
                    .unwrap(),
            })
            .join()
            .unwrap()
        })
    }

    pub fn token(&self, role: Role) -> &str {
        &self.tokens[&role]
    }

    pub fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    pub async fn send(&self, req: Request<Body>) -> axum::response::Response {
        self.app.clone().oneshot(req).await.unwrap()
    }

    /// JSON request; returns status and JSON (or the text as a JSON string).
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let res = self.send(req).await;
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }

    pub async fn upload(&self, bytes: Vec<u8>) -> (StatusCode, Value) {
        let req = Request::post("/api/v1/releases")
            .header(
                "authorization",
                format!("Bearer {}", self.token(Role::Release)),
            )
            .header("content-type", "application/octet-stream")
            .body(Body::from(bytes))
            .unwrap();
        let res = self.send(req).await;
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    pub async fn enrol(&self, id: &str, seed: u8, extra: Value) -> (StatusCode, Value) {
        let mut body = json!({
            "id": id,
            "product": { "vendor": "acme", "device": "pump-x2" },
            "public_key": hex::encode(public(seed)),
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        self.call(
            "POST",
            "/api/v1/devices",
            Some(self.token(Role::Operator)),
            Some(body),
        )
        .await
    }

    /// Challenge–response with the device key of `seed`; the session token.
    pub async fn session(&self, id: &str, seed: u8) -> Result<String, (StatusCode, Value)> {
        let (s, c) = self
            .call(
                "POST",
                "/api/v1/device/challenge",
                None,
                Some(json!({ "device_id": id })),
            )
            .await;
        if s != StatusCode::OK {
            return Err((s, c));
        }
        let nonce: [u8; 32] = hex::decode(c["nonce"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let sig = key(seed).sign(&auth_message(id, &nonce));
        let (s, t) = self
            .call(
                "POST",
                "/api/v1/device/session",
                None,
                Some(json!({ "device_id": id, "nonce": hex::encode(nonce), "signature": hex::encode(sig.to_bytes()) })),
            )
            .await;
        if s != StatusCode::OK {
            return Err((s, t));
        }
        Ok(t["token"].as_str().unwrap().to_owned())
    }

    pub async fn check_in(
        &self,
        token: &str,
        state: &str,
        deployment: Option<i64>,
    ) -> (StatusCode, Value) {
        let mut body = json!({ "version": "1.0.0", "security_counter": 1, "state": state });
        if let Some(d) = deployment {
            body["deployment"] = json!(d);
        }
        self.call("POST", "/api/v1/device/checkin", Some(token), Some(body))
            .await
    }

    pub async fn deploy(&self, release: &str, target: Value, extra: Value) -> (StatusCode, Value) {
        let mut body = json!({ "release": release, "target": target });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        self.call(
            "POST",
            "/api/v1/deployments",
            Some(self.token(Role::Operator)),
            Some(body),
        )
        .await
    }

    /// Files in the bundle store and its temporary directory.
    pub fn stored_files(&self) -> (usize, usize) {
        store_counts(&self.data())
    }
}

pub fn store_counts(data: &Path) -> (usize, usize) {
    let count = |d: &str| {
        std::fs::read_dir(data.join(d))
            .map(|r| r.count())
            .unwrap_or(0)
    };
    (count("bundles"), count("tmp"))
}

/// A minimal HTTP/1.1 client (Connection: close) for tests against the real binary.
pub struct HttpResponse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    try_http(addr, method, path, headers, body).unwrap()
}

/// [`http`], with connection errors (a server that is down) as errors.
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect(addr)?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    if raw.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t == "chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16)
                .unwrap();
            rest = &rest[eol + 2..];
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[..n]);
            rest = &rest[n + 2..];
        }
        body = out;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}
