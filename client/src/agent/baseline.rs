//! The configuration items assigned to this device, kept in place (docs/configuration-items.md):
//!
//! - a configuration package's advertisement assigns its items (those for this platform are
//!   applied; the others are not applicable); a newer version of the package replaces them,
//!   and an item it no longer holds leaves the device, its replaced values put back when the
//!   item says so;
//! - every assigned item is evaluated again about every `EvaluationInterval` and as soon as a
//!   file it watches changes (looked at every second while the agent waits): a value someone
//!   changed is put back and the remediation logged, unless the item only monitors;
//! - compliance goes to the management point in inventory (`compliance`, `compliance.<item>`).
//!
//! The assignment, with the value each setting replaced the first time, is
//! `var/lib/dm/config/assigned.json`, written atomically after every change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use dm_shared::config_item::{self, ConfigItem};
use dm_shared::fs::{self as dmfs, MODE_PRIVATE};
use dm_shared::manifest::VerifiedFolder;
use dm_shared::message::MessageId;
use dm_shared::vocab::inventory as key;
use dm_shared::{Context, Platform, Settings, StatusCode, clock};
use log::{info, warn};

use super::state::ActionRecord;
use super::timing;
use super::worker::Worker;
use crate::config::{self, ItemResult, Replaced, State};
use crate::error::Result;

/// One configuration package's items on this device.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct AssignedPackage {
    /// Its version.
    pub version: String,
    /// Its items (all of them: those for other platforms are not applicable).
    pub items: Vec<ConfigItem>,
    /// For each item, the values its settings replaced the first time they were applied.
    pub replaced: BTreeMap<String, Vec<(String, Replaced)>>,
    /// The last evaluation.
    pub results: Vec<ItemResult>,
    /// When (RFC 3339).
    pub evaluated: String,
}

/// Every configuration package assigned to the device, by name.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Assigned {
    /// The packages.
    pub packages: BTreeMap<String, AssignedPackage>,
}

fn path(ctx: &Context) -> PathBuf {
    ctx.layout.state_dir().join("config/assigned.json")
}

/// The most bytes the assignment may hold (replaced whole files included).
const MAX_ASSIGNED: u64 = 64 << 20;

impl Assigned {
    /// The assignment (empty when there is none). A file that cannot be read is an error,
    /// never taken for "nothing assigned": that would lose the values to restore.
    pub fn load(ctx: &Context) -> Result<Assigned> {
        Ok(dmfs::read_json(&path(ctx), MAX_ASSIGNED)?.unwrap_or_default())
    }

    fn save(&self, ctx: &Context) -> Result<()> {
        let p = path(ctx);
        if let Some(dir) = p.parent() {
            dmfs::create_dir_all(dir, dmfs::MODE_DIR_PRIVATE)?;
        }
        Ok(dmfs::write_json(&p, self, MODE_PRIVATE)?)
    }

    /// Every file the assigned items read, to notice a change.
    fn watched(&self, ctx: &Context) -> Vec<PathBuf> {
        let root = ctx.layout.root();
        let platform = Platform::current();
        self.packages
            .values()
            .flat_map(|p| p.items.iter())
            .filter(|i| i.applies_to(&platform))
            .flat_map(|i| i.settings.iter())
            .map(|s| match &s.target {
                // Enabling or disabling changes the links, not the unit file. (A kernel
                // parameter's file under /proc never changes its time: it is evaluated at the
                // interval.)
                config_item::Target::Systemd { .. } => {
                    root.join("etc/systemd/system/multi-user.target.wants")
                }
                t => root.join(t.path()),
            })
            .collect()
    }
}

