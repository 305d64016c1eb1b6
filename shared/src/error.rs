//! The shared library's one error type.
//!
//! Every variant names the file, key or certificate involved, and maps to exactly one
//! [`StatusCode`] (and through it to a process exit code). Each kind of attack on a
//! deployment folder or package (bad signature, untrusted root, expired certificate, wrong key
//! usage, hash mismatch, unexpected file, unsafe path) has its own variant.

use std::io;
use std::path::PathBuf;

use crate::settings::SettingsError;
use crate::status::StatusCode;
use crate::version::VersionError;

/// Shorthand for results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the shared library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file system operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done ("write", "rename into place", …).
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// A file is larger than its cap.
    #[error("{} is {actual} bytes; the limit for this file is {limit} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap.
        limit: u64,
        /// Its size (or the bytes read before giving up).
        actual: u64,
    },

    /// A settings file is malformed or has a bad value.
    #[error(transparent)]
    Settings(#[from] SettingsError),

    /// A version string is malformed.
    #[error(transparent)]
    Version(#[from] VersionError),

    /// Structured data (JSON state, a record) is malformed.
    #[error("{} is malformed: {reason}", path.display())]
    InvalidData {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A failpoint asked this step to fail (debug builds only, for crash tests).
    #[error("failpoint {name} injected a failure")]
    Injected {
        /// The failpoint.
        name: String,
    },
}

/// Whether an I/O error means the system refused the change (as a locked device does).
pub fn is_refusal(e: &io::Error) -> bool {
    const EROFS: i32 = 30;
    matches!(e.kind(), io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem)
        || e.raw_os_error() == Some(EROFS)
}

/// Whether an I/O error means the disk (or quota) is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    e.kind() == io::ErrorKind::StorageFull || matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
}

impl Error {
    /// The status code that reports this error.
    pub fn code(&self) -> StatusCode {
        match self {
            Error::Io { source, op, .. } => {
                if is_refusal(source) {
                    StatusCode::E_ACCESSDENIED
                } else if is_disk_full(source) {
                    StatusCode::ERROR_DISK_FULL
                } else if source.kind() == io::ErrorKind::NotFound {
                    StatusCode::ERROR_FILE_NOT_FOUND
                } else if matches!(*op, "read" | "open" | "inspect") {
                    StatusCode::ERROR_READ_FAULT
                } else {
                    StatusCode::ERROR_WRITE_FAULT
                }
            }
            Error::TooLarge { .. } => StatusCode::ERROR_FILE_TOO_LARGE,
            Error::Settings(_) => StatusCode::ERROR_BAD_CONFIGURATION,
            Error::Version(_) | Error::InvalidData { .. } => StatusCode::ERROR_INVALID_DATA,
            Error::Injected { .. } => StatusCode::E_FAIL,
        }
    }

    /// Whether the device refused a change (locked by policy, or the file system refused).
    pub fn is_refusal(&self) -> bool {
        self.code() == StatusCode::E_ACCESSDENIED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: io::ErrorKind) -> Error {
        Error::Io { op: "write", path: "/x".into(), source: io::Error::from(kind) }
    }

    #[test]
    fn io_errors_map_to_codes() {
        assert_eq!(io(io::ErrorKind::PermissionDenied).code(), StatusCode::E_ACCESSDENIED);
        assert_eq!(io(io::ErrorKind::ReadOnlyFilesystem).code(), StatusCode::E_ACCESSDENIED);
        assert_eq!(
            Error::Io { op: "write", path: "/x".into(), source: io::Error::from_raw_os_error(30) }
                .code(),
            StatusCode::E_ACCESSDENIED
        );
        assert_eq!(
            Error::Io { op: "write", path: "/x".into(), source: io::Error::from_raw_os_error(28) }
                .code(),
            StatusCode::ERROR_DISK_FULL
        );
        assert_eq!(io(io::ErrorKind::NotFound).code(), StatusCode::ERROR_FILE_NOT_FOUND);
        assert_eq!(io(io::ErrorKind::Other).code(), StatusCode::ERROR_WRITE_FAULT);
        assert!(io(io::ErrorKind::PermissionDenied).is_refusal());
    }

    #[test]
    fn messages_name_the_path() {
        let e = io(io::ErrorKind::PermissionDenied);
        assert!(e.to_string().starts_with("cannot write /x: "), "{e}");
    }
}
