//! The software distribution model, in the source documents' names: devices, packages,
//! programs, collections, advertisements; and what the management point tracks per device:
//! actions (an advertisement delivered to one device) and status records.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use dm_shared::ClientVersion;
pub use dm_shared::ddi::Rerun;
use dm_shared::ddi::{Execution, Finished};
pub use dm_shared::programs::SignedProgram;
use serde::{Deserialize, Serialize};

use crate::error::Error;

pub use dm_shared::config_item::ConfigItem;
pub use dm_shared::vocab::inventory as attr;
pub use dm_shared::vocab::{DeviceClass, PackageKind};

/// A device the management point knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// Row id.
    pub id: i64,
    /// DDI tenant.
    pub tenant: String,
    /// DDI controller id.
    pub controller_id: String,
    /// SHA-256 of its target token, if it has one.
    #[serde(skip)]
    pub token_sha256: Option<String>,
    /// Inventory attributes from `configData`.
    pub attributes: BTreeMap<String, String>,
    /// When it was registered (Unix seconds).
    pub created: i64,
    /// When it last polled (Unix seconds).
    pub last_seen: Option<i64>,
    /// How it was registered: `admin`, `target-token`, `gateway-token`, `certificate`,
    /// `approved`.
    pub registered_by: String,
    /// Whether its actions need no confirmation by its user, since when and by whom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_confirm: Option<AutoConfirm>,
    /// The client certificate it last authenticated with (SHA-256 of its DER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
}

/// A device's auto-confirmation (hawkBit's `activateAutoConfirm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoConfirm {
    /// Who turned it on, as the device said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator: Option<String>,
    /// Why, as the device said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remark: Option<String>,
    /// When (Unix seconds).
    pub activated_at: i64,
}

impl Device {
    /// How a device that registered itself with a target token is recorded (trust on first
    /// use: anyone could have been first).
    pub const SELF_REGISTERED: &'static str = "target-token";

    /// How a device that registered itself with a client certificate is recorded.
    pub const CERTIFICATE_REGISTERED: &'static str = "certificate";

    /// Whether the server knows who the device is: added or approved by an administrator, or
    /// registered by the gateway token, or by a client certificate when `trust_certificates`
    /// (`[devices] trust_certificate_registrations`). A device that only registered itself is
    /// not, and never receives a client deployment (its settings hold the fleet's secrets).
    pub fn is_verified(&self, trust_certificates: bool) -> bool {
        match self.registered_by.as_str() {
            Self::SELF_REGISTERED => false,
            Self::CERTIFICATE_REGISTERED => trust_certificates,
            _ => true,
        }
    }

    /// Whether `s` may be a controller id: 1 to 64 letters, digits, `.`, `_` or `-` (what a
    /// URL path segment, a log line and a terminal take as it is).
    pub fn valid_controller_id(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    }

    /// An attribute.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// One file of a package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// Its file name (a signed manifest path; `/` allowed).
    pub filename: String,
    /// Size.
    pub size: u64,
    /// SHA-256 (hex).
    pub sha256: String,
    /// SHA-1 (hex).
    pub sha1: String,
    /// MD5 (hex).
    pub md5: String,
    /// Where the management point keeps it, when it serves it itself.
    pub path: Option<PathBuf>,
}

/// A package: a source folder imported as artifacts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Package {
    /// Row id; also the DDI software module id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: PackageKind,
    /// The publisher that signed its manifest (none for raw packages, such as SWUpdate images).
    pub publisher: Option<String>,
    /// An external distribution point (`https://…/`) serving its files, if not this server.
    pub distribution_point: Option<String>,
    /// When it was added.
    pub created: i64,
    /// Its files.
    pub artifacts: Vec<ArtifactRecord>,
    /// The programs its publisher signed (none for raw packages and client deployments).
    #[serde(default)]
    pub programs: Vec<SignedProgram>,
    /// The configuration items its publisher signed (a configuration package).
    #[serde(default)]
    pub config_items: Vec<ConfigItem>,
}

/// A program: what a device does with a package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program {
    /// Row id.
    pub id: i64,
    /// The package.
    pub package_id: i64,
    /// Name.
    pub name: String,
    /// Command line, run in the package folder.
    pub command: String,
    /// Platforms it may run on; empty means any.
    pub platforms: Vec<String>,
    /// Maximum run time in seconds.
    pub max_run_time: u64,
    /// The device class it is for.
    pub device_class: DeviceClass,
    /// The signed program of the package it runs (none for raw packages, whose own clients
    /// decide what to run).
    #[serde(default)]
    pub signed_program: Option<String>,
}

