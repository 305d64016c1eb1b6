//! The files of a signed folder as its manifest lists them ([`FileEntry`]), and the rule every
//! relative path a manifest, a bundle, a server or a configuration item names must follow
//! ([`check_relative_path`]). Below both the manifest and the signed programs, which use them.

use crate::error::{Error, Result};

/// One file of the folder.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path relative to the folder, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// Whether it is a program to run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executable: bool,
}

/// Checks a path from a manifest or the network: relative, `/`-separated, no `.`, `..`,
/// empty or hidden components, no backslashes or control characters.
pub fn check_relative_path(path: &str) -> Result<()> {
    let unsafe_path = |reason: &str| Error::UnsafePath {
        path: path.chars().take(200).collect(),
        reason: reason.to_string(),
    };
    if path.is_empty() || path.len() > 1024 {
        return Err(unsafe_path("must be 1 to 1024 bytes"));
    }
    if path.starts_with('/') {
        return Err(unsafe_path("absolute paths are not allowed"));
    }
    if path.contains('\\') || path.chars().any(char::is_control) {
        return Err(unsafe_path("backslashes and control characters are not allowed"));
    }
    for comp in path.split('/') {
        match comp {
            "" => return Err(unsafe_path("empty path component")),
            "." | ".." => return Err(unsafe_path("'.' and '..' are not allowed")),
            c if c.starts_with('.') => {
                return Err(unsafe_path("hidden names (starting with '.') are not allowed"));
            }
            c if c.len() > 255 => return Err(unsafe_path("a name is longer than 255 bytes")),
            _ => {}
        }
    }
    Ok(())
}
