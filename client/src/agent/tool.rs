//! The device's own tools the agent drives (apt, dpkg, SWUpdate, RAUC): each run with a
//! deadline and its process group killed past it, its output kept in a log file of its own and
//! copied, line by line, into the agent's log, where the person reading it at 3 a.m. looks.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use dm_shared::fs::{self as dmfs, MODE_PRIVATE};

/// The most output of one run that is read back.
const MAX_OUTPUT: u64 = 1 << 20;

/// How one run of a tool ended.
#[derive(Debug)]
pub struct ToolRun {
    /// Its exit status; `None`: stopped at the deadline.
    pub status: Option<ExitStatus>,
    /// What it wrote (stdout and stderr, interleaved), at most 1 MiB.
    pub output: String,
    /// The deadline it had.
    pub deadline: Duration,
}

impl ToolRun {
    /// Whether it exited with 0.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The signal that ended it, if one did (a crash, a kill).
    pub fn signal(&self) -> Option<i32> {
        self.status.and_then(|s| s.signal())
    }

    /// The last `n` lines that say something.
    pub fn tail(&self, n: usize) -> Vec<&str> {
        let mut lines: Vec<&str> =
            self.output.lines().filter(|l| !l.trim().is_empty()).rev().take(n).collect();
        lines.reverse();
        lines
    }

    /// How it ended, for people: `exit status: 1`, `signal: 11 (SIGSEGV)`, or the deadline.
    pub fn end(&self) -> String {
        match self.status {
            Some(s) => s.to_string(),
            None => format!("stopped after {} s, its deadline", self.deadline.as_secs()),
        }
    }
}

/// Runs `c` with its output in `log`, killing its process group at `deadline`. Errors only
/// when it cannot be started (the message names the program).
pub fn run(c: &mut Command, deadline: Duration, log: &Path) -> Result<ToolRun, String> {
    let program = c.get_program().to_string_lossy().into_owned();
    dmfs::remove_file(log).map_err(|e| e.to_string())?;
    let file = dmfs::create_new_append(log, MODE_PRIVATE).map_err(|e| e.to_string())?;
    let err = file.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = c
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if started.elapsed() < deadline => {
                std::thread::sleep(Duration::from_millis(200))
            }
            _ => {
                if let Some(pg) = rustix::process::Pid::from_raw(child.id() as i32) {
                    let _ = rustix::process::kill_process_group(pg, rustix::process::Signal::KILL);
                }
                let _ = child.wait();
                break None;
            }
        }
    };
    let text = dmfs::read_capped(log, MAX_OUTPUT).unwrap_or_default();
    let output = String::from_utf8_lossy(&text).into_owned();
    let name = Path::new(&program).file_name().unwrap_or_default().to_string_lossy();
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        log::info!("  {name} | {line}");
    }
    Ok(ToolRun { status, output, deadline })
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`): it changes at every restart.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Where a program named by a setting is: an absolute path as it is, a bare name looked up in
/// `PATH`. `None`: not there, or not executable.
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_keeps_its_output_and_how_it_ended() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("t.log");
        let mut c = Command::new("sh");
        c.args(["-c", "echo one; echo two >&2; exit 3"]);
        let r = run(&mut c, Duration::from_secs(10), &log).unwrap();
        assert!(!r.succeeded());
        assert_eq!(r.tail(5), ["one", "two"]);
        assert_eq!(r.status.unwrap().code(), Some(3));
        let mut c = Command::new("sh");
        c.args(["-c", "kill -SEGV $$"]);
        assert_eq!(run(&mut c, Duration::from_secs(10), &log).unwrap().signal(), Some(11));
        let mut c = Command::new("sleep");
        c.arg("30");
        let r = run(&mut c, Duration::from_millis(300), &log).unwrap();
        assert!(r.status.is_none() && r.end().contains("deadline"));
        let e = run(&mut Command::new("/nonexistent/tool"), Duration::from_secs(1), &log);
        assert!(e.unwrap_err().contains("/nonexistent/tool"));
    }

    #[test]
    fn programs_are_found_by_path_or_in_path() {
        assert!(find_program("sh").is_some());
        assert!(find_program("/bin/sh").is_some());
        assert!(find_program("/nonexistent/sh").is_none());
        assert!(find_program("no-such-program-here").is_none());
    }
}
