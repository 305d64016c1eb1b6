//! Phased rollouts: one advertisement released to its collection group by group, each group
//! gated on the previous one's **confirmed** successes. A device counts as succeeded only once
//! it reported the new version running and stayed healthy and in touch for the soak time;
//! as failed when its install failed, it fell silent or unhealthy after installing, or it never
//! reported the new version. The decisions here are pure functions of the rollout, the facts
//! gathered about its devices and the time, so every transition has a unit test;
//! `admin::rollouts` and the server's gate evaluation (`server::rollouts`) read and write them.

use serde::{Deserialize, Serialize};

use crate::model::ActionStatus;

/// A rollout as stored: its advertisement, how its collection is cut, its gates and where it
/// is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Row id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// What it releases: no device is offered it before its group is released.
    pub target: Target,
    /// How it is cut, gated and timed.
    pub spec: Spec,
    /// Where it is.
    pub state: RolloutState,
    /// The group being worked on (released are 0 to this one).
    pub current_group: i64,
    /// Why it is paused or stopped, for people.
    pub reason: Option<String>,
    /// Created (Unix seconds).
    pub created: i64,
    /// Last change (Unix seconds).
    pub updated: i64,
}

/// What a rollout releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// An advertisement of a program, made with the rollout: a package, a client upgrade or a
    /// configuration package.
    Advertisement(i64),
    /// A held software update deployment (`dmmp update deploy --held`).
    UpdateDeployment(i64),
}

impl Target {
    /// The advertisement, for a rollout of one.
    pub fn advertisement(self) -> Option<i64> {
        match self {
            Target::Advertisement(a) => Some(a),
            Target::UpdateDeployment(_) => None,
        }
    }

    /// The update deployment, for a rollout of one.
    pub fn update_deployment(self) -> Option<i64> {
        match self {
            Target::Advertisement(_) => None,
            Target::UpdateDeployment(u) => Some(u),
        }
    }

    /// The target of a stored row: exactly one of the two ids.
    pub fn of_row(advertisement: Option<i64>, update_deployment: Option<i64>) -> Option<Target> {
        match (advertisement, update_deployment) {
            (Some(a), None) => Some(Target::Advertisement(a)),
            (None, Some(u)) => Some(Target::UpdateDeployment(u)),
            _ => None,
        }
    }
}

/// What `dmmp rollout create` says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// How the collection is cut into groups.
    pub split: Split,
    /// The gates.
    pub gates: Gates,
    /// Seconds a device must stay healthy and in touch after installing.
    pub soak: i64,
    /// Seconds without a poll after which an installed device counts as failed.
    pub silent_after: i64,
    /// When it starts by itself (Unix seconds); none: at `dmmp rollout start`.
    pub start_at: Option<i64>,
    /// Devices that join the collection while it runs join the current group, at most this
    /// many a minute.
    pub joins_per_minute: u32,
    /// What the error threshold does besides pausing.
    #[serde(default)]
    pub on_error: OnError,
}

/// What a rollout does when a group reaches its error threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum OnError {
    /// Pause.
    #[default]
    Pause,
    /// Pause, and advertise the previous version (`program_id`, a downgrade allowed, run
    /// again) to the failed group's devices.
    Rollback {
        /// The program of the version to go back to.
        program_id: i64,
    },
}

/// The name of the advertisement (and of its collection of devices) that rolls group `group`
/// (0 first) of rollout `name` back at `now`.
pub fn rollback_name(name: &str, group: i64, now: i64) -> String {
    format!("{name}-rollback-{}-{now}", group + 1)
}

/// A device of a rollout, and its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The rollout.
    pub rollout_id: i64,
    /// The device.
    pub device_id: i64,
    /// Its group (0 first).
    pub group: i64,
    /// A failure an administrator resumed past: it counts no more.
    pub acknowledged: bool,
}

/// A group's counts at one moment, for the plots of its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// When (Unix seconds).
    pub time: i64,
    /// The group (0 first).
    pub group: i64,
    /// Its counts then.
    pub counts: Counts,
}

/// One event of a rollout's life, for its log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When (Unix seconds).
    pub time: i64,
    /// What happened, for people.
    pub text: String,
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutState {
    /// Created with `--approval`: waits for `dmmp rollout approve`.
    WaitingForApproval,
    /// Created (and approved): waits for `dmmp rollout start` or its start time.
    Ready,
    /// Releasing groups as the gates allow.
    Running,
    /// Stopped by the error threshold or an administrator; `resume` goes on.
    Paused,
    /// Stopped for good: no more devices are released.
    Stopped,
    /// Every group succeeded.
    Finished,
}

impl RolloutState {
    /// The name in commands, reports and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::WaitingForApproval => "waiting-for-approval",
            RolloutState::Ready => "ready",
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Stopped => "stopped",
            RolloutState::Finished => "finished",
        }
    }
}

