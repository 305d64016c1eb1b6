//! The desktop crate's error type: one variant per way reaching or installing a tethered
//! device fails, each with its status code (docs/status-codes.md).

use dm_shared::StatusCode;

/// Everything that can stop `dmtether` for one device or for the desktop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Files, trust, bundles, settings: from the shared library.
    #[error(transparent)]
    Shared(#[from] dm_shared::Error),

    /// The device's host key is not in the desktop's known hosts: nothing was sent to it.
    #[error(
        "{target}: its SSH host key is not trusted by this desktop; nothing was copied (add it with `dmtether trust --device {target} --host-key KEY` once you have checked it)"
    )]
    HostKeyUnknown {
        /// The device.
        target: String,
    },

    /// The device presents another host key than the one trusted: nothing was sent to it.
    #[error(
        "{target}: its SSH host key has CHANGED since it was trusted; nothing was copied (another machine may be answering in its place; if the device was re-imaged, replace the key with `dmtether trust --replace`)"
    )]
    HostKeyChanged {
        /// The device.
        target: String,
    },

    /// The device refused the desktop's key.
    #[error(
        "{target}: the device refused this desktop's SSH key; add the output of `dmtether key` to the device's authorized_keys"
    )]
    AuthFailed {
        /// The device.
        target: String,
    },

    /// SSH could not connect, or the connection was cut or timed out.
    #[error("{target}: {reason}")]
    Connection {
        /// The device.
        target: String,
        /// What SSH said.
        reason: String,
    },

    /// A command on the device failed.
    #[error("{target}: {what} failed: {reason}")]
    Remote {
        /// The device.
        target: String,
        /// What was being done.
        what: String,
        /// Why.
        reason: String,
    },

    /// There is nothing to install: no bundle staged, or not a client deployment.
    #[error("{0}")]
    NoBundle(String),

    /// The bundle has no programs for the device's platform.
    #[error("{target}: the client deployment has no programs for its platform {platform}")]
    Platform {
        /// The device.
        target: String,
        /// Its platform (or its `uname -m`).
        platform: String,
    },

    /// A bad command line or setting.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The status code (and through it, the exit code).
    pub fn code(&self) -> StatusCode {
        match self {
            Error::Shared(e) => e.code(),
            Error::HostKeyUnknown { .. } => StatusCode::DM_E_HOST_KEY_UNKNOWN,
            Error::HostKeyChanged { .. } => StatusCode::DM_E_HOST_KEY_CHANGED,
            Error::Connection { .. } | Error::AuthFailed { .. } => {
                StatusCode::DM_E_TETHER_CONNECTION
            }
            Error::Remote { .. } => StatusCode::ERROR_INSTALL_FAILURE,
            Error::NoBundle(_) => StatusCode::ERROR_FILE_NOT_FOUND,
            Error::Platform { .. } => StatusCode::ERROR_INSTALL_PLATFORM_UNSUPPORTED,
            Error::Usage(_) => StatusCode::E_INVALIDARG,
        }
    }
}

/// The crate's result.
pub type Result<T> = std::result::Result<T, Error>;
