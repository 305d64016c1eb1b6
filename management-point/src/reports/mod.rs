//! The source documents' reports for client installation (docs/health.md): built from the
//! store as rows, the same rows printed as text, CSV (cells a spreadsheet would run as a
//! formula neutralised) or JSON. `dmmp report NAME` prints them.

pub mod health;
pub mod scan;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::admin::{table, when};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{ActionStatus, Device, PackageKind, StatusRecord};
use crate::storage::Storage;
use dm_shared::StatusCode;
use dm_shared::vocab::inventory as key;
use health::{Cause, Thresholds, Verdict};
pub use scan::{Arrange, Next, Paging};

/// Every report: its name (for `dmmp report NAME`) and title (the source documents').
pub const REPORTS: [(&str, &str); 18] = [
    ("distribution-status", "Software distribution status for the client install program"),
    ("tethered-desktops", "Desktop clients reporting tethered devices"),
    ("deployment-details", "Device client agent deployment status details"),
    ("deployment-failures", "Device client agent deployment failure report"),
    ("deployment-successes", "Device client agent deployment success report"),
    ("health-summary", "Device client agent health summary"),
    ("healthy", "Devices in healthy condition"),
    ("unhealthy", "Devices unhealthy for any cause"),
    ("unhealthy-certificate", "Devices unhealthy due to certificate issues"),
    ("unhealthy-communication", "Devices unhealthy due to communication issues"),
    ("unhealthy-local", "Devices unhealthy due to local client issues"),
    ("advertisement-devices", "Devices of an advertisement, by distribution state"),
    ("update-summary", "Software update compliance summary"),
    ("update-compliance", "Software update compliance per update"),
    ("device-updates", "Software updates of a device"),
    ("distribution-points", "Distribution points: health and packages by state"),
    ("dp-packages", "Package status on distribution points"),
    ("dp-content", "Packages on each distribution point"),
];

/// The distribution states of a device for an advertisement, as the distribution status
/// report counts them.
pub const STATES: [&str; 6] =
    ["targeted", "received", "downloading", "running", "succeeded", "failed"];

/// What narrows a report, and which page of it.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// One advertisement (distribution status, its devices).
    pub advertisement: Option<String>,
    /// One device (deployment details).
    pub device: Option<String>,
    /// One distribution state (an advertisement's devices): one of [`STATES`].
    pub state: Option<String>,
    /// Rows with a cell containing this text (any case).
    pub filter: Option<String>,
    /// The column to sort by.
    pub sort: Option<String>,
    /// Sorted largest first.
    pub desc: bool,
    /// Which page of a device list.
    pub page: Paging,
}

/// A report: a title, columns and rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Its name.
    pub name: &'static str,
    /// Its title.
    pub title: &'static str,
    /// The columns.
    pub columns: Vec<&'static str>,
    /// The rows, a cell per column.
    pub rows: Vec<Vec<String>>,
    /// Where the next page starts, when the report is a device list with more to show.
    pub next: Option<Next>,
}

impl Report {
    /// Aligned text, with the title.
    pub fn text(&self) -> String {
        let mut s = format!("{}\n\n", self.title);
        if self.rows.is_empty() {
            s.push_str("(nothing to show)\n");
        } else {
            s.push_str(&table(&self.columns, &self.rows));
        }
        s
    }

    /// CSV (RFC 4180), a cell that begins with `=`, `+`, `-` or `@` prefixed with `'` so a
    /// spreadsheet shows it instead of running it.
    pub fn csv(&self) -> String {
        let mut s = self.columns.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(",");
        s.push_str("\r\n");
        for r in &self.rows {
            s.push_str(&r.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(","));
            s.push_str("\r\n");
        }
        s
    }

    /// `{"report", "title", "columns", "rows": [{column: cell}]}`.
    pub fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let m: serde_json::Map<String, Value> = self
                    .columns
                    .iter()
                    .zip(r)
                    .map(|(c, v)| (c.to_string(), Value::String(v.clone())))
                    .collect();
                Value::Object(m)
            })
            .collect();
        let next = match &self.next {
            None => Value::Null,
            Some(Next::After(t, c)) => json!({"after_tenant": t, "after": c}),
            Some(Next::Offset(o)) => json!({"offset": o}),
        };
        json!({"report": self.name, "title": self.title, "columns": self.columns, "rows": rows, "next": next})
    }
}

