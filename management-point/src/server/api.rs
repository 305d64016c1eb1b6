//! The management API's routes under `/api/v1/` (docs/management-api.md): each request
//! authenticates with `Authorization: Bearer <token>`, is held to its token's role and to a
//! rate per token, and runs one [`Op`] (the operations `dmmp` runs) off the async threads; a
//! change lands in the audit trail. Errors have one shape: `{"status", "code", "message"}`,
//! `code` the status code's name. A failed authentication is answered after the same delay
//! whether the token exists or not. `GET /api/v1/openapi.json` is the OpenAPI 3 document,
//! made from the same route table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, get, on};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use dm_shared::StatusCode as Code;

use super::conn_info::ConnInfo;
use super::state::AppState;
use crate::api::ops::{Cx, Op, PACKAGE_UPLOAD, ROUTES, Route};
use crate::api::{ApiToken, token_hash};

/// How long every failed authentication takes, whatever failed.
const AUTH_FAILURE_DELAY: Duration = Duration::from_millis(250);
/// The largest JSON body.
const MAX_JSON_BODY: usize = 64 * 1024;

/// An error as the API answers it.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, code: Code, message: impl Into<String>) -> Failure {
        Failure { status, code: code.name(), message: message.into() }
    }
}

impl From<crate::Error> for Failure {
    fn from(e: crate::Error) -> Failure {
        use crate::Error as E;
        let status = match &e {
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Unauthorized(_) => StatusCode::FORBIDDEN,
            E::Conflict(_) => StatusCode::CONFLICT,
            E::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            // What the server itself failed at.
            E::Database { .. }
            | E::Postgres { .. }
            | E::CorruptRow { .. }
            | E::Tls { .. }
            | E::Pki { .. }
            | E::NoRandomness(_)
            | E::OutputExists { .. }
            | E::Config { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            E::Shared(s)
                if matches!(
                    s.code(),
                    Code::E_FAIL | Code::ERROR_WRITE_FAULT | Code::ERROR_DISK_FULL
                ) =>
            {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            // What the request asked for cannot be (a package that does not verify, a bad
            // argument, an action that is over).
            _ => StatusCode::BAD_REQUEST,
        };
        let code = e.code().name();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            // The detail (a database's words, a path) is the log's, not the client's.
            log::error!("management API: {e}");
            let message = "the server failed; its log says why".to_string();
            return Failure { status, code, message };
        }
        Failure { status, code, message: e.to_string() }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body =
            json!({"status": self.status.as_u16(), "code": self.code, "message": self.message});
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
        }
        r
    }
}

/// Who a request is, once authenticated.
struct Caller {
    token: ApiToken,
    source: String,
}

/// The API's routes, with the server's state.
pub fn routes() -> Router<Arc<AppState>> {
    let mut router = Router::new().route("/api/v1/openapi.json", get(openapi));
    for r in ROUTES {
        let method = if r.method == "GET" { MethodFilter::GET } else { MethodFilter::POST };
        router = if r.op == PACKAGE_UPLOAD {
            router.route(r.path, on(method, move |st, req| upload(st, r, req)))
        } else {
            router.route(r.path, on(method, move |st, path, req| dispatch(st, r, path, req)))
        };
    }
    router
}

/// `GET /api/v1/openapi.json`.
async fn openapi() -> Response {
    axum::Json(crate::api::openapi::document()).into_response()
}

