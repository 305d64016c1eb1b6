//! Software updates on the device (docs/software-updates.md): when the poll offers the
//! `dmUpdates` link, the agent scans dpkg's status database against the catalog (no download
//! but the catalog's), reports the states that changed, and installs the required updates of
//! its update deployments once their deadline came, through apt against the management
//! point's repository staged in a folder of its own: the vendor's signed metadata, which apt
//! verifies itself, with nothing of the device's apt setup changed.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dm_shared::debian::{self, InstalledPackage};
use dm_shared::files::check_relative_path;
use dm_shared::fs::{self as dmfs, MODE_PRIVATE};
use dm_shared::message::{MessageId, StatusMessage};
use dm_shared::updates::{
    self as wire, DeployedUpdate, Deployment, FileRef, ScanAck, ScanReport, StateRow, UpdateState,
    UpdatesDocument,
};
use dm_shared::{Context, StatusCode, clock};
use serde::{Deserialize, Serialize};

use super::tool;
use super::worker::Worker;
use crate::error::{Error, Result};

/// The most rows sent in one report: the server's body cap is 64 KiB.
const ROWS_PER_REPORT: usize = 200;
/// The longest reason kept.
const MAX_REASON: usize = 400;
/// The largest dpkg status database read.
const MAX_STATUS: u64 = 256 << 20;
/// The largest catalog fetched.
const MAX_CATALOG: u64 = 256 << 20;

/// What the agent remembers between polls (`state/updates/state.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Memory {
    /// The `dmUpdates` link handled last.
    href: String,
    /// When the last scan ran (Unix seconds).
    scanned: i64,
    /// The earliest deadline of a deployment that still has work, if any.
    next_deadline: Option<i64>,
    /// The serial the server acknowledged last, and the rows it holds.
    serial: u64,
    reported: BTreeMap<i64, StateRow>,
    /// Outcomes of installs the scan cannot see: failures (retried after the scan interval)
    /// and installs that wait for a restart.
    outcomes: BTreeMap<i64, Outcome>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Outcome {
    state: UpdateState,
    reason: Option<String>,
    /// When it happened (Unix seconds).
    at: i64,
    /// The boot it happened in (`/proc/sys/kernel/random/boot_id`).
    boot: String,
}

fn dir(ctx: &Context) -> PathBuf {
    ctx.layout.state_dir().join("updates")
}

fn memory_file(ctx: &Context) -> PathBuf {
    dir(ctx).join("state.json")
}

fn load(ctx: &Context) -> Memory {
    match dmfs::read_json(&memory_file(ctx), 64 << 20) {
        Ok(Some(m)) => m,
        Ok(None) => Memory::default(),
        Err(e) => {
            log::warn!("{e}; software updates start over with a full report");
            Memory::default()
        }
    }
}

fn save(ctx: &Context, m: &Memory) -> Result<()> {
    dmfs::create_dir_all(&dir(ctx), dmfs::MODE_DIR_PRIVATE)?;
    dmfs::write_json(&memory_file(ctx), m, MODE_PRIVATE)?;
    let due = Due { href: m.href.clone(), scanned: m.scanned, next_deadline: m.next_deadline };
    dmfs::write_json(&due_file(ctx), &due, MODE_PRIVATE)?;
    Ok(())
}

/// What says whether the next poll has work (`state/updates/due.json`): read at every poll,
/// so kept apart from the reported rows, which may be thousands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Due {
    href: String,
    scanned: i64,
    next_deadline: Option<i64>,
}

fn due_file(ctx: &Context) -> PathBuf {
    dir(ctx).join("due.json")
}

fn now(ctx: &Context) -> i64 {
    clock::unix_secs(ctx.clock.now()) as i64
}

/// The catalog the agent fetched last.
pub fn catalog_file(ctx: &Context) -> PathBuf {
    dir(ctx).join("catalog.txt")
}

/// The dpkg architecture of the device: dpkg's own word when it is there, else this build's.
pub fn architecture(ctx: &Context) -> String {
    if ctx.layout.is_system_root() {
        if let Ok(out) = Command::new("dpkg").arg("--print-architecture").output() {
            let a = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !a.is_empty() {
                return a;
            }
        }
    }
    debian::native_architecture().to_string()
}

fn status_file(ctx: &Context) -> PathBuf {
    ctx.layout.root().join("var/lib/dpkg/status")
}