/// One CSV cell: control characters escaped ([`crate::printable::printable`]: a device's
/// text must not reach a terminal the CSV is printed on raw), neutralised, then quoted when it
/// must be.
pub fn csv_cell(c: &str) -> String {
    let c = crate::printable::printable(c);
    let c = if c.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{c}")
    } else {
        c.to_string()
    };
    if c.contains([',', '"', '\n', '\r']) { format!("\"{}\"", c.replace('"', "\"\"")) } else { c }
}

/// The thresholds of `cfg`.
pub fn thresholds(cfg: &Config) -> Thresholds {
    Thresholds { poll_secs: cfg.devices.poll_sleep_secs, silent_polls: cfg.health.silent_polls }
}

/// Builds report `name` at `now` (Unix seconds): a summary whole, a device list a page at a
/// time (all of it when `o.page.limit` is `None`).
pub fn build(
    store: &dyn Storage,
    cfg: &Config,
    name: &str,
    now: i64,
    o: &Options,
) -> Result<Report> {
    let (name, title) = *REPORTS.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        let names: Vec<&str> = REPORTS.iter().map(|(n, _)| *n).collect();
        Error::Usage(format!("no report {name:?}: the reports are {}", names.join(", ")))
    })?;
    let columns = columns(name);
    let sort = match &o.sort {
        None => None,
        Some(s) => Some(columns.iter().position(|c| c == s).ok_or_else(|| {
            Error::Usage(format!(
                "report {name} has no column {s:?}: it has {}",
                columns.join(", ")
            ))
        })?),
    };
    let a = Arrange { filter: o.filter.clone(), sort, desc: o.desc };
    let mut next = None;
    let rows = match name {
        "distribution-status" => arranged(distribution(store, o)?, &a),
        "deployment-failures" => arranged(failures(store)?, &a),
        "health-summary" => arranged(summary(store, cfg, now)?, &a),
        "deployment-details" if o.device.is_some() => arranged(details_of_one(store, o)?, &a),
        "update-summary" | "update-compliance" | "device-updates" => {
            arranged(updates(store, name, o)?, &a)
        }
        "distribution-points" | "dp-packages" | "dp-content" => {
            arranged(distribution_points(store, cfg, name, now)?, &a)
        }
        list => {
            let mut rows_of = device_rows(store, cfg, now, o, list)?;
            let (rows, n) = scan::page(store, &o.page, &a, &mut *rows_of)?;
            next = n;
            rows
        }
    };
    Ok(Report { name, title, columns, rows, next })
}

