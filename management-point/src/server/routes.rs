//! The device API's routes: every handler extracts the request, authenticates the device
//! off the async threads, runs its logic from [`super::poll`], [`super::feedback`] or
//! [`super::artifacts`], and answers JSON or a logged refusal in hawkBit's `ExceptionInfo`
//! shape.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use dm_shared::ddi;
use serde::Deserialize;

use super::auth::authenticate;
use super::conn_info::ConnInfo;
use super::http::ApiError;
use super::poll::HistoryQuery;
use super::state::AppState;
use super::{artifacts, confirm, feedback, poll, updates};
use crate::model::Device;

/// The request as the handlers log it.
#[derive(Debug, Clone)]
pub struct ReqInfo {
    method: Method,
    path: String,
    peer: SocketAddr,
}

impl ReqInfo {
    fn new(method: &Method, uri: &Uri, conn: &ConnInfo) -> ReqInfo {
        ReqInfo { method: method.clone(), path: uri.path().to_string(), peer: conn.peer }
    }

    /// Logs a refusal and returns it. Its message may quote what the device sent (a JSON
    /// error names the value it could not read): escaped for the log.
    fn refuse(&self, e: ApiError) -> ApiError {
        let message = crate::printable::printable(&e.message);
        if e.status.is_server_error() {
            log::error!(
                "{} {} from {}: {} {}",
                self.method,
                self.path,
                self.peer,
                e.status.as_u16(),
                message
            );
        } else {
            log::warn!(
                "{} {} from {}: {} {}",
                self.method,
                self.path,
                self.peer,
                e.status.as_u16(),
                message
            );
        }
        e
    }
}

/// Path parameters.
#[derive(Debug, Deserialize)]
pub struct DevicePath {
    tenant: String,
    cid: String,
}

/// Path parameters with an action or module id.
#[derive(Debug, Deserialize)]
pub struct DeviceItemPath {
    tenant: String,
    cid: String,
    id: String,
}

/// Path parameters of an artifact.
#[derive(Debug, Deserialize)]
pub struct ArtifactPath {
    tenant: String,
    cid: String,
    id: String,
    file: String,
}

/// `Path` or `Query` of the device API, refused in the documented `ExceptionInfo` shape (400)
/// with a log line naming the request, never axum's plain text.
pub struct Checked<E>(pub E);

/// Extracts `E`, turning its rejection into a logged `ExceptionInfo`.
async fn checked<E, R>(
    parts: &mut axum::http::request::Parts,
    state: &Arc<AppState>,
    what: &str,
) -> Result<Checked<E>, ApiError>
where
    E: axum::extract::FromRequestParts<Arc<AppState>, Rejection = R>,
    R: IntoResponse,
{
    match E::from_request_parts(parts, state).await {
        Ok(v) => Ok(Checked(v)),
        Err(r) => {
            let status = r.into_response().status();
            let conn = parts.extensions.get::<ConnInfo>().cloned().unwrap_or(ConnInfo {
                peer: SocketAddr::from(([0, 0, 0, 0], 0)),
                client_chain: None,
            });
            let info = ReqInfo::new(&parts.method, &parts.uri, &conn);
            let reason = format!("the request's {what} is not valid (HTTP {})", status.as_u16());
            Err(info.refuse(ApiError::bad_request(reason)))
        }
    }
}

impl<T> axum::extract::FromRequestParts<Arc<AppState>> for Checked<Path<T>>
where
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        checked(parts, state, "path").await
    }
}

impl<T> axum::extract::FromRequestParts<Arc<AppState>> for Checked<Query<T>>
where
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        checked(parts, state, "query").await
    }
}

/// Runs a handler's blocking work (storage) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("handler failed: {e}"))))
}

fn json_ok<T: serde::Serialize>(v: T) -> Response {
    axum::Json(v).into_response()
}

/// What every device request carries: the server state, what the TLS layer learned about the
/// connection, the headers (credentials), and the method and path for log lines.
pub struct Req {
    st: Arc<AppState>,
    conn: ConnInfo,
    headers: HeaderMap,
    info: ReqInfo,
}

impl axum::extract::FromRequestParts<Arc<AppState>> for Req {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        // The accept loop inserts it into every request; an unknown peer only shows in logs.
        let conn = parts
            .extensions
            .get::<ConnInfo>()
            .cloned()
            .unwrap_or(ConnInfo { peer: SocketAddr::from(([0, 0, 0, 0], 0)), client_chain: None });
        let info = ReqInfo::new(&parts.method, &parts.uri, &conn);
        Ok(Req { st: state.clone(), conn, headers: parts.headers.clone(), info })
    }
}

