//! `dmmp rollout`: phased rollouts of an advertised program, or of a held software update
//! deployment, to a collection, group by group, each gated on the previous group's confirmed
//! successes (docs/rollouts.md). The decisions
//! are [`crate::rollout`]'s; here they meet the store and the administrator.

use std::collections::HashMap;

use serde_json::json;

use super::{Out, find_collection, find_program, table, when};
use crate::error::{Error, Result};
use crate::model::*;
use crate::rollout::{
    self, Command, Counts, Gates, Member, OnError, Rollout, RolloutState, Spec, Split,
};
use crate::storage::Storage;

/// What `dmmp rollout create` is given.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    /// The rollout's name (its advertisement's too).
    pub name: String,
    /// The program (id or name), or
    pub program: Option<String>,
    /// the held update deployment (id or name).
    pub update_deployment: Option<String>,
    /// The collection (id or name); an update deployment's own by default.
    pub collection: Option<String>,
    /// `1%,10%,50%,100%` or `size:N`.
    pub groups: String,
    /// The gates.
    pub gates: Gates,
    /// Soak time, seconds.
    pub soak: i64,
    /// Silence after which an installed device failed, seconds.
    pub silent_after: i64,
    /// Start time (RFC 3339).
    pub start: Option<String>,
    /// Whether an administrator approves it before it starts.
    pub approval: bool,
    /// Devices joining a running rollout a minute, at most.
    pub joins_per_minute: u32,
    /// Whether devices may take an older version than they have had.
    pub allow_downgrade: bool,
    /// The program of the previous version, to roll a failed group back to (none: pause).
    pub rollback_program: Option<String>,
    /// The daily window in UTC (`22:00-04:00`) when devices install; they download whenever.
    pub maintenance_window: Option<String>,
}

/// `dmmp rollout create`: the rollout and its advertisement (mandatory), which reaches no
/// device before the device's group is released.
pub fn create(store: &dyn Storage, c: &CreateSpec, now: i64) -> Result<Out> {
    let split: Split = c.groups.parse().map_err(Error::Usage)?;
    let g = c.gates;
    if !(1..=100).contains(&g.success_threshold) || !(1..=100).contains(&g.error_threshold) {
        return Err(Error::Usage("thresholds are percentages from 1 to 100".into()));
    }
    if !(0..=30 * 86_400).contains(&c.soak) || !(60..=30 * 86_400).contains(&c.silent_after) {
        return Err(Error::Usage(
            "--soak is 0 to 2592000 s and --silent-after 60 to 2592000 s".into(),
        ));
    }
    if store.rollouts()?.iter().any(|r| r.name == c.name)
        || store.advertisements()?.iter().any(|a| a.name == c.name)
    {
        return Err(Error::Usage(format!("a rollout or advertisement is named {:?}", c.name)));
    }
    let start_at = c.start.as_deref().map(|s| super::time_arg(s, "start")).transpose()?;
    let (what, adv, collection, on_error, target) = match (&c.program, &c.update_deployment) {
        (Some(p), None) => {
            let prog = find_program(store, p)?;
            let col = match &c.collection {
                Some(col) => find_collection(store, col)?,
                None => {
                    return Err(Error::Usage("a rollout of a program needs --collection".into()));
                }
            };
            let on_error = match &c.rollback_program {
                None => OnError::Pause,
                Some(p) => OnError::Rollback { program_id: find_program(store, p)?.id },
            };
            let window = c
                .maintenance_window
                .as_deref()
                .map(MaintenanceWindow::parse)
                .transpose()
                .map_err(Error::Usage)?;
            let adv = Advertisement {
                allow_downgrade: c.allow_downgrade,
                window,
                ..Advertisement::mandatory(&c.name, prog.id, col.id, now)
            };
            // The advertisement's id is the store's, given when both are added.
            (prog.name, Some(adv), col, on_error, rollout::Target::Advertisement(0))
        }
        (None, Some(d)) => {
            let (x, col) = held_deployment(store, d, c)?;
            let target = rollout::Target::UpdateDeployment(x.id);
            (format!("update deployment {}", x.name), None, col, OnError::Pause, target)
        }
        _ => {
            return Err(Error::Usage(
                "a rollout deploys one --program or one --update-deployment".into(),
            ));
        }
    };
    let spec = Spec {
        split,
        gates: g,
        soak: c.soak,
        silent_after: c.silent_after,
        start_at,
        joins_per_minute: c.joins_per_minute,
        on_error,
    };
    let state = if c.approval { RolloutState::WaitingForApproval } else { RolloutState::Ready };
    let r = Rollout {
        id: 0,
        name: c.name.clone(),
        target,
        spec,
        state,
        current_group: 0,
        reason: None,
        created: now,
        updated: now,
    };
    let r = store.add_rollout(adv.as_ref(), &r)?;
    let text = format!(
        "rollout {} {:?} created ({}): {what} to {} in groups {}, success {}%, error {}%, soak {} s\n",
        r.id,
        r.name,
        r.state.as_str(),
        collection.name,
        c.groups,
        g.success_threshold,
        g.error_threshold,
        c.soak
    );
    Ok(Out::new(text, json!(r)))
}

