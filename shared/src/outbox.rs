//! The persistent outbox: status messages waiting for the management point.
//!
//! Every status message (and every feedback on an action) is written here before anything
//! tries to send it, and removed only after the management point acknowledged it, so none is
//! lost across restarts, outages or power cuts. Entries are JSON files named by a sequence
//! number (`0000000000000042.json`) and are sent in that order. Programs other than the agent
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
    format!("{seq:016}.json")
}

fn parse_entry_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    (digits.len() == 16 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())?
}

impl Outbox {
    /// The outbox of the device.
    pub fn open(layout: &DeviceLayout) -> Outbox {
        Outbox { dir: layout.outbox_dir() }
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn sequence_numbers(&self) -> Result<Vec<u64>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(dmfs::io_err("list", &self.dir)(e)),
        };
        let mut seqs: Vec<u64> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| parse_entry_name(&e.file_name().to_string_lossy()))
            .collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// Adds a message durably; returns its sequence number. Safe against concurrent writers.
    pub fn push(&self, msg: &StatusMessage) -> Result<u64> {
        dmfs::create_dir_all(&self.dir, dmfs::MODE_DIR_PRIVATE)?;
        let body = serde_json::to_vec_pretty(msg)
            .map_err(|e| Error::InvalidData { path: self.dir.clone(), reason: e.to_string() })?;
        let mut seq = self.sequence_numbers()?.last().copied().unwrap_or(0) + 1;
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
        for seq in self.sequence_numbers()? {
            let path = self.dir.join(entry_name(seq));
            let parsed = dmfs::read_capped(&path, MAX_ENTRY_BYTES).and_then(|b| {
                serde_json::from_slice(&b)
                    .map_err(|e| Error::InvalidData { path: path.clone(), reason: e.to_string() })
            });
            match parsed {
                Ok(m) => out.push((seq, m)),
                Err(e) => log::warn!("outbox: skipping {}: {e}", path.display()),
            }
        }
        Ok(out)
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
        dmfs::remove_file(&self.dir.join(entry_name(seq)))
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
    fn damaged_entries_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&DeviceLayout::new(dir.path()));
        ob.push(&msg(1)).unwrap();
        std::fs::write(ob.dir().join(entry_name(2)), b"{not json").unwrap();
        std::fs::write(ob.dir().join("notes.txt"), b"x").unwrap();
        assert_eq!(ob.pending().unwrap().len(), 1);
    }
}
