//! Copying a file to a device so that a cut connection costs nothing: the bytes go to
//! `<file>.<hash>.partial` (named by the content, so a copy of another version is never
//! appended to), which the next connection appends to; the file takes its name only once the
//! device's own `sha256sum` of it matches the desktop's. The folder is made by root for root
//! (`0700`, not a link): nobody else on the device can plant a link where the copy goes.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use dm_shared::digest;
use dm_shared::fs as dmfs;
use dm_shared::tether::SshTarget;
use log::{info, warn};

use crate::error::{Error, Result};
use crate::ssh::{Ssh, quote};

/// The most bytes a copied file may have (a client deployment is some MiB).
pub const MAX_FILE: u64 = 1 << 30;

/// What `begin` found on the device.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// The file is there, complete.
    Complete,
    /// This many bytes of it are in `<file>.partial`.
    Partial(u64),
}

fn parse_found(text: &str) -> Option<Found> {
    match text.trim() {
        "complete" => Some(Found::Complete),
        n => n.parse().ok().map(Found::Partial),
    }
}

/// Reads a local file from `offset`, naming a test failpoint halfway through the copy.
struct Feed {
    file: std::fs::File,
    sent: u64,
    half: u64,
}

impl Read for Feed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let len = buf.len();
        let room = if self.sent < self.half { (self.half - self.sent) as usize } else { len };
        let n = self.file.read(&mut buf[..len.min(room.max(1))])?;
        self.sent += n as u64;
        if self.sent == self.half && n > 0 {
            dm_shared::failpoint::hit("tether-copy-half").map_err(std::io::Error::other)?;
        }
        Ok(n)
    }
}

/// The partial copy of `remote` whose content will have SHA-256 `sha`.
fn partial_name(remote: &str, sha: &str) -> String {
    format!("{remote}.{}.partial", &sha[..16.min(sha.len())])
}

/// Copies `local` to `remote` (a path on the device), resuming a copy a cut connection left.
/// `expect`: the SHA-256 the file was verified with on the desktop; a file that changed since
/// is refused.
pub fn push(
    ssh: &Ssh,
    target: &SshTarget,
    local: &Path,
    remote: &str,
    expect: Option<&str>,
    deadline: Duration,
) -> Result<()> {
    let hashed = digest::hash_file(local, MAX_FILE)?;
    let (size, sha) = (hashed.size, hashed.sha256);
    if expect.is_some_and(|e| e != sha) {
        return Err(Error::NoBundle(format!(
            "{} changed after it was verified; nothing was copied",
            local.display()
        )));
    }
    let partial = partial_name(remote, &sha);
    let dir = remote.rsplit_once('/').map_or(".", |(d, _)| d);
    let begin = format!(
        "mkdir -p -m 700 {d} && [ ! -L {d} ] && [ -O {d} ] && chmod 700 {d} || {{ echo unsafe; exit 0; }}; \
         if [ -f {f} ] && [ \"$(sha256sum < {f} | cut -d' ' -f1)\" = {sha} ]; then echo complete; \
         elif [ -f {p} ]; then wc -c < {p}; else echo 0; fi",
        f = quote(remote),
        p = quote(&partial),
        d = quote(dir),
    );
    let out = ssh.run(target, &begin, None, deadline)?;
    if out.text().trim() == "unsafe" {
        return Err(Error::Remote {
            target: target.to_string(),
            what: format!("preparing {dir}"),
            reason: "it is a link or belongs to another user; nothing was copied".into(),
        });
    }
    let found =
        parse_found(&out.text()).filter(|_| out.code == 0).ok_or_else(|| Error::Remote {
            target: target.to_string(),
            what: format!("looking at {remote}"),
            reason: format!("exit {}: {}", out.code, out.stderr.trim()),
        })?;
    let mut have = match found {
        Found::Complete => {
            info!("{target}: {remote} is already there ({size} bytes, SHA-256 matches)");
            return Ok(());
        }
        Found::Partial(n) => n,
    };
    if have > size {
        warn!(
            "{target}: {partial} holds {have} bytes, more than the {size} of the file: starting over"
        );
        have = 0;
    }
    if have > 0 {
        info!("{target}: resuming the copy of {} at byte {have} of {size}", local.display());
    } else {
        info!("{target}: copying {} ({size} bytes) to {remote}", local.display());
    }
    let mut file = dmfs::open_regular(local)?;
    file.seek(SeekFrom::Start(have)).map_err(dmfs::io_err("read", local))?;
    let half = have + (size - have) / 2;
    let feed = Feed { file, sent: have, half };
    let redirect = if have == 0 { ">" } else { ">>" };
    let send = format!("cat {redirect} {}", quote(&partial));
    let out = ssh.run(target, &send, Some(Box::new(feed.take(size - have))), deadline)?;
    if out.code != 0 {
        return Err(Error::Remote {
            target: target.to_string(),
            what: format!("writing {partial}"),
            reason: format!("exit {}: {}", out.code, out.stderr.trim()),
        });
    }
    finish(ssh, target, remote, &sha, deadline)
}

/// Names the copy once its hash on the device matches; a copy that does not match is removed
/// so the next connection starts over.
fn finish(
    ssh: &Ssh,
    target: &SshTarget,
    remote: &str,
    sha: &str,
    deadline: Duration,
) -> Result<()> {
    let partial = partial_name(remote, sha);
    let check = format!(
        "if [ \"$(sha256sum < {p} | cut -d' ' -f1)\" = {sha} ]; then mv -f {p} {f} && echo ok; \
         else rm -f {p}; echo mismatch; fi",
        p = quote(&partial),
        f = quote(remote),
    );
    let out = ssh.run(target, &check, None, deadline)?;
    match out.text().trim() {
        "ok" => Ok(()),
        other => Err(Error::Remote {
            target: target.to_string(),
            what: format!("checking the copy of {remote}"),
            reason: if other == "mismatch" {
                "its SHA-256 on the device differs from the desktop's; removed, the next connection copies it again".into()
            } else {
                format!("exit {}: {} {}", out.code, other, out.stderr.trim())
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_device_has_is_read_strictly() {
        assert_eq!(parse_found("complete\n"), Some(Found::Complete));
        assert_eq!(parse_found("  123\n"), Some(Found::Partial(123)));
        assert_eq!(parse_found("0"), Some(Found::Partial(0)));
        assert_eq!(parse_found("-1"), None);
        assert_eq!(parse_found("wc: not found"), None);
    }

    #[test]
    fn the_feed_passes_every_byte_from_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let mut file = std::fs::File::open(&p).unwrap();
        file.seek(SeekFrom::Start(3)).unwrap();
        let mut feed = Feed { file, sent: 3, half: 6 };
        let mut out = Vec::new();
        feed.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"3456789");
    }
}
