//! The management point's side of distribution points (docs/distribution-points.md): their
//! reports (`POST /dp/v1/sync`, answered with what each is to hold), the content they copy
//! from here (`GET /dp/v1/content/{package}/{file}`), the links devices get to them, and the
//! tick that marks copies of silent ones retrying, then failed.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::conn_info::ConnInfo;
use super::dp_cache::Cache;
use super::http::{ApiError, encode_segment};
use super::state::AppState;
use crate::distribution::{self as dist, Assignment, DistributionPoint, DpContent, Hold, HoldFile};
use crate::error::Result;
use crate::model::{Device, Package};

/// The largest report read (it lists what a distribution point holds).
const MAX_REPORT: usize = 4 << 20;

/// The distribution points device `d` downloads package `pkg` from, nearest first (found
/// once per deployment, for all its files), and until when links to them are good.
pub struct Nearest {
    points: Vec<(String, String)>,
    package: i64,
    device: String,
    expires: i64,
}

impl Nearest {
    /// Those of `d`'s boundary holding `pkg` (none for a package an external server holds).
    pub fn of(st: &AppState, d: &Device, pkg: &Package) -> Nearest {
        let cache = st.dist.cache();
        let now = st.now();
        let points = if cache.rows.is_empty() || pkg.distribution_point.is_some() {
            Vec::new()
        } else {
            let site = d.attr(crate::model::attr::SITE_CODE);
            let fresh = st.config.distribution.silent_after();
            let near = dist::sources(
                &cache.points,
                &cache.rows,
                pkg.id,
                st.dist.peer(d.id),
                site,
                now,
                fresh,
            );
            near.iter().map(|dp| (dp.url.clone(), dp.link_key.clone())).collect()
        };
        Nearest {
            points,
            package: pkg.id,
            device: d.controller_id.clone(),
            expires: now + st.config.distribution.link_lifetime_secs as i64,
        }
    }

    /// The URLs of file `file`: a signed link to each, nearest first, then `own` (the
    /// management point's).
    pub fn urls(&self, file: &str, own: String) -> Vec<String> {
        let link = |(url, key): &(String, String)| {
            format!("{url}{}", dist::link(key, self.package, file, &self.device, self.expires))
        };
        let mut urls: Vec<String> = self.points.iter().map(link).collect();
        urls.push(own);
        urls
    }
}

/// Marks the copies and removals of silent distribution points retrying, then failed, and
/// re-reads what other processes changed.
pub fn tick(st: &AppState) -> Result<()> {
    st.dist.reload(st.store.as_ref())?;
    let cache = st.dist.cache();
    let cfg = &st.config.distribution;
    let now = st.now();
    let mut changed = Vec::new();
    for dp in &cache.points {
        let rows: Vec<DpContent> =
            cache.rows.iter().filter(|r| r.dp_id == dp.id).cloned().collect();
        for r in dist::silence(
            &rows,
            dp.health.last_contact,
            now,
            st.config.distribution.silent_after(),
            cfg.fail_after_secs as i64,
        ) {
            log::warn!(
                "distribution point {}: package {} {} is {}: {}",
                dp.name,
                r.package_id,
                r.source_version,
                r.state,
                r.reason.as_deref().unwrap_or("")
            );
            if let Some(was) = rows.iter().find(|w| w.package_id == r.package_id) {
                changed.push((was.clone(), Some(r)));
            }
        }
    }
    if !changed.is_empty() {
        st.store.swap_dp_contents(&changed)?;
        st.dist.reload(st.store.as_ref())?;
    }
    Ok(())
}

