//! The console's pages: the reports (HTML, or CSV and JSON at the same URL), a device and a
//! search. Device lists come a page at a time ([`crate::reports::scan`]).
//!
//! - `GET /console/` the reports;
//! - `GET /console/reports/{name}?format=csv|json&sort=&dir=&filter=&limit=&after_tenant=&after=&offset=`;
//! - `GET /console/devices/{tenant}/{cid}` a device: inventory, actions, health, history;
//! - `GET /console/search?q=` devices by controller id or attribute value, a page at a time.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Admin, esc, page, secure_headers, url};
use crate::reports::{self, Next, Paging, REPORTS, Report, STATES};
use crate::server::state::AppState;

/// Rows on a page unless the request says otherwise.
const PAGE_ROWS: usize = 100;

/// The most rows a page may ask for.
const MAX_PAGE_ROWS: usize = 1000;

/// `GET /console/reports`: every report.
pub async fn reports_index(_: Admin) -> Response {
    let mut body = String::from("<ul class=\"reports\">");
    // Reports of one advertisement or one device are linked from where those are shown.
    let per_item = ["advertisement-devices", "device-updates"];
    for (name, title) in REPORTS.iter().filter(|(n, _)| !per_item.contains(n)) {
        body.push_str(&format!("<li><a href=\"/console/reports/{name}\">{}</a></li>", esc(title)));
    }
    body.push_str("</ul>");
    page("Client installation reports", &body)
}

/// `GET /console/`: the fleet at a glance, each chart leading to the devices behind it.
pub async fn index(
    Admin(who): Admin,
    State(st): State<Arc<AppState>>,
    req: axum::extract::Request,
) -> Response {
    let csrf = super::forms::csrf_field(&st, req.extensions());
    // Forms only for who may use them.
    let csrf = super::forms::role_of(&st, &who).allows(crate::api::Role::Operator).then_some(csrf);
    let st2 = st.clone();
    let built =
        tokio::task::spawn_blocking(move || super::overview::build(&st2, csrf.as_deref())).await;
    match built {
        Ok(Ok(body)) => page("Overview", &body),
        Ok(Err(e)) => page("Overview", &format!("<p>{}</p>", esc(&e.to_string()))),
        Err(e) => page("Overview", &format!("<p>{}</p>", esc(&e.to_string()))),
    }
}

/// The device a page starts after, from `after_tenant` (the default tenant when absent) and
/// `after`.
fn cursor(tenant: &Option<String>, after: &Option<String>) -> Option<(String, String)> {
    let tenant = || tenant.clone().unwrap_or_else(|| crate::config::DEFAULT_TENANT.into());
    after.clone().map(|c| (tenant(), c))
}

/// A report's query.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct ReportQuery {
    format: Option<String>,
    sort: Option<String>,
    dir: Option<String>,
    filter: Option<String>,
    advertisement: Option<String>,
    device: Option<String>,
    state: Option<String>,
    after_tenant: Option<String>,
    after: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

impl ReportQuery {
    /// The report options it asks for. A page holds [`PAGE_ROWS`] rows unless `limit` says
    /// otherwise; an export without a `limit` holds every row.
    pub(super) fn options(&self) -> reports::Options {
        let export = matches!(self.format.as_deref(), Some("csv" | "json"));
        let limit = match self.limit {
            Some(l) => Some(l.clamp(1, MAX_PAGE_ROWS)),
            None if export => None,
            None => Some(PAGE_ROWS),
        };
        let after = cursor(&self.after_tenant, &self.after);
        reports::Options {
            advertisement: self.advertisement.clone(),
            device: self.device.clone(),
            state: self.state.clone(),
            filter: self.filter.clone(),
            sort: self.sort.clone(),
            desc: self.dir.as_deref() == Some("desc"),
            page: Paging { after, offset: self.offset.unwrap_or(0), limit },
        }
    }

    /// This query as a URL query string with `extra` first and the paging left out.
    pub(super) fn keep(&self, extra: &str) -> String {
        let mut s = format!("?{extra}");
        for (k, v) in [
            ("filter", &self.filter),
            ("advertisement", &self.advertisement),
            ("device", &self.device),
            ("state", &self.state),
        ] {
            if let Some(v) = v {
                s.push_str(&format!("&{k}={}", url(v)));
            }
        }
        s
    }

    pub(super) fn sorting(&self) -> String {
        match &self.sort {
            Some(c) => format!("sort={}&dir={}&", url(c), self.dir.as_deref().unwrap_or("asc")),
            None => String::new(),
        }
    }
}