impl std::str::FromStr for RolloutState {
    type Err = String;
    fn from_str(s: &str) -> Result<RolloutState, String> {
        [
            RolloutState::WaitingForApproval,
            RolloutState::Ready,
            RolloutState::Running,
            RolloutState::Paused,
            RolloutState::Stopped,
            RolloutState::Finished,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| format!("{s:?} is not a rollout state"))
    }
}

/// What an administrator asks of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `dmmp rollout approve`.
    Approve,
    /// `dmmp rollout start`.
    Start,
    /// `dmmp rollout pause`.
    Pause,
    /// `dmmp rollout resume`.
    Resume,
    /// `dmmp rollout stop`.
    Stop,
}

/// The state `cmd` takes a rollout in `state` to, or why it cannot.
pub fn command(state: RolloutState, cmd: Command) -> Result<RolloutState, String> {
    use RolloutState::*;
    match (cmd, state) {
        (Command::Approve, WaitingForApproval) => Ok(Ready),
        (Command::Start, Ready) => Ok(Running),
        (Command::Start, WaitingForApproval) => {
            Err("the rollout waits for approval: `dmmp rollout approve` first".into())
        }
        (Command::Pause, Running) => Ok(Paused),
        (Command::Resume, Paused) => Ok(Running),
        (Command::Stop, WaitingForApproval | Ready | Running | Paused) => Ok(Stopped),
        (cmd, state) => Err(format!(
            "a rollout that is {} cannot be {}",
            state.as_str(),
            match cmd {
                Command::Approve => "approved (only one waiting for approval)",
                Command::Start => "started (only a ready one)",
                Command::Pause => "paused (only a running one)",
                Command::Resume => "resumed (only a paused one)",
                Command::Stop => "stopped (it is over)",
            }
        )),
    }
}

/// Whether the members of group `group` of a rollout in `state` at `current` are offered
/// its advertisement.
pub fn released(state: RolloutState, current: i64, group: i64) -> bool {
    match state {
        RolloutState::WaitingForApproval | RolloutState::Ready => false,
        RolloutState::Running | RolloutState::Paused | RolloutState::Stopped => group <= current,
        RolloutState::Finished => true,
    }
}

/// Where a group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupState {
    /// Not released yet.
    Scheduled,
    /// Released: devices install.
    Running,
    /// Enough devices installed; their soak time runs.
    Soaking,
    /// Its confirmed successes reached the success threshold.
    Succeeded,
    /// Its failures reached the error threshold.
    Failed,
}

/// What a device of a released group has come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not installed yet (no action, or the action not finished).
    Installing,
    /// Installed; the soak time (or the new version's report) is awaited.
    Soaking,
    /// Confirmed.
    Succeeded,
    /// Failed, and why.
    Failed(String),
}

/// What the management point knows about one device of a released group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Facts {
    /// Its action for the rollout's advertisement, if it has one.
    pub action: Option<ActionStatus>,
    /// When that action last changed (when it finished, once it did).
    pub action_updated: i64,
    /// Whether the device reports the new version running (a client upgrade: its
    /// `client_version`; a package: `installed_packages`).
    pub version_reported: bool,
    /// Whether its inventory's client health is `healthy` (or not reported).
    pub healthy: bool,
    /// When it last polled.
    pub last_seen: Option<i64>,
    /// The last status message its action reported: the agent's word that the package's
    /// health check passed and it soaks (10110), passed again at the soak's end (10111), or
    /// failed (10112).
    pub last_code: Option<i32>,
    /// Why its install failed, when more is known than that it did (an update's reason).
    pub failure: Option<String>,
}

/// The status messages of a package's health check (docs/status-messages.md).
mod health {
    use dm_shared::message::MessageId;
    pub const SOAKING: i32 = MessageId::HEALTH_CHECK_SOAKING.0 as i32;
    pub const CONFIRMED: i32 = MessageId::HEALTH_CHECK_CONFIRMED.0 as i32;
    pub const FAILED: i32 = MessageId::HEALTH_CHECK_FAILED.0 as i32;
}

/// How long a device may stay silent, and how long it soaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Seconds a finished device must stay healthy and in touch.
    pub soak: i64,
    /// Seconds without a poll after which an installed device counts as failed.
    pub silent_after: i64,
}

