//! Targeting: collections of devices, and advertisements of a program to a collection with
//! their status per device.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Out, find_advertisement, find_collection, find_device, find_program, table, when};
use crate::error::{Error, Result};
use crate::model::*;
use crate::storage::Storage;

/// `dmmp collection add`.
pub fn collection_add(
    cfg: &crate::config::Config,
    store: &dyn Storage,
    name: &str,
    tenant: &str,
    rule: &str,
) -> Result<Out> {
    let rule = CollectionRule::parse(rule).map_err(Error::Usage)?;
    if !cfg.devices.tenants.iter().any(|t| t == tenant) {
        return Err(Error::Usage(format!(
            "--tenant {tenant:?}: this server serves {} (dmmp.toml [devices] tenants)",
            cfg.devices.tenants.join(", ")
        )));
    }
    let id = store.add_collection(name, tenant, &rule)?;
    Ok(Out::new(
        format!("collection {id} added: {name} ({rule}) for tenant {tenant}\n"),
        json!({"id": id, "name": name, "tenant": tenant, "rule": rule}),
    ))
}

/// Lists collections with their current member counts.
pub fn collection_list(store: &dyn Storage, tenant: Option<&str>) -> Result<Out> {
    let devices = store.devices()?;
    let mut cs = store.collections()?;
    cs.retain(|c| tenant.is_none_or(|t| c.tenant == t));
    let rows: Vec<Vec<String>> = cs
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.name.clone(),
                c.tenant.clone(),
                c.rule.to_string(),
                devices.iter().filter(|d| c.contains(d)).count().to_string(),
                c.window.map_or_else(|| "-".into(), |w| w.to_string()),
            ]
        })
        .collect();
    Ok(Out::new(table(&["ID", "NAME", "TENANT", "RULE", "MEMBERS", "WINDOW"], &rows), json!(cs)))
}

/// `dmmp collection window`: sets a collection's daily maintenance window in UTC, or clears
/// it when none is given.
pub fn collection_window(
    store: &dyn Storage,
    collection: &str,
    window: Option<&str>,
) -> Result<Out> {
    let c = find_collection(store, collection)?;
    let w = window.map(MaintenanceWindow::parse).transpose().map_err(Error::Usage)?;
    store.set_collection_window(c.id, w.as_ref())?;
    let text = match w {
        Some(w) => format!(
            "collection {}: its devices install update deployments inside {w} UTC\n",
            c.name
        ),
        None => format!("collection {}: no maintenance window\n", c.name),
    };
    Ok(Out::new(text, json!({"collection": c.name, "window": w.map(|w| w.to_string())})))
}

/// The members of a collection now.
/// `dmmp collection members`: adds the explicit members named, then lists the members now.
pub fn collection_members(store: &dyn Storage, collection: &str, add: &[String]) -> Result<Out> {
    let c = find_collection(store, collection)?;
    for d in add {
        let dev = find_device(store, d)?;
        if dev.tenant != c.tenant {
            return Err(Error::Usage(format!(
                "device {}/{} is not of tenant {}, whose devices collection {} holds",
                dev.tenant, dev.controller_id, c.tenant, c.name
            )));
        }
        store.add_member(c.id, dev.id)?;
    }
    let c = find_collection(store, collection)?;
    let members: Vec<Device> = store.devices()?.into_iter().filter(|d| c.contains(d)).collect();
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|d| {
            vec![
                d.tenant.clone(),
                d.controller_id.clone(),
                d.attr(attr::PLATFORM).unwrap_or("?").into(),
                d.attr(attr::CLIENT_VERSION).unwrap_or("?").into(),
            ]
        })
        .collect();
    Ok(Out::new(table(&["TENANT", "CONTROLLER ID", "PLATFORM", "CLIENT"], &rows), json!(members)))
}

/// Lists advertisements.
pub fn advertisement_list(store: &dyn Storage, now: i64, tenant: Option<&str>) -> Result<Out> {
    let progs: BTreeMap<i64, Program> = store.programs()?.into_iter().map(|p| (p.id, p)).collect();
    let cols: BTreeMap<i64, Collection> =
        store.collections()?.into_iter().map(|c| (c.id, c)).collect();
    let mut ads = store.advertisements()?;
    ads.retain(|a| {
        tenant.is_none_or(|t| cols.get(&a.collection_id).is_some_and(|c| c.tenant == t))
    });
    let rows: Vec<Vec<String>> = ads
        .iter()
        .map(|a| {
            let state = if a.canceled {
                "canceled"
            } else if a.start_time > now {
                "pending"
            } else if a.expires.is_some_and(|e| e <= now) {
                "expired"
            } else {
                "active"
            };
            vec![
                a.id.to_string(),
                a.name.clone(),
                a.kind.as_str().into(),
                progs.get(&a.program_id).map_or("?".into(), |p| p.name.clone()),
                cols.get(&a.collection_id).map_or("?".into(), |c| c.name.clone()),
                state.into(),
                when(Some(a.start_time)),
                a.window.map_or("-".into(), |w| w.to_string()),
                a.rerun.as_str().into(),
                if a.allow_downgrade { "allowed".into() } else { "no".into() },
            ]
        })
        .collect();
    let header = [
        "ID",
        "NAME",
        "KIND",
        "PROGRAM",
        "COLLECTION",
        "STATE",
        "START",
        "WINDOW",
        "RERUN",
        "DOWNGRADE",
    ];
    Ok(Out::new(table(&header, &rows), json!(ads)))
}

