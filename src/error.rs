//! One error type for the engine. Every message names the object and, where
//! there is one, the remedy; the CLI prints it as is.

use std::io;

/// What went wrong, by kind, so frontends can map kinds to their protocol's
/// codes (CNI error codes, exit statuses) without parsing text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's input is malformed or contradictory; nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// A named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with existing state (a name, address or port taken).
    #[error("{0}")]
    Conflict(String),
    /// The object is in use and cannot be removed as asked.
    #[error("{0}")]
    InUse(String),
    /// An interface of the requested name already exists where it would go.
    #[error("{0}")]
    InterfaceExists(String),
    /// A resource pool ran out (addresses, subnets, ports).
    #[error("{0}")]
    Exhausted(String),
    /// The kernel refused an operation.
    #[error("{what}: {source}")]
    Kernel {
        what: String,
        #[source]
        source: io::Error,
    },
    /// nftables refused a change.
    #[error("firewall: {0}")]
    Firewall(String),
    /// The embedded store failed.
    #[error("store: {0}")]
    Store(String),
    /// The cluster store (etcd) failed or refused.
    #[error("cluster: {0}")]
    Cluster(String),
}

impl Error {
    pub fn kernel(what: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Kernel {
            what: what.into(),
            source: source.into(),
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Store(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Store(format!("corrupt record: {e}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
