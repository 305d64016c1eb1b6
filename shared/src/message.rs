//! Status messages: what a device program reports, with a numeric id in the style of the
//! source documents' status messages and an HRESULT-style code.
//!
//! Every id any program sends is in one table here, with the programs that send it and what it
//! means, kept in step with `docs/status-messages.md` by a test. Messages wait in the outbox
//! ([`crate::outbox`]) until the management point acknowledges them.

use std::fmt;

use crate::ddi::Execution;
use crate::status::StatusCode;

/// A status message id, such as 10008 (program completed successfully).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct MessageId(pub u32);

struct Entry {
    id: MessageId,
    name: &'static str,
    from: &'static str,
    meaning: &'static str,
}

macro_rules! ids {
    ($( $(#[$doc:meta])* $konst:ident = $value:literal, $from:literal, $meaning:literal; )*) => {
        impl MessageId {
            $( $(#[$doc])* pub const $konst: MessageId = MessageId($value); )*
        }
        const TABLE: &[Entry] = &[
            $( Entry { id: MessageId($value), name: stringify!($konst), from: $from, meaning: $meaning }, )*
        ];
    };
}

ids! {
    /// The program was received; its content is downloading.
    PROGRAM_RECEIVED = 10002, "DMSvc", "program received; its content is downloading (`download`)";
    /// The content was downloaded and verified.
    CONTENT_DOWNLOADED = 10003, "DMSvc", "content downloaded and verified (`downloaded`)";
    /// The program started.
    PROGRAM_STARTED = 10005, "DMSvc", "program started (`proceeding`)";
    /// The program failed: non-zero exit code, signal, or it could not start.
    PROGRAM_FAILED = 10006, "DMSvc", "program failed: non-zero exit code, signal, or could not start (`closed`, failure)";
    /// The program completed successfully.
    PROGRAM_SUCCEEDED = 10008, "DMSvc", "program completed successfully (`closed`, success)";
    /// Requirements not met: the program is for other platforms.
    WRONG_PLATFORM = 10018, "DMSvc", "requirements not met: the program is for other platforms";
    /// Requirements not met: the program is for the other device class.
    WRONG_DEVICE_CLASS = 10019, "DMSvc", "requirements not met: the program is for the other device class";
    /// The content could not be downloaded (network, size, hash, path, disk space).
    DOWNLOAD_FAILED = 10034, "DMSvc", "content download failed: network, size, hash, unsafe path, plain HTTP, disk space";
    /// The package is not signed by a trusted publisher; nothing was run.
    PACKAGE_UNTRUSTED = 10035, "DMSvc", "package not signed by a trusted publisher in the `spc` store; nothing ran";
    /// The advertisement does not match the signed package; nothing ran.
    ADVERTISEMENT_MISMATCH = 10036, "DMSvc", "the advertisement does not match the signed package (name, version, kind, program or command); nothing ran";
    /// An available program waits for the device's user (`dmsvc run`).
    PROGRAM_AVAILABLE = 10037, "DMSvc", "available program waiting for the device's user (`scheduled`)";
    /// A mandatory program waits for its maintenance window.
    WAITING_FOR_WINDOW = 10038, "DMSvc", "mandatory program waiting for its maintenance window (`scheduled`)";
    /// A download-only advertisement's content is on the device.
    DOWNLOAD_ONLY_DONE = 10039, "DMSvc", "download-only advertisement: content on the device";
    /// The advertisement was canceled before the program started.
    CANCELED = 10040, "DMSvc", "canceled before the program started (`canceled`)";
    /// The cancellation came after the program started and is rejected.
    CANCEL_REJECTED = 10041, "DMSvc", "cancellation rejected: the program already started (`rejected`)";
    /// The package kind is not supported.
    UNSUPPORTED_PACKAGE = 10050, "DMSvc", "package kind not supported";
    /// The management point's answer for a deployment cannot be used; not asked again for a day.
    DEPLOYMENT_UNUSABLE = 10051, "DMSvc", "the management point's deployment answer cannot be used (malformed action id, too large, not JSON); not fetched again for a day";
    /// The program ran longer than its maximum run time and was stopped.
    PROGRAM_TIMED_OUT = 10070, "DMSvc", "program ran past its maximum run time and was stopped";
    /// The agent stopped while the program ran; it is not run again.
    PROGRAM_INTERRUPTED = 10071, "DMSvc", "the agent stopped while the program ran; it is not run again";
    /// The program ran before and its advertisement's rerun policy says not again.
    PROGRAM_NOT_RERUN = 10072, "DMSvc", "program not run again: it ran before, and the advertisement's rerun policy says not again";
    /// A newer version of the package is installed; the older one is refused.
    DOWNGRADE_REFUSED = 10073, "DMSvc", "refused: a newer version of the package is on the device and the advertisement does not allow a downgrade";
    /// An installed package's publisher is revoked or disallowed.
    PUBLISHER_REVOKED = 10074, "DMSvc", "the publisher of an installed package was revoked or disallowed (reported in inventory)";
    /// A configuration package's items were evaluated and applied.
    CONFIG_APPLIED = 10080, "DMSvc", "configuration items evaluated and applied; compliance per item in the details (`closed`)";
    /// An update deployment's updates were installed through apt.
    UPDATES_INSTALLED = 10090, "DMSvc", "software updates installed through apt; each update in the details";
    /// An update of a deployment failed (apt's or dpkg's reason in the text).
    UPDATE_FAILED = 10091, "DMSvc", "a software update failed: apt's or dpkg's reason in the text; the others still install";
    /// dpkg was found interrupted and repaired with `dpkg --configure -a`.
    DPKG_REPAIRED = 10092, "DMSvc", "dpkg was interrupted (a kill, a power cut) and was repaired with `dpkg --configure -a`";
    /// A system image was handed to the device's update engine.
    IMAGE_INSTALLING = 10100, "DMSvc", "system image handed to the device's update engine (SWUpdate, RAUC) (`proceeding`)";
    /// A system image is installed and waits for the restart into it.
    IMAGE_PENDING_REBOOT = 10101, "DMSvc", "system image installed: pending the restart into it (`proceeding`)";
    /// The device restarted into the new system and its update engine confirmed it.
    IMAGE_CONFIRMED = 10102, "DMSvc", "the device restarted into the new system and its update engine confirmed it (`closed`)";
    /// The update engine refused or failed the image.
    IMAGE_FAILED = 10103, "DMSvc", "the update engine refused or failed the system image: its own words in the details";
    /// The device runs its previous system after the restart.
    IMAGE_FELL_BACK = 10104, "DMSvc", "the device fell back to its previous system after the restart";
    /// The package's health check passed after the install; it runs again at the end of the
    /// soak.
    HEALTH_CHECK_SOAKING = 10110, "DMSvc", "the package's health check passed after the install; it runs again at the end of the soak time (`proceeding`)";
    /// The package's health check passed at the end of the soak.
    HEALTH_CHECK_CONFIRMED = 10111, "DMSvc", "the package's health check passed again at the end of the soak time (`closed`)";
    /// The package's health check failed.
    HEALTH_CHECK_FAILED = 10112, "DMSvc", "the package's health check failed, after the install or at the end of the soak time";
    /// The device refused the publisher certificate (locked device).
    INSTALLER_CERT_REFUSED = 11001, "DMInstaller", "the device refused the publisher certificate (locked device); code `0x80070005`";
    /// The client was installed.
    CLIENT_INSTALLED = 11010, "DMClientSetup", "the client was installed";
    /// The client was upgraded.
    CLIENT_UPGRADED = 11011, "DMClientSetup", "the client was upgraded";
    /// The client's settings were reconfigured.
    CLIENT_RECONFIGURED = 11012, "DMClientSetup", "the client's settings were reconfigured";
    /// No action: a newer client is installed.
    SETUP_NO_ACTION = 11014, "DMClientSetup", "no action: a newer client is installed";
    /// Setup failed; the device was returned to its previous state.
    SETUP_FAILED = 11015, "DMClientSetup", "setup failed; the device was returned to its previous state";
    /// The client was repaired.
    CLIENT_REPAIRED = 11016, "DMClientSetup", "the client was repaired";
    /// Certificate enrollment failed.
    ENROLL_FAILED = 11017, "DMClientSetup", "certificate enrollment failed";
    /// An interrupted setup was finished or rolled back.
    SETUP_RECOVERED = 11018, "DMClientSetup, DMSvc", "an interrupted setup was finished or rolled back";
    /// A client upgrade over the air started.
    CLIENT_UPGRADE_STARTED = 11020, "DMSvc", "a client upgrade over the air started";
    /// A client upgrade over the air finished (success or failure from setup's result).
    CLIENT_UPGRADE_DONE = 11021, "DMSvc", "a client upgrade over the air finished (success or failure from setup)";
    /// A desktop staged a client deployment for the devices it tethers (`dmtether`).
    CLIENT_STAGED_FOR_TETHER = 11030, "DMSvc", "a desktop staged a client deployment for the devices it tethers";
}

impl MessageId {
    fn entry(self) -> Option<&'static Entry> {
        TABLE.iter().find(|e| e.id == self)
    }

    /// Every id this build knows, in table order.
    pub fn all() -> impl Iterator<Item = MessageId> {
        TABLE.iter().map(|e| e.id)
    }

    /// The constant's name, such as `PROGRAM_SUCCEEDED`.
    pub fn name(self) -> &'static str {
        self.entry().map_or("UNKNOWN", |e| e.name)
    }

    /// The programs that send it, such as `DMSvc`.
    pub fn components(self) -> &'static str {
        self.entry().map_or("", |e| e.from)
    }

    /// What it means, for people.
    pub fn meaning(self) -> &'static str {
        self.entry().map_or("unknown status message", |e| e.meaning)
    }

    /// The id as DDI feedback's `code`.
    pub fn ddi_code(self) -> Option<i32> {
        i32::try_from(self.0).ok()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

/// One status message.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StatusMessage {
    /// The numeric message id.
    pub message_id: MessageId,
    /// The outcome.
    pub code: StatusCode,
    /// Which program sent it (`DMInstaller`, `DMClientSetup`, `DMSvc`).
    pub component: String,
    /// When it happened (RFC 3339).
    pub time: String,
    /// What happened, for people.
    pub text: String,
    /// The DDI action it reports on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<u64>,
    /// Where the action is (`proceeding`, `closed`, …) when it is feedback on an action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<Execution>,
    /// Whether it is the final word on its action or operation; final messages are never
    /// dropped to make room.
    #[serde(default)]
    pub final_result: bool,
    /// More lines of detail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// Whether it answers a cancellation (`cancelAction/{id}/feedback`) rather than reporting
    /// on the deployment.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel: bool,
    /// The report's id, given by the outbox when it is queued and the same on every resend:
    /// the management point stores a report once (`dm.report=` in feedback details).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub report_id: String,
    /// Steps done of all, on an action that counts them (a system image: downloaded,
    /// installing, installed, confirmed): DDI's `result.progress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<(u32, u32)>,
}

impl StatusMessage {
    /// A message that belongs to no action, from `component`; final.
    pub fn event(
        component: &str,
        message_id: MessageId,
        code: StatusCode,
        time: String,
        text: String,
    ) -> StatusMessage {
        StatusMessage {
            message_id,
            code,
            component: component.into(),
            time,
            text,
            action_id: None,
            execution: None,
            final_result: true,
            details: Vec::new(),
            cancel: false,
            report_id: String::new(),
            progress: None,
        }
    }

    /// A message about an action (DDI feedback) from the agent.
    pub fn feedback(
        action_id: u64,
        execution: Execution,
        message_id: MessageId,
        code: StatusCode,
        time: String,
        text: String,
        final_result: bool,
    ) -> StatusMessage {
        StatusMessage {
            action_id: Some(action_id),
            execution: Some(execution),
            final_result,
            ..StatusMessage::event("DMSvc", message_id, code, time, text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_and_names_are_unique() {
        let mut ids = HashSet::new();
        let mut names = HashSet::new();
        for e in TABLE {
            assert!(ids.insert(e.id), "duplicate id {}", e.id);
            assert!(names.insert(e.name), "duplicate name {}", e.name);
        }
    }

    #[test]
    fn docs_list_every_id() {
        let docs = include_str!("../../docs/status-messages.md");
        for e in TABLE {
            let row = format!("| {} | {} | {} |", e.id.0, e.from, e.meaning);
            assert!(docs.contains(&row), "docs/status-messages.md lacks {row}");
        }
    }

    #[test]
    fn outbox_json_keeps_its_shape() {
        let m = StatusMessage::feedback(
            7,
            Execution::Closed,
            MessageId::PROGRAM_FAILED,
            StatusCode::DM_E_PROGRAM_FAILED,
            "2026-11-24T13:20:01Z".into(),
            "exit code 3".into(),
            true,
        );
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["message_id"], 10006);
        assert_eq!(v["execution"], "closed");
        assert_eq!(v["code"], "0x8004020A");
        assert_eq!(serde_json::from_value::<StatusMessage>(v).unwrap(), m);
        let bad = serde_json::json!({"message_id": 1, "code": "0x0", "component": "x", "time": "t", "text": "t", "execution": "exploded"});
        assert!(serde_json::from_value::<StatusMessage>(bad).is_err());
    }
}