/// Counts per state for one advertisement, and each targeted device's state.
pub fn advertisement_status(store: &dyn Storage, a: &Advertisement) -> Result<Out> {
    let devices: BTreeMap<i64, Device> = store.devices()?.into_iter().map(|d| (d.id, d)).collect();
    let collection = store.collections()?.into_iter().find(|c| c.id == a.collection_id);
    let actions: Vec<Action> =
        store.actions()?.into_iter().filter(|x| x.advertisement_id == a.id).collect();
    let mut counts: BTreeMap<&str, usize> =
        ActionStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    let mut rows = Vec::new();
    let mut per_device = Vec::new();
    for ac in &actions {
        *counts.entry(ac.status.as_str()).or_default() += 1;
        let d = devices.get(&ac.device_id);
        let last = store.statuses_for_action(ac.id)?.pop();
        let detail = last.as_ref().map(|r| r.details.join("; ")).unwrap_or_default();
        let cid = d.map_or("?".to_string(), |d| d.controller_id.clone());
        rows.push(vec![
            cid.clone(),
            ac.status.as_str().into(),
            ac.last_code.map_or("-".into(), |c| c.to_string()),
            detail.chars().take(100).collect(),
        ]);
        per_device.push(json!({"device": cid, "action": ac.id, "status": ac.status.as_str(), "last_code": ac.last_code, "last_details": last.map(|r| r.details)}));
    }
    let not_yet = match &collection {
        Some(c) => devices
            .values()
            .filter(|d| c.contains(d) && !actions.iter().any(|x| x.device_id == d.id))
            .count(),
        None => 0,
    };
    let mut text = format!(
        "advertisement {} {:?} ({}{})\n",
        a.id,
        a.name,
        a.kind.as_str(),
        if a.canceled { ", canceled" } else { "" }
    );
    text.push_str(&format!(
        "  actions: {}, targeted devices not yet polled: {not_yet}\n  ",
        actions.len()
    ));
    text.push_str(&counts.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("  "));
    text.push_str("\n\n");
    text.push_str(&table(&["DEVICE", "STATUS", "CODE", "LAST DETAILS"], &rows));
    Ok(Out::new(
        text,
        json!({"advertisement": a, "counts": counts, "not_yet_polled": not_yet, "devices": per_device}),
    ))
}

/// What `dmmp advertise` is given.
#[derive(Debug, Clone)]
pub struct AdvertiseSpec {
    /// The advertisement's name.
    pub name: String,
    /// The program (id or name).
    pub program: String,
    /// The collection (id or name).
    pub collection: String,
    /// Mandatory, available or download only.
    pub kind: AdvertisementKind,
    /// When it becomes due (RFC 3339; default now).
    pub start: Option<String>,
    /// When it expires (RFC 3339).
    pub expires: Option<String>,
    /// Daily window in UTC when mandatory programs may run.
    pub maintenance_window: Option<String>,
    /// Whether a program that ran before runs again.
    pub rerun: Rerun,
    /// Whether devices may take an older version than they have had.
    pub allow_downgrade: bool,
}

/// `dmmp advertise`.
pub fn advertise(store: &dyn Storage, a: &AdvertiseSpec, now: i64) -> Result<Out> {
    let prog = find_program(store, &a.program)?;
    let col = find_collection(store, &a.collection)?;
    let start = a.start.as_deref().map(|s| super::time_arg(s, "start")).transpose()?.unwrap_or(now);
    let expires = a.expires.as_deref().map(|s| super::time_arg(s, "expires")).transpose()?;
    if expires.is_some_and(|e| e <= start) {
        return Err(Error::Usage("--expires must be after --start".into()));
    }
    let window = a
        .maintenance_window
        .as_deref()
        .map(MaintenanceWindow::parse)
        .transpose()
        .map_err(Error::Usage)?;
    let mut adv = Advertisement {
        id: 0,
        name: a.name.clone(),
        program_id: prog.id,
        collection_id: col.id,
        kind: a.kind,
        start_time: start,
        expires,
        window,
        created: now,
        canceled: false,
        rerun: a.rerun,
        allow_downgrade: a.allow_downgrade,
    };
    adv.id = store.add_advertisement(&adv)?;
    let downgrade = if a.allow_downgrade { ", downgrade allowed" } else { "" };
    let text = format!(
        "advertisement {} added: {} of {} to {} ({}, rerun {}{downgrade})\n",
        adv.id,
        prog.name,
        prog.package_id,
        col.name,
        a.kind.as_str(),
        a.rerun.as_str()
    );
    Ok(Out::new(text, json!(adv)))
}

/// `dmmp advertisement cancel`: devices that have not started it are told to cancel.
pub fn advertisement_cancel(store: &dyn Storage, advertisement: &str, now: i64) -> Result<Out> {
    let a = find_advertisement(store, advertisement)?;
    let n = store.cancel_advertisement(a.id, now)?;
    Ok(Out::new(
        format!("advertisement {} canceled; {n} device(s) told to cancel\n", a.id),
        json!({"canceled": a.id, "actions_canceling": n}),
    ))
}
