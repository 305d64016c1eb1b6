//! The client crate's error type: setup, the agent and enrollment.

use std::path::PathBuf;

use dm_shared::{ClientVersion, StatusCode};

/// Everything that can stop setup or the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Files, trust, manifests, settings: from the shared library.
    #[error(transparent)]
    Shared(#[from] dm_shared::Error),

    /// Another setup (or agent) holds the lock.
    #[error("{what} is already running (lock {}); wait for it to finish", lock.display())]
    AlreadyRunning {
        /// Which program.
        what: &'static str,
        /// The lock file.
        lock: PathBuf,
    },

    /// The folder's publisher is not in the device's privileged store.
    #[error(
        "publisher {subject} (thumbprint {thumbprint}) is not in the device's privileged store; run dminstaller from the deployment folder instead of setup"
    )]
    NotPrivileged {
        /// The publisher.
        subject: String,
        /// Its thumbprint.
        thumbprint: String,
    },

    /// `--settings` names a file that is not part of the signed folder.
    #[error("{}: settings must be a signed file of the deployment folder", path.display())]
    UnsignedSettings {
        /// The file.
        path: PathBuf,
    },

    /// The settings do not make a working client.
    #[error("{0}")]
    BadSettings(String),

    /// Starting or stopping the agent failed.
    #[error("cannot {action} the agent: {reason}")]
    Service {
        /// `start` or `stop`.
        action: &'static str,
        /// Why.
        reason: String,
    },

    /// The new agent did not report healthy; the change was rolled back.
    #[error("the agent {version} did not become healthy: {why}; see the DMSvc log")]
    Unhealthy {
        /// The version that failed to start.
        version: ClientVersion,
        /// What happened: it exited, was refused, or did not report in time.
        why: String,
    },

    /// The operation failed and the device was returned to its previous state.
    #[error("{cause}; the change was rolled back and the device is as it was")]
    RolledBack {
        /// What failed.
        cause: Box<Error>,
    },

    /// Certificate enrollment failed.
    #[error("certificate enrollment failed: {reason}")]
    Enrollment {
        /// The enrollment program's status.
        code: StatusCode,
        /// Why.
        reason: String,
    },

    /// A server could not be reached, or the connection failed or timed out.
    #[error("{url}: {reason}")]
    Network {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
        /// Whether a deadline passed.
        timeout: bool,
    },

    /// A server answered with an error status.
    #[error("{url}: HTTP {status}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Http {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// `Retry-After`, when sent.
        retry_after: Option<std::time::Duration>,
        /// The server's message.
        message: String,
    },

    /// A server tried to use plain HTTP.
    #[error("{url}: {reason}; plain HTTP is never used")]
    Insecure {
        /// The URL.
        url: String,
        /// What happened.
        reason: String,
    },

    /// The software update scan could not read the catalog or dpkg's status database.
    #[error("software update scan: {file}: {reason}")]
    UpdateScan {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },

    /// apt or dpkg could not install an update (or dpkg's lock stayed held).
    #[error("update {package}: {reason}")]
    UpdateInstall {
        /// `package version`.
        package: String,
        /// apt's or dpkg's own words.
        reason: String,
        /// dpkg's lock stayed held by another program past the deadline.
        locked: bool,
    },

    /// A server's answer could not be understood.
    #[error("{url}: malformed answer: {reason}")]
    Malformed {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },

    /// A server's answer is larger than allowed.
    #[error("{url}: the answer is larger than the {limit} bytes allowed")]
    TooLarge {
        /// The URL.
        url: String,
        /// The cap.
        limit: u64,
    },

    /// The agent was asked to stop.
    #[error("stopping")]
    Stopped,

    /// The installed client is damaged.
    #[error("the installed client is damaged ({problems}); run dmclientsetup --repair")]
    Damaged {
        /// What is wrong, for the log.
        problems: String,
    },
}

impl Error {
    /// The status code that reports this error.
    pub fn code(&self) -> StatusCode {
        match self {
            Error::Shared(e) => e.code(),
            Error::AlreadyRunning { .. } => StatusCode::ERROR_ALREADY_RUNNING,
            Error::NotPrivileged { .. } => StatusCode::DM_E_PUBLISHER_NOT_TRUSTED,
            Error::UnsignedSettings { .. } => StatusCode::DM_E_UNEXPECTED_FILE,
            Error::BadSettings(_) => StatusCode::ERROR_BAD_CONFIGURATION,
            Error::Service { .. } => StatusCode::DM_E_CHILD_FAILED,
            Error::Unhealthy { .. } => StatusCode::ERROR_INSTALL_FAILURE,
            Error::RolledBack { cause } => cause.code(),
            Error::Enrollment { code, .. } => *code,
            Error::Damaged { .. } => StatusCode::DM_E_CLIENT_DAMAGED,
            Error::Network { timeout: true, .. } => StatusCode::ERROR_TIMEOUT,
            Error::Network { .. } => StatusCode::DM_E_NETWORK,
            Error::Http { .. } => StatusCode::DM_E_HTTP,
            Error::Insecure { .. } => StatusCode::DM_E_INSECURE,
            Error::Malformed { .. } => StatusCode::ERROR_INVALID_DATA,
            Error::UpdateScan { .. } => StatusCode::DM_E_UPDATE_SCAN,
            Error::UpdateInstall { locked: true, .. } => StatusCode::DM_E_DPKG_LOCKED,
            Error::UpdateInstall { .. } => StatusCode::DM_E_UPDATE_INSTALL,
            Error::TooLarge { .. } => StatusCode::ERROR_FILE_TOO_LARGE,
            Error::Stopped => StatusCode::ERROR_CANCELLED,
        }
    }
}

/// Results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
