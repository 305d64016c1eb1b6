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

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod pages;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

pub use self::pages::{device, index, report, search};
use super::auth::ConnInfo;
use super::state::AppState;

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

/// The administrator a console request is from: by its session, or by a pinned client
/// certificate. Anyone else is sent to the login page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin(pub String);

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &Arc<AppState>) -> Result<Admin, Response> {
        if let Some(name) = session(st, &parts.headers) {
            return Ok(Admin(name));
        }
        let leaf = parts
            .extensions
            .get::<ConnInfo>()
            .and_then(|c| c.client_chain.as_ref()?.first().cloned());
        if let Some(leaf) = leaf {
            let st = st.clone();
            let ip = peer(&parts.extensions);
            let by_cert = tokio::task::spawn_blocking(move || certificate_admin(&st, &leaf, ip));
            if let Ok(Some(name)) = by_cert.await {
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
        let svg = pages::plot(0, 100, 4, &[(50, 1, 0), (75, 1, 1)]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        // 600 wide, 30 padding: t=50 is x=300; 1 of 4 devices is y=170-35=135.
        assert!(svg.contains("300.0,170.0 300.0,135.0"), "{svg}");
        assert!(svg.contains("targeted 4"), "{svg}");
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        let empty = pages::plot(10, 10, 0, &[]);
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
