//! The server's evaluation of rollout gates (docs/rollouts.md): every `rollout_tick_secs` it
//! starts the ready rollouts whose start time came, lets devices that joined a running
//! rollout's collection into its current group (at most `joins_per_minute`), counts each
//! running rollout's current group from the in-memory view (never from a device's poll) and
//! moves the rollout as [`crate::rollout::tick`] decides. Each move is a compare-and-set in the
//! database, so two instances on one database, or an administrator's command at the same
//! moment, never move a rollout twice.

use std::collections::{HashMap, VecDeque};

use super::state::{AppState, RolloutGate, View};
use crate::error::Result;
use crate::model::updates::UpdateState;
use crate::model::{Advertisement, CollectionRule, Rerun};
use crate::rollout::{self, Counts, Facts, OnError, Rollout, RolloutState, Target, Timing};
use crate::storage::Storage;

/// The members whose facts one evaluation reads afresh from the view, besides the ones it
/// has not seen yet. Reading a member's device and action costs about 0.8 µs (two hash
/// lookups into a view of the whole fleet), so a group of 50,000 read whole takes about
/// 40 ms; a tick reads 5,000 and judges the rest on what it read before (benches/
/// rollout_gates.rs), and a group is read whole only before a rollout moves.
pub const SLICE: usize = 5_000;

/// What the gate evaluation keeps between ticks.
#[derive(Debug, Default)]
pub struct Memory {
    /// Devices that joined, per rollout.
    joins: Joins,
    /// Each running rollout's current group's facts, by rollout.
    facts: HashMap<i64, Cached>,
}

/// One rollout's current group's facts, read a slice at a time.
#[derive(Debug, Default)]
pub struct Cached {
    /// The group they are of.
    group: i64,
    /// What they are about (a rollout resumed with a fixed version has a new advertisement).
    target: Option<Target>,
    /// Each member's facts as last read.
    facts: HashMap<i64, Facts>,
    /// Where the next slice starts.
    cursor: usize,
    /// The counts last recorded as a sample of the group's progress.
    recorded: Option<Counts>,
}

/// When devices joined running rollouts in the last minute, per rollout.
#[derive(Debug, Default)]
pub struct Joins(HashMap<i64, VecDeque<i64>>);

impl Joins {
    /// How many more devices may join rollout `id` at `now`, given `per_minute`.
    fn budget(&mut self, id: i64, per_minute: u32, now: i64) -> usize {
        let q = self.0.entry(id).or_default();
        while q.front().is_some_and(|t| now - t >= 60) {
            q.pop_front();
        }
        (per_minute as usize).saturating_sub(q.len())
    }

    fn note(&mut self, id: i64, n: usize, now: i64) {
        self.0.entry(id).or_default().extend(std::iter::repeat_n(now, n));
    }
}

/// One evaluation of every rollout. Returns how many changed (moved, or took joiners).
pub fn tick(state: &AppState, memory: &mut Memory) -> Result<usize> {
    let now = state.now();
    // The rollouts alone: their members stay in the view, read under its lock.
    let rollouts: Vec<Rollout> =
        state.read().rollouts.values().map(|g| g.rollout.clone()).collect();
    memory
        .facts
        .retain(|id, _| rollouts.iter().any(|r| r.id == *id && r.state == RolloutState::Running));
    let mut changed = 0;
    for r in &rollouts {
        let moved = match r.state {
            RolloutState::Ready if r.spec.start_at.is_some_and(|t| t <= now) => {
                start(state, r, now)?
            }
            RolloutState::Running => {
                let cached = memory.facts.entry(r.id).or_default();
                admit_joiners(state, r, &mut memory.joins, now)? | gate(state, r, cached, now)?
            }
            _ => false,
        };
        changed += usize::from(moved);
    }
    if changed > 0 {
        let fresh = RolloutGate::load(state.store.as_ref())?;
        state.write().rollouts = fresh;
    }
    Ok(changed)
}

