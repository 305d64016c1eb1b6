//! `dmmp update compliance` (docs/software-updates.md): where the fleet, a collection, an
//! update or one device stands, from the devices' scan reports. The console's update reports
//! are built from it.

use std::collections::{BTreeMap, HashMap};

use serde_json::json;

use super::updates::find_updates;
use super::{Out, find_collection, find_device, table, when};
use crate::error::Result;
use crate::model::updates::*;
use crate::model::*;
use crate::storage::Storage;

/// `dmmp update compliance`: the summary of the fleet (or of one collection) from each
/// device's counts, and, for the fleet, each update's devices: required, installed, not
/// required (scanned, no row), unknown (never scanned, or the scan could not tell) and
/// deploying; or one device's updates and where it stands.
pub fn compliance(
    store: &dyn Storage,
    update: Option<&str>,
    device: Option<&str>,
    collection: Option<&str>,
) -> Result<Out> {
    if let Some(d) = device {
        let d = find_device(store, d)?;
        return device_compliance(store, &d);
    }
    let mut scans = store.update_scans()?;
    let total = match collection {
        Some(c) => {
            let c = find_collection(store, c)?;
            let ids: std::collections::HashSet<i64> =
                store.devices()?.iter().filter(|d| c.contains(d)).map(|d| d.id).collect();
            scans.retain(|s| ids.contains(&s.device_id));
            ids.len() as i64
        }
        None => store.device_count()?,
    };
    let mut summary: BTreeMap<&str, i64> = BTreeMap::new();
    for s in &scans {
        *summary.entry(s.counts.status()).or_default() += 1;
    }
    let scanned = scans.len() as i64;
    if total > scanned {
        summary.insert("unknown", total - scanned);
    }
    let compliant = summary.get("on latest").copied().unwrap_or(0);
    let pct = if total > 0 { compliant * 100 / total } else { 0 };
    let mut text = format!(
        "{compliant} of {total} devices on latest ({pct}%): {}\n",
        summary.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    );
    let mut out = Vec::new();
    if collection.is_none() {
        let all = store.updates()?;
        let only: Option<Vec<i64>> =
            update.map(|u| find_updates(&all, &[u.to_string()])).transpose()?;
        let mut per_update: BTreeMap<i64, BTreeMap<&'static str, i64>> = BTreeMap::new();
        for (id, state, n) in store.update_state_counts()? {
            if only.as_ref().is_none_or(|o| o.contains(&id)) {
                per_update.entry(id).or_default().insert(state.as_str(), n);
            }
        }
        if let Some(o) = &only {
            for id in o {
                per_update.entry(*id).or_default();
            }
        }
        let by_id: HashMap<i64, &Update> = all.iter().map(|u| (u.id, u)).collect();
        let mut rows = Vec::new();
        for (id, c) in &per_update {
            let Some(u) = by_id.get(id) else { continue };
            let n = |s: &str| c.get(s).copied().unwrap_or(0);
            let held: i64 = c.values().sum();
            let (not_required, unknown) = (scanned - held, total - scanned + n("unknown"));
            let deploying = n("failed") + n("in_progress") + n("pending_reboot");
            rows.push(vec![
                u.id.to_string(),
                u.package.clone(),
                u.version.clone(),
                n("required").to_string(),
                n("installed").to_string(),
                not_required.to_string(),
                unknown.to_string(),
                deploying.to_string(),
            ]);
            out.push(json!({"id": u.id, "package": u.package, "version": u.version, "arch": u.arch,
                "required": n("required"), "installed": n("installed"), "not_required": not_required,
                "unknown": unknown, "failed": n("failed"), "in_progress": n("in_progress"),
                "pending_reboot": n("pending_reboot")}));
        }
        if !rows.is_empty() {
            text.push_str(&table(
                &[
                    "ID",
                    "PACKAGE",
                    "VERSION",
                    "REQUIRED",
                    "INSTALLED",
                    "NOT REQUIRED",
                    "UNKNOWN",
                    "DEPLOYING",
                ],
                &rows,
            ));
        }
    }
    Ok(Out::new(text, json!({"devices": total, "summary": summary, "updates": out})))
}

fn device_compliance(store: &dyn Storage, d: &Device) -> Result<Out> {
    let states = store.update_states(Some(d.id))?;
    let scan = store.update_scans()?.into_iter().find(|s| s.device_id == d.id);
    let all: HashMap<i64, Update> = store.updates()?.into_iter().map(|u| (u.id, u)).collect();
    let status = scan.as_ref().map_or("unknown", |s| s.counts.status());
    let mut text = format!(
        "{}/{}: {status} (last scan {}, catalog {})\n",
        d.tenant,
        d.controller_id,
        when(scan.as_ref().map(|s| s.scanned)),
        scan.as_ref().map_or("-", |s| s.catalog.as_str())
    );
    let rows: Vec<Vec<String>> = states
        .iter()
        .map(|s| {
            let u = all.get(&s.update_id);
            vec![
                s.update_id.to_string(),
                u.map_or_else(String::new, |u| u.package.clone()),
                u.map_or_else(String::new, |u| u.version.clone()),
                s.state.as_str().into(),
                s.installed.clone().unwrap_or_default(),
                s.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    text.push_str(&table(&["ID", "PACKAGE", "VERSION", "STATE", "INSTALLED NOW", "REASON"], &rows));
    let rows: Vec<serde_json::Value> = states
        .iter()
        .map(|s| {
            let u = all.get(&s.update_id);
            json!({"update_id": s.update_id, "package": u.map(|u| &u.package), "version": u.map(|u| &u.version),
                   "arch": u.map(|u| &u.arch), "state": s.state, "installed": s.installed, "reason": s.reason,
                   "updated": s.updated})
        })
        .collect();
    Ok(Out::new(
        text,
        json!({"device": d.controller_id, "tenant": d.tenant, "status": status,
               "scanned": scan.as_ref().map(|s| s.scanned), "catalog": scan.map(|s| s.catalog), "updates": rows}),
    ))
}
