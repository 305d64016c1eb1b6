//! `DMCommonInstaller.ini` and `ClientSettings.ini`: parsed once into typed settings.
//!
//! Both files share one format and one set of keys, grouped in the five categories of the
//! source documents: `[Installation]`, `[Environment]`, `[Communication]`, `[UserInterface]`
//! and `[Certificates]`. Section and key names are case-insensitive; values of the enumerated
//! keys too. A UTF-8 byte-order mark, UTF-16 files (Windows Notepad's "Unicode"), CRLF line
//! ends and `;` or `#` comments are accepted. Unknown keys and duplicate keys are warnings (the
//! last duplicate wins); a bad value is one error naming the file, the section, the key and
//! what was expected. Every key, its default and its meaning are in [`KEYS`] and in
//! `docs/settings.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::ini::parse_ini_document;
pub use crate::ini::{MAX_INI_BYTES as MAX_SETTINGS_BYTES, SettingsError};
pub use crate::vocab::DeviceClass;
pub use keys::{KEYS, KeyDef, SECTIONS, key_def};

mod keys;

/// The file name of the common installer settings.
pub const COMMON_INSTALLER_INI: &str = "DMCommonInstaller.ini";
/// The file name of the client settings.
pub const CLIENT_SETTINGS_INI: &str = "ClientSettings.ini";

/// `ClientInstallAction`: what setup does with the staged client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InstallAction {
    /// Reconfigure the installed client's settings.
    None,
    /// Install, or upgrade an older client.
    Install,
    /// Remove the client.
    Uninstall,
}

/// `CertEnrollAction`: whether setup enrolls a client authentication certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CertEnrollAction {
    /// No enrollment.
    None,
    /// Enroll during setup.
    Enroll,
}

/// How the agent authenticates to the management point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AuthMode {
    /// `Authorization: TargetToken …`, the device's own token.
    TargetToken,
    /// `Authorization: GatewayToken …`, a token shared by a gateway.
    GatewayToken,
    /// Mutual TLS with the certificate in the device's `my` store.
    Certificate,
}

/// A value that must never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} characters>", self.0.chars().count())
    }
}

/// `[Installation]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Installation {
    /// `ClientInstallAction`.
    pub client_install_action: InstallAction,
    /// `CertEnrollAction`.
    pub cert_enroll_action: CertEnrollAction,
}

/// `[Environment]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    /// `ManagementPoint`: the management points' base URLs (https), in the order tried: one,
    /// or several separated by commas (instances of one fleet on one database). Empty: unset.
    pub management_points: Vec<String>,
    /// `Tenant`: the DDI tenant.
    pub tenant: String,
    /// `ControllerId`: the device's id; when empty setup derives one and keeps it.
    pub controller_id: Option<String>,
    /// `SiteCode`: the site the device is assigned to.
    pub site_code: Option<String>,
    /// `DeviceClass`.
    pub device_class: DeviceClass,
}

/// `[Communication]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Communication {
    /// `Authentication`.
    pub authentication: AuthMode,
    /// `TargetToken`.
    pub target_token: Option<Secret>,
    /// `GatewayToken`.
    pub gateway_token: Option<Secret>,
    /// `PollInterval`: until the management point says otherwise.
    pub poll_interval: Duration,
    /// `MinPollInterval`: the floor under the management point's poll interval.
    pub min_poll_interval: Duration,
    /// `ConnectTimeout`.
    pub connect_timeout: Duration,
    /// `ReadTimeout`: the longest silence while receiving.
    pub read_timeout: Duration,
    /// `RequestTimeout`: the whole of one API call.
    pub request_timeout: Duration,
    /// `DownloadTimeout`: the whole of one artifact download.
    pub download_timeout: Duration,
    /// `RetryMaxDelay`: the cap of the exponential backoff.
    pub retry_max_delay: Duration,
    /// `Proxy`: an HTTP proxy; none unless set (the environment is never consulted).
    pub proxy: Option<String>,
    /// `ServerRootCertificate`: a PEM file of roots for the management point's TLS; when empty
    /// the device's `tls-root` store is used.
    pub server_root_certificate: Option<String>,
    /// `BandwidthLimit`: KiB/s for downloads; 0 is unlimited.
    pub bandwidth_limit_kib: u64,
}

/// `[UserInterface]`: what the device's user and log readers see.
#[derive(Debug, Clone, PartialEq)]
pub struct UserInterface {
    /// `VerboseLogging`.
    pub verbose_logging: bool,
    /// `LogRetention`: dated log files kept per program.
    pub log_retention: usize,
    /// `LogMaxSize`: KiB before the agent starts a new log file.
    pub log_max_size_kib: u64,
}

/// `[Certificates]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Certificates {
    /// `ScepUrl`: the SCEP server for enrollment.
    pub scep_url: Option<String>,
    /// `ScepChallenge`: the one-time password for the CA.
    pub scep_challenge: Option<Secret>,
    /// `CertificateSubject`: the enrolled certificate's subject common name; the controller id
    /// when empty.
    pub certificate_subject: Option<String>,
    /// `RenewDaysBeforeExpiry`.
    pub renew_days_before_expiry: u32,
    /// `KeySize`: bits of the RSA key made on the device (2048, 3072 or 4096).
    pub key_size: usize,
    /// `ScepCaThumbprint`: SHA-256 of the CA (or RA) certificate the device insists on.
    pub scep_ca_thumbprint: Option<String>,
    /// `ScepPendingTimeout`: how long a request the CA keeps pending is waited for.
    pub scep_pending_timeout: Duration,
}

