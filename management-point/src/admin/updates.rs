//! `dmmp update`: the software update catalog (import, list, approve, approval rules),
//! update deployments, and compliance (docs/software-updates.md).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde_json::json;

use super::{Out, find_collection, table, when};
use crate::config::Config;
use crate::debrepo::{self, Source};
use crate::error::{Error, Result};
use crate::model::updates::*;
use crate::model::*;
use crate::storage::Storage;

/// What `dmmp update import` is given.
#[derive(Debug, Clone)]
pub struct ImportArgs {
    /// The repository's name on the management point.
    pub name: String,
    /// The folder holding `dists/` and `pool/`, or its http(s) URL.
    pub source: String,
    /// PEM roots an https source's certificate must chain to (default: the system's).
    pub source_ca: Option<PathBuf>,
    /// The suite.
    pub suite: String,
    /// The keyring the release file must verify against.
    pub keyring: PathBuf,
    /// Components (empty: every one the release file lists).
    pub components: Vec<String>,
    /// Architectures (empty: every one the release file lists).
    pub architectures: Vec<String>,
    /// Count every update as a security update, whatever the suite says.
    pub security: bool,
}

/// Where the management point keeps a repository's files (`{content}/updates/{name}`).
pub fn repository_dir(cfg: &Config, name: &str) -> PathBuf {
    cfg.content().join("updates").join(name)
}

/// The roots an https source of repository `name` is trusted with, when the import named them.
fn source_ca(cfg: &Config, name: &str) -> PathBuf {
    repository_dir(cfg, name).join("source-ca.pem")
}

/// Where a generation's metadata is kept: `{repository}/g{generation}/{path}`.
pub fn metadata_path(cfg: &Config, repo: &UpdateRepository, path: &str) -> PathBuf {
    repository_dir(cfg, &repo.name).join(format!("g{}", repo.generation)).join(path)
}

/// Where an approved `.deb` is kept: `{repository}/{Filename}`.
pub fn deb_path(cfg: &Config, repo: &UpdateRepository, u: &Update) -> PathBuf {
    repository_dir(cfg, &repo.name).join(&u.filename)
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "--name {name:?}: letters, digits, '-', '_' and '.' only (it names a folder)"
        )))
    }
}

