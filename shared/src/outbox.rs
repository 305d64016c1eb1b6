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
    /// DMSvc: the program was received; its content is downloading.
    pub const PROGRAM_RECEIVED: u32 = 10002;
    /// DMSvc: the content was downloaded and verified.
    pub const CONTENT_DOWNLOADED: u32 = 10003;
    /// DMSvc: the program started.
    pub const PROGRAM_STARTED: u32 = 10005;
    /// DMSvc: the program failed (non-zero exit code).
    pub const PROGRAM_FAILED: u32 = 10006;
    /// DMSvc: the program completed successfully.
    pub const PROGRAM_SUCCEEDED: u32 = 10008;
    /// DMSvc: requirements not met: the program is for other platforms.
    pub const WRONG_PLATFORM: u32 = 10018;
    /// DMSvc: requirements not met: the program is for the other device class.
    pub const WRONG_DEVICE_CLASS: u32 = 10019;
    /// DMSvc: the content could not be downloaded (network, size, hash, path, disk space).
    pub const DOWNLOAD_FAILED: u32 = 10034;
    /// DMSvc: the package is not signed by a trusted publisher; nothing was run.
    pub const PACKAGE_UNTRUSTED: u32 = 10035;
    /// DMSvc: an available program waits for the device's user (`dmsvc run`).
    pub const PROGRAM_AVAILABLE: u32 = 10037;
    /// DMSvc: a mandatory program waits for its maintenance window.
    pub const WAITING_FOR_WINDOW: u32 = 10038;
    /// DMSvc: a download-only advertisement's content is on the device.
    pub const DOWNLOAD_ONLY_DONE: u32 = 10039;
    /// DMSvc: the advertisement was canceled before the program started.
    pub const CANCELED: u32 = 10040;
    /// DMSvc: the cancellation came after the program started and is rejected.
    pub const CANCEL_REJECTED: u32 = 10041;
    /// DMSvc: the package kind is not supported.
    pub const UNSUPPORTED_PACKAGE: u32 = 10050;
    /// DMSvc: the program ran longer than its maximum run time and was stopped.
    pub const PROGRAM_TIMED_OUT: u32 = 10070;
    /// DMSvc: the agent stopped while the program ran; it is not run again.
    pub const PROGRAM_INTERRUPTED: u32 = 10071;
    /// DMSvc: a client upgrade started (setup reports the result).
    pub const CLIENT_UPGRADE_STARTED: u32 = 11020;
    /// DMSvc: a client upgrade finished (success or failure from setup's result).
    pub const CLIENT_UPGRADE_DONE: u32 = 11021;
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
    /// Whether it answers a cancellation (`cancelAction/{id}/feedback`) rather than reporting
    /// on the deployment.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel: bool,
}

impl StatusMessage {
    /// A message about an action (DDI feedback).
    pub fn feedback(
        action_id: u64,
        execution: &str,
        message_id: u32,
        code: StatusCode,
        time: String,
        text: String,
        final_result: bool,
    ) -> StatusMessage {
        StatusMessage {
            message_id,
            code,
            component: "DMSvc".into(),
            time,
            text,
            action_id: Some(action_id),
            execution: Some(execution.into()),
            final_result,
            details: Vec::new(),
            cancel: false,
        }
    }
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
            cancel: false,
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
    fn compaction_drops_oldest_progress_never_final_results() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&DeviceLayout::new(dir.path()));
        for i in 0..6 {
            ob.push(&StatusMessage { final_result: i % 3 == 0, ..msg(i) }).unwrap();
        }
        // 0 and 3 are final; 1, 2, 4, 5 progress.
        assert_eq!(ob.compact(3).unwrap(), 3);
        let ids: Vec<u32> = ob.pending().unwrap().iter().map(|(_, m)| m.message_id).collect();
        assert_eq!(ids, [0, 3, 5]);
        assert_eq!(ob.compact(1).unwrap(), 1, "only progress goes");
        let ids: Vec<u32> = ob.pending().unwrap().iter().map(|(_, m)| m.message_id).collect();
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