/// Finds an update deployment by id or name.
fn find_deployment(store: &dyn Storage, d: &str) -> Result<updates::UpdateDeployment> {
    let id = d.parse::<i64>().ok();
    store
        .update_deployments()?
        .into_iter()
        .find(|x| Some(x.id) == id || x.name == d)
        .ok_or_else(|| Error::NotFound(format!("update deployment {d}")))
}

/// The update deployment `d` a rollout `c` may release, and its collection: held (so no
/// device has it yet), with no rollout of its own yet, and none of a program's settings asked.
fn held_deployment(
    store: &dyn Storage,
    d: &str,
    c: &CreateSpec,
) -> Result<(updates::UpdateDeployment, Collection)> {
    let x = find_deployment(store, d)?;
    if !x.held {
        return Err(Error::Usage(format!(
            "update deployment {} is not held: the devices of its collection may have it already; make it with `dmmp update deploy --held`",
            x.name
        )));
    }
    let target = rollout::Target::UpdateDeployment(x.id);
    if let Some(r) = store.rollouts()?.into_iter().find(|r| r.target == target) {
        return Err(Error::Usage(format!(
            "update deployment {} is released by rollout {} already",
            x.name, r.name
        )));
    }
    if c.rollback_program.is_some() || c.maintenance_window.is_some() || c.allow_downgrade {
        return Err(Error::Usage(
            "--rollback-program, --maintenance-window and --allow-downgrade are a program's; an update deployment has its own window (dmmp update deploy --maintenance-window)".into(),
        ));
    }
    let col = store.collections()?.into_iter().find(|col| col.id == x.collection_id).ok_or_else(
        || Error::NotFound(format!("the collection of update deployment {}", x.name)),
    )?;
    if let Some(asked) = &c.collection {
        if find_collection(store, asked)?.id != col.id {
            return Err(Error::Usage(format!(
                "update deployment {} goes to collection {}, not {asked}",
                x.name, col.name
            )));
        }
    }
    Ok((x, col))
}

/// Finds a rollout by id or name.
pub fn find(store: &dyn Storage, r: &str) -> Result<Rollout> {
    let id = r.parse::<i64>().ok();
    store
        .rollouts()?
        .into_iter()
        .find(|x| Some(x.id) == id || x.name == r)
        .ok_or_else(|| Error::NotFound(format!("rollout {r}")))
}

