//! What a device reads: the poll (its next action as a link), the deployment of an action
//! as a DDI chunk, the installed base, and a pending cancellation.

use dm_shared::ddi;
use serde::Deserialize;

use super::http::{ApiError, encode_segment, push_segment};
use super::state::{AppState, View};
use crate::model::*;

/// `{public URL}/{tenant}/controller/v1/{cid}`, the segments percent-encoded.
pub(super) fn base_url(state: &AppState, tenant: &str, cid: &str) -> String {
    let mut url = state.public_url();
    url.reserve(tenant.len() + cid.len() + 16);
    url.push('/');
    push_segment(&mut url, tenant);
    url.push_str("/controller/v1/");
    push_segment(&mut url, cid);
    url
}

/// `base` followed by `parts`.
fn joined(base: &str, parts: &[&str]) -> String {
    let mut s = String::with_capacity(base.len() + parts.iter().map(|p| p.len()).sum::<usize>());
    s.push_str(base);
    parts.iter().for_each(|p| s.push_str(p));
    s
}

/// Whether the advertisement's window (its own, else its collection's) is open for device
/// `device_id` at `now`, each device at its own offset into it; none without a window.
fn window_open(view: &View, adv: &Advertisement, device_id: i64, now: i64) -> Option<bool> {
    let window = adv.window.or_else(|| view.collections.get(&adv.collection_id)?.window)?;
    let spread = MaintenanceWindow::spread(device_id, &format!("advertisement {}", adv.id));
    Some(window.is_open_for(now, spread))
}

/// The action the device should work on next: the oldest open one whose advertisement is
/// active, or that it already started.
fn next_action(view: &View, device_id: i64, now: i64) -> Option<&Action> {
    view.actions_of(device_id).find(|a| {
        a.status.is_open()
            && (!matches!(a.status, ActionStatus::Scheduled | ActionStatus::Waiting)
                || view
                    .advertisements
                    .get(&a.advertisement_id)
                    .is_some_and(|adv| adv.is_active(now)))
    })
}

fn change_marker(a: &Action, window: Option<bool>) -> u64 {
    // What, when it changes, should make a device fetch the deployment again.
    fnv1a(format!("{}:{}:{:?}", a.id, a.status.as_str(), window).bytes())
}

/// `GET /{tenant}/controller/v1/{controllerId}`.
pub fn poll(state: &AppState, d: &Device) -> Result<ddi::ControllerBase, ApiError> {
    let now = state.now();
    state.seen(d.id, now);
    state.ensure_actions(d).map_err(ApiError::from)?;
    let view = state.read();
    let current = view.devices.get(&(d.tenant.clone(), d.controller_id.clone())).unwrap_or(d);
    Ok(controller_base(state, &view, d, current, now))
}

/// What a poll of device `d` answers once its actions are made, from the view; `current` is
/// its registration as the view holds it (its inventory may be newer than `d`'s).
pub(super) fn controller_base(
    state: &AppState,
    view: &View,
    d: &Device,
    current: &Device,
    now: i64,
) -> ddi::ControllerBase {
    let base = base_url(state, &d.tenant, &d.controller_id);
    let mut links = ddi::Links::new();
    let link = |href: String| ddi::Link { href };
    if let Some(a) = view.actions_of(d.id).find(|a| a.status == ActionStatus::Canceling) {
        links.insert("cancelAction".into(), link(format!("{base}/cancelAction/{}", a.id)));
    } else if let Some(a) = next_action(view, d.id, now) {
        let window = view
            .advertisements
            .get(&a.advertisement_id)
            .and_then(|adv| window_open(view, adv, d.id, now));
        let (name, path) = if a.status == ActionStatus::Waiting {
            ("confirmationBase", "confirmationBase")
        } else {
            ("deploymentBase", "deploymentBase")
        };
        links.insert(
            name.into(),
            link(format!("{base}/{path}/{}?c={}", a.id, change_marker(a, window))),
        );
    }
    if current.attributes.is_empty() {
        links.insert("configData".into(), link(joined(&base, &["/configData"])));
    }
    if let Some(marker) = &view.crl_marker {
        let href = joined(&base, &["/", ddi::CRLS_PATH, "?v=", marker]);
        links.insert("dmCrls".into(), link(href));
    }
    if let Some(href) = super::update_link::link(view, &base, current, now) {
        links.insert("dmUpdates".into(), link(href));
    }
    if let Some(a) = view
        .actions_of(d.id)
        .filter(|a| a.status == ActionStatus::Finished)
        .max_by_key(|a| a.updated)
    {
        links.insert("installedBase".into(), link(format!("{base}/installedBase/{}", a.id)));
    }
    ddi::ControllerBase {
        config: ddi::Config { polling: ddi::Polling { sleep: state.poll_sleep.clone() } },
        links,
    }
}

