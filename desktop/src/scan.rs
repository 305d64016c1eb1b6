//! One look at every tethered device (`dmtether scan`, and each turn of `dmtether watch`), and
//! a one-off install on one device (`dmtether install`): probe, plan, install, record. The
//! record (`var/lib/dm/tether/devices.json`) is written after each device, so the desktop's
//! agent reports it in inventory at its next poll.

use std::path::{Path, PathBuf};

use dm_shared::tether::{SshTarget, TetherOutcome, TetherRecord, TetheredDevice};
use dm_shared::{Context, Settings, StatusCode, clock};
use log::{debug, error, info, warn};

use crate::device::{self, Plan};
use crate::error::{Error, Result};
use crate::keys;
use crate::ssh::Ssh;
use crate::staged::{self, Deployment};

/// The desktop's SSH client for its settings.
pub fn ssh(ctx: &Context, settings: &Settings) -> Result<Ssh> {
    let root = ctx.layout.root().display().to_string();
    if root.contains('"') || root.chars().any(char::is_control) {
        return Err(Error::Usage(format!(
            "the desktop root {root:?} holds a quote or a control character, which ssh's options cannot carry"
        )));
    }
    Ok(Ssh {
        key: keys::ensure_key(ctx)?,
        known_hosts: keys::known_hosts_path(ctx),
        connect_timeout: settings.tether.probe_timeout,
    })
}

/// How long a verified deployment is trusted before it is verified again (a publisher may
/// have been revoked since).
const REVERIFY_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// The deployment to install: verified when a device first needs it, and again when the file
/// changes or an hour has passed; a `watch` keeps one across its scans.
#[derive(Default)]
pub struct Deployments {
    explicit: Option<PathBuf>,
    done: Option<(Key, std::time::Instant, std::result::Result<Deployment, String>)>,
}

/// What identifies a bundle file's content cheaply: path, size and modification time.
type Key = (PathBuf, u64, Option<std::time::SystemTime>);

fn key_of(path: &Path) -> Key {
    let m = std::fs::metadata(path).ok();
    (path.to_path_buf(), m.as_ref().map_or(0, |m| m.len()), m.and_then(|m| m.modified().ok()))
}

impl Deployments {
    /// The deployment `FILE` (a manual install) instead of the staged one.
    pub fn explicit(path: &Path) -> Deployments {
        Deployments { explicit: Some(path.to_path_buf()), done: None }
    }

    fn get(&mut self, ctx: &Context) -> Result<&Deployment> {
        let path = match &self.explicit {
            Some(p) => p.clone(),
            None => staged::find_staged(ctx)?,
        };
        let key = key_of(&path);
        let fresh =
            self.done.as_ref().is_some_and(|(k, at, _)| *k == key && at.elapsed() < REVERIFY_AFTER);
        if !fresh {
            let prepared = staged::prepare(ctx, &path).map_err(|e| {
                error!("{}: {e}", e.code());
                e.to_string()
            });
            self.done = Some((key, std::time::Instant::now(), prepared));
        }
        match &self.done {
            Some((_, _, Ok(d))) => Ok(d),
            Some((_, _, Err(e))) => Err(Error::NoBundle(e.clone())),
            None => Err(Error::NoBundle("no deployment".into())),
        }
    }
}

/// What one scan did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Devices that answered.
    pub connected: usize,
    /// Installs that ran.
    pub installed: usize,
    /// The first failure's code.
    pub failure: Option<StatusCode>,
}

