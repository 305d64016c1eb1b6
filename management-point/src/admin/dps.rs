//! `dmmp dp`: distribution points registered, and the packages each is to hold: distributed,
//! updated to a new version, refreshed, removed and validated (the source documents' Manage
//! Distribution Points Wizard), and their state (docs/distribution-points.md).

use std::collections::BTreeMap;

use serde_json::json;

use super::{Out, find_package, table, when};
use crate::distribution::{Cidr, DistributionPoint, DpContent, DpHealth, DpState};
use crate::error::{Error, Result};
use crate::model::Package;
use crate::storage::Storage;

/// The prefix of a distribution point's credential.
pub const CREDENTIAL_PREFIX: &str = "dmdp_";

/// The highest copy rate limit taken (100 GiB/s in KiB/s).
pub const MAX_RATE_KIB: u64 = 100 << 20;

/// What `dp add` is told.
#[derive(Debug, Clone, Default)]
pub struct NewDp<'a> {
    /// Its name.
    pub name: &'a str,
    /// Where devices reach it.
    pub url: &'a str,
    /// Its site code.
    pub site: &'a str,
    /// Its boundaries (CIDR).
    pub boundaries: &'a [String],
    /// The distribution point it copies from.
    pub pull_from: Option<&'a str>,
    /// KiB per second it copies at most (0: no limit).
    pub rate_limit_kib: u64,
    /// Its daily copy window.
    pub window: Option<&'a str>,
}

/// Finds a distribution point by name or id.
pub fn find(store: &dyn Storage, r: &str) -> Result<DistributionPoint> {
    super::find_by(store.dps()?, r, "distribution point", |d| d.id, |d| &d.name)
}

/// `dmmp dp add`: registers a distribution point and makes its credential, answered once.
pub fn add(store: &dyn Storage, n: &NewDp<'_>, now: i64) -> Result<Out> {
    if !crate::model::Device::valid_controller_id(n.name) {
        return Err(Error::Usage(format!(
            "distribution point name {:?}: 1 to 64 letters, digits, '.', '_' or '-'",
            n.name
        )));
    }
    if n.name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Usage(format!(
            "distribution point name {:?}: not only digits (an id is named so)",
            n.name
        )));
    }
    if n.rate_limit_kib > MAX_RATE_KIB {
        return Err(Error::Usage(format!(
            "--rate-limit-kib: at most {MAX_RATE_KIB} (0: no limit)"
        )));
    }
    let url = n.url.trim_end_matches('/');
    let host = url.strip_prefix("https://").unwrap_or("");
    if host.is_empty() || host.contains(['/', '?', '#', '@']) {
        return Err(Error::Usage(format!("--url {:?}: https://HOST[:PORT], nothing after", n.url)));
    }
    for b in n.boundaries {
        Cidr::parse(b).map_err(|e| Error::Usage(format!("--boundary {e}")))?;
    }
    if let Some(w) = n.window {
        crate::distribution::parse_window(w).map_err(Error::Usage)?;
    }
    if n.site.len() > 64 || n.site.chars().any(char::is_control) {
        return Err(Error::Usage("--site: at most 64 printable characters".into()));
    }
    let pull_from = match n.pull_from {
        Some(p) => Some(find(store, p)?.id),
        None => None,
    };
    if store.dps()?.iter().any(|d| d.name == n.name) {
        return Err(Error::Conflict(format!("distribution point {} exists", n.name)));
    }
    let credential = format!("{CREDENTIAL_PREFIX}{}", crate::random::hex(32, "a credential")?);
    let mut dp = DistributionPoint {
        id: 0,
        name: n.name.to_string(),
        url: url.to_string(),
        site: n.site.to_string(),
        boundaries: n.boundaries.to_vec(),
        pull_from,
        rate_limit_kib: n.rate_limit_kib,
        window: n.window.map(str::to_string),
        token_sha256: crate::api::token_hash(&credential),
        link_key: crate::distribution::link_key(&credential),
        created: now,
        health: DpHealth::default(),
    };
    dp.id = store.add_dp(&dp)?;
    let text = format!(
        "added distribution point {} ({}, site {:?}, boundaries {})\n\
         its credential, shown once: put it in the file its [distribution_point] credential names\n\
         {credential}\n",
        dp.name,
        dp.url,
        dp.site,
        if dp.boundaries.is_empty() { "none".into() } else { dp.boundaries.join(" ") },
    );
    let mut v = json!(dp);
    v["credential"] = json!(credential);
    Ok(Out::new(text, v))
}