/// `dmmp update import`.
pub fn import(cfg: &Config, store: &dyn Storage, a: &ImportArgs, now: i64) -> Result<Out> {
    check_name(&a.name)?;
    let src = Source::new(&a.source, &a.suite, a.source_ca.as_deref())?;
    let (verified, mut files) = debrepo::verify_release(&src, &a.keyring)?;
    let release = debrepo::parse_release(&verified.text);
    let release_file = files[0].0.path.clone();
    let date = release.date.ok_or_else(|| Error::ReleaseStale {
        file: release_file.clone(),
        reason: "the signed release file has no Date".into(),
    })?;
    if let Some(until) = release.valid_until.filter(|u| *u < now) {
        return Err(Error::ReleaseStale {
            file: release_file,
            reason: format!(
                "expired: its Valid-Until is {} (a mirror that stopped updating?)",
                when(Some(until))
            ),
        });
    }
    let before = store.update_repositories()?.into_iter().find(|r| r.name == a.name);
    if let Some(b) = before.as_ref().filter(|b| b.release_date > date) {
        return Err(Error::ReleaseStale {
            file: release_file,
            reason: format!(
                "dated {}, older than the release file imported on {} (dated {}): a repository never goes back",
                when(Some(date)),
                when(Some(b.imported)),
                when(Some(b.release_date))
            ),
        });
    }
    let components = pick(&a.components, &release.components, "component", &release_file)?;
    let arches: Vec<String> =
        release.architectures.iter().filter(|x| *x != "all").cloned().collect();
    let architectures = pick(&a.architectures, &arches, "architecture", &release_file)?;
    let security = a.security || release.is_security();
    let mut updates = Vec::new();
    let mut skipped = 0;
    for c in &components {
        for arch in &architectures {
            let f = debrepo::index_of(&src, &release, c, arch).ok_or_else(|| {
                Error::NotFound(format!("{c}/binary-{arch}/Packages(.gz) in {release_file}"))
            })?;
            let (raw, text) = debrepo::read_index(&src, &f)?;
            let (u, bad) = debrepo::parse_index(&text, &f.path, security);
            log::info!("{}: {} entries, {bad} skipped", f.path, u.len());
            skipped += bad;
            updates.extend(u);
            files.push((f, raw));
        }
    }
    let metadata: Vec<RepoFile> = files.iter().map(|(f, _)| f.clone()).collect();
    let unchanged = before.as_ref().is_some_and(|b| b.metadata.first() == metadata.first());
    let generation = before.as_ref().map_or(1, |b| b.generation + i64::from(!unchanged));
    let mut repo = UpdateRepository {
        id: 0,
        name: a.name.clone(),
        source: src.display(),
        suite: a.suite.clone(),
        codename: release.codename.clone(),
        components,
        architectures,
        security,
        signed_by: verified.fingerprint.clone(),
        metadata,
        release_date: date,
        generation,
        imported: now,
    };
    if let Some(ca) = &a.source_ca {
        // Approvals fetch from the same source later, trusting the same roots.
        let pem = dm_shared::fs::read_capped(ca, 16 << 20)?;
        let dest = source_ca(cfg, &a.name);
        if let Some(dir) = dest.parent() {
            dm_shared::fs::create_dir_all(dir, 0o755)?;
        }
        dm_shared::fs::write_atomic(&dest, &pem, 0o644)?;
    }
    // The metadata first, as the vendor signed it: a device fetches exactly these bytes.
    for (f, bytes) in &files {
        let dest = metadata_path(cfg, &repo, &f.path);
        if let Some(dir) = dest.parent() {
            dm_shared::fs::create_dir_all(dir, 0o755)?;
        }
        dm_shared::fs::write_atomic(&dest, bytes, 0o644)?;
    }
    repo.id = store.put_update_repository(&repo)?;
    for u in &mut updates {
        u.repository_id = repo.id;
        u.added = now;
    }
    let added = store.add_updates(&updates)?;
    supersede(store)?;
    let approved = apply_rules(cfg, store, &repo, now)?;
    let total = store.updates()?.iter().filter(|u| u.repository_id == repo.id).count();
    let text = format!(
        "imported {} ({} {}, signed by {}): {added} new updates of {} listed ({total} in the catalog){}{}\n",
        repo.name,
        repo.codename,
        repo.components.join(" "),
        repo.signed_by,
        updates.len(),
        if skipped > 0 { format!(", {skipped} unusable entries skipped") } else { String::new() },
        if approved > 0 { format!(", {approved} approved by rules") } else { String::new() },
    );
    Ok(Out::new(
        text,
        json!({"repository": repo.name, "generation": repo.generation, "signed_by": repo.signed_by,
               "security": repo.security, "listed": updates.len(), "added": added, "total": total,
               "skipped": skipped, "approved_by_rules": approved}),
    ))
}

/// The values asked for, each one the release file lists; all it lists when none asked.
fn pick(asked: &[String], listed: &[String], what: &str, file: &str) -> Result<Vec<String>> {
    if asked.is_empty() {
        return Ok(listed.to_vec());
    }
    match asked.iter().find(|x| !listed.contains(x)) {
        Some(x) => {
            Err(Error::NotFound(format!("{what} {x:?} in {file} (it lists {})", listed.join(" "))))
        }
        None => Ok(asked.to_vec()),
    }
}

/// Marks, for every package and architecture, each version superseded by the newest.
fn supersede(store: &dyn Storage) -> Result<()> {
    let all = store.updates()?;
    let mut newest: HashMap<(&str, &str), &Update> = HashMap::new();
    for u in &all {
        let e = newest.entry((u.package.as_str(), u.arch.as_str())).or_insert(u);
        if dm_shared::debian::compare_versions(&u.version, &e.version).is_gt() {
            *e = u;
        }
    }
    let changes: Vec<(i64, Option<i64>)> = all
        .iter()
        .filter_map(|u| {
            let n = newest[&(u.package.as_str(), u.arch.as_str())];
            let by = (n.id != u.id
                && dm_shared::debian::compare_versions(&n.version, &u.version).is_gt())
            .then_some(n.id);
            (by != u.superseded_by).then_some((u.id, by))
        })
        .collect();
    store.set_superseded(&changes)
}

