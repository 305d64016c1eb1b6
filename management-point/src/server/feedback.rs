//! What a device reports: feedback on an action (stored with the action's move, atomically),
//! inventory (`configData`), its installed base, and status messages that belong to no action.
//! Every size a device controls is capped.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use dm_shared::ddi::{ActionFeedback, ConfigData, ConfigDataMode, Tags};
use dm_shared::message::StatusMessage;
use serde::Deserialize;

use super::http::ApiError;
use super::poll::device_action;
use super::state::AppState;
use crate::model::*;
use crate::printable::printable;

/// Limits on device-supplied data.
const MAX_DETAILS: usize = 100;
const MAX_DETAIL_LEN: usize = 4096;
const MAX_ATTRIBUTES: usize = 256;
const MAX_KEY_LEN: usize = 128;
const MAX_VALUE_LEN: usize = 4096;
const MAX_STATUS_MESSAGES: usize = 100;

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    what: &str,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| {
        let status = r.status();
        ApiError::new(
            status,
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                "dm.request.tooLarge"
            } else {
                "dm.request.malformed"
            },
            format!("{what}: {}", r.body_text()),
        )
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("{what} is not valid: {e}")))
}

pub(super) fn check_details(details: &[String]) -> Result<(), ApiError> {
    if details.len() > MAX_DETAILS {
        return Err(ApiError::bad_request(format!(
            "{} detail lines; at most {MAX_DETAILS}",
            details.len()
        )));
    }
    if let Some(l) = details.iter().find(|l| l.len() > MAX_DETAIL_LEN) {
        return Err(ApiError::bad_request(format!(
            "a detail line of {} bytes; at most {MAX_DETAIL_LEN}",
            l.len()
        )));
    }
    Ok(())
}

/// The status record of a feedback: this project's tags (the status code) read by key and
/// stored in their own columns, the lines for people as details.
fn record_of(
    d: &Device,
    a: &Action,
    cancel: bool,
    fb: &ActionFeedback,
    now: i64,
) -> Result<StatusRecord, ApiError> {
    let (tags, details) = Tags::split(&fb.status.details).map_err(ApiError::bad_request)?;
    Ok(StatusRecord {
        id: 0,
        device_id: d.id,
        action_id: Some(a.id),
        received: now,
        source: if cancel { "cancel-feedback" } else { "feedback" }.into(),
        execution: Some(fb.status.execution),
        finished: Some(fb.status.result.finished),
        message_id: fb.status.code,
        hresult: tags.status.map(dm_shared::StatusCode::hex),
        component: None,
        details,
        report_id: tags.report,
    })
}

/// `POST …/deploymentBase/{actionId}/feedback` and `…/cancelAction/{actionId}/feedback`.
pub fn feedback(
    state: &AppState,
    d: &Device,
    action_id: &str,
    body: Result<Bytes, BytesRejection>,
    cancel: bool,
) -> Result<(), ApiError> {
    let a = device_action(state, d, action_id)?;
    let fb: ActionFeedback = parse_json(body, "the feedback")?;
    check_details(&fb.status.details)?;
    let rec = record_of(d, &a, cancel, &fb, state.now())?;
    let (exec, finished) = (fb.status.execution, fb.status.result.finished);
    let _serial = state.feedback_lock(a.id);
    let updated = state
        .store
        .apply_feedback(a.id, &rec, &|cur| {
            if cancel {
                cur.on_cancel_feedback(exec, finished)
            } else {
                cur.on_feedback(exec, finished)
            }
        })
        .map_err(ApiError::from)?;
    let Some(updated) = updated else {
        log::info!(
            "device {} action {}: report {} again (its acknowledgement was lost); stored once",
            d.controller_id,
            a.id,
            printable(rec.report_id.as_deref().unwrap_or("-"))
        );
        return Ok(());
    };
    log::info!(
        "device {} action {}: {} {:?} code {} -> {}",
        d.controller_id,
        a.id,
        fb.status.execution.as_str(),
        fb.status.result.finished,
        fb.status.code.map_or_else(|| "-".into(), |c| c.to_string()),
        updated.status.as_str()
    );
    state.write().put_action(updated);
    Ok(())
}

