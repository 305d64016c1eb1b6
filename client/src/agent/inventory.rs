//! Inventory sent as DDI `configData`: what the device is and how the client is doing. Sent
//! when it changes (free space aside, which changes all the time) and at least daily.
//!
//! Client health follows the source documents' reports: `healthy`, or unhealthy because of
//! `certificate`, `communication` or `local` client issues.

use std::collections::BTreeMap;
use std::time::Duration;

use dm_shared::fs::{self as dmfs, MODE_PRIVATE};
use dm_shared::tether::TetherRecord;
use dm_shared::vocab::{DeviceClass, inventory as key};
use dm_shared::{Context, Platform, Settings, clock};

use crate::error::Result;
use crate::installed::{self, Outcome, SetupResult};

/// Keys whose changes alone do not make the inventory worth resending.
const VOLATILE: [&str; 1] = [key::FREE_SPACE_MB];

/// At least this often the inventory is sent even unchanged.
pub const RESEND: Duration = Duration::from_secs(86_400);

/// How often the installed client's files are re-checked (they are hashed: not every poll).
pub const LOCAL_CHECK_EVERY: Duration = Duration::from_secs(3600);

/// What the agent knows about its own health.
#[derive(Debug, Clone, Default)]
pub struct HealthState {
    /// Consecutive failed polls.
    pub failed_polls: u32,
    /// The last communication problem.
    pub last_problem: Option<String>,
    /// Whether the last problem was a certificate problem.
    pub certificate_problem: bool,
    /// The last check of the installed client, and its problems.
    local: std::cell::RefCell<Option<(std::time::Instant, Vec<String>)>>,
}

impl HealthState {
    /// A fresh state after a successful poll, keeping the cached local check.
    pub fn reset_communication(&mut self) {
        self.failed_polls = 0;
        self.last_problem = None;
        self.certificate_problem = false;
    }

    fn local_problems(&self, ctx: &Context) -> Vec<String> {
        let mut cache = self.local.borrow_mut();
        match &*cache {
            Some((at, problems)) if at.elapsed() < LOCAL_CHECK_EVERY => problems.clone(),
            _ => {
                let problems = installed::inspect(ctx).problems;
                *cache = Some((std::time::Instant::now(), problems.clone()));
                problems
            }
        }
    }

    /// `healthy` or `unhealthy-<category>`, and why.
    pub fn verdict(&self, ctx: &Context) -> (String, String) {
        if self.certificate_problem {
            return ("unhealthy-certificate".into(), self.last_problem.clone().unwrap_or_default());
        }
        if self.failed_polls >= 3 {
            return (
                "unhealthy-communication".into(),
                format!(
                    "{} failed polls: {}",
                    self.failed_polls,
                    self.last_problem.clone().unwrap_or_default()
                ),
            );
        }
        let mut problems = self.local_problems(ctx);
        problems.extend(self_check(ctx));
        if !problems.is_empty() {
            return ("unhealthy-local".into(), problems.join("; "));
        }
        if let Some(r) = SetupResult::load(ctx).filter(|r| r.result == Outcome::Failure) {
            return ("unhealthy-local".into(), format!("last setup failed: {}", r.message));
        }
        ("healthy".into(), String::new())
    }
}

/// Free space below which the device's disk counts as nearly full: a client deployment or a
/// package would not fit.
pub const LOW_DISK_BYTES: u64 = 32 << 20;

/// Status messages waiting in the outbox beyond which it counts as overflowing (it holds
/// [`super::worker::MAX_OUTBOX`]; progress reports are dropped beyond).
pub const OUTBOX_WARN: usize = super::worker::MAX_OUTBOX * 4 / 5;

/// Starts after an agent that died without stopping, within [`CRASH_WINDOW_SECS`], that make
/// a crash loop.
pub const CRASH_LOOP_STARTS: usize = 5;

/// The window of [`CRASH_LOOP_STARTS`].
pub const CRASH_WINDOW_SECS: u64 = 600;

fn starts_path(ctx: &Context) -> std::path::PathBuf {
    ctx.layout.state_dir().join("agent-starts.json")
}

/// Records a start after an agent that died without stopping (the last ten are kept), for the
/// crash-loop check.
pub fn record_unclean_start(ctx: &Context) {
    let path = starts_path(ctx);
    let mut starts: Vec<u64> = dmfs::read_json(&path, 4096).ok().flatten().unwrap_or_default();
    starts.push(clock::unix_secs(ctx.clock.now()));
    let keep = starts.len().saturating_sub(10);
    starts.drain(..keep);
    if let Err(e) = dmfs::write_json(&path, &starts, MODE_PRIVATE) {
        log::warn!("the agent's start was not recorded: {e}");
    }
}