/// Starts `r` (its members assigned from its collection now) and logs `why`.
fn start(store: &dyn Storage, r: &Rollout, now: i64, why: &str) -> Result<(Rollout, usize)> {
    let collection_id = match r.target {
        rollout::Target::Advertisement(a) => {
            store.advertisements()?.into_iter().find(|x| x.id == a).map(|x| x.collection_id)
        }
        rollout::Target::UpdateDeployment(u) => {
            store.update_deployments()?.into_iter().find(|x| x.id == u).map(|x| x.collection_id)
        }
    };
    let col = store
        .collections()?
        .into_iter()
        .find(|c| Some(c.id) == collection_id)
        .ok_or_else(|| Error::NotFound(format!("the collection of rollout {}", r.name)))?;
    let members = rollout::assign(&r.name, &r.spec.split, &col, &store.devices()?);
    store.add_rollout_members(r.id, &members)?;
    let groups = members.last().map_or(0, |(_, g)| g + 1);
    let mut next = r.clone();
    (next.state, next.current_group, next.updated) = (RolloutState::Running, 0, now);
    let event = format!("{why}: {} devices in {groups} groups; group 1 released", members.len());
    if !store.update_rollout(r, &next, &event)? {
        return Err(Error::Usage(format!("rollout {} changed meanwhile; try again", r.name)));
    }
    Ok((next, members.len()))
}

/// `dmmp rollout approve | start | pause | resume | stop`.
pub fn act(store: &dyn Storage, name: &str, cmd: Command, by: &str, now: i64) -> Result<Out> {
    let r = find(store, name)?;
    let to = rollout::command(r.state, cmd).map_err(Error::Usage)?;
    let said = match cmd {
        Command::Approve => "approved",
        Command::Start => "started",
        Command::Pause => "paused",
        Command::Resume => "resumed",
        Command::Stop => "stopped",
    };
    let next = match cmd {
        Command::Start => start(store, &r, now, &format!("started by {by}"))?.0,
        _ => {
            if cmd == Command::Resume {
                // The failures it paused for are set aside: they count no more.
                let (_, failed) = evaluate(store, &r, now)?;
                let current = failed.get(r.current_group as usize).cloned().unwrap_or_default();
                let ids: Vec<i64> = current.iter().map(|(d, _)| *d).collect();
                store.acknowledge_rollout_members(r.id, &ids)?;
            }
            let mut next = r.clone();
            (next.state, next.updated) = (to, now);
            next.reason = match cmd {
                Command::Pause | Command::Stop => Some(format!("{said} by {by}")),
                _ => None,
            };
            if !store.update_rollout(&r, &next, &format!("{said} by {by}"))? {
                return Err(Error::Usage(format!(
                    "rollout {} changed meanwhile; try again",
                    r.name
                )));
            }
            next
        }
    };
    log::info!("rollout {} {said} by {by}", r.name);
    Ok(Out::new(format!("rollout {} {said}: {}\n", r.name, next.state.as_str()), json!(next)))
}

