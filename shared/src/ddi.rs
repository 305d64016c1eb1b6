//! The hawkBit Direct Device Integration (DDI) v1 wire format, shared by the management point
//! and the agent. Field names, enum values and shapes follow
//! `reference/hawkbit-ddi-openapi.json`, so either side works with any DDI peer.
//!
//! How this project's concepts ride on DDI (advertisement = action, package = chunk, program
//! and package kind in chunk metadata, status message ids in feedback `code`) is documented in
//! `docs/management-point.md`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::status::StatusCode;

/// A HAL link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The URL.
    pub href: String,
}

/// Named links (`_links`).
pub type Links = BTreeMap<String, Link>;

/// `GET /{tenant}/controller/v1/{controllerId}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ControllerBase {
    /// Server configuration for the device.
    #[serde(default)]
    pub config: Config,
    /// What the server has for the device: `deploymentBase`, `cancelAction`, `configData`,
    /// `installedBase`.
    #[serde(rename = "_links", default)]
    pub links: Links,
}

/// `config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Config {
    /// Polling.
    #[serde(default)]
    pub polling: Polling,
}

/// `config.polling`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Polling {
    /// Sleep between polls, `HH:MM:SS`.
    #[serde(default)]
    pub sleep: String,
}

/// Formats a duration as DDI's `HH:MM:SS`.
pub fn format_sleep(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// The longest sleep or retry delay a server may ask for: a day. A longer one is cut to this,
/// so no server can silence a device for good (or overflow its timer).
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(86_400);

/// Parses DDI's `HH:MM:SS` (hours may exceed 24). The value is the server's, unbounded: callers
/// bound it (see [`MAX_SERVER_DELAY`]).
pub fn parse_sleep(s: &str) -> Option<Duration> {
    let mut it = s.trim().split(':');
    let (h, m, sec) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    let (h, m, sec): (u64, u64, u64) = (h.parse().ok()?, m.parse().ok()?, sec.parse().ok()?);
    if m >= 60 || sec >= 60 {
        return None;
    }
    // Absurd hours saturate: the caller bounds the result anyway.
    Some(Duration::from_secs(h.saturating_mul(3600).saturating_add(m * 60 + sec)))
}

/// `GET …/deploymentBase/{actionId}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentBase {
    /// The action id.
    pub id: String,
    /// What to deploy.
    pub deployment: Deployment,
    /// Previous feedback, when asked for.
    #[serde(rename = "actionHistory", default, skip_serializing_if = "Option::is_none")]
    pub action_history: Option<ActionHistory>,
}

/// `GET …/confirmationBase/{actionId}`: an action waiting for the device's user to consent,
/// described as a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfirmationBaseAction {
    /// The action id.
    pub id: String,
    /// What would be deployed.
    pub confirmation: Deployment,
    /// Previous feedback, when asked for.
    #[serde(rename = "actionHistory", default, skip_serializing_if = "Option::is_none")]
    pub action_history: Option<ActionHistory>,
}

/// `GET …/confirmationBase`: the device's auto-confirmation, and the action waiting, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfirmationBase {
    /// Whether actions are confirmed without asking.
    #[serde(rename = "autoConfirm")]
    pub auto_confirm: AutoConfirmState,
    /// `confirmationBase` (an action waits), `activateAutoConfirm` or `deactivateAutoConfirm`.
    #[serde(rename = "_links", default)]
    pub links: Links,
}

/// `autoConfirm`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoConfirmState {
    /// On or off.
    pub active: bool,
    /// Who turned it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remark: Option<String>,
    /// When (Unix milliseconds).
    #[serde(rename = "activatedAt", default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<i64>,
}

/// `POST …/confirmationBase/activateAutoConfirm`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivateAutoConfirm {
    /// Who turns it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remark: Option<String>,
}

/// The user's answer: `confirmed` or `denied`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confirmation {
    /// Go ahead.
    Confirmed,
    /// Not now.
    Denied,
}

/// `POST …/confirmationBase/{actionId}/feedback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfirmationFeedback {
    /// The answer.
    pub confirmation: Confirmation,
    /// A status code of the device's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Lines for people.
    #[serde(default)]
    pub details: Vec<String>,
}

/// `deployment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// `skip`, `attempt` or `forced`.
    pub download: Handling,
    /// `skip`, `attempt` or `forced`.
    pub update: Handling,
    /// What to deploy.
    pub chunks: Vec<Chunk>,
    /// `available` or `unavailable`, when the deployment has a maintenance window.
    #[serde(rename = "maintenanceWindow", default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<WindowState>,
}