fn rfc3339(t: i64) -> String {
    dm_shared::clock::rfc3339(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64),
    )
}

pub(super) fn chunk(
    state: &AppState,
    d: &Device,
    adv: &Advertisement,
    prog: &Program,
    pkg: &Package,
) -> ddi::Chunk {
    let base = base_url(state, &d.tenant, &d.controller_id);
    let nearest = super::dps::Nearest::of(state, d, pkg);
    let artifacts = pkg
        .artifacts
        .iter()
        .map(|a| {
            let mut links = ddi::Links::new();
            let urls = match &pkg.distribution_point {
                Some(dp) => vec![format!(
                    "{}/{}",
                    dp.trim_end_matches('/'),
                    a.filename.split('/').map(encode_segment).collect::<Vec<_>>().join("/")
                )],
                None => {
                    let own = format!(
                        "{base}/softwaremodules/{}/artifacts/{}",
                        pkg.id,
                        encode_segment(&a.filename)
                    );
                    links.insert("md5sum".into(), ddi::Link { href: format!("{own}.MD5SUM") });
                    nearest.urls(&a.filename, own)
                }
            };
            // The nearest source is hawkBit's `download`; the next ones, in order, are
            // `dm-next-1`, … (the management point last).
            for (i, href) in urls.into_iter().enumerate() {
                let key = if i == 0 {
                    "download".to_string()
                } else {
                    format!("{}{i}", ddi::NEXT_SOURCE)
                };
                links.insert(key, ddi::Link { href });
            }
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
    let program = prog.signed_program.clone().unwrap_or_else(|| prog.name.clone());
    let mut metadata = vec![
        m(ddi::meta::PROGRAM, program),
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
    metadata.push(m(ddi::meta::RERUN, adv.rerun.as_str().into()));
    if adv.allow_downgrade {
        metadata.push(m(ddi::meta::ALLOW_DOWNGRADE, "true".into()));
    }
    ddi::Chunk {
        part: pkg.kind.part().into(),
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
                r.execution.map_or("-", |e| e.as_str()),
                r.finished.map_or("-", |f| f.as_str())
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

/// The device's action `action_id`: from the view, or from the database when another instance
/// made it a moment ago ([`AppState::catch_up`]).
pub(super) fn device_action(
    state: &AppState,
    d: &Device,
    action_id: &str,
) -> Result<Action, ApiError> {
    let id: i64 = action_id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("action id {action_id:?} is not a number")))?;
    let mine = |view: &View| view.actions.get(&id).filter(|a| a.device_id == d.id).cloned();
    // The view's read guard ends with this statement: `catch_up` below writes to the view.
    let known = mine(&state.read());
    let found = known.or_else(|| {
        state.catch_up(d.id);
        mine(&state.read())
    });
    match found {
        Some(a) => Ok(a),
        // Another device's action is as unknown to this device as a missing one.
        _ => Err(ApiError::not_found(format!(
            "action {id} is not an action of device {}",
            d.controller_id
        ))),
    }
}

pub(super) fn deployment(
    state: &AppState,
    d: &Device,
    a: &Action,
    q: &HistoryQuery,
) -> Result<ddi::DeploymentBase, ApiError> {
    let now = state.now();
    let (adv, prog, pkg, window, soak) = {
        let view = state.read();
        let (adv, prog, pkg) = view
            .deployment_of(a)
            .ok_or_else(|| ApiError::internal(format!("action {} has no package", a.id)))?;
        let window = window_open(&view, adv, d.id, now);
        let gate = view.rollouts.get(&crate::rollout::Target::Advertisement(adv.id));
        let soak = gate.map_or(0, |g| g.rollout.spec.soak);
        (adv.clone(), prog.clone(), pkg.clone(), window, soak)
    };
    let (download, mut update) = match adv.kind {
        AdvertisementKind::Mandatory => (ddi::Handling::Forced, ddi::Handling::Forced),
        // Offered for consent; once the device's user consented, it runs.
        AdvertisementKind::Available if a.status == ActionStatus::Waiting => {
            (ddi::Handling::Attempt, ddi::Handling::Attempt)
        }
        AdvertisementKind::Available => (ddi::Handling::Forced, ddi::Handling::Forced),
        AdvertisementKind::DownloadOnly => (ddi::Handling::Forced, ddi::Handling::Skip),
    };
    if window == Some(false) {
        update = ddi::Handling::Skip;
    }
    let mut chunk = chunk(state, d, &adv, &prog, &pkg);
    if soak > 0 {
        // A rollout's: a package that signs a health check runs it again at the soak's end.
        let soak = soak.to_string();
        chunk.metadata.push(ddi::Metadata { key: ddi::meta::SOAK.into(), value: soak });
    }
    Ok(ddi::DeploymentBase {
        id: a.id.to_string(),
        deployment: ddi::Deployment {
            download,
            update,
            chunks: vec![chunk],
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
    let a = device_action(state, d, action_id)?;
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
    let a = device_action(state, d, action_id)?;
    if a.status != ActionStatus::Finished {
        return Err(ApiError::not_found(format!(
            "action {} is {}, not installed",
            a.id,
            a.status.as_str()
        )));
    }
    deployment(state, d, &a, q)
}

/// `GET …/cancelAction/{actionId}`.
pub fn cancel_action(
    state: &AppState,
    d: &Device,
    action_id: &str,
) -> Result<ddi::Cancel, ApiError> {
    let a = device_action(state, d, action_id)?;
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

/// `GET …/dm/crls`: the revocation lists the administrators gave this server. Each is signed
/// by its CA, so a device checks them itself; the server is only the courier.
pub fn crls(state: &AppState, _d: &Device) -> Result<ddi::CrlList, ApiError> {
    let crls = state.store.crls().map_err(ApiError::from)?;
    Ok(ddi::CrlList { crls: crls.into_iter().map(|(_, pem)| pem).collect() })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fixture::Fixture;
    use super::*;

    /// Another instance made the action a moment ago: the request reads it from the database,
    /// and does not wait forever on the view (a read guard held across `catch_up` did).
    #[test]
    fn an_action_another_instance_made_is_read_from_the_database() {
        let f = Fixture::new(|_| {});
        let d = f.device("dev-1", "tok-1");
        let adv = f.advertise("pkg", AdvertisementKind::Mandatory);
        let made = f.state.store.ensure_action(adv.id, d.id, ActionStatus::Scheduled, 1).unwrap();
        assert!(!f.state.read().actions.contains_key(&made.id), "not in the view yet");
        let (tx, rx) = std::sync::mpsc::channel();
        let state = f.state.clone();
        std::thread::spawn(move || {
            let _ = tx.send(device_action(&state, &d, &made.id.to_string()).ok().map(|a| a.id));
        });
        let got = rx.recv_timeout(Duration::from_secs(10)).expect("the request never returned");
        assert_eq!(got, Some(made.id));
    }
}