/// Approves what the approval rules match and is not approved yet. Returns how many.
fn apply_rules(
    cfg: &Config,
    store: &dyn Storage,
    repo: &UpdateRepository,
    now: i64,
) -> Result<usize> {
    let rules = store.update_rules()?;
    if rules.is_empty() {
        return Ok(0);
    }
    let mut n = 0;
    for rule in &rules {
        let ids: Vec<i64> = store
            .updates()?
            .iter()
            .filter(|u| {
                u.repository_id == repo.id && u.approved.is_none() && u.superseded_by.is_none()
            })
            .filter(|u| rule.matches(u, &repo.name))
            .map(|u| u.id)
            .collect();
        n += approve_ids(cfg, store, &ids, &format!("rule {}", rule.name), now)?;
    }
    Ok(n)
}

/// Copies each update's `.deb` into the content folder (checked against its signed index),
/// then approves them. Nothing is approved whose file could not be had.
fn approve_ids(
    cfg: &Config,
    store: &dyn Storage,
    ids: &[i64],
    by: &str,
    now: i64,
) -> Result<usize> {
    let repos: HashMap<i64, UpdateRepository> =
        store.update_repositories()?.into_iter().map(|r| (r.id, r)).collect();
    let all: HashMap<i64, Update> = store.updates()?.into_iter().map(|u| (u.id, u)).collect();
    let mut ok = Vec::new();
    for id in ids {
        let u = all.get(id).ok_or_else(|| Error::NotFound(format!("update {id}")))?;
        if u.approved.is_some() {
            continue;
        }
        let repo = &repos[&u.repository_id];
        let dest = deb_path(cfg, repo, u);
        if !dest.is_file() {
            let ca = source_ca(cfg, &repo.name);
            let src = Source::new(&repo.source, &repo.suite, ca.is_file().then_some(ca.as_path()))?;
            debrepo::copy_deb(&src, u, &dest)?;
        }
        ok.push(*id);
    }
    store.approve_updates(&ok, by, now)
}

/// Finds updates by id, `package=version` (every architecture), or `package` (its newest
/// version of each architecture).
pub fn find_updates(all: &[Update], refs: &[String]) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for r in refs {
        let found: Vec<i64> = if let Ok(id) = r.parse::<i64>() {
            all.iter().filter(|u| u.id == id).map(|u| u.id).collect()
        } else if let Some((p, v)) = r.split_once('=') {
            all.iter().filter(|u| u.package == p && u.version == v).map(|u| u.id).collect()
        } else {
            all.iter()
                .filter(|u| u.package == *r && u.superseded_by.is_none())
                .map(|u| u.id)
                .collect()
        };
        if found.is_empty() {
            return Err(Error::NotFound(format!("update {r:?}")));
        }
        out.extend(found);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// `dmmp update approve`.
pub fn approve(
    cfg: &Config,
    store: &dyn Storage,
    refs: &[String],
    security: bool,
    now: i64,
) -> Result<Out> {
    let all = store.updates()?;
    let mut ids = find_updates(&all, refs)?;
    if security {
        ids.extend(all.iter().filter(|u| u.security && u.superseded_by.is_none()).map(|u| u.id));
    }
    if ids.is_empty() {
        return Err(Error::Usage(
            "name the updates to approve (id, package=version, package) or --security".into(),
        ));
    }
    let n = approve_ids(cfg, store, &ids, "admin", now)?;
    let labels: Vec<String> =
        all.iter().filter(|u| ids.contains(&u.id)).map(Update::label).collect();
    Ok(Out::new(
        format!("approved {n} updates ({} already were): {}\n", ids.len() - n, labels.join(", ")),
        json!({"approved": n, "updates": ids}),
    ))
}

/// `dmmp update rule add`.
pub fn rule_add(
    store: &dyn Storage,
    name: &str,
    repository: Option<&str>,
    security_only: bool,
    sections: &[String],
    now: i64,
) -> Result<Out> {
    if let Some(r) = repository {
        if !store.update_repositories()?.iter().any(|x| x.name == r) {
            return Err(Error::NotFound(format!("repository {r:?}")));
        }
    }
    let rule = UpdateRule {
        id: 0,
        name: name.to_string(),
        repository: repository.map(String::from),
        security_only,
        sections: sections.to_vec(),
        created: now,
    };
    let id = store.add_update_rule(&rule)?;
    Ok(Out::new(
        format!("approval rule {name} added (id {id}); it applies at the next import\n"),
        json!({"id": id}),
    ))
}

/// `dmmp update rule list`.
pub fn rule_list(store: &dyn Storage) -> Result<Out> {
    let rules = store.update_rules()?;
    let rows: Vec<Vec<String>> = rules
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.name.clone(),
                r.repository.clone().unwrap_or_else(|| "any".into()),
                if r.security_only { "security".into() } else { "all".into() },
                if r.sections.is_empty() { "any".into() } else { r.sections.join(",") },
            ]
        })
        .collect();
    Ok(Out::new(table(&["ID", "NAME", "REPOSITORY", "UPDATES", "SECTIONS"], &rows), json!(rules)))
}