/// `dmmp rollout resume R --program P`: resumes a paused rollout with another version, the
/// fixed one: a new advertisement of `program` replaces the rollout's (the old one canceled),
/// every device of the groups released so far is offered it, failed ones included, and every
/// failure counts again, judged on the new version. One transaction.
pub fn resume_with(
    store: &dyn Storage,
    name: &str,
    program: &str,
    by: &str,
    now: i64,
) -> Result<Out> {
    let r = find(store, name)?;
    let to = rollout::command(r.state, Command::Resume).map_err(Error::Usage)?;
    let prog = find_program(store, program)?;
    let Some(old_id) = r.target.advertisement() else {
        return Err(Error::Usage(format!(
            "rollout {} releases an update deployment; --program is for a rollout of a program",
            r.name
        )));
    };
    let ads = store.advertisements()?;
    let old = ads
        .iter()
        .find(|a| a.id == old_id)
        .ok_or_else(|| Error::NotFound(format!("advertisement {old_id} of rollout {}", r.name)))?;
    if prog.id == old.program_id {
        return Err(Error::Usage(format!(
            "rollout {} already deploys {}; resume without --program",
            r.name, prog.name
        )));
    }
    let pkg = store.packages()?.into_iter().find(|p| p.id == prog.package_id);
    let version = pkg.map(|p| format!("{} {}", p.name, p.version)).unwrap_or_default();
    let mut ad_name = format!("{}-{}", r.name, prog.name);
    if ads.iter().any(|a| a.name == ad_name) {
        ad_name = format!("{ad_name}-{now}");
    }
    let adv = Advertisement {
        allow_downgrade: old.allow_downgrade,
        window: old.window,
        ..Advertisement::mandatory(&ad_name, prog.id, old.collection_id, now)
    };
    let mut next = r.clone();
    (next.state, next.updated, next.reason) = (to, now, None);
    let event = format!(
        "resumed by {by} with {} ({version}), advertisement {ad_name}: the released groups' devices get it, and their failures count again",
        prog.name
    );
    let Some(id) = store.replace_rollout_advertisement(&r, &next, &adv, &event)? else {
        return Err(Error::Usage(format!("rollout {} changed meanwhile; try again", r.name)));
    };
    next.target = rollout::Target::Advertisement(id);
    log::info!("rollout {} {event}", r.name);
    Ok(Out::new(format!("rollout {} {event}\n", r.name), json!(next)))
}

/// What the store holds for a rollout's evaluation: its members and the fleet's devices.
struct Snapshot {
    members: Vec<Member>,
    devices: HashMap<i64, Device>,
}

impl Snapshot {
    fn read(store: &dyn Storage, r: &Rollout) -> Result<Snapshot> {
        let members =
            store.rollout_members()?.into_iter().filter(|m| m.rollout_id == r.id).collect();
        let devices = store.devices()?.into_iter().map(|d| (d.id, d)).collect();
        Ok(Snapshot { members, devices })
    }

    /// The rollout's groups counted at `now`, and each group's failed devices.
    fn evaluate(
        &self,
        store: &dyn Storage,
        r: &Rollout,
        now: i64,
    ) -> Result<(Vec<Counts>, rollout::Failures)> {
        let ids: Vec<i64> = self.members.iter().map(|m| m.device_id).collect();
        let facts: HashMap<i64, rollout::Facts> = match r.target {
            rollout::Target::Advertisement(adv_id) => {
                let adv = store.advertisements()?.into_iter().find(|a| a.id == adv_id);
                let pkg = adv
                    .and_then(|a| store.programs().ok()?.into_iter().find(|p| p.id == a.program_id))
                    .and_then(|p| store.packages().ok()?.into_iter().find(|k| k.id == p.package_id))
                    .ok_or_else(|| Error::NotFound(format!("the package of rollout {}", r.name)))?;
                let actions: HashMap<i64, Action> = store
                    .actions()?
                    .into_iter()
                    .filter(|a| a.advertisement_id == adv_id)
                    .map(|a| (a.device_id, a))
                    .collect();
                let want = rollout::Want::of(&pkg);
                ids.iter()
                    .filter_map(|id| {
                        let d = self.devices.get(id)?;
                        Some((*id, rollout::facts_of(&want, actions.get(id), d, None)))
                    })
                    .collect()
            }
            rollout::Target::UpdateDeployment(dep) => {
                let x = find_deployment(store, &dep.to_string())?;
                let names: HashMap<i64, String> =
                    store.updates()?.into_iter().map(|u| (u.id, u.label())).collect();
                let updates: Vec<(i64, String)> = x
                    .updates
                    .iter()
                    .map(|u| (*u, names.get(u).cloned().unwrap_or_else(|| format!("#{u}"))))
                    .collect();
                let progress = store.update_progress(&ids, &x.updates)?;
                crate::server::rollouts::update_facts(&progress, &updates, &ids, |id| {
                    self.devices.get(&id).map(|d| (d, None))
                })
            }
        };
        let facts = |id: i64| facts.get(&id).cloned().unwrap_or_default();
        let t = rollout::Timing { soak: r.spec.soak, silent_after: r.spec.silent_after };
        let groups = rollout::group_count(&self.members);
        Ok(rollout::count(&self.members, groups, None, facts, t, now))
    }
}

