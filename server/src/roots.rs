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
    /// Replaces the stored chain (already verified) and appends `audit`, in one transaction.
    fn put_root_chain(&self, chain: &[u8], newest: u32, audit: &AuditEvent) -> StoreResult<()>;
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

    /// Makes `chain` (from [`Roots::check`]) the current one.
    pub fn set(&self, chain: Chain) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = chain;
    }
}
