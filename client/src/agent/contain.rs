//! Containment of a running program, for its whole life: every process it starts, including
//! those that leave its process group, can be found, stopped and killed, at its maximum run
//! time, when its main process exits, and after an agent that was killed while it ran.
//!
//! Where the device has cgroup v2 and the agent's own cgroup can hold children (as under
//! systemd with `Delegate=yes`), each program runs in a cgroup of its own,
//! `<agent's cgroup>/dm-program-<agent pid>-<action>`, which it enters before its first
//! instruction. It also leads a process group of its own, which is what is used where there is
//! no usable cgroup. The containment is recorded with the action, so that an agent started
//! after a crash can stop what the previous one left running.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A running program's containment, as recorded with its action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Contained {
    /// Its process group (the main process's pid).
    pub pgid: i32,
    /// When the main process started, in clock ticks since boot (`/proc/<pid>/stat` field
    /// 22): a process of the group that started earlier is not the program's (pid reuse).
    pub started: u64,
    /// Its cgroup folder, where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
}

/// The cgroup v2 folder the agent runs in, if the device has cgroup v2.
fn own_cgroup() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // `… mount-point … - cgroup2 …`: the fifth field is the mount point.
    let mount = mountinfo.lines().find_map(|l| {
        let (head, tail) = l.split_once(" - ")?;
        tail.starts_with("cgroup2 ").then(|| head.split(' ').nth(4).map(PathBuf::from))?
    })?;
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(mount.join(rel.trim_start_matches('/')))
}

/// Makes a cgroup for action `action`'s program, or `None` (logged once per program) where
/// the device has no usable cgroup v2.
pub fn new_cgroup(action: u64) -> Option<PathBuf> {
    let parent = own_cgroup()?;
    let dir = parent.join(format!("dm-program-{}-{action}", std::process::id()));
    match std::fs::create_dir(&dir) {
        Ok(()) => Some(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Some(dir),
        Err(e) => {
            log::debug!(
                "no cgroup for the program ({}: {e}); its process group contains it",
                dir.display()
            );
            None
        }
    }
}

/// The argument that makes `dmsvc` a launcher: `dmsvc --contain-in <cgroup.procs> PROGRAM
/// ARGS…` moves itself into the cgroup, then becomes PROGRAM (exec), so the program is in its
/// cgroup before its first instruction and cannot fork away first.
pub const LAUNCH_ARG: &str = "--contain-in";

/// The command that starts `program` contained: through `launcher` (the runner prefix and
/// this agent's program) into `cgroup` when there is one, in a process group of its own.
pub fn command(
    program: &Path,
    launcher: &[std::ffi::OsString],
    cgroup: Option<&Path>,
) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = match (cgroup, launcher.split_first()) {
        (Some(dir), Some((first, rest))) => {
            let mut c = std::process::Command::new(first);
            c.args(rest).arg(LAUNCH_ARG).arg(dir.join("cgroup.procs")).arg(program);
            c
        }
        _ => std::process::Command::new(program),
    };
    cmd.process_group(0);
    cmd
}

/// The launcher's side of [`LAUNCH_ARG`]: `args` are what follows it. Moves this process into
/// the cgroup (a failure is only a weaker containment: the process group still holds it),
/// then executes the program. Returns only when that fails.
pub fn launch(args: &[std::ffi::OsString]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let [procs, program, rest @ ..] = args else {
        return std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "usage: dmsvc --contain-in CGROUP.PROCS PROGRAM [ARGS…]",
        );
    };
    // "0": the writing process itself.
    let _ = std::fs::write(procs, b"0");
    std::process::Command::new(program).args(rest).exec()
}

