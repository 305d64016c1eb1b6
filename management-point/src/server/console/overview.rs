//! The console's overview (`GET /console/`): the fleet at a glance, each a chart drawn on the
//! server that leads to the devices behind it: devices by health and by client version,
//! software update compliance, configuration baselines, and the rollouts that run.

use std::collections::BTreeMap;

use super::charts::bars;
use super::{esc, url};
use crate::error::Result;
use crate::reports::{self, Options, REPORTS};
use crate::rollout::RolloutState;
use crate::server::state::AppState;
use dm_shared::vocab::inventory as key;

/// A chart's items: label, count and where its devices are.
type Items = Vec<(String, u64, Option<String>)>;

/// The overview's HTML; with `csrf` (an operator's form field), the forms that deploy.
pub fn build(st: &AppState, csrf: Option<&str>) -> Result<String> {
    let store = st.store.as_ref();
    let now = st.now();
    let summary = |name: &str| -> Result<Vec<(String, u64)>> {
        let r = reports::build(store, &st.config, name, now, &Options::default())?;
        Ok(r.rows
            .iter()
            .filter_map(|row| Some((row.first()?.clone(), row.get(1)?.parse().ok()?)))
            .collect())
    };
    let report_exists = |name: &str| REPORTS.iter().any(|(n, _)| *n == name);
    // The summary's rows are its states (`unhealthy: local`) under a total (`devices`); each
    // state's devices are the report of that name (`unhealthy-local`).
    let health: Items = summary("health-summary")?
        .into_iter()
        .filter(|(state, _)| state != "devices")
        .map(|(state, n)| {
            let report = state.replace(": ", "-");
            let href = report_exists(&report).then(|| format!("/console/reports/{}", url(&report)));
            (state, n, href)
        })
        .collect();
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    for d in st.read().devices.values() {
        let v = d.attributes.get(key::CLIENT_VERSION).cloned().unwrap_or_else(|| "?".into());
        *versions.entry(v).or_default() += 1;
    }
    let versions: Items = versions
        .into_iter()
        .rev()
        .map(|(v, n)| {
            let href = (v != "?").then(|| format!("/console/search?q={}", url(&v)));
            let label = if v == "?" { "client not reported".into() } else { format!("client {v}") };
            (label, n, href)
        })
        .collect();
    let updates: Items = summary("update-summary")?
        .into_iter()
        .filter(|(state, _)| !state.starts_with("share"))
        .map(|(state, n)| (state, n, Some("/console/reports/update-compliance".to_string())))
        .collect();
    let baselines: Items = crate::admin::config::compliance(store, None, None)?.json["counts"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(state, n)| (format!("items {state}"), n.as_u64().unwrap_or(0), None))
        .collect();
    let mut html = String::from("<div class=\"tiles\">");
    for (title, items) in [
        ("Devices by health", &health),
        ("Devices by client version", &versions),
        ("Software updates", &updates),
        ("Configuration baselines", &baselines),
    ] {
        html.push_str(&format!(
            "<section class=\"tile\"><h2>{}</h2>{}</section>",
            esc(title),
            bars(items)
        ));
    }
    html.push_str(&rollouts(st)?);
    if let Some(csrf) = csrf {
        html.push_str(&deploy_forms(st, csrf));
    }
    html.push_str("</div>");
    Ok(html)
}

/// The operator's daily forms: advertise a program to a collection, approve an update.
fn deploy_forms(st: &AppState, csrf: &str) -> String {
    let v = st.read();
    let options = |names: Vec<&String>| -> String {
        names.iter().map(|n| format!("<option>{}</option>", esc(n))).collect()
    };
    let mut programs: Vec<&String> = v.programs.values().map(|p| &p.name).collect();
    programs.sort();
    let mut collections: Vec<&String> = v.collections.values().map(|c| &c.name).collect();
    collections.sort();
    format!(
        "<section class=\"tile\"><h2>Deploy</h2>\
         <form method=\"post\" action=\"/console/do/advertise\">{csrf}\
         <input type=\"hidden\" name=\"back\" value=\"/console/reports/distribution-status\">\
         <p><label>advertisement <input name=\"name\" required></label></p>\
         <p><label>program <select name=\"program\">{}</select></label> \
         <label>to <select name=\"collection\">{}</select></label></p>\
         <p><label>kind <select name=\"kind\"><option>mandatory</option><option>available</option>\
         <option>download-only</option></select></label> \
         <label>window (UTC) <input name=\"maintenance_window\" placeholder=\"22:00-04:00\" size=\"11\"></label></p>\
         <p><button>advertise</button></p></form>\
         <form method=\"post\" action=\"/console/do/update-approve\">{csrf}\
         <input type=\"hidden\" name=\"back\" value=\"/console/reports/update-compliance\">\
         <p><label>software update <input name=\"update\" placeholder=\"id, PACKAGE=VERSION or PACKAGE\"></label> \
         <button>approve</button></p></form></section>",
        options(programs),
        options(collections)
    )
}

/// The rollouts that run or wait, each with its current group's last counts.
fn rollouts(st: &AppState) -> Result<String> {
    let mut all: Vec<crate::rollout::Rollout> =
        st.read().rollouts.values().map(|g| g.rollout.clone()).collect();
    all.retain(|r| !matches!(r.state, RolloutState::Finished | RolloutState::Stopped));
    all.sort_by_key(|r| r.id);
    let mut html = String::from("<section class=\"tile\"><h2>Rollouts</h2>");
    if all.is_empty() {
        html.push_str("<p>No rollout runs. <a href=\"/console/rollouts\">All rollouts</a></p>");
    }
    for r in &all {
        let last =
            st.store.rollout_samples(r.id)?.into_iter().rev().find(|s| s.group == r.current_group);
        html.push_str(&format!(
            "<p><a href=\"/console/rollouts/{}\">{}</a> {} · group {}</p>",
            url(&r.name),
            esc(&r.name),
            r.state.as_str(),
            r.current_group + 1
        ));
        if let Some(s) = last {
            html.push_str(&super::charts::bar(&s.counts));
        }
    }
    html.push_str("</section>");
    Ok(html)
}
