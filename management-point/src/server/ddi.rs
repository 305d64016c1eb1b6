//! The DDI device API: poll, deployment, feedback, cancel, configData, installedBase,
//! artifacts (with Range and `.MD5SUM`), and the status message extension endpoint.
//!
//! Every refusal is an HTTP status with an `ExceptionInfo` body and one log line naming the
//! device, the request and the reason; nothing is stored for a refused request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use dm_shared::ddi::{self, ActionFeedback, ConfigData, ConfigDataMode, Execution, Finished};
use dm_shared::outbox::StatusMessage;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;

use super::http::{ApiError, encode_segment, parse_range};
use super::state::{AppState, View};
use super::tls::{self, ClientCertProblem};
use crate::config::UnknownDevices;
use crate::model::*;

/// What the TLS layer learned about a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer address.
    pub peer: SocketAddr,
    /// The client certificate chain, when one was offered.
    pub client_chain: Option<Vec<CertificateDer<'static>>>,
}

/// Limits on device-supplied data.
const MAX_DETAILS: usize = 100;
const MAX_DETAIL_LEN: usize = 4096;
const MAX_ATTRIBUTES: usize = 256;
const MAX_KEY_LEN: usize = 128;
const MAX_VALUE_LEN: usize = 4096;
const MAX_STATUS_MESSAGES: usize = 100;

/// The request as the handlers log it.
#[derive(Debug, Clone)]
pub struct ReqInfo {
    method: Method,
    path: String,
    peer: SocketAddr,
}

impl ReqInfo {
    fn new(method: &Method, uri: &Uri, conn: &ConnInfo) -> ReqInfo {
        ReqInfo { method: method.clone(), path: uri.path().to_string(), peer: conn.peer }
    }

    /// Logs a refusal and returns it.
    fn refuse(&self, e: ApiError) -> ApiError {
        if e.status.is_server_error() {
            log::error!(
                "{} {} from {}: {} {}",
                self.method,
                self.path,
                self.peer,
                e.status.as_u16(),
                e.message
            );
        } else {
            log::warn!(
                "{} {} from {}: {} {}",
                self.method,
                self.path,
                self.peer,
                e.status.as_u16(),
                e.message
            );
        }
        e
    }
}

fn sha256_hex(s: &str) -> String {
    dm_shared::pki::sha256_hex(s.as_bytes())
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Authenticates a request for `tenant`/`controller_id`, registering unknown devices when the
/// configuration allows it.
pub fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    conn: &ConnInfo,
    tenant: &str,
    cid: &str,
) -> Result<Device, ApiError> {
    let cfg = &state.config.devices;
    if !cfg.tenants.iter().any(|t| t == tenant) {
        return Err(ApiError::not_found(format!("tenant {tenant:?} is not served here")));
    }
    if !valid_id(cid) {
        return Err(ApiError::bad_request(
            "the controller id must be 1 to 64 letters, digits, '.', '_' or '-'",
        ));
    }
    let cached = state.read().devices.get(&(tenant.to_string(), cid.to_string())).cloned();
    // A device an administrator added a moment ago may not be in the view yet: ask the
    // database before treating it as unknown (rare, so not a per-poll cost).
    let existing = match cached {
        Some(d) => Some(d),
        None => state.store.device(tenant, cid).map_err(ApiError::from)?,
    };
    let register = |token: Option<&str>, how: &str| -> Result<Device, ApiError> {
        if cfg.unknown_devices == UnknownDevices::Refuse {
            return Err(ApiError::unauthorized(format!(
                "device {cid} is not registered and this server does not register unknown devices"
            )));
        }
        state.register(tenant, cid, token, how).map_err(ApiError::from)
    };
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(auth) = auth {
        let (scheme, secret) =
            auth.split_once(' ').map(|(a, b)| (a, b.trim())).unwrap_or((auth, ""));
        return match scheme {
            "TargetToken" if cfg.target_token && !secret.is_empty() => {
                let presented = sha256_hex(secret);
                match existing {
                    Some(d) if d.token_sha256.as_deref() == Some(presented.as_str()) => Ok(d),
                    Some(_) => Err(ApiError::unauthorized(format!(
                        "the target token of device {cid} does not match"
                    ))),
                    None => register(Some(&presented), "target-token"),
                }
            }
            "GatewayToken" if !secret.is_empty() => match &cfg.gateway_token {
                Some(g) if sha256_hex(g) == sha256_hex(secret) => match existing {
                    Some(d) => Ok(d),
                    None => register(None, "gateway-token"),
                },
                _ => Err(ApiError::unauthorized("the gateway token does not match")),
            },
            _ => Err(ApiError::unauthorized(format!(
                "authorization scheme {scheme:?} is not accepted; use TargetToken, GatewayToken or a client certificate"
            ))),
        };
    }
    if let Some(chain) = &conn.client_chain {
        if state.client_roots.is_empty() {
            return Err(ApiError::unauthorized(
                "client certificates are not accepted by this server",
            ));
        }
        let now = rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            state.now().max(0) as u64,
        ));
        let cn = tls::check_client_cert(chain, &state.client_roots, now).map_err(|p| match p {
            ClientCertProblem::Foreign => ApiError::forbidden(
                "the client certificate was not issued by this server's client CA",
            ),
            ClientCertProblem::Expired => {
                ApiError::forbidden("the client certificate is expired or not yet valid")
            }
            ClientCertProblem::Invalid(why) => ApiError::forbidden(format!(
                "the client certificate is not valid for client authentication: {why}"
            )),
        })?;
        if cn != cid {
            return Err(ApiError::forbidden(format!(
                "the client certificate is for {cn:?}, not {cid:?}"
            )));
        }
        return match existing {
            Some(d) => Ok(d),
            None => register(None, "certificate"),
        };
    }
    Err(ApiError::unauthorized(
        "no credentials: send Authorization: TargetToken <token> or a client certificate",
    ))
}