/// How a comparison on versions is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionOp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `=`
    Eq,
    /// `>=`
    Ge,
    /// `>`
    Gt,
}

/// Who is in a collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "kebab-case")]
pub enum CollectionRule {
    /// Every device.
    All,
    /// Devices of a platform.
    Platform {
        /// The platform.
        platform: String,
    },
    /// Devices of a model.
    Model {
        /// The model.
        model: String,
    },
    /// Devices whose client version compares so.
    ClientVersion {
        /// The comparison.
        op: VersionOp,
        /// The version.
        version: ClientVersion,
    },
    /// Devices with an inventory attribute of this value.
    Attribute {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// The explicit members.
    Explicit,
}

impl CollectionRule {
    /// Parses a rule: `all`, `platform=linux-aarch64`, `model=X`, `client-version<1.2.0.0`
    /// (also `<=`, `=`, `>=`, `>`), `attribute:key=value`, `explicit`.
    pub fn parse(s: &str) -> Result<CollectionRule, String> {
        let s = s.trim();
        if s == "all" {
            return Ok(CollectionRule::All);
        }
        if s == "explicit" {
            return Ok(CollectionRule::Explicit);
        }
        if let Some(p) = s.strip_prefix("platform=") {
            return Ok(CollectionRule::Platform { platform: p.to_string() });
        }
        if let Some(m) = s.strip_prefix("model=") {
            return Ok(CollectionRule::Model { model: m.to_string() });
        }
        if let Some(kv) = s.strip_prefix("attribute:") {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("rule {s:?}: expected attribute:KEY=VALUE"))?;
            return Ok(CollectionRule::Attribute { key: k.to_string(), value: v.to_string() });
        }
        if let Some(rest) = s.strip_prefix("client-version") {
            let (op, v) = [("<=", VersionOp::Le), (">=", VersionOp::Ge), ("<", VersionOp::Lt), (">", VersionOp::Gt), ("=", VersionOp::Eq)]
                .into_iter()
                .find_map(|(sym, op)| rest.strip_prefix(sym).map(|v| (op, v)))
                .ok_or_else(|| format!("rule {s:?}: expected client-version followed by <, <=, =, >= or > and a version"))?;
            return Ok(CollectionRule::ClientVersion {
                op,
                version: v.parse().map_err(|e| format!("rule {s:?}: {e}"))?,
            });
        }
        Err(format!(
            "rule {s:?}: expected all, platform=P, model=M, client-version<V (or <=, =, >=, >), attribute:KEY=VALUE or explicit"
        ))
    }

    /// Whether a device matches (explicit membership is checked by the caller).
    pub fn matches(&self, d: &Device) -> bool {
        match self {
            CollectionRule::All => true,
            CollectionRule::Platform { platform } => {
                d.attr(attr::PLATFORM) == Some(platform.as_str())
            }
            CollectionRule::Model { model } => d.attr(attr::MODEL) == Some(model.as_str()),
            CollectionRule::Attribute { key, value } => d.attr(key) == Some(value.as_str()),
            CollectionRule::ClientVersion { op, version } => {
                let Some(v) =
                    d.attr(attr::CLIENT_VERSION).and_then(|v| v.parse::<ClientVersion>().ok())
                else {
                    return false;
                };
                match op {
                    VersionOp::Lt => v < *version,
                    VersionOp::Le => v <= *version,
                    VersionOp::Eq => v == *version,
                    VersionOp::Ge => v >= *version,
                    VersionOp::Gt => v > *version,
                }
            }
            CollectionRule::Explicit => false,
        }
    }
}

impl fmt::Display for CollectionRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CollectionRule::All => write!(f, "all"),
            CollectionRule::Platform { platform } => write!(f, "platform={platform}"),
            CollectionRule::Model { model } => write!(f, "model={model}"),
            CollectionRule::Attribute { key, value } => write!(f, "attribute:{key}={value}"),
            CollectionRule::Explicit => write!(f, "explicit"),
            CollectionRule::ClientVersion { op, version } => {
                let sym = match op {
                    VersionOp::Lt => "<",
                    VersionOp::Le => "<=",
                    VersionOp::Eq => "=",
                    VersionOp::Ge => ">=",
                    VersionOp::Gt => ">",
                };
                write!(f, "client-version{sym}{version}")
            }
        }
    }
}

/// A collection of devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Collection {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// The tenant whose devices it holds: never another tenant's.
    pub tenant: String,
    /// Who is in it.
    pub rule: CollectionRule,
    /// Explicit members (device ids), for any rule.
    pub members: Vec<i64>,
    /// The daily window its devices run advertisements and install update deployments in
    /// (unless the advertisement or deployment has its own).
    #[serde(default)]
    pub window: Option<MaintenanceWindow>,
}