/// How a deployment step is to be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Handling {
    /// Not yet.
    Skip,
    /// The server asks (an available advertisement).
    Attempt,
    /// The server requires it now (a mandatory advertisement).
    Forced,
}

/// Whether the maintenance window is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowState {
    /// Inside the window.
    Available,
    /// Outside it.
    Unavailable,
}

/// A chunk: in this project, one package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// The package kind: `software-distribution`, `configuration` or `client-upgrade`.
    pub part: String,
    /// The package version.
    pub version: String,
    /// The package name.
    pub name: String,
    /// Its files.
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    /// Program and advertisement details (keys in docs/management-point.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<Metadata>,
}

impl Chunk {
    /// A metadata value.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.iter().find(|m| m.key == key).map(|m| m.value.as_str())
    }
}

/// A file to download.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// Its file name.
    pub filename: String,
    /// Its hashes.
    #[serde(default)]
    pub hashes: Hashes,
    /// Its size.
    #[serde(default)]
    pub size: u64,
    /// `download` (https), `md5sum`, and possibly `download-http`.
    #[serde(rename = "_links", default)]
    pub links: Links,
}

/// Artifact hashes, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Hashes {
    /// SHA-1.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha1: String,
    /// MD5.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub md5: String,
    /// SHA-256.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
}

/// A key/value pair of chunk metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// `actionHistory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ActionHistory {
    /// The server's view of the action.
    #[serde(default)]
    pub status: String,
    /// Earlier feedback details, newest first.
    #[serde(default)]
    pub messages: Vec<String>,
}

/// `POST …/feedback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionFeedback {
    /// The status.
    pub status: Status,
    /// When it happened on the device, in milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
}

/// `status` of a feedback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Where the device is with the action.
    pub execution: Execution,
    /// The result so far.
    pub result: ResultStatus,
    /// In this project: the numeric status message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Detail lines; this project's structured fields ride in [`Tags`] lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// The structured fields this project adds to DDI feedback, each a detail line
/// `dm.<key>=<value>` (DDI has no field for them, and every DDI server keeps detail lines), so
/// a plain DDI server still accepts the feedback and `dmmp` reads them by key. Documented in
/// `docs/management-point.md`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags {
    /// The HRESULT-style status code of the report: `dm.status=0x8004020A`.
    pub status: Option<StatusCode>,
    /// The report's id, the same on every resend: `dm.report=<id>`. The management point
    /// stores a report once, however often a lost acknowledgement makes the device resend it.
    pub report: Option<String>,
}

impl Tags {
    /// The prefix of every tag line.
    pub const PREFIX: &'static str = "dm.";
    const STATUS: &'static str = "dm.status=";
    const REPORT: &'static str = "dm.report=";

    /// The tag lines, to append to the details.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(code) = self.status {
            out.push(format!("{}{}", Self::STATUS, code.hex()));
        }
        if let Some(id) = &self.report {
            out.push(format!("{}{id}", Self::REPORT));
        }
        out
    }

    /// Splits feedback details into the tags and the lines for people. A tag line whose value
    /// does not parse is an error naming it, never a silent default.
    pub fn split(details: &[String]) -> Result<(Tags, Vec<String>), String> {
        let mut tags = Tags::default();
        let mut rest = Vec::new();
        for line in details {
            if let Some(v) = line.strip_prefix(Self::STATUS) {
                tags.status = Some(StatusCode::parse_hex(v).ok_or_else(|| {
                    format!("detail line {line:?}: expected dm.status=0x followed by 8 hex digits")
                })?);
            } else if let Some(v) = line.strip_prefix(Self::REPORT) {
                if !valid_report_id(v) {
                    return Err(format!(
                        "detail line {:?}: a report id is 1 to 64 letters, digits, '-' or '_'",
                        line.chars().take(80).collect::<String>()
                    ));
                }
                tags.report = Some(v.to_string());
            } else {
                rest.push(line.clone());
            }
        }
        Ok((tags, rest))
    }
}

