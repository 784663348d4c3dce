//! The root chain the agent keeps (root rotation, FORMAT.md §4).
//!
//! The agent reports at every check-in the newest trust root version it knows; a server that
//! holds a newer chain answers with it. The agent verifies the chain from its provisioned root
//! (`device.trust_root`), starting at the root the bootloader has adopted (its protected root
//! floor), one version at a time (steps R1–R3), and stages it in the state directory
//! (`root-chain.sgl`, written atomically). From then on it refuses offered bundles signed under
//! an older root than the chain's newest (a stale mirror, a freeze attempt) before requesting
//! their install; the bootloader itself walks the chain each bundle carries, from the root it
//! adopted.

use std::path::{Path, PathBuf};

use sigil_manifests::{verify_root_chain, RootFloor, TrustRoot};

use crate::state::{write_atomic, StateError};

/// File name of the staged chain in the state directory.
pub const CHAIN_FILE: &str = "root-chain.sgl";

/// Why a chain from the server was not staged.
#[derive(Debug, thiserror::Error)]
pub enum RootChainError {
    /// Not hex.
    #[error("the server's root chain is not hex")]
    NotHex,
    /// Does not verify from the provisioned root and the device's adopted root.
    #[error("the server's root chain does not verify: {0}")]
    Invalid(sigil_manifests::Error),
    /// Writing it failed.
    #[error(transparent)]
    State(#[from] StateError),
}

/// The staged chain and the newest root it reaches.
#[derive(Debug, Clone)]
pub struct StagedChain {
    path: PathBuf,
    newest: Option<TrustRoot>,
}

impl StagedChain {
    /// The chain staged in `state_dir` (verified again from `root` and `floor`); a file that
    /// no longer verifies is logged and ignored (the server sends the chain again).
    pub fn load(state_dir: &Path, root: &TrustRoot, floor: Option<RootFloor>) -> Self {
        let path = state_dir.join(CHAIN_FILE);
        let newest = match std::fs::read(&path) {
            Ok(bytes) => match verify_root_chain(root, floor, &bytes) {
                Ok((newest, _)) => Some(newest),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "staged root chain does not verify: ignored");
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "staged root chain unreadable: ignored");
                None
            }
        };
        StagedChain { path, newest }
    }

    /// The newest root version known: the staged chain's, or else `fallback` (the root the
    /// bootloader adopted, or the provisioned root).
    pub fn root_version(&self, fallback: u32) -> u32 {
        self.newest
            .as_ref()
            .map_or(fallback, |r| r.root_version.max(fallback))
    }

    /// Verifies the chain the server sent (hex) and stages it if it reaches a newer root than
    /// the one staged; the newest root version it reaches.
    pub fn take(
        &mut self,
        hex_chain: &str,
        root: &TrustRoot,
        floor: Option<RootFloor>,
    ) -> Result<u32, RootChainError> {
        let bytes = hex::decode(hex_chain).map_err(|_| RootChainError::NotHex)?;
        let (newest, _) =
            verify_root_chain(root, floor, &bytes).map_err(RootChainError::Invalid)?;
        let version = newest.root_version;
        if self
            .newest
            .as_ref()
            .is_none_or(|n| n.root_version < version)
        {
            write_atomic(&self.path, &bytes)?;
            tracing::info!(root_version = version, "root chain staged");
            self.newest = Some(newest);
        }
        Ok(version)
    }
}
