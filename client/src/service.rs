//! Registering, starting and stopping the agent as a service.
//!
//! The agent's systemd unit `dmsvc.service` is always written into the device root. When the
//! device root is `/` and systemd is running, the agent is enabled and started through
//! `systemctl`. Otherwise (a device without systemd, or a device root that is a folder
//! standing in for a device) setup starts the agent directly, in its own process group, and
//! the agent records its process id in `var/lib/dm/dmsvc.pid`. See docs/client-setup.md.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dm_shared::Context;
use log::{info, warn};

use crate::error::{Error, Result};
use crate::health::pid_alive;

/// How the agent is run on this device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Through systemd.
    Systemd,
    /// Started by setup, tracked by its pid file.
    Direct,
}

/// How long a stopping agent gets to finish its step before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// Debug builds only: a stand-in `systemctl` for tests, which also makes the device count as
/// a systemd device. Release builds, which are what ships, never read it.
pub const TEST_SYSTEMCTL_ENV: &str = "DM_TEST_SYSTEMCTL";

/// The `systemctl` program: the test stand-in in debug builds when one is set.
fn systemctl_program(ctx: &Context) -> std::ffi::OsString {
    match ctx.env.get(TEST_SYSTEMCTL_ENV) {
        Some(p) if cfg!(debug_assertions) => p.into(),
        _ => "systemctl".into(),
    }
}

/// Whether a test's stand-in `systemctl` plays systemd (debug builds only).
fn stand_in(ctx: &Context) -> bool {
    cfg!(debug_assertions) && ctx.env.get(TEST_SYSTEMCTL_ENV).is_some()
}

/// The way this device runs services.
pub fn mode(ctx: &Context) -> Mode {
    if stand_in(ctx) || (ctx.layout.is_system_root() && Path::new("/run/systemd/system").is_dir()) {
        Mode::Systemd
    } else {
        Mode::Direct
    }
}

/// The agent program, through the active-version pointer.
pub fn agent_program(ctx: &Context) -> PathBuf {
    ctx.layout.active_pointer().join("dmsvc")
}

/// The systemd unit for the agent of this device root.
pub fn unit_text(ctx: &Context) -> String {
    let root = ctx.layout.root().display();
    format!(
        "# Written by dmclientsetup; rewritten on every install, upgrade and reconfigure.\n\
         [Unit]\n\
         Description=dm device management agent (DMSvc)\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={} --device-root {root}\n\
         # The agent gives each program a cgroup of its own below the service's.\n\
         Delegate=yes\n\
         Restart=on-failure\n\
         RestartSec=10\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec={}\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        agent_program(ctx).display(),
        STOP_GRACE.as_secs() + 5
    )
}

