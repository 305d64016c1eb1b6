//! Software updates on the device API (docs/software-updates.md): the updates document (the
//! catalog to scan, the repositories, the device's update deployments), the catalog itself,
//! the scan reports, and the repositories' files: their signed metadata as imported, and the
//! `.deb` of approved updates only.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use dm_shared::updates::{
    self as wire, DeployedUpdate, FileRef, ScanAck, ScanReport, UpdatesDocument,
};

use super::catalog::Catalog;
use super::files::serve_file;
use super::http::{ApiError, push_segment};
use super::poll::base_url;
use super::state::AppState;
use super::update_link::{deployments_of, window_of, window_open};
use crate::admin::updates::{deb_path, metadata_path};
use crate::model::Device;
use crate::model::updates::*;

/// The longest reason or version kept from a device's report.
const MAX_TEXT: usize = 512;

/// The catalog for the view's marker, rebuilt from the store when it moved.
fn catalog(state: &AppState, marker: &str) -> Result<Arc<Catalog>, ApiError> {
    let mut slot = state.catalog.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = slot.as_ref().filter(|c| c.marker == marker) {
        return Ok(c.clone());
    }
    let by_id =
        state.store.updates().map_err(ApiError::from)?.into_iter().map(|u| (u.id, u)).collect();
    let c = Arc::new(Catalog { marker: marker.to_string(), by_id, texts: Default::default() });
    *slot = Some(c.clone());
    Ok(c)
}

/// A device's architecture as it names it (`?arch=`): a dpkg architecture name.
fn arch_of(arch: Option<&str>) -> Result<String, ApiError> {
    let a = arch.unwrap_or("");
    if a.is_empty() || a.len() > 32 || !a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
        return Err(ApiError::bad_request(format!(
            "arch {a:?}: a dpkg architecture name is needed"
        )));
    }
    Ok(a.to_string())
}

fn repo_url(base: &str, repo: &str, path: &str) -> String {
    let mut s = format!("{base}/{}/repo/", wire::UPDATES_PATH);
    push_segment(&mut s, repo);
    s.push('/');
    s.push_str(path);
    s
}

/// `GET …/dm/updates?arch=A`: the document a device scans and installs from.
pub fn document(
    state: &AppState,
    d: &Device,
    arch: Option<&str>,
) -> Result<UpdatesDocument, ApiError> {
    let arch = arch_of(arch)?;
    let view = state.read();
    let Some(m) = view.updates_marker.clone() else {
        return Err(ApiError::not_found("no software update catalog is imported"));
    };
    let cat = catalog(state, &m)?;
    let text = cat.text(&arch);
    let base = base_url(state, &d.tenant, &d.controller_id);
    let repos: HashMap<i64, &UpdateRepository> =
        view.update_repositories.iter().map(|r| (r.id, r)).collect();
    let mut deployments = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for x in deployments_of(&view, d) {
        let updates: Vec<DeployedUpdate> = x
            .updates
            .iter()
            .filter_map(|id| cat.by_id.get(id))
            .filter(|u| u.arch == arch || u.arch == "all")
            .filter_map(|u| {
                let r = repos.get(&u.repository_id)?;
                used.insert(r.id);
                Some(DeployedUpdate {
                    id: u.id,
                    repository: r.name.clone(),
                    package: u.package.clone(),
                    arch: u.arch.clone(),
                    version: u.version.clone(),
                    file: FileRef {
                        path: u.filename.clone(),
                        href: repo_url(&base, &r.name, &u.filename),
                        size: u.size,
                        sha256: u.sha256.clone(),
                    },
                })
            })
            .collect();
        deployments.push(wire::Deployment {
            id: x.id,
            name: x.name.clone(),
            updates,
            available: x.available,
            deadline: x.deadline_of(d.id),
            reboot: x.reboot,
            window: window_of(&view, x).map(|w| w.to_string()),
            window_open: window_open(&view, x, d.id, state.now()),
        });
    }
    let repositories = used
        .iter()
        .filter_map(|id| repos.get(id))
        .map(|r| wire::Repository {
            name: r.name.clone(),
            suite: r.suite.clone(),
            components: r.components.clone(),
            metadata: r
                .metadata
                .iter()
                .filter(|f| {
                    !f.path.contains("/binary-") || f.path.contains(&format!("/binary-{arch}/"))
                })
                .map(|f| FileRef {
                    path: f.path.clone(),
                    href: repo_url(&base, &r.name, &f.path),
                    size: f.size,
                    sha256: f.sha256.clone(),
                })
                .collect(),
        })
        .collect();
    let mut catalog_href = format!("{base}/{}/catalog?arch=", wire::UPDATES_PATH);
    catalog_href.push_str(&arch);
    catalog_href.push_str("&v=");
    catalog_href.push_str(&m);
    Ok(UpdatesDocument {
        catalog_version: m.clone(),
        catalog: FileRef {
            path: format!("catalog-{arch}.txt"),
            href: catalog_href,
            size: text.bytes.len() as u64,
            sha256: text.sha256.clone(),
        },
        repositories,
        deployments,
    })
}

