//! Package content for devices: an artifact list, and each artifact streamed with byte ranges
//! (resumable downloads) and its `.MD5SUM`, only to devices the package is assigned to.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use dm_shared::ddi;

use super::files::serve_file;
use super::http::ApiError;
use super::poll::chunk;
use super::state::{AppState, View};
use crate::model::*;

/// Whether the device has an action for the package (it may download its artifacts).
fn assigned(view: &View, d: &Device, package_id: i64) -> bool {
    view.actions_of(d.id).any(|a| view.deployment_of(a).is_some_and(|(_, _, p)| p.id == package_id))
}

fn artifact_of(
    state: &AppState,
    d: &Device,
    module: &str,
    filename: &str,
) -> Result<(Package, ArtifactRecord, bool), ApiError> {
    let id: i64 = module.parse().map_err(|_| {
        ApiError::bad_request(format!("software module id {module:?} is not a number"))
    })?;
    if !assigned(&state.read(), d, id) {
        state.catch_up(d.id);
    }
    let view = state.read();
    let pkg = view.packages.get(&id).filter(|_| assigned(&view, d, id)).ok_or_else(|| {
        ApiError::not_found(format!(
            "software module {id} is not assigned to device {}",
            d.controller_id
        ))
    })?;
    if let Some(a) = pkg.artifacts.iter().find(|a| a.filename == filename) {
        return Ok((pkg.clone(), a.clone(), false));
    }
    if let Some(base) = filename.strip_suffix(".MD5SUM") {
        if let Some(a) = pkg.artifacts.iter().find(|a| a.filename == base) {
            return Ok((pkg.clone(), a.clone(), true));
        }
    }
    Err(ApiError::not_found(format!(
        "software module {id} has no artifact {:?}",
        filename.chars().take(200).collect::<String>()
    )))
}

/// `GET …/softwaremodules/{id}/artifacts`.
pub fn list_artifacts(
    state: &AppState,
    d: &Device,
    module: &str,
) -> Result<Vec<ddi::Artifact>, ApiError> {
    let id: i64 =
        module.parse().map_err(|_| ApiError::bad_request("software module id is not a number"))?;
    if !assigned(&state.read(), d, id) {
        state.catch_up(d.id);
    }
    let view = state.read();
    let a = view
        .actions_of(d.id)
        .find(|a| view.deployment_of(a).is_some_and(|(_, _, p)| p.id == id))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "software module {id} is not assigned to device {}",
                d.controller_id
            ))
        })?;
    let (adv, prog, pkg) =
        view.deployment_of(a).ok_or_else(|| ApiError::internal("missing package"))?;
    Ok(chunk(state, d, adv, prog, pkg).artifacts)
}

/// `GET …/softwaremodules/{id}/artifacts/{fileName}` (and `{fileName}.MD5SUM`).
pub async fn download(
    state: Arc<AppState>,
    d: Device,
    module: String,
    filename: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (pkg, art, md5sum) = artifact_of(&state, &d, &module, &filename)?;
    if md5sum {
        let body = format!("{}  {}\n", art.md5, art.filename);
        return Ok(([(header::CONTENT_TYPE, "text/plain")], body).into_response());
    }
    let Some(path) = art.path.clone() else {
        return Err(ApiError::not_found(format!(
            "{} is served by {}",
            art.filename,
            pkg.distribution_point.unwrap_or_default()
        )));
    };
    serve_file(&path, art.size, &art.sha256, &art.filename, &d.controller_id, &headers).await
}