/// Authenticates the request, holds it to the route's role and the token's rate, or says why
/// not. A failed authentication takes [`AUTH_FAILURE_DELAY`] from `start` whatever failed.
async fn authorize(
    st: &Arc<AppState>,
    r: &Route,
    headers: &HeaderMap,
    conn: Option<&ConnInfo>,
    start: Instant,
) -> Result<Caller, Failure> {
    let source = conn.map_or_else(|| "unknown".to_string(), |c| c.peer.ip().to_string());
    let secret = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    // Hashed whether or not there is one, and looked up by hash: no early answer tells a
    // client more than that it failed.
    let hash = token_hash(secret);
    let st2 = st.clone();
    let found = tokio::task::spawn_blocking(move || st2.store.api_token_by_hash(&hash))
        .await
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, Code::E_FAIL, e.to_string()))?
        .map_err(Failure::from)?;
    let now = st.now();
    let token = match found {
        Some(t) if !secret.is_empty() && t.unusable(now).is_none() => t,
        other => {
            let why = match &other {
                _ if secret.is_empty() => "no Bearer token",
                None => "an unknown token",
                Some(t) => t.unusable(now).unwrap_or("unusable"),
            };
            log::warn!("management API: {} {} from {source}: refused, {why}", r.method, r.path);
            tokio::time::sleep_until((start + AUTH_FAILURE_DELAY).into()).await;
            return Err(Failure::new(
                StatusCode::UNAUTHORIZED,
                Code::DM_E_API_UNAUTHORIZED,
                "the token is missing, unknown, expired or revoked",
            ));
        }
    };
    if !token.role.allows(r.role) {
        log::warn!(
            "management API: token {} ({}) may not {} {}: it needs {}",
            token.name,
            token.role.as_str(),
            r.method,
            r.path,
            r.role.as_str()
        );
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            Code::E_ACCESSDENIED,
            format!(
                "token {} is {}; {} {} needs {}",
                token.name,
                token.role.as_str(),
                r.method,
                r.path,
                r.role.as_str()
            ),
        ));
    }
    if !within_rate(st, &token.name, now) {
        return Err(Failure::new(
            StatusCode::TOO_MANY_REQUESTS,
            Code::DM_E_API_THROTTLED,
            format!(
                "token {} made more than {} requests this minute",
                token.name, st.config.api.requests_per_minute
            ),
        ));
    }
    Ok(Caller { token, source })
}

/// Counts a request of `token` at `now`: whether it is within the rate.
fn within_rate(st: &AppState, token: &str, now: i64) -> bool {
    let mut held = st.api_requests.lock().unwrap_or_else(|p| p.into_inner());
    let minute = now / 60;
    held.retain(|_, (m, _)| *m == minute);
    let e = held.entry(token.to_string()).or_insert((minute, 0));
    e.1 += 1;
    e.1 <= st.config.api.requests_per_minute
}

/// A route's operation: authenticated, built from the path and the JSON body, run.
async fn dispatch(
    State(st): State<Arc<AppState>>,
    r: &'static Route,
    Path(params): Path<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let start = Instant::now();
    let caller =
        match authorize(&st, r, req.headers(), req.extensions().get::<ConnInfo>(), start).await {
            Ok(c) => c,
            Err(f) => return f.into_response(),
        };
    let text = req.headers().get(header::ACCEPT).is_some_and(|a| a == "text/plain");
    // A POST's fields are its path's and its body's; a GET's other fields are its query's,
    // never one its path names.
    let query = query_pairs(req.uri().query().unwrap_or(""));
    if r.method == "POST" && !query.is_empty() {
        let why = "a POST takes its fields from the path and the JSON body, not a query string";
        return Failure::new(StatusCode::BAD_REQUEST, Code::E_INVALIDARG, why).into_response();
    }
    if let Some((k, _)) = query.iter().find(|(k, _)| params.iter().any(|(p, _)| p == k)) {
        let why = format!("{k} is a part of the path, not of the query");
        return Failure::new(StatusCode::BAD_REQUEST, Code::E_INVALIDARG, why).into_response();
    }
    let mut params = params;
    params.extend(query);
    let body = match axum::body::to_bytes(req.into_body(), MAX_JSON_BODY).await {
        Ok(b) if b.is_empty() => Value::Null,
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(v) => v,
            Err(e) => {
                return Failure::new(
                    StatusCode::BAD_REQUEST,
                    Code::E_INVALIDARG,
                    format!("the body is not JSON: {e}"),
                )
                .into_response();
            }
        },
        Err(_) => {
            return Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::ERROR_FILE_TOO_LARGE,
                format!("the body is over {MAX_JSON_BODY} bytes"),
            )
            .into_response();
        }
    };
    let op = match Op::from_route(r, params, body) {
        Ok(op) => op,
        Err(e) => {
            return Failure::new(
                StatusCode::BAD_REQUEST,
                Code::E_INVALIDARG,
                format!("{} {}: {e}", r.method, r.path),
            )
            .into_response();
        }
    };
    run(st, r, caller, op, text).await
}