/// Starts a ready rollout whose start time came: its collection cut into groups now.
fn start(state: &AppState, r: &Rollout, now: i64) -> Result<bool> {
    let members = {
        let v = state.read();
        let Some(col) = v.rollout_collection(r.target) else {
            return Ok(false);
        };
        let devices: Vec<_> = v.devices.values().cloned().collect();
        rollout::assign(&r.name, &r.spec.split, col, &devices)
    };
    state.store.add_rollout_members(r.id, &members)?;
    let Some((next, event)) = rollout::tick(r, &[], now) else { return Ok(false) };
    let groups = members.last().map_or(0, |(_, g)| g + 1);
    let event = format!("{event} ({} devices in {groups} groups)", members.len());
    moved(state, r, &next, &event)
}

/// Lets devices that joined the collection of a running rollout into its current group.
/// Returns whether any did.
fn admit_joiners(state: &AppState, r: &Rollout, joins: &mut Joins, now: i64) -> Result<bool> {
    let budget = joins.budget(r.id, r.spec.joins_per_minute, now);
    if budget == 0 {
        return Ok(false);
    }
    let new: Vec<(i64, i64)> = {
        let v = state.read();
        let (Some(col), Some(g)) = (v.rollout_collection(r.target), v.rollouts.get(&r.target))
        else {
            return Ok(false);
        };
        let mut ids: Vec<i64> = v
            .devices
            .values()
            .filter(|d| !g.groups.contains_key(&d.id) && col.contains(d))
            .map(|d| d.id)
            .collect();
        ids.sort_unstable();
        ids.into_iter().take(budget).map(|d| (d, r.current_group)).collect()
    };
    if new.is_empty() {
        return Ok(false);
    }
    let n = state.store.add_rollout_members(r.id, &new)?;
    joins.note(r.id, n, now);
    log::info!(
        "rollout {}: {n} device(s) joined its collection and group {}",
        r.name,
        r.current_group + 1
    );
    Ok(n > 0)
}

/// A running rollout's current group counted from `view` (the other groups' counts are zero),
/// with `last_seen` the last-seen times not yet in the view's devices, and its failed devices.
/// With `cache`, only the members it does not hold and the next [`SLICE`] of them are read
/// afresh, the others judged on what was read before; without, every member is read.
/// A program's devices are read from the view by key (their device and action); an update
/// deployment's from `store` as well (their update states), in one query per reading: the
/// cost grows with the group, never with the fleet.
pub fn evaluate(
    view: &View,
    store: &dyn Storage,
    last_seen: &HashMap<i64, i64>,
    r: &Rollout,
    now: i64,
    cache: Option<&mut Cached>,
) -> Result<(Vec<Counts>, rollout::Failures)> {
    let Some(g) = view.rollouts.get(&r.target) else { return Ok((Vec::new(), Vec::new())) };
    let t = Timing { soak: r.spec.soak, silent_after: r.spec.silent_after };
    let groups = rollout::group_count(&g.members);
    let current: Vec<i64> =
        g.members.iter().filter(|m| m.group == r.current_group).map(|m| m.device_id).collect();
    let Some(cache) = cache else {
        let fresh = read_facts(view, store, last_seen, r, &current)?;
        let facts = |id: i64| fresh.get(&id).cloned().unwrap_or_default();
        return Ok(rollout::count(&g.members, groups, Some(r.current_group), facts, t, now));
    };
    if (cache.group, cache.target) != (r.current_group, Some(r.target)) {
        *cache = Cached { group: r.current_group, target: Some(r.target), ..Cached::default() };
    }
    let mut wanted: Vec<i64> =
        current.iter().filter(|id| !cache.facts.contains_key(id)).copied().collect();
    wanted
        .extend((0..SLICE.min(current.len())).map(|i| current[(cache.cursor + i) % current.len()]));
    wanted.sort_unstable();
    wanted.dedup();
    cache.facts.extend(read_facts(view, store, last_seen, r, &wanted)?);
    cache.cursor = (cache.cursor + SLICE) % current.len().max(1);
    let known = |id: i64| cache.facts.get(&id).cloned().unwrap_or_default();
    Ok(rollout::count(&g.members, groups, Some(r.current_group), known, t, now))
}