/// What a device has come to at `now`.
pub fn judge(f: &Facts, t: Timing, now: i64) -> Outcome {
    let seen = f.last_seen.unwrap_or(0);
    match f.action {
        // Installed and its health check passed: the device soaks, and polls while it does.
        Some(ActionStatus::Running) if f.last_code == Some(health::SOAKING) => {
            if now - seen > t.silent_after && now - f.action_updated > t.silent_after {
                Outcome::Failed(format!(
                    "silent for {} s while it soaked (at most {} s)",
                    now - seen,
                    t.silent_after
                ))
            } else if !f.healthy {
                Outcome::Failed("its client health turned unhealthy while it soaked".into())
            } else {
                Outcome::Soaking
            }
        }
        None
        | Some(ActionStatus::Waiting)
        | Some(ActionStatus::Scheduled)
        | Some(ActionStatus::Retrieved)
        | Some(ActionStatus::Running) => Outcome::Installing,
        Some(ActionStatus::Error) if f.last_code == Some(health::FAILED) => {
            Outcome::Failed("its health check failed".into())
        }
        Some(ActionStatus::Error) => {
            Outcome::Failed(f.failure.clone().unwrap_or_else(|| "the install failed".into()))
        }
        Some(ActionStatus::Canceling) | Some(ActionStatus::Canceled) => {
            Outcome::Failed("the action was canceled".into())
        }
        Some(ActionStatus::Finished) => {
            let since = now - f.action_updated;
            // The device soaked with the action open and its health check passed again at
            // the end: the soak is behind it.
            let soaked = since >= t.soak || f.last_code == Some(health::CONFIRMED);
            if !f.healthy {
                Outcome::Failed("its client health turned unhealthy after the install".into())
            } else if now - seen > t.silent_after && since > t.silent_after {
                Outcome::Failed(format!(
                    "silent for {} s after the install (at most {} s)",
                    now - seen,
                    t.silent_after
                ))
            } else if !f.version_reported {
                if since > t.silent_after.max(t.soak) {
                    Outcome::Failed("it never reported the new version running".into())
                } else {
                    Outcome::Soaking
                }
            } else if soaked && seen >= f.action_updated {
                Outcome::Succeeded
            } else {
                Outcome::Soaking
            }
        }
    }
}

/// A group's devices counted by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Devices in the group.
    pub size: u64,
    /// Not installed yet.
    pub installing: u64,
    /// Installed, soaking.
    pub soaking: u64,
    /// Confirmed.
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
}

impl Counts {
    /// Adds one device's outcome.
    pub fn add(&mut self, o: &Outcome) {
        self.size += 1;
        match o {
            Outcome::Installing => self.installing += 1,
            Outcome::Soaking => self.soaking += 1,
            Outcome::Succeeded => self.succeeded += 1,
            Outcome::Failed(_) => self.failed += 1,
        }
    }
}

/// Whether `n` of `size` reaches `percent` (an empty group reaches any threshold).
fn reaches(n: u64, size: u64, percent: u8) -> bool {
    n * 100 >= size * u64::from(percent)
}

/// The gates of a running rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gates {
    /// Percent of a group that must be confirmed for the next group to start.
    pub success_threshold: u8,
    /// Percent of a group whose failure pauses the rollout (1 to 100).
    pub error_threshold: u8,
}

/// What the evaluation of a running rollout's current group decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing changes; the group's state is this.
    Wait(GroupState),
    /// The group succeeded: release the next (`Some(index)`) or finish (`None`).
    Advance(Option<usize>),
    /// The group failed: pause, with the reason.
    Pause(String),
}

/// Decides for the current group `index` of `groups` groups with `counts`. Failures are
/// checked first: a group that reached both thresholds has failed devices to look at.
pub fn decide(index: usize, groups: usize, c: &Counts, g: Gates) -> Decision {
    if c.failed > 0 && reaches(c.failed, c.size, g.error_threshold) {
        return Decision::Pause(format!(
            "group {} of {groups}: {} of {} devices failed (error threshold {}%)",
            index + 1,
            c.failed,
            c.size,
            g.error_threshold
        ));
    }
    if reaches(c.succeeded, c.size, g.success_threshold) {
        let next = index + 1;
        return Decision::Advance((next < groups).then_some(next));
    }
    if reaches(c.succeeded + c.soaking, c.size, g.success_threshold) {
        Decision::Wait(GroupState::Soaking)
    } else {
        Decision::Wait(GroupState::Running)
    }
}

/// What a device must report for the rollout's version to count as running, worked out
/// once per evaluation from the rollout's package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// A client upgrade: its `client_version`.
    ClientVersion(String),
    /// A software package: `name version` in its `installed_packages`.
    Installed(String),
    /// A configuration package: its action applies its items itself.
    Applied,
}

impl Want {
    /// What `pkg` needs reported.
    pub fn of(pkg: &crate::model::Package) -> Want {
        use dm_shared::vocab::PackageKind;
        match pkg.kind {
            PackageKind::ClientDeployment => Want::ClientVersion(pkg.version.clone()),
            PackageKind::SoftwareDistribution => {
                Want::Installed(format!("{} {}", pkg.name, pkg.version))
            }
            PackageKind::Configuration => Want::Applied,
        }
    }
}

