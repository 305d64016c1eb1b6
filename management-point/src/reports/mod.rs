//! The source documents' reports for client installation (docs/health.md): built from the
//! store as rows, the same rows printed as text, CSV (cells a spreadsheet would run as a
//! formula neutralised) or JSON. `dmmp report NAME` prints them.

pub mod health;

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

/// Every report: its name (for `dmmp report NAME`) and title (the source documents').
pub const REPORTS: [(&str, &str); 10] = [
    ("distribution-status", "Software distribution status for the client install program"),
    ("tethered-desktops", "Desktop clients reporting tethered devices"),
    ("deployment-details", "Device client agent deployment status details"),
    ("deployment-failures", "Device client agent deployment failure report"),
    ("deployment-successes", "Device client agent deployment success report"),
    ("health-summary", "Device client agent health summary"),
    ("healthy", "Devices in healthy condition"),
    ("unhealthy-certificate", "Devices unhealthy due to certificate issues"),
    ("unhealthy-communication", "Devices unhealthy due to communication issues"),
    ("unhealthy-local", "Devices unhealthy due to local client issues"),
];

/// What narrows a report.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// One advertisement (distribution status).
    pub advertisement: Option<String>,
    /// One device (deployment details).
    pub device: Option<String>,
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
        json!({"report": self.name, "title": self.title, "columns": self.columns, "rows": rows})
    }
}

/// One CSV cell: neutralised, then quoted when it must be.
pub fn csv_cell(c: &str) -> String {
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

/// Builds report `name` at `now` (Unix seconds).
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
    let (columns, rows) = match name {
        "distribution-status" => distribution(store, o)?,
        "tethered-desktops" => tethered(store)?,
        "deployment-details" => details(store, o)?,
        "deployment-failures" => failures(store)?,
        "deployment-successes" => successes(store)?,
        "health-summary" => summary(store, cfg, now)?,
        other => devices_by_health(store, cfg, now, other)?,
    };
    Ok(Report { name, title, columns, rows })
}