fn base_url(state: &AppState, tenant: &str, cid: &str) -> String {
    format!(
        "{}/{}/controller/v1/{}",
        state.public_url(),
        encode_segment(tenant),
        encode_segment(cid)
    )
}

fn is_open(s: ActionStatus) -> bool {
    matches!(s, ActionStatus::Scheduled | ActionStatus::Retrieved | ActionStatus::Running)
}

fn window_open(adv: &Advertisement, now: i64) -> Option<bool> {
    adv.window.map(|w| w.is_open(now))
}

/// The action the device should work on next: the oldest open one whose advertisement is
/// active, or that it already started.
fn next_action(view: &View, device_id: i64, now: i64) -> Option<&Action> {
    view.actions_of(device_id).find(|a| {
        is_open(a.status)
            && (a.status != ActionStatus::Scheduled
                || view
                    .advertisements
                    .get(&a.advertisement_id)
                    .is_some_and(|adv| adv.is_active(now)))
    })
}

fn change_marker(a: &Action, window: Option<bool>) -> u64 {
    // FNV-1a over what, when it changes, should make a device fetch the deployment again.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in format!("{}:{}:{:?}", a.id, a.status.as_str(), window).bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// `GET /{tenant}/controller/v1/{controllerId}`.
pub fn poll(state: &AppState, d: &Device) -> Result<ddi::ControllerBase, ApiError> {
    let now = state.now();
    state.seen(d.id, now);
    state.ensure_actions(d).map_err(ApiError::from)?;
    let view = state.read();
    let base = base_url(state, &d.tenant, &d.controller_id);
    let mut links = ddi::Links::new();
    let link = |href: String| ddi::Link { href };
    if let Some(a) = view.actions_of(d.id).find(|a| a.status == ActionStatus::Canceling) {
        links.insert("cancelAction".into(), link(format!("{base}/cancelAction/{}", a.id)));
    } else if let Some(a) = next_action(&view, d.id, now) {
        let window =
            view.advertisements.get(&a.advertisement_id).and_then(|adv| window_open(adv, now));
        links.insert(
            "deploymentBase".into(),
            link(format!("{base}/deploymentBase/{}?c={}", a.id, change_marker(a, window))),
        );
    }
    let current = view.devices.get(&(d.tenant.clone(), d.controller_id.clone())).unwrap_or(d);
    if current.attributes.is_empty() {
        links.insert("configData".into(), link(format!("{base}/configData")));
    }
    if let Some(a) = view
        .actions_of(d.id)
        .filter(|a| a.status == ActionStatus::Finished)
        .max_by_key(|a| a.updated)
    {
        links.insert("installedBase".into(), link(format!("{base}/installedBase/{}", a.id)));
    }
    Ok(ddi::ControllerBase {
        config: ddi::Config {
            polling: ddi::Polling { sleep: ddi::format_sleep(state.config.poll_sleep()) },
        },
        links,
    })
}

fn rfc3339(t: i64) -> String {
    dm_shared::clock::rfc3339(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64),
    )
}

