//! The admin commands of `dmmp`: packages, programs, collections, advertisements, devices and
//! status. They write the same database the server reads (the server notices within a second).
//! Output is for people, or JSON with `--json`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use dm_shared::fs::{self as dmfs, MODE_DIR, MODE_PUBLIC};
use dm_shared::manifest::{self, ManifestKind};
use dm_shared::pki::{self, Cert};
use md5::Digest;
use serde_json::{Value, json};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::*;
use crate::store::Storage;

/// Formats Unix seconds for people.
pub fn when(t: Option<i64>) -> String {
    match t {
        Some(t) => dm_shared::clock::rfc3339(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64),
        ),
        None => "never".into(),
    }
}

/// Prints rows as aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

struct Hashed {
    size: u64,
    sha256: String,
    sha1: String,
    md5: String,
}

/// Copies (when `dest` is given) and hashes a file in one pass.
fn hash_copy(src: &Path, dest: Option<&Path>) -> Result<Hashed> {
    use std::io::Write;
    let mut input = std::fs::File::open(src).map_err(dmfs::io_err("open", src))?;
    let mut out = match dest {
        Some(d) => Some(dmfs::AtomicFile::create(d, MODE_PUBLIC)?),
        None => None,
    };
    let mut s256 = ring::digest::Context::new(&ring::digest::SHA256);
    let mut s1 = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    let mut m5 = md5::Md5::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(dmfs::io_err("read", src))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        s256.update(&buf[..n]);
        s1.update(&buf[..n]);
        m5.update(&buf[..n]);
        if let (Some(o), Some(d)) = (out.as_mut(), dest) {
            o.write_all(&buf[..n]).map_err(dmfs::io_err("write", d))?;
        }
    }
    if let Some(o) = out {
        o.commit()?;
    }
    Ok(Hashed {
        size,
        sha256: pki::to_hex(s256.finish().as_ref()),
        sha1: pki::to_hex(s1.finish().as_ref()),
        md5: pki::to_hex(&m5.finalize()),
    })
}

/// Where a package's files come from.
#[derive(Debug, Clone)]
pub enum PackageSource {
    /// A folder signed with `dmpack package` (or a client deployment folder, for an
    /// over-the-air client upgrade), checked against trusted roots.
    Signed {
        /// The folder.
        dir: PathBuf,
        /// PEM roots the publisher must chain to.
        roots: PathBuf,
    },
    /// Files served as they are, for clients with their own signing (SWUpdate images).
    Raw {
        /// The files.
        files: Vec<PathBuf>,
        /// Name.
        name: String,
        /// Version.
        version: String,
        /// Kind.
        kind: PackageKind,
    },
}

fn content_dir_name(name: &str, version: &str) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
            .collect::<String>()
    };
    format!("{}-{}", clean(name), clean(version))
}

/// Imports a package: checks it, copies its files into the content folder (unless an
/// external distribution point serves them) and records it.
pub fn add_package(
    cfg: &Config,
    store: &dyn Storage,
    source: &PackageSource,
    distribution_point: Option<&str>,
    now: i64,
) -> Result<Package> {
    if let Some(dp) = distribution_point {
        if !dp.starts_with("https://") {
            return Err(Error::Usage(format!(
                "--distribution-point {dp:?} must be an https:// URL"
            )));
        }
    }
    let (name, version, kind, publisher, files): (
        String,
        String,
        PackageKind,
        Option<String>,
        Vec<(String, PathBuf)>,
    ) = match source {
        PackageSource::Signed { dir, roots } => {
            let roots = Cert::load_pem(roots)?;
            let v = manifest::verify_folder(dir, &roots, std::time::SystemTime::now())?;
            let kind = match v.manifest.kind {
                ManifestKind::SoftwareDistribution => PackageKind::SoftwareDistribution,
                ManifestKind::Configuration => PackageKind::Configuration,
                ManifestKind::ClientDeployment => PackageKind::ClientUpgrade,
            };
            let mut files: Vec<(String, PathBuf)> =
                v.manifest.files.iter().map(|f| (f.path.clone(), dir.join(&f.path))).collect();
            for sig in [manifest::MANIFEST_FILE, manifest::SIGNATURE_FILE, manifest::PUBLISHER_FILE]
            {
                files.push((sig.to_string(), dir.join(sig)));
            }
            (
                v.manifest.name.clone(),
                v.manifest.version.to_string(),
                kind,
                Some(v.publisher.subject().to_string()),
                files,
            )
        }
        PackageSource::Raw { files, name, version, kind } => {
            let mut named = Vec::new();
            for f in files {
                let n = f
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| Error::Usage(format!("{}: not a file name", f.display())))?;
                manifest::check_relative_path(n)?;
                named.push((n.to_string(), f.clone()));
            }
            (name.clone(), version.clone(), *kind, None, named)
        }
    };
    if store.packages()?.iter().any(|p| p.name == name && p.version == version) {
        return Err(Error::Conflict(format!("package {name} {version} already exists")));
    }
    let content = cfg.content().join(content_dir_name(&name, &version));
    if distribution_point.is_none() {
        dmfs::remove_dir_all(&content)?;
        dmfs::create_dir_all(&content, MODE_DIR)?;
    }
    let mut artifacts = Vec::new();
    for (fname, src) in &files {
        let dest = distribution_point.is_none().then(|| content.join(fname.replace('/', "%2F")));
        let h = hash_copy(src, dest.as_deref())?;
        artifacts.push(ArtifactRecord {
            filename: fname.clone(),
            size: h.size,
            sha256: h.sha256,
            sha1: h.sha1,
            md5: h.md5,
            path: dest,
        });
    }
    let mut pkg = Package {
        id: 0,
        name,
        version,
        kind,
        publisher,
        distribution_point: distribution_point.map(str::to_string),
        created: now,
        artifacts,
    };
    pkg.id = store.add_package(&pkg)?;
    Ok(pkg)
}