/// The checks of a `configData` body before anything is stored: how many attributes, how long.
pub(super) fn check_config_data(cd: &ConfigData) -> Result<(), ApiError> {
    if cd.data.len() > MAX_ATTRIBUTES {
        return Err(ApiError::bad_request(format!(
            "{} attributes; at most {MAX_ATTRIBUTES}",
            cd.data.len()
        )));
    }
    if let Some((k, _)) = cd
        .data
        .iter()
        .find(|(k, v)| k.is_empty() || k.len() > MAX_KEY_LEN || v.len() > MAX_VALUE_LEN)
    {
        return Err(ApiError::bad_request(format!(
            "attribute {:?}: keys are 1 to {MAX_KEY_LEN} bytes, values at most {MAX_VALUE_LEN}",
            k.chars().take(40).collect::<String>()
        )));
    }
    Ok(())
}

/// `PUT …/configData`.
pub fn config_data(
    state: &AppState,
    d: &Device,
    body: Result<Bytes, BytesRejection>,
) -> Result<(), ApiError> {
    let cd: ConfigData = parse_json(body, "the configData")?;
    check_config_data(&cd)?;
    let key = (d.tenant.clone(), d.controller_id.clone());
    // A device an administrator added a moment ago may not be in the view yet: its stored
    // record (from authentication) stands in.
    let mut attrs = state
        .read()
        .devices
        .get(&key)
        .map_or_else(|| d.attributes.clone(), |d| d.attributes.clone());
    match cd.mode.unwrap_or(ConfigDataMode::Merge) {
        ConfigDataMode::Merge => attrs.extend(cd.data),
        ConfigDataMode::Replace => attrs = cd.data,
        ConfigDataMode::Remove => {
            for k in cd.data.keys() {
                attrs.remove(k);
            }
        }
    }
    if attrs.len() > MAX_ATTRIBUTES {
        return Err(ApiError::bad_request(format!(
            "the device would have {} attributes; at most {MAX_ATTRIBUTES}",
            attrs.len()
        )));
    }
    state.store.set_attributes(d.id, &attrs).map_err(ApiError::from)?;
    let updated = {
        let mut view = state.write();
        view.device_keys.insert(d.id, key.clone());
        let dev = view.devices.entry(key).or_insert_with(|| d.clone());
        dev.attributes = attrs;
        dev.clone()
    };
    log::debug!("device {} reported {} attributes", d.controller_id, updated.attributes.len());
    // New inventory may put the device into collections.
    state.ensure_actions(&updated).map_err(ApiError::from)
}

/// `PUT …/installedBase`: the version the device runs, set offline.
pub fn set_installed(
    state: &AppState,
    d: &Device,
    body: Result<Bytes, BytesRejection>,
) -> Result<(), ApiError> {
    #[derive(Deserialize)]
    struct Assigned {
        name: String,
        version: String,
    }
    let v: Assigned = parse_json(body, "the assigned version")?;
    if v.name.len() > MAX_VALUE_LEN || v.version.len() > MAX_VALUE_LEN {
        return Err(ApiError::bad_request("name and version are at most 4096 bytes"));
    }
    let mut data = BTreeMap::new();
    data.insert("assigned.name".to_string(), v.name);
    data.insert("assigned.version".to_string(), v.version);
    let body = serde_json::to_vec(&ConfigData { data, mode: Some(ConfigDataMode::Merge) })
        .unwrap_or_default();
    config_data(state, d, Ok(Bytes::from(body)))
}

/// The checks of a body of status messages before anything is stored: how many, how long,
/// report ids.
pub(super) fn check_status_messages(msgs: &[StatusMessage]) -> Result<(), ApiError> {
    if msgs.len() > MAX_STATUS_MESSAGES {
        return Err(ApiError::bad_request(format!(
            "{} messages; at most {MAX_STATUS_MESSAGES} per request",
            msgs.len()
        )));
    }
    for m in msgs {
        check_details(&m.details)?;
        if !m.report_id.is_empty() && !dm_shared::ddi::valid_report_id(&m.report_id) {
            return Err(ApiError::bad_request(
                "a report id is 1 to 64 letters, digits, '-' or '_'",
            ));
        }
        if m.text.len() > MAX_DETAIL_LEN || m.component.len() > 64 {
            return Err(ApiError::bad_request(
                "a status message text is at most 4096 bytes and its component at most 64",
            ));
        }
    }
    Ok(())
}

