//! hawkBit's confirmation flow: an action of an available advertisement waits for the device's
//! user to consent. The poll offers it as `confirmationBase`; the device answers `confirmed`
//! (it then becomes a deployment the device runs) or `denied` (it keeps waiting). A device
//! may turn auto-confirmation on: then its waiting actions, and those to come, need no answer.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use dm_shared::ddi::{self, Confirmation, ConfirmationFeedback, Tags};

use super::feedback::{check_details, parse_json};
use super::http::ApiError;
use super::poll::{HistoryQuery, deployment, device_action};
use super::state::AppState;
use crate::model::*;

/// The device's current record (the view's, which knows its auto-confirmation).
fn current(state: &AppState, d: &Device) -> Device {
    state.read().devices.get(&(d.tenant.clone(), d.controller_id.clone())).unwrap_or(d).clone()
}

/// `GET …/confirmationBase`.
pub fn confirmation_base(
    state: &AppState,
    d: &Device,
    base: &str,
) -> Result<ddi::ConfirmationBase, ApiError> {
    let d = current(state, d);
    let mut links = ddi::Links::new();
    let link = |href: String| ddi::Link { href };
    let waiting =
        state.read().actions_of(d.id).find(|a| a.status == ActionStatus::Waiting).map(|a| a.id);
    if let Some(id) = waiting {
        links.insert("confirmationBase".into(), link(format!("{base}/confirmationBase/{id}")));
    }
    let auto = match &d.auto_confirm {
        Some(a) => {
            links.insert(
                "deactivateAutoConfirm".into(),
                link(format!("{base}/confirmationBase/deactivateAutoConfirm")),
            );
            ddi::AutoConfirmState {
                active: true,
                initiator: a.initiator.clone(),
                remark: a.remark.clone(),
                activated_at: Some(a.activated_at.saturating_mul(1000)),
            }
        }
        None => {
            links.insert(
                "activateAutoConfirm".into(),
                link(format!("{base}/confirmationBase/activateAutoConfirm")),
            );
            ddi::AutoConfirmState {
                active: false,
                initiator: None,
                remark: None,
                activated_at: None,
            }
        }
    };
    Ok(ddi::ConfirmationBase { auto_confirm: auto, links })
}

/// `GET …/confirmationBase/{actionId}`: the action while it waits.
pub fn confirmation_action(
    state: &AppState,
    d: &Device,
    action_id: &str,
    q: &HistoryQuery,
) -> Result<ddi::ConfirmationBaseAction, ApiError> {
    let a = device_action(state, d, action_id)?;
    if a.status != ActionStatus::Waiting {
        return Err(ApiError::not_found(format!(
            "action {} is {}, not waiting for confirmation",
            a.id,
            a.status.as_str()
        )));
    }
    let dep = deployment(state, d, &a, q)?;
    Ok(ddi::ConfirmationBaseAction {
        id: dep.id,
        confirmation: dep.deployment,
        action_history: dep.action_history,
    })
}

/// A status record of the device's answer about action `a`.
fn record(
    state: &AppState,
    d: &Device,
    a: &Action,
    source: &str,
    details: Vec<String>,
) -> StatusRecord {
    StatusRecord {
        id: 0,
        device_id: d.id,
        action_id: Some(a.id),
        received: state.now(),
        source: source.into(),
        execution: None,
        finished: None,
        message_id: None,
        hresult: None,
        component: None,
        details,
        report_id: None,
    }
}

/// Moves a waiting action by the device's answer, storing `rec` with it.
fn answer(
    state: &AppState,
    d: &Device,
    a: &Action,
    confirmed: bool,
    rec: &StatusRecord,
) -> Result<(), ApiError> {
    let _serial = state.feedback_lock(a.id);
    let updated = state
        .store
        .apply_feedback(a.id, rec, &|cur| cur.on_confirmation(confirmed))
        .map_err(ApiError::from)?;
    if let Some(updated) = updated {
        log::info!(
            "device {} {} action {} -> {}",
            d.controller_id,
            if confirmed { "confirmed" } else { "denied" },
            a.id,
            updated.status.as_str()
        );
        state.write().put_action(updated);
    }
    Ok(())
}