/// Applies `item` and merges what it replaced into `kept` (the first value replaced is the
/// one a restore puts back).
fn enforce(ctx: &Context, item: &ConfigItem, kept: &mut Vec<(String, Replaced)>) -> ItemResult {
    let (result, replaced) = config::enforce_item(ctx.layout.root(), item, &Platform::current());
    for (setting, old) in replaced {
        if !kept.iter().any(|(s, _)| *s == setting) {
            kept.push((setting, old));
        }
    }
    for s in result.settings.iter().filter(|s| s.state != State::Compliant) {
        let detail = s.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        let line = format!("item {} setting {}: {}{detail}", item.name, s.name, s.state.as_str());
        if s.state == State::Remediated {
            info!("{line} (was {})", s.actual.as_deref().unwrap_or("not reported"));
        } else {
            warn!("{line}");
        }
    }
    result
}

/// Puts back what a removed item replaced, when it says so.
fn remove(ctx: &Context, item: &ConfigItem, replaced: &[(String, Replaced)]) {
    if !item.restore_on_removal {
        info!("item {} removed; its values stay as they are", item.name);
        return;
    }
    let problems = config::restore(ctx.layout.root(), item, replaced);
    if problems.is_empty() {
        info!("item {} removed; {} replaced values put back", item.name, replaced.len());
    } else {
        warn!("item {} removed; not all values put back: {}", item.name, problems.join("; "));
    }
}

/// The action's status: failure when an item is in error or not compliant.
fn outcome(results: &[ItemResult]) -> StatusCode {
    match config::worst(results.iter().map(|r| r.state)) {
        State::Error => StatusCode::DM_E_CONFIG_SETTING_FAILED,
        State::NonCompliant => StatusCode::DM_E_CONFIG_NONCOMPLIANT,
        _ => StatusCode::S_OK,
    }
}