/// Whether `id` can be a report id: 1 to 64 ASCII letters, digits, `-` or `_`.
pub fn valid_report_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `status.execution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Execution {
    /// Finished (see `result.finished`).
    Closed,
    /// Working on it.
    Proceeding,
    /// Confirms a cancellation.
    Canceled,
    /// Scheduled.
    Scheduled,
    /// Rejected (a cancellation, or the update for now).
    Rejected,
    /// Resumed.
    Resumed,
    /// Artifacts downloaded.
    Downloaded,
    /// Downloading.
    Download,
}

impl Execution {
    /// Every value.
    pub const ALL: [Execution; 8] = [
        Execution::Closed,
        Execution::Proceeding,
        Execution::Canceled,
        Execution::Scheduled,
        Execution::Rejected,
        Execution::Resumed,
        Execution::Downloaded,
        Execution::Download,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Execution::Closed => "closed",
            Execution::Proceeding => "proceeding",
            Execution::Canceled => "canceled",
            Execution::Scheduled => "scheduled",
            Execution::Rejected => "rejected",
            Execution::Resumed => "resumed",
            Execution::Downloaded => "downloaded",
            Execution::Download => "download",
        }
    }
}

impl std::str::FromStr for Execution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Execution::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| format!("execution {s:?} is not a DDI execution status"))
    }
}

/// `status.result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultStatus {
    /// `success`, `failure` or `none`.
    pub finished: Finished,
    /// Progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// `result.finished`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Finished {
    /// It worked.
    Success,
    /// It failed.
    Failure,
    /// Not finished.
    None,
}

impl Finished {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Finished::Success => "success",
            Finished::Failure => "failure",
            Finished::None => "none",
        }
    }
}

impl std::str::FromStr for Finished {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Finished::Success, Finished::Failure, Finished::None]
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("finished {s:?} is not success, failure or none"))
    }
}

/// `result.progress`, taken as leniently as hawkBit takes it: `{"cnt": 2, "of": 5}`, `{}`, or
/// `{"percentage": 40}` as some clients (rauc-hawkbit) send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnt: Option<i32>,
    /// Of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<i32>,
    /// Percent done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<i32>,
}

/// `PUT …/configData`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigData {
    /// Attributes.
    pub data: BTreeMap<String, String>,
    /// `merge` (default), `replace` or `remove`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ConfigDataMode>,
}

/// `configData.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigDataMode {
    /// Add and overwrite.
    Merge,
    /// Replace all.
    Replace,
    /// Remove the given keys.
    Remove,
}

/// `GET …/cancelAction/{actionId}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cancel {
    /// The cancel action's id.
    pub id: String,
    /// What to stop.
    #[serde(rename = "cancelAction")]
    pub cancel_action: CancelActionToStop,
}

/// `cancelAction`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelActionToStop {
    /// The action to stop.
    #[serde(rename = "stopId")]
    pub stop_id: String,
}

/// An error body, as hawkBit sends them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ExceptionInfo {
    /// The kind of error.
    #[serde(rename = "exceptionClass", default)]
    pub exception_class: String,
    /// A stable error code.
    #[serde(rename = "errorCode", default)]
    pub error_code: String,
    /// For people.
    #[serde(default)]
    pub message: String,
}

/// Chunk metadata keys this project uses (see docs/management-point.md).
pub mod meta {
    /// What every key of this project's metadata starts with.
    pub const PREFIX: &str = "dm.";
    /// The name of the signed program to run (one of the package's signed programs).
    pub const PROGRAM: &str = "dm.program";
    /// The signed program's command as a JSON array, for people and for the agent's check:
    /// when present it must equal the signed command exactly.
    pub const COMMAND: &str = "dm.command";
    /// Comma-separated platforms the program may run on (`any` for all): may narrow the
    /// signed ones, never widen them.
    pub const PLATFORMS: &str = "dm.platforms";
    /// Maximum run time in seconds: may shorten the signed one, never lengthen it.
    pub const MAX_RUN_TIME: &str = "dm.max-run-time";
    /// `mobile` or `desktop`.
    pub const DEVICE_CLASS: &str = "dm.device-class";
    /// The advertisement id.
    pub const ADVERTISEMENT: &str = "dm.advertisement";
    /// `mandatory` or `available`.
    pub const ADVERTISEMENT_KIND: &str = "dm.advertisement-kind";
    /// When the advertisement becomes due (RFC 3339), if later than now.
    pub const START_TIME: &str = "dm.start-time";
    /// When the advertisement expires (RFC 3339).
    pub const EXPIRES: &str = "dm.expires";
    /// `true` when the advertisement allows an older version than the device has.
    pub const ALLOW_DOWNGRADE: &str = "dm.allow-downgrade";
    /// Whether a program that ran before runs again: `never`, `always`, `if-failed`,
    /// `if-succeeded` (see [`super::Rerun`]).
    pub const RERUN: &str = "dm.rerun";
    /// Seconds of a rollout's soak: a package that signs a health check keeps its action open
    /// that long after the install and runs the check again before it closes it (0 to 30
    /// days; docs/rollouts.md).
    pub const SOAK: &str = "dm.soak";
}