/// Looks at every device of `[Tether] Devices` once.
pub fn scan(ctx: &Context, settings: &Settings, deployments: &mut Deployments) -> Result<Summary> {
    if settings.tether.devices.is_empty() {
        warn!(
            "no tethered devices are configured: set [Tether] Devices in {}",
            ctx.layout.settings_file().display()
        );
    }
    let ssh = ssh(ctx, settings)?;
    let mut record = TetherRecord::load(&ctx.layout)?;
    let mut summary = Summary::default();
    for t in &settings.tether.devices {
        let deadline = settings.tether.install_timeout;
        let r = visit(ctx, &ssh, t, &mut record, deployments, false, deadline);
        record.save(&ctx.layout)?;
        match r {
            Visit::Absent => {}
            Visit::Seen(None) => summary.connected += 1,
            Visit::Seen(Some(o)) => {
                summary.connected += 1;
                summary.installed += usize::from(o.result != "no-action");
                note_failure(&mut summary, &o);
            }
            Visit::Refused(o) => note_failure(&mut summary, &o),
        }
    }
    prune(&mut record, &settings.tether.devices);
    record.save(&ctx.layout)?;
    Ok(summary)
}

fn note_failure(summary: &mut Summary, o: &TetherOutcome) {
    if o.code.is_failure() {
        summary.failure.get_or_insert(o.code);
    }
}

/// Forgets devices no longer configured, keeping the record within its cap.
fn prune(record: &mut TetherRecord, configured: &[SshTarget]) {
    if record.devices.len() <= dm_shared::tether::MAX_DEVICES {
        return;
    }
    let keep: Vec<String> = configured.iter().map(|t| t.to_string()).collect();
    record.devices.retain(|url, _| keep.contains(url));
}

/// Installs `bundle` on one device now (`dmtether install`), unless it has a newer client.
pub fn install_one(
    ctx: &Context,
    settings: &Settings,
    t: &SshTarget,
    bundle: Option<&Path>,
) -> Result<TetherOutcome> {
    let ssh = ssh(ctx, settings)?;
    let mut record = TetherRecord::load(&ctx.layout)?;
    let mut deployments = bundle.map(Deployments::explicit).unwrap_or_default();
    let r =
        visit(ctx, &ssh, t, &mut record, &mut deployments, true, settings.tether.install_timeout);
    record.save(&ctx.layout)?;
    match r {
        Visit::Seen(Some(o)) | Visit::Refused(o) => Ok(o),
        Visit::Seen(None) => Err(Error::Usage(format!("{t}: nothing was done"))),
        Visit::Absent => Err(Error::Connection {
            target: t.to_string(),
            reason: "the device did not answer".into(),
        }),
    }
}

/// What happened at one device.
enum Visit {
    /// It did not answer.
    Absent,
    /// It answered; an outcome when something was done or said.
    Seen(Option<TetherOutcome>),
    /// Its host key was refused.
    Refused(TetherOutcome),
}

fn visit(
    ctx: &Context,
    ssh: &Ssh,
    t: &SshTarget,
    record: &mut TetherRecord,
    deployments: &mut Deployments,
    manual: bool,
    deadline: std::time::Duration,
) -> Visit {
    let url = t.to_string();
    let rec = record.devices.entry(url.clone()).or_insert_with(|| TetheredDevice::new(url));
    let (facts, reconnected) = match look(ctx, ssh, t, rec, manual) {
        Ok(seen) => seen,
        Err(v) => return v,
    };
    let explicit = deployments.explicit.is_some();
    let d = match deployments.get(ctx) {
        Ok(d) => d,
        Err(e) => {
            if manual || explicit || !is_nothing_staged(&e) {
                let o = device::failure(ctx, &e, None);
                rec.outcome = Some(o.clone());
                return Visit::Seen(Some(o));
            }
            debug!("{t}: {e}");
            return Visit::Seen(None);
        }
    };
    let bundle = d.manifest.version;
    let o = match plan(t, &facts, bundle, rec.outcome.as_ref(), reconnected, manual) {
        Plan::Nothing(why) => {
            debug!("{t}: {why}");
            return Visit::Seen(None);
        }
        Plan::NoAction(why) => {
            info!("{t}: no action: {why}");
            TetherOutcome {
                time: clock::rfc3339(ctx.clock.now()),
                result: "no-action".into(),
                bundle_version: Some(bundle.to_string()),
                code: StatusCode::S_OK,
                text: why,
            }
        }
        Plan::Install => install(ctx, ssh, t, rec, &facts, d, deadline),
    };
    rec.outcome = Some(o.clone());
    Visit::Seen(Some(o))
}

