//! When a newly started agent counts as healthy, which is what setup waits for before it keeps
//! an install or an upgrade (and what it rolls back without). The agent writes `starting` as
//! soon as it runs, and `running` only once it has shown it works:
//!
//! - its first poll was answered by the management point; or
//! - the management point cannot be reached (a network error, a timeout, a 5xx or 429), or has
//!   not answered within [`LOCAL_CHECK_AFTER`], and the local self-check passes: settings
//!   read, network client built (TLS roots, client certificate), state folder writable.
//!
//! A management point that refuses the device (401, 403, 404: a wrong token, an unknown
//! tenant) never makes it healthy: a deployment that brought such settings is rolled back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dm_shared::fs::{self as dmfs, MODE_PRIVATE};
use dm_shared::{ClientVersion, Context};
use log::{error, info, warn};

use crate::error::{Error, Result};
use crate::health::Health;

/// How long the first poll may take before the local self-check decides.
pub const LOCAL_CHECK_AFTER: Duration = Duration::from_secs(15);

/// The agent's health report, decided once.
pub struct Vitals {
    ctx: Context,
    health: Mutex<Health>,
    /// Healthy, or refused: nothing changes it any more.
    decided: AtomicBool,
    /// Ends the watching thread the moment the health is decided.
    decided_tx: Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

/// Whether `e` says the management point refuses this device, rather than that it cannot be
/// reached.
fn refuses_device(e: &Error) -> bool {
    matches!(e, Error::Http { status: 401 | 403 | 404, .. })
}

/// The local self-check: what the agent needs that does not depend on the server. Its
/// settings were read and its network client built before this runs.
pub fn self_check(ctx: &Context) -> std::result::Result<(), String> {
    let probe = ctx.layout.state_dir().join(".health-probe");
    dmfs::write_atomic(&probe, b"ok", MODE_PRIVATE)
        .and_then(|()| dmfs::remove_file(&probe).map(|_| ()))
        .map_err(|e| format!("the state folder is not writable: {e}"))?;
    dmfs::create_dir_all(&ctx.layout.outbox_dir(), dmfs::MODE_DIR_PRIVATE)
        .map(|_| ())
        .map_err(|e| format!("the outbox cannot be created: {e}"))
}

impl Vitals {
    /// Reports the agent `starting`.
    pub fn starting(ctx: &Context, version: Option<ClientVersion>) -> Result<Arc<Vitals>> {
        let mut health = Health::running(ctx, version);
        health.state = "starting".into();
        health.write(ctx)?;
        Ok(Arc::new(Vitals {
            ctx: ctx.clone(),
            health: Mutex::new(health),
            decided: AtomicBool::new(false),
            decided_tx: Mutex::new(None),
        }))
    }

    /// The pid in the report.
    pub fn pid(&self) -> u32 {
        self.health.lock().map_or(0, |h| h.pid)
    }

    fn healthy(&self, how: String) {
        if self.decided.swap(true, Ordering::SeqCst) {
            return;
        }
        self.end_watch();
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.state = "running".into();
        h.checked = Some(how.clone());
        match h.write(&self.ctx) {
            Ok(()) => info!("healthy: {how}"),
            Err(e) => error!("cannot record the agent's health: {e}"),
        }
    }

    /// Healthy by the local self-check, for `why` (the management point cannot be reached).
    pub fn check_locally(&self, why: &str) {
        if self.decided.load(Ordering::SeqCst) {
            return;
        }
        match self_check(&self.ctx) {
            Ok(()) => self.healthy(format!("local self-check passed ({why})")),
            Err(e) => error!("the local self-check failed: {e}; not healthy"),
        }
    }

    /// Ends the watching thread: the health is decided.
    fn end_watch(&self) {
        if let Some(tx) = self.decided_tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
        }
    }

    /// Decides on the first poll's outcome.
    pub fn polled(&self, outcome: std::result::Result<(), &Error>) {
        if self.decided.load(Ordering::SeqCst) {
            return;
        }
        match outcome {
            Ok(()) => self.healthy("the management point answered its first poll".into()),
            Err(e) if refuses_device(e) => {
                // Decided: not healthy. Setup, waiting, rolls back what brought this here.
                if self.decided.swap(true, Ordering::SeqCst) {
                    return;
                }
                self.end_watch();
                error!(
                    "the management point refuses this device ({e}); the agent is not healthy, and setup rolls back a deployment that brought it here"
                );
                let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
                h.state = "refused".into();
                h.checked = Some(format!("the management point refuses this device: {e}"));
                if let Err(e) = h.write(&self.ctx) {
                    error!("cannot record the agent's health: {e}");
                }
            }
            Err(e) => self.check_locally(&format!("the management point cannot be reached: {e}")),
        }
    }

    /// Runs the local self-check if the first poll has not decided within
    /// [`LOCAL_CHECK_AFTER`] (a server that accepts connections and never answers).
    /// The thread waits once, without waking on a period, and ends as soon as the health is
    /// decided.
    pub fn watch(self: &Arc<Self>, stop: Arc<AtomicBool>) {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        *self.decided_tx.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        let me = self.clone();
        std::thread::spawn(move || {
            let timed_out = matches!(
                rx.recv_timeout(LOCAL_CHECK_AFTER),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            );
            if !timed_out || me.decided.load(Ordering::SeqCst) || stop.load(Ordering::Relaxed) {
                return;
            }
            let secs = LOCAL_CHECK_AFTER.as_secs();
            warn!("the first poll has not been answered within {secs} s");
            me.check_locally(&format!("no answer to the first poll within {secs} s"));
        });
    }

    /// Reports the agent stopped.
    pub fn stopped(&self) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.state = "stopped".into();
        if let Err(e) = h.write(&self.ctx) {
            error!("cannot record the stop: {e}");
        }
    }
}
