//! Where everything lives on a device, relative to the device root.
//!
//! One type knows every path, so no program builds device paths by hand and tests can point a
//! whole device at a temp folder. The default root is `/`.
//!
//! ```text
//! etc/dm/ClientSettings.ini          the client's settings (written by setup)
//! etc/dm/security-policy.ini         device security policy (vendor or operator)
//! etc/dm/certs/{root,tls-root,privileged,spc,disallowed,my}/   certificate stores
//! etc/dm/crl/                        revocation lists of the code-signing CAs
//! etc/systemd/system/dmsvc.service   the agent's service unit
//! opt/dm/versions/<version>/         installed client binaries, one folder per version
//! opt/dm/current -> versions/<ver>   the active-version pointer
//! var/lib/dm/                        client state: identity, setup journal and result
//! run/dm/                            runtime (a tmpfs on devices): locks, the agent's pid and
//!                                    health report
//! var/lib/dm/outbox/                 status messages waiting for the management point
//! var/lib/dm/cache/                  downloads in progress and done
//! var/lib/dm/packages/               verified packages the agent runs programs from
//! var/lib/dm/staging/                DMInstaller's verified copy of a deployment (0700)
//! var/lib/dm/package-ledger.json     highest version and past runs of each package
//! var/log/dm/                        dated log files of every program
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use crate::version::ClientVersion;

/// The device's certificate stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StoreName {
    /// Code-signing roots: deployment folders and packages must chain to one.
    Root,
    /// Roots for the management point's TLS (and nothing else).
    TlsRoot,
    /// Privileged execution: publishers whose code may make privileged changes.
    Privileged,
    /// Software publishers (SPC): the agent only runs packages signed by one of these.
    Spc,
    /// Certificates never trusted, even when they chain to a root.
    Disallowed,
    /// The device's own certificates and keys (client authentication).
    My,
}

impl StoreName {
    /// All stores.
    pub const ALL: [StoreName; 6] = [
        StoreName::Root,
        StoreName::TlsRoot,
        StoreName::Privileged,
        StoreName::Spc,
        StoreName::Disallowed,
        StoreName::My,
    ];

    /// The store's folder name.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreName::Root => "root",
            StoreName::TlsRoot => "tls-root",
            StoreName::Privileged => "privileged",
            StoreName::Spc => "spc",
            StoreName::Disallowed => "disallowed",
            StoreName::My => "my",
        }
    }
}

impl fmt::Display for StoreName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every on-device path, under one device root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLayout {
    root: PathBuf,
}