/// Authenticates, runs `f` off the async threads, and answers: its value as JSON (an
/// empty 200 for `()`), or the refusal, logged.
async fn run<T: Reply + Send + 'static>(
    r: Req,
    tenant: String,
    cid: String,
    f: impl FnOnce(&AppState, &Device) -> Result<T, ApiError> + Send + 'static,
) -> Response {
    let Req { st, conn, headers, info } = r;
    let result = blocking(move || {
        let d = authenticate(&st, &headers, &conn, &tenant, &cid)?;
        f(&st, &d)
    })
    .await;
    match result {
        Ok(v) => v.reply(),
        Err(e) => info.refuse(e).into_response(),
    }
}

/// What a successful handler returns.
trait Reply {
    fn reply(self) -> Response;
}

impl Reply for () {
    fn reply(self) -> Response {
        StatusCode::OK.into_response()
    }
}

macro_rules! json_reply {
    ($($t:ty),*) => {$(impl Reply for $t { fn reply(self) -> Response { json_ok(self) } })*};
}
json_reply!(
    ddi::ControllerBase,
    ddi::ConfirmationBase,
    ddi::ConfirmationBaseAction,
    ddi::CrlList,
    ddi::DeploymentBase,
    dm_shared::updates::UpdatesDocument,
    dm_shared::updates::ScanAck,
    ddi::Cancel,
    serde_json::Value,
    Vec<ddi::Artifact>
);

type Body = Result<Bytes, BytesRejection>;

/// `GET /{tenant}/controller/v1/{cid}`.
pub async fn poll(r: Req, Checked(Path(p)): Checked<Path<DevicePath>>) -> Response {
    run(r, p.tenant, p.cid, poll::poll).await
}

/// `GET …/deploymentBase/{id}`.
pub async fn deployment_base(
    r: Req,
    Checked(Path(p)): Checked<Path<DeviceItemPath>>,
    Checked(Query(q)): Checked<Query<HistoryQuery>>,
) -> Response {
    run(r, p.tenant, p.cid, move |st, d| poll::deployment_base(st, d, &p.id, &q)).await
}

/// `GET …/installedBase/{id}`.
pub async fn installed_base(
    r: Req,
    Checked(Path(p)): Checked<Path<DeviceItemPath>>,
    Checked(Query(q)): Checked<Query<HistoryQuery>>,
) -> Response {
    run(r, p.tenant, p.cid, move |st, d| poll::installed_base(st, d, &p.id, &q)).await
}

/// `POST …/deploymentBase/{id}/feedback`.
pub async fn feedback(
    r: Req,
    Checked(Path(p)): Checked<Path<DeviceItemPath>>,
    body: Body,
) -> Response {
    run(r, p.tenant, p.cid, move |st, d| feedback::feedback(st, d, &p.id, body, false)).await
}

/// `GET …/confirmationBase`.
pub async fn confirmation_base(r: Req, Checked(Path(p)): Checked<Path<DevicePath>>) -> Response {
    run(r, p.tenant, p.cid, |st, d| {
        let base = poll::base_url(st, &d.tenant, &d.controller_id);
        confirm::confirmation_base(st, d, &base)
    })
    .await
}

/// `GET …/confirmationBase/{id}`.
pub async fn confirmation_action(
    r: Req,
    Checked(Path(p)): Checked<Path<DeviceItemPath>>,
    Checked(Query(q)): Checked<Query<HistoryQuery>>,
) -> Response {
    run(r, p.tenant, p.cid, move |st, d| confirm::confirmation_action(st, d, &p.id, &q)).await
}

/// `POST …/confirmationBase/{id}/feedback`.
pub async fn confirmation_feedback(
    r: Req,
    Checked(Path(p)): Checked<Path<DeviceItemPath>>,
    body: Body,
) -> Response {
    run(r, p.tenant, p.cid, move |st, d| confirm::confirmation_feedback(st, d, &p.id, body)).await
}

/// `POST …/confirmationBase/activateAutoConfirm`.
pub async fn activate_auto_confirm(
    r: Req,
    Checked(Path(p)): Checked<Path<DevicePath>>,
    body: Body,
) -> Response {
    run(r, p.tenant, p.cid, move |st, d| confirm::activate(st, d, body)).await
}

/// `POST …/confirmationBase/deactivateAutoConfirm`.
pub async fn deactivate_auto_confirm(
    r: Req,
    Checked(Path(p)): Checked<Path<DevicePath>>,
) -> Response {
    run(r, p.tenant, p.cid, confirm::deactivate).await
}

/// `GET …/cancelAction/{id}`.
pub async fn cancel_action(r: Req, Checked(Path(p)): Checked<Path<DeviceItemPath>>) -> Response {
    run(r, p.tenant, p.cid, move |st, d| poll::cancel_action(st, d, &p.id)).await
}

/// `POST …/cancelAction/{id}/feedback`.
pub async fn cancel_feedback(
    r: Req,
    Checked(Path(p)): Checked<Path<DeviceItemPath>>,
    body: Body,
) -> Response {
    run(r, p.tenant, p.cid, move |st, d| feedback::feedback(st, d, &p.id, body, true)).await
}

