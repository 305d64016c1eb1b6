//! The persistent outbox: status messages waiting for the management point.
//!
//! Every status message (and every feedback on an action) is written here before anything
//! tries to send it, and removed only after the management point acknowledged it, so none is
//! lost across restarts, outages or power cuts. Entries are JSON files named by a sequence
//! number (`00000000000000000042.json`, 20 digits; older clients wrote 16, which are read the
//! same) and are sent in numeric order. Entries are opened without blocking and only if they
//! are regular files. Programs other than the agent
//! (DMInstaller on a locked device, setup) add messages here for the agent to send later.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fs as dmfs;
use crate::layout::DeviceLayout;
use crate::message::StatusMessage;

/// The largest outbox entry read back.
pub const MAX_ENTRY_BYTES: u64 = 64 * 1024;

/// The outbox folder of a device.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

fn entry_name(seq: u64) -> String {
    format!("{seq:020}.json")
}

/// The sequence number of an entry's file name: 1 to 20 digits, then `.json`.
fn parse_entry_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    (!digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())?
}

/// A new report id: 128 random bits, as 32 hex digits.
pub fn new_report_id() -> String {
    let mut b = [0u8; 16];
    // An id from the clock and counter is still unique enough if the system RNG fails.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = (t ^ u128::from(std::process::id())).to_le_bytes();
    }
    crate::pki::to_hex(&b)
}

/// The folder of the outbox that holds entries which could not be read.
pub const DAMAGED_DIR: &str = "damaged";

/// The most damaged entries kept for inspection.
const MAX_DAMAGED: usize = 64;

/// Sequence numbers beyond this are renumbered from 1 (a stray entry with a huge number must
/// not exhaust the sequence).
const RENUMBER_ABOVE: u64 = 1 << 62;