/// `dmmp dp retire`: forgets a distribution point (gone, or its credential leaked): its
/// credential and links stop working at once, its rows go, and those that copied from it copy
/// from the management point. Its disk is not touched.
pub fn retire(store: &dyn Storage, dp: &str) -> Result<Out> {
    let d = find(store, dp)?;
    store.remove_dp(d.id)?;
    Ok(Out::new(
        format!("distribution point {} retired: its credential no longer works\n", d.name),
        json!({ "retired": d }),
    ))
}

/// `dmmp dp list`: every distribution point and its health.
pub fn list(store: &dyn Storage, now: i64, fresh_after: i64) -> Result<Out> {
    let dps = store.dps()?;
    let rows: Vec<Vec<String>> = dps
        .iter()
        .map(|d| {
            vec![
                d.name.clone(),
                d.url.clone(),
                d.site.clone(),
                d.boundaries.join(" "),
                contact(&d.health, now, fresh_after),
                d.health.free_bytes.map_or("?".into(), |b| format!("{} MB", b / 1_000_000)),
                d.health.content_errors.len().to_string(),
            ]
        })
        .collect();
    let header = ["NAME", "URL", "SITE", "BOUNDARIES", "LAST CONTACT", "FREE", "CONTENT ERRORS"];
    Ok(Out::new(table(&header, &rows), json!(dps)))
}

/// How a distribution point's last contact reads.
pub fn contact(h: &DpHealth, now: i64, fresh_after: i64) -> String {
    match h.last_contact {
        None => "never".into(),
        Some(t) if !h.reachable(now, fresh_after) => format!("{} (silent)", when(Some(t))),
        Some(t) => when(Some(t)),
    }
}

/// The distribution points named (`all`: every one).
fn named(store: &dyn Storage, names: &[String]) -> Result<Vec<DistributionPoint>> {
    if names.iter().any(|n| n == "all") {
        return store.dps();
    }
    if names.is_empty() {
        return Err(Error::Usage("name distribution points with --dp (or --dp all)".into()));
    }
    names.iter().map(|n| find(store, n)).collect()
}

/// A package this server serves itself (an external distribution point's is not copied).
fn served(store: &dyn Storage, package: &str) -> Result<Package> {
    let p = find_package(store, package)?;
    if let Some(url) = &p.distribution_point {
        return Err(Error::Usage(format!(
            "package {} {} is served by the external {url}: distribution points copy only what this server holds",
            p.name, p.version
        )));
    }
    Ok(p)
}

/// A new copy of a package whose row `old` may still be there (being removed): its counters
/// go on from the old one's, so that the distribution point, which may still hold the old
/// copy, copies it afresh and later refreshes and validations are never taken as done.
fn again(old: Option<&DpContent>, new: DpContent) -> DpContent {
    match old {
        Some(o) => DpContent { refresh: o.refresh.saturating_add(1), validate: o.validate, ..new },
        None => new,
    }
}

fn row_of(rows: &[DpContent], dp: i64, pkg: i64) -> Option<&DpContent> {
    rows.iter().find(|r| r.dp_id == dp && r.package_id == pkg)
}

fn said(lines: Vec<String>, changed: &[DpContent]) -> Out {
    Out::new(lines.join("\n") + "\n", json!({ "changed": changed }))
}

/// `dmmp dp distribute`: copy a package to distribution points.
pub fn distribute(store: &dyn Storage, package: &str, dps: &[String], now: i64) -> Result<Out> {
    let p = served(store, package)?;
    let rows = store.dp_contents()?;
    let (mut put, mut lines) = (Vec::new(), Vec::new());
    for dp in named(store, dps)? {
        match row_of(&rows, dp.id, p.id) {
            Some(r) if r.state.holding() => {
                lines.push(format!("{}: already {} ({})", dp.name, r.state, p.version));
            }
            old => {
                put.push(again(old, DpContent::pending(dp.id, p.id, &p.version, now)));
                lines.push(format!("{}: {} {} install pending", dp.name, p.name, p.version));
            }
        }
    }
    store.put_dp_contents(&put)?;
    Ok(said(lines, &put))
}

