//! Platform names (`linux-aarch64`, `linux-armv7`, `linux-x86_64`): which binaries of a
//! deployment folder or package a device runs.

use std::fmt;

/// A platform name: `linux-` then an architecture.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Platform(String);

impl Platform {
    /// The platform this binary was built for.
    pub fn current() -> Platform {
        let arch = match std::env::consts::ARCH {
            "arm" => "armv7",
            other => other,
        };
        Platform(format!("linux-{arch}"))
    }

    /// Parses and checks a platform name.
    pub fn parse(s: &str) -> Result<Platform, String> {
        let arch = s.strip_prefix("linux-").ok_or_else(|| {
            format!("platform {s:?} must start with \"linux-\" (such as linux-aarch64)")
        })?;
        let ok = !arch.is_empty()
            && arch.len() <= 32
            && arch.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(format!(
                "platform {s:?}: the architecture must be 1 to 32 lowercase letters, digits or _"
            ));
        }
        Ok(Platform(s.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The architecture part (`aarch64`).
    pub fn arch(&self) -> &str {
        self.0.strip_prefix("linux-").unwrap_or(&self.0)
    }
}

impl TryFrom<String> for Platform {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Platform::parse(&s)
    }
}

impl From<Platform> for String {
    fn from(p: Platform) -> String {
        p.0
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_platform_is_valid() {
        let p = Platform::current();
        assert_eq!(Platform::parse(p.as_str()).unwrap(), p);
        #[cfg(target_arch = "aarch64")]
        assert_eq!(p.as_str(), "linux-aarch64");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(p.as_str(), "linux-x86_64");
    }

    #[test]
    fn rejects_bad_names() {
        for bad in ["", "aarch64", "linux-", "linux-AArch64", "linux-../x", "linux-a b"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Platform::parse("linux-armv7").unwrap().arch(), "armv7");
    }
}