/// The distribution point reports (docs/distribution-points.md): each distribution point's
/// health and its packages by state; each package's count of distribution points by state;
/// each package on each distribution point.
fn distribution_points(
    store: &dyn Storage,
    cfg: &Config,
    name: &str,
    now: i64,
) -> Result<Vec<Vec<String>>> {
    use crate::admin::dps::{Summary, contact, summarize};
    let dps = store.dps()?;
    let rows = store.dp_contents()?;
    let pkgs: BTreeMap<i64, crate::model::Package> =
        store.packages()?.into_iter().map(|p| (p.id, p)).collect();
    let pkg = |id: i64| {
        pkgs.get(&id)
            .map_or(("?".to_string(), "?".to_string()), |p| (p.name.clone(), p.version.clone()))
    };
    let counts = |s: &Summary| {
        [s.targeted, s.installed, s.retrying, s.failed]
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    let fresh = cfg.distribution.silent_after();
    Ok(match name {
        "distribution-points" => dps
            .iter()
            .map(|d| {
                let mine: Vec<_> = rows.iter().filter(|r| r.dp_id == d.id).cloned().collect();
                let total = summarize(&mine).values().fold(Summary::default(), |a, s| Summary {
                    targeted: a.targeted + s.targeted,
                    installed: a.installed + s.installed,
                    retrying: a.retrying + s.retrying,
                    failed: a.failed + s.failed,
                });
                let mut row = vec![
                    d.name.clone(),
                    d.site.clone(),
                    contact(&d.health, now, fresh),
                    d.health.free_bytes.map_or("?".into(), |b| format!("{} MB", b / 1_000_000)),
                    d.health.content_errors.first().cloned().unwrap_or_default(),
                ];
                row.extend(counts(&total));
                row
            })
            .collect(),
        "dp-packages" => summarize(&rows)
            .iter()
            .map(|(id, s)| {
                let (n, v) = pkg(*id);
                [vec![n, v], counts(s)].concat()
            })
            .collect(),
        _ => rows
            .iter()
            .map(|r| {
                let dp =
                    dps.iter().find(|d| d.id == r.dp_id).map_or("?".into(), |d| d.name.clone());
                let (n, _) = pkg(r.package_id);
                vec![
                    dp,
                    n,
                    r.source_version.clone(),
                    r.state.to_string(),
                    when(r.last_copied),
                    r.reason.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    })
}

/// The software update reports (docs/software-updates.md), from `dmmp update compliance`'s
/// own figures.
fn updates(store: &dyn Storage, name: &str, o: &Options) -> Result<Vec<Vec<String>>> {
    let cell = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let pick = |v: &Value, keys: &[&str]| keys.iter().map(|k| cell(&v[*k])).collect::<Vec<_>>();
    Ok(match name {
        "update-summary" => {
            let c = crate::admin::update_compliance::compliance(store, None, None, None)?.json;
            let summary = c["summary"].as_object().cloned().unwrap_or_default();
            summary.iter().map(|(k, v)| vec![k.clone(), cell(v)]).collect()
        }
        "update-compliance" => {
            let c = crate::admin::update_compliance::compliance(store, None, None, None)?.json;
            // The columns are the JSON's keys, spaced for people.
            let keys: Vec<String> = columns(name).iter().map(|c| c.replace(' ', "_")).collect();
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            c["updates"].as_array().into_iter().flatten().map(|u| pick(u, &keys)).collect()
        }
        _ => {
            let device = o.device.as_deref().ok_or_else(|| {
                Error::Usage("report device-updates needs a device (--device)".into())
            })?;
            let c =
                crate::admin::update_compliance::compliance(store, None, Some(device), None)?.json;
            let keys = ["update_id", "package", "version", "state", "installed", "reason"];
            c["updates"].as_array().into_iter().flatten().map(|u| pick(u, &keys)).collect()
        }
    })
}

fn arranged(mut rows: Vec<Vec<String>>, a: &Arrange) -> Vec<Vec<String>> {
    a.apply(&mut rows);
    rows
}

/// The columns of each report.
fn columns(name: &str) -> Vec<&'static str> {
    match name {
        "distribution-status" => [&["advertisement"][..], &STATES].concat(),
        "tethered-desktops" => vec!["desktop", "tethered devices", "last install"],
        "deployment-details" => {
            vec!["device", "time", "component", "message", "code", "text", "log excerpt"]
        }
        "deployment-failures" => vec!["code", "name", "meaning", "devices", "which"],
        "deployment-successes" => vec!["device", "client version", "time", "message", "text"],
        "health-summary" => vec!["state", "devices"],
        "update-summary" => vec!["state", "devices"],
        "update-compliance" => vec![
            "id",
            "package",
            "version",
            "arch",
            "required",
            "installed",
            "not required",
            "unknown",
            "failed",
            "in progress",
            "pending reboot",
        ],
        "device-updates" => vec!["id", "package", "version", "state", "installed now", "reason"],
        "distribution-points" => vec![
            "distribution point",
            "site",
            "last contact",
            "free",
            "last content error",
            "targeted",
            "installed",
            "retrying",
            "failed",
        ],
        "dp-packages" => {
            vec!["package", "version", "targeted", "installed", "retrying", "failed"]
        }
        "dp-content" => {
            vec!["distribution point", "package", "version", "state", "last copied", "reason"]
        }
        "advertisement-devices" => {
            vec!["device", "tenant", "state", "status", "last message", "last change"]
        }
        _ => vec!["device", "tenant", "client version", "last poll", "health", "why"],
    }
}

/// How each device becomes rows in the device list `name`.
fn device_rows<'a>(
    store: &'a dyn Storage,
    cfg: &Config,
    now: i64,
    o: &'a Options,
    name: &str,
) -> Result<Box<scan::RowsOf<'a>>> {
    Ok(match name {
        "tethered-desktops" => Box::new(|d: &Device| Ok(tethered(d).into_iter().collect())),
        "deployment-details" => Box::new(move |d: &Device| details(store, d)),
        "deployment-successes" => Box::new(move |d: &Device| success(store, d)),
        "advertisement-devices" => {
            let ad = match &o.advertisement {
                Some(a) => crate::admin::find_advertisement(store, a)?,
                None => {
                    return Err(Error::Usage(
                        "advertisement-devices needs an advertisement".into(),
                    ));
                }
            };
            if let Some(s) = o.state.as_deref().filter(|s| !STATES.contains(s)) {
                return Err(Error::Usage(format!(
                    "no distribution state {s:?}: the states are {}",
                    STATES.join(", ")
                )));
            }
            let state = o.state.clone();
            Box::new(move |d: &Device| of_advertisement(store, &ad, state.as_deref(), d))
        }
        health => {
            let judge = Judge::new(store, cfg, now)?;
            let wanted = match health {
                "unhealthy-certificate" => Wanted::Cause(Cause::Certificate),
                "unhealthy-communication" => Wanted::Cause(Cause::Communication),
                "unhealthy-local" => Wanted::Cause(Cause::Local),
                "unhealthy" => Wanted::Unhealthy,
                _ => Wanted::Healthy,
            };
            Box::new(move |d: &Device| Ok(by_health(&judge, wanted, d).into_iter().collect()))
        }
    })
}

type Rows = Vec<Vec<String>>;

/// Every device, a chunk at a time, in key order.
fn each_device(store: &dyn Storage, f: &mut dyn FnMut(Device) -> Result<()>) -> Result<()> {
    scan::walk(&mut |after, n| store.devices_page(after, n), None, &mut |d| f(d).map(|()| true))
}

/// The distribution state of an action (one of [`STATES`] past `targeted`), if it has one.
fn state_of(a: &crate::model::Action) -> Option<&'static str> {
    use ActionStatus as S;
    match a.status {
        S::Waiting | S::Scheduled | S::Canceled | S::Canceling => None,
        S::Running if a.last_code == Some(10002) => Some("downloading"),
        S::Running => Some("running"),
        S::Finished => Some("succeeded"),
        S::Error => Some("failed"),
        _ => Some("received"),
    }
}