/// Whether a program that ran before on a device runs again for a new advertisement, as the
/// source documents' advertisements say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Rerun {
    /// Never again once it ran, whatever the outcome (the default).
    #[default]
    Never,
    /// Every time it is advertised.
    Always,
    /// Only when its last run failed.
    IfFailed,
    /// Only when its last run succeeded.
    IfSucceeded,
}

impl Rerun {
    /// Every policy.
    pub const ALL: [Rerun; 4] = [Rerun::Never, Rerun::Always, Rerun::IfFailed, Rerun::IfSucceeded];

    /// The name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rerun::Never => "never",
            Rerun::Always => "always",
            Rerun::IfFailed => "if-failed",
            Rerun::IfSucceeded => "if-succeeded",
        }
    }

    /// Whether a program whose last run succeeded (`Some(true)`), failed (`Some(false)`) or
    /// that never ran (`None`) runs now.
    pub fn runs(self, last: Option<bool>) -> bool {
        match (self, last) {
            (_, None) | (Rerun::Always, _) => true,
            (Rerun::Never, Some(_)) => false,
            (Rerun::IfFailed, Some(succeeded)) => !succeeded,
            (Rerun::IfSucceeded, Some(succeeded)) => succeeded,
        }
    }
}

impl std::str::FromStr for Rerun {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Rerun::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            format!("rerun {s:?}: expected never, always, if-failed or if-succeeded")
        })
    }
}

/// The extension endpoint (not in DDI) where the agent fetches the certificate revocation
/// lists the management point distributes: `GET {base}/dm/crls`. The poll offers it as the
/// link `dmCrls` when the lists changed.
pub const CRLS_PATH: &str = "dm/crls";

/// `GET …/dm/crls`: the CAs' revocation lists, PEM. Each is signed by its CA, so the server
/// is only the courier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CrlList {
    /// PEM texts (`BEGIN X509 CRL`).
    pub crls: Vec<String>,
}

/// The extension endpoint (not in DDI) where the agent posts status messages that belong to
/// no action, such as those DMInstaller and setup queued: `POST {base}/dm/statusMessages`.
pub const STATUS_MESSAGES_PATH: &str = "dm/statusMessages";

/// The prefix of an artifact's further download links (`dm-next-1`, `dm-next-2`, …), tried in
/// order after `download` fails: the next distribution points, the management point last.
pub const NEXT_SOURCE: &str = "dm-next-";