/// `dmmp dp update`: the newest version of a package is copied to every distribution point
/// holding an older one; the older one is removed there once the newest is installed (devices
/// are sent there for it meanwhile).
pub fn update(store: &dyn Storage, name: &str, now: i64) -> Result<Out> {
    let name = name.split_once('@').map_or(name, |(n, _)| n);
    let pkgs: Vec<Package> = store.packages()?.into_iter().filter(|p| p.name == name).collect();
    let newest = pkgs
        .iter()
        .filter(|p| p.distribution_point.is_none())
        .max_by(|a, b| version_order(&a.version, &b.version).then(a.id.cmp(&b.id)))
        .ok_or_else(|| Error::NotFound(format!("package {name}")))?;
    let rows = store.dp_contents()?;
    let dps: BTreeMap<i64, String> = store.dps()?.into_iter().map(|d| (d.id, d.name)).collect();
    let (mut put, mut lines) = (Vec::new(), Vec::new());
    for old in rows.iter().filter(|r| r.state.holding() && r.package_id != newest.id) {
        if !pkgs.iter().any(|p| p.id == old.package_id) {
            continue;
        }
        let dp = dps.get(&old.dp_id).cloned().unwrap_or_default();
        let there = row_of(&rows, old.dp_id, newest.id);
        if !there.is_some_and(|r| r.state.holding() && r.state != DpState::InstallFailed)
            && !put.iter().any(|r: &DpContent| r.dp_id == old.dp_id && r.package_id == newest.id)
        {
            let new = DpContent::pending(old.dp_id, newest.id, &newest.version, now);
            put.push(again(there, DpContent { replaces: Some(old.package_id), ..new }));
            lines.push(format!(
                "{dp}: {name} {} install pending; {} is removed once it is installed",
                newest.version, old.source_version
            ));
        }
    }
    if put.is_empty() {
        lines.push(format!(
            "no distribution point holds an older version of {name} than {}",
            newest.version
        ));
    }
    store.put_dp_contents(&put)?;
    Ok(said(lines, &put))
}

/// Orders versions by their dot-separated numbers (then as text).
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |v: &str| v.split('.').map(|p| p.parse::<u64>().ok()).collect::<Vec<_>>();
    parts(a).cmp(&parts(b)).then_with(|| a.cmp(b))
}

/// Rows of a package on distribution points, changed by `f` where it says.
fn each_row(
    store: &dyn Storage,
    package: &str,
    dps: &[String],
    verb: &str,
    f: impl Fn(&DpContent) -> Option<DpContent>,
) -> Result<Out> {
    let p = find_package(store, package)?;
    let rows = store.dp_contents()?;
    let (mut put, mut lines) = (Vec::new(), Vec::new());
    for dp in named(store, dps)? {
        match row_of(&rows, dp.id, p.id) {
            None => lines.push(format!("{}: does not hold {} {}", dp.name, p.name, p.version)),
            Some(r) => match f(r) {
                Some(next) => {
                    lines.push(format!("{}: {} {} {verb}", dp.name, p.name, p.version));
                    put.push(next);
                }
                None => lines.push(format!("{}: {} {} is {}", dp.name, p.name, p.version, r.state)),
            },
        }
    }
    store.put_dp_contents(&put)?;
    Ok(said(lines, &put))
}

/// `dmmp dp refresh`: copy a package again to distribution points.
pub fn refresh(store: &dyn Storage, package: &str, dps: &[String], now: i64) -> Result<Out> {
    each_row(store, package, dps, "refresh pending", |r| {
        r.state.holding().then(|| DpContent {
            state: DpState::InstallPending,
            refresh: r.refresh.saturating_add(1),
            since: now,
            reason: None,
            ..r.clone()
        })
    })
}

/// `dmmp dp remove`: remove a package from distribution points.
pub fn remove(store: &dyn Storage, package: &str, dps: &[String], now: i64) -> Result<Out> {
    each_row(store, package, dps, "removal pending", |r| {
        r.state.holding().then(|| DpContent {
            state: DpState::RemovalPending,
            since: now,
            reason: None,
            ..r.clone()
        })
    })
}

/// `dmmp dp validate`: rehash a package on distribution points now.
pub fn validate(store: &dyn Storage, package: &str, dps: &[String]) -> Result<Out> {
    each_row(store, package, dps, "validation pending", |r| {
        (r.state == DpState::Installed)
            .then(|| DpContent { validate: r.validate.saturating_add(1), ..r.clone() })
    })
}