fn chunk(
    state: &AppState,
    d: &Device,
    adv: &Advertisement,
    prog: &Program,
    pkg: &Package,
) -> ddi::Chunk {
    let base = base_url(state, &d.tenant, &d.controller_id);
    let artifacts = pkg
        .artifacts
        .iter()
        .map(|a| {
            let download = match &pkg.distribution_point {
                Some(dp) => format!(
                    "{}/{}",
                    dp.trim_end_matches('/'),
                    a.filename.split('/').map(encode_segment).collect::<Vec<_>>().join("/")
                ),
                None => format!(
                    "{base}/softwaremodules/{}/artifacts/{}",
                    pkg.id,
                    encode_segment(&a.filename)
                ),
            };
            let mut links = ddi::Links::new();
            if pkg.distribution_point.is_none() {
                links.insert("md5sum".into(), ddi::Link { href: format!("{download}.MD5SUM") });
            }
            links.insert("download".into(), ddi::Link { href: download });
            ddi::Artifact {
                filename: a.filename.clone(),
                hashes: ddi::Hashes {
                    sha1: a.sha1.clone(),
                    md5: a.md5.clone(),
                    sha256: a.sha256.clone(),
                },
                size: a.size,
                links,
            }
        })
        .collect();
    let m = |k: &str, v: String| ddi::Metadata { key: k.to_string(), value: v };
    let mut metadata = vec![
        m(ddi::meta::PROGRAM, prog.name.clone()),
        m(ddi::meta::COMMAND, prog.command.clone()),
        m(
            ddi::meta::PLATFORMS,
            if prog.platforms.is_empty() { "any".into() } else { prog.platforms.join(",") },
        ),
        m(ddi::meta::MAX_RUN_TIME, prog.max_run_time.to_string()),
        m(ddi::meta::DEVICE_CLASS, prog.device_class.to_string()),
        m(ddi::meta::ADVERTISEMENT, adv.id.to_string()),
        m(ddi::meta::ADVERTISEMENT_KIND, adv.kind.as_str().into()),
        m(ddi::meta::START_TIME, rfc3339(adv.start_time)),
    ];
    if let Some(e) = adv.expires {
        metadata.push(m(ddi::meta::EXPIRES, rfc3339(e)));
    }
    ddi::Chunk {
        part: pkg.kind.as_str().into(),
        version: pkg.version.clone(),
        name: pkg.name.clone(),
        artifacts,
        metadata,
    }
}

/// Query of deploymentBase and installedBase.
#[derive(Debug, Deserialize, Default)]
pub struct HistoryQuery {
    #[serde(rename = "actionHistory")]
    action_history: Option<i64>,
}

fn history(state: &AppState, a: &Action, n: Option<i64>) -> Option<ddi::ActionHistory> {
    let n = n.filter(|n| *n != 0)?;
    let mut records = state.store.statuses_for_action(a.id).ok()?;
    records.reverse();
    let take = if n < 0 { records.len() } else { n as usize };
    let messages = records
        .iter()
        .take(take)
        .map(|r| {
            let mut s = format!(
                "{} {}",
                r.execution.as_deref().unwrap_or("-"),
                r.finished.as_deref().unwrap_or("-")
            );
            if let Some(c) = r.message_id {
                s.push_str(&format!(" {c}"));
            }
            if !r.details.is_empty() {
                s.push_str(&format!(": {}", r.details.join("; ")));
            }
            s
        })
        .collect();
    Some(ddi::ActionHistory { status: a.status.history_name().into(), messages })
}

fn device_action(view: &View, d: &Device, action_id: &str) -> Result<Action, ApiError> {
    let id: i64 = action_id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("action id {action_id:?} is not a number")))?;
    match view.actions.get(&id) {
        Some(a) if a.device_id == d.id => Ok(a.clone()),
        // Another device's action is as unknown to this device as a missing one.
        _ => Err(ApiError::not_found(format!(
            "action {id} is not an action of device {}",
            d.controller_id
        ))),
    }
}