/// `dmmp update list`.
pub fn list(
    store: &dyn Storage,
    package: Option<&str>,
    approved_only: bool,
    all_versions: bool,
) -> Result<Out> {
    let repos: HashMap<i64, String> =
        store.update_repositories()?.into_iter().map(|r| (r.id, r.name)).collect();
    let counts = counts_by_update(store)?;
    let list: Vec<Update> = store
        .updates()?
        .into_iter()
        .filter(|u| package.is_none_or(|p| u.package == p))
        .filter(|u| !approved_only || u.approved.is_some())
        .filter(|u| all_versions || package.is_some() || u.superseded_by.is_none())
        .collect();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|u| {
            let c = counts.get(&u.id);
            let n = |s: UpdateState| c.and_then(|c| c.get(&s)).copied().unwrap_or(0).to_string();
            vec![
                u.id.to_string(),
                u.package.clone(),
                u.version.clone(),
                u.arch.clone(),
                repos.get(&u.repository_id).cloned().unwrap_or_default(),
                if u.security { "security".into() } else { "-".into() },
                if u.approved.is_some() {
                    "approved".into()
                } else if u.superseded_by.is_some() {
                    "superseded".into()
                } else {
                    "-".into()
                },
                n(UpdateState::Required),
                n(UpdateState::Installed),
            ]
        })
        .collect();
    Ok(Out::new(
        table(
            &[
                "ID",
                "PACKAGE",
                "VERSION",
                "ARCH",
                "REPOSITORY",
                "KIND",
                "STATE",
                "REQUIRED",
                "INSTALLED",
            ],
            &rows,
        ),
        json!(list),
    ))
}

fn counts_by_update(store: &dyn Storage) -> Result<HashMap<i64, HashMap<UpdateState, i64>>> {
    let mut out: HashMap<i64, HashMap<UpdateState, i64>> = HashMap::new();
    for (id, state, n) in store.update_state_counts()? {
        out.entry(id).or_default().insert(state, n);
    }
    Ok(out)
}

/// What `dmmp update deploy` is given.
#[derive(Debug, Clone)]
pub struct DeployArgs {
    /// The deployment's name.
    pub name: String,
    /// The collection.
    pub collection: String,
    /// Updates named (ids, package=version, package).
    pub updates: Vec<String>,
    /// Every approved update (the newest approved version of each package).
    pub all_approved: bool,
    /// Approved security updates only.
    pub security: bool,
    /// From when devices may download.
    pub available: i64,
    /// When devices install.
    pub deadline: i64,
    /// At most this many seconds later per device.
    pub spread: i64,
    /// Restart when an update asks for it.
    pub reboot: RebootPolicy,
    /// The daily window devices install in.
    pub window: Option<MaintenanceWindow>,
    /// Offered to no device until a rollout releases it (`dmmp rollout create
    /// --update-deployment`).
    pub held: bool,
}

