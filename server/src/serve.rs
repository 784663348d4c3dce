//! Start-up (data directory, migrations, store reconciliation, bootstrap token, open-file
//! limit) and serving (plain HTTP/1.1, h2c when configured, or rustls TLS with HTTP/2 by ALPN;
//! connection caps and timeouts from [`crate::connection`]; graceful shutdown on SIGTERM or
//! Ctrl-C).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum_server::accept::Accept;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use sigil_manifests::TrustRoot;
use tokio::net::TcpStream;

use crate::api::{new_token, router, AppState};
use crate::bundles::BundleStore;
use crate::config::Database;
use crate::config::ServerConfig;
use crate::connection::{
    raise_open_file_limit, Activity, ConnectionLimits, GuardedStream, Refused, Tracked,
};
use crate::store::prelude::*;
use crate::store::{now_secs, AuditEvent, PgStore, Role, SqliteStore, TokenGrant};

/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Opens the database (running migrations) and the bundle store, reconciling the two. Blocks
/// (call it outside the async runtime, or through `block_in_place`).
pub fn open_storage(config: &ServerConfig) -> anyhow::Result<(Arc<dyn Store>, BundleStore)> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let database = config.database()?;
    let (store, differences): (Arc<dyn Store>, Vec<String>) = match &database {
        Database::Sqlite(db_path) => {
            if let Some(parent) = db_path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).with_context(|| {
                    format!("cannot create database directory {}", parent.display())
                })?;
            }
            let store = SqliteStore::open(db_path)
                .with_context(|| format!("cannot open database {}", db_path.display()))?;
            let differences = store.schema_differences()?;
            (Arc::new(store), differences)
        }
        Database::Postgres(url) => {
            let store = PgStore::open(url, config.database_ca_file.as_deref())
                .with_context(|| format!("cannot open database {}", database.redacted()))?;
            let differences = store.schema_differences()?;
            (Arc::new(store), differences)
        }
    };
    // Refuses a tampered database; creates the audit key at first start.
    crate::audit_key::check_at_start(&*store, &differences, config)?;
    let bundles = BundleStore::open(&config.data_dir).context("cannot open the bundle store")?;
    let ids: HashSet<String> = store.release_ids()?.into_iter().collect();
    let r = bundles
        .reconcile(&ids)
        .context("cannot reconcile the bundle store")?;
    if r.removed_temporary > 0 || r.removed_orphans > 0 {
        tracing::warn!(
            interrupted_uploads = r.removed_temporary,
            orphan_bundles = r.removed_orphans,
            "removed leftovers of an interrupted run"
        );
    }
    if store.keeps_bundles() {
        // The database holds every bundle; this disk is a cache filled on first download.
        let pruned = store.prune_bundles(now_secs())?;
        if pruned > 0 {
            tracing::warn!(
                pruned,
                "removed bundle bytes no release names (interrupted uploads)"
            );
        }
        if !r.missing.is_empty() {
            tracing::info!(
                bundles = r.missing.len(),
                "bundles not cached on this replica yet; fetched from the database on demand"
            );
        }
    }
    for id in r.missing.iter().filter(|_| !store.keeps_bundles()) {
        tracing::error!(
            release = id,
            "bundle file of a release is missing from the store"
        );
    }
    Ok((store, bundles))
}

/// Creates an admin token and returns it (the only time it is visible).
pub fn create_admin_token(store: &dyn Store, name: &str, actor: &str) -> anyhow::Result<String> {
    let (token, hash) = new_token();
    let event = AuditEvent::new(
        actor,
        crate::store::AuditAction::TokenCreate,
        name,
        serde_json::json!({ "role": "admin" }),
    );
    let grant = TokenGrant {
        hash: &hash,
        name,
        role: Role::Admin,
        device_id: None,
        expires_at: None,
        owner: None,
    };
    store.create_token(&grant, now_secs(), Some(&event))?;
    Ok(token)
}

pub(crate) fn load_trust_root(config: &ServerConfig) -> anyhow::Result<Option<TrustRoot>> {
    let Some(path) = &config.trust_root else {
        return Ok(None);
    };
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read trust root {}", path.display()))?;
    let root = TrustRoot::decode(&bytes)
        .map_err(|e| anyhow::anyhow!("trust root {} is invalid: {e}", path.display()))?;
    Ok(Some(root))
}

/// The first step of accepting a connection: its slot under the connection caps (or it is
/// closed at once), then the idle and write timeouts around its socket and the request tracking
/// around its service. Under TLS this runs before the handshake, so the handshake counts too.
#[derive(Debug, Clone)]
struct Guard {
    connections: Arc<ConnectionLimits>,
    idle_timeout: Duration,
    write_timeout: Duration,
    /// Close plain connections that open with the HTTP/2 preface.
    refuse_h2c: bool,
}