/// The query's `key=value` pairs, decoded.
fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (super::console::form_decode(k), super::console::form_decode(v)))
        .collect()
}

/// Runs `op` of route `r` for `caller` off the async threads and answers its JSON, or with
/// `text` the text `dmmp` prints for people.
async fn run(st: Arc<AppState>, r: &'static Route, caller: Caller, op: Op, text: bool) -> Response {
    let name = r.op;
    let done = tokio::task::spawn_blocking(move || {
        let actor = format!("token {}", caller.token.name);
        let cx = Cx {
            cfg: &st.config,
            store: st.store.as_ref(),
            actor: &actor,
            source: &caller.source,
            now: st.now(),
            tenant: caller.token.tenant.as_deref(),
        };
        let out = op.run(&cx)?;
        if r.method == "POST" {
            // What the server serves changes now, not at the next reload.
            super::state::reload_now(&st)?;
        }
        Ok::<_, crate::Error>(out)
    })
    .await;
    match done {
        Ok(Ok(out)) if text => {
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], out.text).into_response()
        }
        Ok(Ok(out)) => axum::Json(out.json).into_response(),
        Ok(Err(e)) => {
            log::warn!("management API: {name}: {e}");
            Failure::from(e).into_response()
        }
        Err(e) => Failure::new(StatusCode::INTERNAL_SERVER_ERROR, Code::E_FAIL, e.to_string())
            .into_response(),
    }
}

/// `POST /api/v1/packages`: the body, a `.dmpkg` bundle, streams to a private file within
/// `[api] max_upload_bytes`, then is verified against `[api] package_roots` and stored as
/// `dmmp package add` does; the file is removed either way.
async fn upload(State(st): State<Arc<AppState>>, r: &'static Route, req: Request) -> Response {
    let start = Instant::now();
    let caller =
        match authorize(&st, r, req.headers(), req.extensions().get::<ConnInfo>(), start).await {
            Ok(c) => c,
            Err(f) => return f.into_response(),
        };
    if let Some(t) = &caller.token.tenant {
        return Failure::new(
            StatusCode::FORBIDDEN,
            Code::E_ACCESSDENIED,
            format!("a token of tenant {t} cannot upload packages: they serve every tenant"),
        )
        .into_response();
    }
    let Some(roots) = st.config.api.package_roots.as_ref().map(|p| st.config.resolve(p)) else {
        return Failure::new(
            StatusCode::CONFLICT,
            Code::ERROR_BAD_CONFIGURATION,
            "this management point takes no uploads: [api] package_roots names no roots",
        )
        .into_response();
    };
    // At most a few at once: each may be gigabytes on the disk while it is verified.
    let Ok(_slot) = UPLOADS.try_acquire() else {
        return Failure::new(
            StatusCode::TOO_MANY_REQUESTS,
            Code::DM_E_API_THROTTLED,
            format!("{MAX_UPLOADS} packages are being uploaded; try again when one is done"),
        )
        .into_response();
    };
    let dir = st.config.content().join("uploads");
    let file = match receive(&st, &dir, req.into_body()).await {
        Ok(f) => f,
        Err(f) => return f.into_response(),
    };
    let st2 = st.clone();
    let path = file.0.clone();
    let done = tokio::task::spawn_blocking(move || {
        let actor = format!("token {}", caller.token.name);
        let source = crate::admin::packages::PackageSource::Signed { dir: path.clone(), roots };
        let now = st2.now();
        let out = crate::admin::packages::package_add(
            &st2.config,
            st2.store.as_ref(),
            &source,
            None,
            now,
        );
        if let Ok(o) = &out {
            let entry = crate::api::AuditEntry {
                id: 0,
                time: now,
                actor,
                source: caller.source.clone(),
                action: PACKAGE_UPLOAD.into(),
                target: format!(
                    "package {} {}",
                    o.json["name"].as_str().unwrap_or("?"),
                    o.json["version"].as_str().unwrap_or("?")
                ),
                before: None,
                after: Some(o.json.to_string()),
            };
            st2.store.add_audit(&entry)?;
            log::info!("{} from {}: {} {}", entry.actor, entry.source, entry.action, entry.target);
            super::state::reload_now(&st2)?;
        }
        out
    })
    .await;
    drop(file);
    match done {
        Ok(Ok(out)) => (StatusCode::CREATED, axum::Json(out.json)).into_response(),
        Ok(Err(e)) => {
            log::warn!("management API: package upload refused: {e}");
            Failure::from(e).into_response()
        }
        Err(e) => Failure::new(StatusCode::INTERNAL_SERVER_ERROR, Code::E_FAIL, e.to_string())
            .into_response(),
    }
}