/// What the management point knows of one device for a rollout that wants `want`: its action
/// for the rollout's advertisement, its inventory (the new version, client health) and when
/// it last polled.
pub fn facts_of(
    want: &Want,
    action: Option<&crate::model::Action>,
    device: &crate::model::Device,
    last_seen: Option<i64>,
) -> Facts {
    use dm_shared::vocab::inventory as key;
    let attr = |k: &str| device.attributes.get(k).map(String::as_str);
    let version_reported = match want {
        Want::ClientVersion(v) => attr(key::CLIENT_VERSION) == Some(v.as_str()),
        Want::Installed(w) => {
            attr(key::INSTALLED_PACKAGES).is_some_and(|l| l.split(", ").any(|p| p == w))
        }
        Want::Applied => true,
    };
    Facts {
        action: action.map(|a| a.status),
        action_updated: action.map_or(0, |a| a.updated),
        version_reported,
        healthy: attr(key::CLIENT_HEALTH).is_none_or(|h| h == "healthy"),
        last_seen: last_seen.or(device.last_seen),
        last_code: action.and_then(|a| a.last_code),
        failure: None,
    }
}

/// What the management point knows of one device for a rollout of an update deployment of
/// `updates` (id and label): its stored states of them (`states`, this device's), when it
/// last scanned, its inventory and when it last polled. It maps onto an action's facts: never
/// scanned, no action yet; an update failed, an action in error with apt's or dpkg's reason;
/// one still required, in progress, pending its restart or unknown, installing; every one
/// installed, or not required (no row after a scan), finished when the last was reported, the
/// new versions reported running (dpkg's database says so).
pub fn update_facts(
    updates: &[(i64, String)],
    states: &[&crate::model::updates::DeviceUpdateState],
    scanned: Option<i64>,
    device: &crate::model::Device,
    last_seen: Option<i64>,
) -> Facts {
    use crate::model::updates::UpdateState;
    let base = Facts {
        healthy: device
            .attributes
            .get(dm_shared::vocab::inventory::CLIENT_HEALTH)
            .is_none_or(|h| h == "healthy"),
        last_seen: last_seen.or(device.last_seen),
        ..Facts::default()
    };
    let Some(scanned) = scanned else { return base };
    let label = |id: i64| updates.iter().find(|u| u.0 == id).map_or("?", |u| u.1.as_str());
    let mine: Vec<&&crate::model::updates::DeviceUpdateState> =
        states.iter().filter(|s| updates.iter().any(|u| u.0 == s.update_id)).collect();
    if let Some(s) = mine.iter().find(|s| s.state == UpdateState::Failed) {
        let why = s.reason.as_deref().unwrap_or("no reason given");
        return Facts {
            action: Some(ActionStatus::Error),
            action_updated: s.updated,
            failure: Some(format!("update {} failed: {why}", label(s.update_id))),
            ..base
        };
    }
    if mine.iter().any(|s| s.state != UpdateState::Installed) {
        return Facts { action: Some(ActionStatus::Running), ..base };
    }
    let when = mine.iter().map(|s| s.updated).max().unwrap_or(scanned);
    Facts {
        action: Some(ActionStatus::Finished),
        action_updated: when,
        version_reported: true,
        ..base
    }
}

/// Each group's failed devices, with why.
pub type Failures = Vec<Vec<(i64, String)>>;

/// The members of a rollout's groups counted by outcome (acknowledged failures left out),
/// and the failed devices of each group with why.
/// With `only`, the members of that group alone are looked at (the gates need no other);
/// the other groups' counts stay zero.
pub fn count(
    members: &[Member],
    groups: usize,
    only: Option<i64>,
    facts: impl Fn(i64) -> Facts,
    t: Timing,
    now: i64,
) -> (Vec<Counts>, Failures) {
    let mut counts = vec![Counts::default(); groups];
    let mut failed = vec![Vec::new(); groups];
    let wanted = |m: &&Member| !m.acknowledged && only.is_none_or(|g| m.group == g);
    for m in members.iter().filter(wanted) {
        let Some(c) = usize::try_from(m.group).ok().and_then(|g| counts.get_mut(g)) else {
            continue;
        };
        let o = judge(&facts(m.device_id), t, now);
        c.add(&o);
        if let Outcome::Failed(why) = o {
            failed[m.group as usize].push((m.device_id, why));
        }
    }
    (counts, failed)
}

/// The number of groups of a rollout with `members` (its last member's group, plus one).
pub fn group_count(members: &[Member]) -> usize {
    members.iter().map(|m| m.group + 1).max().unwrap_or(0).max(0) as usize
}