/// `PUT …/configData`.
pub async fn config_data(
    r: Req,
    Checked(Path(p)): Checked<Path<DevicePath>>,
    body: Body,
) -> Response {
    run(r, p.tenant, p.cid, move |st, d| feedback::config_data(st, d, body)).await
}

/// `PUT …/installedBase`.
pub async fn set_installed(
    r: Req,
    Checked(Path(p)): Checked<Path<DevicePath>>,
    body: Body,
) -> Response {
    run(r, p.tenant, p.cid, move |st, d| feedback::set_installed(st, d, body)).await
}

/// `POST …/dm/statusMessages`.
pub async fn status_messages(
    r: Req,
    Checked(Path(p)): Checked<Path<DevicePath>>,
    body: Body,
) -> Response {
    run(r, p.tenant, p.cid, move |st, d| feedback::status_messages(st, d, body)).await
}

/// `GET …/softwaremodules/{id}/artifacts`.
pub async fn list_artifacts(r: Req, Checked(Path(p)): Checked<Path<DeviceItemPath>>) -> Response {
    run(r, p.tenant, p.cid, move |st, d| artifacts::list_artifacts(st, d, &p.id)).await
}

/// `GET …/softwaremodules/{id}/artifacts/{file}`: streamed, so only the authentication
/// runs off the async threads.
pub async fn download(r: Req, Checked(Path(p)): Checked<Path<ArtifactPath>>) -> Response {
    streamed(r, p.tenant, p.cid, move |st, d, headers| {
        artifacts::download(st, d, p.id, p.file, headers)
    })
    .await
}

/// Authenticates off the async threads, then runs the streaming handler `f` on them, and
/// answers its response or the refusal, logged: a file download, where only the
/// authentication blocks.
async fn streamed<F, Fut>(r: Req, tenant: String, cid: String, f: F) -> Response
where
    F: FnOnce(Arc<AppState>, Device, HeaderMap) -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    let Req { st, conn, headers, info } = r;
    let (st2, h2) = (st.clone(), headers.clone());
    let device = blocking(move || authenticate(&st2, &h2, &conn, &tenant, &cid)).await;
    let result = match device {
        Ok(d) => f(st, d, headers).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(r) => r,
        Err(e) => info.refuse(e).into_response(),
    }
}

/// `GET /healthz`: for load balancers and tests; no credentials, no device data. 503 when the
/// database does not answer.
pub async fn healthz(axum::extract::State(st): axum::extract::State<Arc<AppState>>) -> Response {
    let health = blocking(move || Ok(st.health())).await;
    match health {
        Ok(v) if v["status"] == "ok" => json_ok(v),
        Ok(v) => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET …/dm/crls`.
pub async fn crls(r: Req, Checked(Path(p)): Checked<Path<DevicePath>>) -> Response {
    run(r, p.tenant, p.cid, poll::crls).await
}

/// `?arch=` of the software update requests.
#[derive(Debug, Deserialize)]
pub struct ArchQuery {
    arch: Option<String>,
}

/// A repository file's path: `…/dm/updates/repo/{repo}/{*path}`.
#[derive(Debug, Deserialize)]
pub struct RepoPath {
    tenant: String,
    cid: String,
    repo: String,
    path: String,
}

/// `GET …/dm/updates`.
pub async fn updates(
    r: Req,
    Checked(Path(p)): Checked<Path<DevicePath>>,
    Query(q): Query<ArchQuery>,
) -> Response {
    run(r, p.tenant, p.cid, move |st, d| updates::document(st, d, q.arch.as_deref())).await
}

/// `GET …/dm/updates/catalog`.
pub async fn updates_catalog(
    r: Req,
    Checked(Path(p)): Checked<Path<DevicePath>>,
    Query(q): Query<ArchQuery>,
) -> Response {
    run(r, p.tenant, p.cid, move |st, d| updates::catalog_text(st, d, q.arch.as_deref()).map(Text))
        .await
}

/// `POST …/dm/updates/scan`.
pub async fn updates_scan(
    r: Req,
    Checked(Path(p)): Checked<Path<DevicePath>>,
    body: Body,
) -> Response {
    run(r, p.tenant, p.cid, move |st, d| updates::scan(st, d, body)).await
}

/// `GET …/dm/updates/repo/{repo}/{*path}`: streamed, as artifacts are.
pub async fn updates_file(r: Req, Checked(Path(p)): Checked<Path<RepoPath>>) -> Response {
    streamed(r, p.tenant, p.cid, move |st, d, headers| {
        updates::file(st, d, p.repo, p.path, headers)
    })
    .await
}

/// A text answer.
pub struct Text(Vec<u8>);

impl Reply for Text {
    fn reply(self) -> Response {
        ([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.0).into_response()
    }
}