/// The start time (clock ticks since boot) and process group of `pid`, and whether it is a
/// zombie.
fn stat_of(pid: i32) -> Option<(u64, i32, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp … starttime`: comm may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?;
    let pgrp = fields.get(2)?.parse().ok()?;
    let started = fields.get(19)?.parse().ok()?;
    Some((started, pgrp, *state == "Z"))
}

/// What contains the process `pid` just started.
pub fn contained(pid: u32, cgroup: Option<PathBuf>) -> Contained {
    let pgid = pid as i32;
    let started = stat_of(pgid).map_or(0, |s| s.0);
    Contained { pgid, started, cgroup }
}

/// The live processes of the program: those in its cgroup, and those of its process group that
/// started no earlier than it did.
fn members(c: &Contained) -> Vec<i32> {
    let mut pids: Vec<i32> = Vec::new();
    if let Some(dir) = &c.cgroup {
        if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    // A leader that started at another time means the number was given to another process
    // since (the program's group is gone): then only the cgroup speaks for it.
    let reused = stat_of(c.pgid).is_some_and(|(started, _, _)| started != c.started);
    let listing = if reused { None } else { std::fs::read_dir("/proc").ok() };
    if let Some(rd) = listing {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if let Some((started, pgrp, _)) = stat_of(pid) {
                if pgrp == c.pgid && started >= c.started && !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    pids.retain(|p| stat_of(*p).is_some_and(|(_, _, zombie)| !zombie));
    pids
}

fn signal(c: &Contained, pids: &[i32], sig: rustix::process::Signal) {
    if sig == rustix::process::Signal::KILL {
        if let Some(dir) = &c.cgroup {
            // Atomic where the kernel has it (5.14 and later): nothing can fork away.
            let _ = std::fs::write(dir.join("cgroup.kill"), b"1");
        }
    }
    for pid in pids {
        if let Some(p) = rustix::process::Pid::from_raw(*pid) {
            let _ = rustix::process::kill_process(p, sig);
        }
    }
}

/// Sends SIGTERM to every process of the program.
pub fn terminate(c: &Contained) {
    signal(c, &members(c), rustix::process::Signal::TERM);
}

/// Whether any process of the program still lives.
pub fn alive(c: &Contained) -> bool {
    !members(c).is_empty()
}

/// Kills every process of the program (SIGKILL, until none is left or `within` passed) and
/// removes its cgroup. Returns how many processes it found.
pub fn kill_all(c: &Contained, within: Duration) -> usize {
    let start = Instant::now();
    let mut found = 0;
    loop {
        let pids = members(c);
        if pids.is_empty() || start.elapsed() > within {
            break;
        }
        found = found.max(pids.len());
        signal(c, &pids, rustix::process::Signal::KILL);
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(dir) = &c.cgroup {
        // Empty now; the kernel removes its files with it.
        if let Err(e) = std::fs::remove_dir(dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("cannot remove the program's cgroup {}: {e}", dir.display());
            }
        }
    }
    found
}

/// Stops what is left: SIGTERM, up to `grace` to exit, then SIGKILL. Returns how many
/// processes were left.
pub fn stop_all(c: &Contained, grace: Duration) -> usize {
    let left = members(c).len();
    if left > 0 {
        terminate(c);
        let start = Instant::now();
        while alive(c) && start.elapsed() < grace {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    left.max(kill_all(c, Duration::from_secs(5)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let me = std::process::id() as i32;
        let (started, pgrp, zombie) = stat_of(me).unwrap();
        assert!(started > 0 && pgrp > 0 && !zombie);
        assert!(stat_of(-1).is_none());
    }

    #[test]
    fn everything_a_program_started_is_killed_even_outside_its_group() {
        let cgroup = new_cgroup(u64::from(std::process::id()));
        // A background child that ignores SIGTERM and, where a cgroup can catch it, one that
        // leaves the process group.
        let script = if cgroup.is_some() {
            "trap '' TERM; sleep 300 & setsid sleep 301 & sleep 302"
        } else {
            "trap '' TERM; sleep 300 & sleep 302"
        };
        // The test binary is no launcher: the shell moves itself, as the launcher would.
        let procs = cgroup.as_ref().map(|d| d.join("cgroup.procs"));
        let script = match &procs {
            Some(p) => format!("echo 0 > '{}'; {script}", p.display()),
            None => script.to_string(),
        };
        let mut cmd = command(Path::new("/bin/sh"), &[], None);
        cmd.args(["-c", &script]);
        let mut child = cmd.spawn().unwrap();
        let c = contained(child.id(), cgroup.clone());
        std::thread::sleep(Duration::from_millis(300));
        let n = members(&c).len();
        // Where there is no cgroup, the process that left the group is out of reach.
        assert!(n >= if cgroup.is_some() { 4 } else { 3 }, "{n} members");
        assert!(stop_all(&c, Duration::from_millis(200)) >= n);
        let _ = child.wait();
        assert!(!alive(&c));
        if let Some(dir) = &cgroup {
            assert!(!dir.exists(), "the cgroup is removed");
        }
    }
}
