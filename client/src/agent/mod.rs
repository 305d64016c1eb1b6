//! DMSvc, the agent: one instance per device, started by systemd or by setup.
//!
//! At start it takes the agent lock, finishes or rolls back a setup operation a crash
//! interrupted (unless setup itself is running), reports its pid and health, and then polls
//! the management point until SIGTERM or SIGINT, finishing its current step before it exits.
//! See docs/agent.md.

pub mod action;
pub mod baseline;
pub mod certs;
pub mod confirm;
pub mod contain;
pub mod content;
pub mod image;
pub mod inventory;
pub mod ledger;
pub mod net;
pub mod plan;
pub mod program;
pub mod revocation;
pub mod session;
pub mod soak;
pub mod state;
pub mod system_image;
pub mod timing;
pub mod tool;
pub mod unusable;
pub mod updates;
pub mod upgrade;
pub mod vitals;
pub mod waker;
pub mod worker;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dm_shared::fs::{self as dmfs, MODE_PUBLIC};
use dm_shared::{ClientVersion, Context, Settings};
use log::{error, info, warn};

use self::inventory::HealthState;
use self::session::Session;
use self::state::{ActionRecord, Stage};
use self::worker::Worker;
use crate::error::{Error, Result};
use crate::installed::installed_version;
use crate::service;
use crate::setup::{self, engine::Actor};
use vitals::Vitals;
use waker::Waker;

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Exit after start-up and recovery instead of running.
    pub once: bool,
}

/// The version of the running binary, from the version folder it runs from.
pub fn own_version() -> Option<ClientVersion> {
    let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
    exe.parent()?.file_name()?.to_str()?.parse().ok()
}

/// Runs setup recovery when setup is not running itself.
fn recover_setup(ctx: &Context) -> Result<()> {
    if !ctx.layout.setup_journal().exists() {
        return Ok(());
    }
    match dmfs::try_lock(&ctx.layout.setup_lock())? {
        Some(_lock) => {
            setup::recover(ctx, Actor::Agent, Duration::from_secs(30))?;
        }
        None => info!("setup is running; it finishes its own operation"),
    }
    Ok(())
}

/// Re-executes the active version when this binary is not it (after recovery rolled an
/// upgrade back, the running binary may be the version that was undone).
fn exec_active_if_different(ctx: &Context) -> Result<()> {
    let (Some(own), Some(active)) = (own_version(), installed_version(ctx)) else {
        return Ok(());
    };
    if own == active {
        return Ok(());
    }
    warn!("this agent is {own} but the active client is {active}: starting the active version");
    let program = service::agent_program(ctx);
    use std::os::unix::process::CommandExt;
    let err = ctx.command(&program).arg("--device-root").arg(ctx.layout.root()).exec();
    Err(Error::Service {
        action: "start",
        reason: format!("cannot run {}: {err}", program.display()),
    })
}

/// When this client was built (from build.rs).
const BUILD_UNIX: &str = env!("DM_BUILD_UNIX");

/// Says why TLS will fail on a device whose clock is before the build date.
fn check_clock(ctx: &Context) {
    let built: u64 = BUILD_UNIX.parse().unwrap_or(0);
    let now = dm_shared::clock::unix_secs(ctx.clock.now());
    if now + 86_400 < built {
        error!(
            "the device clock says {}, before this client was built ({}): TLS certificates will be refused as not yet valid; set the clock (NTP)",
            dm_shared::clock::rfc3339(ctx.clock.now()),
            dm_shared::clock::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(built))
        );
    }
}

/// What the agent calls before a sleep of at least [`TRIM_AFTER`]: the device program's
/// working-set trim (`device/src/trim.rs`), which the library cannot do without `unsafe`.
static TRIM: OnceLock<fn()> = OnceLock::new();

/// The shortest sleep before which the working set is trimmed: polls are at least 10 s apart,
/// evaluations after a file changed 5 s, and faulting the code back in costs well under a
/// millisecond.
const TRIM_AFTER: Duration = Duration::from_secs(2);

