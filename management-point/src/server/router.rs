//! The routes of the HTTPS listener: the device API and the console, each request counted in
//! the metrics by what it is and how it was answered.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post, put};

use super::metrics::Counted;
use super::state::AppState;
use super::{console, http, routes};

/// The router of the device API.
pub fn router(state: Arc<AppState>) -> Router {
    let base = "/{tenant}/controller/v1/{cid}";
    let max_body = state.config.server.max_body_bytes;
    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/console/", get(console::pages::index))
        .route("/console/style.css", get(console::style))
        .route("/console/reports", get(console::pages::reports_index))
        .route("/console/audit", get(console::pages::audit))
        .route("/console/do/{op}", post(console::forms::run))
        .route("/console/login", get(console::login_form).post(console::login))
        .route("/console/logout", post(console::logout))
        .route("/console/reports/{name}", get(console::pages::report))
        .route("/console/devices/{tenant}/{cid}", get(console::pages::device))
        .route("/console/search", get(console::pages::search))
        .route("/console/rollouts", get(console::rollouts::list))
        .route("/console/rollouts/{name}", get(console::rollouts::show))
        .route("/console/rollouts/{name}/{action}", post(console::rollouts::act))
        .route(base, get(routes::poll))
        .route(&format!("{base}/deploymentBase/{{id}}"), get(routes::deployment_base))
        .route(&format!("{base}/deploymentBase/{{id}}/feedback"), post(routes::feedback))
        .route(&format!("{base}/confirmationBase"), get(routes::confirmation_base))
        .route(&format!("{base}/confirmationBase/{{id}}"), get(routes::confirmation_action))
        .route(
            &format!("{base}/confirmationBase/{{id}}/feedback"),
            post(routes::confirmation_feedback),
        )
        .route(
            &format!("{base}/confirmationBase/activateAutoConfirm"),
            post(routes::activate_auto_confirm),
        )
        .route(
            &format!("{base}/confirmationBase/deactivateAutoConfirm"),
            post(routes::deactivate_auto_confirm),
        )
        .route(&format!("{base}/cancelAction/{{id}}"), get(routes::cancel_action))
        .route(&format!("{base}/cancelAction/{{id}}/feedback"), post(routes::cancel_feedback))
        .route(&format!("{base}/configData"), put(routes::config_data))
        .route(&format!("{base}/installedBase"), put(routes::set_installed))
        .route(&format!("{base}/installedBase/{{id}}"), get(routes::installed_base))
        .route(&format!("{base}/softwaremodules/{{id}}/artifacts"), get(routes::list_artifacts))
        .route(&format!("{base}/softwaremodules/{{id}}/artifacts/{{file}}"), get(routes::download))
        .route(
            &format!("{base}/{}", dm_shared::ddi::STATUS_MESSAGES_PATH),
            post(routes::status_messages),
        )
        .route(&format!("{base}/{}", dm_shared::ddi::CRLS_PATH), get(routes::crls))
        .route(&format!("{base}/dm/updates"), get(routes::updates))
        .route(&format!("{base}/dm/updates/catalog"), get(routes::updates_catalog))
        .route(&format!("{base}/dm/updates/scan"), post(routes::updates_scan))
        .route(&format!("{base}/dm/updates/repo/{{repo}}/{{*path}}"), get(routes::updates_file))
        .route("/dp/v1/sync", post(super::dps::sync))
        .route("/dp/v1/content/{package}/{file}", get(super::dps::content))
        .merge(super::api::routes())
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), count))
        .fallback(|uri: axum::http::Uri| async move {
            log::warn!("no route for {}", uri.path());
            http::ApiError::not_found(format!("no resource at {}", uri.path()))
        })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Counts each routed request by what it is and how it was answered.
async fn count(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let kind = req.extensions().get::<MatchedPath>().and_then(|p| Counted::of(p.as_str()));
    let resp = next.run(req).await;
    st.metrics.answered(kind, resp.status().as_u16());
    resp
}