/// The facts of devices `ids` of rollout `r`, read afresh.
fn read_facts(
    view: &View,
    store: &dyn Storage,
    last_seen: &HashMap<i64, i64>,
    r: &Rollout,
    ids: &[i64],
) -> Result<HashMap<i64, Facts>> {
    let device = |id: i64| view.device_keys.get(&id).and_then(|k| view.devices.get(k));
    let seen = |id: i64, d: &crate::model::Device| last_seen.get(&id).copied().max(d.last_seen);
    match r.target {
        Target::Advertisement(adv) => {
            let pkg = view
                .advertisements
                .get(&adv)
                .and_then(|a| view.programs.get(&a.program_id))
                .and_then(|p| view.packages.get(&p.package_id));
            let Some(pkg) = pkg else { return Ok(HashMap::new()) };
            let want = rollout::Want::of(pkg);
            Ok(ids
                .iter()
                .filter_map(|&id| {
                    let d = device(id)?;
                    let action = view.actions_of(id).find(|a| a.advertisement_id == adv);
                    Some((id, rollout::facts_of(&want, action, d, seen(id, d))))
                })
                .collect())
        }
        Target::UpdateDeployment(dep) => {
            let Some(x) = view.update_deployments.iter().find(|x| x.id == dep) else {
                return Ok(HashMap::new());
            };
            let progress = store.update_progress(ids, &x.updates)?;
            // Names for people, read only when a failure needs one.
            let failed = progress.states.iter().any(|s| s.state == UpdateState::Failed);
            let names: HashMap<i64, String> = if failed {
                store.updates()?.into_iter().map(|u| (u.id, u.label())).collect()
            } else {
                HashMap::new()
            };
            let updates: Vec<(i64, String)> = x
                .updates
                .iter()
                .map(|u| (*u, names.get(u).cloned().unwrap_or_else(|| format!("#{u}"))))
                .collect();
            Ok(update_facts(&progress, &updates, ids, |id| device(id).map(|d| (d, seen(id, d)))))
        }
    }
}

/// The facts of devices `ids` for an update deployment of `updates`, from `progress` and
/// each device (with its last poll) as `device` finds it.
pub fn update_facts<'d>(
    progress: &crate::model::updates::UpdateProgress,
    updates: &[(i64, String)],
    ids: &[i64],
    device: impl Fn(i64) -> Option<(&'d crate::model::Device, Option<i64>)>,
) -> HashMap<i64, Facts> {
    let mut states: HashMap<i64, Vec<&crate::model::updates::DeviceUpdateState>> = HashMap::new();
    for s in &progress.states {
        states.entry(s.device_id).or_default().push(s);
    }
    let scanned: HashMap<i64, i64> = progress.scanned.iter().copied().collect();
    ids.iter()
        .filter_map(|&id| {
            let (d, seen) = device(id)?;
            let rows = states.get(&id).map_or(&[][..], Vec::as_slice);
            Some((id, rollout::update_facts(updates, rows, scanned.get(&id).copied(), d, seen)))
        })
        .collect()
}

