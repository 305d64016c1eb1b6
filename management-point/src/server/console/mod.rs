//! The web console (docs/console.md): the client installation reports as server-rendered
//! HTML (no scripts, no external fonts or styles), CSV and JSON at the same URLs, behind an
//! administrator's session. Device credentials never open it: only the session cookie does.
//!
//! - `GET /console/login`, `POST /console/login` (form `name`, `password`; five failures a
//!   minute from one address are answered 429, each failure logged), `POST /console/logout`;
//! - the pages (`pages.rs`): the reports, a device, a search.
//!
//! An administrator is known by a session (in memory; `Secure`, `HttpOnly`, `SameSite=Strict`,
//! eight hours) or, with no password, by a client certificate pinned with `dmmp admin
//! certificate` presented in the TLS handshake. Every value a device sent is escaped.

pub mod charts;
pub mod forms;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod overview;
pub mod pages;
pub mod passwords;
pub mod rollouts;
pub mod sessions;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use self::passwords::{hash_password, password_fingerprint, password_matches};
use self::sessions::{MAX_FAILURES, SESSION_SECS, Session};
use super::conn_info::ConnInfo;
use super::state::AppState;
use crate::printable::printable;

/// The session cookie's name.
const COOKIE: &str = "dm_console";

fn token() -> crate::Result<String> {
    crate::random::hex(32, "a console session")
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
         <meta name=\"viewport\" content=\"width=device-width\">\
         <link rel=\"stylesheet\" href=\"/console/style.css\"></head><body><header><nav>\
         <a class=\"brand\" href=\"/console/\">dmmp</a>\
         <a href=\"/console/\">Overview</a><a href=\"/console/reports\">Reports</a>\
         <a href=\"/console/rollouts\">Rollouts</a><a href=\"/console/audit\">Audit</a>\
         <form class=\"inline search\" method=\"get\" action=\"/console/search\">\
         <input name=\"q\" placeholder=\"controller id or attribute\"> <button>search</button></form>\
         <form class=\"inline\" method=\"post\" action=\"/console/logout\"><button>log out</button></form>\
         </nav></header><main><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title)
    );
    let mut r = (StatusCode::OK, html).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    secure_headers(&mut r);
    r
}

/// The console's style sheet: its own, no external fonts, no scripts.
const STYLE: &str = include_str!("style.css");

/// `GET /console/style.css` (no login: the login page uses it too).
pub async fn style() -> Response {
    let mut r = (StatusCode::OK, STYLE).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    secure_headers(&mut r);
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
    r
}

fn secure_headers(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn login_page(status: StatusCode, message: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>log in · dmmp</title>\
         <link rel=\"stylesheet\" href=\"/console/style.css\"></head>\
         <body><main class=\"login\"><h1>dmmp console</h1><p>{}</p><form method=\"post\" action=\"/console/login\">\
         <label>name <input name=\"name\" autocomplete=\"username\"></label> \
         <label>password <input name=\"password\" type=\"password\" autocomplete=\"current-password\"></label> \
         <button>log in</button></form></main></body></html>",
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

/// The administrator of the request's session, if it has a live one: not expired, and their
/// password is still the one they logged in with (the view holds the current ones).
fn session(st: &AppState, headers: &HeaderMap) -> Option<String> {
    let now = st.now();
    let cookie = cookie_token(headers)?;
    let mut sessions = st.console.sessions.lock().unwrap_or_else(|p| p.into_inner());
    sessions.retain(|_, s| s.expires > now);
    let s = sessions.get(&cookie)?;
    if st.read().administrators.get(&s.name) == Some(&s.password) {
        return Some(s.name.clone());
    }
    log::info!(
        "console: a session of administrator {} ended: their password changed or they were removed",
        s.name
    );
    sessions.remove(&cookie);
    None
}

/// The administrator a console request is from: by its session, or by a pinned client
/// certificate. Anyone else is sent to the login page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin(pub String);

/// The credential an [`Admin`] was proved by (`session:…` or `certificate:…`), left in the
/// request's extensions: the forms' CSRF tokens are bound to it, never to another credential
/// the request also carries (a dead session's cookie beside a valid certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proved(pub String);

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &Arc<AppState>) -> Result<Admin, Response> {
        if let Some(name) = session(st, &parts.headers) {
            if let Some(t) = cookie_token(&parts.headers) {
                parts.extensions.insert(Proved(format!("session:{t}")));
            }
            return Ok(Admin(name));
        }
        let leaf = parts
            .extensions
            .get::<ConnInfo>()
            .and_then(|c| c.client_chain.as_ref()?.first().cloned());
        if let Some(leaf) = leaf {
            let st = st.clone();
            let ip = peer(&parts.extensions);
            let sha = dm_shared::pki::sha256_hex(&leaf);
            let by_cert = tokio::task::spawn_blocking(move || certificate_admin(&st, &leaf, ip));
            if let Ok(Some(name)) = by_cert.await {
                parts.extensions.insert(Proved(format!("certificate:{sha}")));
                return Ok(Admin(name));
            }
        }
        Err(redirect("/console/login"))
    }
}