/// dpkg's installed packages, read from its status database without running apt.
pub fn installed(
    ctx: &Context,
    native: &str,
) -> Result<std::collections::HashMap<(String, String), InstalledPackage>> {
    let path = status_file(ctx);
    let file = dmfs::open_regular(&path).map_err(|e| Error::UpdateScan {
        file: path.display().to_string(),
        reason: e.to_string(),
    })?;
    debian::installed_packages(BufReader::new(file.take(MAX_STATUS)), native)
        .map_err(|e| Error::UpdateScan { file: path.display().to_string(), reason: e.to_string() })
}

/// Scans the catalog file against the installed packages.
pub fn scan_file(ctx: &Context, catalog: &Path, native: &str) -> Result<wire::Scan> {
    let have = installed(ctx, native)?;
    let file = dmfs::open_regular(catalog)?;
    wire::scan(BufReader::new(file), &have, native)
        .map_err(|reason| Error::UpdateScan { file: catalog.display().to_string(), reason })
}

/// Whether the link or the clock says it is time to look at software updates.
fn due(m: &Due, href: &str, now: i64, interval: i64) -> bool {
    m.href != href || now - m.scanned >= interval || m.next_deadline.is_some_and(|d| now >= d)
}

/// The poll offered `dmUpdates`: scan, report, and install what a deployment asks for when
/// its deadline came. Errors are logged; the next poll tries again.
pub fn after_poll(w: &mut Worker<'_>, href: &str) {
    let interval = w.settings.software_updates.scan_interval.as_secs() as i64;
    let d: Due = dmfs::read_json(&due_file(w.ctx), 64 * 1024).ok().flatten().unwrap_or_default();
    if !due(&d, href, now(w.ctx), interval) {
        return;
    }
    let mut m = load(w.ctx);
    if let Err(e) = run(w, href, &mut m) {
        log::warn!("software updates: {e} ({})", e.code());
    }
    if let Err(e) = save(w.ctx, &m) {
        log::warn!("software updates: state not kept: {e}");
    }
}

fn run(w: &mut Worker<'_>, href: &str, m: &mut Memory) -> Result<()> {
    let native = architecture(w.ctx);
    let sep = if href.contains('?') { '&' } else { '?' };
    let doc: UpdatesDocument = w.session.get(&format!("{href}{sep}arch={native}"))?;
    let catalog = fetch(w, &doc.catalog, &catalog_file(w.ctx), MAX_CATALOG)?;
    let started = Instant::now();
    let mut scan = scan_file(w.ctx, &catalog, &native)?;
    log::info!(
        "software update scan of catalog {}: {} entries, {} required, {} installed, {} unknown, in {} ms",
        scan.catalog_version,
        scan.entries,
        count(&scan.rows, UpdateState::Required),
        count(&scan.rows, UpdateState::Installed),
        count(&scan.rows, UpdateState::Unknown),
        started.elapsed().as_millis()
    );
    let t = now(w.ctx);
    m.href = href.to_string();
    m.scanned = t;
    let due: Vec<&Deployment> = doc
        .deployments
        .iter()
        .filter(|d| d.available <= t && d.deadline <= t && d.window_open)
        .collect();
    for d in
        doc.deployments.iter().filter(|d| d.available <= t && d.deadline <= t && !d.window_open)
    {
        log::info!(
            "update deployment {} waits for its maintenance window {} UTC",
            d.name,
            d.window.as_deref().unwrap_or("?")
        );
    }
    let mut todo: Vec<&DeployedUpdate> = Vec::new();
    for d in &due {
        for u in &d.updates {
            let required = scan.rows.get(&u.id).is_some_and(|r| r.state == UpdateState::Required);
            let retry = m.outcomes.get(&u.id).is_none_or(|o| {
                o.state != UpdateState::Failed
                    || t - o.at >= w.settings.software_updates.scan_interval.as_secs() as i64
            });
            if required && retry && !todo.iter().any(|x| x.id == u.id) {
                log::info!(
                    "update deployment {} is due: installing {} {} ({})",
                    d.name,
                    u.package,
                    u.version,
                    u.arch
                );
                todo.push(u);
            }
        }
    }
    m.next_deadline = doc
        .deployments
        .iter()
        .filter(|d| {
            d.deadline > t
                && d.updates
                    .iter()
                    .any(|u| scan.rows.get(&u.id).is_some_and(|r| r.state == UpdateState::Required))
        })
        .map(|d| d.deadline.max(d.available))
        .min();
    if !todo.is_empty() {
        let mut busy = scan.rows.clone();
        for u in &todo {
            if let Some(r) = busy.get_mut(&u.id) {
                r.state = UpdateState::InProgress;
            }
        }
        report(w, m, &scan.catalog_version, &busy)?;
        let reboot = due.iter().any(|d| d.reboot == wire::RebootPolicy::Allow);
        if let Err(e) = install(w, &doc, &todo, m, reboot) {
            // Nothing installed (staging, apt-get update, the wrong device root): each update
            // is failed with the reason, not left in progress.
            log::error!("software updates not installed: {e} ({})", e.code());
            let ids: Vec<i64> = todo.iter().map(|u| u.id).collect();
            failed(w, m, &ids, &e, t);
        }
        scan = scan_file(w.ctx, &catalog, &native)?;
    }
    let rows = with_outcomes(scan.rows, m);
    report(w, m, &scan.catalog_version, &rows)
}

