//! HRESULT-style status codes used across the project, their text, and process exit codes.
//!
//! Every failure a dm program can report has one code here. The code travels in log lines
//! (`Access Denied (0x80070005)`), in status messages to the management point, and maps to a
//! distinct process exit code so scripts can tell failures apart without parsing logs.
//! Win32 and trust codes keep their well-known values; project-specific codes use
//! facility ITF (`0x8004_02xx`).

use std::fmt;

/// An HRESULT-style status code: bit 31 set means failure.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusCode(pub u32);

struct Entry {
    code: StatusCode,
    name: &'static str,
    text: &'static str,
    exit: u8,
}

macro_rules! codes {
    ($( $(#[$doc:meta])* $konst:ident = $value:literal, $exit:literal, $text:literal; )*) => {
        impl StatusCode {
            $( $(#[$doc])* pub const $konst: StatusCode = StatusCode($value); )*
        }
        const TABLE: &[Entry] = &[
            $( Entry { code: StatusCode($value), name: stringify!($konst), text: $text, exit: $exit }, )*
        ];
    };
}

codes! {
    /// The operation completed successfully.
    S_OK = 0x0000_0000, 0, "The operation completed successfully";
    /// Nothing needed doing (for example a newer client is already installed).
    S_FALSE = 0x0000_0001, 0, "No action was needed";
    /// A failure with no more specific code.
    E_FAIL = 0x8000_4005, 1, "Unspecified error";
    /// Bad command line.
    E_INVALIDARG = 0x8007_0057, 2, "The parameter is incorrect";
    /// The device refused a privileged change: locked by policy or a read-only file system.
    E_ACCESSDENIED = 0x8007_0005, 5, "Access Denied";
    /// A required file does not exist.
    ERROR_FILE_NOT_FOUND = 0x8007_0002, 10, "The system cannot find the file specified";
    /// A settings file has a bad value, bad syntax or cannot be read as text.
    ERROR_BAD_CONFIGURATION = 0x8007_064A, 11, "The configuration data is invalid";
    /// Data read from a file or the network is malformed.
    ERROR_INVALID_DATA = 0x8007_000D, 12, "The data is invalid";
    /// The disk is full.
    ERROR_DISK_FULL = 0x8007_0070, 13, "There is not enough space on the disk";
    /// Writing a file failed.
    ERROR_WRITE_FAULT = 0x8007_001D, 14, "The system cannot write to the specified device";
    /// Reading a file failed.
    ERROR_READ_FAULT = 0x8007_001E, 15, "The system cannot read from the specified device";
    /// A file or body is larger than the limit allowed for it.
    ERROR_FILE_TOO_LARGE = 0x8007_00DF, 16, "The file size exceeds the limit allowed";
    /// A deadline passed.
    ERROR_TIMEOUT = 0x8007_05B4, 17, "This operation returned because the timeout period expired";
    /// The package has no binaries for this device's platform.
    ERROR_INSTALL_PLATFORM_UNSUPPORTED = 0x8007_0661, 20, "This installation package is not supported by this processor type";
    /// A newer version is installed and versions never go backwards.
    ERROR_PRODUCT_VERSION = 0x8007_0666, 21, "Another version of this product is already installed";
    /// Installation failed and was rolled back.
    ERROR_INSTALL_FAILURE = 0x8007_0643, 22, "Fatal error during installation";
    /// Another instance holds the lock.
    ERROR_ALREADY_RUNNING = 0x8007_0420, 23, "An instance of the service is already running";
    /// Something with that name already exists (a package version, a program, a collection).
    ERROR_ALREADY_EXISTS = 0x8007_00B7, 24, "Cannot create a file when that file already exists";
    /// No signature (or no certificate) accompanies the manifest.
    TRUST_E_NOSIGNATURE = 0x800B_0100, 30, "No signature was present in the subject";
    /// The manifest's signature does not verify against the publisher's key: it was tampered with.
    TRUST_E_BAD_DIGEST = 0x8009_6010, 31, "The digital signature of the object did not verify";
    /// The publisher's certificate does not chain to a root the device trusts.
    CERT_E_UNTRUSTEDROOT = 0x800B_0109, 32, "A certificate chain processed, but terminated in a root certificate which is not trusted";
    /// A certificate in the chain is expired or not yet valid.
    CERT_E_EXPIRED = 0x800B_0101, 33, "A required certificate is not within its validity period";
    /// The publisher's certificate lacks the code-signing extended key usage.
    CERT_E_WRONG_USAGE = 0x800B_0110, 34, "The certificate is not valid for the requested usage";
    /// A certificate is malformed or the chain cannot be built.
    CERT_E_CHAINING = 0x800B_010A, 35, "A certificate chain could not be built to a trusted root authority";
    /// A file's size or SHA-256 differs from the signed manifest.
    CRYPT_E_HASH_VALUE = 0x8009_1007, 36, "The hash value is not correct";
    /// The manifest is truncated or malformed.
    TRUST_E_SUBJECT_FORM_UNKNOWN = 0x800B_0003, 37, "The form specified for the subject is not one supported or known";
    /// A file listed in the signed manifest is missing.
    DM_E_MISSING_FILE = 0x8004_0200, 38, "A file listed in the signed manifest is missing";
    /// A file that is not in the signed manifest is present.
    DM_E_UNEXPECTED_FILE = 0x8004_0201, 39, "A file that is not in the signed manifest is present";
    /// A path would escape its folder.
    DM_E_UNSAFE_PATH = 0x8004_0202, 40, "A path escapes the folder it must stay in";
    /// The publisher is not in the device's software-publisher store.
    DM_E_PUBLISHER_NOT_TRUSTED = 0x8004_0203, 41, "The publisher is not in the device's software publisher store";
    /// The installed client is damaged.
    DM_E_CLIENT_DAMAGED = 0x8004_0204, 42, "The installed client is damaged; run setup with --repair";
    /// The requested feature is not part of this build.
    DM_E_NOT_AVAILABLE = 0x8004_0205, 43, "This feature is not available in this build";
    /// A child program could not be started or died.
    DM_E_CHILD_FAILED = 0x8004_0206, 44, "A program the operation depends on failed to run";
    /// The management point or a distribution point could not be reached.
    DM_E_NETWORK = 0x8004_0207, 45, "The server could not be reached";
    /// A server answered with an error status.
    DM_E_HTTP = 0x8004_0208, 46, "The server refused the request";
    /// A server sent a redirect to plain HTTP, or a plain HTTP link.
    DM_E_INSECURE = 0x8004_0209, 47, "A server tried to use plain HTTP, which is never followed";
    /// An advertised program exited with a failure.
    DM_E_PROGRAM_FAILED = 0x8004_020A, 48, "The program failed";
    /// A program for the other device class (mobile or desktop).
    DM_E_WRONG_DEVICE_CLASS = 0x8004_020B, 49, "The program is for another device class";
    /// A package kind this client does not handle.
    DM_E_UNSUPPORTED_PACKAGE = 0x8004_020C, 50, "The package kind is not supported by this client";
    /// The operation was canceled.
    ERROR_CANCELLED = 0x8007_04C7, 51, "The operation was canceled";
    /// A certificate of the chain is on its issuer's certificate revocation list.
    CERT_E_REVOKED = 0x800B_010C, 52, "A certificate was explicitly revoked by its issuer";
    /// A certificate of the chain is in the device's disallowed store.
    TRUST_E_EXPLICIT_DISTRUST = 0x800B_0111, 53, "The certificate was explicitly marked as untrusted";
    /// A certificate revocation list cannot be used: unreadable, or its signature does not verify.
    CRYPT_E_NO_REVOCATION_CHECK = 0x8009_2012, 54, "The revocation function was unable to check revocation for the certificate";
    /// The advertisement names another package, version, kind or command than the signed manifest.
    DM_E_ADVERTISEMENT_MISMATCH = 0x8004_020D, 55, "The advertisement does not match the signed package";
    /// The advertised program is not one of the package's signed programs.
    DM_E_PROGRAM_NOT_SIGNED = 0x8004_020E, 56, "The advertised program is not in the package's signed manifest";
    /// The package's manifest is of the first format, which does not sign its programs.
    DM_E_MANIFEST_TOO_OLD = 0x8004_020F, 57, "The package's manifest does not sign its programs; re-sign it with a current dmpack";
    /// A newer version of the package is already on the device.
    DM_E_DOWNGRADE = 0x8004_0210, 58, "A newer version of this package is installed and versions never go backwards";
    /// A bundle holds a symbolic or hard link.
    DM_E_BUNDLE_LINK = 0x8004_0211, 59, "The bundle holds a link";
    /// A bundle holds a device file, a FIFO or another special entry.
    DM_E_BUNDLE_SPECIAL_FILE = 0x8004_0212, 60, "The bundle holds a device file or another special entry";
    /// A bundle holds the same path twice.
    DM_E_BUNDLE_DUPLICATE = 0x8004_0213, 61, "The bundle holds the same entry twice";
    /// A bundle entry is larger than the signed manifest (or a signature file's cap) allows.
    DM_E_BUNDLE_OVERSIZED = 0x8004_0214, 62, "A bundle entry is larger than its signed size";
    /// A bundle holds more entries than a manifest may list.
    DM_E_BUNDLE_TOO_MANY = 0x8004_0215, 63, "The bundle holds more entries than a manifest may list";
    /// A bundle ends early or is not a bundle.
    DM_E_BUNDLE_TRUNCATED = 0x8004_0216, 64, "The bundle is truncated or is not a bundle";
    /// The certification authority refused the enrollment (SCEP FAILURE, with its failInfo).
    DM_E_ENROLL_REFUSED = 0x8004_0217, 65, "The certification authority refused the certificate request";
    /// The certification authority kept the request pending past the deadline.
    DM_E_ENROLL_PENDING = 0x8004_0218, 66, "The certificate request is still pending at the certification authority";
    /// The SCEP server's answer is malformed, unsigned or not for this request.
    DM_E_ENROLL_PROTOCOL = 0x8004_0219, 67, "The certification authority's answer is not a valid SCEP response";
    /// A tethered device's SSH host key is not in the desktop's known hosts.
    DM_E_HOST_KEY_UNKNOWN = 0x8004_021A, 68, "The tethered device's host key is not trusted";
    /// A tethered device's SSH host key differs from the one the desktop trusts.
    DM_E_HOST_KEY_CHANGED = 0x8004_021B, 69, "The tethered device's host key has changed";
    /// The SSH connection to a tethered device failed, was refused or was cut.
    DM_E_TETHER_CONNECTION = 0x8004_021C, 70, "The connection to the tethered device failed";
    /// A configuration item is not compliant (monitor-only, or nothing to apply).
    DM_E_CONFIG_NONCOMPLIANT = 0x8004_021D, 71, "A configuration item is not compliant";
    /// A configuration setting could not be evaluated or applied.
    DM_E_CONFIG_SETTING_FAILED = 0x8004_021E, 72, "A configuration setting could not be evaluated or applied";
    /// A certificate revocation list is not signed by a CA the device trusts.
    DM_E_CRL_UNTRUSTED = 0x8004_0230, 90, "The revocation list is not signed by a certification authority the device trusts";
    /// A program's command does not name an executable file of the package (dmpack).
    DM_E_PROGRAM_COMMAND = 0x8004_0231, 91, "The program's command does not name an executable file of the package";
    /// A folder, a FIFO or a device is where a regular file must be read.
    DM_E_NOT_A_FILE = 0x8004_0232, 92, "Something other than a regular file is where a file must be read";
    /// A repository's release file is not signed by a key of the keyring named.
    DM_E_RELEASE_SIGNATURE = 0x8004_0233, 93, "The repository's release file is not signed by a key of the keyring";
    /// A repository file's size or SHA-256 differs from what its signed release file says.
    DM_E_REPOSITORY_HASH = 0x8004_0234, 94, "A repository file differs from what its signed release file says";
    /// apt or dpkg refused to install an update.
    DM_E_UPDATE_INSTALL = 0x8004_0235, 95, "apt or dpkg could not install the update";
    /// dpkg's lock stayed held by another program past the deadline.
    DM_E_DPKG_LOCKED = 0x8004_0236, 96, "dpkg is locked by another program";
    /// The software update catalog could not be read or scanned.
    DM_E_UPDATE_SCAN = 0x8004_0237, 97, "The software update scan failed";
    /// A repository's release file is past its Valid-Until, or older than the one imported.
    DM_E_RELEASE_STALE = 0x8004_0238, 98, "The repository's release file is expired or older than the one imported before";
    /// A system image needs an update engine (SWUpdate, RAUC) this device does not have.
    DM_E_IMAGE_ENGINE_MISSING = 0x8004_0239, 99, "The device has no update engine for this system image";
    /// The device's SWUpdate is set up without a public key: it would not check the image's
    /// signature.
    DM_E_IMAGE_UNVERIFIED = 0x8004_023A, 100, "The update engine is set up without signature checking";
    /// The update engine rejected the image's signature.
    DM_E_IMAGE_SIGNATURE = 0x8004_023B, 101, "The update engine rejected the image's signature";
    /// The image is for other hardware (SWUpdate's hardware-compatibility, RAUC's compatible).
    DM_E_IMAGE_HARDWARE = 0x8004_023C, 102, "The system image is for other hardware";
    /// The update engine could not install the image.
    DM_E_IMAGE_INSTALL = 0x8004_023D, 103, "The update engine could not install the system image";
    /// The update engine crashed (a signal) or was stopped past its deadline.
    DM_E_IMAGE_ENGINE_CRASHED = 0x8004_023E, 104, "The update engine crashed while it installed the system image";
    /// After the restart the device runs its previous system, not the one installed.
    DM_E_IMAGE_FELL_BACK = 0x8004_023F, 105, "The device fell back to its previous system after the restart";
    /// The package's signed health check failed after the install or at the end of the soak.
    DM_E_HEALTH_CHECK = 0x8004_0240, 106, "The package's health check failed";
    /// The management API's token is missing, unknown, expired or revoked.
    DM_E_API_UNAUTHORIZED = 0x8004_0241, 107, "The management API token is missing, unknown, expired or revoked";
    /// The management API's token made more requests this minute than its rate allows.
    DM_E_API_THROTTLED = 0x8004_0242, 108, "The management API token made too many requests";
}

impl StatusCode {
    fn entry(self) -> Option<&'static Entry> {
        TABLE.iter().find(|e| e.code == self)
    }

    /// Every code this build knows, in table order.
    pub fn all() -> impl Iterator<Item = StatusCode> {
        TABLE.iter().map(|e| e.code)
    }

    /// Looks a code up by its constant name, such as `E_ACCESSDENIED`.
    pub fn from_name(name: &str) -> Option<StatusCode> {
        TABLE.iter().find(|e| e.name == name).map(|e| e.code)
    }

    /// The human-readable text, such as `Access Denied`.
    pub fn text(self) -> &'static str {
        self.entry().map_or("Unknown status", |e| e.text)
    }

    /// The constant's name, such as `E_ACCESSDENIED`.
    pub fn name(self) -> &'static str {
        self.entry().map_or("UNKNOWN", |e| e.name)
    }

    /// True when bit 31 is set.
    pub fn is_failure(self) -> bool {
        self.0 & 0x8000_0000 != 0
    }

    /// The process exit code for this status: 0 on success, distinct per failure. Codes that
    /// this build does not know map to 1.
    pub fn exit_code(self) -> u8 {
        match self.entry() {
            Some(e) => e.exit,
            None if self.is_failure() => 1,
            None => 0,
        }
    }

    /// `0x80070005`: the form status records and reports carry.
    pub fn hex(self) -> String {
        format!("0x{:08X}", self.0)
    }

    /// Reads [`StatusCode::hex`]'s form back: `0x` and eight hexadecimal digits.
    pub fn parse_hex(s: &str) -> Option<StatusCode> {
        let hex = s.strip_prefix("0x")?;
        (hex.len() == 8).then(|| u32::from_str_radix(hex, 16).ok().map(StatusCode))?
    }

    /// The status a process exit code stands for, when it is one of ours.
    pub fn from_exit_code(exit: i32) -> Option<StatusCode> {
        let exit = u8::try_from(exit).ok()?;
        TABLE.iter().find(|e| e.exit == exit).map(|e| e.code)
    }
}

impl fmt::Display for StatusCode {
    /// `Access Denied (0x80070005)`: the form log readers search for.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:08X})", self.text(), self.0)
    }
}

