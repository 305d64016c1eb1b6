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

/// Limits on device-supplied data.
const MAX_DETAILS: usize = 100;
const MAX_DETAIL_LEN: usize = 4096;
const MAX_ATTRIBUTES: usize = 256;
const MAX_KEY_LEN: usize = 128;
const MAX_VALUE_LEN: usize = 4096;
const MAX_STATUS_MESSAGES: usize = 100;

fn parse_json<T: serde::de::DeserializeOwned>(
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

fn check_details(details: &[String]) -> Result<(), ApiError> {
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
        hresult: tags.status.map(|c| format!("0x{:08X}", c.0)),
        component: None,
        details,
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
    let a = device_action(&state.read(), d, action_id)?;
    let fb: ActionFeedback = parse_json(body, "the feedback")?;
    check_details(&fb.status.details)?;
    let rec = record_of(d, &a, cancel, &fb, state.now())?;
    let (exec, finished) = (fb.status.execution, fb.status.result.finished);
    let _serial = state.feedback_lock.lock().unwrap_or_else(|p| p.into_inner());
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

/// `PUT …/configData`.
pub fn config_data(
    state: &AppState,
    d: &Device,
    body: Result<Bytes, BytesRejection>,
) -> Result<(), ApiError> {
    let cd: ConfigData = parse_json(body, "the configData")?;
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
    let key = (d.tenant.clone(), d.controller_id.clone());
    let mut attrs =
        state.read().devices.get(&key).map(|d| d.attributes.clone()).unwrap_or_default();
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
        let dev = view.devices.get_mut(&key).ok_or_else(|| ApiError::not_found("device"))?;
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

/// `POST …/dm/statusMessages`: status messages that belong to no action.
pub fn status_messages(
    state: &AppState,
    d: &Device,
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Value, ApiError> {
    let msgs: Vec<StatusMessage> = parse_json(body, "the status messages")?;
    if msgs.len() > MAX_STATUS_MESSAGES {
        return Err(ApiError::bad_request(format!(
            "{} messages; at most {MAX_STATUS_MESSAGES} per request",
            msgs.len()
        )));
    }
    for m in &msgs {
        check_details(&m.details)?;
        if m.text.len() > MAX_DETAIL_LEN || m.component.len() > 64 {
            return Err(ApiError::bad_request(
                "a status message text is at most 4096 bytes and its component at most 64",
            ));
        }
    }
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
            hresult: Some(format!("0x{:08X}", m.code.0)),
            component: Some(m.component.clone()),
            details,
        };
        state.store.add_status(&rec).map_err(ApiError::from)?;
        log::info!(
            "device {} status message {} from {}: {}",
            d.controller_id,
            m.message_id,
            m.component,
            m.text
        );
    }
    Ok(serde_json::json!({ "accepted": msgs.len() }))
}