impl Collection {
    /// Whether a device is in the collection.
    pub fn contains(&self, d: &Device) -> bool {
        d.tenant == self.tenant && (self.members.contains(&d.id) || self.rule.matches(d))
    }
}

/// Mandatory, available, or download only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdvertisementKind {
    /// Runs when due (DDI `update: forced`).
    Mandatory,
    /// Offered; runs when the device's user asks (DDI `update: attempt`).
    Available,
    /// Downloaded, not run (DDI `update: skip`).
    DownloadOnly,
}

impl FromStr for AdvertisementKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mandatory" => Ok(AdvertisementKind::Mandatory),
            "available" => Ok(AdvertisementKind::Available),
            "download-only" => Ok(AdvertisementKind::DownloadOnly),
            _ => Err(format!("{s:?}: expected mandatory, available or download-only")),
        }
    }
}

impl AdvertisementKind {
    /// The name.
    pub fn as_str(self) -> &'static str {
        match self {
            AdvertisementKind::Mandatory => "mandatory",
            AdvertisementKind::Available => "available",
            AdvertisementKind::DownloadOnly => "download-only",
        }
    }
}

/// A daily maintenance window in UTC, `HH:MM-HH:MM`; it may wrap past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceWindow {
    /// Start, minutes after midnight UTC.
    pub start: u32,
    /// End, minutes after midnight UTC.
    pub end: u32,
}

impl MaintenanceWindow {
    /// Parses `22:00-04:00`.
    pub fn parse(s: &str) -> Result<MaintenanceWindow, String> {
        let bad = || {
            format!("maintenance window {s:?}: expected HH:MM-HH:MM in UTC, such as 22:00-04:00")
        };
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let minutes = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (start, end) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
        if start == end {
            return Err(format!("maintenance window {s:?} is empty"));
        }
        Ok(MaintenanceWindow { start, end })
    }

    /// Whether `unix` falls inside the window for one device: the window opens for it
    /// `spread % (half the window)` seconds after its start, so the devices of a fleet, each
    /// with its own `spread` (see [`MaintenanceWindow::spread`]), do not all install and
    /// restart at its first minute, and each keeps at least half the window.
    pub fn is_open_for(&self, unix: i64, spread: u64) -> bool {
        let len = i64::from((self.end + 1440 - self.start) % 1440) * 60;
        let into = (unix - i64::from(self.start) * 60).rem_euclid(86_400);
        let offset = (spread % (len as u64 / 2).max(1)) as i64;
        (offset..len).contains(&into)
    }

    /// The spread of `device_id` for what `what` names (an advertisement, an update
    /// deployment): the same at every poll.
    pub fn spread(device_id: i64, what: &str) -> u64 {
        fnv1a(format!("{what}/{device_id}").into_bytes())
    }

    /// Whether `unix` (seconds) falls inside the window.
    pub fn is_open(&self, unix: i64) -> bool {
        let m = (unix.rem_euclid(86_400) / 60) as u32;
        if self.start < self.end {
            (self.start..self.end).contains(&m)
        } else {
            m >= self.start || m < self.end
        }
    }
}

impl fmt::Display for MaintenanceWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// An advertisement: a program of a package offered to a collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advertisement {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// The program.
    pub program_id: i64,
    /// The collection.
    pub collection_id: i64,
    /// Mandatory, available or download only.
    pub kind: AdvertisementKind,
    /// When it becomes due (Unix seconds).
    pub start_time: i64,
    /// When it expires (Unix seconds).
    pub expires: Option<i64>,
    /// When mandatory programs may run.
    pub window: Option<MaintenanceWindow>,
    /// When it was made.
    pub created: i64,
    /// Whether it was canceled.
    pub canceled: bool,
    /// Whether a program that ran before on a device runs again.
    #[serde(default)]
    pub rerun: Rerun,
    /// Whether a device may take an older version of the package than it has had.
    #[serde(default)]
    pub allow_downgrade: bool,
}

impl Advertisement {
    /// A mandatory advertisement of a program to a collection from `now` on, without an end
    /// or a window, as rollouts make them (its id is the store's).
    pub fn mandatory(name: &str, program_id: i64, collection_id: i64, now: i64) -> Advertisement {
        Advertisement {
            id: 0,
            name: name.to_string(),
            program_id,
            collection_id,
            kind: AdvertisementKind::Mandatory,
            start_time: now,
            expires: None,
            window: None,
            created: now,
            canceled: false,
            rerun: Rerun::default(),
            allow_downgrade: false,
        }
    }