/// What the gates make of a rollout at `now`: the rollout moved and the event for its log,
/// or nothing. A ready rollout whose start time came starts (its members are assigned by the
/// caller); a running one advances, finishes or pauses by [`decide`].
pub fn tick(r: &Rollout, counts: &[Counts], now: i64) -> Option<(Rollout, String)> {
    let mut next = r.clone();
    next.updated = now;
    match r.state {
        RolloutState::Ready if r.spec.start_at.is_some_and(|t| t <= now) => {
            next.state = RolloutState::Running;
            next.current_group = 0;
            Some((next, "started at its start time; group 1 released".into()))
        }
        RolloutState::Running => {
            let g = usize::try_from(r.current_group).unwrap_or(0);
            let c = counts.get(g).copied().unwrap_or_default();
            let confirmed = format!("{} of {} confirmed", c.succeeded, c.size);
            match decide(g, counts.len().max(1), &c, r.spec.gates) {
                Decision::Wait(_) => None,
                Decision::Advance(Some(n)) => {
                    next.current_group = n as i64;
                    Some((
                        next,
                        format!(
                            "group {} succeeded ({confirmed}); group {} released",
                            g + 1,
                            n + 1
                        ),
                    ))
                }
                Decision::Advance(None) => {
                    next.state = RolloutState::Finished;
                    Some((
                        next,
                        format!("group {} succeeded ({confirmed}); the rollout finished", g + 1),
                    ))
                }
                Decision::Pause(why) => {
                    next.state = RolloutState::Paused;
                    next.reason = Some(why.clone());
                    Some((next, format!("paused: {why}")))
                }
            }
        }
        _ => None,
    }
}

/// The order devices join a rollout's groups: spread by a hash of the rollout's name and the
/// device, so every rollout draws its first group from the whole collection, and the same
/// rollout always draws the same devices.
pub fn order(rollout: &str, mut devices: Vec<i64>) -> Vec<i64> {
    let key = |d: &i64| crate::model::fnv1a(format!("{rollout}/{d}").into_bytes());
    devices.sort_unstable_by_key(|d| (key(d), *d));
    devices
}

/// The devices of `collection` now, in the order a rollout named `name` takes them, with
/// their groups.
pub fn assign(
    name: &str,
    split: &Split,
    collection: &crate::model::Collection,
    devices: &[crate::model::Device],
) -> Vec<(i64, i64)> {
    let ids = devices.iter().filter(|d| collection.contains(d)).map(|d| d.id).collect();
    let ordered = order(name, ids);
    let groups = split.groups_of(ordered.len());
    ordered.into_iter().zip(groups).map(|(d, g)| (d, g as i64)).collect()
}

/// How a collection is cut into groups: cumulative percentages (`1%,10%,50%,100%`) or a
/// group size (`size:50`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// Cumulative percentages, the last 100.
    Percent(Vec<u8>),
    /// Groups of this many devices.
    Size(u64),
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Split, String> {
        if let Some(n) = s.strip_prefix("size:") {
            return match n.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Split::Size(n)),
                _ => Err(format!("{s:?}: a group size is a positive number (size:50)")),
            };
        }
        let mut out = Vec::new();
        for part in s.split(',') {
            let p = part.trim().strip_suffix('%').unwrap_or(part.trim());
            let p: u8 = p.parse().map_err(|_| format!("{part:?} is not a percentage"))?;
            if p == 0 || p > 100 || out.last().is_some_and(|l| *l >= p) {
                return Err(format!(
                    "{s:?}: percentages grow from 1 to 100, each more than the one before"
                ));
            }
            out.push(p);
        }
        if out.last() != Some(&100) {
            return Err(format!("{s:?}: the last group ends at 100%"));
        }
        Ok(Split::Percent(out))
    }
}

impl Split {
    /// The group index of each of `n` devices in order (the first devices in the first group).
    /// Every group of a percentage split holds at least one device when there are enough.
    pub fn groups_of(&self, n: usize) -> Vec<usize> {
        match self {
            Split::Size(size) => (0..n).map(|i| i / (*size as usize)).collect(),
            Split::Percent(cuts) => {
                let mut out = Vec::with_capacity(n);
                let mut start = 0usize;
                for (g, p) in cuts.iter().enumerate() {
                    let end = (n * usize::from(*p)).div_ceil(100).max(start + 1).min(n);
                    out.extend(std::iter::repeat_n(g, end.saturating_sub(start)));
                    start = end.max(start);
                }
                out
            }
        }
    }

    /// How many groups `n` devices make.
    pub fn group_count(&self, n: usize) -> usize {
        self.groups_of(n).last().map_or(0, |g| g + 1)
    }
}