/// `dmmp dp status`: every package on every distribution point (narrowed to one package or
/// distribution point), and per package how many are targeted, installed, retrying, failed.
pub fn status(store: &dyn Storage, package: Option<&str>, dp: Option<&str>) -> Result<Out> {
    let pkg = package.map(|p| find_package(store, p)).transpose()?;
    let one = dp.map(|d| find(store, d)).transpose()?;
    let dps: BTreeMap<i64, DistributionPoint> =
        store.dps()?.into_iter().map(|d| (d.id, d)).collect();
    let pkgs: BTreeMap<i64, Package> = store.packages()?.into_iter().map(|p| (p.id, p)).collect();
    let rows: Vec<DpContent> = store
        .dp_contents()?
        .into_iter()
        .filter(|r| pkg.as_ref().is_none_or(|p| p.id == r.package_id))
        .filter(|r| one.as_ref().is_none_or(|d| d.id == r.dp_id))
        .collect();
    let text_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                dps.get(&r.dp_id).map_or("?".into(), |d| d.name.clone()),
                pkgs.get(&r.package_id).map_or("?".into(), |p| p.name.clone()),
                r.source_version.clone(),
                r.state.to_string(),
                when(r.last_copied),
                r.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut text = table(
        &["DISTRIBUTION POINT", "PACKAGE", "VERSION", "STATE", "LAST COPIED", "REASON"],
        &text_rows,
    );
    let summary = summarize(&rows);
    let sum_rows: Vec<Vec<String>> = summary
        .iter()
        .map(|(id, s)| {
            let p = pkgs.get(id);
            vec![
                p.map_or("?".into(), |p| p.name.clone()),
                p.map_or("?".into(), |p| p.version.clone()),
                s.targeted.to_string(),
                s.installed.to_string(),
                s.retrying.to_string(),
                s.failed.to_string(),
            ]
        })
        .collect();
    text.push('\n');
    text.push_str(&table(
        &["PACKAGE", "VERSION", "TARGETED", "INSTALLED", "RETRYING", "FAILED"],
        &sum_rows,
    ));
    let rows_json: Vec<_> = rows
        .iter()
        .map(|r| {
            let mut v = json!(r);
            v["distribution_point"] = json!(dps.get(&r.dp_id).map(|d| d.name.clone()));
            v["package"] = json!(pkgs.get(&r.package_id).map(|p| p.name.clone()));
            v
        })
        .collect();
    let sum_json: Vec<_> = summary
        .iter()
        .map(|(id, s)| json!({"package_id": id, "targeted": s.targeted, "installed": s.installed, "retrying": s.retrying, "failed": s.failed}))
        .collect();
    Ok(Out::new(text, json!({ "content": rows_json, "packages": sum_json })))
}

/// How many distribution points a package is on, in each kind of state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Rows that are to hold it.
    pub targeted: usize,
    /// Installed.
    pub installed: usize,
    /// Pending or retrying (copies and removals).
    pub retrying: usize,
    /// Failed (copies and removals).
    pub failed: usize,
}

/// [`Summary`] per package.
pub fn summarize(rows: &[DpContent]) -> BTreeMap<i64, Summary> {
    let mut m: BTreeMap<i64, Summary> = BTreeMap::new();
    for r in rows {
        let s = m.entry(r.package_id).or_default();
        if r.state.holding() {
            s.targeted += 1;
        }
        match r.state {
            DpState::Installed => s.installed += 1,
            DpState::InstallFailed | DpState::RemovalFailed => s.failed += 1,
            _ => s.retrying += 1,
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_number() {
        use std::cmp::Ordering::*;
        assert_eq!(version_order("1.10.0", "1.9.0"), Greater);
        assert_eq!(version_order("2.0", "2.0"), Equal);
        assert_eq!(version_order("1.0.0.1", "1.0.0"), Greater);
    }

    #[test]
    fn summaries_count_by_state() {
        let r = |state| DpContent { state, ..DpContent::pending(1, 7, "1", 0) };
        let rows = [
            r(DpState::Installed),
            r(DpState::InstallRetrying),
            r(DpState::InstallFailed),
            r(DpState::RemovalPending),
        ];
        let s = summarize(&rows)[&7];
        assert_eq!(s, Summary { targeted: 3, installed: 1, retrying: 2, failed: 1 });
    }
}
