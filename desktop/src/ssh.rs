//! The system OpenSSH client, run with the desktop's own key and `known_hosts` and nothing
//! from any user's configuration: an unknown or changed host key is an error, never a
//! question; every call has a deadline; what a device prints is capped.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dm_shared::tether::SshTarget;

use crate::error::{Error, Result};

/// The most bytes of standard output kept from one remote command.
pub const MAX_STDOUT: u64 = 4 << 20;

/// The most bytes of standard error kept from one remote command.
const MAX_STDERR: u64 = 64 << 10;

/// How `ssh` is run for every device.
#[derive(Debug, Clone)]
pub struct Ssh {
    /// The desktop's private key.
    pub key: PathBuf,
    /// The desktop's `known_hosts`: the only host keys accepted.
    pub known_hosts: PathBuf,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

/// What a remote command did.
#[derive(Debug)]
pub struct Output {
    /// Its exit code.
    pub code: i32,
    /// Its standard output (capped at [`MAX_STDOUT`]).
    pub stdout: Vec<u8>,
    /// Its standard error (capped).
    pub stderr: String,
}

impl Output {
    /// Standard output as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// A path as ssh reads it in `-i` and `-o`: `%` escaped (ssh expands `%` tokens there).
/// Desktop roots holding `"` are refused (`scan::ssh`), so the quotes hold.
fn escape_tokens(p: &std::path::Path) -> String {
    p.display().to_string().replace('%', "%%")
}

/// Quotes `s` for the remote POSIX shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Bytes to send to the remote command's standard input.
pub type Input = Box<dyn Read + Send>;

fn reader<R: Read + Send + 'static>(r: Option<R>, cap: u64) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(r) = r {
            let _ = r.take(cap).read_to_end(&mut out);
        }
        out
    })
}

impl Ssh {
    fn command(&self, target: &SshTarget, script: &str) -> Command {
        let secs = self.connect_timeout.as_secs().max(1);
        let mut cmd = Command::new("ssh");
        cmd.arg("-F").arg("/dev/null").arg("-T").arg("-i").arg(escape_tokens(&self.key));
        let known = format!("UserKnownHostsFile=\"{}\"", escape_tokens(&self.known_hosts));
        for opt in [
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            "GlobalKnownHostsFile=/dev/null",
            "IdentitiesOnly=yes",
            "UpdateHostKeys=no",
            "ServerAliveInterval=5",
            "ServerAliveCountMax=2",
            "LogLevel=ERROR",
        ] {
            cmd.arg("-o").arg(opt);
        }
        cmd.arg("-o").arg(known).arg("-o").arg(format!("ConnectTimeout={secs}"));
        cmd.arg("-p").arg(target.port.to_string()).arg("-l").arg(&target.user);
        cmd.arg("--").arg(&target.host).arg(script);
        cmd
    }

    /// Runs `script` with the device's shell, feeding it `input`, within `deadline`.
    /// An SSH failure (exit 255: host key, connection, authentication) is an error; the remote
    /// command's own exit code is the caller's to judge.
    pub fn run(
        &self,
        target: &SshTarget,
        script: &str,
        input: Option<Input>,
        deadline: Duration,
    ) -> Result<Output> {
        let mut cmd = self.command(target, script);
        cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| Error::Connection {
            target: target.to_string(),
            reason: format!("cannot run ssh (is OpenSSH's client installed?): {e}"),
        })?;
        let feeder = match (input, child.stdin.take()) {
            (Some(mut input), Some(mut stdin)) => Some(std::thread::spawn(move || {
                std::io::copy(&mut input, &mut stdin).and_then(|_| stdin.flush())
            })),
            _ => None,
        };
        let out = reader(child.stdout.take(), MAX_STDOUT);
        let err = reader(child.stderr.take(), MAX_STDERR);
        let status = wait(&mut child, deadline);
        let stdout = out.join().unwrap_or_default();
        let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
        let fed = feeder.map(|f| f.join());
        let Some(code) = status else {
            return Err(Error::Connection {
                target: target.to_string(),
                reason: format!("no answer within {} s; stopped", deadline.as_secs()),
            });
        };
        if code == 255 {
            return Err(classify(target, &stderr));
        }
        // The device saw the end of its input: it must be because all of it was sent.
        match fed {
            Some(Ok(Err(e))) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(Error::Remote {
                    target: target.to_string(),
                    what: "sending a file".into(),
                    reason: format!("reading it on the desktop failed: {e}"),
                });
            }
            Some(Err(_)) => {
                return Err(Error::Remote {
                    target: target.to_string(),
                    what: "sending a file".into(),
                    reason: "the copy thread failed".into(),
                });
            }
            _ => {}
        }
        Ok(Output { code, stdout, stderr })
    }
}

/// Waits for `child` until `deadline`; kills it past the deadline (`None`).
fn wait(child: &mut Child, deadline: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status.code().unwrap_or(255)),
            Ok(None) if start.elapsed() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// What an `ssh` exit 255 means, from what it printed.
fn classify(target: &SshTarget, stderr: &str) -> Error {
    let t = target.to_string();
    if stderr.contains("IDENTIFICATION HAS CHANGED") || stderr.contains("has changed and you") {
        return Error::HostKeyChanged { target: t };
    }
    let unknown = ["Host key verification failed", "host key is known", "No matching host key"];
    if unknown.iter().any(|w| stderr.contains(w)) {
        return Error::HostKeyUnknown { target: t };
    }
    if stderr.contains("Permission denied") {
        return Error::AuthFailed { target: t };
    }
    let reason = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("ssh failed without saying why")
        .chars()
        .take(300)
        .collect();
    Error::Connection { target: t, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> SshTarget {
        "ssh://root@127.0.0.1:2222/tmp/dev".parse().unwrap()
    }

    #[test]
    fn quoting_survives_any_text() {
        assert_eq!(quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn ssh_failures_are_told_apart() {
        let changed = "@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
                       Host key verification failed.\n";
        assert!(matches!(classify(&target(), changed), Error::HostKeyChanged { .. }));
        let unknown = "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\nHost key verification failed.\n";
        assert!(matches!(classify(&target(), unknown), Error::HostKeyUnknown { .. }));
        let denied = "root@127.0.0.1: Permission denied (publickey).\n";
        assert!(matches!(classify(&target(), denied), Error::AuthFailed { .. }));
        let refused = "ssh: connect to host 127.0.0.1 port 2222: Connection refused\n";
        let e = classify(&target(), refused);
        assert!(matches!(e, Error::Connection { .. }));
        assert!(e.to_string().contains("Connection refused"), "{e}");
        assert_eq!(e.code(), dm_shared::StatusCode::DM_E_TETHER_CONNECTION);
    }

    #[test]
    fn the_command_ignores_user_configuration_and_never_asks() {
        let ssh = Ssh {
            key: "/k".into(),
            known_hosts: "/kh".into(),
            connect_timeout: Duration::from_secs(3),
        };
        let cmd = ssh.command(&target(), "uname -m");
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let joined = args.join(" ");
        for want in [
            "-F /dev/null",
            "StrictHostKeyChecking=yes",
            "BatchMode=yes",
            "UserKnownHostsFile=\"/kh\"",
            "ConnectTimeout=3",
            "-p 2222 -l root -- 127.0.0.1 uname -m",
        ] {
            assert!(joined.contains(want), "{want} in {joined}");
        }
    }
}
