//! The web console (docs/console.md): the client installation reports as server-rendered
//! HTML (no scripts, no external fonts or styles), CSV and JSON at the same URLs, behind an
//! administrator's session. Device credentials never open it: only the session cookie does.
//!
//! - `GET /console/login`, `POST /console/login` (form `name`, `password`; five failures a
//!   minute from one address are answered 429, each failure logged), `POST /console/logout`;
//! - `GET /console/` the reports, `GET /console/reports/{name}?format=csv|json&sort=&dir=&filter=`,
//!   `GET /console/devices/{tenant}/{cid}` a device, `GET /console/search?q=` devices by
//!   controller id or attribute.
//!
//! Sessions live in memory (`Secure`, `HttpOnly`, `SameSite=Strict`, eight hours); every value
//! a device sent is escaped.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::ConnInfo;
use super::state::AppState;
use crate::reports::{self, REPORTS, Report};

/// How long a session lasts.
const SESSION_SECS: i64 = 8 * 3600;

/// Failed logins from one address in a minute before it is answered 429.
const MAX_FAILURES: usize = 5;

/// The session cookie's name.
const COOKIE: &str = "dm_console";

/// Sessions and failed logins, in memory.
#[derive(Debug, Default)]
pub struct Console {
    sessions: Mutex<HashMap<String, (String, i64)>>,
    failures: Mutex<HashMap<IpAddr, VecDeque<i64>>>,
}

/// A new password hash: Argon2id with a random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| "no randomness for a salt".to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the PHC string `hash`.
pub fn password_matches(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

fn token() -> Option<String> {
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).ok()?;
    Some(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Escapes text for a URL query or path segment.
fn url(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn page(title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · dmmp</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:.25em .5em;text-align:left}}th a{{color:inherit}}</style>\
         </head><body><nav><a href=\"/console/\">reports</a> · \
         <form method=\"get\" action=\"/console/search\" style=\"display:inline\">\
         <input name=\"q\" placeholder=\"controller id or attribute\"> <button>search</button></form> · \
         <form method=\"post\" action=\"/console/logout\" style=\"display:inline\"><button>log out</button></form>\
         </nav><h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    );
    let mut r = (StatusCode::OK, html).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    secure_headers(&mut r);
    r
}

fn secure_headers(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn login_page(status: StatusCode, message: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>log in · dmmp</title></head>\
         <body><h1>dmmp console</h1><p>{}</p><form method=\"post\" action=\"/console/login\">\
         <label>name <input name=\"name\" autocomplete=\"username\"></label> \
         <label>password <input name=\"password\" type=\"password\" autocomplete=\"current-password\"></label> \
         <button>log in</button></form></body></html>",
        esc(message)
    );
    let mut r = (status, html).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    secure_headers(&mut r);
    r
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn peer(parts: &axum::http::Extensions) -> IpAddr {
    parts.get::<ConnInfo>().map_or(IpAddr::from([0, 0, 0, 0]), |c| c.peer.ip())
}

/// The session token the request carries, if any.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().find_map(|v| {
        v.to_str()
            .ok()?
            .split(';')
            .find_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")).map(str::to_string))
    })
}

/// The administrator of the request's session, if it has a live one.
fn session(st: &AppState, headers: &HeaderMap) -> Option<String> {
    let now = st.now();
    let cookie = cookie_token(headers)?;
    let mut sessions = st.console.sessions.lock().unwrap_or_else(|p| p.into_inner());
    sessions.retain(|_, (_, exp)| *exp > now);
    sessions.get(&cookie).map(|(name, _)| name.clone())
}