fn deployment(
    state: &AppState,
    d: &Device,
    a: &Action,
    q: &HistoryQuery,
) -> Result<ddi::DeploymentBase, ApiError> {
    let now = state.now();
    let (adv, prog, pkg) = {
        let view = state.read();
        let (adv, prog, pkg) = view
            .deployment_of(a)
            .ok_or_else(|| ApiError::internal(format!("action {} has no package", a.id)))?;
        (adv.clone(), prog.clone(), pkg.clone())
    };
    let window = window_open(&adv, now);
    let (download, mut update) = match adv.kind {
        AdvertisementKind::Mandatory => (ddi::Handling::Forced, ddi::Handling::Forced),
        AdvertisementKind::Available => (ddi::Handling::Attempt, ddi::Handling::Attempt),
        AdvertisementKind::DownloadOnly => (ddi::Handling::Forced, ddi::Handling::Skip),
    };
    if window == Some(false) {
        update = ddi::Handling::Skip;
    }
    Ok(ddi::DeploymentBase {
        id: a.id.to_string(),
        deployment: ddi::Deployment {
            download,
            update,
            chunks: vec![chunk(state, d, &adv, &prog, &pkg)],
            maintenance_window: window.map(|open| {
                if open { ddi::WindowState::Available } else { ddi::WindowState::Unavailable }
            }),
        },
        action_history: history(state, a, q.action_history),
    })
}

/// `GET …/deploymentBase/{actionId}`.
pub fn deployment_base(
    state: &AppState,
    d: &Device,
    action_id: &str,
    q: &HistoryQuery,
) -> Result<ddi::DeploymentBase, ApiError> {
    let a = device_action(&state.read(), d, action_id)?;
    let dep = deployment(state, d, &a, q)?;
    if a.status == ActionStatus::Scheduled {
        state.store.mark_retrieved(a.id, state.now()).map_err(ApiError::from)?;
        let mut view = state.write();
        if let Some(v) = view.actions.get_mut(&a.id) {
            if v.status == ActionStatus::Scheduled {
                v.status = ActionStatus::Retrieved;
            }
        }
        log::info!(
            "device {} retrieved action {} ({} {})",
            d.controller_id,
            a.id,
            dep.deployment.chunks[0].name,
            dep.deployment.chunks[0].version
        );
    }
    Ok(dep)
}

/// `GET …/installedBase/{actionId}`.
pub fn installed_base(
    state: &AppState,
    d: &Device,
    action_id: &str,
    q: &HistoryQuery,
) -> Result<ddi::DeploymentBase, ApiError> {
    let a = device_action(&state.read(), d, action_id)?;
    if a.status != ActionStatus::Finished {
        return Err(ApiError::not_found(format!(
            "action {} is {}, not installed",
            a.id,
            a.status.as_str()
        )));
    }
    deployment(state, d, &a, q)
}

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

/// The first `0x????????` in the details: the HRESULT-style code the agent reports.
fn hresult_in(details: &[String]) -> Option<String> {
    details.iter().flat_map(|l| l.split(|c: char| !c.is_ascii_alphanumeric())).find_map(|w| {
        let hex = w.strip_prefix("0x").or_else(|| w.strip_prefix("0X"))?;
        (hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| format!("0x{}", hex.to_ascii_uppercase()))
    })
}

fn record_of(
    d: &Device,
    a: Option<&Action>,
    source: &str,
    fb: &ActionFeedback,
    now: i64,
) -> StatusRecord {
    StatusRecord {
        id: 0,
        device_id: d.id,
        action_id: a.map(|a| a.id),
        received: now,
        source: source.into(),
        execution: Some(fb.status.execution.as_str().into()),
        finished: Some(
            match fb.status.result.finished {
                Finished::Success => "success",
                Finished::Failure => "failure",
                Finished::None => "none",
            }
            .into(),
        ),
        message_id: fb.status.code,
        hresult: hresult_in(&fb.status.details),
        component: None,
        details: fb.status.details.clone(),
    }
}

