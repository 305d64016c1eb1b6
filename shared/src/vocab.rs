//! The words the device programs and the management point exchange, each defined once: what
//! a package is, which class of device a program is for, and the inventory attributes the
//! agent reports (which collections and reports use). The DDI wire types themselves are in
//! [`crate::ddi`]; status message ids in [`crate::message`]; status codes in
//! [`crate::status`].

use std::fmt;
use std::str::FromStr;

/// What a signed folder, a package or a DDI chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackageKind {
    /// A software distribution package: programs to run.
    SoftwareDistribution,
    /// A configuration package: configuration items.
    Configuration,
    /// A client deployment folder: dminstaller, dmclientsetup, dmsvc and dmcertenroll per
    /// platform. Advertised, it upgrades the client over the air.
    ClientDeployment,
}

impl PackageKind {
    /// Every kind.
    pub const ALL: [PackageKind; 3] = [
        PackageKind::SoftwareDistribution,
        PackageKind::Configuration,
        PackageKind::ClientDeployment,
    ];

    /// The name in a signed manifest and in admin output: `client-deployment`, …
    pub fn as_str(self) -> &'static str {
        match self {
            PackageKind::SoftwareDistribution => "software-distribution",
            PackageKind::Configuration => "configuration",
            PackageKind::ClientDeployment => "client-deployment",
        }
    }

    /// The DDI chunk `part`: what the device does with it. A client deployment travels as
    /// `client-upgrade`, the name every released agent knows.
    pub fn part(self) -> &'static str {
        match self {
            PackageKind::ClientDeployment => "client-upgrade",
            other => other.as_str(),
        }
    }

    /// The kind of a DDI chunk `part`, when it is one of ours.
    pub fn from_part(part: &str) -> Option<PackageKind> {
        PackageKind::ALL.into_iter().find(|k| k.part() == part)
    }
}

impl fmt::Display for PackageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PackageKind {
    type Err = String;
    /// Either name: the manifest's (`client-deployment`) or the DDI part (`client-upgrade`).
    fn from_str(s: &str) -> Result<Self, String> {
        PackageKind::ALL.into_iter().find(|k| k.as_str() == s || k.part() == s).ok_or_else(|| {
            format!(
                "package kind {s:?}: expected software-distribution, configuration or client-deployment"
            )
        })
    }
}

/// Whether a device is a mobile (or embedded) device or a desktop: programs for one never run
/// on the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceClass {
    /// A mobile or embedded device.
    Mobile,
    /// A desktop computer.
    Desktop,
}

impl DeviceClass {
    /// `mobile` or `desktop`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceClass::Mobile => "mobile",
            DeviceClass::Desktop => "desktop",
        }
    }
}

impl fmt::Display for DeviceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeviceClass {
    type Err = String;
    /// `mobile` or `desktop`, in any case (settings files say `Mobile`).
    fn from_str(s: &str) -> Result<Self, String> {
        [DeviceClass::Mobile, DeviceClass::Desktop]
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("device class {s:?}: expected Mobile or Desktop"))
    }
}