    /// Whether devices are offered it at `now`.
    pub fn is_active(&self, now: i64) -> bool {
        !self.canceled && self.start_time <= now && self.expires.is_none_or(|e| now < e)
    }
}

/// Where an action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum ActionStatus {
    /// Waiting for the device's user to consent (hawkBit's confirmation flow): an available
    /// program, offered as `confirmationBase` until confirmed.
    Waiting,
    /// Created, not yet fetched by the device.
    Scheduled,
    /// The device fetched it.
    Retrieved,
    /// The device reported progress (download, proceeding, …).
    Running,
    /// Closed with success.
    Finished,
    /// Closed with failure.
    Error,
    /// Canceled by an administrator; waiting for the device to confirm.
    Canceling,
    /// Canceled and confirmed.
    Canceled,
}

impl ActionStatus {
    /// Every state, in the order of an action's life.
    pub const ALL: [ActionStatus; 8] = [
        ActionStatus::Waiting,
        ActionStatus::Scheduled,
        ActionStatus::Retrieved,
        ActionStatus::Running,
        ActionStatus::Finished,
        ActionStatus::Error,
        ActionStatus::Canceling,
        ActionStatus::Canceled,
    ];

    /// The name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Waiting => "waiting",
            ActionStatus::Scheduled => "scheduled",
            ActionStatus::Retrieved => "retrieved",
            ActionStatus::Running => "running",
            ActionStatus::Finished => "finished",
            ActionStatus::Error => "error",
            ActionStatus::Canceling => "canceling",
            ActionStatus::Canceled => "canceled",
        }
    }

    /// Whether the action is over.
    pub fn is_closed(self) -> bool {
        matches!(self, ActionStatus::Finished | ActionStatus::Error | ActionStatus::Canceled)
    }

    /// The hawkBit-style upper-case name used in `actionHistory`.
    pub fn history_name(self) -> &'static str {
        match self {
            ActionStatus::Waiting => "WAIT_FOR_CONFIRMATION",
            ActionStatus::Scheduled | ActionStatus::Retrieved => "SCHEDULED",
            ActionStatus::Running => "RUNNING",
            ActionStatus::Finished => "FINISHED",
            ActionStatus::Error => "ERROR",
            ActionStatus::Canceling => "CANCELING",
            ActionStatus::Canceled => "CANCELED",
        }
    }
}

impl ActionStatus {
    /// Where deployment feedback (`execution`, `result.finished`) moves an action in this
    /// state. A closed action takes no more feedback.
    pub fn on_feedback(
        self,
        execution: Execution,
        finished: Finished,
    ) -> Result<ActionStatus, Error> {
        if self.is_closed() {
            return Err(Error::Gone(format!(
                "the action is already {}; no more feedback is taken",
                self.as_str()
            )));
        }
        Ok(match (execution, finished) {
            (Execution::Closed, Finished::Failure) => ActionStatus::Error,
            (Execution::Closed, _) => ActionStatus::Finished,
            (Execution::Canceled, _) => ActionStatus::Canceled,
            // A cancellation stays pending until the device answers it, and consent until
            // the device gives it.
            _ if matches!(self, ActionStatus::Canceling | ActionStatus::Waiting) => self,
            _ => ActionStatus::Running,
        })
    }

    /// Where the device's answer to a cancellation moves an action in this state. Only an
    /// action being canceled takes one.
    pub fn on_cancel_feedback(
        self,
        execution: Execution,
        finished: Finished,
    ) -> Result<ActionStatus, Error> {
        if self.is_closed() {
            return Err(Error::Gone(format!("the action is already {}", self.as_str())));
        }
        if self != ActionStatus::Canceling {
            return Err(Error::NotCanceling(format!(
                "the action is {}, not being canceled",
                self.as_str()
            )));
        }
        Ok(match (execution, finished) {
            (Execution::Canceled, _) | (Execution::Closed, Finished::Success | Finished::None) => {
                ActionStatus::Canceled
            }
            // The device will not stop: the action goes on.
            (Execution::Rejected, _) | (Execution::Closed, Finished::Failure) => {
                ActionStatus::Running
            }
            _ => ActionStatus::Canceling,
        })
    }

    /// Where the device's answer to a confirmation request moves an action in this state:
    /// `confirmed` lets it run, `denied` leaves it waiting (the user may consent later). A
    /// confirmation again, after the first (a lost acknowledgement), changes nothing.
    pub fn on_confirmation(self, confirmed: bool) -> Result<ActionStatus, Error> {
        if self.is_closed() {
            return Err(Error::Gone(format!("the action is already {}", self.as_str())));
        }
        Ok(match (self, confirmed) {
            (ActionStatus::Waiting, true) => ActionStatus::Scheduled,
            (ActionStatus::Waiting, false) => ActionStatus::Waiting,
            (other, true) => other,
            (other, false) => {
                return Err(Error::Conflict(format!(
                    "the action is {}, no longer waiting for confirmation",
                    other.as_str()
                )));
            }
        })
    }