/// Probes the device and records what it says. `Err`: the visit ends there (the device is
/// absent, or refused); `Ok`: its facts, and whether it was not connected at the last look.
fn look(
    ctx: &Context,
    ssh: &Ssh,
    t: &SshTarget,
    rec: &mut TetheredDevice,
    manual: bool,
) -> std::result::Result<(device::Facts, bool), Visit> {
    let facts = match device::probe(ssh, t) {
        Ok(f) => f,
        Err(
            e @ (Error::HostKeyUnknown { .. }
            | Error::HostKeyChanged { .. }
            | Error::AuthFailed { .. }),
        ) => {
            let o = device::failure(ctx, &e, None);
            if rec.outcome.as_ref().map(|p| &p.code) != Some(&o.code) {
                error!("{}: {e}", e.code());
            }
            rec.connected = false;
            rec.outcome = Some(o.clone());
            return Err(Visit::Refused(o));
        }
        Err(e) => {
            if rec.connected {
                info!("{t} disconnected: {e}");
            } else {
                debug!("{t} is not connected: {e}");
            }
            rec.connected = false;
            if manual {
                let o = device::failure(ctx, &e, None);
                rec.outcome = Some(o.clone());
                return Err(Visit::Refused(o));
            }
            return Err(Visit::Absent);
        }
    };
    let reconnected = !rec.connected || manual;
    rec.connected = true;
    device::remember(rec, &facts, &clock::rfc3339(ctx.clock.now()));
    if reconnected {
        info!(
            "{t} connected: {}, client {}{}",
            facts.platform.as_ref().map_or(facts.arch.as_str(), |p| p.as_str()),
            facts.version.map_or_else(|| "none".into(), |v| v.to_string()),
            facts
                .controller_id
                .as_deref()
                .map(|c| format!(", controller id {c}"))
                .unwrap_or_default()
        );
    }
    Ok((facts, reconnected))
}

/// The device's plan; a manual install installs what a scan would leave alone, except over a
/// newer client.
fn plan(
    t: &SshTarget,
    facts: &device::Facts,
    bundle: dm_shared::ClientVersion,
    last: Option<&TetherOutcome>,
    reconnected: bool,
    manual: bool,
) -> Plan {
    match device::plan(facts, bundle, last, reconnected) {
        Plan::Nothing(why) if manual && facts.version.is_none_or(|v| v <= bundle) => {
            debug!("{t}: {why}; installing anyway (manual install)");
            Plan::Install
        }
        Plan::Nothing(why) if manual => Plan::NoAction(why),
        p => p,
    }
}

/// Installs on the device and says how it went; the outcome to record.
fn install(
    ctx: &Context,
    ssh: &Ssh,
    t: &SshTarget,
    rec: &mut TetheredDevice,
    facts: &device::Facts,
    d: &Deployment,
    deadline: std::time::Duration,
) -> TetherOutcome {
    let bundle = d.manifest.version;
    match device::install(ctx, ssh, t, facts, d, deadline) {
        Ok(r) => {
            device::remember(rec, &r.facts, &clock::rfc3339(ctx.clock.now()));
            let o = device::outcome(ctx, facts.version, &r, bundle);
            let logs: Vec<String> = r.logs.iter().map(|p| p.display().to_string()).collect();
            if r.code.is_failure() {
                error!(
                    "{t}: the install of {bundle} failed: {}; logs: {}",
                    o.text,
                    logs.join(", ")
                );
            } else {
                info!("{t}: {} {bundle} ({}); logs: {}", o.result, r.code, logs.join(", "));
            }
            o
        }
        Err(e) => {
            let o = device::failure(ctx, &e, Some(bundle));
            if matches!(e, Error::Connection { .. }) {
                warn!("{t}: {e}; the copy resumes when the device next connects");
                rec.connected = false;
            } else {
                error!("{}: {e}", e.code());
            }
            o
        }
    }
}

fn is_nothing_staged(e: &Error) -> bool {
    matches!(e, Error::NoBundle(m) if m.starts_with("no client deployment is staged"))
}