impl<S> Accept<TcpStream, S> for Guard {
    type Stream = GuardedStream<TcpStream>;
    type Service = Tracked<S>;
    type Future = std::future::Ready<std::io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let accepted = stream.peer_addr().and_then(|peer| {
            self.connections.acquire(peer.ip()).map_err(|why| {
                let cap = match why {
                    Refused::Total => "limits.max_connections",
                    Refused::PerAddress => "limits.max_connections_per_address",
                };
                tracing::debug!(%peer, cap, "connection refused");
                std::io::Error::other("connection cap reached")
            })
        });
        std::future::ready(accepted.map(|slot| {
            let activity = Activity::new();
            let stream = GuardedStream::new(
                stream,
                slot,
                Arc::clone(&activity),
                self.idle_timeout,
                self.write_timeout,
            );
            let stream = if self.refuse_h2c {
                stream.refusing_h2_preface()
            } else {
                stream
            };
            (stream, Tracked::new(service, activity))
        }))
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Connections the kernel queues for `accept` (std's default is 128, which drops the SYNs of a
/// fleet reconnecting at once; the kernel caps it at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)?.into_std()
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let (store, bundles) = tokio::task::block_in_place(|| open_storage(&config))?;
    let trust_root = load_trust_root(&config)?;
    if trust_root.is_none() {
        tracing::warn!("no trust root configured: bundle uploads are refused until one is set");
    }
    let tls = match &config.tls {
        Some(tls) => {
            // One process-wide provider; an error only means one is installed already.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let rustls = RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .with_context(|| {
                    format!(
                        "cannot load TLS certificate {} and key {}",
                        tls.cert.display(),
                        tls.key.display()
                    )
                })?;
            Some(rustls)
        }
        None => None,
    };
    let open_files = raise_open_file_limit(config.limits.max_connections)?;
    tracing::debug!(open_files, "open-file limit");
    let listener =
        listen(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    // Created only once the server can start, so the one printing is never lost.
    let bootstrap = tokio::task::block_in_place(|| -> anyhow::Result<Option<String>> {
        Ok(if store.has_admin_token()? {
            None
        } else {
            Some(create_admin_token(&*store, "bootstrap-admin", "system")?)
        })
    })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("sigil-server listening on {scheme}://{addr}");
    match bootstrap {
        Some(token) => println!(
            "first admin token (shown once; more with `sigil-server admin-token`): {token}"
        ),
        None => println!("admin tokens exist; create another with `sigil-server admin-token`"),
    }
    let limits = config.limits.clone();
    let h2c = config.http2_cleartext;
    // A stored root chain that no longer verifies from the configured root: refuse to start
    // (the trust root changed under the database) rather than verify uploads under the wrong root.
    if let Some(root) = &trust_root {
        let stored = tokio::task::block_in_place(|| store.root_chain())?;
        crate::roots::Roots::new(root.clone(), stored).context(
            "the stored root chain (PUT /api/v1/root-chain) is not valid for trust_root",
        )?;
    }
    // The state reads the stored chain: a blocking call, like the store's others.
    let state = tokio::task::block_in_place(|| AppState::new(config, store, bundles, trust_root));
    if let Some(roots) = state.roots.clone() {
        tokio::spawn(crate::roots::refresh_loop(roots, state.db.clone()));
    }
    tokio::spawn(crate::audit_key::checkpoint_loop(
        state.db.clone(),
        state.config.clone(),
    ));
    tokio::spawn(crate::records::prune_loop(
        state.db.clone(),
        state.config.clone(),
    ));
    tokio::spawn(crate::api::accounts::session_sweep_loop(
        state.db.clone(),
        state.config.clone(),
    ));
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();

    let handle = axum_server::Handle::new();
    let signal_handle = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        signal_handle.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });
    let guard = Guard {
        connections: ConnectionLimits::new(
            limits.max_connections,
            limits.max_connections_per_address,
        ),
        idle_timeout: Duration::from_secs(limits.idle_timeout_secs),
        write_timeout: Duration::from_secs(limits.body_timeout_secs),
        refuse_h2c: tls.is_none() && !h2c,
    };
    let header_timeout = Duration::from_secs(limits.header_read_timeout_secs);
    // Over TLS the client may choose HTTP/2 (ALPN); on a plain port `Guard` refuses the HTTP/2
    // preface unless h2c is enabled.
    let mut http = Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    http.http2().timer(TokioTimer::new());
    match tls {
        Some(rustls) => {
            let acceptor = RustlsAcceptor::new(rustls)
                .handshake_timeout(header_timeout)
                .acceptor(guard);
            let mut server = axum_server::from_tcp(listener).acceptor(acceptor);
            *server.http_builder() = http;
            server.handle(handle).serve(app).await?
        }
        None => {
            let mut server = axum_server::from_tcp(listener).acceptor(guard);
            *server.http_builder() = http;
            server.handle(handle).serve(app).await?
        }
    }
    tracing::info!("stopped");
    Ok(())
}