/// Finds a package by id, `name` (when only one version) or `name@version`.
pub fn find_package(store: &dyn Storage, r: &str) -> Result<Package> {
    let all = store.packages()?;
    if let Ok(id) = r.parse::<i64>() {
        if let Some(p) = all.iter().find(|p| p.id == id) {
            return Ok(p.clone());
        }
    }
    let (name, version) = r.split_once('@').map_or((r, None), |(n, v)| (n, Some(v)));
    let mut hits: Vec<_> = all
        .into_iter()
        .filter(|p| p.name == name && version.is_none_or(|v| p.version == v))
        .collect();
    match (hits.len(), hits.pop()) {
        (1, Some(p)) => Ok(p),
        (0, _) | (_, None) => Err(Error::NotFound(format!("package {r}"))),
        (n, _) => Err(Error::Usage(format!(
            "{n} versions of package {name}: say which with {name}@VERSION"
        ))),
    }
}

fn find_by<T: Clone>(
    items: Vec<T>,
    r: &str,
    what: &str,
    id: impl Fn(&T) -> i64,
    name: impl Fn(&T) -> &str,
) -> Result<T> {
    let by_id = r.parse::<i64>().ok();
    items
        .iter()
        .find(|i| Some(id(i)) == by_id || name(i) == r)
        .cloned()
        .ok_or_else(|| Error::NotFound(format!("{what} {r}")))
}

/// Finds a program by id or name.
pub fn find_program(store: &dyn Storage, r: &str) -> Result<Program> {
    find_by(store.programs()?, r, "program", |p| p.id, |p| &p.name)
}

/// Finds a collection by id or name.
pub fn find_collection(store: &dyn Storage, r: &str) -> Result<Collection> {
    find_by(store.collections()?, r, "collection", |c| c.id, |c| &c.name)
}

/// Finds an advertisement by id or name.
pub fn find_advertisement(store: &dyn Storage, r: &str) -> Result<Advertisement> {
    find_by(store.advertisements()?, r, "advertisement", |a| a.id, |a| &a.name)
}

/// Finds a device by controller id (in any tenant, when unique) or `tenant/controller-id`.
pub fn find_device(store: &dyn Storage, r: &str) -> Result<Device> {
    let (tenant, cid) = r.split_once('/').map_or((None, r), |(t, c)| (Some(t), c));
    let hits: Vec<Device> = store
        .devices()?
        .into_iter()
        .filter(|d| d.controller_id == cid && tenant.is_none_or(|t| d.tenant == t))
        .collect();
    match hits.len() {
        1 => Ok(hits[0].clone()),
        0 => Err(Error::NotFound(format!("device {r}"))),
        _ => Err(Error::Usage(format!("device {cid} exists in several tenants: say TENANT/{cid}"))),
    }
}

