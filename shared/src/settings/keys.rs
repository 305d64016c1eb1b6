//! The table of every key the settings files know: section, name, default, whether it is a
//! secret, and what it means. Parsing, defaults, redaction and `docs/settings.md` all follow it.

/// One known key.
#[derive(Debug)]
pub struct KeyDef {
    /// Its section.
    pub section: &'static str,
    /// Its name.
    pub key: &'static str,
    /// Its default, as written in a file (empty: unset).
    pub default: &'static str,
    /// Whether the value is a secret (redacted in logs).
    pub secret: bool,
    /// What it means and what values it takes.
    pub doc: &'static str,
}

const fn k(
    section: &'static str,
    key: &'static str,
    default: &'static str,
    doc: &'static str,
) -> KeyDef {
    KeyDef { section, key, default, secret: false, doc }
}

const fn secret(section: &'static str, key: &'static str, doc: &'static str) -> KeyDef {
    KeyDef { section, key, default: "", secret: true, doc }
}

/// The sections, in file order.
pub const SECTIONS: [&str; 9] = [
    "Installation",
    "Environment",
    "Communication",
    "UserInterface",
    "Certificates",
    "Configuration",
    "SoftwareUpdates",
    "SystemImages",
    "Tether",
];

/// Every key this build knows, with its default and meaning.
pub const KEYS: &[KeyDef] = &[
    k(
        "Installation",
        "ClientInstallAction",
        "Install",
        "None (reconfigure), Install (install or upgrade), Uninstall",
    ),
    k(
        "Installation",
        "CertEnrollAction",
        "None",
        "Enroll (enroll a client certificate during setup) or None",
    ),
    k(
        "Environment",
        "ManagementPoint",
        "",
        "the management point's https:// URL; required to manage the device",
    ),
    k(
        "Environment",
        "Tenant",
        "DEFAULT",
        "the DDI tenant: 1 to 64 letters, digits, '.', '_' or '-'",
    ),
    k(
        "Environment",
        "ControllerId",
        "",
        "the device's id at the management point; empty: setup derives one from /etc/machine-id or the host name and keeps it",
    ),
    k(
        "Environment",
        "SiteCode",
        "",
        "the site code the device is assigned to (1 to 8 letters or digits)",
    ),
    k(
        "Environment",
        "DeviceClass",
        "Mobile",
        "Mobile or Desktop: programs for one never run on the other",
    ),
    k(
        "Communication",
        "Authentication",
        "TargetToken",
        "TargetToken, GatewayToken or Certificate (mutual TLS with the certificate in the my store)",
    ),
    secret(
        "Communication",
        "TargetToken",
        "the device's security token (1 to 128 visible characters)",
    ),
    secret(
        "Communication",
        "GatewayToken",
        "a gateway security token (1 to 128 visible characters)",
    ),
    k(
        "Communication",
        "PollInterval",
        "300",
        "seconds between polls until the management point sets its own (10 to 86400)",
    ),
    k(
        "Communication",
        "MinPollInterval",
        "10",
        "seconds: the shortest poll interval taken from the management point; a shorter one is raised to this, with a log line (1 to 86400)",
    ),
    k("Communication", "ConnectTimeout", "10", "seconds to establish a connection (1 to 300)"),
    k(
        "Communication",
        "ReadTimeout",
        "30",
        "seconds of silence tolerated while receiving (1 to 600)",
    ),
    k("Communication", "RequestTimeout", "120", "seconds for a whole API call (1 to 3600)"),
    k(
        "Communication",
        "DownloadTimeout",
        "3600",
        "seconds for a whole artifact download (10 to 86400)",
    ),
    k(
        "Communication",
        "RetryMaxDelay",
        "900",
        "seconds: the longest wait between retries (1 to 86400)",
    ),
    secret(
        "Communication",
        "Proxy",
        "an http:// or https:// proxy URL, which may hold a password; the environment's proxy variables are never used",
    ),
    k(
        "Communication",
        "ServerRootCertificate",
        "",
        "a PEM file of root certificates for the management point's TLS, absolute or relative to the device root; empty: the device's tls-root store",
    ),
    k("Communication", "BandwidthLimit", "0", "KiB/s for downloads; 0 is unlimited"),
    k(
        "UserInterface",
        "VerboseLogging",
        "false",
        "true or false (also 1/0, yes/no, on/off): debug lines in the logs",
    ),
    k("UserInterface", "LogRetention", "10", "dated log files kept per program (1 to 1000)"),
    k(
        "UserInterface",
        "LogMaxSize",
        "1024",
        "KiB before the agent starts a new log file (16 to 1048576)",
    ),
    k(
        "Certificates",
        "ScepUrl",
        "",
        "the SCEP server's http:// or https:// URL, required when CertEnrollAction=Enroll",
    ),
    secret("Certificates", "ScepChallenge", "the one-time password the CA requires"),
    k(
        "Certificates",
        "CertificateSubject",
        "",
        "the common name of the enrolled certificate; {controller_id} stands for the device's id; empty: the controller id",
    ),
    k(
        "Certificates",
        "KeySize",
        "2048",
        "bits of the RSA key made on the device: 2048, 3072 or 4096",
    ),
    k(
        "Certificates",
        "ScepCaThumbprint",
        "",
        "the SHA-256 of the CA (or RA) certificate the SCEP server must present; empty: trusted on first use",
    ),
    k(
        "Certificates",
        "ScepPendingTimeout",
        "600",
        "seconds a request the CA keeps pending is waited for (10 to 604800)",
    ),
    k(
        "Certificates",
        "RenewDaysBeforeExpiry",
        "30",
        "days before expiry the agent renews its certificate (1 to 365)",
    ),
    k(
        "Configuration",
        "EvaluationInterval",
        "3600",
        "seconds between evaluations of the assigned configuration items (60 to 86400)",
    ),
    k(
        "SoftwareUpdates",
        "UpdateScanInterval",
        "86400",
        "seconds between software update scans besides those a new catalog starts (300 to 604800)",
    ),
    k(
        "SoftwareUpdates",
        "AptKeyring",
        "",
        "the OpenPGP keyring apt verifies update repositories with (empty: apt's trusted keys)",
    ),
    k(
        "SoftwareUpdates",
        "AptTimeout",
        "1800",
        "seconds one apt-get run of an update deployment may take (60 to 86400)",
    ),
    k(
        "SoftwareUpdates",
        "DpkgLockTimeout",
        "300",
        "seconds apt waits for dpkg's lock held by another program (0 to 3600)",
    ),
    k(
        "SystemImages",
        "SWUpdateCommand",
        "swupdate",
        "SWUpdate's program: a name found in PATH or an absolute path",
    ),
    k(
        "SystemImages",
        "SWUpdateConfig",
        "/etc/swupdate.cfg",
        "the device's SWUpdate configuration, given to SWUpdate (-f) when it exists",
    ),
    k(
        "SystemImages",
        "SWUpdatePublicKey",
        "",
        "the key SWUpdate checks images with (-k); empty: the configuration's public-key-file",
    ),
    k(
        "SystemImages",
        "SWUpdateHardware",
        "",
        "board:revision given to SWUpdate (-H); empty: SWUpdate reads /etc/hwrevision",
    ),
    k(
        "SystemImages",
        "AllowUnsignedImages",
        "false",
        "true: hand images to a SWUpdate set up without a public key (it checks no signature)",
    ),
    k(
        "SystemImages",
        "RaucCommand",
        "rauc",
        "RAUC's program: a name found in PATH or an absolute path",
    ),
    k(
        "SystemImages",
        "ImageInstallTimeout",
        "3600",
        "seconds the update engine may take to install one image (60 to 86400)",
    ),
    k(
        "SystemImages",
        "RebootCommand",
        "",
        "the command that restarts the device after an image install; empty: the next restart",
    ),
    k(
        "Tether",
        "Devices",
        "",
        "a desktop's tethered devices: ssh://user@host[:port][/device-root] URLs, comma-separated",
    ),
    k("Tether", "ProbeTimeout", "5", "seconds dmtether waits to reach a tethered device (1 to 60)"),
    k("Tether", "ScanInterval", "30", "seconds between dmtether's looks for devices (5 to 3600)"),
    k(
        "Tether",
        "InstallTimeout",
        "900",
        "seconds a copy or an install on a tethered device may take (60 to 7200)",
    ),
];

/// Looks up a key by section and name (case-insensitively).
pub fn key_def(section: &str, key: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|d| d.section.eq_ignore_ascii_case(section) && d.key.eq_ignore_ascii_case(key))
}