/// `POST …/confirmationBase/{actionId}/feedback`.
pub fn confirmation_feedback(
    state: &AppState,
    d: &Device,
    action_id: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<(), ApiError> {
    let a = device_action(state, d, action_id)?;
    let fb: ConfirmationFeedback = parse_json(body, "the confirmation")?;
    check_details(&fb.details)?;
    let (tags, mut details) = Tags::split(&fb.details).map_err(ApiError::bad_request)?;
    let confirmed = fb.confirmation == Confirmation::Confirmed;
    details.insert(0, if confirmed { "confirmed" } else { "denied" }.into());
    let mut rec = record(state, d, &a, "confirmation", details);
    rec.message_id = fb.code;
    rec.report_id = tags.report;
    answer(state, d, &a, confirmed, &rec)
}

/// `POST …/confirmationBase/activateAutoConfirm`: confirms what waits, and what comes.
pub fn activate(
    state: &AppState,
    d: &Device,
    body: Result<Bytes, BytesRejection>,
) -> Result<(), ApiError> {
    let req: ddi::ActivateAutoConfirm = parse_json(body, "the auto-confirmation")?;
    let clip = |s: Option<String>| s.map(|s| s.chars().take(256).collect::<String>());
    let auto = AutoConfirm {
        initiator: clip(req.initiator),
        remark: clip(req.remark),
        activated_at: state.now(),
    };
    set_auto(state, d, Some(auto.clone()))?;
    let waiting: Vec<Action> = state
        .read()
        .actions_of(d.id)
        .filter(|a| a.status == ActionStatus::Waiting)
        .cloned()
        .collect();
    for a in waiting {
        let who = auto.initiator.as_deref().unwrap_or("the device");
        let details = vec![format!("confirmed automatically (auto-confirmation by {who})")];
        answer(state, d, &a, true, &record(state, d, &a, "auto-confirmation", details))?;
    }
    Ok(())
}

/// `POST …/confirmationBase/deactivateAutoConfirm`.
pub fn deactivate(state: &AppState, d: &Device) -> Result<(), ApiError> {
    set_auto(state, d, None)
}

fn set_auto(state: &AppState, d: &Device, auto: Option<AutoConfirm>) -> Result<(), ApiError> {
    state.store.set_auto_confirm(d.id, auto.as_ref()).map_err(ApiError::from)?;
    log::info!(
        "device {} turned auto-confirmation {}",
        d.controller_id,
        if auto.is_some() { "on" } else { "off" }
    );
    let key = (d.tenant.clone(), d.controller_id.clone());
    if let Some(dev) = state.write().devices.get_mut(&key) {
        dev.auto_confirm = auto;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::super::fixture::Fixture;
    use super::super::poll::{deployment_base, poll};
    use super::*;

    fn link(f: &Fixture, d: &Device, name: &str) -> Option<String> {
        poll(&f.state, d).unwrap().links.get(name).map(|l| l.href.clone())
    }

    fn id_of(href: &str) -> String {
        href.rsplit('/').next().unwrap().split('?').next().unwrap().to_string()
    }

    fn answer_with(f: &Fixture, d: &Device, id: &str, body: &str) -> Result<(), ApiError> {
        confirmation_feedback(&f.state, d, id, Ok(Bytes::from(body.to_string())))
    }

    #[test]
    fn an_available_program_waits_for_consent_then_runs() {
        let f = Fixture::new(|_| {});
        f.advertise("tools", AdvertisementKind::Available);
        let d = f.device("dev-1", "tok");
        assert!(link(&f, &d, "deploymentBase").is_none(), "not before consent");
        let href = link(&f, &d, "confirmationBase").expect("offered for consent");
        let id = id_of(&href);
        let waiting = confirmation_action(&f.state, &d, &id, &HistoryQuery::default()).unwrap();
        assert_eq!(waiting.confirmation.chunks[0].name, "tools");
        let base = confirmation_base(&f.state, &d, "B").unwrap();
        assert!(!base.auto_confirm.active);
        assert!(base.links.contains_key("activateAutoConfirm"));
        // Denied: it keeps waiting.
        answer_with(&f, &d, &id, r#"{"confirmation": "denied", "details": ["not now"]}"#).unwrap();
        assert!(link(&f, &d, "confirmationBase").is_some());
        // Confirmed: a deployment the device runs at once.
        answer_with(&f, &d, &id, r#"{"confirmation": "confirmed", "code": 200}"#).unwrap();
        assert!(link(&f, &d, "confirmationBase").is_none());
        assert_eq!(id_of(&link(&f, &d, "deploymentBase").unwrap()), id);
        let dep = deployment_base(&f.state, &d, &id, &HistoryQuery::default()).unwrap();
        assert_eq!(dep.deployment.update, ddi::Handling::Forced);
        // A confirmation resent (lost acknowledgement) changes nothing; a denial now is late.
        answer_with(&f, &d, &id, r#"{"confirmation": "confirmed"}"#).unwrap();
        let late = answer_with(&f, &d, &id, r#"{"confirmation": "denied"}"#).unwrap_err();
        assert_eq!(late.status, StatusCode::CONFLICT);
        let gone = confirmation_action(&f.state, &d, &id, &HistoryQuery::default()).unwrap_err();
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
        let history = f.state.store.statuses_for_action(id.parse().unwrap()).unwrap();
        assert_eq!(history[0].details, ["denied", "not now"]);
        assert_eq!(history[1].source, "confirmation");
    }

    #[test]
    fn auto_confirmation_confirms_what_waits_and_what_comes() {
        let f = Fixture::new(|_| {});
        f.advertise("first", AdvertisementKind::Available);
        let d = f.device("dev-1", "tok");
        assert!(link(&f, &d, "confirmationBase").is_some());
        let on = r#"{"initiator": "field engineer", "remark": "unattended site"}"#;
        activate(&f.state, &d, Ok(Bytes::from(on))).unwrap();
        assert!(link(&f, &d, "deploymentBase").is_some(), "the waiting one is confirmed");
        let base = confirmation_base(&f.state, &d, "B").unwrap();
        assert!(base.auto_confirm.active);
        assert_eq!(base.auto_confirm.initiator.as_deref(), Some("field engineer"));
        assert!(base.links.contains_key("deactivateAutoConfirm"));
        // One to come needs no consent; after deactivating, the next one does again.
        f.advertise("second", AdvertisementKind::Available);
        let _ = link(&f, &d, "deploymentBase");
        let second = f.state.read().actions_of(d.id).last().unwrap().clone();
        assert_eq!(second.status, ActionStatus::Scheduled);
        deactivate(&f.state, &d).unwrap();
        f.advertise("third", AdvertisementKind::Available);
        let _ = poll(&f.state, &d).unwrap();
        let third = f.state.read().actions_of(d.id).last().unwrap().clone();
        assert_eq!(third.status, ActionStatus::Waiting);
    }
}