fn distribution(store: &dyn Storage, o: &Options) -> Result<Rows> {
    let programs = store.programs()?;
    let packages = store.packages()?;
    let kind_of = |program_id: i64| {
        let p = programs.iter().find(|p| p.id == program_id)?;
        packages.iter().find(|k| k.id == p.package_id).map(|k| k.kind)
    };
    let ads: Vec<_> = match &o.advertisement {
        Some(a) => vec![crate::admin::find_advertisement(store, a)?],
        None => store
            .advertisements()?
            .into_iter()
            .filter(|a| kind_of(a.program_id) == Some(PackageKind::ClientDeployment))
            .collect(),
    };
    let mut counts: BTreeMap<i64, [usize; 6]> = ads.iter().map(|a| (a.id, [0; 6])).collect();
    for a in store.actions()? {
        let Some(c) = counts.get_mut(&a.advertisement_id) else { continue };
        c[0] += 1;
        if let Some(st) = state_of(&a) {
            c[1] += 1;
            if let Some(i) = STATES.iter().position(|s| *s == st).filter(|i| *i > 1) {
                c[i] += 1;
            }
        }
    }
    Ok(ads
        .iter()
        .map(|ad| {
            let c = counts.get(&ad.id).copied().unwrap_or_default();
            std::iter::once(ad.name.clone()).chain(c.iter().map(|n| n.to_string())).collect()
        })
        .collect())
}

/// A device's row in an advertisement's device list, if it has an action of it (in `state`).
fn of_advertisement(
    store: &dyn Storage,
    ad: &crate::model::Advertisement,
    state: Option<&str>,
    d: &Device,
) -> Result<Rows> {
    let Some(a) = store.actions_of_device(d.id)?.into_iter().find(|a| a.advertisement_id == ad.id)
    else {
        return Ok(Vec::new());
    };
    let st = state_of(&a).unwrap_or("targeted");
    let wanted = match state {
        None | Some("targeted") => true,
        Some("received") => state_of(&a).is_some(),
        Some(s) => s == st,
    };
    if !wanted {
        return Ok(Vec::new());
    }
    Ok(vec![vec![
        d.controller_id.clone(),
        d.tenant.clone(),
        st.to_string(),
        a.status.as_str().to_string(),
        a.last_code.map(|m| m.to_string()).unwrap_or_default(),
        when(Some(a.updated)),
    ]])
}

/// An advertisement's progress over time (the console plots it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// When it started (Unix seconds).
    pub start: i64,
    /// The devices it reached.
    pub targeted: usize,
    /// For each moment a device finished: the devices that had succeeded and failed by then,
    /// oldest first.
    pub points: Vec<(i64, usize, usize)>,
}

