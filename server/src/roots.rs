//! The root chain the server was given (FORMAT.md §4, root rotation).
//!
//! The server is configured with the root its devices were provisioned with
//! (`trust_root`). An administrator hands it the chain of root updates since
//! (`PUT /api/v1/root-chain`, body: the `SGL-RCHN` file `sigil root chain` writes). The server
//! verifies the chain from the provisioned root (steps R1–R3), refuses one that does not extend
//! the chain it holds (its newest root must be in the new chain with the same digest: no
//! rollback, no fork), stores it, verifies uploads under the newest root, and hands the chain to
//! every device that reports an older root version at check-in.
//!
//! Persistence is one table (`root_chain`, one row; `store/sqlite/schema/0003_root_chain.sql`)
//! behind the small [`RootChainStore`] trait, part of [`crate::store::Store`] (SQLite:
//! `store/sqlite/roots.rs`).

use std::sync::{Arc, RwLock};

use sigil_manifests::{verify_root_chain, RootFloor, TrustRoot};

use crate::store::{AuditEvent, StoreResult};

/// Persistence of the root chain: one chain per server.
pub trait RootChainStore {
    /// The stored chain, if one was given.
    fn root_chain(&self) -> StoreResult<Option<Vec<u8>>>;
    /// Replaces the stored chain (already verified) and appends `audit`, in one transaction,
    /// if the stored chain is still `previous` (`None`: no chain stored); otherwise
    /// [`crate::store::StoreError::Conflict`]: another replica changed it since it was read, so
    /// the extension check must be made again against what is stored now.
    fn put_root_chain(
        &self,
        chain: &[u8],
        newest: u32,
        previous: Option<&[u8]>,
        audit: &AuditEvent,
    ) -> StoreResult<()>;
}

/// The answer when the stored chain changed between its read and the write.
pub(crate) fn chain_changed() -> crate::store::StoreError {
    crate::store::StoreError::Conflict(
        "the root chain was changed by another request meanwhile; fetch it and try again"
            .to_owned(),
    )
}

/// What is wrong with a root chain an administrator gave.
#[derive(Debug, thiserror::Error)]
pub enum RootChainError {
    /// The chain does not verify from the provisioned root.
    #[error("the root chain does not verify from the server's trust root: {0}")]
    Invalid(sigil_manifests::Error),
    /// The chain does not extend the chain the server holds.
    #[error(
        "the root chain does not extend the one this server holds (root {held}): {source}; \
         a chain may only add roots"
    )]
    NotAnExtension {
        /// The newest root version the server holds.
        held: u32,
        /// Why.
        source: sigil_manifests::Error,
    },
}

/// Why [`Roots::refresh`] did not take the stored chain.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The stored chain is not valid for this server's roots.
    #[error(transparent)]
    Chain(#[from] RootChainError),
}

impl From<RefreshError> for crate::store::StoreError {
    fn from(e: RefreshError) -> Self {
        match e {
            RefreshError::Store(e) => e,
            RefreshError::Chain(e) => crate::store::StoreError::Backend(format!(
                "the stored root chain is not taken: {e}"
            )),
        }
    }
}

/// Re-reads the stored chain every [`REFRESH_INTERVAL`], for the life of the server.
pub async fn refresh_loop(roots: Arc<Roots>, db: crate::api::Db) {
    let mut tick = tokio::time::interval(REFRESH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let roots = roots.clone();
        if let Err(e) = db.run(move |s| Ok(roots.refresh(s)?)).await {
            tracing::warn!(error = %e, "cannot refresh the root chain from the database");
        }
    }
}

/// How often each replica re-reads the stored chain, so a chain given to one replica reaches
/// the check-ins every replica answers.
pub const REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The chain and the newest root it reaches.
#[derive(Debug, Clone)]
pub struct Chain {
    /// The `SGL-RCHN` document (`None`: no rotation yet).
    pub bytes: Option<Arc<Vec<u8>>>,
    /// The newest root: the provisioned one, or the chain's last.
    pub newest: Arc<TrustRoot>,
    /// The newest root's floor (version and digest), `None` for the provisioned root.
    floor: Option<RootFloor>,
}

/// The provisioned root and the current chain, shared by the handlers.
#[derive(Debug)]
pub struct Roots {
    provisioned: TrustRoot,
    current: RwLock<Chain>,
}

impl Roots {
    /// The roots of a server provisioned with `root`, with the chain `stored` (from the store);
    /// a stored chain that no longer verifies from `root` is an error (the configuration
    /// changed under the database).
    pub fn new(root: TrustRoot, stored: Option<Vec<u8>>) -> Result<Self, RootChainError> {
        let roots = Self::without_chain(root);
        if let Some(bytes) = stored {
            let chain = roots.check(&bytes)?;
            roots.set(chain);
        }
        Ok(roots)
    }

    /// The roots of a server provisioned with `root` and given no chain yet.
    pub fn without_chain(root: TrustRoot) -> Self {
        Roots {
            current: RwLock::new(Chain {
                bytes: None,
                newest: Arc::new(root.clone()),
                floor: None,
            }),
            provisioned: root,
        }
    }

    /// The current chain and newest root.
    pub fn current(&self) -> Chain {
        // A poisoned lock only means a writer panicked after the swap; the value is whole.
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The newest root: uploads are verified under it.
    pub fn newest(&self) -> Arc<TrustRoot> {
        self.current().newest
    }

    /// The provisioned root: every chain is walked from it.
    pub fn provisioned(&self) -> &TrustRoot {
        &self.provisioned
    }

    /// The newest root's version and floor (`None` for the provisioned root): what an upload's
    /// chain must lead to.
    pub fn newest_floor(&self) -> (u32, Option<RootFloor>) {
        let chain = self.current();
        (chain.newest.root_version, chain.floor)
    }

    /// Verifies `bytes` as a chain from the provisioned root that extends the current one:
    /// the walk a device on the current newest root makes (steps R1–R3).
    pub fn check(&self, bytes: &[u8]) -> Result<Chain, RootChainError> {
        let held = self.current();
        let (newest, floor) =
            verify_root_chain(&self.provisioned, None, bytes).map_err(RootChainError::Invalid)?;
        if held.floor.is_some() {
            verify_root_chain(&self.provisioned, held.floor, bytes).map_err(|source| {
                RootChainError::NotAnExtension {
                    held: held.newest.root_version,
                    source,
                }
            })?;
        }
        Ok(Chain {
            bytes: Some(Arc::new(bytes.to_vec())),
            newest: Arc::new(newest),
            floor,
        })
    }

    /// Takes the chain stored in `store` if it differs from the one held: another replica may
    /// have been given a newer chain. A stored chain that does not verify, or does not extend
    /// the one held, is not taken (an error: the held chain stays in use).
    pub fn refresh(&self, store: &dyn RootChainStore) -> Result<(), RefreshError> {
        let Some(stored) = store.root_chain()? else {
            return Ok(());
        };
        if self.current().bytes.as_deref().map(Vec::as_slice) == Some(&stored[..]) {
            return Ok(());
        }
        let chain = self.check(&stored)?;
        self.set(chain);
        Ok(())
    }

    /// Makes `chain` (from [`Roots::check`]) the current one.
    pub fn set(&self, chain: Chain) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = chain;
    }
}