/// The most package uploads at once.
const MAX_UPLOADS: usize = 2;
static UPLOADS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_UPLOADS);

/// An uploaded file, removed when dropped: whether the package verified or not, whether the
/// upload broke off, the disk filled or the client went away while it was verified.
struct Upload(std::path::PathBuf);

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Streams `body` to a new private file in `dir` (itself private), within `[api]
/// max_upload_bytes`.
async fn receive(st: &AppState, dir: &std::path::Path, body: Body) -> Result<Upload, Failure> {
    let fail = |e: std::io::Error| {
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::E_FAIL,
            format!("{}: {e}", dir.display()),
        )
    };
    dm_shared::fs::create_dir_all(dir, dm_shared::fs::MODE_DIR_PRIVATE)
        .map_err(|e| Failure::from(crate::Error::from(e)))?;
    let name = crate::random::hex(16, "an upload name").map_err(Failure::from)?;
    let path = dir.join(format!("{name}.dmpkg"));
    let upload = Upload(path.clone());
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .await
        .map_err(fail)?;
    let cap = st.config.api.max_upload_bytes;
    let mut got = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                return Err(Failure::new(
                    StatusCode::BAD_REQUEST,
                    Code::E_INVALIDARG,
                    format!("the upload broke off: {e}"),
                ));
            }
        };
        got += chunk.len() as u64;
        if got > cap {
            return Err(Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::ERROR_FILE_TOO_LARGE,
                format!("the package is over [api] max_upload_bytes ({cap} bytes)"),
            ));
        }
        f.write_all(&chunk).await.map_err(fail)?;
    }
    f.sync_all().await.map_err(fail)?;
    Ok(upload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::fixture::Fixture;

    #[test]
    fn each_token_is_held_to_its_rate_a_minute() {
        let f = Fixture::new(|c| c.api.requests_per_minute = 3);
        let minute = 600;
        let ok: Vec<bool> = (0..4).map(|_| within_rate(&f.state, "ci", minute)).collect();
        assert_eq!(ok, [true, true, true, false]);
        assert!(within_rate(&f.state, "other", minute), "each token has its own");
        assert!(within_rate(&f.state, "ci", minute + 60), "a new minute");
    }

    #[test]
    fn errors_name_the_status_code_and_server_failures_only_are_500() {
        let f = Failure::from(crate::Error::NotFound("rollout r9".into()));
        assert_eq!((f.status, f.code), (StatusCode::NOT_FOUND, "ERROR_FILE_NOT_FOUND"));
        let f = Failure::from(crate::Error::Usage("bad".into()));
        assert_eq!((f.status, f.code), (StatusCode::BAD_REQUEST, "E_INVALIDARG"));
        let f = Failure::from(crate::Error::Conflict("exists".into()));
        assert_eq!(f.status, StatusCode::CONFLICT);
        let source = rusqlite::Error::InvalidQuery;
        let f = Failure::from(crate::Error::Database { what: "x".into(), source });
        assert_eq!(f.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
