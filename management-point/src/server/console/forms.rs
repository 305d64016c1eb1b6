//! The console's forms: every write action is a POST form carrying a CSRF token, one
//! mechanism for all (docs/console.md). The token is an HMAC-SHA256, under a key the server
//! draws at its start, of the credential the request came with (the session cookie, or the
//! pinned client certificate): a page of one session cannot be replayed from another, and a
//! form posted from another site (which cannot read the page) has none.
//!
//! `POST /console/do/{operation}` runs one of the management API's operations
//! ([`crate::api::ops::Op`]) from a form's fields, held to the administrator's console role as
//! a token is to its own, in the administrator's name, and recorded in the audit trail: the
//! forms that advertise a program and approve a device use it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value};

use super::{Admin, esc, page, redirect};
use crate::api::Role;
use crate::api::ops::{Cx, Op};
use crate::server::conn_info::ConnInfo;
use crate::server::state::AppState;

/// The credential the request's administrator was proved by ([`super::Proved`]): the forms'
/// CSRF tokens are bound to it alone.
pub fn credential(ext: &axum::http::Extensions) -> Option<String> {
    ext.get::<super::Proved>().map(|p| p.0.clone())
}

/// The CSRF token of `credential`; none when the server has no key (its random source failed).
pub fn csrf_token(st: &AppState, credential: &str) -> Option<String> {
    let key = st.console.csrf_key()?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&key, credential.as_bytes());
    Some(tag.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `given` is the token of `credential` (compared in constant time).
pub fn csrf_ok(st: &AppState, credential: &str, given: &str) -> bool {
    let Some(want) = csrf_token(st, credential) else { return false };
    want.len() == given.len()
        && want.bytes().zip(given.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// `csrf` of a form body.
pub fn form_csrf(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|kv| kv.strip_prefix("csrf=")).map(super::form_decode)
}

/// The hidden field of a form: its CSRF token, for the credential the page was asked with.
pub fn csrf_field(st: &AppState, ext: &axum::http::Extensions) -> String {
    credential(ext)
        .and_then(|c| csrf_token(st, &c))
        .map(|t| format!("<input type=\"hidden\" name=\"csrf\" value=\"{t}\">"))
        .unwrap_or_default()
}

/// An administrator's console role (one known by a pinned certificate alone is an
/// administrator).
pub fn role_of(st: &AppState, who: &str) -> Role {
    st.read().admin_roles.get(who).copied().unwrap_or(Role::Administrator)
}

fn answer(status: StatusCode, text: &str) -> Response {
    let mut r = page("Not done", &format!("<p>{}</p>", esc(text)));
    *r.status_mut() = status;
    r
}

/// The operations the console's forms may run.
const FORM_OPS: [&str; 4] =
    ["advertise", "device-approve", "advertisement-cancel", "update-approve"];

/// A form's text once its CSRF token proved it is the page's, with the client's address; or
/// the refusal (403, logged) to answer.
pub async fn checked(
    st: &AppState,
    who: &str,
    what: &str,
    req: axum::extract::Request,
) -> Result<(String, String), Response> {
    let source = req
        .extensions()
        .get::<ConnInfo>()
        .map_or_else(|| "console".to_string(), |c| c.peer.ip().to_string());
    let cred = credential(req.extensions());
    let body = axum::body::to_bytes(req.into_body(), 16 * 1024).await.unwrap_or_default();
    let given = form_csrf(&body).unwrap_or_default();
    if !cred.is_some_and(|c| csrf_ok(st, &c, &given)) {
        log::warn!("console: {who}'s {what} came without a valid CSRF token; refused");
        return Err(answer(StatusCode::FORBIDDEN, "the form is stale or forged; reload the page"));
    }
    Ok((String::from_utf8_lossy(&body).into_owned(), source))
}

/// Runs `op` from a checked form, held to the administrator's role as a token is to its own,
/// and shows `back` again (303); or says why not.
pub async fn perform(
    st: &Arc<AppState>,
    who: &str,
    source: String,
    op: Op,
    back: &str,
) -> Response {
    let role = role_of(st, who);
    if !role.allows(op.role()) {
        let (name, needs) = (op.name(), op.role().as_str());
        log::warn!("console: {who} ({}) may not {name}: it needs {needs}", role.as_str());
        return answer(
            StatusCode::FORBIDDEN,
            &format!("{who} is {}: {name} needs {needs}", role.as_str()),
        );
    }
    match run_as(st, who, source, op).await {
        Ok(()) => {
            let mut r = redirect(back);
            *r.status_mut() = StatusCode::SEE_OTHER;
            r
        }
        Err((status, why)) => answer(status, &why),
    }
}

/// `POST /console/do/{operation}`: the form's fields are the operation's (a checkbox's `on`
/// is true); `back` is the console page to show again.
pub async fn run(
    Admin(who): Admin,
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    req: axum::extract::Request,
) -> Response {
    if !FORM_OPS.contains(&name.as_str()) {
        return answer(StatusCode::NOT_FOUND, &format!("no form runs {name:?}"));
    }
    let (text, source) = match checked(&st, &who, &name, req).await {
        Ok(t) => t,
        Err(refused) => return refused,
    };
    let mut fields = Map::new();
    let mut back = "/console/".to_string();
    for (k, v) in text.split('&').filter_map(|kv| kv.split_once('=')) {
        let (k, v) = (super::form_decode(k), super::form_decode(v));
        match k.as_str() {
            "csrf" => {}
            "back" if v.starts_with("/console/") && !v.contains("//") => back = v,
            "allow_downgrade" => {
                fields.insert(k, Value::Bool(v == "on"));
            }
            _ if v.is_empty() => {}
            _ => {
                fields.insert(k, Value::String(v));
            }
        }
    }
    fields.insert("op".into(), Value::String(name.clone()));
    let op: Op = match serde_json::from_value(Value::Object(fields)) {
        Ok(op) => op,
        Err(e) => return answer(StatusCode::BAD_REQUEST, &format!("{name}: {e}")),
    };
    perform(&st, &who, source, op, &back).await
}

/// Runs `op` in administrator `who`'s name from `source`, off the async threads, logged and
/// in the audit trail, and has the server serve what it changed at once. An operation that
/// cannot be is 409 with why.
async fn run_as(
    st: &Arc<AppState>,
    who: &str,
    source: String,
    op: Op,
) -> Result<(), (StatusCode, String)> {
    let by = format!("{who} (console)");
    let name = op.name();
    let st2 = st.clone();
    let done = tokio::task::spawn_blocking(move || {
        let now = st2.now();
        let (cfg, store) = (&st2.config, st2.store.as_ref());
        let cx = Cx { cfg, store, actor: &by, source: &source, now, tenant: None };
        op.run(&cx)?;
        crate::server::state::reload_now(&st2)
    })
    .await;
    match done {
        Ok(Ok(())) => {
            log::info!("console: administrator {who}: {name}");
            Ok(())
        }
        Ok(Err(e)) => Err((StatusCode::CONFLICT, e.to_string())),
        Err(_) => Err((StatusCode::INTERNAL_SERVER_ERROR, "the action failed".into())),
    }
}