/// The rollout's groups counted at `now` from the store, and each group's failed devices.
pub fn evaluate(
    store: &dyn Storage,
    r: &Rollout,
    now: i64,
) -> Result<(Vec<Counts>, rollout::Failures)> {
    Snapshot::read(store, r)?.evaluate(store, r, now)
}

/// The tenant of the collection a rollout goes to.
pub fn tenant_of(store: &dyn Storage, r: &Rollout) -> Result<Option<String>> {
    let collection = match r.target {
        rollout::Target::Advertisement(a) => {
            store.advertisements()?.into_iter().find(|x| x.id == a).map(|x| x.collection_id)
        }
        rollout::Target::UpdateDeployment(u) => {
            store.update_deployments()?.into_iter().find(|x| x.id == u).map(|x| x.collection_id)
        }
    };
    Ok(store.collections()?.into_iter().find(|c| Some(c.id) == collection).map(|c| c.tenant))
}

/// `dmmp rollout list`; with `tenant`, that tenant's rollouts only.
pub fn list(store: &dyn Storage, tenant: Option<&str>) -> Result<Out> {
    let mut all = store.rollouts()?;
    if let Some(t) = tenant {
        let mut mine = Vec::new();
        for r in all {
            if tenant_of(store, &r)?.as_deref() == Some(t) {
                mine.push(r);
            }
        }
        all = mine;
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.name.clone(),
                r.state.as_str().into(),
                (r.current_group + 1).to_string(),
                r.reason.clone().unwrap_or_default(),
                when(Some(r.updated)),
            ]
        })
        .collect();
    let header = ["ID", "NAME", "STATE", "GROUP", "REASON", "UPDATED"];
    Ok(Out::new(table(&header, &rows), json!(all)))
}

/// `dmmp rollout show`: each group's counts and state, the devices behind its failures, and
/// the rollout's log.
pub fn show(store: &dyn Storage, name: &str, now: i64) -> Result<Out> {
    let r = find(store, name)?;
    let snap = Snapshot::read(store, &r)?;
    let (counts, failed) = snap.evaluate(store, &r, now)?;
    let name_of =
        |id: &i64| snap.devices.get(id).map_or_else(|| id.to_string(), |d| d.controller_id.clone());
    let members = &snap.members;
    let mut groups = Vec::new();
    let mut rows = Vec::new();
    for (i, c) in counts.iter().enumerate() {
        let state = group_state(&r, i, c);
        let fails: Vec<serde_json::Value> =
            failed[i].iter().map(|(d, why)| json!({"device": name_of(d), "reason": why})).collect();
        rows.push(vec![
            (i + 1).to_string(),
            state.into(),
            c.size.to_string(),
            c.installing.to_string(),
            c.soaking.to_string(),
            c.succeeded.to_string(),
            c.failed.to_string(),
        ]);
        let of_group = |ack: bool| -> Vec<String> {
            members
                .iter()
                .filter(|m| m.group == i as i64 && m.acknowledged == ack)
                .map(|m| name_of(&m.device_id))
                .collect()
        };
        groups.push(json!({"group": i + 1, "state": state, "counts": c, "failed": fails,
            "devices": of_group(false), "acknowledged": of_group(true)}));
    }
    let events = store.rollout_events(r.id)?;
    let mut text = format!(
        "rollout {} {:?}: {}{}\n\n",
        r.id,
        r.name,
        r.state.as_str(),
        r.reason.as_deref().map(|w| format!(" ({w})")).unwrap_or_default()
    );
    let header = ["GROUP", "STATE", "DEVICES", "INSTALLING", "SOAKING", "SUCCEEDED", "FAILED"];
    text.push_str(&table(&header, &rows));
    for (i, f) in failed.iter().enumerate().filter(|(_, f)| !f.is_empty()) {
        text.push_str(&format!("\nfailed in group {}:\n", i + 1));
        for (d, why) in f {
            text.push_str(&format!("  {}: {why}\n", name_of(d)));
        }
    }
    text.push_str("\nlog:\n");
    for e in &events {
        text.push_str(&format!("  {}  {}\n", when(Some(e.time)), e.text));
    }
    let progress = store.rollout_samples(r.id)?;
    Ok(Out::new(text, json!({"rollout": r, "groups": groups, "log": events, "progress": progress})))
}