    /// Whether the device should still work on an action in this state.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            ActionStatus::Waiting
                | ActionStatus::Scheduled
                | ActionStatus::Retrieved
                | ActionStatus::Running
        )
    }
}

impl FromStr for ActionStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ActionStatus::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown action status {s:?}"))
    }
}

/// An advertisement delivered to one device: a DDI action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// Row id; the DDI action id.
    pub id: i64,
    /// The advertisement.
    pub advertisement_id: i64,
    /// The device.
    pub device_id: i64,
    /// Where it is.
    pub status: ActionStatus,
    /// Created (Unix seconds).
    pub created: i64,
    /// Last change (Unix seconds).
    pub updated: i64,
    /// The last status message id the device reported.
    pub last_code: Option<i32>,
}

/// A status message or feedback as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// Row id.
    pub id: i64,
    /// The device.
    pub device_id: i64,
    /// The action, for feedback.
    pub action_id: Option<i64>,
    /// When it arrived (Unix seconds).
    pub received: i64,
    /// `feedback`, `cancel-feedback` or `status-message`.
    pub source: String,
    /// DDI execution.
    pub execution: Option<Execution>,
    /// DDI `result.finished`.
    pub finished: Option<Finished>,
    /// The numeric status message id.
    pub message_id: Option<i32>,
    /// The HRESULT-style code, when the device sent one.
    pub hresult: Option<String>,
    /// The program that sent a status message (`DMInstaller`, …).
    pub component: Option<String>,
    /// Detail lines.
    pub details: Vec<String>,
    /// The device's id for the report (`dm.report=`): a report resent after a lost
    /// acknowledgement is stored once.
    pub report_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(attrs: &[(&str, &str)]) -> Device {
        Device {
            id: 7,
            tenant: "DEFAULT".into(),
            controller_id: "d".into(),
            token_sha256: None,
            attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            created: 0,
            last_seen: None,
            registered_by: "admin".into(),
            auto_confirm: None,
            cert_sha256: None,
        }
    }

    #[test]
    fn collection_rules() {
        let d = device(&[
            ("platform", "linux-aarch64"),
            ("model", "rpi4"),
            ("client_version", "1.2.0.0"),
            ("site", "WH1"),
        ]);
        for (rule, want) in [
            ("all", true),
            ("platform=linux-aarch64", true),
            ("platform=linux-armv7", false),
            ("model=rpi4", true),
            ("client-version<1.3.0.0", true),
            ("client-version>=1.2.0.0", true),
            ("client-version>1.2.0.0", false),
            ("client-version=1.2.0.0", true),
            ("attribute:site=WH1", true),
            ("attribute:site=WH2", false),
            ("explicit", false),
        ] {
            let r = CollectionRule::parse(rule).unwrap();
            assert_eq!(r.matches(&d), want, "{rule}");
            assert_eq!(r.to_string(), rule);
        }
        for bad in ["", "platform", "client-version~1", "client-version<1.2", "attribute:nokey"] {
            assert!(CollectionRule::parse(bad).is_err(), "{bad}");
        }
        let c = Collection {
            id: 1,
            name: "x".into(),
            tenant: "DEFAULT".into(),
            rule: CollectionRule::Explicit,
            members: vec![7],
            window: None,
        };
        assert!(c.contains(&d));
        // Never a device of another tenant, whatever the rule or membership says.
        let other = Device { tenant: "B".into(), ..d.clone() };
        assert!(!c.contains(&other));
        let all = Collection { rule: CollectionRule::All, ..c };
        assert!(all.contains(&d) && !all.contains(&other));
    }

    const OPEN: [ActionStatus; 3] =
        [ActionStatus::Scheduled, ActionStatus::Retrieved, ActionStatus::Running];
    const CLOSED: [ActionStatus; 3] =
        [ActionStatus::Finished, ActionStatus::Error, ActionStatus::Canceled];

    #[test]
    fn feedback_moves_open_actions() {
        use Execution as E;
        use Finished as F;
        for from in OPEN {
            assert_eq!(from.on_feedback(E::Closed, F::Success).unwrap(), ActionStatus::Finished);
            assert_eq!(from.on_feedback(E::Closed, F::None).unwrap(), ActionStatus::Finished);
            assert_eq!(from.on_feedback(E::Closed, F::Failure).unwrap(), ActionStatus::Error);
            assert_eq!(from.on_feedback(E::Canceled, F::Success).unwrap(), ActionStatus::Canceled);
            for progress in
                [E::Proceeding, E::Download, E::Downloaded, E::Scheduled, E::Resumed, E::Rejected]
            {
                assert_eq!(from.on_feedback(progress, F::None).unwrap(), ActionStatus::Running);
            }
        }
    }

    #[test]
    fn feedback_keeps_a_cancellation_pending_until_answered() {
        let c = ActionStatus::Canceling;
        assert_eq!(c.on_feedback(Execution::Proceeding, Finished::None).unwrap(), c);
        assert_eq!(c.on_feedback(Execution::Download, Finished::None).unwrap(), c);
        assert_eq!(
            c.on_feedback(Execution::Closed, Finished::Success).unwrap(),
            ActionStatus::Finished
        );
        assert_eq!(
            c.on_feedback(Execution::Closed, Finished::Failure).unwrap(),
            ActionStatus::Error
        );
    }

    #[test]
    fn closed_actions_refuse_feedback_as_gone() {
        for from in CLOSED {
            for exec in Execution::ALL {
                assert!(matches!(from.on_feedback(exec, Finished::Success), Err(Error::Gone(_))));
                assert!(matches!(
                    from.on_cancel_feedback(exec, Finished::Success),
                    Err(Error::Gone(_))
                ));
            }
        }
    }

    #[test]
    fn cancel_feedback_answers_a_cancellation() {
        use Execution as E;
        use Finished as F;
        let c = ActionStatus::Canceling;
        assert_eq!(c.on_cancel_feedback(E::Canceled, F::Success).unwrap(), ActionStatus::Canceled);
        assert_eq!(c.on_cancel_feedback(E::Closed, F::Success).unwrap(), ActionStatus::Canceled);
        assert_eq!(c.on_cancel_feedback(E::Closed, F::None).unwrap(), ActionStatus::Canceled);
        assert_eq!(c.on_cancel_feedback(E::Rejected, F::None).unwrap(), ActionStatus::Running);
        assert_eq!(c.on_cancel_feedback(E::Closed, F::Failure).unwrap(), ActionStatus::Running);
        assert_eq!(c.on_cancel_feedback(E::Proceeding, F::None).unwrap(), c);
        for from in OPEN {
            assert!(matches!(
                from.on_cancel_feedback(E::Canceled, F::Success),
                Err(Error::NotCanceling(_))
            ));
        }
    }

    #[test]
    fn open_states_are_the_ones_a_device_works_on() {
        assert!(OPEN.iter().all(|s| s.is_open() && !s.is_closed()));
        assert!(CLOSED.iter().all(|s| !s.is_open() && s.is_closed()));
        assert!(!ActionStatus::Canceling.is_open() && !ActionStatus::Canceling.is_closed());
    }

    #[test]
    fn maintenance_windows_wrap_midnight() {
        let w = MaintenanceWindow::parse("22:00-04:00").unwrap();
        let at = |h: i64, m: i64| 1_795_478_400 + h * 3600 + m * 60; // a midnight UTC
        assert!(w.is_open(at(23, 0)) && w.is_open(at(3, 59)) && w.is_open(at(22, 0)));
        assert!(!w.is_open(at(4, 0)) && !w.is_open(at(12, 0)));
        let day = MaintenanceWindow::parse("09:30-17:00").unwrap();
        assert!(day.is_open(at(9, 30)) && !day.is_open(at(17, 0)));
        assert_eq!(day.to_string(), "09:30-17:00");
        for bad in ["", "9-17", "25:00-01:00", "10:00-10:00"] {
            assert!(MaintenanceWindow::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_device_enters_the_window_at_its_own_offset_in_its_first_half() {
        let w = MaintenanceWindow::parse("22:00-04:00").unwrap();
        let at = |h: i64, m: i64| 1_795_478_400 + h * 3600 + m * 60;
        // Spread 0 opens with the window; 3 hours (half of six) is the latest.
        assert!(w.is_open_for(at(22, 0), 0) && !w.is_open_for(at(21, 59), 0));
        let late = 3 * 3600 - 1;
        assert!(!w.is_open_for(at(0, 59), late) && w.is_open_for(at(1, 0), late));
        assert!(w.is_open_for(at(3, 59), late) && !w.is_open_for(at(4, 0), late));
        // A thousand devices enter across the first half, none before the window.
        let entries: Vec<i64> = (0..1000)
            .map(|d| {
                let s = MaintenanceWindow::spread(d, "advertisement 7");
                (0..6 * 60).find(|m| w.is_open_for(at(22, 0) + m * 60, s)).unwrap()
            })
            .collect();
        assert!(entries.iter().all(|m| *m <= 180), "{entries:?}");
        let first_hour = entries.iter().filter(|m| **m < 60).count();
        assert!((250..420).contains(&first_hour), "{first_hour} of 1000 in the first hour");
        // The same device enters at the same time at every poll.
        let s = MaintenanceWindow::spread(42, "advertisement 7");
        assert_eq!(s, MaintenanceWindow::spread(42, "advertisement 7"));
    }
}

/// An administrator's client certificate, pinned: it opens the console as `name` while valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminCert {
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub sha256: String,
    /// The administrator.
    pub name: String,
    /// The certificate's subject, for logs and listings.
    pub subject: String,
    /// Valid from (Unix seconds).
    pub not_before: i64,
    /// Valid until (Unix seconds).
    pub not_after: i64,
}

/// An administrator of the console who logs in with a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Administrator {
    /// The name they log in with.
    pub name: String,
    /// Their password's Argon2id hash (a PHC string).
    pub hash: String,
    /// When they were added (Unix seconds).
    pub created: i64,
}