/// The link a cell leads to: a device's page, or the devices behind a number.
fn link(
    report: &str,
    column: &str,
    row: &[String],
    columns: &[&str],
    cell: &str,
) -> Option<String> {
    let tenant = columns
        .iter()
        .position(|c| *c == "tenant")
        .map_or(crate::config::DEFAULT_TENANT, |i| row[i].as_str());
    let first = row.first().map_or("", String::as_str);
    match (report, column) {
        (_, "device" | "desktop") => {
            Some(format!("/console/devices/{}/{}", url(tenant), url(cell)))
        }
        ("health-summary", "devices") => {
            let target = match first {
                "devices" => return Some("/console/search?q=".into()),
                "healthy" => "healthy",
                "unhealthy" => "unhealthy",
                "unhealthy: certificate" => "unhealthy-certificate",
                "unhealthy: communication" => "unhealthy-communication",
                "unhealthy: local" => "unhealthy-local",
                _ => return None,
            };
            Some(format!("/console/reports/{target}"))
        }
        ("deployment-failures", "devices") => {
            Some(format!("/console/reports/deployment-details?filter={}", url(first)))
        }
        ("distribution-status", state) if STATES.contains(&state) => Some(format!(
            "/console/reports/advertisement-devices?advertisement={}&state={state}",
            url(first)
        )),
        _ => None,
    }
}

/// The link to the next page, if there is one.
fn next_link(r: &Report, q: &ReportQuery) -> Option<String> {
    let limit = q.limit.map(|l| format!("&limit={l}")).unwrap_or_default();
    let at = match r.next.as_ref()? {
        Next::After(t, c) => format!("after_tenant={}&after={}", url(t), url(c)),
        Next::Offset(o) => format!("offset={o}"),
    };
    Some(q.keep(&format!("{}{at}{limit}", q.sorting())))
}

