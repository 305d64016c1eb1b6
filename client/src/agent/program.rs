//! Running a program of a package: in the package folder, with only the documented
//! environment, its output logged, and stopped at its maximum run time.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use log::{info, warn};

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

/// Runs the signed `command` (an argument vector: a file of the package, relative to `dir`,
/// or an absolute program, then its arguments; no shell) in `dir`, with only the given
/// environment (plus PATH, HOME and LANG), its output logged line by line, stopped (SIGTERM,
/// then SIGKILL after 5 s) when it runs past `max`.
pub fn run_program(
    command: &[String],
    dir: &Path,
    env: &[(String, String)],
    max: Duration,
    name: &str,
) -> std::io::Result<RunOutcome> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let Some((program, args)) = command.split_first() else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"));
    };
    let program =
        if program.starts_with('/') { Path::new(program).to_path_buf() } else { dir.join(program) };
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", dir)
        .env("LANG", "C.UTF-8")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let mut readers = Vec::new();
    for (stream, label) in [
        (child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>), "out"),
        (child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>), "err"),
    ] {
        let Some(stream) = stream else { continue };
        let name = name.to_string();
        readers.push(std::thread::spawn(move || {
            let mut lines = 0usize;
            for line in std::io::BufReader::new(stream).split(b'\n').map_while(|l| l.ok()) {
                lines += 1;
                if lines <= 2000 {
                    let text: String = String::from_utf8_lossy(&line).chars().take(1000).collect();
                    info!("program {name} [{label}]: {}", text.trim_end());
                } else if lines == 2001 {
                    info!("program {name} [{label}]: (further output not logged)");
                }
            }
        }));
    }
    let start = Instant::now();
    let pgid = rustix::process::Pid::from_raw(child.id() as i32);
    let outcome = loop {
        if let Some(status) = child.try_wait()? {
            break match (status.code(), status.signal()) {
                (Some(c), _) => RunOutcome::Exited(c),
                (None, Some(s)) => RunOutcome::Signaled(s),
                (None, None) => RunOutcome::Signaled(0),
            };
        }
        if start.elapsed() > max {
            warn!("program {name} ran longer than {} s: stopping it", max.as_secs());
            if let Some(p) = pgid {
                let _ = rustix::process::kill_process_group(p, rustix::process::Signal::TERM);
            }
            let grace = Instant::now();
            while child.try_wait()?.is_none() {
                if grace.elapsed() > Duration::from_secs(5) {
                    if let Some(p) = pgid {
                        let _ =
                            rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            break RunOutcome::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // A program that left children holding its output open must not hang the agent.
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

    #[test]
    fn programs_run_with_their_environment_and_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let env = vec![("DM_PACKAGE_NAME".to_string(), "tools".to_string())];
        let sh = |script: &str| vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()];
        let out = run_program(&sh("test \"$DM_PACKAGE_NAME\" = tools && test \"$PWD\" = \"$HOME\" && test -z \"$SECRET_FROM_AGENT\""), dir.path(), &env, Duration::from_secs(10), "t").unwrap();
        assert_eq!(out, RunOutcome::Exited(0));
        assert_eq!(
            run_program(&sh("exit 7"), dir.path(), &[], Duration::from_secs(10), "t").unwrap(),
            RunOutcome::Exited(7)
        );
        let start = Instant::now();
        assert_eq!(
            run_program(&sh("sleep 30"), dir.path(), &[], Duration::from_millis(300), "t").unwrap(),
            RunOutcome::TimedOut
        );
        assert!(start.elapsed() < Duration::from_secs(10));
        // A program ignoring SIGTERM is killed.
        assert_eq!(
            run_program(
                &sh("trap '' TERM; sleep 30"),
                dir.path(),
                &[],
                Duration::from_millis(300),
                "t"
            )
            .unwrap(),
            RunOutcome::TimedOut
        );
    }
}
