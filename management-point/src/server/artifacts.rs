//! Package content for devices: an artifact list, and each artifact streamed with byte ranges
//! (resumable downloads) and its `.MD5SUM`, only to devices the package is assigned to.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dm_shared::ddi;

use super::http::{ApiError, parse_range};
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

/// Streams the file at `path` (`size` bytes, named `name` in messages) to device `who`,
/// the byte range the request asks for when it asks for one.
pub async fn serve_file(
    path: &std::path::Path,
    size: u64,
    sha256: &str,
    name: &str,
    who: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = match parse_range(range_header, size) {
        Ok(r) => r,
        Err(()) => {
            let mut r = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "dm.request.range",
                format!("range {range_header:?} is outside the {} bytes of {}", size, name),
            )
            .into_response();
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                format!("bytes */{}", size).parse().map_err(|_| ApiError::internal("header"))?,
            );
            return Ok(r);
        }
    };
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    let (status, start, len) = match range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.start, r.end - r.start + 1),
        None => (StatusCode::OK, 0, size),
    };
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 * 1024);
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{}\"", sha256));
    if let Some(r) = range {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {}-{}/{}", r.start, r.end, size));
    }
    if start > 0 {
        log::info!("device {} resumes {} from byte {start} ({len} bytes left)", who, name);
    } else {
        log::debug!("device {} downloads {} ({len} bytes)", who, name);
    }
    resp.body(Body::from_stream(stream)).map_err(|e| ApiError::internal(e.to_string()))
}