/// The progress of `advertisement` (id or name).
pub fn progress(store: &dyn Storage, advertisement: &str) -> Result<Progress> {
    use dm_shared::ddi::Finished;
    let ad = crate::admin::find_advertisement(store, advertisement)?;
    let actions: Vec<_> =
        store.actions()?.into_iter().filter(|a| a.advertisement_id == ad.id).collect();
    let mut ends: Vec<(i64, bool)> = Vec::new();
    for a in &actions {
        let end = store
            .statuses_for_action(a.id)?
            .into_iter()
            .filter_map(|s| match s.finished {
                Some(Finished::Success) => Some((s.received, true)),
                Some(Finished::Failure) => Some((s.received, false)),
                _ => None,
            })
            .next_back();
        ends.extend(end);
    }
    ends.sort();
    let (mut ok, mut failed) = (0, 0);
    let points = ends
        .into_iter()
        .map(|(t, success)| {
            if success {
                ok += 1
            } else {
                failed += 1
            }
            (t, ok, failed)
        })
        .collect();
    Ok(Progress { start: ad.start_time, targeted: actions.len(), points })
}

fn tethered(d: &Device) -> Option<Vec<String>> {
    (d.attr(key::TETHERED) == Some("yes")).then(|| {
        vec![
            d.controller_id.clone(),
            d.attr(key::TETHERED_DEVICES).unwrap_or("").to_string(),
            d.attr(key::TETHERED_LAST).unwrap_or("").to_string(),
        ]
    })
}

/// Whether a status record is an installer's or setup's result (a client deployment's).
fn is_deployment(s: &StatusRecord) -> bool {
    let from = s.component.as_deref().unwrap_or("");
    from.contains("DMInstaller") || from.contains("DMClientSetup") || s.message_id == Some(11021)
}

fn code_of(s: &StatusRecord) -> StatusCode {
    s.hresult.as_deref().and_then(StatusCode::parse_hex).unwrap_or(StatusCode::S_OK)
}

/// A device's installer and setup results, oldest first.
fn deployment_statuses(store: &dyn Storage, d: &Device) -> Result<Vec<StatusRecord>> {
    Ok(store.statuses_for_device(d.id)?.into_iter().filter(is_deployment).collect())
}

fn text_of(s: &StatusRecord) -> String {
    s.details.first().cloned().unwrap_or_default().chars().take(300).collect()
}

fn details(store: &dyn Storage, d: &Device) -> Result<Rows> {
    Ok(deployment_statuses(store, d)?
        .into_iter()
        .map(|s| {
            vec![
                d.controller_id.clone(),
                when(Some(s.received)),
                s.component.clone().unwrap_or_else(|| "DMSvc".into()),
                s.message_id.map(|m| m.to_string()).unwrap_or_default(),
                code_of(&s).hex(),
                text_of(&s),
                s.details.iter().skip(1).take(5).cloned().collect::<Vec<_>>().join(" | "),
            ]
        })
        .collect())
}

fn details_of_one(store: &dyn Storage, o: &Options) -> Result<Rows> {
    let d = crate::admin::find_device(store, o.device.as_deref().unwrap_or(""))?;
    details(store, &d)
}

/// Device names a failure row lists before it only counts (the count links to them all).
const NAMED: usize = 20;

fn failures(store: &dyn Storage) -> Result<Rows> {
    let mut by_code: BTreeMap<u32, (usize, Vec<String>)> = BTreeMap::new();
    each_device(store, &mut |d| {
        let mut codes: Vec<u32> = deployment_statuses(store, &d)?
            .iter()
            .map(code_of)
            .filter(|c| c.is_failure())
            .map(|c| c.0)
            .collect();
        codes.sort_unstable();
        codes.dedup();
        for code in codes {
            let (n, names) = by_code.entry(code).or_default();
            *n += 1;
            if names.len() < NAMED {
                names.push(d.controller_id.clone());
            } else if names.len() == NAMED {
                names.push("…".into());
            }
        }
        Ok(())
    })?;
    Ok(by_code
        .into_iter()
        .map(|(code, (n, names))| {
            let c = StatusCode(code);
            vec![
                c.hex(),
                c.name().to_string(),
                c.text().to_string(),
                n.to_string(),
                names.join(" "),
            ]
        })
        .collect())
}