/// How deployment feedback moves an action.
pub fn next_status(current: ActionStatus, fb: &ddi::Status) -> Result<ActionStatus, crate::Error> {
    if current.is_closed() {
        return Err(crate::Error::Gone(format!(
            "the action is already {}; no more feedback is taken",
            current.as_str()
        )));
    }
    Ok(match (fb.execution, fb.result.finished) {
        (Execution::Closed, Finished::Failure) => ActionStatus::Error,
        (Execution::Closed, _) => ActionStatus::Finished,
        (Execution::Canceled, _) => ActionStatus::Canceled,
        // A cancellation stays pending until the device answers it.
        (_, _) if current == ActionStatus::Canceling => ActionStatus::Canceling,
        _ => ActionStatus::Running,
    })
}

/// How cancel feedback moves an action.
pub fn next_cancel_status(
    current: ActionStatus,
    fb: &ddi::Status,
) -> Result<ActionStatus, crate::Error> {
    if current.is_closed() {
        return Err(crate::Error::Gone(format!("the action is already {}", current.as_str())));
    }
    if current != ActionStatus::Canceling {
        return Err(crate::Error::Conflict(format!(
            "the action is {}, not being canceled",
            current.as_str()
        )));
    }
    Ok(match (fb.execution, fb.result.finished) {
        (Execution::Canceled, _) | (Execution::Closed, Finished::Success | Finished::None) => {
            ActionStatus::Canceled
        }
        // The device will not stop: the action goes on.
        (Execution::Rejected, _) | (Execution::Closed, Finished::Failure) => ActionStatus::Running,
        _ => ActionStatus::Canceling,
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
    let rec = record_of(
        d,
        Some(&a),
        if cancel { "cancel-feedback" } else { "feedback" },
        &fb,
        state.now(),
    );
    let status = fb.status.clone();
    let _serial = state.feedback_lock.lock().unwrap_or_else(|p| p.into_inner());
    let updated = state
        .store
        .apply_feedback(a.id, &rec, &|cur| {
            if cancel { next_cancel_status(cur, &status) } else { next_status(cur, &status) }
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

/// `GET …/cancelAction/{actionId}`.
pub fn cancel_action(
    state: &AppState,
    d: &Device,
    action_id: &str,
) -> Result<ddi::Cancel, ApiError> {
    let a = device_action(&state.read(), d, action_id)?;
    if a.status != ActionStatus::Canceling {
        return Err(ApiError::not_found(format!(
            "action {} is {}, not being canceled",
            a.id,
            a.status.as_str()
        )));
    }
    Ok(ddi::Cancel {
        id: a.id.to_string(),
        cancel_action: ddi::CancelActionToStop { stop_id: a.id.to_string() },
    })
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
            execution: m.execution.clone(),
            finished: None,
            message_id: i32::try_from(m.message_id).ok(),
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

/// Whether the device has an action for the package (it may download its artifacts).
fn assigned(view: &View, d: &Device, package_id: i64) -> bool {
    view.actions_of(d.id).any(|a| view.deployment_of(a).is_some_and(|(_, _, p)| p.id == package_id))
}

fn artifact_of(
    state: &AppState,
    d: &Device,
    module: &str,
    filename: &str,
) -> Result<(Package, ArtifactRecord, bool), ApiError> {
    let id: i64 = module.parse().map_err(|_| {
        ApiError::bad_request(format!("software module id {module:?} is not a number"))
    })?;
    let view = state.read();
    let pkg = view.packages.get(&id).filter(|_| assigned(&view, d, id)).ok_or_else(|| {
        ApiError::not_found(format!(
            "software module {id} is not assigned to device {}",
            d.controller_id
        ))
    })?;
    if let Some(a) = pkg.artifacts.iter().find(|a| a.filename == filename) {
        return Ok((pkg.clone(), a.clone(), false));
    }
    if let Some(base) = filename.strip_suffix(".MD5SUM") {
        if let Some(a) = pkg.artifacts.iter().find(|a| a.filename == base) {
            return Ok((pkg.clone(), a.clone(), true));
        }
    }
    Err(ApiError::not_found(format!(
        "software module {id} has no artifact {:?}",
        filename.chars().take(200).collect::<String>()
    )))
}

/// `GET …/softwaremodules/{id}/artifacts`.
pub fn list_artifacts(
    state: &AppState,
    d: &Device,
    module: &str,
) -> Result<Vec<ddi::Artifact>, ApiError> {
    let id: i64 =
        module.parse().map_err(|_| ApiError::bad_request("software module id is not a number"))?;
    let view = state.read();
    let a = view
        .actions_of(d.id)
        .find(|a| view.deployment_of(a).is_some_and(|(_, _, p)| p.id == id))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "software module {id} is not assigned to device {}",
                d.controller_id
            ))
        })?;
    let (adv, prog, pkg) =
        view.deployment_of(a).ok_or_else(|| ApiError::internal("missing package"))?;
    Ok(chunk(state, d, adv, prog, pkg).artifacts)
}

/// `GET …/softwaremodules/{id}/artifacts/{fileName}` (and `{fileName}.MD5SUM`).
pub async fn download(
    state: Arc<AppState>,
    d: Device,
    module: String,
    filename: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (pkg, art, md5sum) = artifact_of(&state, &d, &module, &filename)?;
    if md5sum {
        let body = format!("{}  {}\n", art.md5, art.filename);
        return Ok(([(header::CONTENT_TYPE, "text/plain")], body).into_response());
    }
    let Some(path) = art.path.clone() else {
        return Err(ApiError::not_found(format!(
            "{} is served by {}",
            art.filename,
            pkg.distribution_point.unwrap_or_default()
        )));
    };
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = match parse_range(range_header, art.size) {
        Ok(r) => r,
        Err(()) => {
            let mut r = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "dm.request.range",
                format!(
                    "range {range_header:?} is outside the {} bytes of {}",
                    art.size, art.filename
                ),
            )
            .into_response();
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                format!("bytes */{}", art.size)
                    .parse()
                    .map_err(|_| ApiError::internal("header"))?,
            );
            return Ok(r);
        }
    };
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    let (status, start, len) = match range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.start, r.end - r.start + 1),
        None => (StatusCode::OK, 0, art.size),
    };
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 * 1024);
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{}\"", art.sha256));
    if let Some(r) = range {
        resp =
            resp.header(header::CONTENT_RANGE, format!("bytes {}-{}/{}", r.start, r.end, art.size));
    }
    if start > 0 {
        log::info!(
            "device {} resumes {} from byte {start} ({len} bytes left)",
            d.controller_id,
            art.filename
        );
    } else {
        log::debug!("device {} downloads {} ({len} bytes)", d.controller_id, art.filename);
    }
    resp.body(Body::from_stream(stream)).map_err(|e| ApiError::internal(e.to_string()))
}