fn render(r: &Report, q: &ReportQuery) -> String {
    let mut h = format!(
        "<form method=\"get\"><input name=\"filter\" value=\"{}\" placeholder=\"filter\"> <button>filter</button></form>\
         <p>{} rows{} · <a href=\"{}\">CSV</a> · <a href=\"{}\">JSON</a></p><table><thead><tr>",
        esc(q.filter.as_deref().unwrap_or("")),
        r.rows.len(),
        if r.next.is_some() { " on this page" } else { "" },
        esc(&q.keep(&format!("{}format=csv", q.sorting()))),
        esc(&q.keep(&format!("{}format=json", q.sorting()))),
    );
    for c in &r.columns {
        let dir = if q.sort.as_deref() == Some(c) && q.dir.as_deref() != Some("desc") {
            "desc"
        } else {
            "asc"
        };
        h.push_str(&format!(
            "<th><a href=\"{}\">{}</a></th>",
            esc(&q.keep(&format!("sort={}&dir={dir}", url(c)))),
            esc(c)
        ));
    }
    h.push_str("</tr></thead><tbody>");
    for row in &r.rows {
        h.push_str("<tr>");
        for (c, cell) in r.columns.iter().zip(row) {
            match link(r.name, c, row, &r.columns, cell) {
                Some(to) => {
                    h.push_str(&format!("<td><a href=\"{}\">{}</a></td>", esc(&to), esc(cell)))
                }
                None => h.push_str(&format!("<td>{}</td>", esc(cell))),
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table>");
    let first = q.after.is_some() || q.offset.unwrap_or(0) > 0;
    let mut nav = Vec::new();
    if first {
        nav.push(format!("<a href=\"{}\">first page</a>", esc(&q.keep(&q.sorting()))));
    }
    if let Some(next) = next_link(r, q) {
        nav.push(format!("<a href=\"{}\" rel=\"next\">next page</a>", esc(&next)));
    }
    if !nav.is_empty() {
        h.push_str(&format!("<p>{}</p>", nav.join(" · ")));
    }
    h
}

/// `GET /console/reports/{name}`.
pub async fn report(
    _: Admin,
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<ReportQuery>,
) -> Response {
    let opts = q.options();
    let st2 = st.clone();
    let built = tokio::task::spawn_blocking(move || {
        reports::build(st2.store.as_ref(), &st2.config, &name, st2.now(), &opts)
    })
    .await;
    let r = match built {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return page("Not found", &format!("<p>{}</p>", esc(&e.to_string()))),
        Err(e) => return page("Error", &format!("<p>{}</p>", esc(&e.to_string()))),
    };
    match q.format.as_deref() {
        Some("csv") => {
            let mut resp = r.csv().into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
            if let Ok(v) =
                HeaderValue::from_str(&format!("attachment; filename=\"{}.csv\"", r.name))
            {
                resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            secure_headers(&mut resp);
            resp
        }
        Some("json") => {
            let mut resp = axum::Json(r.json()).into_response();
            secure_headers(&mut resp);
            resp
        }
        _ => {
            let mut body = render(&r, &q);
            if r.name == "distribution-status" {
                body.push_str(&plots(&st, &r).await);
            }
            page(r.title, &body)
        }
    }
}

/// A progress plot for each advertisement of a distribution status report.
async fn plots(st: &Arc<AppState>, r: &Report) -> String {
    let names: Vec<String> =
        r.rows.iter().filter_map(|row| row.first().cloned()).take(20).collect();
    let st2 = st.clone();
    tokio::task::spawn_blocking(move || {
        let now = st2.now();
        let mut out = String::new();
        for name in names {
            if let Ok(p) = reports::progress(st2.store.as_ref(), &name) {
                let svg = super::charts::plot(p.start, now, p.targeted, &p.points);
                out.push_str(&format!("<h2>{}</h2>{svg}", esc(&name)));
            }
        }
        out
    })
    .await
    .unwrap_or_default()
}

/// What the device page shows.
struct DevicePage {
    device: crate::model::Device,
    actions: Vec<(String, crate::model::Action)>,
    history: Vec<crate::model::StatusRecord>,
    verdict: reports::health::Verdict,
}

fn device_page(st: &AppState, tenant: &str, cid: &str) -> Option<DevicePage> {
    let device = st.store.device(tenant, cid).ok().flatten()?;
    let ads = st.store.advertisements().unwrap_or_default();
    let actions = st
        .store
        .actions_of_device(device.id)
        .unwrap_or_default()
        .into_iter()
        .map(|a| {
            let name = ads.iter().find(|ad| ad.id == a.advertisement_id);
            (name.map_or_else(|| a.advertisement_id.to_string(), |ad| ad.name.clone()), a)
        })
        .collect();
    let history = st.store.statuses_for_device(device.id).unwrap_or_default();
    let revoked = st.store.revoked_certificates().unwrap_or_default();
    let here = device.cert_sha256.as_ref().is_some_and(|c| revoked.contains(c));
    let verdict = reports::health::judge(&device, st.now(), reports::thresholds(&st.config), here);
    Some(DevicePage { device, actions, history, verdict })
}

/// `GET /console/devices/{tenant}/{cid}`.
pub async fn device(
    Admin(who): Admin,
    State(st): State<Arc<AppState>>,
    Path((tenant, cid)): Path<(String, String)>,
    req: axum::extract::Request,
) -> Response {
    let csrf = super::forms::csrf_field(&st, req.extensions());
    let may = super::forms::role_of(&st, &who).allows(crate::api::Role::Operator);
    let st2 = st.clone();
    let found =
        tokio::task::spawn_blocking(move || device_page(&st2, &tenant, &cid)).await.ok().flatten();
    let Some(DevicePage { device: d, actions, history, verdict: v }) = found else {
        return page("Not found", "<p>No such device.</p>");
    };
    let when = |t| esc(&crate::admin::when(t));
    let mut h = format!(
        "<p>tenant {} · last poll {} · health <b>{}</b> {}</p>",
        esc(&d.tenant),
        when(d.last_seen),
        esc(&v.label()),
        esc(&v.reasons())
    );
    if may && d.registered_by != "admin" {
        // A device that registered itself gets client deployments once approved.
        let me = format!("{}/{}", d.tenant, d.controller_id);
        h.push_str(&format!(
            "<form method=\"post\" action=\"/console/do/device-approve\">{csrf}\
             <input type=\"hidden\" name=\"device\" value=\"{}\">\
             <input type=\"hidden\" name=\"back\" value=\"/console/devices/{}/{}\">\
             <button>approve this device for client deployments</button></form>",
            esc(&me),
            url(&d.tenant),
            url(&d.controller_id)
        ));
    }
    h.push_str("<h2>Inventory</h2><table>");
    for (k, val) in &d.attributes {
        h.push_str(&format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(val)));
    }
    h.push_str(&format!(
        "</table><p><a href=\"/console/reports/device-updates?device={}/{}\">Software updates of this device</a></p><h2>Actions</h2><table><tr><th>advertisement</th><th>action</th><th>status</th><th>last message</th><th>last change</th></tr>",
        url(&d.tenant),
        url(&d.controller_id)
    ));
    for (ad, a) in &actions {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(ad),
            a.id,
            esc(a.status.as_str()),
            a.last_code.map(|m| m.to_string()).unwrap_or_default(),
            when(Some(a.updated))
        ));
    }
    h.push_str("</table><h2>Status history</h2><table><tr><th>time</th><th>from</th><th>message</th><th>code</th><th>text</th></tr>");
    for s in history.iter().rev().take(200) {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            when(Some(s.received)),
            esc(s.component.as_deref().unwrap_or(&s.source)),
            s.message_id.map(|m| m.to_string()).unwrap_or_default(),
            esc(s.hresult.as_deref().unwrap_or("")),
            esc(&s.details.join(" | "))
        ));
    }
    h.push_str("</table>");
    page(&format!("Device {}", d.controller_id), &h)
}