type Rows = (Vec<&'static str>, Vec<Vec<String>>);

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
    let actions = store.actions()?;
    let mut rows = Vec::new();
    for ad in ads {
        let mine: Vec<_> = actions.iter().filter(|a| a.advertisement_id == ad.id).collect();
        let count = |f: &dyn Fn(&crate::model::Action) -> bool| {
            mine.iter().filter(|a| f(a)).count().to_string()
        };
        use ActionStatus as S;
        let downloading =
            |a: &crate::model::Action| a.status == S::Running && a.last_code == Some(10002);
        rows.push(vec![
            ad.name.clone(),
            mine.len().to_string(),
            count(&|a| !matches!(a.status, S::Waiting | S::Scheduled | S::Canceled | S::Canceling)),
            count(&downloading),
            count(&|a| a.status == S::Running && !downloading(a)),
            count(&|a| a.status == S::Finished),
            count(&|a| a.status == S::Error),
        ]);
    }
    let columns = vec![
        "advertisement",
        "targeted",
        "received",
        "downloading",
        "running",
        "succeeded",
        "failed",
    ];
    Ok((columns, rows))
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

fn tethered(store: &dyn Storage) -> Result<Rows> {
    let rows = store
        .devices()?
        .into_iter()
        .filter(|d| d.attr(key::TETHERED) == Some("yes"))
        .map(|d| {
            vec![
                d.controller_id.clone(),
                d.attr(key::TETHERED_DEVICES).unwrap_or("").to_string(),
                d.attr(key::TETHERED_LAST).unwrap_or("").to_string(),
            ]
        })
        .collect();
    Ok((vec!["desktop", "tethered devices", "last install"], rows))
}

/// Whether a status record is an installer's or setup's result (a client deployment's).
fn is_deployment(s: &StatusRecord) -> bool {
    let from = s.component.as_deref().unwrap_or("");
    from.contains("DMInstaller") || from.contains("DMClientSetup") || s.message_id == Some(11021)
}

fn code_of(s: &StatusRecord) -> StatusCode {
    s.hresult.as_deref().and_then(StatusCode::parse_hex).unwrap_or(StatusCode::S_OK)
}

fn deployment_statuses(
    store: &dyn Storage,
    only: Option<&Device>,
) -> Result<Vec<(Device, StatusRecord)>> {
    let devices = match only {
        Some(d) => vec![d.clone()],
        None => store.devices()?,
    };
    let mut out = Vec::new();
    for d in devices {
        for s in store.statuses_for_device(d.id)?.into_iter().filter(is_deployment) {
            out.push((d.clone(), s));
        }
    }
    Ok(out)
}

fn text_of(s: &StatusRecord) -> String {
    s.details.first().cloned().unwrap_or_default().chars().take(300).collect()
}

fn details(store: &dyn Storage, o: &Options) -> Result<Rows> {
    let only = o.device.as_deref().map(|d| crate::admin::find_device(store, d)).transpose()?;
    let rows = deployment_statuses(store, only.as_ref())?
        .into_iter()
        .map(|(d, s)| {
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
        .collect();
    Ok((vec!["device", "time", "component", "message", "code", "text", "log excerpt"], rows))
}

fn failures(store: &dyn Storage) -> Result<Rows> {
    let mut by_code: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (d, s) in deployment_statuses(store, None)? {
        let code = code_of(&s);
        if code.is_failure() {
            let devices = by_code.entry(code.0).or_default();
            if !devices.contains(&d.controller_id) {
                devices.push(d.controller_id.clone());
            }
        }
    }
    let rows = by_code
        .into_iter()
        .map(|(code, devices)| {
            let c = StatusCode(code);
            vec![
                c.hex(),
                c.name().to_string(),
                c.text().to_string(),
                devices.len().to_string(),
                devices.join(" "),
            ]
        })
        .collect();
    Ok((vec!["code", "name", "meaning", "devices", "which"], rows))
}

fn successes(store: &dyn Storage) -> Result<Rows> {
    let mut last: BTreeMap<i64, (Device, StatusRecord)> = BTreeMap::new();
    for (d, s) in deployment_statuses(store, None)? {
        if last.get(&d.id).is_none_or(|(_, p)| p.received <= s.received) {
            last.insert(d.id, (d, s));
        }
    }
    let rows = last
        .into_values()
        .filter(|(_, s)| !code_of(s).is_failure())
        .map(|(d, s)| {
            vec![
                d.controller_id.clone(),
                d.attr(key::CLIENT_VERSION).unwrap_or("").to_string(),
                when(Some(s.received)),
                s.message_id.map(|m| m.to_string()).unwrap_or_default(),
                text_of(&s),
            ]
        })
        .collect();
    Ok((vec!["device", "client version", "time", "message", "text"], rows))
}

/// Every device with its verdict.
fn verdicts(store: &dyn Storage, cfg: &Config, now: i64) -> Result<Vec<(Device, Verdict)>> {
    let revoked = store.revoked_certificates()?;
    let t = thresholds(cfg);
    let mut devices = store.devices()?;
    devices.sort_by(|a, b| (&a.tenant, &a.controller_id).cmp(&(&b.tenant, &b.controller_id)));
    Ok(devices
        .into_iter()
        .map(|d| {
            let here = d.cert_sha256.as_ref().is_some_and(|c| revoked.contains(c));
            let v = health::judge(&d, now, t, here);
            (d, v)
        })
        .collect())
}

fn summary(store: &dyn Storage, cfg: &Config, now: i64) -> Result<Rows> {
    let all = verdicts(store, cfg, now)?;
    let count = |f: &dyn Fn(&Verdict) -> bool| all.iter().filter(|(_, v)| f(v)).count().to_string();
    let has = |c: Cause| move |v: &Verdict| v.causes.iter().any(|(x, _)| *x == c);
    let rows = vec![
        vec!["devices".into(), all.len().to_string()],
        vec!["healthy".into(), count(&|v| v.healthy())],
        vec!["unhealthy".into(), count(&|v| !v.healthy())],
        vec!["unhealthy: certificate".into(), count(&has(Cause::Certificate))],
        vec!["unhealthy: communication".into(), count(&has(Cause::Communication))],
        vec!["unhealthy: local".into(), count(&has(Cause::Local))],
    ];
    Ok((vec!["state", "devices"], rows))
}

fn devices_by_health(store: &dyn Storage, cfg: &Config, now: i64, name: &str) -> Result<Rows> {
    let wanted = match name {
        "unhealthy-certificate" => Some(Cause::Certificate),
        "unhealthy-communication" => Some(Cause::Communication),
        "unhealthy-local" => Some(Cause::Local),
        _ => None,
    };
    let rows = verdicts(store, cfg, now)?
        .into_iter()
        .filter(|(_, v)| match wanted {
            None => v.healthy(),
            Some(c) => v.causes.iter().any(|(x, _)| *x == c),
        })
        .map(|(d, v)| {
            let reasons: Vec<String> = v
                .causes
                .iter()
                .filter(|(c, _)| wanted.is_none_or(|w| w == *c))
                .map(|(_, r)| r.clone())
                .collect();
            vec![
                d.controller_id.clone(),
                d.tenant.clone(),
                d.attr(key::CLIENT_VERSION).unwrap_or("").to_string(),
                when(d.last_seen),
                v.label(),
                reasons.join("; "),
            ]
        })
        .collect();
    Ok((vec!["device", "tenant", "client version", "last poll", "health", "why"], rows))
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
        let r = Report {
            name: "healthy",
            title: "t",
            columns: vec!["device", "why"],
            rows: vec![vec!["=cmd|' /C calc'!A0".into(), "x".into()]],
        };
        assert_eq!(r.csv(), "device,why\r\n'=cmd|' /C calc'!A0,x\r\n");
        assert_eq!(r.json()["rows"][0]["device"], "=cmd|' /C calc'!A0");
    }
}
