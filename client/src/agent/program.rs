//! Running a program of a package: in the package folder, with only the documented
//! environment, contained with everything it starts (`contain`), its output logged in capped
//! lines, stopped at its maximum run time, and nothing of it left running when it ends.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::contain::{self, Contained};

/// The longest line of program output logged (longer ones are cut, and say so).
pub const MAX_LINE: usize = 1000;
/// The most lines logged per stream; the rest is read and dropped.
const MAX_LINES: usize = 2000;
/// How long processes a program left behind get to exit after SIGTERM.
const LEFTOVER_GRACE: Duration = Duration::from_secs(2);

/// What a program run came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Exited with a code.
    Exited(i32),
    /// Killed by a signal.
    Signaled(i32),
    /// Ran past its maximum run time and was stopped.
    TimedOut,
}

/// Splits a stream into log lines with bounded memory: at most [`MAX_LINE`] characters are
/// kept of a line (a longer one is logged cut, the rest of it skipped), bytes that are not
/// printable text are escaped (`\x00`), and `emit` gets each line.
pub struct LineCutter<F: FnMut(&str)> {
    line: Vec<u8>,
    cut: bool,
    emit: F,
}

impl<F: FnMut(&str)> LineCutter<F> {
    /// A cutter that hands lines to `emit`.
    pub fn new(emit: F) -> Self {
        LineCutter { line: Vec::with_capacity(256), cut: false, emit }
    }

    /// Takes the next bytes of the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.end_line();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            } else {
                self.cut = true;
            }
        }
    }

    /// Ends the stream (a last line without a newline).
    pub fn finish(&mut self) {
        if !self.line.is_empty() || self.cut {
            self.end_line();
        }
    }

    fn end_line(&mut self) {
        let mut text = escape(&self.line);
        if self.cut {
            text.push_str(" …(line cut)");
        }
        (self.emit)(text.trim_end());
        self.line.clear();
        self.cut = false;
    }
}

/// Valid UTF-8 text as it is; a TAB as `\t`, other control characters and invalid bytes as
/// `\xNN`: a line of the log is one line of printable text, whatever the program wrote.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\t' {
                out.push_str("\\t");
            } else if c.is_control() {
                for b in c.to_string().bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Logs a stream of program `name` in capped lines, reading it in chunks to the end.
fn log_stream(mut stream: impl Read, name: &str, label: &str) {
    let mut lines = 0usize;
    let mut cutter = LineCutter::new(|text: &str| {
        lines += 1;
        if lines <= MAX_LINES {
            info!("program {name} [{label}]: {text}");
        } else if lines == MAX_LINES + 1 {
            info!("program {name} [{label}]: (further output not logged)");
        }
    });
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => cutter.feed(&buf[..n]),
        }
    }
    cutter.finish();
}

/// A program to run: the signed `command` (an argument vector: a file of the package,
/// relative to `dir`, or an absolute program, then its arguments; no shell), in `dir`, with
/// only `env` (plus PATH, HOME and LANG).
pub struct Run<'a> {
    /// The signed command.
    pub command: &'a [String],
    /// The package folder (working folder and HOME).
    pub dir: &'a Path,
    /// Its environment.
    pub env: &'a [(String, String)],
    /// Its maximum run time.
    pub max: Duration,
    /// Its name, for the log.
    pub name: &'a str,
    /// The action, which names its cgroup.
    pub action: u64,
    /// What starts it inside its cgroup: the runner prefix and this agent's program (none:
    /// no cgroup, only its process group contains it).
    pub launcher: &'a [std::ffi::OsString],
}