/// `POST …/dm/statusMessages`: status messages that belong to no action.
pub fn status_messages(
    state: &AppState,
    d: &Device,
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Value, ApiError> {
    let msgs: Vec<StatusMessage> = parse_json(body, "the status messages")?;
    check_status_messages(&msgs)?;
    let now = state.now();
    for m in &msgs {
        let mut details = vec![m.text.clone()];
        details.extend(m.details.iter().cloned());
        let rec = StatusRecord {
            id: 0,
            device_id: d.id,
            action_id: None,
            received: now,
            source: "status-message".into(),
            execution: m.execution,
            finished: None,
            message_id: m.message_id.ddi_code(),
            hresult: Some(m.code.hex()),
            component: Some(m.component.clone()),
            details,
            report_id: (!m.report_id.is_empty()).then(|| m.report_id.clone()),
        };
        if state.store.add_status(&rec).map_err(ApiError::from)?.is_none() {
            log::info!(
                "device {} status message {} again (report {}); stored once",
                d.controller_id,
                m.message_id,
                printable(&m.report_id)
            );
            continue;
        }
        log::info!(
            "device {} status message {} from {}: {}",
            d.controller_id,
            m.message_id,
            printable(&m.component),
            printable(&m.text)
        );
    }
    Ok(serde_json::json!({ "accepted": msgs.len() }))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::super::fixture::Fixture;
    use super::super::poll::{HistoryQuery, cancel_action, deployment_base, poll};
    use super::*;

    fn action_of(f: &Fixture, d: &Device) -> String {
        let base = poll(&f.state, d).unwrap();
        let href = &base.links.get("deploymentBase").expect("a deployment").href;
        href.rsplit('/').next().unwrap().split('?').next().unwrap().to_string()
    }

    fn status_of(f: &Fixture, action: &str) -> ActionStatus {
        f.state.read().actions[&action.parse::<i64>().unwrap()].status
    }

    #[test]
    fn an_action_moves_from_scheduled_to_finished() {
        let f = Fixture::new(|_| {});
        f.advertise("tools", AdvertisementKind::Mandatory);
        let d = f.device("dev-1", "tok");
        let action = action_of(&f, &d);
        assert_eq!(status_of(&f, &action), ActionStatus::Scheduled);
        let dep = deployment_base(&f.state, &d, &action, &HistoryQuery::default()).unwrap();
        assert_eq!(dep.deployment.chunks[0].part, "software-distribution");
        assert_eq!(status_of(&f, &action), ActionStatus::Retrieved);
        let fb = |e, r, c, details: &[&str]| {
            feedback(&f.state, &d, &action, Ok(Fixture::feedback(e, r, c, details)), false)
        };
        fb("proceeding", "none", 10005, &[]).unwrap();
        assert_eq!(status_of(&f, &action), ActionStatus::Running);
        fb("closed", "success", 10008, &["tools-run completed", "dm.status=0x00000000"]).unwrap();
        assert_eq!(status_of(&f, &action), ActionStatus::Finished);
        let gone = fb("closed", "success", 10008, &[]).unwrap_err();
        assert_eq!(gone.status, StatusCode::GONE);
        let history = f.state.store.statuses_for_action(action.parse().unwrap()).unwrap();
        assert_eq!(history.len(), 2, "the refused feedback stored nothing");
        assert_eq!(history[1].hresult.as_deref(), Some("0x00000000"));
        assert_eq!(history[1].details, ["tools-run completed"], "tags are not details");
        assert!(poll(&f.state, &d).unwrap().links.contains_key("installedBase"));
    }

    #[test]
    fn a_reload_never_brings_a_closed_action_back() {
        let f = Fixture::new(|_| {});
        f.advertise("tools", AdvertisementKind::Mandatory);
        let d = f.device("dev-1", "tok");
        let action = action_of(&f, &d);
        // A reload reads the database while the action is still open...
        let seen = f.state.read().local_writes;
        let stale = super::super::state::View::load(f.state.store.as_ref()).unwrap();
        // ...the device closes it meanwhile...
        let fb = Fixture::feedback("closed", "success", 10008, &[]);
        feedback(&f.state, &d, &action, Ok(fb), false).unwrap();
        assert_eq!(status_of(&f, &action), ActionStatus::Finished);
        // ...and the stale read is not installed over it.
        assert!(!f.state.install_if_unchanged(stale, seen));
        assert_eq!(status_of(&f, &action), ActionStatus::Finished);
    }

    #[test]
    fn status_codes_are_read_by_key_and_bad_tags_refused() {
        let f = Fixture::new(|_| {});
        f.advertise("tools", AdvertisementKind::Mandatory);
        let d = f.device("dev-1", "tok");
        let action = action_of(&f, &d);
        let send = |details: &[&str]| {
            feedback(
                &f.state,
                &d,
                &action,
                Ok(Fixture::feedback("closed", "failure", 10006, details)),
                false,
            )
        };
        // A hex word in free text is just text now.
        let bad = send(&["failed: 0xDEADBEEF", "dm.status=8004020A"]).unwrap_err();
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert!(f.state.store.statuses_for_action(action.parse().unwrap()).unwrap().is_empty());
        send(&["failed: 0xDEADBEEF", "dm.status=0x8004020A"]).unwrap();
        let r = &f.state.store.statuses_for_action(action.parse().unwrap()).unwrap()[0];
        assert_eq!(r.hresult.as_deref(), Some("0x8004020A"));
        assert_eq!(status_of(&f, &action), ActionStatus::Error);
    }

    #[test]
    fn a_cancellation_waits_for_the_device_to_answer() {
        let f = Fixture::new(|_| {});
        let adv = f.advertise("tools", AdvertisementKind::Mandatory);
        let d = f.device("dev-1", "tok");
        let action = action_of(&f, &d);
        let early = cancel_action(&f.state, &d, &action).unwrap_err();
        assert_eq!(early.status, StatusCode::NOT_FOUND, "nothing to cancel yet");
        let wrong = feedback(
            &f.state,
            &d,
            &action,
            Ok(Fixture::feedback("canceled", "success", 1, &[])),
            true,
        );
        assert_eq!(wrong.unwrap_err().status, StatusCode::CONFLICT);
        f.state.store.cancel_advertisement(adv.id, 5).unwrap();
        f.reload();
        let base = poll(&f.state, &d).unwrap();
        assert!(
            base.links.contains_key("cancelAction") && !base.links.contains_key("deploymentBase")
        );
        assert_eq!(cancel_action(&f.state, &d, &action).unwrap().cancel_action.stop_id, action);
        // Progress does not end a pending cancellation; the device's answer does.
        feedback(
            &f.state,
            &d,
            &action,
            Ok(Fixture::feedback("download", "none", 10002, &[])),
            false,
        )
        .unwrap();
        assert_eq!(status_of(&f, &action), ActionStatus::Canceling);
        feedback(
            &f.state,
            &d,
            &action,
            Ok(Fixture::feedback("canceled", "success", 10040, &[])),
            true,
        )
        .unwrap();
        assert_eq!(status_of(&f, &action), ActionStatus::Canceled);
    }

    #[test]
    fn devices_only_see_their_own_actions() {
        let f = Fixture::new(|_| {});
        f.advertise("tools", AdvertisementKind::Mandatory);
        let a = f.device("dev-a", "tok-a");
        let b = f.device("dev-b", "tok-b");
        let action_a = action_of(&f, &a);
        let q = HistoryQuery::default();
        assert_eq!(
            deployment_base(&f.state, &b, &action_a, &q).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        let r = feedback(
            &f.state,
            &b,
            &action_a,
            Ok(Fixture::feedback("closed", "success", 1, &[])),
            false,
        );
        assert_eq!(r.unwrap_err().status, StatusCode::NOT_FOUND);
        assert_eq!(status_of(&f, &action_a), ActionStatus::Scheduled);
    }

    #[test]
    fn inventory_merges_and_caps() {
        let f = Fixture::new(|_| {});
        let d = f.device("dev-1", "tok");
        assert!(poll(&f.state, &d).unwrap().links.contains_key("configData"));
        let put = |body: &str| config_data(&f.state, &d, Ok(Bytes::from(body.to_string())));
        put(r#"{"data":{"platform":"linux-aarch64","model":"rpi4"}}"#).unwrap();
        put(r#"{"data":{"model":"rpi5"},"mode":"merge"}"#).unwrap();
        let attrs = f.state.read().devices[&("DEFAULT".to_string(), "dev-1".to_string())]
            .attributes
            .clone();
        assert_eq!(
            (attrs["platform"].as_str(), attrs["model"].as_str()),
            ("linux-aarch64", "rpi5")
        );
        assert!(!poll(&f.state, &d).unwrap().links.contains_key("configData"));
        let many: BTreeMap<String, String> =
            (0..300).map(|i| (format!("k{i}"), "v".into())).collect();
        let body = serde_json::json!({ "data": many }).to_string();
        assert_eq!(put(&body).unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(put("[1,2]").unwrap_err().status, StatusCode::BAD_REQUEST);
    }
}