fn success(store: &dyn Storage, d: &Device) -> Result<Rows> {
    let last = deployment_statuses(store, d)?.into_iter().max_by_key(|s| s.received);
    Ok(last
        .filter(|s| !code_of(s).is_failure())
        .map(|s| {
            vec![
                d.controller_id.clone(),
                d.attr(key::CLIENT_VERSION).unwrap_or("").to_string(),
                when(Some(s.received)),
                s.message_id.map(|m| m.to_string()).unwrap_or_default(),
                text_of(&s),
            ]
        })
        .into_iter()
        .collect())
}

/// What a device's health is judged with: the thresholds, the refused certificates and when.
struct Judge {
    revoked: std::collections::HashSet<String>,
    thresholds: Thresholds,
    now: i64,
}

impl Judge {
    fn new(store: &dyn Storage, cfg: &Config, now: i64) -> Result<Judge> {
        let revoked = store.revoked_certificates()?.into_iter().collect();
        Ok(Judge { revoked, thresholds: thresholds(cfg), now })
    }

    fn verdict(&self, d: &Device) -> Verdict {
        let here = d.cert_sha256.as_ref().is_some_and(|c| self.revoked.contains(c));
        health::judge(d, self.now, self.thresholds, here)
    }
}

fn summary(store: &dyn Storage, cfg: &Config, now: i64) -> Result<Rows> {
    let judge = Judge::new(store, cfg, now)?;
    let mut n = [0usize; 6];
    each_device(store, &mut |d| {
        let v = judge.verdict(&d);
        let has = |c: Cause| v.causes.iter().any(|(x, _)| *x == c);
        n[0] += 1;
        n[if v.healthy() { 1 } else { 2 }] += 1;
        n[3] += usize::from(has(Cause::Certificate));
        n[4] += usize::from(has(Cause::Communication));
        n[5] += usize::from(has(Cause::Local));
        Ok(())
    })?;
    let labels = [
        "devices",
        "healthy",
        "unhealthy",
        "unhealthy: certificate",
        "unhealthy: communication",
        "unhealthy: local",
    ];
    Ok(labels.iter().zip(n).map(|(l, n)| vec![l.to_string(), n.to_string()]).collect())
}

/// Which devices a health list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Healthy,
    Unhealthy,
    Cause(Cause),
}

/// A device's row in a health list, with the reasons of the cause it is listed for.
fn by_health(judge: &Judge, wanted: Wanted, d: &Device) -> Option<Vec<String>> {
    let v = judge.verdict(d);
    let listed = match wanted {
        Wanted::Healthy => v.healthy(),
        Wanted::Unhealthy => !v.healthy(),
        Wanted::Cause(c) => v.causes.iter().any(|(x, _)| *x == c),
    };
    if !listed {
        return None;
    }
    let reasons: Vec<String> = v
        .causes
        .iter()
        .filter(|(c, _)| !matches!(wanted, Wanted::Cause(w) if w != *c))
        .map(|(_, r)| r.clone())
        .collect();
    Some(vec![
        d.controller_id.clone(),
        d.tenant.clone(),
        d.attr(key::CLIENT_VERSION).unwrap_or("").to_string(),
        when(d.last_seen),
        v.label(),
        reasons.join("; "),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_never_run_as_formulas() {
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("+1"), "'+1");
        assert_eq!(csv_cell("-1"), "'-1");
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("plain"), "plain");
        // A device's escape sequence and newline reach no terminal the CSV is printed on.
        assert_eq!(csv_cell("done\x1b[2J\nforged"), "done\\x1b[2J\\nforged");
        let r = Report {
            name: "deployment-details",
            title: "t",
            columns: vec!["device", "details"],
            rows: vec![vec!["dev-1".into(), "ok\x1b]0;owned\x07\nforged".into()]],
            next: None,
        };
        assert!(r.text().contains("ok\\x1b]0;owned\\x07\\nforged"), "{:?}", r.text());
        assert!(!r.text().contains('\x1b') && !r.csv().contains('\x1b'));
        let r = Report {
            name: "healthy",
            title: "t",
            columns: vec!["device", "why"],
            rows: vec![vec!["=cmd|' /C calc'!A0".into(), "x".into()]],
            next: None,
        };
        assert_eq!(r.csv(), "device,why\r\n'=cmd|' /C calc'!A0,x\r\n");
        assert_eq!(r.json()["rows"][0]["device"], "=cmd|' /C calc'!A0");
    }
}