impl fmt::Debug for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(0x{:08X})", self.name(), self.0)
    }
}

impl serde::Serialize for StatusCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> serde::Deserialize<'de> for StatusCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).ok_or_else(|| {
            serde::de::Error::custom(format!("status code {s:?} must start with 0x"))
        })?;
        u32::from_str_radix(hex, 16)
            .map(StatusCode)
            .map_err(|_| serde::de::Error::custom(format!("status code {s:?} is not hexadecimal")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn access_denied_reads_as_the_seed_says() {
        assert_eq!(StatusCode::E_ACCESSDENIED.to_string(), "Access Denied (0x80070005)");
        assert_eq!(StatusCode::E_ACCESSDENIED.exit_code(), 5);
    }

    #[test]
    fn codes_names_and_exit_codes_are_unique() {
        let mut codes = HashSet::new();
        let mut names = HashSet::new();
        let mut exits = HashSet::new();
        for e in TABLE {
            assert!(codes.insert(e.code), "duplicate code {:?}", e.code);
            assert!(names.insert(e.name), "duplicate name {}", e.name);
            // Success codes share exit 0; every failure has its own exit code.
            if e.code.is_failure() {
                assert!(exits.insert(e.exit), "duplicate exit code {} ({})", e.exit, e.name);
                assert_ne!(e.exit, 0, "{} is a failure with exit code 0", e.name);
            } else {
                assert_eq!(e.exit, 0, "{} is a success with a non-zero exit code", e.name);
            }
        }
    }

    #[test]
    fn the_hex_form_round_trips_and_nothing_else_parses() {
        assert_eq!(StatusCode::E_ACCESSDENIED.hex(), "0x80070005");
        assert_eq!(StatusCode::parse_hex("0x80070005"), Some(StatusCode::E_ACCESSDENIED));
        for bad in ["80070005", "0x8007005", "0x800700050", "0xZZ070005", ""] {
            assert_eq!(StatusCode::parse_hex(bad), None, "{bad}");
        }
    }

    #[test]
    fn exit_codes_round_trip() {
        for code in StatusCode::all().filter(|c| c.is_failure()) {
            assert_eq!(StatusCode::from_exit_code(code.exit_code().into()), Some(code));
        }
    }

    #[test]
    fn unknown_codes_still_display_and_fail() {
        let c = StatusCode(0x8123_4567);
        assert_eq!(c.to_string(), "Unknown status (0x81234567)");
        assert_eq!(c.exit_code(), 1);
        assert_eq!(StatusCode(7).exit_code(), 0);
    }

    #[test]
    fn docs_list_every_code() {
        let docs = include_str!("../../docs/status-codes.md");
        for e in TABLE {
            let row = format!("| `0x{:08X}` | `{}` | {} |", e.code.0, e.name, e.exit);
            assert!(docs.contains(&row), "docs/status-codes.md lacks {row}");
        }
    }

    #[test]
    fn serde_uses_hex_strings() {
        let json = serde_json::to_string(&StatusCode::CRYPT_E_HASH_VALUE).unwrap();
        assert_eq!(json, "\"0x80091007\"");
        let back: StatusCode = serde_json::from_str(&json).unwrap();
        assert_eq!(back, StatusCode::CRYPT_E_HASH_VALUE);
        assert!(serde_json::from_str::<StatusCode>("\"80091007\"").is_err());
    }
}