impl DeviceLayout {
    /// The layout of the device whose root folder is `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DeviceLayout { root: root.into() }
    }

    /// The device root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when this layout is the real device (`/`), not a folder standing in for one.
    pub fn is_system_root(&self) -> bool {
        self.root == Path::new("/")
    }

    fn at(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// `etc/dm`: settings, policy and certificate stores.
    pub fn config_dir(&self) -> PathBuf {
        self.at("etc/dm")
    }

    /// The client's settings file.
    pub fn settings_file(&self) -> PathBuf {
        self.at("etc/dm/ClientSettings.ini")
    }

    /// The device security policy file (see docs/device-security-policy.md).
    pub fn security_policy_file(&self) -> PathBuf {
        self.at("etc/dm/security-policy.ini")
    }

    /// The folder holding all certificate stores.
    pub fn cert_stores_dir(&self) -> PathBuf {
        self.at("etc/dm/certs")
    }

    /// One certificate store's folder.
    pub fn cert_store_dir(&self, store: StoreName) -> PathBuf {
        self.cert_stores_dir().join(store.as_str())
    }

    /// Certificate revocation lists of the code-signing CAs, one file each.
    pub fn crl_dir(&self) -> PathBuf {
        self.at("etc/dm/crl")
    }

    /// Where DMInstaller stages the verified copy of a deployment before running it (0700).
    pub fn staging_dir(&self) -> PathBuf {
        self.at("var/lib/dm/staging")
    }

    /// The agent's record of each package's highest version and past runs.
    pub fn package_ledger(&self) -> PathBuf {
        self.at("var/lib/dm/package-ledger.json")
    }

    /// The agent's systemd unit.
    pub fn systemd_unit(&self) -> PathBuf {
        self.at("etc/systemd/system/dmsvc.service")
    }

    /// `opt/dm`: the client installation.
    pub fn install_dir(&self) -> PathBuf {
        self.at("opt/dm")
    }

    /// The folder holding one folder per installed version.
    pub fn versions_dir(&self) -> PathBuf {
        self.at("opt/dm/versions")
    }

    /// The install folder of one version.
    pub fn version_dir(&self, v: &ClientVersion) -> PathBuf {
        self.versions_dir().join(v.to_string())
    }

    /// The active-version pointer: a symlink to `versions/<version>`.
    pub fn active_pointer(&self) -> PathBuf {
        self.at("opt/dm/current")
    }

    /// `var/lib/dm`: client state.
    pub fn state_dir(&self) -> PathBuf {
        self.at("var/lib/dm")
    }

    /// The device's identity with the management point (controller id).
    pub fn identity_file(&self) -> PathBuf {
        self.at("var/lib/dm/identity.json")
    }

    /// The setup journal: the install, upgrade or uninstall in progress.
    pub fn setup_journal(&self) -> PathBuf {
        self.at("var/lib/dm/setup-journal.json")
    }

    /// The result of the last setup run, reported by the agent.
    pub fn setup_result(&self) -> PathBuf {
        self.at("var/lib/dm/setup-result.json")
    }

    /// `run/dm`: runtime files that do not outlive a boot.
    pub fn run_dir(&self) -> PathBuf {
        self.at("run/dm")
    }

    /// The lock held by setup while it changes the client.
    pub fn setup_lock(&self) -> PathBuf {
        self.at("run/dm/setup.lock")
    }

    /// The agent's health report: process id, version, state.
    pub fn agent_health_file(&self) -> PathBuf {
        self.at("run/dm/agent-health.json")
    }

    /// The running agent's process id.
    pub fn agent_pid_file(&self) -> PathBuf {
        self.at("run/dm/dmsvc.pid")
    }

    /// The lock that keeps one agent per device.
    pub fn agent_lock_file(&self) -> PathBuf {
        self.at("run/dm/dmsvc.lock")
    }

    /// Status messages waiting for the management point.
    pub fn outbox_dir(&self) -> PathBuf {
        self.at("var/lib/dm/outbox")
    }

    /// Downloads in progress (`*.partial`) and done.
    pub fn download_cache_dir(&self) -> PathBuf {
        self.at("var/lib/dm/cache")
    }

    /// Verified packages the agent runs programs from.
    pub fn packages_dir(&self) -> PathBuf {
        self.at("var/lib/dm/packages")
    }

    /// The log folder.
    pub fn log_dir(&self) -> PathBuf {
        self.at("var/log/dm")
    }

    /// A desktop's tethering state: staged client deployments, the devices seen.
    pub fn tether_dir(&self) -> PathBuf {
        self.at("var/lib/dm/tether")
    }

    /// A desktop's SSH identity and known hosts for tethered devices (`dmtether`).
    pub fn tether_config_dir(&self) -> PathBuf {
        self.at("etc/dm/tether")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_root() {
        let l = DeviceLayout::new("/tmp/dev1");
        let v = ClientVersion::new(1, 2, 0, 345);
        for p in [
            l.settings_file(),
            l.security_policy_file(),
            l.cert_store_dir(StoreName::Spc),
            l.systemd_unit(),
            l.version_dir(&v),
            l.active_pointer(),
            l.identity_file(),
            l.setup_journal(),
            l.setup_result(),
            l.agent_pid_file(),
            l.agent_lock_file(),
            l.outbox_dir(),
            l.download_cache_dir(),
            l.packages_dir(),
            l.log_dir(),
        ] {
            assert!(p.starts_with("/tmp/dev1"), "{}", p.display());
        }
        assert_eq!(l.version_dir(&v), Path::new("/tmp/dev1/opt/dm/versions/1.2.0.345"));
        assert_eq!(
            l.cert_store_dir(StoreName::Privileged),
            Path::new("/tmp/dev1/etc/dm/certs/privileged")
        );
        assert!(!l.is_system_root());
        assert!(DeviceLayout::new("/").is_system_root());
    }
}