fn systemctl(ctx: &Context, args: &[&str]) -> Result<()> {
    info!("systemctl {}", args.join(" "));
    let out =
        Command::new(systemctl_program(ctx)).args(args).stdin(Stdio::null()).output().map_err(
            |e| Error::Service { action: "control", reason: format!("cannot run systemctl: {e}") },
        )?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Service {
            action: "control",
            reason: format!(
                "systemctl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// The pid of this device's running agent, if one runs.
pub fn running_pid(ctx: &Context) -> Option<u32> {
    let text = std::fs::read_to_string(ctx.layout.agent_pid_file()).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    (pid_alive(pid) && is_our_agent(ctx, pid)).then_some(pid)
}

/// Whether `pid` is the agent of this device root (a reused pid must never be signalled).
fn is_our_agent(ctx: &Context, pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let root = ctx.layout.root().as_os_str().as_encoded_bytes();
    args.iter().any(|a| a.ends_with(b"dmsvc"))
        && args.windows(2).any(|w| w[0] == b"--device-root" && w[1] == root)
}

/// A directly started agent.
#[derive(Debug)]
pub struct Started {
    /// The child process (direct mode).
    pub child: Option<Child>,
}

impl Started {
    /// Whether the started agent has already exited, and how.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }
}

/// Starts (or restarts) the agent.
pub fn start(ctx: &Context) -> Result<Started> {
    match mode(ctx) {
        Mode::Systemd => {
            systemctl(ctx, &["daemon-reload"])?;
            systemctl(ctx, &["enable", "dmsvc.service"])?;
            systemctl(ctx, &["restart", "dmsvc.service"])?;
            Ok(Started { child: None })
        }
        Mode::Direct => {
            if let Some(pid) = running_pid(ctx) {
                info!("stopping the running agent (pid {pid}) before starting it again");
                stop(ctx)?;
            }
            let program = agent_program(ctx);
            let mut cmd = ctx.command(&program);
            cmd.arg("--device-root")
                .arg(ctx.layout.root())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            info!("starting the agent: {}", describe(&cmd));
            use std::os::unix::process::CommandExt;
            // Its own process group: the agent outlives setup and its terminal.
            cmd.process_group(0);
            let child = cmd.spawn().map_err(|e| Error::Service {
                action: "start",
                reason: format!("{}: {e}", program.display()),
            })?;
            info!("agent started (pid {})", child.id());
            Ok(Started { child: Some(child) })
        }
    }
}

/// Stops the agent, giving it [`STOP_GRACE`] to finish its current step. Returns whether one
/// was running.
pub fn stop(ctx: &Context) -> Result<bool> {
    match mode(ctx) {
        Mode::Systemd => {
            systemctl(ctx, &["stop", "dmsvc.service"])?;
            Ok(true)
        }
        Mode::Direct => {
            let Some(pid) = running_pid(ctx) else {
                return Ok(false);
            };
            info!("stopping the agent (pid {pid})");
            let target = rustix::process::Pid::from_raw(pid as i32).ok_or_else(|| {
                Error::Service { action: "stop", reason: format!("bad pid {pid}") }
            })?;
            let _ = rustix::process::kill_process(target, rustix::process::Signal::TERM);
            let start = Instant::now();
            while pid_alive(pid) {
                if start.elapsed() > STOP_GRACE {
                    warn!(
                        "the agent (pid {pid}) did not stop within {} s; killing it",
                        STOP_GRACE.as_secs()
                    );
                    let _ = rustix::process::kill_process(target, rustix::process::Signal::KILL);
                    std::thread::sleep(Duration::from_millis(100));
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // The agent removes its pid file when it exits cleanly; a killed one cannot.
            let _ = dm_shared::fs::remove_file(&ctx.layout.agent_pid_file());
            Ok(true)
        }
    }
}

/// Whether this device's agent is running.
pub fn is_running(ctx: &Context) -> bool {
    match mode(ctx) {
        Mode::Direct => running_pid(ctx).is_some(),
        Mode::Systemd => Command::new(systemctl_program(ctx))
            .args(["is-active", "--quiet", "dmsvc.service"])
            .status()
            .is_ok_and(|s| s.success()),
    }
}

/// How a program the agent starts is to outlive the agent (setup, which stops it).
#[derive(Debug)]
pub enum Detached {
    /// A transient systemd unit of its own, started by `systemd-run` (which has exited).
    Unit(String),
    /// A child in a process group of its own.
    Child(Child),
}

/// Starts `program` with `args` so that it outlives this agent: under systemd as a transient
/// unit of its own (`systemd-run`), because stopping `dmsvc.service` stops every process in
/// the service's cgroup, setup included; elsewhere in a process group of its own. `unit`
/// names the transient unit.
pub fn spawn_detached(
    ctx: &Context,
    program: &Path,
    args: &[&std::ffi::OsStr],
    unit: &str,
) -> Result<Detached> {
    use std::os::unix::process::CommandExt;
    let failed = |e: std::io::Error| Error::Service {
        action: "start",
        reason: format!("{}: {e}", program.display()),
    };
    if mode(ctx) == Mode::Systemd && !stand_in(ctx) {
        let mut cmd = Command::new("systemd-run");
        cmd.args(["--unit", unit, "--collect", "--quiet", "--service-type=exec", "--"])
            .arg(program)
            .args(args)
            .stdin(Stdio::null());
        info!("starting {}", describe(&cmd));
        let out = cmd.output().map_err(failed)?;
        if !out.status.success() {
            return Err(Error::Service {
                action: "start",
                reason: format!(
                    "systemd-run {unit} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        return Ok(Detached::Unit(unit.to_string()));
    }
    let mut cmd = ctx.command(program);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    info!("starting {}", describe(&cmd));
    cmd.process_group(0).spawn().map(Detached::Child).map_err(failed)
}

/// A command line for the log.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Stops the agent and removes it from the services that start at boot.
pub fn unregister(ctx: &Context) -> Result<()> {
    match mode(ctx) {
        Mode::Systemd => {
            // A unit systemd no longer knows must not keep the client from being removed.
            if let Err(e) = systemctl(ctx, &["disable", "--now", "dmsvc.service"]) {
                warn!("{e}; removing the client anyway");
            }
            Ok(())
        }
        Mode::Direct => stop(ctx).map(|_| ()),
    }
}