/// `[Configuration]`: configuration items on the device.
#[derive(Debug, Clone, PartialEq)]
pub struct Configuration {
    /// `EvaluationInterval`: how often the assigned items are evaluated (and a file they
    /// watch changing evaluates them at once).
    pub evaluation_interval: Duration,
}

/// `[SoftwareUpdates]`: the software update scan and installs through apt.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftwareUpdates {
    /// `UpdateScanInterval`: how often the installed packages are scanned against the
    /// catalog, besides the scan a new catalog starts.
    pub scan_interval: Duration,
    /// `AptKeyring`: the keyring apt checks update repositories against (`signed-by`); none:
    /// apt's own trusted keys.
    pub apt_keyring: Option<String>,
    /// `AptTimeout`: the deadline of one apt-get run.
    pub apt_timeout: Duration,
    /// `DpkgLockTimeout`: how long apt waits for dpkg's lock.
    pub dpkg_lock_timeout: Duration,
}

/// `[SystemImages]`: the device's own update engines, which install system images.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemImages {
    /// `SWUpdateCommand`.
    pub swupdate_command: String,
    /// `SWUpdateConfig`.
    pub swupdate_config: String,
    /// `SWUpdatePublicKey`.
    pub swupdate_public_key: Option<String>,
    /// `SWUpdateHardware`: `board:revision`.
    pub swupdate_hardware: Option<String>,
    /// `AllowUnsignedImages`.
    pub allow_unsigned: bool,
    /// `RaucCommand`.
    pub rauc_command: String,
    /// `ImageInstallTimeout`.
    pub install_timeout: Duration,
    /// `RebootCommand`, split on spaces; empty: the agent does not restart the device.
    pub reboot_command: Vec<String>,
}

/// `[Tether]`: what a desktop's `dmtether` installs the client on.
#[derive(Debug, Clone, PartialEq)]
pub struct Tether {
    /// `Devices`: the devices reached over SSH.
    pub devices: Vec<crate::tether::SshTarget>,
    /// `ProbeTimeout`: how long a device that is not connected may take to answer.
    pub probe_timeout: Duration,
    /// `ScanInterval`: how often `dmtether watch` looks for devices.
    pub scan_interval: Duration,
    /// `InstallTimeout`: the deadline of one copy or one install on a device.
    pub install_timeout: Duration,
}

/// All settings, typed, with the values the file set explicitly.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `[Installation]`.
    pub installation: Installation,
    /// `[Environment]`.
    pub environment: Environment,
    /// `[Communication]`.
    pub communication: Communication,
    /// `[UserInterface]`.
    pub user_interface: UserInterface,
    /// `[Certificates]`.
    pub certificates: Certificates,
    /// `[Configuration]`.
    pub configuration: Configuration,
    /// `[Tether]`.
    pub tether: Tether,
    /// `[SoftwareUpdates]`.
    pub software_updates: SoftwareUpdates,
    /// `[SystemImages]`.
    pub system_images: SystemImages,
    explicit: BTreeMap<(&'static str, &'static str), String>,
}

fn parse_choice<T: Copy>(v: &str, choices: &[(&str, T)]) -> Result<T, String> {
    choices.iter().find(|(name, _)| name.eq_ignore_ascii_case(v)).map(|(_, t)| *t).ok_or_else(
        || {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            format!("expected one of {}, found {v:?}", names.join(", "))
        },
    )
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("expected true or false (or 1/0, yes/no, on/off), found {v:?}")),
    }
}

fn parse_int(v: &str, min: u64, max: u64, unit: &str) -> Result<u64, String> {
    let n: u64 = v.parse().map_err(|_| {
        format!("expected a whole number of {unit} from {min} to {max}, found {v:?}")
    })?;
    if !(min..=max).contains(&n) {
        return Err(format!("expected {unit} from {min} to {max}, found {n}"));
    }
    Ok(n)
}

fn parse_secs(v: &str, min: u64, max: u64) -> Result<Duration, String> {
    parse_int(v, min, max, "seconds").map(Duration::from_secs)
}

/// Comma-separated `ssh://` URLs.
fn parse_targets(v: &str) -> Result<Vec<crate::tether::SshTarget>, String> {
    v.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::parse).collect()
}

fn parse_url(v: &str, schemes: &[&str]) -> Result<String, String> {
    let expected = || {
        format!(
            "expected a {} URL such as {}://mp.example.com:8443, found {v:?}",
            schemes.join(" or "),
            schemes[0]
        )
    };
    let (scheme, rest) = v.split_once("://").ok_or_else(expected)?;
    if !schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
        return Err(expected());
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty()
        || host.contains('@')
        || v.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(expected());
    }
    Ok(v.trim_end_matches('/').to_string())
}