/// The agent's cheap self-checks, run at every verdict: a crash loop, the disk nearly full,
/// the outbox nearly overflowing (docs/health.md).
fn self_check(ctx: &Context) -> Vec<String> {
    let mut problems = Vec::new();
    let starts: Vec<u64> =
        dmfs::read_json(&starts_path(ctx), 4096).ok().flatten().unwrap_or_default();
    let now = clock::unix_secs(ctx.clock.now());
    let recent = starts.iter().filter(|t| now.saturating_sub(**t) <= CRASH_WINDOW_SECS).count();
    if recent >= CRASH_LOOP_STARTS {
        problems.push(format!(
            "the agent died without stopping {recent} times in the last {} minutes (a crash loop)",
            CRASH_WINDOW_SECS / 60
        ));
    }
    if let Ok(free) = dmfs::available_space(ctx.layout.root()) {
        if free < LOW_DISK_BYTES {
            problems.push(format!(
                "the disk is nearly full: {} MiB free (a deployment needs at least {} MiB)",
                free >> 20,
                LOW_DISK_BYTES >> 20
            ));
        }
    }
    let waiting = std::fs::read_dir(ctx.layout.outbox_dir()).map_or(0, |d| d.count());
    if waiting > OUTBOX_WARN {
        problems.push(format!(
            "{waiting} status messages wait in the outbox (it keeps {}; older progress reports are dropped beyond)",
            super::worker::MAX_OUTBOX
        ));
    }
    problems
}

fn read_first_line(path: &std::path::Path) -> Option<String> {
    let b = dmfs::read_optional(path, 4096).ok()??;
    let s =
        String::from_utf8_lossy(&b).trim_matches(char::from(0)).lines().next()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// The os-release file's value of `key`.
fn os_release(ctx: &Context, key: &str) -> Option<String> {
    let b = dmfs::read_optional(&ctx.layout.root().join("etc/os-release"), 16 * 1024).ok()??;
    let text = String::from_utf8_lossy(&b).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// The running system's version: `IMAGE_VERSION` on an image-based system (what its image
/// says), else `VERSION_ID`, with `+BUILD_ID` when there is one. Read again at every start, so
/// a restart into a new system reports it.
pub fn system_version(ctx: &Context) -> String {
    if let Some(v) = os_release(ctx, "IMAGE_VERSION") {
        return v;
    }
    match (os_release(ctx, "VERSION_ID"), os_release(ctx, "BUILD_ID")) {
        (Some(v), Some(b)) => format!("{v}+{b}"),
        (Some(v), None) => v,
        (None, Some(b)) => b,
        (None, None) => "unknown".into(),
    }
}

fn os_name(ctx: &Context) -> String {
    let root = ctx.layout.root();
    let text = dmfs::read_optional(&root.join("etc/os-release"), 16 * 1024)
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| {
            format!(
                "{} {}",
                rustix::system::uname().sysname().to_string_lossy(),
                rustix::system::uname().release().to_string_lossy()
            )
        })
}

/// A package a program ran from successfully.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstalledPackage {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its folder under `var/lib/dm/packages/` (with its signature files), when known.
    #[serde(default)]
    pub dir: Option<std::path::PathBuf>,
}

/// The record as stored: entries of this client, or `[name, version]` pairs of older ones.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Stored {
    Package(InstalledPackage),
    Pair(String, String),
}

/// The installed packages record: each package a program ran from successfully.
pub fn installed_packages(ctx: &Context) -> Vec<InstalledPackage> {
    let stored: Vec<Stored> =
        dmfs::read_json(&ctx.layout.packages_dir().join("installed.json"), 256 * 1024)
            .inspect_err(|e| log::warn!("ignoring the installed packages record: {e}"))
            .ok()
            .flatten()
            .unwrap_or_default();
    stored
        .into_iter()
        .map(|s| match s {
            Stored::Package(p) => p,
            Stored::Pair(name, version) => InstalledPackage { name, version, dir: None },
        })
        .collect()
}

/// Adds a package to the installed packages record.
pub fn record_installed(
    ctx: &Context,
    name: &str,
    version: &str,
    dir: Option<&std::path::Path>,
) -> Result<()> {
    let mut list = installed_packages(ctx);
    list.retain(|p| p.name != name);
    list.push(InstalledPackage {
        name: name.to_string(),
        version: version.to_string(),
        dir: dir.map(std::path::Path::to_path_buf),
    });
    dmfs::create_dir_all(&ctx.layout.packages_dir(), dmfs::MODE_DIR)?;
    Ok(dmfs::write_json(&ctx.layout.packages_dir().join("installed.json"), &list, MODE_PRIVATE)?)
}