/// FNV-1a of `bytes`: a cheap hash, stable across runs and builds, for markers that change
/// when what they cover changes and for per-device offsets. Not for anything an attacker
/// should not be able to collide.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes
        .into_iter()
        .fold(0xcbf29ce484222325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
}

/// Software updates: the catalog of Debian package versions, approvals, update deployments
/// and what devices' scans found (docs/software-updates.md).
pub mod updates {
    use serde::{Deserialize, Serialize};

    pub use dm_shared::updates::{RebootPolicy, UpdateState};

    /// A file of a repository kept as the vendor signed it: its path in the repository, size
    /// and SHA-256.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct RepoFile {
        /// The path inside the repository (`dists/{suite}/InRelease`, …).
        pub path: String,
        /// Size in bytes.
        pub size: u64,
        /// SHA-256, hex.
        pub sha256: String,
    }

    /// A Debian repository imported into the catalog.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct UpdateRepository {
        /// Row id.
        pub id: i64,
        /// Its name on the management point.
        pub name: String,
        /// Where it was imported from (a folder or an https URL).
        pub source: String,
        /// The suite (`dists/{suite}`).
        pub suite: String,
        /// The codename its release file names.
        pub codename: String,
        /// The components imported.
        pub components: Vec<String>,
        /// The architectures imported.
        pub architectures: Vec<String>,
        /// Whether its updates are security updates (the suite says so).
        pub security: bool,
        /// The fingerprint of the key that signed the release file.
        pub signed_by: String,
        /// `InRelease` and the package indices, as imported.
        pub metadata: Vec<RepoFile>,
        /// The release file's `Date` (Unix seconds): an import never goes back in time.
        pub release_date: i64,
        /// Moves at every import that brings a new release file.
        pub generation: i64,
        /// When it was last imported.
        pub imported: i64,
    }

    /// One package version of a repository: an update.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Update {
        /// Row id.
        pub id: i64,
        /// The repository.
        pub repository_id: i64,
        /// Package name.
        pub package: String,
        /// Version.
        pub version: String,
        /// Architecture (`all` or a dpkg architecture).
        pub arch: String,
        /// Source package.
        pub source: String,
        /// Section (`admin`, `libs`, …).
        pub section: String,
        /// Priority.
        pub priority: String,
        /// Size of the `.deb`.
        pub size: u64,
        /// SHA-256 of the `.deb`.
        pub sha256: String,
        /// Its path in the repository (`pool/…`).
        pub filename: String,
        /// A security update.
        pub security: bool,
        /// The newer version of the same package that supersedes it.
        pub superseded_by: Option<i64>,
        /// When it was approved, if it was.
        pub approved: Option<i64>,
        /// Who (or which rule) approved it.
        pub approved_by: Option<String>,
        /// When it was imported.
        pub added: i64,
    }

    impl Update {
        /// `package version arch`, for people and logs.
        pub fn label(&self) -> String {
            format!("{} {} {}", self.package, self.version, self.arch)
        }
    }

    /// An approval rule: updates it matches are approved as they are imported.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct UpdateRule {
        /// Row id.
        pub id: i64,
        /// Name.
        pub name: String,
        /// Only updates of this repository.
        pub repository: Option<String>,
        /// Only security updates.
        pub security_only: bool,
        /// Only updates of these sections (empty: any).
        pub sections: Vec<String>,
        /// When it was made.
        pub created: i64,
    }

    impl UpdateRule {
        /// Whether the rule approves `u` of repository `repo`.
        pub fn matches(&self, u: &Update, repo: &str) -> bool {
            self.repository.as_deref().is_none_or(|r| r == repo)
                && (!self.security_only || u.security)
                && (self.sections.is_empty()
                    || self
                        .sections
                        .iter()
                        .any(|s| s == &u.section || u.section.ends_with(&format!("/{s}"))))
        }
    }

    /// A deployment of approved updates to a collection.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct UpdateDeployment {
        /// Row id.
        pub id: i64,
        /// Name.
        pub name: String,
        /// The collection.
        pub collection_id: i64,
        /// The approved updates it deploys.
        pub updates: Vec<i64>,
        /// From when devices may download (Unix seconds).
        pub available: i64,
        /// When devices install (Unix seconds), each up to `spread` seconds later.
        pub deadline: i64,
        /// The most seconds a device's deadline is moved later, at random per device.
        pub spread: i64,
        /// Whether devices restart when an update asks for it.
        pub reboot: RebootPolicy,
        /// The daily window devices install in, if any.
        pub window: Option<super::MaintenanceWindow>,
        /// When it was made.
        pub created: i64,
        /// Offered to no device but through its rollout (`dmmp update deploy --held`).
        #[serde(default)]
        pub held: bool,
    }

    impl UpdateDeployment {
        /// Whether devices may install now: always, or inside its window.
        pub fn window_open(&self, now: i64) -> bool {
            self.window.is_none_or(|w| w.is_open(now))
        }

        /// Device `device_id`'s own deadline: the deadline plus an offset in `[0, spread]`
        /// that is the same at every poll (a hash of the device and the deployment), so a
        /// thousand devices do not install, and restart, at once.
        pub fn deadline_of(&self, device_id: i64) -> i64 {
            if self.spread <= 0 {
                return self.deadline;
            }
            let h = super::fnv1a(device_id.to_le_bytes().into_iter().chain(self.id.to_le_bytes()));
            self.deadline + (h % (self.spread as u64 + 1)) as i64
        }
    }

    /// One update's state on one device, as its last scan or install reported it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DeviceUpdateState {
        /// The device.
        pub device_id: i64,
        /// The update.
        pub update_id: i64,
        /// The state.
        pub state: UpdateState,
        /// The version installed, if any.
        pub installed: Option<String>,
        /// Why, for unknown and failed.
        pub reason: Option<String>,
        /// When it was reported.
        pub updated: i64,
    }

    /// Where some devices are with the updates of a deployment: their stored states of
    /// those updates, and when each last scanned (a device that never did is absent).
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct UpdateProgress {
        /// The states, by device then update.
        pub states: Vec<DeviceUpdateState>,
        /// (device, when it last scanned).
        pub scanned: Vec<(i64, i64)>,
    }

    /// A device's last accepted scan report.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct UpdateScan {
        /// The device.
        pub device_id: i64,
        /// The serial its next report's changes follow.
        pub serial: u64,
        /// The catalog version it scanned.
        pub catalog: String,
        /// When.
        pub scanned: i64,
        /// How many of its updates are in each stored state.
        pub counts: StateCounts,
    }

    /// How many updates of a device are in each stored state.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct StateCounts {
        /// `required`.
        pub required: i64,
        /// `installed`.
        pub installed: i64,
        /// `unknown`.
        pub unknown: i64,
        /// `in_progress`.
        pub in_progress: i64,
        /// `failed`.
        pub failed: i64,
        /// `pending_reboot`.
        pub pending_reboot: i64,
    }

    impl StateCounts {
        /// Where the device stands, in Azure Device Update's words.
        pub fn status(&self) -> &'static str {
            if self.in_progress > 0 {
                "update in progress"
            } else if self.required + self.failed > 0 {
                "new updates available"
            } else if self.pending_reboot > 0 {
                "pending reboot"
            } else {
                "on latest"
            }
        }
    }

    /// The SQL both stores run after a report to keep a device's [`StateCounts`]; `$1` is the
    /// device (written `?1` for SQLite).
    pub const COUNT_STATES_SQL: &str = "UPDATE update_scans SET \
        required = (SELECT count(*) FROM update_states WHERE device_id = $1 AND state = 'required'), \
        installed = (SELECT count(*) FROM update_states WHERE device_id = $1 AND state = 'installed'), \
        unknown = (SELECT count(*) FROM update_states WHERE device_id = $1 AND state = 'unknown'), \
        in_progress = (SELECT count(*) FROM update_states WHERE device_id = $1 AND state = 'in_progress'), \
        failed = (SELECT count(*) FROM update_states WHERE device_id = $1 AND state = 'failed'), \
        pending_reboot = (SELECT count(*) FROM update_states WHERE device_id = $1 AND state = 'pending_reboot') \
        WHERE device_id = $1";
}
