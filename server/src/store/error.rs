//! The store's typed error, shared by every backend.

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such record.
    #[error("{what} {id} not found")]
    NotFound {
        /// Kind of record.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The change conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The request is inconsistent with stored data.
    #[error("{0}")]
    Invalid(String),
    /// The database cannot be reached right now (connection refused or lost, restarting):
    /// the request may succeed when retried. The API answers 503.
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    /// The backend failed.
    #[error("storage backend: {0}")]
    Backend(String),
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Backend(format!("stored JSON: {e}"))
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;