/// The inventory attributes the agent reports in DDI `configData`, which collections and
/// reports read. Documented in `docs/agent.md` (a test keeps the two in step).
pub mod inventory {
    /// The device's platform, such as `linux-aarch64`.
    pub const PLATFORM: &str = "platform";
    /// The processor architecture, such as `aarch64`.
    pub const ARCH: &str = "arch";
    /// The operating system's name (`PRETTY_NAME` of os-release).
    pub const OS: &str = "os";
    /// The kernel release.
    pub const KERNEL: &str = "kernel";
    /// The hardware model (device tree or DMI).
    pub const MODEL: &str = "model";
    /// Free space on the device root's file system, in MiB.
    pub const FREE_SPACE_MB: &str = "free_space_mb";
    /// The installed client version.
    pub const CLIENT_VERSION: &str = "client_version";
    /// `mobile` or `desktop`.
    pub const DEVICE_CLASS: &str = "device_class";
    /// The site code from the settings.
    pub const SITE_CODE: &str = "site_code";
    /// Packages a program ran from successfully: `name version, …`.
    pub const INSTALLED_PACKAGES: &str = "installed_packages";
    /// Installed packages whose publisher is now revoked or disallowed: `name version, …`
    /// (present only when there are some).
    pub const REVOKED_PACKAGES: &str = "revoked_packages";
    /// `healthy`, or `unhealthy-certificate`, `unhealthy-communication`, `unhealthy-local`.
    pub const CLIENT_HEALTH: &str = "client_health";
    /// Why the client is unhealthy.
    pub const CLIENT_HEALTH_REASON: &str = "client_health_reason";
    /// The last setup run: operation, result, status and time.
    pub const LAST_SETUP: &str = "last_setup";
    /// The board, under the name other DDI clients and servers use (the model).
    pub const HW_BOARDNAME: &str = "hw_boardname";
    /// The board's revision (DMI board version, or the device tree's revision).
    pub const HW_REVISION: &str = "hw_revision";
    /// The running system's version: os-release `IMAGE_VERSION` on an image-based system,
    /// else `VERSION_ID`, and `BUILD_ID` when set.
    pub const SW_VERSION: &str = "sw_version";
    /// The client certificate's state in native mode: `valid`, `expiring`,
    /// `enrollment-failed`, `expired`, `revoked` or `none`.
    pub const CERTIFICATE_HEALTH: &str = "certificate_health";
    /// When the client certificate expires (RFC 3339), and its thumbprint.
    pub const CERTIFICATE_EXPIRES: &str = "certificate_expires";
    /// `yes` on a desktop that tethers devices (`dmtether`).
    pub const TETHERED: &str = "tethered";
    /// A desktop's tethered devices: `controller-id client-version, …`.
    pub const TETHERED_DEVICES: &str = "tethered_devices";
    /// The last install on a tethered device: `device: result (code) time`.
    pub const TETHERED_LAST: &str = "tethered_last";
    /// The configuration items on the device, counted by state at their last evaluation:
    /// `compliant 3, non-compliant 1, remediated 0, error 0, not-applicable 1`.
    pub const COMPLIANCE: &str = "compliance";
    /// `compliance.<package>/<item>`: for each item that is not compliant (at most 32, then
    /// `compliance.more` says how many more), a JSON object with its package, version, state
    /// and the settings that are not compliant (expected and actual values; never a secret
    /// setting's actual value).
    pub const COMPLIANCE_ITEM_PREFIX: &str = "compliance.";

    /// Every key, in the order the docs list them.
    pub const ALL: [&str; 23] = [
        PLATFORM,
        ARCH,
        OS,
        KERNEL,
        MODEL,
        FREE_SPACE_MB,
        CLIENT_VERSION,
        DEVICE_CLASS,
        SITE_CODE,
        INSTALLED_PACKAGES,
        REVOKED_PACKAGES,
        CLIENT_HEALTH,
        CLIENT_HEALTH_REASON,
        LAST_SETUP,
        HW_BOARDNAME,
        HW_REVISION,
        SW_VERSION,
        CERTIFICATE_HEALTH,
        CERTIFICATE_EXPIRES,
        TETHERED,
        TETHERED_DEVICES,
        TETHERED_LAST,
        COMPLIANCE,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_kinds_have_a_manifest_name_and_a_ddi_part() {
        for k in PackageKind::ALL {
            assert_eq!(k.as_str().parse::<PackageKind>(), Ok(k));
            assert_eq!(k.part().parse::<PackageKind>(), Ok(k));
            assert_eq!(PackageKind::from_part(k.part()), Some(k));
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.as_str()));
        }
        assert_eq!(PackageKind::ClientDeployment.part(), "client-upgrade");
        assert_eq!(PackageKind::from_part("os"), None);
        assert!("firmware".parse::<PackageKind>().is_err());
    }

    #[test]
    fn device_classes_parse_in_any_case() {
        assert_eq!("Mobile".parse(), Ok(DeviceClass::Mobile));
        assert_eq!("DESKTOP".parse(), Ok(DeviceClass::Desktop));
        assert!("tablet".parse::<DeviceClass>().is_err());
        assert_eq!(serde_json::to_string(&DeviceClass::Desktop).unwrap(), "\"desktop\"");
    }

    #[test]
    fn docs_list_every_inventory_attribute() {
        let docs = include_str!("../../docs/agent.md");
        for key in inventory::ALL {
            assert!(docs.contains(&format!("| `{key}` |")), "docs/agent.md lacks a row for {key}");
        }
    }
}