/// Lists packages.
pub fn package_list(store: &dyn Storage) -> Result<(String, Value)> {
    let ps = store.packages()?;
    let rows: Vec<Vec<String>> = ps
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                p.name.clone(),
                p.version.clone(),
                p.kind.as_str().into(),
                p.artifacts.len().to_string(),
                p.artifacts.iter().map(|a| a.size).sum::<u64>().to_string(),
                p.distribution_point.clone().unwrap_or_else(|| "this server".into()),
                p.publisher.clone().unwrap_or_else(|| "(unsigned)".into()),
            ]
        })
        .collect();
    Ok((
        table(
            &["ID", "NAME", "VERSION", "KIND", "FILES", "BYTES", "SERVED BY", "PUBLISHER"],
            &rows,
        ),
        json!(ps),
    ))
}

/// Lists programs.
pub fn program_list(store: &dyn Storage) -> Result<(String, Value)> {
    let pkgs: BTreeMap<i64, Package> = store.packages()?.into_iter().map(|p| (p.id, p)).collect();
    let ps = store.programs()?;
    let rows: Vec<Vec<String>> = ps
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                p.name.clone(),
                pkgs.get(&p.package_id).map_or("?".into(), |k| format!("{} {}", k.name, k.version)),
                p.command.clone(),
                if p.platforms.is_empty() { "any".into() } else { p.platforms.join(",") },
                format!("{}s", p.max_run_time),
                p.device_class.to_string(),
            ]
        })
        .collect();
    Ok((
        table(&["ID", "NAME", "PACKAGE", "COMMAND", "PLATFORMS", "MAX RUN", "CLASS"], &rows),
        json!(ps),
    ))
}

/// Lists collections with their current member counts.
pub fn collection_list(store: &dyn Storage) -> Result<(String, Value)> {
    let devices = store.devices()?;
    let cs = store.collections()?;
    let rows: Vec<Vec<String>> = cs
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.name.clone(),
                c.rule.to_string(),
                devices.iter().filter(|d| c.contains(d)).count().to_string(),
            ]
        })
        .collect();
    Ok((table(&["ID", "NAME", "RULE", "MEMBERS"], &rows), json!(cs)))
}

/// The members of a collection now.
pub fn collection_members(store: &dyn Storage, c: &Collection) -> Result<(String, Value)> {
    let members: Vec<Device> = store.devices()?.into_iter().filter(|d| c.contains(d)).collect();
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|d| {
            vec![
                d.tenant.clone(),
                d.controller_id.clone(),
                d.attr(attr::PLATFORM).unwrap_or("?").into(),
                d.attr(attr::CLIENT_VERSION).unwrap_or("?").into(),
            ]
        })
        .collect();
    Ok((table(&["TENANT", "CONTROLLER ID", "PLATFORM", "CLIENT"], &rows), json!(members)))
}

/// Lists advertisements.
pub fn advertisement_list(store: &dyn Storage, now: i64) -> Result<(String, Value)> {
    let progs: BTreeMap<i64, Program> = store.programs()?.into_iter().map(|p| (p.id, p)).collect();
    let cols: BTreeMap<i64, Collection> =
        store.collections()?.into_iter().map(|c| (c.id, c)).collect();
    let ads = store.advertisements()?;
    let rows: Vec<Vec<String>> = ads
        .iter()
        .map(|a| {
            let state = if a.canceled {
                "canceled"
            } else if a.start_time > now {
                "pending"
            } else if a.expires.is_some_and(|e| e <= now) {
                "expired"
            } else {
                "active"
            };
            vec![
                a.id.to_string(),
                a.name.clone(),
                a.kind.as_str().into(),
                progs.get(&a.program_id).map_or("?".into(), |p| p.name.clone()),
                cols.get(&a.collection_id).map_or("?".into(), |c| c.name.clone()),
                state.into(),
                when(Some(a.start_time)),
                a.window.map_or("-".into(), |w| w.to_string()),
            ]
        })
        .collect();
    Ok((
        table(&["ID", "NAME", "KIND", "PROGRAM", "COLLECTION", "STATE", "START", "WINDOW"], &rows),
        json!(ads),
    ))
}