/// Path parameters.
#[derive(Debug, Deserialize)]
pub struct DevicePath {
    tenant: String,
    cid: String,
}

/// Path parameters with an action or module id.
#[derive(Debug, Deserialize)]
pub struct DeviceItemPath {
    tenant: String,
    cid: String,
    id: String,
}

/// Path parameters of an artifact.
#[derive(Debug, Deserialize)]
pub struct ArtifactPath {
    tenant: String,
    cid: String,
    id: String,
    file: String,
}

/// Runs a handler's blocking work (storage) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("handler failed: {e}"))))
}

fn json_ok<T: serde::Serialize>(v: T) -> Response {
    axum::Json(v).into_response()
}

/// What every device request carries: the server state, what the TLS layer learned about the
/// connection, the headers (credentials), and the method and path for log lines.
pub struct Req {
    st: Arc<AppState>,
    conn: ConnInfo,
    headers: HeaderMap,
    info: ReqInfo,
}

impl axum::extract::FromRequestParts<Arc<AppState>> for Req {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        // The accept loop inserts it into every request; an unknown peer only shows in logs.
        let conn = parts
            .extensions
            .get::<ConnInfo>()
            .cloned()
            .unwrap_or(ConnInfo { peer: SocketAddr::from(([0, 0, 0, 0], 0)), client_chain: None });
        let info = ReqInfo::new(&parts.method, &parts.uri, &conn);
        Ok(Req { st: state.clone(), conn, headers: parts.headers.clone(), info })
    }
}

/// Router handlers, each authenticating then calling the logic above.
pub mod routes {
    use super::*;