/// Counts per state: `compliant 3, non-compliant 1, …`.
pub fn summary(results: &[&ItemResult]) -> String {
    let states = [
        State::Compliant,
        State::NonCompliant,
        State::Remediated,
        State::Error,
        State::NotApplicable,
    ];
    states
        .iter()
        .map(|s| format!("{} {}", s.as_str(), results.iter().filter(|r| r.state == *s).count()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The detail lines of an evaluation: each item, and each setting that departs.
fn details(results: &[ItemResult]) -> Vec<String> {
    let mut out = Vec::new();
    for r in results {
        out.push(format!("item {} v{}: {}", r.name, r.version, r.state.as_str()));
        for s in r.settings.iter().filter(|s| s.state != State::Compliant) {
            out.push(format!(
                "{}/{}: {}; expected {}, found {}{}",
                r.name,
                s.name,
                s.state.as_str(),
                s.expected,
                s.actual.as_deref().unwrap_or("(not reported)"),
                s.reason.as_deref().map(|x| format!(" ({x})")).unwrap_or_default()
            ));
        }
    }
    out.truncate(50);
    out
}

impl Worker<'_> {
    /// Assigns a verified configuration package's items: removes the items its previous
    /// version had and this one does not, applies the others, and reports compliance.
    pub fn apply_configuration(
        &mut self,
        rec: &mut ActionRecord,
        folder: &VerifiedFolder,
    ) -> Result<()> {
        let m = &folder.manifest;
        let items = match config_item::items_of(m) {
            Ok(i) => i,
            Err(why) => {
                let code = StatusCode::DM_E_CONFIG_SETTING_FAILED;
                return self.finish(rec, MessageId::CONFIG_APPLIED, code, why, vec![]);
            }
        };
        let mut assigned = match Assigned::load(self.ctx) {
            Ok(a) => a,
            Err(e) => {
                let code = StatusCode::DM_E_CONFIG_SETTING_FAILED;
                let text = format!("the configuration items on this device cannot be read: {e}");
                return self.finish(rec, MessageId::CONFIG_APPLIED, code, text, vec![]);
            }
        };
        let old = assigned.packages.remove(&m.name).unwrap_or_default();
        for gone in old.items.iter().filter(|o| !items.iter().any(|i| i.name == o.name)) {
            remove(self.ctx, gone, old.replaced.get(&gone.name).map_or(&[][..], |v| v.as_slice()));
        }
        let mut replaced = old.replaced;
        replaced.retain(|name, _| items.iter().any(|i| &i.name == name));
        let results: Vec<ItemResult> = items
            .iter()
            .map(|i| enforce(self.ctx, i, replaced.entry(i.name.clone()).or_default()))
            .collect();
        let code = outcome(&results);
        let refs: Vec<&ItemResult> = results.iter().collect();
        let text = format!("{} {}: configuration items {}", m.name, m.version, summary(&refs));
        let lines = details(&results);
        let package = AssignedPackage {
            version: m.version.to_string(),
            items,
            replaced,
            results,
            evaluated: self.now(),
        };
        assigned.packages.insert(m.name.clone(), package);
        assigned.save(self.ctx)?;
        let id = super::ledger::PackageId::of(folder);
        super::ledger::Ledger::record_run(self.ctx, id, m.version, "configuration", true)?;
        self.finish(rec, MessageId::CONFIG_APPLIED, code, text, lines)
    }
}

/// Evaluates every assigned item again on a schedule and when a watched file changes.
pub struct Baseline {
    next: Instant,
    last_evaluation: Option<Instant>,
    /// A watched folder changed; its files are looked at once the change gap has passed.
    pending: bool,
    stamps: BTreeMap<PathBuf, Option<(u64, SystemTime)>>,
}

/// The least time between two evaluations a change triggered: a program that rewrites a
/// watched file in a loop costs one evaluation every few seconds, not one a second.
const CHANGE_GAP: Duration = Duration::from_secs(5);

impl Default for Baseline {
    fn default() -> Self {
        Baseline {
            next: Instant::now(),
            last_evaluation: None,
            pending: true,
            stamps: BTreeMap::new(),
        }
    }
}

fn stamp(p: &PathBuf) -> Option<(u64, SystemTime)> {
    let m = std::fs::symlink_metadata(p).ok()?;
    Some((m.len(), m.modified().ok()?))
}

impl Baseline {
    /// Called whenever the agent's wait ends (`changed`: something changed in a watched
    /// folder): evaluates when the interval passed, or when a watched file changed and the
    /// last evaluation is `CHANGE_GAP` (5 s) old. Returns when it next needs to be called.
    pub fn tick(&mut self, ctx: &Context, settings: &Settings, changed: bool) -> Instant {
        self.pending |= changed;
        let now = Instant::now();
        let settled = self.last_evaluation.map_or(now, |t| t + CHANGE_GAP);
        let mut evaluate = now >= self.next;
        if self.pending && now >= settled {
            self.pending = false;
            if self.stamps.iter().any(|(p, s)| stamp(p) != *s) {
                log::debug!("a watched file changed: evaluating the configuration items again");
                evaluate = true;
            }
        }
        if evaluate {
            self.evaluate(ctx);
            self.next = now + timing::jittered(settings.configuration.evaluation_interval);
        }
        if self.pending { self.next.min(settled) } else { self.next }
    }

    /// The folders of the watched files: a file is often replaced by a rename, so its folder
    /// is what is watched; for a folder that does not exist yet, the nearest one that does
    /// (its creation wakes the agent, which then watches it).
    pub fn watched_dirs(&self) -> BTreeSet<PathBuf> {
        self.stamps
            .keys()
            .filter_map(|p| p.ancestors().skip(1).find(|d| d.is_dir()).map(Path::to_path_buf))
            .collect()
    }

    /// Evaluates (and, unless monitor-only, applies) every assigned item now.
    pub fn evaluate(&mut self, ctx: &Context) {
        self.last_evaluation = Some(Instant::now());
        let mut assigned = match Assigned::load(ctx) {
            Ok(a) => a,
            Err(e) => {
                warn!("the configuration items are not evaluated: {e}");
                return;
            }
        };
        if assigned.packages.is_empty() {
            // Nothing to evaluate until a configuration package assigns items.
            self.stamps = [(path(ctx), stamp(&path(ctx)))].into_iter().collect();
            return;
        }
        // The files are looked at before they are evaluated: a change made meanwhile is
        // noticed at the next look.
        let mut watched = assigned.watched(ctx);
        watched.push(path(ctx));
        let mut stamps: BTreeMap<PathBuf, Option<(u64, SystemTime)>> =
            watched.into_iter().map(|p| (p.clone(), stamp(&p))).collect();
        let before: Vec<Vec<ItemResult>> =
            assigned.packages.values().map(|p| p.results.clone()).collect();
        let now = clock::rfc3339(ctx.clock.now());
        for p in assigned.packages.values_mut() {
            let mut results = Vec::new();
            for item in &p.items {
                let kept = p.replaced.entry(item.name.clone()).or_default();
                results.push(enforce(ctx, item, kept));
            }
            p.results = results;
            p.evaluated = now.clone();
        }
        let after: Vec<Vec<ItemResult>> =
            assigned.packages.values().map(|p| p.results.clone()).collect();
        let remediated = after.iter().flatten().any(|r| r.state == State::Remediated);
        if before != after || remediated {
            if let Err(e) = assigned.save(ctx) {
                warn!("the configuration items' evaluation was not recorded: {e}");
            }
        }
        // The assignment itself is watched too: a new package's items are evaluated within a
        // second of their action, and their files watched from then on. Its own save above is
        // taken in, not counted as a change.
        stamps.insert(path(ctx), stamp(&path(ctx)));
        self.stamps = stamps;
    }
}

/// The most `compliance.<package>/<item>` keys sent: the server takes 256 attributes.
const MAX_DETAIL_KEYS: usize = 32;

/// The compliance inventory: counts, and the detail of each item that is not compliant.
pub fn inventory(ctx: &Context) -> Vec<(String, String)> {
    let Ok(assigned) = Assigned::load(ctx) else { return Vec::new() };
    if assigned.packages.is_empty() {
        return Vec::new();
    }
    let results: Vec<(&String, &AssignedPackage, &ItemResult)> = assigned
        .packages
        .iter()
        .flat_map(|(name, p)| p.results.iter().map(move |r| (name, p, r)))
        .collect();
    let refs: Vec<&ItemResult> = results.iter().map(|(_, _, r)| *r).collect();
    let mut out = vec![(key::COMPLIANCE.to_string(), summary(&refs))];
    let departing: Vec<_> = results
        .into_iter()
        .filter(|(_, _, r)| {
            !matches!(r.state, State::Compliant | State::NotApplicable | State::Remediated)
        })
        .collect();
    if departing.len() > MAX_DETAIL_KEYS {
        let more = departing.len() - MAX_DETAIL_KEYS;
        out.push((
            format!("{}more", key::COMPLIANCE_ITEM_PREFIX),
            format!("{more} more items are not compliant; see the device's log"),
        ));
    }
    for (name, p, r) in departing.into_iter().take(MAX_DETAIL_KEYS) {
        let settings: Vec<&config::SettingResult> =
            r.settings.iter().filter(|s| s.state != State::Compliant).take(20).collect();
        let detail = serde_json::json!({
            "package": format!("{name} {}", p.version),
            "version": r.version,
            "state": r.state.as_str(),
            "settings": settings,
        });
        let mut text = detail.to_string();
        if text.len() > 4000 {
            text = serde_json::json!({"package": format!("{name} {}", p.version), "version": r.version,
                "state": r.state.as_str(), "settings": [], "truncated": true}).to_string();
        }
        // Keys are at most 128 bytes on the server: the package's name is shortened.
        let package: String = name.chars().take(40).collect();
        out.push((format!("{}{package}/{}", key::COMPLIANCE_ITEM_PREFIX, r.name), text));
    }
    out
}