/// Counts per state for one advertisement, and each targeted device's state.
pub fn advertisement_status(store: &dyn Storage, a: &Advertisement) -> Result<(String, Value)> {
    let devices: BTreeMap<i64, Device> = store.devices()?.into_iter().map(|d| (d.id, d)).collect();
    let collection = store.collections()?.into_iter().find(|c| c.id == a.collection_id);
    let actions: Vec<Action> =
        store.actions()?.into_iter().filter(|x| x.advertisement_id == a.id).collect();
    let mut counts: BTreeMap<&str, usize> =
        ActionStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    let mut rows = Vec::new();
    let mut per_device = Vec::new();
    for ac in &actions {
        *counts.entry(ac.status.as_str()).or_default() += 1;
        let d = devices.get(&ac.device_id);
        let last = store.statuses_for_action(ac.id)?.pop();
        let detail = last.as_ref().map(|r| r.details.join("; ")).unwrap_or_default();
        let cid = d.map_or("?".to_string(), |d| d.controller_id.clone());
        rows.push(vec![
            cid.clone(),
            ac.status.as_str().into(),
            ac.last_code.map_or("-".into(), |c| c.to_string()),
            detail.chars().take(100).collect(),
        ]);
        per_device.push(json!({"device": cid, "action": ac.id, "status": ac.status.as_str(), "last_code": ac.last_code, "last_details": last.map(|r| r.details)}));
    }
    let not_yet = match &collection {
        Some(c) => devices
            .values()
            .filter(|d| c.contains(d) && !actions.iter().any(|x| x.device_id == d.id))
            .count(),
        None => 0,
    };
    let mut text = format!(
        "advertisement {} {:?} ({}{})\n",
        a.id,
        a.name,
        a.kind.as_str(),
        if a.canceled { ", canceled" } else { "" }
    );
    text.push_str(&format!(
        "  actions: {}, targeted devices not yet polled: {not_yet}\n  ",
        actions.len()
    ));
    text.push_str(&counts.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("  "));
    text.push_str("\n\n");
    text.push_str(&table(&["DEVICE", "STATUS", "CODE", "LAST DETAILS"], &rows));
    Ok((
        text,
        json!({"advertisement": a, "counts": counts, "not_yet_polled": not_yet, "devices": per_device}),
    ))
}

/// Lists devices.
pub fn device_list(store: &dyn Storage) -> Result<(String, Value)> {
    let ds = store.devices()?;
    let rows: Vec<Vec<String>> = ds
        .iter()
        .map(|d| {
            vec![
                d.tenant.clone(),
                d.controller_id.clone(),
                d.attr(attr::PLATFORM).unwrap_or("?").into(),
                d.attr(attr::CLIENT_VERSION).unwrap_or("?").into(),
                when(d.last_seen),
                d.registered_by.clone(),
            ]
        })
        .collect();
    Ok((
        table(
            &["TENANT", "CONTROLLER ID", "PLATFORM", "CLIENT", "LAST POLL", "REGISTERED BY"],
            &rows,
        ),
        json!(ds),
    ))
}

/// One device: inventory, last poll, actions and status history.
pub fn device_show(store: &dyn Storage, d: &Device) -> Result<(String, Value)> {
    let history = store.statuses_for_device(d.id)?;
    let actions: Vec<Action> =
        store.actions()?.into_iter().filter(|a| a.device_id == d.id).collect();
    let mut text = format!(
        "device {}/{} (id {})\n  registered {} by {}\n  last poll  {}\n\ninventory\n",
        d.tenant,
        d.controller_id,
        d.id,
        when(Some(d.created)),
        d.registered_by,
        when(d.last_seen)
    );
    for (k, v) in &d.attributes {
        text.push_str(&format!("  {k} = {v}\n"));
    }
    text.push_str("\nactions\n");
    let arows: Vec<Vec<String>> = actions
        .iter()
        .map(|a| {
            vec![
                a.id.to_string(),
                a.advertisement_id.to_string(),
                a.status.as_str().into(),
                when(Some(a.updated)),
            ]
        })
        .collect();
    text.push_str(&table(&["ACTION", "ADVERTISEMENT", "STATUS", "UPDATED"], &arows));
    text.push_str("\nstatus history\n");
    let hrows: Vec<Vec<String>> = history
        .iter()
        .map(|r| {
            vec![
                when(Some(r.received)),
                r.action_id.map_or("-".into(), |a| a.to_string()),
                r.component.clone().unwrap_or_else(|| r.source.clone()),
                format!(
                    "{} {}",
                    r.execution.as_deref().unwrap_or("-"),
                    r.finished.as_deref().unwrap_or("")
                )
                .trim()
                .to_string(),
                r.message_id.map_or("-".into(), |c| c.to_string()),
                r.hresult.clone().unwrap_or_else(|| "-".into()),
                r.details.join("; ").chars().take(120).collect(),
            ]
        })
        .collect();
    text.push_str(&table(
        &["RECEIVED", "ACTION", "FROM", "EXECUTION", "MESSAGE", "CODE", "DETAILS"],
        &hrows,
    ));
    Ok((text, json!({"device": d, "actions": actions, "history": history})))
}

/// A fresh random token (for `device add`).
pub fn new_token() -> String {
    let mut b = [0u8; 24];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    pki::to_hex(&b)
}