/// The administrator whose pinned certificate is `leaf`, if it is valid now. The TLS handshake
/// proved the client holds its key.
fn certificate_admin(st: &AppState, leaf: &[u8], ip: IpAddr) -> Option<String> {
    let sha = dm_shared::pki::sha256_hex(leaf);
    let cert = match st.store.administrator_by_certificate(&sha) {
        Ok(c) => c?,
        Err(e) => {
            log::error!("console: looking up the client certificate from {ip}: {e}");
            return None;
        }
    };
    let now = st.now();
    if now < cert.not_before || now >= cert.not_after {
        log::warn!(
            "console: the certificate of administrator {} ({}, sha256 {sha}) from {ip} is expired or not yet valid",
            cert.name,
            cert.subject
        );
        return None;
    }
    log::debug!("console: administrator {} by client certificate from {ip}", cert.name);
    Some(cert.name)
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

pub(crate) fn form_decode(s: &str) -> String {
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

/// `POST /console/login`. The attempt counts as a failure before the password is checked
/// (taken back when it matches), so logins sent at once cannot all pass a count made before
/// any of them failed; at most two checks run at once.
pub async fn login(State(st): State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    let ip = peer(req.extensions());
    let body = match axum::body::to_bytes(req.into_body(), 16 * 1024).await {
        Ok(b) => b,
        Err(_) => return login_page(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large."),
    };
    let Some(form) = parse_form(&body) else {
        return login_page(StatusCode::BAD_REQUEST, "Give a name and a password.");
    };
    let reservation = match st.console.failures.reserve(ip, st.now()) {
        Ok(r) => r,
        Err(wait) => {
            log::warn!(
                "console login from {ip} refused: {MAX_FAILURES} failures in the last minute"
            );
            let mut r = login_page(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed logins: try again in a minute.",
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
            return r;
        }
    };
    let matched = check_password(&st, &form).await;
    let Some(hash) = matched else {
        // The reservation stands as the failure.
        log::warn!(
            "console login failed for {:?} from {ip}",
            form.name.chars().take(64).collect::<String>()
        );
        return login_page(StatusCode::UNAUTHORIZED, "The name or the password is wrong.");
    };
    st.console.failures.forgive(reservation);
    let t = match token() {
        Ok(t) => t,
        Err(e) => {
            log::error!("console login of {} from {ip}: {e}", printable(&form.name));
            return login_page(StatusCode::INTERNAL_SERVER_ERROR, "No randomness for a session.");
        }
    };
    log::info!("console login: {} from {ip}", printable(&form.name));
    let password = password_fingerprint(&hash);
    // The view may not hold an administrator added a moment ago yet: the database just said.
    st.write().administrators.insert(form.name.clone(), password.clone());
    let session = Session { name: form.name.clone(), password, expires: st.now() + SESSION_SECS };
    st.console.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(t.clone(), session);
    let mut r = redirect("/console/");
    let cookie = format!(
        "{COOKIE}={t}; Path=/console; Secure; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}"
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Checks the form's password on the blocking threads, at most [`sessions::HASHERS`] at
/// once; the administrator's password hash when it matches.
async fn check_password(st: &Arc<AppState>, form: &LoginForm) -> Option<String> {
    // Never closed, so never an error.
    let _permit = st.console.hashing.acquire().await.ok()?;
    st.console.checks.fetch_add(1, Ordering::Relaxed);
    let (st, name, password) = (st.clone(), form.name.clone(), form.password.clone());
    tokio::task::spawn_blocking(move || {
        let hash = st.store.administrator_hash(&name).ok().flatten();
        // A name that does not exist costs a hash check too, so timing does not tell.
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let dummy =
            DUMMY.get_or_init(|| hash_password("no such administrator").unwrap_or_default());
        let matches = password_matches(hash.as_deref().unwrap_or(dummy), &password);
        hash.filter(|_| matches)
    })
    .await
    .ok()
    .flatten()
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

#[cfg(test)]
mod tests {
    use super::super::fixture::Fixture;
    use super::*;

    fn login_request(name: &str, password: &str, ip: &str) -> axum::extract::Request {
        let body = format!("name={name}&password={}", url(password));
        let mut req = axum::http::Request::builder()
            .method("POST")
            .uri("/console/login")
            .body(axum::body::Body::from(body))
            .unwrap();
        let peer = std::net::SocketAddr::new(ip.parse().unwrap(), 1);
        req.extensions_mut().insert(ConnInfo { peer, client_chain: None });
        req
    }

    /// Headers carrying the session cookie a login response set.
    fn cookie_of(r: &Response) -> HeaderMap {
        let set = r.headers().get(header::SET_COOKIE).unwrap().to_str().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(set.split(';').next().unwrap()).unwrap());
        h
    }

    async fn log_in(f: &Fixture, name: &str, password: &str, ip: &str) -> Response {
        login(State(f.state.clone()), login_request(name, password, ip)).await
    }

    /// The attack: the console's failure count was read before the password was hashed and
    /// written after, so logins sent at once (600 HTTP/2 streams) were all checked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_logins_from_one_address_get_at_most_five_guesses_checked() {
        let f = Fixture::new(|_| {});
        let hash = hash_password("the right password").unwrap();
        f.state.store.set_administrator("root", &hash, 1).unwrap();
        let guesses: Vec<_> = (0..40)
            .map(|i| {
                let st = f.state.clone();
                let req = login_request("root", &format!("guess number {i}"), "192.0.2.7");
                tokio::spawn(async move { login(State(st), req).await.status() })
            })
            .collect();
        let mut statuses = Vec::new();
        for g in guesses {
            statuses.push(g.await.unwrap());
        }
        let checked = f.state.console.checks.load(Ordering::Relaxed);
        assert!(checked <= u64::from(MAX_FAILURES), "{checked} guesses checked");
        let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
        let wrong = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
        assert_eq!((wrong, refused), (checked as usize, 40 - checked as usize), "{statuses:?}");
        // The right password waits too from that address (it is not checked), with the wait
        // said; another address is not held back.
        let r = log_in(&f, "root", "the right password", "192.0.2.7").await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: i64 = r.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        let r = log_in(&f, "root", "the right password", "198.51.100.1").await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(f.state.console.checks.load(Ordering::Relaxed), checked + 1);
        // A success takes its reservation back: logins that work never fill the count.
        for _ in 0..2 * MAX_FAILURES {
            let r = log_in(&f, "root", "the right password", "198.51.100.1").await;
            assert_eq!(r.status(), StatusCode::SEE_OTHER);
        }
    }

    /// The attack: an administrator's password leaks and is changed (or the administrator
    /// removed), but the session opened with the old password goes on for eight hours.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_password_or_the_removal_ends_the_sessions_of_the_old_one() {
        let f = Fixture::new(|_| {});
        let old = hash_password("the old password").unwrap();
        f.state.store.set_administrator("alice", &old, 1).unwrap();
        // Logged in before the view heard of alice: the session works at once.
        let r = log_in(&f, "alice", "the old password", "192.0.2.1").await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let thief = cookie_of(&r);
        assert_eq!(session(&f.state, &thief).as_deref(), Some("alice"));
        f.reload();
        assert_eq!(session(&f.state, &thief).as_deref(), Some("alice"), "a reload keeps it");

        crate::admin::administrators::add(f.state.store.as_ref(), "alice", "the new password", 2)
            .unwrap();
        f.reload();
        assert_eq!(session(&f.state, &thief), None, "the old password's session ended");
        assert_eq!(log_in(&f, "alice", "the old password", "192.0.2.1").await.status(), 401);
        let r = log_in(&f, "alice", "the new password", "192.0.2.1").await;
        let mine = cookie_of(&r);
        assert_eq!(session(&f.state, &mine).as_deref(), Some("alice"));

        crate::admin::administrators::remove(f.state.store.as_ref(), "alice").unwrap();
        f.reload();
        assert_eq!(session(&f.state, &mine), None, "removed: no session");
        assert_eq!(log_in(&f, "alice", "the new password", "192.0.2.2").await.status(), 401);
    }

    /// The attack: a laptop holding an administrator's pinned certificate is lost, and nothing
    /// could unpin the certificate.
    #[test]
    fn an_unpinned_certificate_opens_nothing() {
        let f = Fixture::new(|_| {});
        let now = std::time::SystemTime::now();
        let spec = super::super::fixture::spec("ops", dm_shared::devpki::Purpose::Client, now, 30);
        let issued = dm_shared::devpki::issue(&f.ca, &spec).unwrap();
        let pem = f.dir.path().join("ops.pem");
        std::fs::write(&pem, &issued.cert_pem).unwrap();
        let store = f.state.store.as_ref();
        let t = f.state.now();
        crate::admin::administrators::certificate(store, "ops", &pem, t).unwrap();
        use rustls_pki_types::pem::PemObject;
        let der =
            rustls_pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        let ip = IpAddr::from([192, 0, 2, 1]);
        assert_eq!(certificate_admin(&f.state, &der, ip).as_deref(), Some("ops"));
        let listed = crate::admin::administrators::list(store).unwrap();
        assert!(listed.text.contains(&dm_shared::pki::sha256_hex(&der)), "{}", listed.text);
        crate::admin::administrators::unpin(store, None, Some(&pem)).unwrap();
        assert_eq!(certificate_admin(&f.state, &der, ip), None);
        let again = crate::admin::administrators::unpin(store, None, Some(&pem)).unwrap_err();
        assert!(matches!(again, crate::Error::NotFound(_)), "{again}");
        // By the SHA-256 `admin list` shows, and with the administrator's removal.
        crate::admin::administrators::certificate(store, "ops", &pem, t).unwrap();
        let sha = dm_shared::pki::sha256_hex(&der).to_uppercase();
        crate::admin::administrators::unpin(store, Some(&sha), None).unwrap();
        assert_eq!(certificate_admin(&f.state, &der, ip), None);
        crate::admin::administrators::certificate(store, "ops", &pem, t).unwrap();
        crate::admin::administrators::remove(store, "ops").unwrap();
        assert_eq!(certificate_admin(&f.state, &der, ip), None);
    }

    /// The attack: a request carries a planted cookie of a dead session (whose CSRF token the
    /// attacker knows) beside an administrator's valid client certificate. It is let in by the
    /// certificate, and only the certificate's token is good for its forms.
    #[tokio::test]
    async fn a_forms_csrf_token_is_the_proving_credentials_alone() {
        let f = Fixture::new(|_| {});
        let now = std::time::SystemTime::now();
        let spec = super::super::fixture::spec("ops", dm_shared::devpki::Purpose::Client, now, 30);
        let issued = dm_shared::devpki::issue(&f.ca, &spec).unwrap();
        let pem = f.dir.path().join("ops.pem");
        std::fs::write(&pem, &issued.cert_pem).unwrap();
        let t = f.state.now();
        crate::admin::administrators::certificate(f.state.store.as_ref(), "ops", &pem, t).unwrap();
        use rustls_pki_types::pem::PemObject;
        let der =
            rustls_pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        let mut conn = Fixture::conn();
        conn.client_chain = Some(vec![der.clone().into_owned()].into());
        let req = axum::http::Request::builder()
            .uri("/console/")
            .header(header::COOKIE, format!("{COOKIE}=dead-session"))
            .body(())
            .unwrap();
        let (mut parts, ()) = req.into_parts();
        parts.extensions.insert(conn);
        let admin = Admin::from_request_parts(&mut parts, &f.state).await.unwrap();
        assert_eq!(admin, Admin("ops".into()));
        let proved = forms::credential(&parts.extensions).unwrap();
        assert_eq!(proved, format!("certificate:{}", dm_shared::pki::sha256_hex(&der)));
        let planted = forms::csrf_token(&f.state, "session:dead-session").unwrap();
        assert!(!forms::csrf_ok(&f.state, &proved, &planted));
        let genuine = forms::csrf_token(&f.state, &proved).unwrap();
        assert!(forms::csrf_ok(&f.state, &proved, &genuine));
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(password_matches(&h, "correct horse"));
        assert!(!password_matches(&h, "wrong"));
        assert!(!password_matches("not a hash", "x"));
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