/// The most management points one device knows.
pub const MAX_MANAGEMENT_POINTS: usize = 8;

/// One or several https URLs separated by commas, none twice; empty is none.
fn parse_urls(v: &str) -> Result<Vec<String>, String> {
    if v.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut urls: Vec<String> = Vec::new();
    for part in v.split(',') {
        let url = parse_url(part.trim(), &["https"])?;
        if urls.iter().any(|u| u.eq_ignore_ascii_case(&url)) {
            return Err(format!("{url} is listed twice"));
        }
        urls.push(url);
    }
    if urls.len() > MAX_MANAGEMENT_POINTS {
        return Err(format!("at most {MAX_MANAGEMENT_POINTS} URLs, found {}", urls.len()));
    }
    Ok(urls)
}

fn parse_name(v: &str, max: usize) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= max
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !v.starts_with('.');
    if !ok {
        return Err(format!(
            "expected 1 to {max} letters, digits, '.', '_' or '-' (not starting with '.'), found {v:?}"
        ));
    }
    Ok(v.to_string())
}

fn parse_token(v: &str) -> Result<Secret, String> {
    if v.is_empty() || v.len() > 128 || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "expected 1 to 128 visible characters without spaces, found {} characters",
            v.chars().count()
        ));
    }
    Ok(Secret::new(v))
}

/// An absolute path.
fn parse_abs_path(v: &str) -> Result<String, String> {
    if v.starts_with('/') && !v.contains(['\n', '\0']) {
        Ok(v.to_string())
    } else {
        Err("expected an absolute path".into())
    }
}

/// A program: a bare name (found in PATH) or an absolute path.
fn parse_program(v: &str) -> Result<String, String> {
    let bare = !v.is_empty() && !v.contains('/') && !v.contains(char::is_whitespace);
    if bare { Ok(v.to_string()) } else { parse_abs_path(v) }
}

fn opt<T>(v: &str, f: impl FnOnce(&str) -> Result<T, String>) -> Result<Option<T>, String> {
    if v.is_empty() { Ok(None) } else { f(v).map(Some) }
}

