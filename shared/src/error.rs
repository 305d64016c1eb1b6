//! The shared library's one error type.
//!
//! Every variant names the file, key or certificate involved, and maps to exactly one
//! [`StatusCode`] (and through it to a process exit code). Each kind of attack on a
//! deployment folder or package (bad signature, untrusted root, expired certificate, wrong key
//! usage, hash mismatch, unexpected file, unsafe path) has its own variant.

use std::io;
use std::path::PathBuf;

use crate::ini::SettingsError;
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

    /// The folder or package has no manifest, signature or publisher certificate.
    #[error("{} is not signed: {what} is missing", dir.display())]
    NotSigned {
        /// The folder.
        dir: PathBuf,
        /// The missing piece (`manifest.json`, `manifest.sig` or `publisher.pem`).
        what: &'static str,
    },

    /// The manifest's signature does not verify with the publisher's key: the manifest (or
    /// the signature) was changed after signing.
    #[error("{}: the signature does not match the manifest (signed by {publisher}); the manifest or its signature was altered", path.display())]
    BadSignature {
        /// The manifest.
        path: PathBuf,
        /// The publisher certificate's subject.
        publisher: String,
    },

    /// The publisher's certificate does not chain to a root in the device's `root` store.
    #[error(
        "publisher {subject} (issued by {issuer}, thumbprint {thumbprint}) does not chain to a root certificate this device trusts; add its root to the device's root store or re-sign with a trusted publisher"
    )]
    UntrustedPublisher {
        /// The publisher certificate's subject.
        subject: String,
        /// Its issuer.
        issuer: String,
        /// Its SHA-256 thumbprint.
        thumbprint: String,
    },

    /// A certificate in the chain is expired or not yet valid.
    #[error(
        "certificate {subject} is valid from {not_before} to {not_after}, and now is {now}; renew the certificate or check the device clock"
    )]
    CertificateExpired {
        /// The certificate's subject.
        subject: String,
        /// Start of validity (RFC 3339).
        not_before: String,
        /// End of validity (RFC 3339).
        not_after: String,
        /// The device's time (RFC 3339).
        now: String,
    },

    /// The publisher's certificate is not for code signing.
    #[error(
        "certificate {subject} is not valid for code signing (no codeSigning extended key usage); sign with a code-signing certificate"
    )]
    WrongUsage {
        /// The certificate's subject.
        subject: String,
    },

    /// A certificate could not be parsed or a chain could not be built.
    #[error("{}: bad certificate: {reason}", path.display())]
    BadCertificate {
        /// Where it came from.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The manifest is truncated or malformed.
    #[error("{}: the manifest is malformed or truncated: {reason}", path.display())]
    MalformedManifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A file's size or SHA-256 differs from what the signed manifest (or a server) says.
    #[error("{}: {what} is {actual} but {by} says {expected}; the file was altered or damaged in transit", path.display())]
    HashMismatch {
        /// The file.
        path: PathBuf,
        /// `size` or `SHA-256`.
        what: &'static str,
        /// Who says what it must be: `the signed manifest`, or the server that offered it.
        by: &'static str,
        /// The manifest's value.
        expected: String,
        /// The file's value.
        actual: String,
    },

    /// A file listed in the signed manifest is missing.
    #[error("{}: listed in the signed manifest but missing", path.display())]
    MissingFile {
        /// The file.
        path: PathBuf,
    },

    /// Something other than a regular file (a folder, a FIFO, a device) is where a file must
    /// be read: a settings file, an outbox entry, a package's file.
    #[error("{}: {kind}; a regular file is expected here", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What is there instead.
        kind: &'static str,
    },

    /// A file that is not in the signed manifest is present.
    #[error("{}: {kind} that is not in the signed manifest; remove it or re-sign the folder", path.display())]
    UnexpectedFile {
        /// The file.
        path: PathBuf,
        /// `an executable`, `a settings file` or `a file`.
        kind: &'static str,
    },

    /// A path would escape its folder (absolute, `..`, a symlink).
    #[error("unsafe path {path:?}: {reason}")]
    UnsafePath {
        /// The path as given.
        path: String,
        /// Why it is refused.
        reason: String,
    },

    /// The publisher is trusted by the root store but is not in the software-publisher store.
    #[error(
        "publisher {subject} (thumbprint {thumbprint}) is not in the device's spc store; install the client deployment signed by this publisher first"
    )]
    PublisherNotInSpc {
        /// The publisher's subject.
        subject: String,
        /// Its thumbprint.
        thumbprint: String,
    },

    /// The folder or package has nothing for this device's platform.
    #[error("this device is {platform}, but the folder only has binaries for {available}")]
    PlatformUnsupported {
        /// This device's platform.
        platform: String,
        /// What the folder has.
        available: String,
    },

    /// The device refuses privileged changes: locked by its security policy.
    #[error("the device is locked: {reason}")]
    Locked {
        /// Why (the policy file and its stated reason).
        reason: String,
    },

    /// A certificate of the chain is on its issuer's certificate revocation list.
    #[error(
        "certificate {subject} (serial {serial}) is revoked by its issuer ({crl}); nothing it signed is trusted"
    )]
    Revoked {
        /// The revoked certificate's subject.
        subject: String,
        /// Its serial number, hex.
        serial: String,
        /// The revocation list that says so.
        crl: String,
    },

    /// A certificate of the chain, or the root it chains to, is in the device's disallowed
    /// store.
    #[error(
        "certificate {subject} (thumbprint {thumbprint}) is in the device's disallowed store; nothing it signed is trusted"
    )]
    Distrusted {
        /// The certificate's subject.
        subject: String,
        /// Its thumbprint.
        thumbprint: String,
    },

    /// A certificate revocation list cannot be used.
    #[error("{}: the certificate revocation list cannot be used: {reason}", path.display())]
    CrlUnusable {
        /// The list's file.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// A certificate revocation list that no CA the device trusts signed (forged, or of a CA
    /// the device does not know): not stored, and nothing stored is removed for it.
    #[error(
        "{}: the revocation list of {issuer} is not signed by a CA the device trusts; it was not stored and changes nothing",
        path.display()
    )]
    CrlUntrusted {
        /// Where the list came from.
        path: PathBuf,
        /// The CA it names as its issuer.
        issuer: String,
    },

    /// A package signed with a manifest format that does not sign its programs.
    #[error(
        "{}: the manifest is format {format}, which does not sign the package's programs; re-sign the package with a current dmpack",
        path.display()
    )]
    ManifestTooOld {
        /// The manifest.
        path: PathBuf,
        /// Its format.
        format: String,
    },

    /// A bundle entry is a symbolic or hard link.
    #[error("{}: entry {entry:?} is a link; a bundle holds only files", bundle.display())]
    BundleLink {
        /// The bundle.
        bundle: PathBuf,
        /// The entry.
        entry: String,
    },

    /// A bundle entry is a device file, a FIFO or another special entry.
    #[error("{}: entry {entry:?} is a {kind}; a bundle holds only files", bundle.display())]
    BundleSpecialFile {
        /// The bundle.
        bundle: PathBuf,
        /// The entry.
        entry: String,
        /// What it is.
        kind: String,
    },

    /// A bundle holds the same path twice.
    #[error("{}: entry {entry:?} appears twice", bundle.display())]
    BundleDuplicate {
        /// The bundle.
        bundle: PathBuf,
        /// The entry.
        entry: String,
    },

    /// A bundle entry is larger than it may be.
    #[error("{}: entry {entry:?} is {size} bytes; at most {limit} are allowed", bundle.display())]
    BundleOversized {
        /// The bundle.
        bundle: PathBuf,
        /// The entry.
        entry: String,
        /// Its size.
        size: u64,
        /// The cap (the signed size, or a signature file's cap).
        limit: u64,
    },

    /// A bundle holds more entries than a manifest may list.
    #[error("{}: more than {limit} entries", bundle.display())]
    BundleTooMany {
        /// The bundle.
        bundle: PathBuf,
        /// The cap.
        limit: usize,
    },

    /// A bundle ends early, or is not a bundle.
    #[error("{}: the bundle is truncated or is not a bundle: {reason}", bundle.display())]
    BundleTruncated {
        /// The bundle.
        bundle: PathBuf,
        /// What went wrong.
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
            Error::NotSigned { .. } => StatusCode::TRUST_E_NOSIGNATURE,
            Error::BadSignature { .. } => StatusCode::TRUST_E_BAD_DIGEST,
            Error::UntrustedPublisher { .. } => StatusCode::CERT_E_UNTRUSTEDROOT,
            Error::CertificateExpired { .. } => StatusCode::CERT_E_EXPIRED,
            Error::WrongUsage { .. } => StatusCode::CERT_E_WRONG_USAGE,
            Error::BadCertificate { .. } => StatusCode::CERT_E_CHAINING,
            Error::MalformedManifest { .. } => StatusCode::TRUST_E_SUBJECT_FORM_UNKNOWN,
            Error::HashMismatch { .. } => StatusCode::CRYPT_E_HASH_VALUE,
            Error::MissingFile { .. } => StatusCode::DM_E_MISSING_FILE,
            Error::UnexpectedFile { .. } => StatusCode::DM_E_UNEXPECTED_FILE,
            Error::NotAFile { .. } => StatusCode::DM_E_NOT_A_FILE,
            Error::UnsafePath { .. } => StatusCode::DM_E_UNSAFE_PATH,
            Error::PublisherNotInSpc { .. } => StatusCode::DM_E_PUBLISHER_NOT_TRUSTED,
            Error::PlatformUnsupported { .. } => StatusCode::ERROR_INSTALL_PLATFORM_UNSUPPORTED,
            Error::Locked { .. } => StatusCode::E_ACCESSDENIED,
            Error::Revoked { .. } => StatusCode::CERT_E_REVOKED,
            Error::Distrusted { .. } => StatusCode::TRUST_E_EXPLICIT_DISTRUST,
            Error::CrlUnusable { .. } => StatusCode::CRYPT_E_NO_REVOCATION_CHECK,
            Error::CrlUntrusted { .. } => StatusCode::DM_E_CRL_UNTRUSTED,
            Error::ManifestTooOld { .. } => StatusCode::DM_E_MANIFEST_TOO_OLD,
            Error::BundleLink { .. } => StatusCode::DM_E_BUNDLE_LINK,
            Error::BundleSpecialFile { .. } => StatusCode::DM_E_BUNDLE_SPECIAL_FILE,
            Error::BundleDuplicate { .. } => StatusCode::DM_E_BUNDLE_DUPLICATE,
            Error::BundleOversized { .. } => StatusCode::DM_E_BUNDLE_OVERSIZED,
            Error::BundleTooMany { .. } => StatusCode::DM_E_BUNDLE_TOO_MANY,
            Error::BundleTruncated { .. } => StatusCode::DM_E_BUNDLE_TRUNCATED,
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
