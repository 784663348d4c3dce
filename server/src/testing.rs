//! An in-process `sigil-server` on a loopback port, for the tests of the components that talk to
//! it (the agent's, the end-to-end suite). Feature `test-support`; the binary never uses it.
//!
//! It is the production start-up (configuration from variables, storage with migrations, the
//! trust root, the router) on `127.0.0.1:0`, with API tokens granted directly in the store so a
//! test needs no bootstrap step. Rate limits are lifted unless the variables set them.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

use crate::api::{router, token_hash, AppState};
use crate::config::{Overrides, ServerConfig};
use crate::store::{Role, TokenGrant};

/// A running in-process server; it stops when dropped.
#[derive(Debug)]
pub struct LocalServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LocalServer {
    /// Starts a server on the current tokio runtime with the trust root file `trust_root`,
    /// its data in `data_dir`, the `SIGIL_*` variables `vars`, and one API token per
    /// `(token, role)`.
    pub async fn start(
        trust_root: &Path,
        data_dir: &Path,
        vars: &[(&str, &str)],
        tokens: &[(&str, Role)],
    ) -> anyhow::Result<LocalServer> {
        let mut env: Vec<(String, String)> = vec![
            ("SIGIL_TRUST_ROOT".into(), trust_root.display().to_string()),
            ("SIGIL_RATE_PER_SECOND".into(), "100000".into()),
            ("SIGIL_RATE_BURST".into(), "100000".into()),
        ];
        for (k, v) in vars {
            env.retain(|(name, _)| name != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        let config = ServerConfig::load(
            None,
            env,
            Overrides {
                listen: None,
                data_dir: Some(data_dir.to_owned()),
            },
        )?;
        let root = crate::serve::load_trust_root(&config)?;
        let (store, bundles) = crate::serve::open_storage(&config)?;
        for (token, role) in tokens {
            let hash = token_hash(token);
            let grant = TokenGrant {
                hash: &hash,
                name: role.as_str(),
                role: *role,
                device_id: None,
                expires_at: None,
                owner: None,
            };
            store
                .create_token(&grant, 1, None)
                .context("cannot grant a test token")?;
        }
        let state = AppState::new(config, store, bundles, root);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "in-process test server stopped");
            }
        });
        Ok(LocalServer {
            url: format!("http://{addr}"),
            http: reqwest::Client::new(),
            task,
        })
    }

    /// One API call with `token`: the status and the JSON body (a JSON string if the body is
    /// not JSON).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        answer(req).await
    }

    /// Uploads bundle bytes with `token` (`POST /api/v1/releases`): the status and the answer.
    pub async fn upload(
        &self,
        token: &str,
        bundle: Vec<u8>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let req = self
            .http
            .post(format!("{}/api/v1/releases", self.url))
            .bearer_auth(token)
            .header("content-type", "application/octet-stream")
            .body(bundle);
        answer(req).await
    }
}

impl LocalServer {
    /// Gives the server a root chain with `token` (`PUT /api/v1/root-chain`).
    pub async fn put_root_chain(
        &self,
        token: &str,
        chain: Vec<u8>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let req = self
            .http
            .put(format!("{}/api/v1/root-chain", self.url))
            .bearer_auth(token)
            .header("content-type", "application/octet-stream")
            .body(chain);
        answer(req).await
    }
}

/// Sends `req`: the status and the JSON body (a JSON string if the body is not JSON).
async fn answer(req: reqwest::RequestBuilder) -> anyhow::Result<(u16, serde_json::Value)> {
    let res = req.send().await?;
    let status = res.status().as_u16();
    let text = res.text().await?;
    let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Ok((status, value))
}
