//! The agent's health report, `run/dm/agent-health.json`: written by a running agent
//! (`starting`, then `running` once it has shown it works: `agent::vitals`), read by setup to
//! decide that an install or upgrade worked.

use std::time::{Duration, Instant};

use dm_shared::fs::{self as dmfs, MODE_PRIVATE};
use dm_shared::{ClientVersion, Context, clock};

use crate::error::{Error, Result};

/// What a running agent reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Health {
    /// Its process id.
    pub pid: u32,
    /// The client version it runs.
    pub version: Option<ClientVersion>,
    /// When it started (RFC 3339).
    pub started: String,
    /// `starting`, `running` (healthy: see `agent::vitals`), `refused` (the management point
    /// refuses the device: never healthy) or `stopped`.
    pub state: String,
    /// How it was found healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked: Option<String>,
}

impl Health {
    /// Reads the report, if there is a readable one.
    pub fn read(ctx: &Context) -> Option<Health> {
        dmfs::read_json(&ctx.layout.agent_health_file(), 4096).ok().flatten()
    }

    /// Writes the report.
    pub fn write(&self, ctx: &Context) -> Result<()> {
        dmfs::create_dir_all(&ctx.layout.run_dir(), dmfs::MODE_DIR)?;
        Ok(dmfs::write_json(&ctx.layout.agent_health_file(), self, MODE_PRIVATE)?)
    }

    /// A report for this process, running `version`, started now.
    pub fn running(ctx: &Context, version: Option<ClientVersion>) -> Health {
        Health {
            pid: std::process::id(),
            version,
            started: clock::rfc3339(ctx.clock.now()),
            state: "running".into(),
            checked: None,
        }
    }
}

/// Whether a process exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // Field 3, after the parenthesised command name, is the state.
    match stat.rsplit_once(')') {
        Some((_, rest)) => !matches!(rest.trim_start().chars().next(), Some('Z' | 'X') | None),
        None => false,
    }
}

/// Waits until an agent running `version` reports healthy with a live process. `exited` is
/// polled to notice an agent that died before reporting (it returns the exit description).
pub fn await_healthy(
    ctx: &Context,
    version: ClientVersion,
    timeout: Duration,
    mut exited: impl FnMut() -> Option<String>,
) -> Result<Health> {
    let start = Instant::now();
    loop {
        if let Some(h) = Health::read(ctx) {
            if h.version == Some(version) && h.state == "running" && pid_alive(h.pid) {
                return Ok(h);
            }
            if h.version == Some(version) && h.state == "refused" {
                let why = format!(
                    "it is not healthy: {}",
                    h.checked.as_deref().unwrap_or("the management point refuses it")
                );
                log::error!("the agent {version}: {why}");
                return Err(Error::Unhealthy { version, why });
            }
        }
        if let Some(how) = exited() {
            let why = format!("it exited ({how}) {} s after it started", start.elapsed().as_secs());
            log::error!("the agent {version}: {why}");
            return Err(Error::Unhealthy { version, why });
        }
        if start.elapsed() > timeout {
            let why = format!("it did not report within {} s", timeout.as_secs());
            return Err(Error::Unhealthy { version, why });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_dead_one_is_not() {
        assert!(pid_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!pid_alive(pid));
    }

    #[test]
    fn waits_for_the_right_version() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context::for_test(dir.path(), std::sync::Arc::new(dm_shared::clock::SystemClock));
        let v1 = ClientVersion::new(1, 0, 0, 0);
        let v2 = ClientVersion::new(2, 0, 0, 0);
        Health::running(&ctx, Some(v1)).write(&ctx).unwrap();
        let err = await_healthy(&ctx, v2, Duration::from_millis(200), || None).unwrap_err();
        assert!(matches!(err, Error::Unhealthy { .. }));
        let err = await_healthy(&ctx, v2, Duration::from_secs(10), || Some("exit status 1".into()))
            .unwrap_err();
        assert!(err.to_string().contains("it exited (exit status 1)"), "{err}");
        assert_eq!(
            await_healthy(&ctx, v1, Duration::from_secs(1), || None).unwrap().pid,
            std::process::id()
        );
    }
}