/// A group's state as people read it.
pub fn group_state(r: &Rollout, index: usize, c: &Counts) -> &'static str {
    let i = index as i64;
    if !rollout::released(r.state, r.current_group, i) {
        return "scheduled";
    }
    if i < r.current_group || r.state == RolloutState::Finished {
        return "succeeded";
    }
    if r.state == RolloutState::Paused && r.reason.as_deref().is_some_and(|w| w.contains("failed"))
    {
        return "failed";
    }
    match rollout::decide(index, index + 1, c, r.spec.gates) {
        rollout::Decision::Wait(rollout::GroupState::Soaking) => "soaking",
        _ => "running",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SqliteStore;

    fn spec(groups: &str, window: Option<&str>) -> CreateSpec {
        CreateSpec {
            name: "r1".into(),
            program: Some("run".into()),
            update_deployment: None,
            collection: Some("all".into()),
            groups: groups.into(),
            gates: Gates { success_threshold: 100, error_threshold: 10 },
            soak: 60,
            silent_after: 600,
            start: None,
            approval: true,
            joins_per_minute: 10,
            allow_downgrade: false,
            rollback_program: None,
            maintenance_window: window.map(str::to_string),
        }
    }

    #[test]
    fn create_checks_its_arguments_and_keeps_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let pkg = Package {
            id: 0,
            name: "tool".into(),
            version: "1.0.0.0".into(),
            kind: dm_shared::vocab::PackageKind::SoftwareDistribution,
            publisher: None,
            distribution_point: None,
            created: 0,
            artifacts: Vec::new(),
            programs: Vec::new(),
            config_items: Vec::new(),
        };
        let package_id = store.add_package(&pkg).unwrap();
        store
            .add_program(&Program {
                id: 0,
                package_id,
                name: "run".into(),
                command: "./run".into(),
                platforms: Vec::new(),
                max_run_time: 60,
                device_class: dm_shared::vocab::DeviceClass::Mobile,
                signed_program: None,
            })
            .unwrap();
        store.add_collection("all", "DEFAULT", &CollectionRule::All).unwrap();
        for (groups, window) in [("50%,90%", None), ("size:0", None), ("100%", Some("25:00-04:00"))]
        {
            assert!(
                matches!(create(&store, &spec(groups, window), 1), Err(Error::Usage(_))),
                "{groups} {window:?}"
            );
        }
        create(&store, &spec("50%,100%", Some("22:00-04:00")), 1).unwrap();
        let adv = &store.advertisements().unwrap()[0];
        assert_eq!(adv.window.map(|w| w.to_string()).as_deref(), Some("22:00-04:00"));
        assert_eq!(adv.kind, AdvertisementKind::Mandatory);
        assert!(
            matches!(create(&store, &spec("100%", None), 1), Err(Error::Usage(_))),
            "a name once"
        );
        let r = find(&store, "r1").unwrap();
        assert_eq!(r.state, RolloutState::WaitingForApproval);
        assert!(act(&store, "r1", Command::Start, "t", 2).is_err(), "approval first");
        act(&store, "r1", Command::Approve, "t", 2).unwrap();
        act(&store, "r1", Command::Start, "t", 3).unwrap();
        assert_eq!(find(&store, "r1").unwrap().state, RolloutState::Running);
    }
}