impl Settings {
    fn set(&mut self, def: &KeyDef, v: &str) -> Result<(), String> {
        use InstallAction as IA;
        match def.key {
            "ClientInstallAction" => {
                self.installation.client_install_action = parse_choice(
                    v,
                    &[("None", IA::None), ("Install", IA::Install), ("Uninstall", IA::Uninstall)],
                )?
            }
            "CertEnrollAction" => {
                self.installation.cert_enroll_action = parse_choice(
                    v,
                    &[("Enroll", CertEnrollAction::Enroll), ("None", CertEnrollAction::None)],
                )?
            }
            "ManagementPoint" => self.environment.management_points = parse_urls(v)?,
            "Tenant" => self.environment.tenant = parse_name(v, 64)?,
            "ControllerId" => self.environment.controller_id = opt(v, |v| parse_name(v, 64))?,
            "SiteCode" => {
                self.environment.site_code = opt(v, |v| {
                    if v.len() <= 8 && v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                        Ok(v.to_ascii_uppercase())
                    } else {
                        Err(format!("expected 1 to 8 letters or digits, found {v:?}"))
                    }
                })?
            }
            "DeviceClass" => {
                self.environment.device_class = parse_choice(
                    v,
                    &[("Mobile", DeviceClass::Mobile), ("Desktop", DeviceClass::Desktop)],
                )?
            }
            "Authentication" => {
                self.communication.authentication = parse_choice(
                    v,
                    &[
                        ("TargetToken", AuthMode::TargetToken),
                        ("GatewayToken", AuthMode::GatewayToken),
                        ("Certificate", AuthMode::Certificate),
                    ],
                )?
            }
            "TargetToken" => self.communication.target_token = opt(v, parse_token)?,
            "GatewayToken" => self.communication.gateway_token = opt(v, parse_token)?,
            "PollInterval" => self.communication.poll_interval = parse_secs(v, 10, 86_400)?,
            "MinPollInterval" => self.communication.min_poll_interval = parse_secs(v, 1, 86_400)?,
            "ConnectTimeout" => self.communication.connect_timeout = parse_secs(v, 1, 300)?,
            "ReadTimeout" => self.communication.read_timeout = parse_secs(v, 1, 600)?,
            "RequestTimeout" => self.communication.request_timeout = parse_secs(v, 1, 3_600)?,
            "DownloadTimeout" => self.communication.download_timeout = parse_secs(v, 10, 86_400)?,
            "RetryMaxDelay" => self.communication.retry_max_delay = parse_secs(v, 1, 86_400)?,
            "Proxy" => self.communication.proxy = opt(v, |v| parse_url(v, &["http", "https"]))?,
            "ServerRootCertificate" => {
                self.communication.server_root_certificate = opt(v, |v| Ok(v.to_string()))?
            }
            "BandwidthLimit" => {
                self.communication.bandwidth_limit_kib = parse_int(v, 0, 10_000_000, "KiB/s")?
            }
            "VerboseLogging" => self.user_interface.verbose_logging = parse_bool(v)?,
            "LogRetention" => {
                self.user_interface.log_retention = parse_int(v, 1, 1000, "files")? as usize
            }
            "LogMaxSize" => {
                self.user_interface.log_max_size_kib = parse_int(v, 16, 1_048_576, "KiB")?
            }
            "ScepUrl" => self.certificates.scep_url = opt(v, |v| parse_url(v, &["http", "https"]))?,
            "ScepChallenge" => self.certificates.scep_challenge = opt(v, |v| Ok(Secret::new(v)))?,
            "CertificateSubject" => {
                self.certificates.certificate_subject = opt(v, |v| {
                    if v.len() <= 64 && !v.chars().any(char::is_control) {
                        Ok(v.to_string())
                    } else {
                        Err("expected at most 64 characters without control characters".into())
                    }
                })?
            }
            "RenewDaysBeforeExpiry" => {
                self.certificates.renew_days_before_expiry = parse_int(v, 1, 365, "days")? as u32
            }
            "KeySize" => {
                self.certificates.key_size = match v {
                    "2048" | "3072" | "4096" => parse_int(v, 2048, 4096, "bits")? as usize,
                    _ => return Err("expected 2048, 3072 or 4096".into()),
                }
            }
            "ScepCaThumbprint" => {
                self.certificates.scep_ca_thumbprint = opt(v, |v| {
                    let hex = v.replace(':', "").to_ascii_lowercase();
                    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        Ok(hex)
                    } else {
                        Err("expected the certificate's SHA-256: 64 hexadecimal digits".into())
                    }
                })?
            }
            "ScepPendingTimeout" => {
                self.certificates.scep_pending_timeout = parse_secs(v, 10, 7 * 86_400)?
            }
            "Devices" => self.tether.devices = parse_targets(v)?,
            "EvaluationInterval" => {
                self.configuration.evaluation_interval = parse_secs(v, 60, 86_400)?
            }
            "UpdateScanInterval" => {
                self.software_updates.scan_interval = parse_secs(v, 300, 7 * 86_400)?
            }
            "AptKeyring" => {
                self.software_updates.apt_keyring = opt(v, |v| {
                    if v.starts_with('/') && !v.contains([']', ' ', '\n']) {
                        Ok(v.to_string())
                    } else {
                        Err("expected an absolute path to a keyring file".into())
                    }
                })?
            }
            "AptTimeout" => self.software_updates.apt_timeout = parse_secs(v, 60, 86_400)?,
            "DpkgLockTimeout" => self.software_updates.dpkg_lock_timeout = parse_secs(v, 0, 3600)?,
            "SWUpdateCommand" => self.system_images.swupdate_command = parse_program(v)?,
            "SWUpdateConfig" => self.system_images.swupdate_config = parse_abs_path(v)?,
            "SWUpdatePublicKey" => self.system_images.swupdate_public_key = opt(v, parse_abs_path)?,
            "SWUpdateHardware" => {
                self.system_images.swupdate_hardware = opt(v, |v| match v.split_once(':') {
                    Some((b, r))
                        if !b.is_empty()
                            && !r.is_empty()
                            && v.len() <= 128
                            && !v.contains(char::is_whitespace) =>
                    {
                        Ok(v.to_string())
                    }
                    _ => Err("expected board:revision".into()),
                })?
            }
            "AllowUnsignedImages" => self.system_images.allow_unsigned = parse_bool(v)?,
            "RaucCommand" => self.system_images.rauc_command = parse_program(v)?,
            "ImageInstallTimeout" => {
                self.system_images.install_timeout = parse_secs(v, 60, 86_400)?
            }
            "RebootCommand" => {
                self.system_images.reboot_command =
                    v.split_whitespace().map(str::to_string).collect()
            }
            "ProbeTimeout" => self.tether.probe_timeout = parse_secs(v, 1, 60)?,
            "ScanInterval" => self.tether.scan_interval = parse_secs(v, 5, 3600)?,
            "InstallTimeout" => self.tether.install_timeout = parse_secs(v, 60, 7200)?,
            other => {
                return Err(format!(
                    "key {other} is listed but has no parser (a bug in this build)"
                ));
            }
        }
        Ok(())
    }

    fn blank() -> Settings {
        Settings {
            installation: Installation {
                client_install_action: InstallAction::Install,
                cert_enroll_action: CertEnrollAction::None,
            },
            environment: Environment {
                management_points: Vec::new(),
                tenant: String::new(),
                controller_id: None,
                site_code: None,
                device_class: DeviceClass::Mobile,
            },
            communication: Communication {
                authentication: AuthMode::TargetToken,
                target_token: None,
                gateway_token: None,
                poll_interval: Duration::ZERO,
                min_poll_interval: Duration::ZERO,
                connect_timeout: Duration::ZERO,
                read_timeout: Duration::ZERO,
                request_timeout: Duration::ZERO,
                download_timeout: Duration::ZERO,
                retry_max_delay: Duration::ZERO,
                proxy: None,
                server_root_certificate: None,
                bandwidth_limit_kib: 0,
            },
            user_interface: UserInterface {
                verbose_logging: false,
                log_retention: 0,
                log_max_size_kib: 0,
            },
            certificates: Certificates {
                scep_url: None,
                scep_challenge: None,
                certificate_subject: None,
                renew_days_before_expiry: 0,
                key_size: 0,
                scep_ca_thumbprint: None,
                scep_pending_timeout: Duration::ZERO,
            },
            configuration: Configuration { evaluation_interval: Duration::ZERO },
            tether: Tether {
                devices: Vec::new(),
                probe_timeout: Duration::ZERO,
                scan_interval: Duration::ZERO,
                install_timeout: Duration::ZERO,
            },
            software_updates: SoftwareUpdates {
                scan_interval: Duration::ZERO,
                apt_keyring: None,
                apt_timeout: Duration::ZERO,
                dpkg_lock_timeout: Duration::ZERO,
            },
            system_images: SystemImages {
                swupdate_command: String::new(),
                swupdate_config: String::new(),
                swupdate_public_key: None,
                swupdate_hardware: None,
                allow_unsigned: false,
                rauc_command: String::new(),
                install_timeout: Duration::ZERO,
                reboot_command: Vec::new(),
            },
            explicit: BTreeMap::new(),
        }
    }

    /// The settings of a file that sets nothing.
    pub fn defaults() -> Settings {
        let mut s = Settings::blank();
        for def in KEYS {
            // The defaults are tested to parse (see tests::every_default_parses).
            let _ = s.set(def, def.default);
        }
        s
    }

    /// Parses the text of a settings file. `file` is only used to name the file in errors.
    /// Returns the settings and the warnings (unknown and duplicate keys) to log.
    pub fn parse(file: &Path, bytes: &[u8]) -> Result<(Settings, Vec<String>), SettingsError> {
        let err = |section: &str, key: &str, problem: String| SettingsError {
            file: file.to_path_buf(),
            line: None,
            section: Some(section.to_string()),
            key: Some(key.to_string()),
            problem,
        };
        let doc = parse_ini_document(file, bytes)?;

        let mut settings = Settings::defaults();
        let mut warnings = Vec::new();
        let mut seen: BTreeMap<(&str, &str), String> = BTreeMap::new();
        for (section, props) in doc.iter() {
            for (key, value) in props.iter() {
                let value = value.trim();
                let Some(section) = section else {
                    warnings.push(format!(
                        "{}: key {key} is outside any section and is ignored; put it under one of [{}]",
                        file.display(),
                        SECTIONS.join("], [")
                    ));
                    continue;
                };
                let Some(def) = key_def(section, key) else {
                    let hint = KEYS
                        .iter()
                        .find(|d| d.key.eq_ignore_ascii_case(key))
                        .map(|d| format!(" ({} belongs in [{}])", d.key, d.section))
                        .unwrap_or_default();
                    warnings.push(format!(
                        "{}: unknown key [{section}] {key} is ignored{hint}",
                        file.display()
                    ));
                    continue;
                };
                if let Some(prev) = seen.insert((def.section, def.key), value.to_string()) {
                    let show = |v: &str| {
                        if def.secret { "<redacted>".to_string() } else { format!("{v:?}") }
                    };
                    warnings.push(format!(
                        "{}: [{}] {} is set more than once; the last value {} wins over {}",
                        file.display(),
                        def.section,
                        def.key,
                        show(value),
                        show(&prev)
                    ));
                }
                settings.set(def, value).map_err(|p| err(def.section, def.key, p))?;
                settings.explicit.insert((def.section, def.key), value.to_string());
            }
        }
        Ok((settings, warnings))
    }

    /// Reads and parses a settings file, logging its warnings.
    pub fn load(path: &Path) -> Result<Settings, crate::Error> {
        let bytes = crate::fs::read_capped(path, MAX_SETTINGS_BYTES).map_err(|e| match e {
            crate::Error::TooLarge { actual, .. } => crate::Error::Settings(SettingsError {
                file: path.to_path_buf(),
                line: None,
                section: None,
                key: None,
                problem: format!("the file is {actual} bytes; a settings file is at most {MAX_SETTINGS_BYTES} bytes"),
            }),
            other => other,
        })?;
        let (settings, warnings) = Settings::parse(path, &bytes)?;
        for w in warnings {
            log::warn!("{w}");
        }
        Ok(settings)
    }

    /// The keys the file set, with their values as written (secrets included: the caller
    /// redacts with [`KeyDef::secret`]).
    pub fn explicit(&self) -> impl Iterator<Item = (&'static KeyDef, &str)> {
        self.explicit.iter().filter_map(|((s, k), v)| Some((key_def(s, k)?, v.as_str())))
    }

    /// The value the file set for a key, if it set one.
    pub fn explicit_value(&self, section: &str, key: &str) -> Option<&str> {
        let def = key_def(section, key)?;
        self.explicit.get(&(def.section, def.key)).map(String::as_str)
    }

    /// Sets one key by its text value, checked like a file's; for setup to fill in derived
    /// values (such as the controller id).
    pub fn set_value(&mut self, section: &str, key: &str, value: &str) -> Result<(), String> {
        let def = key_def(section, key).ok_or_else(|| format!("unknown key [{section}] {key}"))?;
        self.set(def, value)?;
        self.explicit.insert((def.section, def.key), value.to_string());
        Ok(())
    }

    /// The settings as a canonical INI file: every explicitly set key, in table order.
    pub fn to_ini(&self) -> String {
        let mut out =
            String::from("; Written by dmclientsetup. Keys and defaults: docs/settings.md\n");
        for section in SECTIONS {
            let keys: Vec<_> = KEYS
                .iter()
                .filter(|d| d.section == section)
                .filter_map(|d| Some((d, self.explicit.get(&(d.section, d.key))?)))
                .collect();
            if keys.is_empty() {
                continue;
            }
            out.push_str(&format!("\n[{section}]\n"));
            for (d, v) in keys {
                out.push_str(&format!("{}={}\n", d.key, v));
            }
        }
        out
    }

    /// The log level these settings ask for.
    pub fn log_level(&self) -> log::LevelFilter {
        if self.user_interface.verbose_logging {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Info
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<(Settings, Vec<String>), SettingsError> {
        Settings::parse(Path::new("DMCommonInstaller.ini"), text.as_bytes())
    }

    #[test]
    fn every_default_parses() {
        let mut s = Settings::blank();
        for def in KEYS {
            s.set(def, def.default).unwrap_or_else(|e| panic!("default of {}: {e}", def.key));
        }
        assert!(SECTIONS.iter().all(|sec| KEYS.iter().any(|d| d.section == *sec)));
        // A key of a section not listed would be dropped when setup writes the settings.
        assert!(
            KEYS.iter().all(|d| SECTIONS.contains(&d.section)),
            "a key's section is not in SECTIONS"
        );
    }

    #[test]
    fn defaults() {
        let s = Settings::defaults();
        assert_eq!(s.installation.client_install_action, InstallAction::Install);
        assert_eq!(s.installation.cert_enroll_action, CertEnrollAction::None);
        assert_eq!(s.environment.tenant, "DEFAULT");
        assert_eq!(s.communication.poll_interval, Duration::from_secs(300));
        assert_eq!(s.user_interface.log_retention, 10);
        assert!(s.environment.management_points.is_empty());
        assert_eq!(s.explicit().count(), 0);
    }

    #[test]
    fn several_management_points_in_order_none_twice() {
        let (s, _) = parse(
            "[Environment]\nManagementPoint = https://a.example:8443/, https://b.example:8443\n",
        )
        .unwrap();
        assert_eq!(
            s.environment.management_points,
            ["https://a.example:8443", "https://b.example:8443"]
        );
        let nine: Vec<String> = (0..9).map(|i| format!("https://h{i}.example")).collect();
        let nine = nine.join(",");
        for bad in [
            "https://a.example, http://b.example",
            "https://a.example, https://A.example",
            "https://a.example,,https://b.example",
            nine.as_str(),
        ] {
            let e = parse(&format!("[Environment]\nManagementPoint = {bad}\n")).unwrap_err();
            assert!(e.to_string().contains("ManagementPoint"), "{bad}: {e}");
        }
    }

    #[test]
    fn full_file_with_bom_crlf_and_comments() {
        let text = "\u{feff}; deployment settings\r\n[Installation]\r\nClientInstallAction = uninstall\r\n\
            # enroll too\r\ncertenrollaction=Enroll\r\n[environment]\r\nManagementPoint=https://mp.example.com:8443/\r\n\
            Tenant=acme\r\nControllerId=dev-0001\r\nSiteCode=abc\r\n[Communication]\r\nTargetToken=s3cr3t\r\n\
            PollInterval=60\r\n[UserInterface]\r\nVerboseLogging=yes\r\n[Certificates]\r\nScepUrl=http://ca.example.com/scep\r\n\
            ScepChallenge=pw\r\n";
        let (s, warnings) = parse(text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(s.installation.client_install_action, InstallAction::Uninstall);
        assert_eq!(s.installation.cert_enroll_action, CertEnrollAction::Enroll);
        assert_eq!(s.environment.management_points, ["https://mp.example.com:8443"]);
        assert_eq!(s.environment.tenant, "acme");
        assert_eq!(s.environment.controller_id.as_deref(), Some("dev-0001"));
        assert_eq!(s.environment.site_code.as_deref(), Some("ABC"));
        assert_eq!(s.communication.target_token.as_ref().map(Secret::expose), Some("s3cr3t"));
        assert_eq!(s.communication.poll_interval, Duration::from_secs(60));
        assert!(s.user_interface.verbose_logging);
        assert_eq!(s.log_level(), log::LevelFilter::Debug);
        assert_eq!(s.certificates.scep_challenge.as_ref().map(Secret::expose), Some("pw"));
        assert_eq!(s.explicit_value("installation", "clientinstallaction"), Some("uninstall"));
    }

    #[test]
    fn utf16_files_from_windows_notepad() {
        let text = "[Installation]\r\nClientInstallAction=None\r\n";
        let mut le = vec![0xFF, 0xFE];
        le.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        let (s, _) = Settings::parse(Path::new("x.ini"), &le).unwrap();
        assert_eq!(s.installation.client_install_action, InstallAction::None);
        let mut be = vec![0xFE, 0xFF];
        be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
        assert!(Settings::parse(Path::new("x.ini"), &be).is_ok());
        let err = Settings::parse(Path::new("x.ini"), &[0xFF, 0xFE, 0x41]).unwrap_err();
        assert!(err.problem.contains("odd number of bytes"), "{err}");
    }

    #[test]
    fn bad_value_names_file_section_key_and_expectation() {
        let err = parse("[Installation]\nClientInstallAction=Instal\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "DMCommonInstaller.ini [Installation] ClientInstallAction: expected one of None, Install, Uninstall, found \"Instal\""
        );
        let err = parse("[Communication]\nPollInterval=5\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "DMCommonInstaller.ini [Communication] PollInterval: expected seconds from 10 to 86400, found 5"
        );
        let err = parse("[Environment]\nManagementPoint=http://mp\n").unwrap_err();
        assert!(err.to_string().contains("expected a https URL"), "{err}");
        let err = parse("[Environment]\nControllerId=../../etc\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("ControllerId"));
    }

    #[test]
    fn tethered_devices_are_a_list_of_ssh_urls() {
        let text = "[Tether]\nDevices = ssh://root@10.0.0.7, ssh://dm@h:2222/img ,\n";
        let (s, _) = Settings::parse(Path::new("x.ini"), text.as_bytes()).unwrap();
        let urls: Vec<String> = s.tether.devices.iter().map(|t| t.to_string()).collect();
        assert_eq!(urls, ["ssh://root@10.0.0.7:22", "ssh://dm@h:2222/img"]);
        let bad = "[Tether]\nDevices = ssh://root@10.0.0.7, root@h\n";
        let e = Settings::parse(Path::new("x.ini"), bad.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("[Tether] Devices"), "{e}");
    }

    #[test]
    fn secrets_never_appear_in_errors_or_warnings() {
        let err = parse("[Communication]\nTargetToken=has space\n").unwrap_err();
        assert!(!err.to_string().contains("has space"), "{err}");
        let (_, w) = parse("[Communication]\nTargetToken=one\nTargetToken=two\n").unwrap();
        assert_eq!(w.len(), 1);
        assert!(!w[0].contains("one") && !w[0].contains("two"), "{w:?}");
        assert!(format!("{:?}", Secret::new("abc")).contains("redacted"));
        assert_eq!(Secret::new("abc").to_string(), "<redacted, 3 characters>");
    }

    #[test]
    fn unknown_and_duplicate_keys_warn() {
        let (s, w) = parse("Orphan=1\n[Installation]\nClientInstallAction=None\nClientInstallAction=Uninstall\nColour=blue\n[Environment]\nPollInterval=60\n").unwrap();
        assert_eq!(s.installation.client_install_action, InstallAction::Uninstall);
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w[0].contains("Orphan") && w[0].contains("outside any section"), "{w:?}");
        assert!(
            w.iter().any(|x| x.contains("set more than once")
                && x.contains("\"Uninstall\" wins over \"None\"")),
            "{w:?}"
        );
        assert!(w.iter().any(|x| x.contains("unknown key [Installation] Colour")), "{w:?}");
        assert!(w.iter().any(|x| x.contains("PollInterval belongs in [Communication]")), "{w:?}");
    }

    #[test]
    fn empty_binary_and_huge_files() {
        let (s, w) = parse("").unwrap();
        assert_eq!(s, Settings::defaults());
        assert!(w.is_empty());

        let err = Settings::parse(
            Path::new("card/ClientSettings.ini"),
            &[0x7f, 0x45, 0x4c, 0x46, 0, 0xff, 0xfe],
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("card/ClientSettings.ini: not a text file"), "{err}");
        let err = Settings::parse(Path::new("a.ini"), b"[A]\nx=\x01\n").unwrap_err();
        assert!(err.problem.contains("control character at line 2"), "{err}");

        let huge = vec![b'a'; 10 * 1024 * 1024];
        let err = Settings::parse(Path::new("big.ini"), &huge).unwrap_err();
        assert!(
            err.to_string().contains("10485760 bytes; a settings file is at most 1048576 bytes"),
            "{err}"
        );
    }

    #[test]
    fn load_reports_large_files_as_settings_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ClientSettings.ini");
        std::fs::write(&p, vec![b';'; 10 * 1024 * 1024]).unwrap();
        let err = Settings::load(&p).unwrap_err();
        assert!(matches!(err, crate::Error::Settings(_)), "{err}");
        assert_eq!(err.code(), crate::StatusCode::ERROR_BAD_CONFIGURATION);
        assert!(err.to_string().contains("ClientSettings.ini"), "{err}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = parse("[Installation]\n[Broken\nx=1\n").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.to_string().contains("line 2: a section header must be [Name]"), "{err}");
        // The file's text is never quoted: it may be a secret a link pointed at.
        let err = parse("root:$6$secret-hash:19000:0:99999:7:::\n").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        let err =
            parse("[Installation]\nClientInstallAction\nCertEnrollAction=None\n").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.problem.contains("expected Key=Value"), "{err}");
        let err = parse("[Communication]\nTargetToken=\"abc\n").unwrap_err();
        assert!(err.problem.contains("opens a quote"), "{err}");
        let err = parse("[Communication]\n=abc\n").unwrap_err();
        assert!(err.problem.contains("no key"), "{err}");
    }

    /// Found by the `settings` fuzz target (fuzz/regressions/settings/): the INI parser read
    /// some lines on into the next one, so a file meant something else than every line shows,
    /// and settings written out again (`to_ini`) lost a key. Each such line is refused.
    #[test]
    fn a_line_never_reads_on_into_the_next() {
        // Before, the token swallowed the next line: TargetToken was
        // "abcManagementPoint=https://evil", and no ManagementPoint was set.
        let attack = "[Communication]\nTargetToken=abc\\\nManagementPoint=https://evil\n";
        for (text, line, want) in [
            (attack, 2, "ends with a backslash"),
            ("[Environment]\nSiteCode=\"WH1\"\"\nTenant=\"x\"\n", 2, "opens a quote"),
            ("[Environment]\nSiteCode='WH1\\'\nTenant='x'\n", 2, "opens a quote"),
            ("[Env\\]\nSiteCode=WH1\n[x]\n", 1, "a section header"),
            ("[Environment]x]\nSiteCode=WH1\n", 1, "a section header"),
            ("[Environment]\n  ; a note\nSiteCode=WH1\n", 2, "a comment starts"),
            ("[Environment]\nSite:Code=WH1\n", 2, "a key holds no"),
            ("[Environment]\nSite\\=x\nSiteCode=WH1\n", 2, "a key holds no"),
            ("[Environment]\nSiteCode=WH1\rTenant=x\n", 2, "carriage return"),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, Some(line), "{text:?}: {err}");
            assert!(err.problem.contains(want), "{text:?}: {err}");
        }
        // What stays on its line still reads: pairs of backslashes, quotes closed, CRLF.
        let text = "[S]\r\nA='W\\'H'\r\nB=a\\\\\r\n; c\\\r\nC=\"x\"'y'z\\\\\r\n";
        let doc = crate::ini::parse_ini_document(Path::new("x.ini"), text.as_bytes()).unwrap();
        let s = doc.section(Some("S")).unwrap();
        assert_eq!((s.get("A"), s.get("B")), (Some("W\\'H"), Some("a\\\\")));
        assert_eq!((s.get("C"), s.len()), (Some("xyz\\\\"), 3));
    }

    #[test]
    fn quotes_are_removed_and_trailing_text_is_part_of_the_value() {
        let (s, _) = parse("[Communication]\nTargetToken=\"ab#cd;ef\"\n").unwrap();
        assert_eq!(s.communication.target_token.as_ref().map(Secret::expose), Some("ab#cd;ef"));
        // As in Windows, there are no comments after a value.
        let err = parse("[Installation]\nClientInstallAction=Install ; go\n").unwrap_err();
        assert!(err.problem.contains("found \"Install ; go\""), "{err}");
    }

    #[test]
    fn canonical_form_round_trips() {
        let (s, _) = parse("[installation]\nclientinstallaction=None\n[Communication]\nTargetToken=abc\nPollInterval=60\n").unwrap();
        let text = s.to_ini();
        assert!(text.contains("[Installation]\nClientInstallAction=None\n"), "{text}");
        let (back, w) = parse(&text).unwrap();
        assert!(w.is_empty());
        assert_eq!(back, s);
    }

    #[test]
    fn set_value_validates() {
        let mut s = Settings::defaults();
        s.set_value("Environment", "ControllerId", "dev-1").unwrap();
        assert_eq!(s.environment.controller_id.as_deref(), Some("dev-1"));
        assert!(s.set_value("Environment", "ControllerId", "a/b").is_err());
        assert!(s.set_value("Nope", "X", "1").is_err());
    }

    #[test]
    fn docs_list_every_key_with_its_default() {
        let docs = include_str!("../../../docs/settings.md");
        for def in KEYS {
            let row = format!("| `{}` |", def.key);
            let line = docs
                .lines()
                .find(|l| l.starts_with(&row))
                .unwrap_or_else(|| panic!("docs/settings.md has no row for {}", def.key));
            let default = if def.default.is_empty() {
                "(empty)".to_string()
            } else {
                format!("`{}`", def.default)
            };
            assert!(
                line.contains(&default),
                "docs/settings.md: {} should show default {default}: {line}",
                def.key
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Settings::parse(Path::new("fuzz.ini"), &bytes);
        }

        #[test]
        fn never_panics_on_ini_shaped_text(
            lines in proptest::collection::vec(
                prop_oneof![
                    "\\[[A-Za-z]{0,14}\\]",
                    "(ClientInstallAction|PollInterval|ManagementPoint|TargetToken|LogRetention|VerboseLogging|[a-z]{1,8}) ?= ?[ -~]{0,20}",
                    "[;#][ -~]{0,20}",
                    "[ -~]{0,30}",
                ],
                0..20,
            )
        ) {
            let text = lines.join("\n");
            let _ = parse(&text);
        }
    }
}