impl Outbox {
    /// The outbox of the device.
    pub fn open(layout: &DeviceLayout) -> Outbox {
        Outbox { dir: layout.outbox_dir() }
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entries, as (sequence number, file name), in order.
    fn entries(&self) -> Result<Vec<(u64, String)>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(dmfs::io_err("list", &self.dir)(e)),
        };
        let mut found: Vec<(u64, String)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                parse_entry_name(&name).map(|seq| (seq, name))
            })
            .collect();
        found.sort_unstable();
        Ok(found)
    }

    /// Renames the entries to 1, 2, 3… in their order. Each rename goes to a number no higher
    /// than the entry's own and lower than every later entry's, so the order holds at every
    /// step, even if this is interrupted.
    fn renumber(&self, entries: &[(u64, String)]) -> Result<u64> {
        log::warn!(
            "outbox: sequence numbers reached {}; renumbering {} entries from 1",
            entries.last().map_or(0, |e| e.0),
            entries.len()
        );
        let mut next = 1;
        for (seq, name) in entries {
            if *seq != next || *name != entry_name(next) {
                dmfs::rename(&self.dir.join(name), &self.dir.join(entry_name(next)))?;
            }
            next += 1;
        }
        Ok(next)
    }

    /// Adds a message durably, with a new report id unless it has one; returns its sequence
    /// number. Safe against concurrent writers.
    pub fn push(&self, msg: &StatusMessage) -> Result<u64> {
        dmfs::create_dir_all(&self.dir, dmfs::MODE_DIR_PRIVATE)?;
        let mut msg = msg.clone();
        if msg.report_id.is_empty() {
            msg.report_id = new_report_id();
        }
        let body = serde_json::to_vec_pretty(&msg)
            .map_err(|e| Error::InvalidData { path: self.dir.clone(), reason: e.to_string() })?;
        let entries = self.entries()?;
        let mut seq = match entries.last() {
            Some((last, _)) if *last > RENUMBER_ABOVE => self.renumber(&entries)?,
            Some((last, _)) => last + 1,
            None => 1,
        };
        loop {
            if dmfs::write_new(&self.dir.join(entry_name(seq)), &body, dmfs::MODE_PRIVATE)? {
                return Ok(seq);
            }
            seq += 1;
        }
    }

    /// Every waiting message, oldest first. An unreadable entry is logged and skipped (and
    /// kept on disk for inspection).
    pub fn pending(&self) -> Result<Vec<(u64, StatusMessage)>> {
        let mut out = Vec::new();
        for (seq, name) in self.entries()? {
            let path = self.dir.join(name);
            let parsed = dmfs::read_capped(&path, MAX_ENTRY_BYTES).and_then(|b| {
                let mut m: StatusMessage = serde_json::from_slice(&b).map_err(|e| {
                    Error::InvalidData { path: path.clone(), reason: e.to_string() }
                })?;
                if m.report_id.is_empty() {
                    // Queued by an older client: an id from its bytes, the same on every read.
                    m.report_id = crate::pki::sha256_hex(&b)[..32].to_string();
                }
                Ok(m)
            });
            match parsed {
                Ok(m) => out.push((seq, m)),
                Err(e) => self.set_aside(&path, &e),
            }
        }
        Ok(out)
    }

    /// Moves an entry that cannot be read into `damaged/`, logging it once: it is never sent
    /// (nor warned about) again, and stays there for whoever looks into it. Only the newest
    /// [`MAX_DAMAGED`] are kept.
    fn set_aside(&self, path: &Path, why: &Error) {
        let damaged = self.dir.join(DAMAGED_DIR);
        let name = path.file_name().unwrap_or_default();
        let moved = dmfs::create_dir_all(&damaged, dmfs::MODE_DIR_PRIVATE)
            .and_then(|_| dmfs::rename(path, &damaged.join(name)));
        match moved {
            Ok(()) => log::warn!(
                "outbox: {} cannot be read ({why}); moved to {} and not sent",
                path.display(),
                damaged.display()
            ),
            Err(e) => log::warn!(
                "outbox: skipping {}: {why}; it cannot be moved aside: {e}",
                path.display()
            ),
        }
        let Ok(entries) = std::fs::read_dir(&damaged) else { return };
        let mut kept: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        kept.sort_unstable();
        for old in kept.iter().take(kept.len().saturating_sub(MAX_DAMAGED)) {
            let _ = dmfs::remove_file(old);
        }
    }

    /// Keeps the outbox within `max_entries`: the oldest messages that are not final results
    /// (progress feedback) are dropped first; final results are never dropped. Returns how many
    /// were dropped.
    pub fn compact(&self, max_entries: usize) -> Result<usize> {
        let pending = self.pending()?;
        let excess = pending.len().saturating_sub(max_entries);
        if excess == 0 {
            return Ok(0);
        }
        let mut dropped = 0;
        for (seq, m) in pending.iter().filter(|(_, m)| !m.final_result).take(excess) {
            self.remove(*seq)?;
            log::warn!(
                "outbox full ({} messages): dropped progress message {} of action {:?} from {}",
                pending.len(),
                m.message_id,
                m.action_id,
                m.time
            );
            dropped += 1;
        }
        if dropped < excess {
            log::warn!(
                "outbox holds {} final results over its limit of {max_entries}; they are kept",
                excess - dropped
            );
        }
        Ok(dropped)
    }

    /// Removes a message the management point acknowledged.
    pub fn remove(&self, seq: u64) -> Result<bool> {
        if dmfs::remove_file(&self.dir.join(entry_name(seq)))? {
            return Ok(true);
        }
        let named = self.entries()?.into_iter().find(|(s, _)| *s == seq);
        match named {
            Some((_, name)) => dmfs::remove_file(&self.dir.join(name)),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::message::MessageId;
    use crate::status::StatusCode;

    fn msg(id: u32) -> StatusMessage {
        StatusMessage::event(
            "DMInstaller",
            MessageId(id),
            StatusCode::E_ACCESSDENIED,
            "2026-11-24T13:20:01Z".into(),
            "Access Denied (0x80070005)".into(),
        )
    }

    #[test]
    fn push_pending_remove_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&DeviceLayout::new(dir.path()));
        assert!(ob.pending().unwrap().is_empty());
        let a = ob.push(&msg(1)).unwrap();
        let b = ob.push(&msg(2)).unwrap();
        assert!(a < b);
        let p = ob.pending().unwrap();
        assert_eq!(p.iter().map(|(_, m)| m.message_id.0).collect::<Vec<_>>(), [1, 2]);
        assert!(ob.remove(a).unwrap());
        assert_eq!(ob.pending().unwrap().len(), 1);
        // Sequence numbers keep growing after removals.
        assert!(ob.push(&msg(3)).unwrap() > b);
    }

    #[test]
    fn concurrent_writers_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let layout = DeviceLayout::new(dir.path());
        std::thread::scope(|s| {
            for t in 0..4 {
                let layout = layout.clone();
                s.spawn(move || {
                    let ob = Outbox::open(&layout);
                    for i in 0..25 {
                        ob.push(&msg(t * 100 + i)).unwrap();
                    }
                });
            }
        });
        let p = Outbox::open(&layout).pending().unwrap();
        assert_eq!(p.len(), 100);
    }

    #[test]
    fn compaction_drops_oldest_progress_never_final_results() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&DeviceLayout::new(dir.path()));
        for i in 0..6 {
            ob.push(&StatusMessage { final_result: i % 3 == 0, ..msg(i) }).unwrap();
        }
        // 0 and 3 are final; 1, 2, 4, 5 progress.
        assert_eq!(ob.compact(3).unwrap(), 3);
        let ids: Vec<u32> = ob.pending().unwrap().iter().map(|(_, m)| m.message_id.0).collect();
        assert_eq!(ids, [0, 3, 5]);
        assert_eq!(ob.compact(1).unwrap(), 1, "only progress goes");
        let ids: Vec<u32> = ob.pending().unwrap().iter().map(|(_, m)| m.message_id.0).collect();
        assert_eq!(ids, [0, 3]);
    }

    #[test]
    fn old_names_huge_numbers_and_fifos_hide_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&DeviceLayout::new(dir.path()));
        ob.push(&msg(1)).unwrap();
        // An entry an older client wrote (16 digits), and a stray with a huge number.
        let body = serde_json::to_vec(&msg(2)).unwrap();
        std::fs::write(ob.dir().join("0000000000000007.json"), &body).unwrap();
        std::fs::write(
            ob.dir().join("9999999999999999.json"),
            serde_json::to_vec(&msg(3)).unwrap(),
        )
        .unwrap();
        let seq = ob.push(&msg(4)).unwrap();
        assert_eq!(seq, 10_000_000_000_000_000);
        let ids = |ob: &Outbox| -> Vec<u32> {
            ob.pending().unwrap().iter().map(|(_, m)| m.message_id.0).collect()
        };
        assert_eq!(ids(&ob), [1, 2, 3, 4], "every later report is still read, in order");
        assert!(ob.remove(7).unwrap(), "an old-style name is removed by its number");
        assert_eq!(ids(&ob), [1, 3, 4]);
        // Near the end of the sequence, the entries are renumbered and nothing is lost.
        std::fs::write(
            ob.dir().join(entry_name(u64::MAX - 1)),
            serde_json::to_vec(&msg(5)).unwrap(),
        )
        .unwrap();
        let seq = ob.push(&msg(6)).unwrap();
        assert_eq!(seq, 5);
        assert_eq!(ids(&ob), [1, 3, 4, 5, 6]);
        // A FIFO in place of an entry is skipped without blocking.
        let fifo = ob.dir().join(entry_name(99));
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert_eq!(ids(&ob), [1, 3, 4, 5, 6]);
    }

    #[test]
    fn damaged_entries_are_moved_aside_once() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&DeviceLayout::new(dir.path()));
        ob.push(&msg(1)).unwrap();
        std::fs::write(ob.dir().join(entry_name(2)), b"{not json").unwrap();
        std::fs::write(ob.dir().join("notes.txt"), b"x").unwrap();
        assert_eq!(ob.pending().unwrap().len(), 1);
        // Moved aside at the first read, so later reads (every flush) do not meet it again.
        assert!(!ob.dir().join(entry_name(2)).exists());
        assert!(ob.dir().join(DAMAGED_DIR).join(entry_name(2)).exists());
        assert!(ob.dir().join("notes.txt").exists(), "not an entry: left alone");
        assert_eq!(ob.pending().unwrap().len(), 1);
        assert_eq!(ob.push(&msg(3)).unwrap(), 2, "the damaged entry's number is free again");
    }
}
