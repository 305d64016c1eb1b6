//! The device security policy: whether the device vendor or operator has locked the device
//! against privileged installs. See `docs/device-security-policy.md`.
//!
//! The policy lives in `etc/dm/security-policy.ini` under the device root. No file means the
//! device is unlocked. A file that cannot be read or parsed counts as locked: a policy that
//! cannot be understood must not be taken as permission.

use std::path::PathBuf;

use crate::error::Result;
use crate::ini::{MAX_INI_BYTES, SettingsError, parse_ini_document};
use crate::layout::DeviceLayout;

/// The policy in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityPolicy {
    /// Whether privileged installs are refused.
    pub locked: bool,
    /// Why, for the log.
    pub reason: String,
    /// The policy file.
    pub source: PathBuf,
}

impl SecurityPolicy {
    /// Reads the device's policy. Never fails: problems lock the device and say why.
    pub fn load(layout: &DeviceLayout) -> SecurityPolicy {
        let source = layout.security_policy_file();
        match Self::read(&source) {
            Ok(p) => p,
            Err(e) => SecurityPolicy {
                locked: true,
                reason: format!(
                    "the security policy cannot be read, so the device is treated as locked: {e}"
                ),
                source,
            },
        }
    }

    fn read(source: &std::path::Path) -> Result<SecurityPolicy> {
        let Some(bytes) = crate::fs::read_optional(source, MAX_INI_BYTES)? else {
            return Ok(SecurityPolicy {
                locked: false,
                reason: "no security policy file".into(),
                source: source.to_path_buf(),
            });
        };
        let doc = parse_ini_document(source, &bytes)?;
        let bad = |key: &str, problem: String| SettingsError {
            file: source.to_path_buf(),
            line: None,
            section: Some("DeviceSecurity".into()),
            key: Some(key.into()),
            problem,
        };
        let section = doc
            .iter()
            .find(|(s, _)| s.is_some_and(|s| s.eq_ignore_ascii_case("DeviceSecurity")))
            .map(|(_, p)| p);
        let get = |key: &str| {
            section.and_then(|p| {
                p.iter()
                    .rfind(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v.trim().to_string())
            })
        };
        let locked = match get("Locked").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("") => false,
            Some("1" | "true" | "yes" | "on") => true,
            Some("0" | "false" | "no" | "off") => false,
            Some(other) => {
                return Err(
                    bad("Locked", format!("expected true or false, found {other:?}")).into()
                );
            }
        };
        let reason = get("Reason").filter(|r| !r.is_empty()).unwrap_or_else(|| {
            if locked {
                "locked by the device's security policy".into()
            } else {
                "the security policy allows privileged installs".into()
            }
        });
        Ok(SecurityPolicy { locked, reason, source: source.to_path_buf() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: Option<&[u8]>) -> SecurityPolicy {
        let dir = tempfile::tempdir().unwrap();
        let layout = DeviceLayout::new(dir.path());
        if let Some(t) = text {
            std::fs::create_dir_all(layout.config_dir()).unwrap();
            std::fs::write(layout.security_policy_file(), t).unwrap();
        }
        SecurityPolicy::load(&layout)
    }

    #[test]
    fn no_file_is_unlocked() {
        assert!(!policy(None).locked);
    }

    #[test]
    fn locked_with_reason() {
        let p = policy(Some(b"[DeviceSecurity]\r\nLocked=TRUE\r\nReason=carrier lock\r\n"));
        assert!(p.locked);
        assert_eq!(p.reason, "carrier lock");
        assert!(!policy(Some(b"[devicesecurity]\nlocked=0\n")).locked);
    }

    #[test]
    fn unreadable_or_bad_policy_fails_closed() {
        let p = policy(Some(b"[DeviceSecurity]\nLocked=maybe\n"));
        assert!(p.locked);
        assert!(p.reason.contains("Locked") && p.reason.contains("maybe"), "{}", p.reason);
        assert!(policy(Some(&[0xff, 0x00, 0x13])).locked);
        assert!(policy(Some(b"[DeviceSecurity\n")).locked);
    }
}
