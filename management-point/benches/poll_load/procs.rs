//! The processes of a run, from /proc and the shell's tools: CPU time, resident memory,
//! PostgreSQL's processes, the file descriptor limit, the CPUs a process may use, and servers
//! started (pinned to a CPU or not) that say where they listen.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// CPU seconds (user + system) of a process, from /proc.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The postmaster and its children (PostgreSQL's processes), from /proc.
pub fn postgres_pids(data: &Path) -> Vec<u32> {
    let pm = std::fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
    let Some(master) = pm.lines().next().and_then(|l| l.trim().parse::<u32>().ok()) else {
        return Vec::new();
    };
    let mut pids = vec![master];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1));
        if ppid.and_then(|p| p.parse::<u32>().ok()) == Some(master) {
            pids.push(pid);
        }
    }
    pids
}

pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if let Some(max) = l.maximum {
        l.current = Some(max.min(1 << 20));
        let _ = setrlimit(Resource::Nofile, l);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(1024)
}

/// Starts a server that prints `listening https://ADDR` when it accepts connections.
pub fn started(mut cmd: Command) -> (Child, std::net::SocketAddr) {
    let mut server = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening https://").unwrap().parse().unwrap();
    (server, addr)
}

/// The CPUs this process may run on (`Cpus_allowed_list` in /proc).
pub fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap();
    let mut cpus = Vec::new();
    for part in list.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        cpus.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap());
    }
    cpus
}

pub fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")
}

/// `cmd` started by `taskset`, on `cpu` only.
pub fn pinned(cmd: Command, cpu: usize) -> Command {
    let mut t = Command::new("taskset");
    t.arg("-c").arg(cpu.to_string()).arg(cmd.get_program()).args(cmd.get_args());
    t
}