/// Runs the program contained, logs its output, stops it (SIGTERM to all its processes,
/// SIGKILL to all of them 5 s later) when it runs past its maximum run time, and stops
/// whatever it left running when its main process exits. `started` is told the containment
/// as soon as the program runs, to record it.
pub fn run_program(
    run: &Run<'_>,
    started: &mut dyn FnMut(&Contained),
) -> std::io::Result<RunOutcome> {
    use std::os::unix::process::ExitStatusExt;
    let Some((program, args)) = run.command.split_first() else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"));
    };
    let program = if program.starts_with('/') {
        Path::new(program).to_path_buf()
    } else {
        run.dir.join(program)
    };
    let cgroup = if run.launcher.is_empty() { None } else { contain::new_cgroup(run.action) };
    let mut cmd = contain::command(&program, run.launcher, cgroup.as_deref());
    cmd.args(args)
        .current_dir(run.dir)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", run.dir)
        .env("LANG", "C.UTF-8")
        .envs(run.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            if let Some(dir) = &cgroup {
                let _ = std::fs::remove_dir(dir);
            }
            return Err(e);
        }
    };
    let jail = contain::contained(child.id(), cgroup);
    started(&jail);
    let mut readers = Vec::new();
    for (stream, label) in [
        (child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>), "out"),
        (child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>), "err"),
    ] {
        let Some(stream) = stream else { continue };
        let name = run.name.to_string();
        readers.push(std::thread::spawn(move || log_stream(stream, &name, label)));
    }
    let start = Instant::now();
    let outcome = loop {
        if let Some(status) = child.try_wait()? {
            break match (status.code(), status.signal()) {
                (Some(c), _) => RunOutcome::Exited(c),
                (None, Some(s)) => RunOutcome::Signaled(s),
                (None, None) => RunOutcome::Signaled(0),
            };
        }
        if start.elapsed() > run.max {
            warn!("program {} ran longer than {} s: stopping it", run.name, run.max.as_secs());
            contain::stop_all(&jail, Duration::from_secs(5));
            let _ = child.kill();
            let _ = child.wait();
            break RunOutcome::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let left = contain::stop_all(&jail, LEFTOVER_GRACE);
    if left > 0 && outcome != RunOutcome::TimedOut {
        warn!("program {} left {left} process(es) running when it ended: stopped them", run.name);
    }
    // With every process gone, the output pipes close; the readers end.
    let deadline = Instant::now() + Duration::from_secs(2);
    for r in readers {
        while !r.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if r.is_finished() {
            let _ = r.join();
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &Path, script: &str, env: &[(String, String)], max: Duration) -> RunOutcome {
        let command = vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()];
        let run = Run { command: &command, dir, env, max, name: "t", action: 1, launcher: &[] };
        run_program(&run, &mut |_| {}).unwrap()
    }

    #[test]
    fn programs_run_with_their_environment_and_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let env = vec![("DM_PACKAGE_NAME".to_string(), "tools".to_string())];
        let check = "test \"$DM_PACKAGE_NAME\" = tools && test \"$PWD\" = \"$HOME\" && test -z \"$SECRET_FROM_AGENT\"";
        assert_eq!(sh(d, check, &env, Duration::from_secs(10)), RunOutcome::Exited(0));
        assert_eq!(sh(d, "exit 7", &[], Duration::from_secs(10)), RunOutcome::Exited(7));
        let start = Instant::now();
        assert_eq!(sh(d, "sleep 30", &[], Duration::from_millis(300)), RunOutcome::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(10));
        // A program ignoring SIGTERM is killed.
        let stubborn = "trap '' TERM; sleep 30";
        assert_eq!(sh(d, stubborn, &[], Duration::from_millis(300)), RunOutcome::TimedOut);
    }

    #[test]
    fn nothing_a_program_started_outlives_it() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child-pid");
        let script = format!(
            "trap '' TERM; (trap '' TERM; sleep 300) & echo $! > '{}'; exit 0",
            marker.display()
        );
        let mut seen = None;
        let command = vec!["/bin/sh".to_string(), "-c".to_string(), script];
        let run = Run {
            command: &command,
            dir: dir.path(),
            env: &[],
            max: Duration::from_secs(30),
            name: "t",
            action: 2,
            launcher: &[],
        };
        let out = run_program(&run, &mut |c| seen = Some(c.clone())).unwrap();
        assert_eq!(out, RunOutcome::Exited(0));
        assert!(seen.is_some(), "the containment was told");
        let pid: i32 = std::fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'));
        assert!(!alive, "the background child outlived the program");
    }

    #[test]
    fn output_lines_are_capped_escaped_and_never_buffered_whole() {
        let mut lines = Vec::new();
        let mut cutter = LineCutter::new(|l: &str| lines.push(l.to_string()));
        // 50 MB without a newline, then a line with a NUL and invalid UTF-8.
        let block = vec![b'a'; 1 << 20];
        for _ in 0..50 {
            cutter.feed(&block);
            assert!(cutter.line.capacity() <= 4 * MAX_LINE, "the line buffer grew");
        }
        cutter.feed(b"\nnul\0here \xff\xfe\tdone\nlast");
        cutter.finish();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), MAX_LINE + " …(line cut)".len());
        assert!(lines[0].ends_with("…(line cut)"));
        assert_eq!(lines[1], "nul\\x00here \\xff\\xfe\\tdone");
        assert_eq!(lines[2], "last");
    }
}