/// Installed packages whose publisher (or a CA above it) is now revoked or in the
/// `disallowed` store: `name version` and the error that says why, each.
pub fn revoked_packages(ctx: &Context) -> Vec<(String, dm_shared::Error)> {
    let now = ctx.clock.now();
    let Ok(trust) = dm_shared::certstore::trust(&ctx.layout, now) else { return Vec::new() };
    if trust.crls.is_empty() && trust.disallowed.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for p in installed_packages(ctx) {
        let Some(dir) = &p.dir else { continue };
        let path = dir.join(dm_shared::manifest::PUBLISHER_FILE);
        let Ok(chain) = dm_shared::pki::Cert::load_pem(&path) else { continue };
        if let Err(e @ (dm_shared::Error::Revoked { .. } | dm_shared::Error::Distrusted { .. })) =
            dm_shared::pki::verify_code_signing_chain(&chain, &trust, now, &path)
        {
            out.push((format!("{} {}", p.name, p.version), e));
        }
    }
    out
}

/// The inventory now.
pub fn collect(
    ctx: &Context,
    settings: &Settings,
    health: &HealthState,
) -> BTreeMap<String, String> {
    let root = ctx.layout.root();
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    let platform = Platform::current();
    put(key::PLATFORM, platform.to_string());
    put(key::ARCH, platform.arch().to_string());
    put(key::OS, os_name(ctx));
    put(key::KERNEL, rustix::system::uname().release().to_string_lossy().into_owned());
    let model = read_first_line(&root.join("proc/device-tree/model"))
        .or_else(|| read_first_line(&root.join("sys/class/dmi/id/product_name")))
        .unwrap_or_else(|| "unknown".into());
    put(key::MODEL, model.clone());
    put(key::HW_BOARDNAME, model);
    let revision = read_first_line(&root.join("sys/class/dmi/id/board_version"))
        .or_else(|| read_first_line(&root.join("proc/device-tree/revision")))
        .unwrap_or_else(|| "unknown".into());
    put(key::HW_REVISION, revision);
    put(key::SW_VERSION, system_version(ctx));
    if let Ok(bytes) = dmfs::available_space(root) {
        put(key::FREE_SPACE_MB, (bytes / (1024 * 1024)).to_string());
    }
    if let Some(v) = installed::installed_version(ctx) {
        put(key::CLIENT_VERSION, v.to_string());
    }
    put(key::DEVICE_CLASS, settings.environment.device_class.to_string());
    if let Some(s) = &settings.environment.site_code {
        put(key::SITE_CODE, s.clone());
    }
    let pkgs = installed_packages(ctx);
    put(
        key::INSTALLED_PACKAGES,
        pkgs.iter().map(|p| format!("{} {}", p.name, p.version)).collect::<Vec<_>>().join(", "),
    );
    let revoked: Vec<String> = revoked_packages(ctx).into_iter().map(|(p, _)| p).collect();
    if !revoked.is_empty() {
        put(key::REVOKED_PACKAGES, revoked.join(", "));
    }
    let (verdict, why) = health.verdict(ctx);
    put(key::CLIENT_HEALTH, verdict);
    put(key::CLIENT_HEALTH_REASON, why.chars().take(1000).collect());
    if let Some((health, expires)) = super::certs::inventory(ctx, settings) {
        put(key::CERTIFICATE_HEALTH, health);
        if let Some(e) = expires {
            put(key::CERTIFICATE_EXPIRES, e);
        }
    }
    if settings.environment.device_class == DeviceClass::Desktop {
        match TetherRecord::load(&ctx.layout) {
            Ok(r) => {
                r.inventory().into_iter().for_each(|(k, v)| put(k, v.chars().take(1000).collect()))
            }
            Err(e) => log::warn!("the tethered devices are left out of the inventory: {e}"),
        }
    }
    for (k, v) in super::baseline::inventory(ctx) {
        put(&k, v);
    }
    if let Some(r) = SetupResult::load(ctx) {
        put(key::LAST_SETUP, format!("{} {} {} at {}", r.op, r.result.as_str(), r.code, r.time));
    }
    m
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Sent {
    fingerprint: String,
    sent: u64,
    /// The keys sent, to remove on the server those the device no longer reports.
    #[serde(default)]
    keys: Vec<String>,
}

fn fingerprint(m: &BTreeMap<String, String>) -> String {
    let stable: Vec<String> = m
        .iter()
        .filter(|(k, _)| !VOLATILE.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    dm_shared::pki::sha256_hex(stable.join("\n").as_bytes())
}

/// Sends the inventory when it changed, when a day passed, or when `force`.
pub fn maybe_send(
    ctx: &Context,
    session: &super::session::Session,
    settings: &Settings,
    health: &HealthState,
    force: bool,
) -> Result<bool> {
    let path = ctx.layout.state_dir().join("inventory.json");
    let last: Sent = dmfs::read_json(&path, 256 * 1024).ok().flatten().unwrap_or_default();
    let inv = collect(ctx, settings, health);
    let fp = fingerprint(&inv);
    let now = clock::unix_secs(ctx.clock.now());
    if !force && fp == last.fingerprint && now.saturating_sub(last.sent) < RESEND.as_secs() {
        return Ok(false);
    }
    session.config_data(inv.clone())?;
    log::info!(
        "inventory sent (client health {})",
        inv.get(key::CLIENT_HEALTH).map_or("?", String::as_str)
    );
    // What the device reported before and no longer does goes away on the server too.
    let gone: Vec<String> = last.keys.iter().filter(|k| !inv.contains_key(*k)).cloned().collect();
    if !gone.is_empty() {
        match session.config_data_remove(&gone) {
            Ok(()) => log::debug!("inventory keys no longer reported: {}", gone.join(", ")),
            Err(e) => {
                log::warn!("inventory keys {} not removed on the server: {e}", gone.join(", "))
            }
        }
    }
    let keys = inv.keys().cloned().collect();
    dmfs::write_json(&path, &Sent { fingerprint: fp, sent: now, keys }, MODE_PRIVATE)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_self_check_notices_a_crash_loop() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context::for_test(dir.path(), std::sync::Arc::new(dm_shared::clock::SystemClock));
        std::fs::create_dir_all(ctx.layout.state_dir()).unwrap();
        for _ in 0..CRASH_LOOP_STARTS - 1 {
            record_unclean_start(&ctx);
        }
        assert!(self_check(&ctx).is_empty(), "four are no loop");
        record_unclean_start(&ctx);
        let problems = self_check(&ctx);
        assert!(
            problems[0].contains("died without stopping 5 times in the last 10 minutes"),
            "{problems:?}"
        );
        for _ in 0..20 {
            record_unclean_start(&ctx);
        }
        let kept: Vec<u64> = dmfs::read_json(&starts_path(&ctx), 4096).unwrap().unwrap();
        assert_eq!(kept.len(), 10);
    }

    #[test]
    fn the_self_check_notices_an_overflowing_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context::for_test(dir.path(), std::sync::Arc::new(dm_shared::clock::SystemClock));
        assert!(self_check(&ctx).is_empty());
        let outbox = ctx.layout.outbox_dir();
        std::fs::create_dir_all(&outbox).unwrap();
        for i in 0..=OUTBOX_WARN {
            std::fs::write(outbox.join(format!("{i:020}.json")), "{}").unwrap();
        }
        let problems = self_check(&ctx);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("801 status messages wait in the outbox"), "{problems:?}");
    }

    #[test]
    fn inventory_describes_the_device_and_ignores_free_space_for_changes() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context::for_test(dir.path(), std::sync::Arc::new(dm_shared::clock::SystemClock));
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/os-release"),
            "NAME=Debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\nBUILD_ID=20261128\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("proc/device-tree")).unwrap();
        std::fs::write(
            dir.path().join("proc/device-tree/model"),
            b"Raspberry Pi 4 Model B Rev 1.4\0",
        )
        .unwrap();
        record_installed(&ctx, "tools", "1.0.0.0", None).unwrap();
        record_installed(&ctx, "tools", "1.1.0.0", None).unwrap();
        let inv = collect(&ctx, &Settings::defaults(), &HealthState::default());
        assert_eq!(inv["os"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(inv["model"], "Raspberry Pi 4 Model B Rev 1.4");
        assert_eq!(inv["hw_boardname"], "Raspberry Pi 4 Model B Rev 1.4");
        assert_eq!(inv["hw_revision"], "unknown");
        assert_eq!(inv["sw_version"], "12+20261128");
        assert_eq!(inv["installed_packages"], "tools 1.1.0.0");
        assert_eq!(inv["platform"], Platform::current().to_string());
        assert_eq!(inv["client_health"], "healthy");
        let mut other = inv.clone();
        other.insert("free_space_mb".into(), "1".into());
        assert_eq!(fingerprint(&inv), fingerprint(&other));
        other.insert("client_health".into(), "unhealthy-communication".into());
        assert_ne!(fingerprint(&inv), fingerprint(&other));
    }

    #[test]
    fn health_categories() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context::for_test(dir.path(), std::sync::Arc::new(dm_shared::clock::SystemClock));
        let mut h = HealthState {
            failed_polls: 3,
            last_problem: Some("connection refused".into()),
            ..HealthState::default()
        };
        assert_eq!(h.verdict(&ctx).0, "unhealthy-communication");
        h.certificate_problem = true;
        assert_eq!(h.verdict(&ctx).0, "unhealthy-certificate");
    }
}
