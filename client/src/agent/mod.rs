//! DMSvc, the agent: one instance per device, started by systemd or by setup.
//!
//! At start it takes the agent lock, finishes or rolls back a setup operation a crash
//! interrupted (unless setup itself is running), reports its pid and health, and then polls
//! the management point until SIGTERM or SIGINT, finishing its current step before it exits.
//! See docs/agent.md.

pub mod ddi;
pub mod inventory;
pub mod jobs;
pub mod net;
pub mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dm_shared::fs::{self as dmfs, MODE_PUBLIC};
use dm_shared::{ClientVersion, Context, Settings};
use log::{error, info, warn};

use crate::error::{Error, Result};
use crate::health::Health;
use crate::service;
use crate::setup::{self, engine::Actor};

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

/// Set when SIGTERM or SIGINT arrives.
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&flag)).map_err(|e| Error::Service {
            action: "start",
            reason: format!("cannot handle signal {sig}: {e}"),
        })?;
    }
    Ok(flag)
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
    let (Some(own), Some(active)) = (own_version(), setup::installed_version(ctx)) else {
        return Ok(());
    };
    if own == active {
        return Ok(());
    }
    warn!("this agent is {own} but the active client is {active}: starting the active version");
    let mut argv: Vec<PathBuf> = ctx.env.runner().into_iter().map(PathBuf::from).collect();
    argv.push(service::agent_program(ctx));
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .arg("--device-root")
        .arg(ctx.layout.root())
        .exec();
    Err(Error::Service {
        action: "start",
        reason: format!("cannot run {}: {err}", argv[argv.len() - 1].display()),
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

/// A uniformly random fraction in [0, 1).
fn random_fraction() -> f64 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

/// The server's sleep with ±20% jitter, so a fleet does not poll in lockstep.
pub fn jittered(sleep: Duration) -> Duration {
    sleep.mul_f64(0.8 + 0.4 * random_fraction())
}

/// The wait after `failures` consecutive failures: exponential from 2 s, capped at `cap`,
/// with jitter (between half and all of it), and never shorter than the server's Retry-After.
pub fn backoff(failures: u32, cap: Duration, retry_after: Option<Duration>) -> Duration {
    let exp =
        Duration::from_secs(2).saturating_mul(1u32 << failures.saturating_sub(1).min(20)).min(cap);
    let jittered = exp.mul_f64(0.5 + 0.5 * random_fraction());
    match retry_after {
        Some(ra) => jittered.max(ra.min(Duration::from_secs(86_400))),
        None => jittered,
    }
}

/// Waits up to `d`; returns early on stop or when `dmsvc run` left a request.
fn wait(ctx: &Context, stop: &AtomicBool, d: Duration) {
    let requests = ctx.layout.state_dir().join("requests");
    let deadline = std::time::Instant::now() + d;
    while std::time::Instant::now() < deadline {
        if stop.load(Ordering::Relaxed)
            || std::fs::read_dir(&requests).is_ok_and(|mut r| r.next().is_some())
        {
            return;
        }
        std::thread::sleep(
            Duration::from_millis(200)
                .min(deadline.saturating_duration_since(std::time::Instant::now())),
        );
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

/// Polls until stopped.
fn poll_loop(
    ctx: &Context,
    settings: &Settings,
    ddi: &mut ddi::Ddi,
    controller_id: String,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let outbox = dm_shared::outbox::Outbox::open(&ctx.layout);
    let mut state = inventory::HealthState::default();
    let mut w = jobs::Worker {
        ctx,
        settings,
        ddi,
        outbox: outbox.clone(),
        stop: stop.clone(),
        controller_id,
    };
    w.report_interrupted()?;
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = w.check_upgrade() {
            warn!("cannot report the client upgrade yet: {e}");
        }
        for id in state::take_requests(ctx) {
            match state::ActionRecord::load(ctx, id) {
                Some(r)
                    if r.stage == state::Stage::Available
                        || r.stage == state::Stage::Downloaded =>
                {
                    info!("the device's user asked to run action {id} ({})", r.program);
                    if let Err(e) = w.deployment(&r.href, true) {
                        warn!("action {id}: {e}; it is tried again");
                        let _ = state::request_run(ctx, id);
                    }
                }
                Some(r) => {
                    warn!("dmsvc run {id}: the action is {:?}, not available to run", r.stage)
                }
                None => warn!("dmsvc run {id}: no such action on this device"),
            }
        }
        if let Err(e) = w.ddi.flush(&outbox) {
            log::debug!("status messages wait: {e}");
        }
        match w.ddi.poll() {
            Ok(base) => {
                if state.failed_polls > 0 {
                    info!(
                        "the management point answers again after {} failed polls",
                        state.failed_polls
                    );
                }
                state.reset_communication();
                let sleep = dm_shared::ddi::parse_sleep(&base.config.polling.sleep)
                    .filter(|d| !d.is_zero())
                    .unwrap_or(settings.communication.poll_interval);
                let asked = base.links.contains_key("configData");
                if let Err(e) = inventory::maybe_send(ctx, w.ddi, settings, &state, asked) {
                    warn!("inventory not sent: {e}");
                }
                let step = if let Some(l) = base.links.get("cancelAction") {
                    Some(w.cancel(&l.href))
                } else {
                    base.links.get("deploymentBase").map(|l| w.deployment(&l.href, false))
                };
                if let Some(step) = step {
                    if let Err(e) = step {
                        warn!("{e} ({}); tried again at the next poll", e.code());
                    }
                    // A program that ran may have changed what is installed.
                    if let Err(e) = inventory::maybe_send(ctx, w.ddi, settings, &state, false) {
                        log::debug!("inventory not sent: {e}");
                    }
                }
                if let Err(e) = w.ddi.flush(&outbox) {
                    log::debug!("status messages wait: {e}");
                }
                let d = jittered(sleep);
                log::debug!("next poll in {} s", d.as_secs());
                wait(ctx, &stop, d);
            }
            Err(e) => {
                state.failed_polls += 1;
                state.certificate_problem = is_certificate_problem(&e);
                state.last_problem = Some(e.to_string());
                let ra = match &e {
                    Error::Http { retry_after, .. } => *retry_after,
                    _ => None,
                };
                let d = backoff(state.failed_polls, settings.communication.retry_max_delay, ra);
                error!(
                    "poll failed ({} in a row): {e} ({}); {}next attempt in {} s",
                    state.failed_polls,
                    e.code(),
                    ra.map(|r| format!("the server asked to retry after {} s; ", r.as_secs()))
                        .unwrap_or_default(),
                    d.as_secs()
                );
                wait(ctx, &stop, d);
            }
        }
    }
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

/// Runs the agent until stopped.
pub fn run(ctx: &Context, opts: &Options) -> Result<()> {
    let stop = stop_flag()?;
    dmfs::create_dir_all(&ctx.layout.state_dir(), dmfs::MODE_DIR_PRIVATE)?;
    dmfs::create_dir_all(&ctx.layout.run_dir(), dmfs::MODE_DIR)?;
    let lock_path = ctx.layout.agent_lock_file();
    let _lock = dmfs::try_lock(&lock_path)?
        .ok_or(Error::AlreadyRunning { what: "dmsvc", lock: lock_path.clone() })?;

    recover_setup(ctx)?;
    let Some(version) = setup::installed_version(ctx) else {
        // An interrupted install was rolled back, or the client was removed under us.
        warn!(
            "no client is installed on this device ({} is missing); the agent has nothing to run and exits",
            ctx.layout.active_pointer().display()
        );
        return Ok(());
    };
    exec_active_if_different(ctx)?;
    let version = Some(version);
    let settings = Settings::load(&ctx.layout.settings_file())?;
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
    let management_point = settings.environment.management_point.clone().ok_or_else(|| {
        Error::BadSettings(format!(
            "{} [Environment] ManagementPoint is not set",
            ctx.layout.settings_file().display()
        ))
    })?;
    info!(
        "agent {} for controller {controller_id} polling {management_point}",
        version.map_or_else(|| "(not installed)".into(), |v| v.to_string())
    );
    let _pid = PidFile::create(&ctx.layout.agent_pid_file())?;
    let mut health = Health::running(ctx, version);
    health.write(ctx)?;
    info!("running (pid {})", health.pid);
    if !opts.once {
        check_clock(ctx);
        let net = net::Net::new(ctx, &settings)?;
        let mut ddi =
            ddi::Ddi::new(net, &management_point, &settings.environment.tenant, &controller_id);
        poll_loop(ctx, &settings, &mut ddi, controller_id, stop.clone())?;
        info!("stop requested; exiting");
    }
    health.state = "stopped".into();
    if let Err(e) = health.write(ctx) {
        error!("cannot record the stop: {e}");
    }
    Ok(())
}