/// Sets what trims the agent's working set before it sleeps (once; later calls are ignored).
pub fn trim_before_sleep(trim: fn()) {
    let _ = TRIM.set(trim);
}

/// Waits up to `d`, asleep in one `poll(2)` between pieces of work: returns early on stop or
/// when `dmsvc run` left a new request (one that is not deferred). While it waits, the
/// configuration items are evaluated when due or when a file they watch changed.
fn wait(
    w: &Worker<'_>,
    waker: &mut Waker,
    d: Duration,
    deferred: &BTreeSet<u64>,
    baseline: &mut baseline::Baseline,
) {
    let deadline = std::time::Instant::now() + d;
    let requests = state::requests_dir(w.ctx);
    let mut woke = waker::Wake::Timeout;
    loop {
        if w.stopping() || state::requests(w.ctx).iter().any(|id| !deferred.contains(id)) {
            return;
        }
        let next = baseline.tick(w.ctx, w.settings, woke == waker::Wake::Changed);
        waker.watch(std::iter::once(requests.clone()).chain(baseline.watched_dirs()));
        let now = std::time::Instant::now();
        if now >= deadline {
            return;
        }
        let sleep = deadline.min(next).saturating_duration_since(now);
        if let Some(trim) = TRIM.get().filter(|_| sleep >= TRIM_AFTER) {
            trim();
        }
        woke = waker.wait(sleep);
    }
}

fn is_certificate_problem(e: &Error) -> bool {
    let s = e.to_string().to_ascii_lowercase();
    matches!(e, Error::Network { .. })
        && (s.contains("certificate")
            || s.contains("unknownissuer")
            || s.contains("notvalidyet")
            || s.contains("expired"))
}

/// Runs the programs the device's user asked for with `dmsvc run`. A request that fails (the
/// management point is down, say) stays on disk and in `deferred`, and is tried again at the
/// next turn of the poll loop, after its sleep or backoff: never in a loop of its own.
fn run_requests(w: &mut Worker<'_>, deferred: &mut BTreeSet<u64>) {
    for id in state::requests(w.ctx) {
        match ActionRecord::load(w.ctx, id) {
            Some(mut r) if confirm::awaits_confirmation(&r) => {
                info!("the device's user asked to run action {id} ({})", r.program);
                if let Err(e) = w.confirm(&mut r) {
                    warn!("action {id}: {e}; tried again after the next poll");
                    deferred.insert(id);
                    continue;
                }
                // Answered: it runs when the server offers it (`dmsvc run` waits for that).
                deferred.remove(&id);
                state::request_done(w.ctx, id);
                continue;
            }
            Some(r) if matches!(r.stage, Stage::Available | Stage::Downloaded) => {
                info!("the device's user asked to run action {id} ({})", r.program);
                if let Err(e) = w.deployment(&r.href, true) {
                    warn!("action {id}: {e}; tried again after the next poll");
                    deferred.insert(id);
                    continue;
                }
            }
            Some(r) => warn!("dmsvc run {id}: the action is {:?}, not available to run", r.stage),
            None => warn!("dmsvc run {id}: no such action on this device"),
        }
        deferred.remove(&id);
        state::request_done(w.ctx, id);
    }
}

/// Sends what waits in the outbox, as far as the server takes it.
fn flush(w: &mut Worker<'_>) {
    if let Err(e) = w.session.flush(&w.outbox) {
        log::debug!("status messages wait: {e}");
    }
}