    /// Authenticates, runs `f` off the async threads, and answers: its value as JSON (an
    /// empty 200 for `()`), or the refusal, logged.
    async fn run<T: Reply + Send + 'static>(
        r: Req,
        tenant: String,
        cid: String,
        f: impl FnOnce(&AppState, &Device) -> Result<T, ApiError> + Send + 'static,
    ) -> Response {
        let Req { st, conn, headers, info } = r;
        let result = blocking(move || {
            let d = authenticate(&st, &headers, &conn, &tenant, &cid)?;
            f(&st, &d)
        })
        .await;
        match result {
            Ok(v) => v.reply(),
            Err(e) => info.refuse(e).into_response(),
        }
    }

    /// What a successful handler returns.
    trait Reply {
        fn reply(self) -> Response;
    }

    impl Reply for () {
        fn reply(self) -> Response {
            StatusCode::OK.into_response()
        }
    }

    macro_rules! json_reply {
        ($($t:ty),*) => {$(impl Reply for $t { fn reply(self) -> Response { json_ok(self) } })*};
    }
    json_reply!(
        ddi::ControllerBase,
        ddi::DeploymentBase,
        ddi::Cancel,
        serde_json::Value,
        Vec<ddi::Artifact>
    );

    type Body = Result<Bytes, BytesRejection>;

    /// `GET /{tenant}/controller/v1/{cid}`.
    pub async fn poll(r: Req, Path(p): Path<DevicePath>) -> Response {
        run(r, p.tenant, p.cid, super::poll).await
    }

    /// `GET …/deploymentBase/{id}`.
    pub async fn deployment_base(
        r: Req,
        Path(p): Path<DeviceItemPath>,
        Query(q): Query<HistoryQuery>,
    ) -> Response {
        run(r, p.tenant, p.cid, move |st, d| super::deployment_base(st, d, &p.id, &q)).await
    }

    /// `GET …/installedBase/{id}`.
    pub async fn installed_base(
        r: Req,
        Path(p): Path<DeviceItemPath>,
        Query(q): Query<HistoryQuery>,
    ) -> Response {
        run(r, p.tenant, p.cid, move |st, d| super::installed_base(st, d, &p.id, &q)).await
    }

    /// `POST …/deploymentBase/{id}/feedback`.
    pub async fn feedback(r: Req, Path(p): Path<DeviceItemPath>, body: Body) -> Response {
        run(r, p.tenant, p.cid, move |st, d| super::feedback(st, d, &p.id, body, false)).await
    }

    /// `GET …/cancelAction/{id}`.
    pub async fn cancel_action(r: Req, Path(p): Path<DeviceItemPath>) -> Response {
        run(r, p.tenant, p.cid, move |st, d| super::cancel_action(st, d, &p.id)).await
    }

    /// `POST …/cancelAction/{id}/feedback`.
    pub async fn cancel_feedback(r: Req, Path(p): Path<DeviceItemPath>, body: Body) -> Response {
        run(r, p.tenant, p.cid, move |st, d| super::feedback(st, d, &p.id, body, true)).await
    }

    /// `PUT …/configData`.
    pub async fn config_data(r: Req, Path(p): Path<DevicePath>, body: Body) -> Response {
        run(r, p.tenant, p.cid, move |st, d| super::config_data(st, d, body)).await
    }

    /// `PUT …/installedBase`.
    pub async fn set_installed(r: Req, Path(p): Path<DevicePath>, body: Body) -> Response {
        run(r, p.tenant, p.cid, move |st, d| super::set_installed(st, d, body)).await
    }

    /// `POST …/dm/statusMessages`.
    pub async fn status_messages(r: Req, Path(p): Path<DevicePath>, body: Body) -> Response {
        run(r, p.tenant, p.cid, move |st, d| super::status_messages(st, d, body)).await
    }

    /// `GET …/softwaremodules/{id}/artifacts`.
    pub async fn list_artifacts(r: Req, Path(p): Path<DeviceItemPath>) -> Response {
        run(r, p.tenant, p.cid, move |st, d| super::list_artifacts(st, d, &p.id)).await
    }

    /// `GET …/softwaremodules/{id}/artifacts/{file}`: streamed, so only the authentication
    /// runs off the async threads.
    pub async fn download(r: Req, Path(p): Path<ArtifactPath>) -> Response {
        let Req { st, conn, headers, info } = r;
        let (st2, h2, tenant, cid) = (st.clone(), headers.clone(), p.tenant, p.cid);
        let device = blocking(move || authenticate(&st2, &h2, &conn, &tenant, &cid)).await;
        let result = match device {
            Ok(d) => super::download(st, d, p.id, p.file, headers).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(r) => r,
            Err(e) => info.refuse(e).into_response(),
        }
    }
}
