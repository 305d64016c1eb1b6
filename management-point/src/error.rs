//! The management point crate's error type.

use std::path::PathBuf;

use dm_shared::StatusCode;

/// Everything that can go wrong in `dmmp` and `dmpack`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from the shared library (files, trust, manifests, settings).
    #[error(transparent)]
    Shared(#[from] dm_shared::Error),

    /// A command-line argument is wrong.
    #[error("{0}")]
    Usage(String),

    /// The output folder exists and is not empty.
    #[error("{} exists and is not empty; choose a new folder or remove it", path.display())]
    OutputExists {
        /// The folder.
        path: PathBuf,
    },

    /// Certificate generation failed.
    #[error("{0}")]
    Pki(String),

    /// The database failed.
    #[error("database: {0}")]
    Database(String),

    /// Something with that name or key already exists, or is still in use.
    #[error("{0}")]
    Conflict(String),

    /// Nothing with that id or name.
    #[error("{0} not found")]
    NotFound(String),

    /// The action is over: no more feedback is taken.
    #[error("{0}")]
    Gone(String),

    /// A request is malformed.
    #[error("{0}")]
    BadRequest(String),

    /// The configuration file is wrong.
    #[error("{}: {reason}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// TLS set-up failed.
    #[error("TLS: {0}")]
    Tls(String),
}

impl Error {
    /// The status code reporting this error.
    pub fn code(&self) -> StatusCode {
        match self {
            Error::Shared(e) => e.code(),
            Error::Usage(_) => StatusCode::E_INVALIDARG,
            Error::OutputExists { .. } => StatusCode::ERROR_WRITE_FAULT,
            Error::Pki(_) | Error::Database(_) | Error::Tls(_) => StatusCode::E_FAIL,
            Error::Conflict(_) => StatusCode::ERROR_ALREADY_RUNNING,
            Error::NotFound(_) => StatusCode::ERROR_FILE_NOT_FOUND,
            Error::Gone(_) | Error::BadRequest(_) => StatusCode::ERROR_INVALID_DATA,
            Error::Config { .. } => StatusCode::ERROR_BAD_CONFIGURATION,
        }
    }
}

/// Results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