/// One successful poll's work: inventory, then the action the server offers. Returns how long
/// to sleep. `started`: this is the first since the agent started, which sends the inventory
/// whatever changed (the running system's version after a restart into a new image, among
/// others).
fn after_poll(
    w: &mut Worker<'_>,
    health: &mut HealthState,
    base: dm_shared::ddi::ControllerBase,
    started: &mut bool,
) -> Duration {
    if health.failed_polls > 0 {
        info!("the management point answers again after {} failed polls", health.failed_polls);
    }
    health.reset_communication();
    let c = &w.settings.communication;
    let sleep =
        timing::poll_sleep(&base.config.polling.sleep, c.poll_interval, c.min_poll_interval);
    if let Some(l) = base.links.get("dmCrls") {
        match revocation::update(w.ctx, w.session, &l.href) {
            Ok(0) => {}
            Ok(_) => match revocation::newly_revoked(w.ctx) {
                Ok(messages) => messages.iter().for_each(|m| w.report(m)),
                Err(e) => warn!("installed packages not checked against the new lists: {e}"),
            },
            Err(e) => warn!("revocation lists not updated: {e}"),
        }
    }
    if let Some(l) = base.links.get("dmUpdates") {
        updates::after_poll(w, &l.href);
    }
    let asked = base.links.contains_key("configData") || std::mem::take(started);
    if let Err(e) = inventory::maybe_send(w.ctx, w.session, w.settings, health, asked) {
        warn!("inventory not sent: {e}");
    }
    let links = &base.links;
    let step = match (links.get("cancelAction"), links.get("deploymentBase")) {
        (Some(l), _) => Some(w.cancel(&l.href)),
        (None, Some(l)) if unusable::known(w.ctx, &l.href) => {
            log::debug!("{}: its answer was unusable; not asked again yet", l.href);
            None
        }
        (None, Some(l)) => {
            let outcome = w.deployment(&l.href, false);
            Some(unusable::settle(w, &l.href, outcome))
        }
        (None, None) => links.get("confirmationBase").map(|l| w.confirmation(&l.href)),
    };
    if let Some(step) = step {
        if let Err(e) = step {
            warn!("{e} ({}); tried again at the next poll", e.code());
        }
        // A program that ran may have changed what is installed.
        if let Err(e) = inventory::maybe_send(w.ctx, w.session, w.settings, health, false) {
            log::debug!("inventory not sent: {e}");
        }
    }
    flush(w);
    timing::jittered(sleep)
}

/// A failed poll: noted for health, and the backoff to wait.
fn poll_failed(w: &Worker<'_>, health: &mut HealthState, e: Error) -> Duration {
    health.failed_polls += 1;
    health.certificate_problem = is_certificate_problem(&e);
    health.last_problem = Some(e.to_string());
    let ra = match &e {
        Error::Http { retry_after, .. } => *retry_after,
        _ => None,
    };
    let d = timing::backoff(health.failed_polls, w.settings.communication.retry_max_delay, ra);
    error!(
        "poll failed ({} in a row): {e} ({}); {}next attempt in {} s",
        health.failed_polls,
        e.code(),
        ra.map(|r| format!("the server asked to retry after {} s; ", r.as_secs()))
            .unwrap_or_default(),
        d.as_secs()
    );
    d
}

/// Polls until stopped.
fn poll_loop(mut w: Worker<'_>, vitals: &Vitals, waker: &mut Waker) -> Result<()> {
    let mut health = HealthState::default();
    let mut deferred = BTreeSet::new();
    let mut certs = certs::Keeper::default();
    let mut baseline = baseline::Baseline::default();
    let mut started = true;
    w.report_interrupted()?;
    if let Err(e) = w.check_images() {
        warn!("cannot look at the system images waiting for a restart yet: {e}");
    }
    while !w.stopping() {
        if let Err(e) = w.check_upgrade() {
            warn!("cannot report the client upgrade yet: {e}");
        }
        certs.before_poll(&mut w);
        run_requests(&mut w, &mut deferred);
        flush(&mut w);
        let d = match w.session.poll() {
            Ok(base) => {
                vitals.polled(Ok(()));
                certs.after_poll(&mut w, Ok(()));
                after_poll(&mut w, &mut health, base, &mut started)
            }
            Err(e) => {
                vitals.polled(Err(&e));
                certs.after_poll(&mut w, Err(&e));
                if matches!(e, Error::Network { .. }) {
                    w.session.fail_over(&e);
                }
                poll_failed(&w, &mut health, e)
            }
        };
        log::debug!("next poll in {} s", d.as_secs());
        wait(&w, waker, d, &deferred, &mut baseline);
    }
    certs.stop();
    Ok(())
}