/// `dmmp update deploy`: the updates are fixed when the deployment is made; only approved
/// ones can be deployed.
pub fn deploy(store: &dyn Storage, a: &DeployArgs, now: i64) -> Result<Out> {
    let collection = find_collection(store, &a.collection)?;
    let all = store.updates()?;
    let mut ids = find_updates(&all, &a.updates)?;
    if a.all_approved || a.security {
        // The newest approved version of each package and architecture.
        let mut newest: BTreeMap<(&str, &str), &Update> = BTreeMap::new();
        for u in all.iter().filter(|u| u.approved.is_some() && (!a.security || u.security)) {
            let e = newest.entry((u.package.as_str(), u.arch.as_str())).or_insert(u);
            if dm_shared::debian::compare_versions(&u.version, &e.version).is_gt() {
                *e = u;
            }
        }
        ids.extend(newest.values().map(|u| u.id));
    }
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Err(Error::Usage(
            "no approved update to deploy: name updates, or --all-approved or --security".into(),
        ));
    }
    if let Some(u) = all.iter().find(|u| ids.contains(&u.id) && u.approved.is_none()) {
        return Err(Error::Conflict(format!(
            "update {} ({}) is not approved: dmmp update approve {} first",
            u.id,
            u.label(),
            u.id
        )));
    }
    if a.deadline < a.available {
        return Err(Error::Usage("--deadline is before --available".into()));
    }
    if !(0..=30 * 86_400).contains(&a.spread) {
        return Err(Error::Usage("--spread must be between 0 and 30 days".into()));
    }
    let d = UpdateDeployment {
        id: 0,
        name: a.name.clone(),
        collection_id: collection.id,
        updates: ids.clone(),
        available: a.available,
        deadline: a.deadline,
        spread: a.spread,
        reboot: a.reboot,
        window: a.window,
        created: now,
        held: a.held,
    };
    let id = store.add_update_deployment(&d)?;
    Ok(Out::new(
        format!(
            "deployment {} (id {id}): {} updates to {}, available {}, deadline {} (+ up to {} s per device), reboot {}{}\n",
            a.name,
            ids.len(),
            collection.name,
            when(Some(a.available)),
            when(Some(a.deadline)),
            a.spread,
            a.reboot.as_str(),
            a.window.map(|w| format!(", installed {w} UTC")).unwrap_or_default()
        ) + if a.held {
            "held: no device gets it until a rollout releases it (dmmp rollout create --update-deployment)\n"
        } else {
            ""
        },
        json!({"id": id, "updates": ids}),
    ))
}

/// `dmmp update deployments`.
pub fn deployments(store: &dyn Storage) -> Result<Out> {
    let colls: HashMap<i64, String> =
        store.collections()?.into_iter().map(|c| (c.id, c.name)).collect();
    let list = store.update_deployments()?;
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.name.clone(),
                colls.get(&d.collection_id).cloned().unwrap_or_default(),
                d.updates.len().to_string(),
                when(Some(d.available)),
                when(Some(d.deadline)),
                d.reboot.as_str().into(),
                if d.held { "held (a rollout releases it)".into() } else { String::new() },
            ]
        })
        .collect();
    Ok(Out::new(
        table(
            &["ID", "NAME", "COLLECTION", "UPDATES", "AVAILABLE", "DEADLINE", "REBOOT", "HELD"],
            &rows,
        ),
        json!(list),
    ))
}

/// `dmmp update repositories`.
pub fn repositories(store: &dyn Storage) -> Result<Out> {
    let list = store.update_repositories()?;
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                format!("{} ({})", r.suite, r.codename),
                r.components.join(","),
                r.architectures.join(","),
                if r.security { "security".into() } else { "-".into() },
                r.signed_by.clone(),
                when(Some(r.imported)),
            ]
        })
        .collect();
    Ok(Out::new(
        table(
            &["NAME", "SUITE", "COMPONENTS", "ARCHITECTURES", "KIND", "SIGNED BY", "IMPORTED"],
            &rows,
        ),
        json!(list),
    ))
}