/// An artifact's download links, in the order they are tried: `download`, then
/// `dm-next-1`, `dm-next-2`, … as long as they go on.
pub fn download_links(links: &Links) -> Vec<&str> {
    let mut out: Vec<&str> = links.get("download").map(|l| l.href.as_str()).into_iter().collect();
    for i in 1.. {
        match links.get(&format!("{NEXT_SOURCE}{i}")) {
            Some(l) if i <= 16 => out.push(l.href.as_str()),
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_round_trip() {
        assert_eq!(format_sleep(Duration::from_secs(300)), "00:05:00");
        assert_eq!(format_sleep(Duration::from_secs(43_200)), "12:00:00");
        assert_eq!(parse_sleep("12:00:00"), Some(Duration::from_secs(43_200)));
        assert_eq!(parse_sleep("00:00:30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_sleep("48:00:00"), Some(Duration::from_secs(172_800)));
        for bad in
            ["", "12:00", "1:60:00", "a:b:c", "1:2:3:4", "-1:00:00", "99999999999999999999:00:00"]
        {
            assert_eq!(parse_sleep(bad), None, "{bad}");
        }
        // Absurd but representable: the caller bounds it.
        assert!(parse_sleep("4000000000000000:00:00").unwrap() > MAX_SERVER_DELAY);
    }

    #[test]
    fn rerun_policies() {
        use Rerun::*;
        for p in Rerun::ALL {
            assert!(p.runs(None), "{p:?}: a program that never ran runs");
            assert_eq!(p.as_str().parse(), Ok(p));
        }
        assert_eq!((Never.runs(Some(true)), Never.runs(Some(false))), (false, false));
        assert_eq!((Always.runs(Some(true)), Always.runs(Some(false))), (true, true));
        assert_eq!((IfFailed.runs(Some(true)), IfFailed.runs(Some(false))), (false, true));
        assert_eq!((IfSucceeded.runs(Some(true)), IfSucceeded.runs(Some(false))), (true, false));
        assert_eq!(Rerun::default(), Never);
        assert!("sometimes".parse::<Rerun>().is_err());
    }

    #[test]
    fn tags_ride_in_detail_lines() {
        let tags = Tags {
            status: Some(StatusCode::DM_E_PROGRAM_FAILED),
            report: Some("4f1c2a9e0b7d4c5e8a6f1b2c3d4e5f60".into()),
        };
        let mut details = vec!["run failed with exit code 3".to_string()];
        details.extend(tags.lines());
        assert_eq!(details[1], "dm.status=0x8004020A");
        assert_eq!(details[2], "dm.report=4f1c2a9e0b7d4c5e8a6f1b2c3d4e5f60");
        let (back, people) = Tags::split(&details).unwrap();
        assert_eq!(back, tags);
        assert_eq!(people, ["run failed with exit code 3"]);
        assert_eq!(Tags::split(&["plain".to_string()]).unwrap().0, Tags::default());
        for bad in [
            "dm.status=80004005",
            "dm.status=0x8000400",
            "dm.status=0xZZZZZZZZ",
            "dm.report=",
            "dm.report=a b",
        ] {
            assert!(Tags::split(&[bad.to_string()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn progress_in_every_shape_clients_send() {
        for (body, want) in [
            (r#"{"cnt": 2, "of": 5}"#, Progress { cnt: Some(2), of: Some(5), percentage: None }),
            (r#"{}"#, Progress::default()),
            (r#"{"percentage": 40}"#, Progress { percentage: Some(40), ..Progress::default() }),
        ] {
            assert_eq!(serde_json::from_str::<Progress>(body).unwrap(), want, "{body}");
        }
        // rauc-hawkbit's feedback: the old DDI's id and time at the top, ignored.
        let fb: ActionFeedback = serde_json::from_str(
            r#"{"id": "7", "time": "20261128T093233", "status": {"result": {"progress": {}, "finished": "success"}, "execution": "closed", "details": []}}"#,
        )
        .unwrap();
        assert_eq!(fb.status.execution, Execution::Closed);
    }

    #[test]
    fn parses_the_spec_examples() {
        let base: ControllerBase = serde_json::from_str(
            r#"{"config":{"polling":{"sleep":"12:00:00"}},"_links":{"deploymentBase":{"href":"https://h/T/controller/v1/C/deploymentBase/5?c=-2127183556"},"configData":{"href":"https://h/T/controller/v1/C/configData"}}}"#,
        )
        .unwrap();
        assert_eq!(base.config.polling.sleep, "12:00:00");
        assert!(base.links.contains_key("deploymentBase"));
        let d: DeploymentBase = serde_json::from_str(
            r#"{"id":"8","deployment":{"download":"forced","update":"attempt","maintenanceWindow":"available","chunks":[{"part":"jvm","version":"1.0.75","name":"oneapp runtime","artifacts":[{"filename":"binary.tgz","hashes":{"sha1":"986a","md5":"d044","sha256":"b3a0"},"size":13,"_links":{"download":{"href":"https://x/binary.tgz"}}}],"metadata":[{"key":"k","value":"v"}]}]},"actionHistory":{"status":"RUNNING","messages":["m"]}}"#,
        )
        .unwrap();
        assert_eq!(d.deployment.update, Handling::Attempt);
        assert_eq!(d.deployment.chunks[0].meta("k"), Some("v"));
        let fb: ActionFeedback = serde_json::from_str(
            r#"{"timestamp":1627997501890,"status":{"execution":"closed","result":{"finished":"success","progress":{"cnt":2,"of":5}},"code":200,"details":["Some feedback"]}}"#,
        )
        .unwrap();
        assert_eq!(fb.status.execution, Execution::Closed);
        assert!(
            serde_json::from_str::<ActionFeedback>(
                r#"{"status":{"execution":"exploded","result":{"finished":"success"}}}"#
            )
            .is_err()
        );
    }
}