/// The distribution point a request's `Authorization: DpToken …` names.
fn authenticate(
    st: &AppState,
    headers: &HeaderMap,
) -> std::result::Result<DistributionPoint, ApiError> {
    let secret = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("DpToken "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::unauthorized(
                "a distribution point presents its credential: Authorization: DpToken …",
            )
        })?;
    let hash = crate::api::token_hash(secret);
    let find = |c: &Cache| c.points.iter().find(|d| d.token_sha256 == hash).cloned();
    if let Some(dp) = find(&st.dist.cache()) {
        return Ok(dp);
    }
    // One just added is found at once; unknown credentials cannot make every request a
    // reload (at most one a second; the tick reloads every 5 s anyway).
    if st.dist.may_reload(st.now()) {
        st.dist.reload(st.store.as_ref()).map_err(ApiError::from)?;
    }
    find(&st.dist.cache())
        .ok_or_else(|| ApiError::unauthorized("the credential is no distribution point's"))
}

/// Runs `f` for an authenticated distribution point off the async threads; a refusal is
/// logged with the peer's address (and answered after a pause, as the API's are).
async fn as_dp<T: Send + 'static>(
    st: Arc<AppState>,
    headers: HeaderMap,
    peer: String,
    what: &'static str,
    f: impl FnOnce(&AppState, DistributionPoint) -> std::result::Result<T, ApiError> + Send + 'static,
) -> std::result::Result<T, ApiError> {
    let r = tokio::task::spawn_blocking(move || {
        let dp = authenticate(&st, &headers)?;
        f(&st, dp)
    })
    .await
    .unwrap_or_else(|e| Err(ApiError::internal(format!("handler failed: {e}"))));
    if let Err(e) = &r {
        log::warn!("distribution point {what} from {peer} refused: {}", e.message);
        if e.status == axum::http::StatusCode::UNAUTHORIZED {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
    r
}

fn peer_of(conn: Option<axum::Extension<ConnInfo>>) -> String {
    conn.map_or_else(|| "unknown".into(), |c| c.peer.ip().to_string())
}

/// `POST /dp/v1/sync`: a distribution point's report; the answer is its [`Assignment`].
pub async fn sync(
    State(st): State<Arc<AppState>>,
    conn: Option<axum::Extension<ConnInfo>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = peer_of(conn);
    let r = as_dp(st, headers, peer, "report", move |st, dp| {
        if body.len() > MAX_REPORT {
            return Err(ApiError::bad_request(format!("a report is at most {MAX_REPORT} bytes")));
        }
        let report: dist::Report = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the report: {e}")))?;
        record(st, &dp, &report).map_err(ApiError::from)?;
        assignment(st, &dp).map_err(ApiError::from)
    })
    .await;
    match r {
        Ok(a) => axum::Json(a).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Records a report: the distribution point's health, and its rows moved as it says.
fn record(st: &AppState, dp: &DistributionPoint, r: &dist::Report) -> Result<()> {
    let now = st.now();
    let mut health = dp.health.clone();
    health.last_contact = Some(now);
    health.free_bytes = Some(r.free_bytes);
    health.last_validated = r.last_validated.or(health.last_validated);
    for e in &r.content_errors {
        log::warn!(
            "distribution point {}: package {} file {}: {}",
            dp.name,
            e.package,
            crate::printable::printable(&e.file),
            crate::printable::printable(&e.reason)
        );
        let line = format!("package {} {}: {}", e.package, e.file, e.reason);
        let line: String = crate::printable::printable(&line).chars().take(300).collect();
        health.content_errors.insert(0, line);
    }
    health.content_errors.truncate(20);
    st.store.set_dp_health(dp.id, &health)?;
    // Read now, not from the cache: an administrator may have just changed them.
    let rows: Vec<DpContent> =
        st.store.dp_contents()?.into_iter().filter(|x| x.dp_id == dp.id).collect();
    let fail_after = st.config.distribution.fail_after_secs as i64;
    let mut swaps = Vec::new();
    let was = |package: i64| rows.iter().find(|w| w.package_id == package).cloned();
    for c in dist::reconcile(&rows, r, now, fail_after) {
        match c {
            dist::Change::Put(row) => {
                log::info!(
                    "distribution point {}: package {} {} is {}{}",
                    dp.name,
                    row.package_id,
                    row.source_version,
                    row.state,
                    row.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
                );
                if let Some(w) = was(row.package_id) {
                    swaps.push((w, Some(row)));
                }
            }
            dist::Change::Delete { package_id } => {
                log::info!("distribution point {}: package {package_id} removed", dp.name);
                if let Some(w) = was(package_id) {
                    swaps.push((w, None));
                }
            }
        }
    }
    // Only rows still as read: an administrator's change since is kept (the next report
    // is reconciled with it).
    let written = st.store.swap_dp_contents(&swaps)?;
    if written < swaps.len() {
        log::info!(
            "distribution point {}: {} of its rows changed while its report was read; kept as they are",
            dp.name,
            swaps.len() - written
        );
    }
    st.dist.reload(st.store.as_ref())
}

/// What `dp` is to hold, each file with where to copy it from.
fn assignment(st: &AppState, dp: &DistributionPoint) -> Result<Assignment> {
    let cache = st.dist.cache();
    let view = st.read();
    let cfg = &st.config.distribution;
    let now = st.now();
    let upstream = dp.pull_from.and_then(|id| cache.points.iter().find(|p| p.id == id));
    let mut hold = Vec::new();
    // A failed copy is not tried again until an administrator refreshes it.
    let wanted = |r: &&DpContent| {
        r.dp_id == dp.id && r.state.holding() && r.state != dist::DpState::InstallFailed
    };
    for row in cache.rows.iter().filter(wanted) {
        let Some(pkg) = view.packages.get(&row.package_id) else { continue };
        let up = upstream.filter(|u| {
            u.health.reachable(now, st.config.distribution.silent_after())
                && cache.rows.iter().any(|r| {
                    r.dp_id == u.id && r.package_id == pkg.id && r.state == dist::DpState::Installed
                })
        });
        let files = pkg
            .artifacts
            .iter()
            .map(|a| {
                let mut sources = Vec::new();
                if let Some(u) = up {
                    let who = format!("dp:{}", dp.name);
                    let expires = now + cfg.link_lifetime_secs as i64;
                    sources.push(format!(
                        "{}{}",
                        u.url,
                        dist::link(&u.link_key, pkg.id, &a.filename, &who, expires)
                    ));
                }
                // A path: on the management point as the distribution point reaches it.
                sources.push(format!("/dp/v1/content/{}/{}", pkg.id, encode_segment(&a.filename)));
                HoldFile {
                    name: a.filename.clone(),
                    size: a.size,
                    sha256: a.sha256.clone(),
                    sources,
                }
            })
            .collect();
        hold.push(Hold {
            package: pkg.id,
            name: pkg.name.clone(),
            version: pkg.version.clone(),
            bundle: pkg.artifacts.len() == 1
                && pkg.artifacts[0]
                    .filename
                    .ends_with(&format!(".{}", dm_shared::bundle::EXTENSION)),
            signed: pkg.publisher.is_some(),
            refresh: row.refresh,
            validate: row.validate,
            files,
        });
    }
    Ok(Assignment {
        sync_secs: cfg.sync_secs,
        rate_limit_kib: dp.rate_limit_kib,
        window: dp.window.clone(),
        validate_every_secs: cfg.validate_every_secs,
        hold,
    })
}

/// `GET /dp/v1/content/{package}/{file}`: a file a distribution point is to hold, with byte
/// ranges (its copies resume).
pub async fn content(
    State(st): State<Arc<AppState>>,
    conn: Option<axum::Extension<ConnInfo>>,
    headers: HeaderMap,
    Path((package, file)): Path<(i64, String)>,
) -> Response {
    let peer = peer_of(conn);
    let h2 = headers.clone();
    let found = as_dp(st, headers, peer, "copy", move |st, dp| {
        let holds = st
            .dist
            .cache()
            .rows
            .iter()
            .any(|r| r.dp_id == dp.id && r.package_id == package && r.state.holding());
        let view = st.read();
        let pkg = view.packages.get(&package).filter(|_| holds).ok_or_else(|| {
            ApiError::not_found(format!(
                "distribution point {} is not to hold package {package}",
                dp.name
            ))
        })?;
        let a = pkg.artifacts.iter().find(|a| a.filename == file).ok_or_else(|| {
            ApiError::not_found(format!(
                "package {package} has no file {:?}",
                file.chars().take(200).collect::<String>()
            ))
        })?;
        let path = a.path.clone().ok_or_else(|| ApiError::not_found("served elsewhere"))?;
        Ok((path, a.size, a.sha256.clone(), a.filename.clone(), dp.name))
    })
    .await;
    let r = match found {
        Ok((path, size, sha, name, who)) => {
            super::files::serve_file(&path, size, &sha, &name, &format!("dp:{who}"), &h2).await
        }
        Err(e) => Err(e),
    };
    r.unwrap_or_else(IntoResponse::into_response)
}

/// The distribution points' metrics (Prometheus text).
pub fn metrics(st: &AppState) -> String {
    let cache = st.dist.cache();
    let now = st.now();
    let mut s = String::from(
        "# HELP dmmp_distribution_point_up Whether a distribution point reported within three sync intervals.\n\
         # TYPE dmmp_distribution_point_up gauge\n",
    );
    let label = |n: &str| n.replace(['\\', '"', '\n'], "_");
    for dp in &cache.points {
        let up = dp.health.reachable(now, st.config.distribution.silent_after());
        s.push_str(&format!(
            "dmmp_distribution_point_up{{name=\"{}\"}} {}\n",
            label(&dp.name),
            u8::from(up)
        ));
    }
    s.push_str("# HELP dmmp_distribution_point_free_bytes Free bytes where a distribution point keeps content.\n# TYPE dmmp_distribution_point_free_bytes gauge\n");
    for dp in &cache.points {
        if let Some(b) = dp.health.free_bytes {
            s.push_str(&format!(
                "dmmp_distribution_point_free_bytes{{name=\"{}\"}} {b}\n",
                label(&dp.name)
            ));
        }
    }
    s.push_str("# HELP dmmp_distribution_point_content_errors Content errors a distribution point's validations found (the last 20).\n# TYPE dmmp_distribution_point_content_errors gauge\n");
    for dp in &cache.points {
        s.push_str(&format!(
            "dmmp_distribution_point_content_errors{{name=\"{}\"}} {}\n",
            label(&dp.name),
            dp.health.content_errors.len()
        ));
    }
    s.push_str("# HELP dmmp_distribution_point_packages Packages on a distribution point by state.\n# TYPE dmmp_distribution_point_packages gauge\n");
    for dp in &cache.points {
        for state in dist::DpState::ALL {
            let n = cache.rows.iter().filter(|r| r.dp_id == dp.id && r.state == state).count();
            s.push_str(&format!(
                "dmmp_distribution_point_packages{{name=\"{}\",state=\"{state}\"}} {n}\n",
                label(&dp.name)
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::fixture::Fixture;
    use super::*;
    use crate::admin::dps::{NewDp, add, distribute};
    use crate::distribution::{Held, Report};
    use crate::model::{AdvertisementKind, Device};

    fn new_dp(f: &Fixture, name: &str, pull_from: Option<&str>, boundary: &[String]) -> String {
        let n = NewDp {
            name,
            url: &format!("https://{name}:8443"),
            site: "",
            boundaries: boundary,
            pull_from,
            rate_limit_kib: 0,
            window: None,
        };
        let out = add(f.state.store.as_ref(), &n, f.state.now()).unwrap();
        out.json["credential"].as_str().unwrap().to_string()
    }

    fn as_dp(f: &Fixture, credential: &str) -> Result<DistributionPoint, ApiError> {
        authenticate(&f.state, &Fixture::auth(&format!("DpToken {credential}")))
    }

    fn report(f: &Fixture, dp: &DistributionPoint, held: &[i64]) -> Assignment {
        let held = held
            .iter()
            .map(|p| Held { package: *p, copied: f.state.now(), refresh: 0, validated: 0 })
            .collect();
        record(&f.state, dp, &Report { free_bytes: 1 << 30, held, ..Report::default() }).unwrap();
        assignment(&f.state, dp).unwrap()
    }

    fn links(f: &Fixture, d: &Device, adv: i64) -> Vec<String> {
        super::super::poll::poll(&f.state, d).unwrap();
        let id = f.state.read().actions_of(d.id).find(|a| a.advertisement_id == adv).unwrap().id;
        let q = Default::default();
        let dep = super::super::poll::deployment_base(&f.state, d, &id.to_string(), &q).unwrap();
        let a = &dep.deployment.chunks[0].artifacts[0];
        dm_shared::ddi::download_links(&a.links).into_iter().map(String::from).collect()
    }

    #[test]
    fn reports_install_content_and_devices_are_sent_to_the_nearest_that_holds_it() {
        let f = Fixture::new(|_| {});
        let adv = f.advertise("tool", AdvertisementKind::Mandatory);
        let package = f.state.read().programs[&adv.program_id].package_id;
        let store = f.state.store.as_ref();
        let hq = new_dp(&f, "hq", None, &[]);
        let near = new_dp(&f, "near", Some("hq"), &["127.0.0.0/8".into()]);
        let all = ["hq".to_string(), "near".to_string()];
        distribute(store, &package.to_string(), &all, f.state.now()).unwrap();
        f.state.dist.reload(store).unwrap();

        // Credentials: a wrong one is refused; each names its own distribution point.
        assert_eq!(
            as_dp(&f, "dmdp_wrong").unwrap_err().status,
            axum::http::StatusCode::UNAUTHORIZED
        );
        let (hq, near) = (as_dp(&f, &hq).unwrap(), as_dp(&f, &near).unwrap());
        assert_eq!((hq.name.as_str(), near.name.as_str()), ("hq", "near"));

        // Before hq holds it, near copies from the management point only.
        let a = report(&f, &near, &[]);
        assert_eq!(a.hold[0].files[0].sources, [format!("/dp/v1/content/{package}/run.sh")]);
        // Once hq holds it, from hq first (a link hq accepts for near), then here.
        report(&f, &hq, &[package]);
        let a = report(&f, &near, &[]);
        let src = &a.hold[0].files[0].sources;
        assert_eq!(src.len(), 2, "{src:?}");
        let q = src[0].strip_prefix(&format!("https://hq:8443/content/{package}/run.sh?")).unwrap();
        let param =
            |k: &str| q.split('&').find_map(|kv| kv.strip_prefix(&format!("{k}="))).unwrap();
        let expires: i64 = param("expires").parse().unwrap();
        assert_eq!(param("device"), "dp%3Anear");
        let ok = dist::check_link(
            &hq.link_key,
            package,
            "run.sh",
            "dp:near",
            expires,
            param("sig"),
            f.state.now(),
        );
        assert_eq!(ok, Ok(()));

        // A device in near's boundary: the management point until near holds it, then near
        // first and the management point last (hq is not in its boundary).
        let d = f.device("dev-1", "tok-1");
        let l = links(&f, &d, adv.id);
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(l[0].contains("/softwaremodules/"), "{l:?}");
        report(&f, &near, &[package]);
        let l = links(&f, &d, adv.id);
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(
            l[0].starts_with(&format!("https://near:8443/content/{package}/run.sh?device=dev-1&")),
            "{l:?}"
        );
        assert!(l[1].contains("/softwaremodules/"), "{l:?}");
        let states: Vec<_> = f.state.dist.cache().rows.iter().map(|r| r.state).collect();
        assert_eq!(states, [dist::DpState::Installed, dist::DpState::Installed]);
        let m = metrics(&f.state);
        assert!(m.contains("dmmp_distribution_point_up{name=\"near\"} 1"), "{m}");
        assert!(
            m.contains("dmmp_distribution_point_packages{name=\"hq\",state=\"installed\"} 1"),
            "{m}"
        );
        let h = f.state.health();
        assert_eq!(h["distribution_points"][1]["packages"]["installed"], 1, "{h}");
    }
}