/// `GET /console/login`.
pub async fn login_form() -> Response {
    login_page(StatusCode::OK, "Log in as an administrator (dmmp admin add).")
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
struct LoginForm {
    name: String,
    password: String,
}

fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_form(body: &[u8]) -> Option<LoginForm> {
    let text = std::str::from_utf8(body).ok()?;
    let mut name = None;
    let mut password = None;
    for pair in text.split('&') {
        let (k, v) = pair.split_once('=')?;
        match k {
            "name" => name = Some(form_decode(v)),
            "password" => password = Some(form_decode(v)),
            _ => {}
        }
    }
    Some(LoginForm { name: name?, password: password? })
}

/// `POST /console/login`.
pub async fn login(State(st): State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    let ip = peer(req.extensions());
    let body = match axum::body::to_bytes(req.into_body(), 16 * 1024).await {
        Ok(b) => b,
        Err(_) => return login_page(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large."),
    };
    let now = st.now();
    {
        let mut f = st.console.failures.lock().unwrap_or_else(|p| p.into_inner());
        let recent = f.entry(ip).or_default();
        recent.retain(|t| now - *t < 60);
        if recent.len() >= MAX_FAILURES {
            log::warn!(
                "console login from {ip} refused: {} failures in the last minute",
                recent.len()
            );
            let mut r = login_page(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed logins: try again in a minute.",
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            return r;
        }
    }
    let Some(form) = parse_form(&body) else {
        return login_page(StatusCode::BAD_REQUEST, "Give a name and a password.");
    };
    let st2 = st.clone();
    let name = form.name.clone();
    let ok = tokio::task::spawn_blocking(move || {
        let hash = st2.store.administrator_hash(&name).ok().flatten();
        // A name that does not exist costs a hash check too, so timing does not tell.
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let dummy =
            DUMMY.get_or_init(|| hash_password("no such administrator").unwrap_or_default());
        password_matches(hash.as_deref().unwrap_or(dummy), &form.password) && hash.is_some()
    })
    .await
    .unwrap_or(false);
    if !ok {
        log::warn!(
            "console login failed for {:?} from {ip}",
            form.name.chars().take(64).collect::<String>()
        );
        let mut f = st.console.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.entry(ip).or_default().push_back(now);
        return login_page(StatusCode::UNAUTHORIZED, "The name or the password is wrong.");
    }
    let Some(t) = token() else {
        return login_page(StatusCode::INTERNAL_SERVER_ERROR, "No randomness for a session.");
    };
    log::info!("console login: {} from {ip}", form.name);
    st.console
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(t.clone(), (form.name.clone(), now + SESSION_SECS));
    let mut r = redirect("/console/");
    let cookie = format!(
        "{COOKIE}={t}; Path=/console; Secure; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}"
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /console/logout`.
pub async fn logout(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(t) = cookie_token(&headers) {
        st.console.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&t);
    }
    let mut r = redirect("/console/login");
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "dm_console=; Path=/console; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    r
}

/// `GET /console/`.
pub async fn index(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if session(&st, &headers).is_none() {
        return redirect("/console/login");
    }
    let mut body = String::from("<ul>");
    for (name, title) in REPORTS {
        body.push_str(&format!("<li><a href=\"/console/reports/{name}\">{}</a></li>", esc(title)));
    }
    body.push_str("</ul>");
    page("Client installation reports", &body)
}

/// A report's query.
#[derive(Debug, Default, Deserialize)]
pub struct ReportQuery {
    format: Option<String>,
    sort: Option<String>,
    dir: Option<String>,
    filter: Option<String>,
    advertisement: Option<String>,
    device: Option<String>,
}

/// Sorts (numbers as numbers) and filters a report's rows as asked.
fn arrange(r: &mut Report, q: &ReportQuery) {
    if let Some(f) = q.filter.as_deref().map(str::to_lowercase).filter(|f| !f.is_empty()) {
        r.rows.retain(|row| row.iter().any(|c| c.to_lowercase().contains(&f)));
    }
    if let Some(i) = q.sort.as_deref().and_then(|s| r.columns.iter().position(|c| *c == s)) {
        r.rows.sort_by(|a, b| match (a[i].parse::<f64>(), b[i].parse::<f64>()) {
            (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
            _ => a[i].cmp(&b[i]),
        });
        if q.dir.as_deref() == Some("desc") {
            r.rows.reverse();
        }
    }
}

/// The link a cell leads to: a device's page, or the devices behind a summary number.
fn link(
    report: &str,
    column: &str,
    row: &[String],
    columns: &[&str],
    cell: &str,
) -> Option<String> {
    let tenant = columns.iter().position(|c| *c == "tenant").map_or("DEFAULT", |i| row[i].as_str());
    match column {
        "device" | "desktop" => Some(format!("/console/devices/{}/{}", url(tenant), url(cell))),
        "devices" if report == "health-summary" => {
            let state = row.first().map_or("", String::as_str);
            let target = match state {
                "healthy" => "healthy",
                "unhealthy: certificate" => "unhealthy-certificate",
                "unhealthy: communication" => "unhealthy-communication",
                "unhealthy: local" => "unhealthy-local",
                _ => return None,
            };
            Some(format!("/console/reports/{target}"))
        }
        "devices" if report == "deployment-failures" => {
            let code = row.first().map_or("", String::as_str);
            Some(format!("/console/reports/deployment-details?filter={}", url(code)))
        }
        _ => None,
    }
}

fn render(r: &Report, q: &ReportQuery) -> String {
    let keep = |extra: &str| {
        let mut s = String::new();
        for (k, v) in
            [("filter", &q.filter), ("advertisement", &q.advertisement), ("device", &q.device)]
        {
            if let Some(v) = v {
                s.push_str(&format!("&{k}={}", url(v)));
            }
        }
        format!("?{extra}{s}")
    };
    let mut h = format!(
        "<form method=\"get\"><input name=\"filter\" value=\"{}\" placeholder=\"filter\"> <button>filter</button></form>\
         <p>{} rows · <a href=\"{}\">CSV</a> · <a href=\"{}\">JSON</a></p><table><thead><tr>",
        esc(q.filter.as_deref().unwrap_or("")),
        r.rows.len(),
        esc(&keep("format=csv")),
        esc(&keep("format=json")),
    );
    for c in &r.columns {
        let dir = if q.sort.as_deref() == Some(c) && q.dir.as_deref() != Some("desc") {
            "desc"
        } else {
            "asc"
        };
        h.push_str(&format!(
            "<th><a href=\"{}\">{}</a></th>",
            esc(&keep(&format!("sort={}&dir={dir}", url(c)))),
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
    h
}

/// A plot of an advertisement's progress, drawn on the server: the devices targeted (a dashed
/// line), and those that succeeded and failed by each moment, from its start until `now`.
pub fn plot(start: i64, now: i64, targeted: usize, points: &[(i64, usize, usize)]) -> String {
    let (w, h, pad) = (600.0_f64, 200.0_f64, 30.0_f64);
    let span = (now - start).max(1) as f64;
    let top = targeted.max(1) as f64;
    let x = |t: i64| pad + (w - 2.0 * pad) * ((t - start).max(0) as f64 / span).min(1.0);
    let y = |n: usize| h - pad - (h - 2.0 * pad) * (n as f64 / top);
    let line = |pick: &dyn Fn(&(i64, usize, usize)) -> usize| {
        let mut pts = vec![format!("{:.1},{:.1}", x(start), y(0))];
        let mut last = 0;
        for p in points {
            pts.push(format!("{:.1},{:.1}", x(p.0), y(last)));
            last = pick(p);
            pts.push(format!("{:.1},{:.1}", x(p.0), y(last)));
        }
        pts.push(format!("{:.1},{:.1}", x(now), y(last)));
        pts.join(" ")
    };
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" \
         aria-label=\"progress over time\"><rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"white\"/>\
         <line x1=\"{pad}\" y1=\"{ty:.1}\" x2=\"{x2}\" y2=\"{ty:.1}\" stroke=\"gray\" stroke-dasharray=\"4\"/>\
         <polyline fill=\"none\" stroke=\"green\" stroke-width=\"2\" points=\"{ok}\"/>\
         <polyline fill=\"none\" stroke=\"red\" stroke-width=\"2\" points=\"{bad}\"/>\
         <text x=\"{pad}\" y=\"15\" font-size=\"12\">targeted {targeted} · succeeded (green) · failed (red)</text></svg>",
        ty = y(targeted),
        x2 = w - pad,
        ok = line(&|p| p.1),
        bad = line(&|p| p.2),
    )
}

/// `GET /console/reports/{name}`.
pub async fn report(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<ReportQuery>,
) -> Response {
    if session(&st, &headers).is_none() {
        return redirect("/console/login");
    }
    let opts =
        reports::Options { advertisement: q.advertisement.clone(), device: q.device.clone() };
    let st2 = st.clone();
    let built = tokio::task::spawn_blocking(move || {
        reports::build(st2.store.as_ref(), &st2.config, &name, st2.now(), &opts)
    })
    .await;
    let mut r = match built {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return page("Not found", &format!("<p>{}</p>", esc(&e.to_string()))),
        Err(e) => return page("Error", &format!("<p>{}</p>", esc(&e.to_string()))),
    };
    arrange(&mut r, &q);
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
                let svg = plot(p.start, now, p.targeted, &p.points);
                out.push_str(&format!("<h2>{}</h2>{svg}", esc(&name)));
            }
        }
        out
    })
    .await
    .unwrap_or_default()
}

/// `GET /console/devices/{tenant}/{cid}`.
pub async fn device(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, cid)): Path<(String, String)>,
) -> Response {
    if session(&st, &headers).is_none() {
        return redirect("/console/login");
    }
    let st2 = st.clone();
    let found = tokio::task::spawn_blocking(move || {
        let d = st2.store.device(&tenant, &cid).ok().flatten()?;
        let history = st2.store.statuses_for_device(d.id).unwrap_or_default();
        let revoked = st2.store.revoked_certificates().unwrap_or_default();
        let here = d.cert_sha256.as_ref().is_some_and(|c| revoked.contains(c));
        let v = reports::health::judge(&d, st2.now(), reports::thresholds(&st2.config), here);
        Some((d, history, v))
    })
    .await
    .ok()
    .flatten();
    let Some((d, history, v)) = found else {
        return page("Not found", "<p>No such device.</p>");
    };
    let mut h = format!(
        "<p>tenant {} · last poll {} · health <b>{}</b> {}</p><h2>Inventory</h2><table>",
        esc(&d.tenant),
        esc(&crate::admin::when(d.last_seen)),
        esc(&v.label()),
        esc(&v.reasons())
    );
    for (k, val) in &d.attributes {
        h.push_str(&format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(val)));
    }
    h.push_str("</table><h2>Status history</h2><table><tr><th>time</th><th>from</th><th>message</th><th>code</th><th>text</th></tr>");
    for s in history.iter().rev().take(200) {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&crate::admin::when(Some(s.received))),
            esc(s.component.as_deref().unwrap_or(&s.source)),
            s.message_id.map(|m| m.to_string()).unwrap_or_default(),
            esc(s.hresult.as_deref().unwrap_or("")),
            esc(&s.details.join(" | "))
        ));
    }
    h.push_str("</table>");
    page(&format!("Device {}", d.controller_id), &h)
}

/// `GET /console/search?q=`.
#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
}

/// `GET /console/search`.
pub async fn search(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<SearchQuery>,
) -> Response {
    if session(&st, &headers).is_none() {
        return redirect("/console/login");
    }
    let needle = q.q.unwrap_or_default().to_lowercase();
    let st2 = st.clone();
    let n2 = needle.clone();
    let hits = tokio::task::spawn_blocking(move || {
        st2.store
            .devices()
            .unwrap_or_default()
            .into_iter()
            .filter(|d| {
                !n2.is_empty()
                    && (d.controller_id.to_lowercase().contains(&n2)
                        || d.attributes.values().any(|v| v.to_lowercase().contains(&n2)))
            })
            .take(500)
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let mut h = format!("<p>{} devices match {}</p><ul>", hits.len(), esc(&format!("{needle:?}")));
    for d in hits {
        h.push_str(&format!(
            "<li><a href=\"/console/devices/{}/{}\">{}</a></li>",
            url(&d.tenant),
            url(&d.controller_id),
            esc(&d.controller_id)
        ));
    }
    h.push_str("</ul>");
    page("Search", &h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(password_matches(&h, "correct horse"));
        assert!(!password_matches(&h, "wrong"));
        assert!(!password_matches("not a hash", "x"));
    }

    #[test]
    fn the_plot_steps_up_with_each_device_that_finished() {
        let svg = plot(0, 100, 4, &[(50, 1, 0), (75, 1, 1)]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        // 600 wide, 30 padding: t=50 is x=300; 1 of 4 devices is y=170-35=135.
        assert!(svg.contains("300.0,170.0 300.0,135.0"), "{svg}");
        assert!(svg.contains("targeted 4"), "{svg}");
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        let empty = plot(10, 10, 0, &[]);
        assert!(!empty.contains("NaN") && !empty.contains("inf"), "{empty}");
    }

    #[test]
    fn html_and_forms() {
        assert_eq!(
            esc("<script>alert('x')</script>&"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;"
        );
        assert_eq!(form_decode("a+b%21%"), "a b!%");
        let f = parse_form(b"name=admin&password=p%40ss+word").unwrap();
        assert_eq!((f.name.as_str(), f.password.as_str()), ("admin", "p@ss word"));
        assert_eq!(url("a b/<"), "a%20b%2F%3C");
    }
}
