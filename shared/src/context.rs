//! Process state passed in, never read from globals: the device root, the clock and the
//! environment. Tests build a [`Context`] over a temp folder and a fixed clock and run in
//! parallel.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::layout::DeviceLayout;

/// The environment variable naming a program to run child programs through (such as
/// `qemu-aarch64 -L /usr/aarch64-linux-gnu` on an emulated test device). Unset on real devices.
pub const RUNNER_ENV: &str = "DM_RUNNER";

/// A snapshot of environment variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// The process's environment (variables that are not valid UTF-8 are left out).
    pub fn from_process() -> Env {
        Env(std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect())
    }

    /// An empty environment.
    pub fn empty() -> Env {
        Env::default()
    }

    /// Adds or replaces a variable.
    pub fn with(mut self, key: &str, value: &str) -> Env {
        self.0.insert(key.to_string(), value.to_string());
        self
    }

    /// One variable.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The runner prefix from [`RUNNER_ENV`], split into words; empty when unset.
    pub fn runner(&self) -> Vec<String> {
        self.get(RUNNER_ENV)
            .map(|r| r.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// All variables.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Everything a program needs to know about the process it runs in.
#[derive(Debug, Clone)]
pub struct Context {
    /// The device it acts on.
    pub layout: DeviceLayout,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Environment variables.
    pub env: Env,
}

impl Context {
    /// The real process: the given device root, the system clock, the process environment.
    pub fn from_process(device_root: impl Into<PathBuf>) -> Context {
        Context {
            layout: DeviceLayout::new(device_root),
            clock: Arc::new(SystemClock),
            env: Env::from_process(),
        }
    }

    /// A context over `root` with the given clock and an empty environment; for tests.
    pub fn for_test(root: impl Into<PathBuf>, clock: Arc<dyn Clock>) -> Context {
        Context { layout: DeviceLayout::new(root), clock, env: Env::empty() }
    }

    /// The command that runs another dm program (setup, the agent, enrollment): through the
    /// runner prefix when [`RUNNER_ENV`] is set, with exactly this context's environment, minus
    /// the failpoint variables (a test aims those at one process, never at its children).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let runner = self.env.runner();
        let mut cmd = match runner.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(program.as_ref());
                c
            }
            None => Command::new(program.as_ref()),
        };
        cmd.env_clear()
            .envs(self.env.iter().filter(|(k, _)| !k.starts_with(crate::failpoint::ENV_PREFIX)));
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_run_through_the_runner_with_the_context_environment() {
        let mut ctx = Context::for_test("/dev-root", Arc::new(SystemClock));
        ctx.env = Env::empty()
            .with(RUNNER_ENV, "qemu-aarch64 -L /usr/aarch64-linux-gnu")
            .with("LANG", "C")
            .with("DM_FAILPOINTS", "setup-x=kill");
        let cmd = ctx.command("/opt/dm/current/dmsvc");
        assert_eq!(cmd.get_program(), "qemu-aarch64");
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(args, ["-L", "/usr/aarch64-linux-gnu", "/opt/dm/current/dmsvc"]);
        let envs: Vec<_> = cmd.get_envs().filter_map(|(k, v)| Some((k, v?))).collect();
        assert!(envs.iter().any(|(k, v)| *k == "LANG" && *v == "C"), "{envs:?}");
        assert!(!envs.iter().any(|(k, _)| k.to_string_lossy().starts_with("DM_FAILPOINT")));

        ctx.env = Env::empty();
        let cmd = ctx.command("/bin/true");
        assert_eq!(cmd.get_program(), "/bin/true");
        assert_eq!(cmd.get_args().count(), 0);
    }
}
