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
use crate::status::StatusCode;

/// The largest outbox entry read back.
pub const MAX_ENTRY_BYTES: u64 = 64 * 1024;

/// Numeric status message ids, in the style of the source documents' status messages.
/// Documented in `docs/status-messages.md`.
pub mod message_id {
    /// DMInstaller: the device refused the publisher certificate (locked device).
    pub const INSTALLER_CERT_REFUSED: u32 = 11001;
}

/// One status message.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StatusMessage {
    /// The numeric message id (see [`message_id`]).
    pub message_id: u32,
    /// The outcome.
    pub code: StatusCode,
    /// Which program sent it (`DMInstaller`, `DMClientSetup`, `DMSvc`).
    pub component: String,
    /// When it happened (RFC 3339).
    pub time: String,
    /// What happened, for people.
    pub text: String,
    /// The DDI action it reports on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<u64>,
    /// The DDI execution status (`proceeding`, `closed`, …) when it is feedback on an action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<String>,
    /// Whether it is the final word on its action or operation; final messages are never
    /// dropped to make room.
    #[serde(default)]
    pub final_result: bool,
    /// More lines of detail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

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

    /// Removes a message the management point acknowledged.
    pub fn remove(&self, seq: u64) -> Result<bool> {
        dmfs::remove_file(&self.dir.join(entry_name(seq)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u32) -> StatusMessage {
        StatusMessage {
            message_id: id,
            code: StatusCode::E_ACCESSDENIED,
            component: "DMInstaller".into(),
            time: "2026-11-24T13:20:01Z".into(),
            text: "Access Denied (0x80070005)".into(),
            action_id: None,
            execution: None,
            final_result: true,
            details: vec![],
        }
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
        assert_eq!(p.iter().map(|(_, m)| m.message_id).collect::<Vec<_>>(), [1, 2]);
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
    fn damaged_entries_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&DeviceLayout::new(dir.path()));
        ob.push(&msg(1)).unwrap();
        std::fs::write(ob.dir().join(entry_name(2)), b"{not json").unwrap();
        std::fs::write(ob.dir().join("notes.txt"), b"x").unwrap();
        assert_eq!(ob.pending().unwrap().len(), 1);
    }
}