/// `GET /console/search?q=`: a page of devices whose controller id or an attribute value
/// contains `q` (any case); an empty `q` lists every device.
#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
    after_tenant: Option<String>,
    after: Option<String>,
}

/// `GET /console/search`.
pub async fn search(
    _: Admin,
    State(st): State<Arc<AppState>>,
    Query(q): Query<SearchQuery>,
) -> Response {
    let needle = q.q.clone().unwrap_or_default().to_lowercase();
    let paging =
        Paging { after: cursor(&q.after_tenant, &q.after), offset: 0, limit: Some(PAGE_ROWS) };
    let st2 = st.clone();
    let n2 = needle.clone();
    let found = tokio::task::spawn_blocking(move || {
        let mut rows_of = |d: &crate::model::Device| {
            let hit = d.controller_id.to_lowercase().contains(&n2)
                || d.attributes.values().any(|v| v.to_lowercase().contains(&n2));
            Ok(if hit { vec![vec![d.tenant.clone(), d.controller_id.clone()]] } else { vec![] })
        };
        reports::scan::page(st2.store.as_ref(), &paging, &Default::default(), &mut rows_of)
    })
    .await;
    let (hits, next) = match found {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return page("Error", &format!("<p>{}</p>", esc(&e.to_string()))),
        Err(e) => return page("Error", &format!("<p>{}</p>", esc(&e.to_string()))),
    };
    let mut h = format!(
        "<p>{} devices{} match {}</p><ul>",
        hits.len(),
        if next.is_some() { " on this page" } else { "" },
        esc(&format!("{needle:?}"))
    );
    for row in &hits {
        h.push_str(&format!(
            "<li><a href=\"/console/devices/{}/{}\">{}</a></li>",
            url(&row[0]),
            url(&row[1]),
            esc(&row[1])
        ));
    }
    h.push_str("</ul>");
    if let Some(Next::After(t, c)) = next {
        let to = format!("?q={}&after_tenant={}&after={}", url(&needle), url(&t), url(&c));
        h.push_str(&format!("<p><a href=\"{}\" rel=\"next\">next page</a></p>", esc(&to)));
    }
    page("Search", &h)
}

/// `GET /console/audit`: the audit trail of the last week, newest first, with each change's
/// object before and after.
pub async fn audit(_: Admin, State(st): State<Arc<AppState>>) -> Response {
    let st2 = st.clone();
    let since = st.now() - 7 * 86_400;
    let entries = tokio::task::spawn_blocking(move || st2.store.audit(since, 10_000)).await;
    let entries = match entries {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => return page("Audit trail", &format!("<p>{}</p>", esc(&e.to_string()))),
        Err(e) => return page("Audit trail", &format!("<p>{}</p>", esc(&e.to_string()))),
    };
    let mut h = String::from(
        "<p>Every change of the last week, whoever made it: through the console, the management API or <code>dmmp</code> (<code>dmmp audit</code>).</p>\
         <table><tr><th>when</th><th>who</th><th>from</th><th>what</th><th>on</th><th>before · after</th></tr>",
    );
    for e in entries.iter().rev() {
        let detail = |label: &str, v: &Option<String>| {
            v.as_ref().map_or(String::new(), |v| {
                format!("<details><summary>{label}</summary><code>{}</code></details>", esc(v))
            })
        };
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td></tr>",
            esc(&crate::admin::when(Some(e.time))),
            esc(&e.actor),
            esc(&e.source),
            esc(&e.action),
            esc(&e.target),
            detail("before", &e.before),
            detail("after", &e.after)
        ));
    }
    h.push_str("</table>");
    page("Audit trail", &h)
}