/// `GET …/dm/updates/catalog?arch=A`: the catalog text.
pub fn catalog_text(
    state: &AppState,
    _d: &Device,
    arch: Option<&str>,
) -> Result<Vec<u8>, ApiError> {
    let arch = arch_of(arch)?;
    let Some(m) = state.read().updates_marker.clone() else {
        return Err(ApiError::not_found("no software update catalog is imported"));
    };
    Ok(catalog(state, &m)?.text(&arch).bytes.clone())
}

/// `POST …/dm/updates/scan`: a device's scan changes; 409 when they follow a report the
/// server does not hold as the last (the device then sends a full report).
pub fn scan(
    state: &AppState,
    d: &Device,
    body: Result<Bytes, BytesRejection>,
) -> Result<ScanAck, ApiError> {
    let mut report: ScanReport = super::feedback::parse_json(body, "the scan report")?;
    if report.rows.len() + report.removed.len() > wire::MAX_REPORT_ROWS {
        return Err(ApiError::bad_request(format!(
            "a scan report holds at most {} rows",
            wire::MAX_REPORT_ROWS
        )));
    }
    report.catalog.truncate(64);
    for r in &mut report.rows {
        for t in [&mut r.reason, &mut r.installed].into_iter().flatten() {
            if t.len() > MAX_TEXT {
                let mut end = MAX_TEXT;
                while !t.is_char_boundary(end) {
                    end -= 1;
                }
                t.truncate(end);
            }
        }
    }
    let now = state.now();
    match state.store.apply_update_scan(d.id, &report, now).map_err(ApiError::from)? {
        Some(serial) => {
            log::info!(
                "device {} scanned catalog {}: {} changed, {} no longer apply{}",
                d.controller_id,
                crate::printable::printable(&report.catalog),
                report.rows.len(),
                report.removed.len(),
                if report.base == 0 { " (full report)" } else { "" }
            );
            Ok(ScanAck { serial })
        }
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            "dm.updates.scanBase",
            format!("report {} is not the last one held; send a full report", report.base),
        )),
    }
}

/// `GET …/dm/updates/repo/{repo}/{path}`: a repository's signed metadata as imported, or the
/// `.deb` of an approved update; nothing else (no listing, no unapproved package).
pub async fn file(
    state: Arc<AppState>,
    d: Device,
    repo: String,
    path: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let st = state.clone();
    let found = tokio::task::spawn_blocking(move || find_file(&st, &repo, &path))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let (disk, size, sha256, name) = found;
    serve_file(&disk, size, &sha256, &name, &d.controller_id, &headers).await
}

type Found = (std::path::PathBuf, u64, String, String);

fn find_file(state: &AppState, repo: &str, path: &str) -> Result<Found, ApiError> {
    let view = state.read();
    let r = view
        .update_repositories
        .iter()
        .find(|r| r.name == repo)
        .ok_or_else(|| ApiError::not_found(format!("no repository {repo:?}")))?;
    if let Some(f) = r.metadata.iter().find(|f| f.path == path) {
        return Ok((
            metadata_path(&state.config, r, path),
            f.size,
            f.sha256.clone(),
            path.to_string(),
        ));
    }
    let r = r.clone();
    let m = view.updates_marker.clone().unwrap_or_default();
    drop(view);
    let cat = catalog(state, &m)?;
    let approved =
        |u: &Update| u.repository_id == r.id && u.filename == path && u.approved.is_some();
    let u = match cat.by_id.values().find(|u| approved(u)) {
        Some(u) => u.clone(),
        // Approved since the catalog was read: ask the store.
        None => state
            .store
            .updates()
            .map_err(ApiError::from)?
            .into_iter()
            .find(|u| approved(u))
            .ok_or_else(|| {
                ApiError::not_found(format!("{path} is not an approved update of {repo}"))
            })?,
    };
    Ok((deb_path(&state.config, &r, &u), u.size, u.sha256.clone(), u.filename.clone()))
}