/// A spec for tests: halves, gates 90 % and 10 %, a minute's soak.
#[cfg(test)]
pub fn test_spec() -> Spec {
    Spec {
        split: Split::Percent(vec![50, 100]),
        gates: Gates { success_threshold: 90, error_threshold: 10 },
        soak: 60,
        silent_after: 600,
        start_at: None,
        joins_per_minute: 5,
        on_error: OnError::Pause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing { soak: 60, silent_after: 300 };

    fn facts(
        action: Option<ActionStatus>,
        updated: i64,
        version: bool,
        healthy: bool,
        seen: i64,
    ) -> Facts {
        Facts {
            action,
            action_updated: updated,
            version_reported: version,
            healthy,
            last_seen: Some(seen),
            last_code: None,
            failure: None,
        }
    }

    #[test]
    fn an_update_deployments_devices_are_judged_on_their_update_states() {
        use crate::model::updates::{DeviceUpdateState, UpdateState};
        let updates = [(1, "openssl 3.0.15".to_string()), (2, "curl 7.88".to_string())];
        let dev = crate::model::Device {
            id: 1,
            tenant: "DEFAULT".into(),
            controller_id: "gw-1".into(),
            token_sha256: None,
            attributes: Default::default(),
            created: 0,
            last_seen: Some(990),
            registered_by: "admin".into(),
            auto_confirm: None,
            cert_sha256: None,
        };
        let row = |update_id, state, updated| DeviceUpdateState {
            device_id: 0,
            update_id,
            state,
            installed: None,
            reason: (state == UpdateState::Failed).then(|| "dpkg: conffile prompt".into()),
            updated,
        };
        let judge_of = |rows: &[DeviceUpdateState], scanned| {
            let rows: Vec<&DeviceUpdateState> = rows.iter().collect();
            judge(&update_facts(&updates, &rows, scanned, &dev, None), T, 1000)
        };
        // Never scanned: nothing known yet.
        assert_eq!(judge_of(&[], None), Outcome::Installing);
        // Still required, or installing: installing.
        let required = [row(1, UpdateState::Required, 900), row(2, UpdateState::Installed, 900)];
        assert_eq!(judge_of(&required, Some(900)), Outcome::Installing);
        let pending = [row(1, UpdateState::PendingReboot, 900)];
        assert_eq!(judge_of(&pending, Some(900)), Outcome::Installing);
        // A failure, with apt's or dpkg's reason and the update named.
        let failed = [row(1, UpdateState::Installed, 900), row(2, UpdateState::Failed, 950)];
        assert_eq!(
            judge_of(&failed, Some(950)),
            Outcome::Failed("update curl 7.88 failed: dpkg: conffile prompt".into())
        );
        // Installed (or not required: no row after a scan): soaked from the last report.
        let done = [row(1, UpdateState::Installed, 800)];
        assert_eq!(judge_of(&done, Some(800)), Outcome::Succeeded);
        let fresh = [row(1, UpdateState::Installed, 980)];
        assert_eq!(judge_of(&fresh, Some(980)), Outcome::Soaking);
        assert_eq!(judge_of(&[], Some(800)), Outcome::Succeeded, "needs none of them");
        // Another deployment's rows do not count.
        assert_eq!(judge_of(&[row(9, UpdateState::Failed, 900)], Some(800)), Outcome::Succeeded);
    }

    #[test]
    fn a_health_checked_package_soaks_on_the_device_and_counts_at_its_confirmation() {
        use ActionStatus::*;
        let with = |status, updated, code: i32, seen| Facts {
            last_code: Some(code),
            ..facts(Some(status), updated, true, true, seen)
        };
        // Installed, checked, soaking on the device with its action open.
        assert_eq!(judge(&with(Running, 900, health::SOAKING, 990), T, 1000), Outcome::Soaking);
        // Silent while it soaks: failed (a device that runs a long program does not poll, so
        // only a soaking one is held to it).
        assert!(matches!(
            judge(&with(Running, 600, health::SOAKING, 650), T, 1000),
            Outcome::Failed(w) if w.contains("silent for 350 s while it soaked")
        ));
        assert_eq!(judge(&with(Running, 600, 10012, 650), T, 1000), Outcome::Installing);
        let mut sick = with(Running, 900, health::SOAKING, 990);
        sick.healthy = false;
        assert!(matches!(judge(&sick, T, 1000), Outcome::Failed(w) if w.contains("unhealthy")));
        // Confirmed on the device at its soak's end: no second soak on the server.
        assert_eq!(
            judge(&with(Finished, 995, health::CONFIRMED, 996), T, 1000),
            Outcome::Succeeded
        );
        // Closed without the confirmation (an older agent): the server's soak.
        assert_eq!(judge(&with(Finished, 995, 10008, 996), T, 1000), Outcome::Soaking);
        // The check failed, after the install or at the soak's end.
        assert!(matches!(
            judge(&with(Error, 995, health::FAILED, 996), T, 1000),
            Outcome::Failed(w) if w == "its health check failed"
        ));
    }

    #[test]
    fn a_device_succeeds_only_after_its_version_and_the_soak() {
        use ActionStatus::*;
        assert_eq!(judge(&Facts::default(), T, 1000), Outcome::Installing);
        assert_eq!(
            judge(&facts(Some(Running), 900, false, true, 990), T, 1000),
            Outcome::Installing
        );
        // Finished, but the new version is not reported yet.
        assert_eq!(judge(&facts(Some(Finished), 990, false, true, 995), T, 1000), Outcome::Soaking);
        // Reported, soaking.
        assert_eq!(judge(&facts(Some(Finished), 990, true, true, 995), T, 1000), Outcome::Soaking);
        // Soaked and seen since.
        assert_eq!(
            judge(&facts(Some(Finished), 900, true, true, 995), T, 1000),
            Outcome::Succeeded
        );
    }

    #[test]
    fn failures_are_the_install_silence_health_and_a_version_never_reported() {
        use ActionStatus::*;
        assert!(
            matches!(judge(&facts(Some(Error), 900, false, true, 990), T, 1000), Outcome::Failed(w) if w.contains("install failed"))
        );
        assert!(matches!(
            judge(&facts(Some(Canceled), 900, false, true, 990), T, 1000),
            Outcome::Failed(_)
        ));
        assert!(
            matches!(judge(&facts(Some(Finished), 990, true, false, 995), T, 1000), Outcome::Failed(w) if w.contains("unhealthy"))
        );
        assert!(
            matches!(judge(&facts(Some(Finished), 100, true, true, 200), T, 1000), Outcome::Failed(w) if w.contains("silent"))
        );
        assert!(
            matches!(judge(&facts(Some(Finished), 100, false, true, 995), T, 1000), Outcome::Failed(w) if w.contains("never reported"))
        );
        // Silent, but not yet for long after the install: still soaking.
        assert_eq!(judge(&facts(Some(Finished), 990, true, true, 100), T, 1000), Outcome::Soaking);
    }

    fn counts(size: u64, succeeded: u64, soaking: u64, failed: u64) -> Counts {
        Counts { size, installing: size - succeeded - soaking - failed, soaking, succeeded, failed }
    }

    #[test]
    fn gates_advance_finish_pause_or_wait() {
        let g = Gates { success_threshold: 80, error_threshold: 34 };
        assert_eq!(decide(0, 4, &counts(5, 4, 0, 0), g), Decision::Advance(Some(1)));
        assert_eq!(decide(3, 4, &counts(5, 5, 0, 0), g), Decision::Advance(None));
        assert_eq!(decide(1, 4, &counts(5, 3, 1, 0), g), Decision::Wait(GroupState::Soaking));
        assert_eq!(decide(1, 4, &counts(5, 1, 1, 1), g), Decision::Wait(GroupState::Running));
        let Decision::Pause(why) = decide(1, 4, &counts(6, 2, 0, 3), g) else { panic!() };
        assert_eq!(why, "group 2 of 4: 3 of 6 devices failed (error threshold 34%)");
        // Failures first: a group past both thresholds pauses.
        assert!(matches!(
            decide(
                0,
                2,
                &counts(10, 8, 0, 2),
                Gates { success_threshold: 80, error_threshold: 20 }
            ),
            Decision::Pause(_)
        ));
        // An empty group passes.
        assert_eq!(decide(0, 2, &Counts::default(), g), Decision::Advance(Some(1)));
    }

    #[test]
    fn every_command_moves_one_state_or_says_why_not() {
        use Command::*;
        use RolloutState::*;
        let all = [WaitingForApproval, Ready, Running, Paused, Stopped, Finished];
        let allowed = [
            (Approve, WaitingForApproval, Ready),
            (Start, Ready, Running),
            (Pause, Running, Paused),
            (Resume, Paused, Running),
            (Stop, WaitingForApproval, Stopped),
            (Stop, Ready, Stopped),
            (Stop, Running, Stopped),
            (Stop, Paused, Stopped),
        ];
        for cmd in [Approve, Start, Pause, Resume, Stop] {
            for st in all {
                let want =
                    allowed.iter().find(|(c, s, _)| *c == cmd && *s == st).map(|(_, _, t)| *t);
                match (command(st, cmd), want) {
                    (Ok(got), Some(w)) => assert_eq!(got, w, "{cmd:?} from {st:?}"),
                    (Err(why), None) => {
                        assert!(why.contains(st.as_str()) || why.contains("approval"), "{why}")
                    }
                    (got, want) => panic!("{cmd:?} from {st:?}: {got:?}, wanted {want:?}"),
                }
            }
        }
        assert!(command(WaitingForApproval, Start).unwrap_err().contains("approve"));
        for st in all {
            assert_eq!(st.as_str().parse::<RolloutState>(), Ok(st));
        }
    }

    #[test]
    fn groups_are_released_up_to_the_current_one_once_started() {
        use RolloutState::*;
        assert!(!released(Ready, 0, 0) && !released(WaitingForApproval, 3, 0));
        assert!(released(Running, 1, 1) && !released(Running, 1, 2));
        assert!(released(Paused, 1, 0) && !released(Paused, 1, 2));
        assert!(released(Stopped, 0, 0) && !released(Stopped, 0, 1));
        assert!(released(Finished, 0, 5));
    }

    fn rollout(state: RolloutState, start_at: Option<i64>) -> Rollout {
        Rollout {
            id: 1,
            name: "r".into(),
            target: Target::Advertisement(2),
            spec: Spec {
                split: Split::Percent(vec![50, 100]),
                gates: Gates { success_threshold: 100, error_threshold: 50 },
                soak: 60,
                silent_after: 300,
                start_at,
                joins_per_minute: 10,
                on_error: OnError::Pause,
            },
            state,
            current_group: 0,
            reason: None,
            created: 0,
            updated: 0,
        }
    }

    #[test]
    fn the_gates_start_advance_finish_and_pause_a_rollout() {
        use RolloutState::*;
        assert_eq!(tick(&rollout(Ready, None), &[], 100), None);
        assert_eq!(tick(&rollout(Ready, Some(200)), &[], 100), None);
        let (r, e) = tick(&rollout(Ready, Some(50)), &[], 100).unwrap();
        assert_eq!((r.state, r.current_group, r.updated), (Running, 0, 100));
        assert!(e.contains("start time"), "{e}");
        let running = rollout(Running, None);
        let done = counts(2, 2, 0, 0);
        let (r, e) = tick(&running, &[done, counts(2, 0, 0, 0)], 100).unwrap();
        assert_eq!((r.state, r.current_group), (Running, 1));
        assert_eq!(e, "group 1 succeeded (2 of 2 confirmed); group 2 released");
        let last = Rollout { current_group: 1, ..running.clone() };
        let (r, e) = tick(&last, &[done, done], 100).unwrap();
        assert_eq!(r.state, Finished);
        assert!(e.ends_with("the rollout finished"), "{e}");
        let (r, e) = tick(&running, &[counts(2, 1, 0, 1), counts(2, 0, 0, 0)], 100).unwrap();
        assert_eq!(r.state, Paused);
        assert_eq!(
            r.reason.as_deref(),
            Some("group 1 of 2: 1 of 2 devices failed (error threshold 50%)")
        );
        assert!(e.starts_with("paused: "), "{e}");
        assert_eq!(tick(&running, &[counts(2, 1, 1, 0), counts(2, 0, 0, 0)], 100), None);
        for st in [WaitingForApproval, Paused, Stopped, Finished] {
            assert_eq!(tick(&rollout(st, Some(0)), &[done], 100), None, "{st:?}");
        }
    }

    #[test]
    fn members_are_counted_by_group_and_acknowledged_ones_left_out() {
        use ActionStatus::*;
        let m = |d: i64, g: i64, ack: bool| Member {
            rollout_id: 1,
            device_id: d,
            group: g,
            acknowledged: ack,
        };
        let members = [m(1, 0, false), m(2, 0, false), m(3, 0, true), m(4, 1, false)];
        let facts = |d: i64| match d {
            1 => facts(Some(Finished), 0, true, true, 99),
            2 | 3 => facts(Some(Error), 0, false, true, 99),
            _ => Facts::default(),
        };
        let (c, failed) = count(&members, group_count(&members), None, facts, T, 100);
        assert_eq!(c[0], counts(2, 1, 0, 1));
        assert_eq!(c[1], counts(1, 0, 0, 0));
        let (only, _) = count(&members, 2, Some(1), facts, T, 100);
        assert_eq!((only[0], only[1]), (Counts::default(), counts(1, 0, 0, 0)));
        assert_eq!(failed[0], vec![(2, "the install failed".to_string())]);
        assert!(failed[1].is_empty());
        let o = order("r", vec![1, 2, 3, 4, 5]);
        assert_eq!(
            o,
            order("r", vec![5, 4, 3, 2, 1]),
            "the order is the rollout's, not the input's"
        );
        assert_ne!(o, order("another", vec![1, 2, 3, 4, 5]));
    }

    #[test]
    fn splits_parse_and_cut_the_collection() {
        let s: Split = "1%,10%,50%,100%".parse().unwrap();
        let g = s.groups_of(20);
        assert_eq!(g.iter().filter(|x| **x == 0).count(), 1);
        assert_eq!(g.iter().filter(|x| **x == 1).count(), 1);
        assert_eq!(g.iter().filter(|x| **x == 2).count(), 8);
        assert_eq!(g.iter().filter(|x| **x == 3).count(), 10);
        assert_eq!(s.group_count(20), 4);
        assert_eq!(
            "25,50,75,100".parse::<Split>().unwrap().groups_of(20),
            (0..20).map(|i| i / 5).collect::<Vec<_>>()
        );
        assert_eq!("size:3".parse::<Split>().unwrap().groups_of(7), vec![0, 0, 0, 1, 1, 1, 2]);
        for bad in ["", "50%", "50,40,100", "0,100", "size:0", "size:x", "10,101"] {
            assert!(bad.parse::<Split>().is_err(), "{bad}");
        }
        // Fewer devices than groups: no empty group in the middle.
        assert_eq!("1,10,50,100".parse::<Split>().unwrap().groups_of(2), vec![0, 1]);
    }
}
