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
}

impl Error {
    /// The status code reporting this error.
    pub fn code(&self) -> StatusCode {
        match self {
            Error::Shared(e) => e.code(),
            Error::Usage(_) => StatusCode::E_INVALIDARG,
            Error::OutputExists { .. } => StatusCode::ERROR_WRITE_FAULT,
            Error::Pki(_) => StatusCode::E_FAIL,
        }
    }
}

/// Results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