/// Writes the pid file; removed again by [`PidFile`]'s drop.
struct PidFile(PathBuf);

impl PidFile {
    fn create(path: &Path) -> Result<PidFile> {
        dmfs::write_atomic(path, format!("{}\n", std::process::id()).as_bytes(), MODE_PUBLIC)?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = dmfs::remove_file(&self.0);
    }
}

/// The controller id and the management points the agent polls (the first that answers).
fn identity(ctx: &Context, settings: &Settings) -> Result<(String, Vec<String>)> {
    let identity = crate::identity::Identity::load(ctx)?;
    let controller_id = identity
        .map(|i| i.controller_id)
        .or_else(|| settings.environment.controller_id.clone())
        .ok_or_else(|| {
            Error::BadSettings(format!(
                "{} is missing and no ControllerId is set",
                ctx.layout.identity_file().display()
            ))
        })?;
    let points = settings.environment.management_points.clone();
    if points.is_empty() {
        return Err(Error::BadSettings(format!(
            "{} [Environment] ManagementPoint is not set",
            ctx.layout.settings_file().display()
        )));
    }
    Ok((controller_id, points))
}

/// Runs the agent until stopped.
pub fn run(ctx: &Context, opts: &Options) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut waker = Waker::new(&stop)?;
    dmfs::create_dir_all(&ctx.layout.state_dir(), dmfs::MODE_DIR_PRIVATE)?;
    // Made now so that it is watched: a `dmsvc run` request wakes the agent at once.
    dmfs::create_dir_all(&state::requests_dir(ctx), dmfs::MODE_DIR_PRIVATE)?;
    dmfs::create_dir_all(&ctx.layout.run_dir(), dmfs::MODE_DIR)?;
    let lock_path = ctx.layout.agent_lock_file();
    let _lock = dmfs::try_lock(&lock_path)?
        .ok_or(Error::AlreadyRunning { what: "dmsvc", lock: lock_path.clone() })?;

    recover_setup(ctx)?;
    let Some(version) = installed_version(ctx) else {
        // An interrupted install was rolled back, or the client was removed under us.
        warn!(
            "no client is installed on this device ({} is missing); the agent has nothing to run and exits",
            ctx.layout.active_pointer().display()
        );
        return Ok(());
    };
    exec_active_if_different(ctx)?;
    let settings = Settings::load(&ctx.layout.settings_file())?;
    let (controller_id, points) = identity(ctx, &settings)?;
    info!("agent {version} for controller {controller_id} polling {}", points.join(", "));
    // A pid file left behind means the last agent died without stopping (a crash, a kill):
    // such starts are what the crash-loop check counts.
    if !opts.once && ctx.layout.agent_pid_file().exists() {
        inventory::record_unclean_start(ctx);
    }
    let _pid = PidFile::create(&ctx.layout.agent_pid_file())?;
    let vitals = Vitals::starting(ctx, Some(version))?;
    info!("running (pid {})", vitals.pid());
    if opts.once {
        vitals.check_locally("--once: no poll");
    } else {
        check_clock(ctx);
        let net = certs::net(ctx, &settings)?;
        vitals.watch(stop.clone());
        let tenant = &settings.environment.tenant;
        let mut session = Session::new(net, &points, tenant, &controller_id);
        let outbox = dm_shared::outbox::Outbox::open(&ctx.layout);
        let w = Worker {
            ctx,
            settings: &settings,
            session: &mut session,
            outbox,
            stop: stop.clone(),
            controller_id,
        };
        poll_loop(w, &vitals, &mut waker)?;
        info!("stop requested; exiting");
    }
    vitals.stopped();
    Ok(())
}