/// Counts a running rollout's current group and moves it as the gates say.
/// The members' facts come from `cached`, refreshed a slice at a time; a move is made only
/// when a reading of every member afresh decides it too.
fn gate(state: &AppState, r: &Rollout, cached: &mut Cached, now: i64) -> Result<bool> {
    // The times not flushed yet (a few seconds' polls): copied, so no poll waits for this.
    let seen = state.last_seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let store = state.store.as_ref();
    let (counts, _) = evaluate(&state.read(), store, &seen, r, now, Some(cached))?;
    record(store, r, &counts, cached, now)?;
    if rollout::tick(r, &counts, now).is_none() {
        return Ok(false);
    }
    let (counts, failed) = evaluate(&state.read(), store, &seen, r, now, None)?;
    record(store, r, &counts, cached, now)?;
    let Some((next, event)) = rollout::tick(r, &counts, now) else { return Ok(false) };
    let rollback = match (next.state, r.spec.on_error) {
        (RolloutState::Paused, OnError::Rollback { program_id }) => Some(program_id),
        _ => None,
    };
    let event = match next.state {
        RolloutState::Paused => {
            let names = state.read();
            let who: Vec<String> = failed
                .get(r.current_group as usize)
                .into_iter()
                .flatten()
                .map(|(d, why)| {
                    let cid = names.device_keys.get(d).map_or(d.to_string(), |k| k.1.clone());
                    format!("{cid} ({why})")
                })
                .collect();
            let mut e = format!("{event}: {}", who.join(", "));
            if rollback.is_some() {
                let name = rollout::rollback_name(&r.name, r.current_group, now);
                e.push_str(&format!(
                    "; rolled back: advertisement {name} of the previous version to the group's devices"
                ));
            }
            e
        }
        _ => event,
    };
    if !moved(state, r, &next, &event)? {
        return Ok(false);
    }
    if let Some(program_id) = rollback {
        roll_back(state, r, program_id, now)?;
    }
    Ok(true)
}

/// Records the current group's counts as a sample of its progress when they changed since
/// the last one recorded (the console plots them).
fn record(
    store: &dyn Storage,
    r: &Rollout,
    counts: &[Counts],
    cached: &mut Cached,
    now: i64,
) -> Result<()> {
    let Some(c) = counts.get(r.current_group as usize).copied() else { return Ok(()) };
    if cached.recorded == Some(c) {
        return Ok(());
    }
    store.add_rollout_sample(
        r.id,
        &rollout::Sample { time: now, group: r.current_group, counts: c },
    )?;
    cached.recorded = Some(c);
    Ok(())
}

/// Advertises the previous version (`program_id`) to every device of the current group of
/// `g`'s rollout, a downgrade allowed and run again: an explicit collection of them, then the
/// advertisement (last: no device sees one without the other).
fn roll_back(state: &AppState, r: &Rollout, program_id: i64, now: i64) -> Result<()> {
    let name = rollout::rollback_name(&r.name, r.current_group, now);
    let (tenant, devices) = {
        let v = state.read();
        let tenant = v.rollout_collection(r.target).map(|c| c.tenant.clone());
        let devices: Vec<i64> = v
            .rollouts
            .get(&r.target)
            .map(|g| {
                g.members
                    .iter()
                    .filter(|m| m.group == r.current_group)
                    .map(|m| m.device_id)
                    .collect()
            })
            .unwrap_or_default();
        (tenant, devices)
    };
    let Some(tenant) = tenant else { return Ok(()) };
    let col = state.store.add_collection(&name, &tenant, &CollectionRule::Explicit)?;
    for d in &devices {
        state.store.add_member(col, *d)?;
    }
    let adv = Advertisement {
        rerun: Rerun::Always,
        allow_downgrade: true,
        ..Advertisement::mandatory(&name, program_id, col, now)
    };
    state.store.add_advertisement(&adv)?;
    log::warn!(
        "rollout {}: rolling group {} back: advertisement {name} to {} devices",
        r.name,
        r.current_group + 1,
        devices.len()
    );
    // The server wrote these itself: its view takes them now, not at another writer's change.
    super::state::reload_now(state)
}

/// Writes a move; logs it when this instance made it.
fn moved(state: &AppState, before: &Rollout, next: &Rollout, event: &str) -> Result<bool> {
    if !state.store.update_rollout(before, next, event)? {
        return Ok(false);
    }
    if next.state == RolloutState::Paused {
        log::warn!("rollout {} {event}", before.name);
    } else {
        log::info!("rollout {}: {event}", before.name);
    }
    Ok(true)
}
