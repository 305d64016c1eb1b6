//! The management point crate's error type. Each variant keeps the error it came from (as its
//! `source`), so a log line or an admin's terminal shows the whole chain.

use std::path::PathBuf;

use dm_shared::StatusCode;

/// Everything that can go wrong in `dmmp` and `dmpack`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from the shared library (files, trust, manifests, settings).
    #[error(transparent)]
    Shared(#[from] dm_shared::Error),

    /// A program's command does not name an executable file of the package.
    #[error("program {program}: {reason}")]
    ProgramCommand {
        /// The program's name.
        program: String,
        /// What is wrong and what to write instead.
        reason: String,
    },

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
    #[error("cannot issue {what}: {reason}")]
    Pki {
        /// The certificate being made.
        what: String,
        /// Why (from the demo PKI).
        reason: String,
    },

    /// The database failed.
    #[error("database: {what}: {source}")]
    Database {
        /// What was being done.
        what: String,
        /// The driver's error.
        #[source]
        source: rusqlite::Error,
    },

    /// The PostgreSQL store failed: the server refused, the connection was lost, or no answer
    /// came within the deadline.
    #[error("database: {what}: {reason}")]
    Postgres {
        /// What was being done.
        what: String,
        /// Why, with the SQLSTATE when the server said.
        reason: String,
    },

    /// A stored row does not hold what the schema promises (written by a newer `dmmp`, or
    /// edited by hand): named, never replaced by a default.
    #[error("database: {table} row {row}: {reason}")]
    CorruptRow {
        /// The table.
        table: &'static str,
        /// The row's key.
        row: String,
        /// What is wrong.
        reason: String,
    },

    /// Something with that name or key already exists, or is still in use.
    #[error("{0}")]
    Conflict(String),

    /// Nothing with that id or name.
    #[error("{0} not found")]
    NotFound(String),

    /// The action is over: no more feedback is taken.
    #[error("{0}")]
    Gone(String),

    /// A device answered a cancellation that is not pending.
    #[error("{0}")]
    NotCanceling(String),

    /// A request is malformed.
    #[error("{0}")]
    BadRequest(String),

    /// A device may not register itself now (too many in the last minute): it may try later.
    #[error("{0}")]
    Throttled(String),

    /// A device may not register itself at all (the server holds its most devices).
    #[error("{0}")]
    Refused(String),

    /// A device's credentials do not match its registration.
    #[error("{0}")]
    Unauthorized(String),

    /// The management API refused or failed an operation `dmmp --server` sent.
    #[error("{server}: HTTP {status}: {message}")]
    Api {
        /// The server.
        server: String,
        /// The HTTP status.
        status: u16,
        /// The status code it named.
        code: StatusCode,
        /// What it said.
        message: String,
    },

    /// A repository's release file does not verify against the keyring named.
    #[error("{file}: the signature does not verify against {keyring}: {reason}")]
    ReleaseSignature {
        /// The release file.
        file: String,
        /// The keyring.
        keyring: PathBuf,
        /// What gpgv said.
        reason: String,
    },

    /// A repository's release file is expired, or older than the one imported before.
    #[error("{file}: {reason}")]
    ReleaseStale {
        /// The release file.
        file: String,
        /// Which date and why.
        reason: String,
    },

    /// A repository file differs from what the signed release file (or index) says of it.
    #[error("{file}: {reason}")]
    RepositoryHash {
        /// The file.
        file: String,
        /// What differs.
        reason: String,
    },

    /// The configuration file is wrong.
    #[error("{}: {reason}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The system's random number generator failed: no token, salt or session id is made
    /// (one of zeros would be the same for every failed call).
    #[error("the system's random number generator failed while making {0}")]
    NoRandomness(String),

    /// TLS set-up failed.
    #[error("TLS: {what}: {source}")]
    Tls {
        /// What was being set up (a file, the listener).
        what: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// A TLS set-up error about `what`.
    pub fn tls(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::Tls { what: what.into(), source: source.into() }
    }

    /// The status code reporting this error.
    pub fn code(&self) -> StatusCode {
        match self {
            Error::Shared(e) => e.code(),
            Error::Usage(_) => StatusCode::E_INVALIDARG,
            Error::ProgramCommand { .. } => StatusCode::DM_E_PROGRAM_COMMAND,
            Error::OutputExists { .. } => StatusCode::ERROR_WRITE_FAULT,
            Error::Pki { .. }
            | Error::Database { .. }
            | Error::Postgres { .. }
            | Error::Tls { .. }
            | Error::NoRandomness(_) => StatusCode::E_FAIL,
            Error::CorruptRow { .. } => StatusCode::ERROR_INVALID_DATA,
            Error::Conflict(_) => StatusCode::ERROR_ALREADY_EXISTS,
            Error::NotFound(_) => StatusCode::ERROR_FILE_NOT_FOUND,
            Error::Gone(_) | Error::NotCanceling(_) | Error::BadRequest(_) => {
                StatusCode::ERROR_INVALID_DATA
            }
            Error::Throttled(_) | Error::Refused(_) | Error::Unauthorized(_) => {
                StatusCode::E_ACCESSDENIED
            }
            Error::Config { .. } => StatusCode::ERROR_BAD_CONFIGURATION,
            Error::ReleaseSignature { .. } => StatusCode::DM_E_RELEASE_SIGNATURE,
            Error::RepositoryHash { .. } => StatusCode::DM_E_REPOSITORY_HASH,
            Error::ReleaseStale { .. } => StatusCode::DM_E_RELEASE_STALE,
            Error::Api { code, .. } => *code,
        }
    }
}

/// Results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn sources_are_kept_and_conflicts_have_their_own_code() {
        let e =
            Error::Database { what: "open dmmp.db".into(), source: rusqlite::Error::InvalidQuery };
        assert!(e.source().is_some());
        assert!(e.to_string().starts_with("database: open dmmp.db: "), "{e}");
        assert_eq!(Error::Conflict("x".into()).code(), StatusCode::ERROR_ALREADY_EXISTS);
        assert_ne!(StatusCode::ERROR_ALREADY_EXISTS, StatusCode::ERROR_ALREADY_RUNNING);
        let t = Error::tls("server.pem", std::io::Error::other("bad"));
        assert_eq!(t.to_string(), "TLS: server.pem: bad");
    }
}