fn count(rows: &BTreeMap<i64, StateRow>, s: UpdateState) -> usize {
    rows.values().filter(|r| r.state == s).count()
}

/// The scan's rows with what installs left: an update that failed and is still required is
/// `failed`; one installed in this boot that asked for a restart is `pending_reboot`.
fn with_outcomes(mut rows: BTreeMap<i64, StateRow>, m: &mut Memory) -> BTreeMap<i64, StateRow> {
    let boot = tool::boot_id();
    m.outcomes.retain(|id, o| match (o.state, rows.get_mut(id)) {
        // Still required, or left half-way by dpkg (a failed maintainer script).
        (UpdateState::Failed, Some(r))
            if matches!(r.state, UpdateState::Required | UpdateState::Unknown) =>
        {
            r.state = UpdateState::Failed;
            r.reason = o.reason.clone();
            true
        }
        (UpdateState::PendingReboot, Some(r))
            if r.state == UpdateState::Installed && o.boot == boot =>
        {
            r.state = UpdateState::PendingReboot;
            true
        }
        _ => false,
    });
    rows
}

/// Sends the rows that changed since the report the server acknowledged, in reports of at
/// most [`ROWS_PER_REPORT`]; a full report when the server lost track (409).
fn report(
    w: &mut Worker<'_>,
    m: &mut Memory,
    catalog: &str,
    rows: &BTreeMap<i64, StateRow>,
) -> Result<()> {
    let url = format!("{}/{}/scan", w.session.base, wire::UPDATES_PATH);
    for full in [m.serial == 0, true] {
        let before = if full { BTreeMap::new() } else { m.reported.clone() };
        let (changed, removed) = wire::changes(&before, rows);
        if !full && changed.is_empty() && removed.is_empty() {
            return Ok(());
        }
        match send(w, &url, catalog, if full { 0 } else { m.serial }, changed, removed) {
            Ok(serial) => {
                m.serial = serial;
                m.reported = rows.clone();
                return Ok(());
            }
            Err(Error::Http { status: 409, .. }) if !full => {
                log::info!("the management point asks for a full software update report");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn send(
    w: &Worker<'_>,
    url: &str,
    catalog: &str,
    mut base: u64,
    rows: Vec<StateRow>,
    mut removed: Vec<i64>,
) -> Result<u64> {
    let mut chunks: Vec<Vec<StateRow>> =
        rows.chunks(ROWS_PER_REPORT).map(<[StateRow]>::to_vec).collect();
    if chunks.is_empty() {
        chunks.push(Vec::new());
    }
    for rows in chunks {
        let r = ScanReport {
            catalog: catalog.to_string(),
            base,
            rows,
            removed: std::mem::take(&mut removed),
        };
        let ack: ScanAck = w.session.net.post_json(url, &r)?;
        base = ack.serial;
    }
    Ok(base)
}

/// Downloads a file the document names into `dest` unless it is there already with its
/// SHA-256; returns `dest`.
fn fetch(w: &Worker<'_>, f: &FileRef, dest: &Path, cap: u64) -> Result<PathBuf> {
    if f.size > cap {
        return Err(Error::TooLarge { url: f.href.clone(), limit: cap });
    }
    if dm_shared::digest::hash_file(dest, f.size)
        .is_ok_and(|h| h.size == f.size && h.sha256 == f.sha256)
    {
        return Ok(dest.to_path_buf());
    }
    if let Some(d) = dest.parent() {
        dmfs::create_dir_all(d, dmfs::MODE_DIR_PRIVATE)?;
    }
    let partial = dest.with_extension("partial");
    w.session.net.download(&f.href, &partial, dest, f.size, &f.sha256, &w.stop)?;
    Ok(dest.to_path_buf())
}

fn apt_dir(ctx: &Context) -> PathBuf {
    dir(ctx).join("apt")
}

/// Stages the repositories of `todo` (their signed metadata and the `.deb` of each update)
/// for apt, writes its sources list, and installs each update in turn, each reported.
fn install(
    w: &mut Worker<'_>,
    doc: &UpdatesDocument,
    todo: &[&DeployedUpdate],
    m: &mut Memory,
    reboot_allowed: bool,
) -> Result<()> {
    stage(w, doc, todo)?;
    repair_dpkg(w)?;
    apt_get(w, &["update"]).map_err(|e| {
        log::warn!("apt-get update failed: {e}");
        e
    })?;
    let native = architecture(w.ctx);
    let mut done_labels = Vec::new();
    for u in todo {
        let label = format!("{} {}", u.package, u.version);
        let t = now(w.ctx);
        match install_one(w, u, &native) {
            Ok(()) => {
                let pending = w.ctx.layout.root().join("run/reboot-required").exists();
                log::info!(
                    "update {label} installed{}",
                    if pending { "; the device must restart" } else { "" }
                );
                done_labels
                    .push(format!("{label}{}", if pending { " (pending reboot)" } else { "" }));
                if pending {
                    let o = Outcome {
                        state: UpdateState::PendingReboot,
                        reason: None,
                        at: t,
                        boot: tool::boot_id(),
                    };
                    m.outcomes.insert(u.id, o);
                } else {
                    m.outcomes.remove(&u.id);
                }
            }
            Err(e) => {
                log::error!("{e} ({})", e.code());
                failed(w, m, &[u.id], &e, t);
            }
        }
    }
    if !done_labels.is_empty() {
        let mut msg = StatusMessage::event(
            "DMSvc",
            MessageId::UPDATES_INSTALLED,
            StatusCode::S_OK,
            w.now(),
            format!("{} software updates installed", done_labels.len()),
        );
        msg.details = done_labels;
        w.report(&msg);
    }
    if reboot_allowed && m.outcomes.values().any(|o| o.state == UpdateState::PendingReboot) {
        log::warn!(
            "an update asks for a restart and its deployment allows it: restarting the device"
        );
        let _ = Command::new("systemctl").arg("reboot").status();
    }
    Ok(())
}

/// Puts the repositories of `todo` where apt reads them: their signed metadata and each
/// update's `.deb` under `state/updates/apt/repo/{name}/`, and the agent's own sources list.
fn stage(w: &Worker<'_>, doc: &UpdatesDocument, todo: &[&DeployedUpdate]) -> Result<()> {
    if !w.ctx.layout.is_system_root() {
        return Err(Error::UpdateInstall {
            package: "(all)".into(),
            reason: format!(
                "updates install through the system's apt and dpkg; this agent manages {}",
                w.ctx.layout.root().display()
            ),
            locked: false,
        });
    }
    let apt = apt_dir(w.ctx);
    for sub in ["lists/partial", "archives/partial"] {
        dmfs::create_dir_all(&apt.join(sub), dmfs::MODE_DIR_PRIVATE)?;
    }
    let native = architecture(w.ctx);
    let signed_by = w
        .settings
        .software_updates
        .apt_keyring
        .as_ref()
        .map(|k| format!(" signed-by={k}"))
        .unwrap_or_default();
    let mut sources = String::new();
    for r in doc.repositories.iter().filter(|r| todo.iter().any(|u| u.repository == r.name)) {
        let root = apt.join("repo").join(&r.name);
        for f in &r.metadata {
            fetch(w, f, &confined(&root, &f.path)?, 64 << 20)?;
        }
        sources.push_str(&format!(
            "deb [arch={native}{signed_by}] file:{} {} {}\n",
            root.display(),
            r.suite,
            r.components.join(" ")
        ));
    }
    for u in todo {
        let root = apt.join("repo").join(&u.repository);
        fetch(w, &u.file, &confined(&root, &u.file.path)?, 4 << 30)?;
    }
    dmfs::write_atomic(&apt.join("sources.list"), sources.as_bytes(), MODE_PRIVATE)
        .map_err(Into::into)
}

/// Installs one update with apt; dpkg's database afterwards says whether it is installed
/// (apt also fails a run for another package dpkg left half-way).
fn install_one(w: &Worker<'_>, u: &DeployedUpdate, native: &str) -> Result<()> {
    let label = format!("{} {}", u.package, u.version);
    let spec = format!("{}={}", u.package, u.version);
    let ran = apt_get(w, &["install", "--no-install-recommends", &spec]);
    let have = installed(w.ctx, native)?;
    let key = (u.package.clone(), debian::arch_key(&u.arch, native).to_string());
    let done = have.get(&key).is_some_and(|p| p.state == "installed" && p.version == u.version);
    match (done, ran) {
        (true, Err(e)) => {
            log::warn!("{label} is installed, though apt-get reported: {e}");
            Ok(())
        }
        (false, Ok(())) => Err(Error::UpdateInstall {
            package: label,
            reason: format!(
                "apt-get succeeded, but dpkg holds {}",
                have.get(&key)
                    .map_or("no version".into(), |p| format!("{} {}", p.version, p.state))
            ),
            locked: false,
        }),
        (_, ran) => ran,
    }
}

/// Records updates `ids` failed with `e` at `at` (tried again after the scan interval) and
/// reports it once.
fn failed(w: &Worker<'_>, m: &mut Memory, ids: &[i64], e: &Error, at: i64) {
    let reason: String = e.to_string().chars().take(MAX_REASON).collect();
    for id in ids {
        let o = Outcome {
            state: UpdateState::Failed,
            reason: Some(reason.clone()),
            at,
            boot: tool::boot_id(),
        };
        m.outcomes.insert(*id, o);
    }
    w.report(&StatusMessage::event("DMSvc", MessageId::UPDATE_FAILED, e.code(), w.now(), reason));
}

/// `root/path`, for a path the server names: refused unless it stays inside `root`
/// ([`check_relative_path`], the rule for every path from the network).
fn confined(root: &Path, path: &str) -> Result<PathBuf> {
    check_relative_path(path)?;
    Ok(root.join(path))
}

/// dpkg left half-way (a kill, a power cut): `dpkg --configure -a` finishes what it can,
/// reported once.
fn repair_dpkg(w: &Worker<'_>) -> Result<()> {
    let native = architecture(w.ctx);
    let broken: Vec<String> = installed(w.ctx, &native)?
        .into_iter()
        .filter(|(_, p)| p.state != "installed")
        .map(|((n, _), p)| format!("{n} {} {}", p.version, p.state))
        .collect();
    let journal = std::fs::read_dir("/var/lib/dpkg/updates").map(|d| d.count()).unwrap_or(0);
    if broken.is_empty() && journal == 0 {
        return Ok(());
    }
    log::warn!("dpkg was interrupted ({}); running dpkg --configure -a", broken.join(", "));
    let out = run_deadline(
        Command::new("dpkg").args(["--configure", "-a"]),
        w.settings.software_updates.apt_timeout,
        &apt_dir(w.ctx).join("dpkg-repair.log"),
    );
    let (code, text) = match &out {
        Ok((true, _)) => (
            StatusCode::S_OK,
            format!("dpkg was interrupted and is repaired ({})", broken.join(", ")),
        ),
        Ok((false, tail)) | Err(Error::UpdateInstall { reason: tail, .. }) => (
            StatusCode::DM_E_UPDATE_INSTALL,
            format!("dpkg was interrupted; dpkg --configure -a failed: {tail}"),
        ),
        Err(e) => (e.code(), e.to_string()),
    };
    log::info!("{text}");
    w.report(&StatusMessage::event("DMSvc", MessageId::DPKG_REPAIRED, code, w.now(), text));
    Ok(())
}

/// Runs `apt-get` with the agent's own sources, lists and archives, dpkg's lock waited for
/// up to `DpkgLockTimeout`, within `AptTimeout`; its output goes to the agent's log.
fn apt_get(w: &Worker<'_>, args: &[&str]) -> Result<()> {
    let apt = apt_dir(w.ctx);
    let s = &w.settings.software_updates;
    let opt = |k: &str, v: &Path| format!("{k}={}", v.display());
    let mut c = Command::new("apt-get");
    c.args(["-q", "-y"])
        .args(["-o", &opt("Dir::Etc::SourceList", &apt.join("sources.list"))])
        .args(["-o", "Dir::Etc::SourceParts=-"])
        .args(["-o", &opt("Dir::State::Lists", &apt.join("lists"))])
        .args(["-o", &opt("Dir::Cache::Archives", &apt.join("archives"))])
        .args(["-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache="])
        .args(["-o", "APT::Sandbox::User=root", "-o", "Acquire::Languages=none"])
        .args(["-o", &format!("DPkg::Lock::Timeout={}", s.dpkg_lock_timeout.as_secs())])
        .args(["-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LC_ALL", "C");
    let what = format!("apt-get {}", args.join(" "));
    let log = apt.join("apt.log");
    match run_deadline(&mut c, s.apt_timeout, &log)? {
        (true, _) => Ok(()),
        (false, tail) => Err(Error::UpdateInstall {
            package: args.last().unwrap_or(&"").replace('=', " "),
            locked: ["Could not get lock", "is held by process", "Unable to acquire the dpkg"]
                .iter()
                .any(|m| tail.contains(m)),
            reason: format!("{what} failed: {tail}"),
        }),
    }
}

/// Runs `c` through [`tool::run`]. Returns whether it succeeded and the lines that say why
/// not: apt's `E:` lines and dpkg's, else the last three.
fn run_deadline(c: &mut Command, deadline: Duration, log: &Path) -> Result<(bool, String)> {
    let run = tool::run(c, deadline, log).map_err(|reason| Error::UpdateInstall {
        package: c.get_program().to_string_lossy().into_owned(),
        reason,
        locked: false,
    })?;
    let why: Vec<&str> = run
        .output
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("dpkg:") || l.contains("error"))
        .collect();
    let tail = if why.is_empty() { run.tail(3).join("; ") } else { why.join("; ") };
    Ok((run.succeeded(), format!("{tail} ({})", run.end())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, state: UpdateState) -> StateRow {
        StateRow { id, state, installed: None, reason: None }
    }

    #[test]
    fn scans_are_due_on_a_new_link_the_interval_or_a_deadline() {
        let m = Due { href: "a".into(), scanned: 100, next_deadline: Some(500) };
        assert!(due(&m, "b", 101, 3600));
        assert!(!due(&m, "a", 101, 3600));
        assert!(due(&m, "a", 3700, 3600));
        assert!(due(&m, "a", 500, 3600));
    }

    #[test]
    fn failures_and_restarts_show_until_they_are_over() {
        let boot = tool::boot_id();
        let mut m = Memory::default();
        m.outcomes.insert(
            1,
            Outcome {
                state: UpdateState::Failed,
                reason: Some("postinst".into()),
                at: 1,
                boot: boot.clone(),
            },
        );
        m.outcomes.insert(
            2,
            Outcome { state: UpdateState::PendingReboot, reason: None, at: 1, boot: boot.clone() },
        );
        m.outcomes.insert(
            3,
            Outcome {
                state: UpdateState::PendingReboot,
                reason: None,
                at: 1,
                boot: "another boot".into(),
            },
        );
        let rows: BTreeMap<i64, StateRow> = [
            (1, row(1, UpdateState::Required)),
            (2, row(2, UpdateState::Installed)),
            (3, row(3, UpdateState::Installed)),
        ]
        .into();
        let out = with_outcomes(rows, &mut m);
        assert_eq!(out[&1].state, UpdateState::Failed);
        assert_eq!(out[&1].reason.as_deref(), Some("postinst"));
        assert_eq!(out[&2].state, UpdateState::PendingReboot);
        assert_eq!(out[&3].state, UpdateState::Installed, "restarted since");
        assert_eq!(m.outcomes.len(), 2);
        // Installed after all: the failure is over.
        let rows: BTreeMap<i64, StateRow> = [(1, row(1, UpdateState::Installed))].into();
        with_outcomes(rows, &mut m);
        assert!(!m.outcomes.contains_key(&1));
    }

    #[test]
    fn staged_paths_stay_in_the_repository() {
        let root = Path::new("/r");
        assert_eq!(confined(root, "pool/a.deb").unwrap(), Path::new("/r/pool/a.deb"));
        for p in ["../x", "/etc/passwd", "a/../../b", "a//b", ""] {
            assert!(confined(root, p).is_err(), "{p}");
        }
    }
}
