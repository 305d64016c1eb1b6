//! The agent's session with its management point over DDI: poll, deployments, feedback,
//! cancel, configData, and sending the outbox in order (see docs/status-messages.md).

use std::collections::BTreeMap;

use dm_shared::ddi::{
    self, ActionFeedback, ConfigData, ConfigDataMode, ControllerBase, Execution, Finished,
    ResultStatus, Status, Tags,
};
use dm_shared::message::StatusMessage;
use dm_shared::outbox::Outbox;

use super::net::Net;
use crate::error::{Error, Result};

/// Whether the server takes this project's status message extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// Not known yet.
    Unknown,
    /// `dmmp`: `POST …/dm/statusMessages` works.
    Dmmp,
    /// Another DDI server: status messages go as configData attributes.
    Other,
}

/// A DDI session with a management point: the one of the configured points that answered
/// last, kept until it stops answering, then the next in order.
#[derive(Debug)]
pub struct Session {
    /// The HTTP client.
    pub net: Net,
    /// `{ManagementPoint}/{tenant}/controller/v1/{controllerId}` of the point in use.
    pub base: String,
    /// The same for every configured point, in order.
    bases: Vec<String>,
    /// Which of `bases` is in use.
    current: usize,
    /// What the server is.
    pub kind: ServerKind,
}

/// The DDI feedback for an outbox message.
pub fn to_feedback(m: &StatusMessage) -> ActionFeedback {
    let exec = m.execution.unwrap_or(Execution::Proceeding);
    let finished = match exec {
        Execution::Closed if m.code.is_failure() => Finished::Failure,
        Execution::Closed | Execution::Canceled => Finished::Success,
        _ => Finished::None,
    };
    let mut details = vec![m.text.clone()];
    details.extend(m.details.iter().cloned());
    let report = (!m.report_id.is_empty()).then(|| m.report_id.clone());
    details.extend(Tags { status: Some(m.code), report }.lines());
    let timestamp = dm_shared::clock::parse_rfc3339(&m.time)
        .map(|t| dm_shared::clock::unix_secs(t) as i64 * 1000);
    ActionFeedback {
        status: Status {
            execution: exec,
            result: ResultStatus {
                finished,
                progress: m.progress.map(|(cnt, of)| dm_shared::ddi::Progress {
                    cnt: i32::try_from(cnt).ok(),
                    of: i32::try_from(of).ok(),
                    percentage: None,
                }),
            },
            code: m.message_id.ddi_code(),
            details,
        },
        timestamp,
    }
}

impl Session {
    /// A session for `{point}/{tenant}/controller/v1/{controller_id}`, starting with the first
    /// of `points`.
    pub fn new(net: Net, points: &[String], tenant: &str, controller_id: &str) -> Session {
        let bases: Vec<String> = points
            .iter()
            .map(|p| format!("{}/{tenant}/controller/v1/{controller_id}", p.trim_end_matches('/')))
            .collect();
        Session {
            net,
            base: bases.first().cloned().unwrap_or_default(),
            bases,
            current: 0,
            kind: ServerKind::Unknown,
        }
    }

    /// After a network failure (`why`): the next poll goes to the next management point, if
    /// there are several. The back-off is the caller's, as for one point.
    pub fn fail_over(&mut self, why: &Error) {
        if self.bases.len() < 2 {
            return;
        }
        self.current = (self.current + 1) % self.bases.len();
        let next = self.bases[self.current].clone();
        log::warn!("the management point did not answer ({why}); the next poll goes to {next}");
        self.base = next;
        // The next point may be another kind of server.
        self.kind = ServerKind::Unknown;
    }

    /// Polls.
    pub fn poll(&self) -> Result<ControllerBase> {
        self.net.get_json(&self.base)
    }

    /// Fetches a link the server gave.
    pub fn get<T: serde::de::DeserializeOwned>(&self, href: &str) -> Result<T> {
        self.net.get_json(href)
    }

    /// Sends inventory (merged into what the server has).
    pub fn config_data(&self, data: BTreeMap<String, String>) -> Result<()> {
        self.net.send_json(
            "PUT",
            &format!("{}/configData", self.base),
            &ConfigData { data, mode: Some(ConfigDataMode::Merge) },
        )
    }

