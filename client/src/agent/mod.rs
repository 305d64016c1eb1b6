//! DMSvc, the agent: one instance per device, started by systemd or by setup.
//!
//! At start it takes the agent lock, finishes or rolls back a setup operation a crash
//! interrupted (unless setup itself is running), reports its pid and health, and runs until
//! SIGTERM or SIGINT, finishing its current step before it exits.

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

/// Sleeps up to `d`, waking early when `stop` is set. Returns whether to stop.
pub fn sleep_unless_stopped(stop: &AtomicBool, d: Duration) -> bool {
    let step = Duration::from_millis(100);
    let mut left = d;
    while !left.is_zero() {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
    stop.load(Ordering::Relaxed)
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
    let mut argv: Vec<PathBuf> = service::runner(ctx).into_iter().map(PathBuf::from).collect();
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
    info!(
        "agent {} for controller {} polling {}",
        version.map_or_else(|| "(not installed)".into(), |v| v.to_string()),
        crate::identity::Identity::load(ctx)?
            .map_or_else(|| "(no identity)".into(), |i| i.controller_id),
        settings.environment.management_point.as_deref().unwrap_or("(no management point)")
    );
    let _pid = PidFile::create(&ctx.layout.agent_pid_file())?;
    let mut health = Health::running(ctx, version);
    health.write(ctx)?;
    info!("running (pid {})", health.pid);
    if !opts.once {
        while !sleep_unless_stopped(&stop, Duration::from_secs(3600)) {}
        info!("stop requested; exiting");
    }
    health.state = "stopped".into();
    if let Err(e) = health.write(ctx) {
        error!("cannot record the stop: {e}");
    }
    Ok(())
}
