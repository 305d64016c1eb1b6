//! How the agent waits between polls without waking: one `poll(2)` on a socket its stop
//! signals write to and on an inotify descriptor watching the folders it must react to (the
//! requests of `dmsvc run`, the files configuration items watch), with the time to its next
//! piece of work as the timeout. Nothing wakes it on a period: an idle agent costs nothing until
//! there is something to do (docs/agent.md, Performance).
//!
//! Where inotify cannot be had (no kernel support, the watch limit reached), the agent looks
//! every [`FALLBACK_LOOK`] instead, and says so once.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::inotify::{self, CreateFlags, WatchFlags};

use crate::error::{Error, Result};

/// How often the agent looks for changes when inotify is not available.
pub const FALLBACK_LOOK: Duration = Duration::from_secs(1);

/// What ended a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The time was up.
    Timeout,
    /// A stop signal came (the stop flag is set).
    Signal,
    /// Something changed in a watched folder (or, without inotify, it is time to look).
    Changed,
}

/// The agent's way of waiting.
#[derive(Debug)]
pub struct Waker {
    signals: UnixStream,
    inotify: Option<OwnedFd>,
    watched: BTreeSet<PathBuf>,
    /// How many times a wait returned, for tests and the idle benchmark's check.
    wakes: u64,
}

/// The changes that wake the agent in a watched folder: a file written and closed, moved in or
/// out, made, removed, or its mode changed.
fn interesting() -> WatchFlags {
    WatchFlags::CLOSE_WRITE
        | WatchFlags::MOVED_TO
        | WatchFlags::MOVED_FROM
        | WatchFlags::CREATE
        | WatchFlags::DELETE
        | WatchFlags::ATTRIB
        | WatchFlags::MODIFY
}

impl Waker {
    /// Sets `stop` on SIGTERM and SIGINT, and makes them end a wait.
    pub fn new(stop: &Arc<AtomicBool>) -> Result<Waker> {
        let service = |reason: String| Error::Service { action: "start", reason };
        let (read, write) = UnixStream::pair()
            .map_err(|e| service(format!("cannot make the signal socket: {e}")))?;
        for s in [&read, &write] {
            s.set_nonblocking(true)
                .map_err(|e| service(format!("cannot make the signal socket: {e}")))?;
        }
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            let cant = |e: std::io::Error| service(format!("cannot handle signal {sig}: {e}"));
            signal_hook::flag::register(sig, Arc::clone(stop)).map_err(cant)?;
            signal_hook::low_level::pipe::register(sig, write.try_clone().map_err(cant)?)
                .map_err(cant)?;
        }
        let inotify = match inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK) {
            Ok(fd) => Some(fd),
            Err(e) => {
                log::warn!(
                    "inotify is not available ({e}): the agent looks for changes every {} s",
                    FALLBACK_LOOK.as_secs()
                );
                None
            }
        };
        Ok(Waker { signals: read, inotify, watched: BTreeSet::new(), wakes: 0 })
    }

    /// Watches each of `dirs` that exists and is not watched yet.
    pub fn watch(&mut self, dirs: impl IntoIterator<Item = PathBuf>) {
        let Some(fd) = &self.inotify else { return };
        for dir in dirs {
            if self.watched.contains(&dir) || !dir.is_dir() {
                continue;
            }
            match inotify::add_watch(fd, &dir, interesting()) {
                Ok(_) => {
                    log::debug!("watching {}", dir.display());
                    self.watched.insert(dir);
                }
                Err(e) => {
                    log::warn!(
                        "cannot watch {} ({e}): the agent looks for changes every {} s",
                        dir.display(),
                        FALLBACK_LOOK.as_secs()
                    );
                    self.inotify = None;
                    return;
                }
            }
        }
    }

    /// Whether `dir` is watched.
    pub fn watches(&self, dir: &Path) -> bool {
        self.watched.contains(dir)
    }

    /// How many waits have ended.
    pub fn wakes(&self) -> u64 {
        self.wakes
    }

    /// Waits until `timeout` passes, a stop signal comes, or a watched folder changes.
    pub fn wait(&mut self, timeout: Duration) -> Wake {
        let timeout = match self.inotify {
            Some(_) => timeout,
            None => timeout.min(FALLBACK_LOOK),
        };
        // Capped at a day: the poll interval never asks for more (timing::MAX_SERVER_DELAY).
        let ts = Timespec::try_from(timeout.min(Duration::from_secs(86_400)))
            .unwrap_or(Timespec { tv_sec: 86_400, tv_nsec: 0 });
        let mut fds = vec![PollFd::new(&self.signals, PollFlags::IN)];
        if let Some(fd) = &self.inotify {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        let ready = rustix::event::poll(&mut fds, Some(&ts));
        let signaled = !fds[0].revents().is_empty();
        let changed = fds.get(1).is_some_and(|f| !f.revents().is_empty());
        drop(fds);
        self.wakes += 1;
        if signaled {
            drain(&mut self.signals);
        }
        if changed {
            self.drain_events();
        }
        match ready {
            _ if signaled => Wake::Signal,
            _ if changed => Wake::Changed,
            // An interrupted poll (EINTR): whoever interrupted it is looked at by the caller.
            Err(_) => Wake::Signal,
            Ok(_) if self.inotify.is_none() => Wake::Changed,
            Ok(_) => Wake::Timeout,
        }
    }

    fn drain_events(&mut self) {
        let Some(fd) = &self.inotify else { return };
        let mut buf = [0u8; 4096];
        while matches!(rustix::io::read(fd, &mut buf), Ok(n) if n > 0) {}
    }
}

fn drain(s: &mut UnixStream) {
    let mut buf = [0u8; 64];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    #[test]
    fn a_wait_ends_at_its_time_at_a_change_and_at_a_signal() {
        let stop = Arc::new(AtomicBool::new(false));
        let mut w = Waker::new(&stop).unwrap();
        let dir = tempfile::tempdir().unwrap();
        w.watch([dir.path().to_path_buf(), dir.path().join("not yet")]);
        assert!(w.watches(dir.path()) && !w.watches(&dir.path().join("not yet")));

        let t = Instant::now();
        assert_eq!(w.wait(Duration::from_millis(300)), Wake::Timeout);
        assert!(t.elapsed() >= Duration::from_millis(250));
        assert_eq!(w.wakes(), 1, "one wake for one wait, none in between");

        let path = dir.path().join("request");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            std::fs::write(path, b"1").unwrap();
        });
        assert_eq!(w.wait(Duration::from_secs(30)), Wake::Changed);
        writer.join().unwrap();
        // The events were read: the next wait is quiet again.
        assert_eq!(w.wait(Duration::from_millis(50)), Wake::Timeout);

        let t = Instant::now();
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM)
            .unwrap();
        assert_eq!(w.wait(Duration::from_secs(30)), Wake::Signal);
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(stop.load(Ordering::Relaxed));
    }
}