    /// Removes attributes the device no longer reports (a package no longer revoked, an item
    /// compliant again), leaving the rest.
    pub fn config_data_remove(&self, keys: &[String]) -> Result<()> {
        let data = keys.iter().map(|k| (k.clone(), String::new())).collect();
        self.net.send_json(
            "PUT",
            &format!("{}/configData", self.base),
            &ConfigData { data, mode: Some(ConfigDataMode::Remove) },
        )
    }

    fn send_one(&mut self, m: &StatusMessage) -> Result<()> {
        if let Some(id) = m.action_id {
            let endpoint = if m.cancel { "cancelAction" } else { "deploymentBase" };
            return self.net.send_json(
                "POST",
                &format!("{}/{endpoint}/{id}/feedback", self.base),
                &to_feedback(m),
            );
        }
        if self.kind != ServerKind::Other {
            match self.net.send_json(
                "POST",
                &format!("{}/{}", self.base, ddi::STATUS_MESSAGES_PATH),
                &[m],
            ) {
                Ok(()) => {
                    self.kind = ServerKind::Dmmp;
                    return Ok(());
                }
                Err(Error::Http { status: 404 | 405, .. }) => {
                    log::info!(
                        "the management point has no status message endpoint (not dmmp): sending status messages as configData attributes"
                    );
                    self.kind = ServerKind::Other;
                }
                Err(e) => return Err(e),
            }
        }
        let mut data = BTreeMap::new();
        data.insert(
            format!("dm.status.{}.{}", m.time.replace([':', '-'], ""), m.message_id),
            format!("{} {}: {}", m.code, m.component, m.text).chars().take(4000).collect(),
        );
        self.config_data(data)
    }

    /// Sends the outbox in order, removing each message the server acknowledged. A message the
    /// server refuses for good (4xx other than 401, 403, 408, 429) is dropped with a log line,
    /// so it cannot block the ones behind it. Stops at the first transient failure and returns
    /// it; the rest waits for the next attempt.
    pub fn flush(&mut self, outbox: &Outbox) -> Result<usize> {
        let mut sent = 0;
        for (seq, m) in outbox.pending()? {
            match self.send_one(&m) {
                Ok(()) => {
                    outbox.remove(seq)?;
                    sent += 1;
                }
                Err(Error::Http { status, message, .. })
                    if (400..500).contains(&status) && ![401, 403, 408, 429].contains(&status) =>
                {
                    log::warn!(
                        "the management point refused status message {} (action {:?}, {}) for good with HTTP {status}: {message}; dropping it",
                        m.message_id,
                        m.action_id,
                        m.execution.map_or("-", Execution::as_str)
                    );
                    outbox.remove(seq)?;
                }
                Err(e) => return Err(e),
            }
        }
        if sent > 0 {
            log::debug!("sent {sent} status messages");
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dm_shared::StatusCode;
    use dm_shared::message::MessageId;

    #[test]
    fn outbox_messages_become_ddi_feedback() {
        let mut m = StatusMessage::feedback(
            7,
            Execution::Closed,
            MessageId::PROGRAM_FAILED,
            StatusCode::DM_E_PROGRAM_FAILED,
            "2026-11-24T13:20:01Z".into(),
            "exit code 3".into(),
            true,
        );
        let fb = to_feedback(&m);
        assert_eq!(
            (fb.status.execution, fb.status.result.finished, fb.status.code),
            (Execution::Closed, Finished::Failure, Some(10006))
        );
        let (tags, people) = Tags::split(&fb.status.details).unwrap();
        assert_eq!(tags.status, Some(StatusCode::DM_E_PROGRAM_FAILED));
        assert_eq!(people, ["exit code 3"]);
        assert_eq!(fb.timestamp, Some(1_795_526_401_000));
        m.code = StatusCode::S_OK;
        assert_eq!(to_feedback(&m).status.result.finished, Finished::Success);
        m.execution = Some(Execution::Download);
        assert_eq!(to_feedback(&m).status.result.finished, Finished::None);
    }
}
