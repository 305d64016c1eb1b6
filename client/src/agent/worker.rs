//! The agent's worker: the device, its settings, its session with the management point and
//! its outbox, and how every action reports (progress, and a final report that is queued
//! durably before the action's record is marked done). The stages of an action are
//! `action.rs`'s, the client upgrade's `upgrade.rs`'s, configuration items' `baseline.rs`'s,
//! each an `impl Worker` of its own above this file.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dm_shared::ddi::Execution;
use dm_shared::fs as dmfs;
use dm_shared::message::{MessageId, StatusMessage};
use dm_shared::outbox::Outbox;
use dm_shared::{Context, Settings, StatusCode, clock};
use log::{error, info, warn};

use super::content::cache_dir;
use super::session::Session;
use super::state::{ActionRecord, Stage};
use crate::error::Result;

/// The most messages the outbox keeps (final results are never dropped).
pub const MAX_OUTBOX: usize = 1000;

/// Works on actions.
pub struct Worker<'a> {
    /// The device.
    pub ctx: &'a Context,
    /// Its settings.
    pub settings: &'a Settings,
    /// The management point.
    pub session: &'a mut Session,
    /// Where reports wait.
    pub outbox: Outbox,
    /// Set on SIGTERM.
    pub stop: Arc<AtomicBool>,
    /// The device's controller id.
    pub controller_id: String,
}

impl Worker<'_> {
    /// Now, for reports.
    pub fn now(&self) -> String {
        clock::rfc3339(self.ctx.clock.now())
    }

    /// Whether an agent stop was requested.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Queues a report durably, before anything tries to send it.
    pub(super) fn queue(&self, m: &StatusMessage) -> Result<()> {
        self.outbox.push(m)?;
        let _ = self.outbox.compact(MAX_OUTBOX);
        Ok(())
    }

    /// Queues a report that no action waits on; a failure to queue is logged.
    pub fn report(&self, m: &StatusMessage) {
        if let Err(e) = self.queue(m) {
            warn!("status message {} not queued: {e}", m.message_id);
        }
    }

    /// Queues a progress report on an action.
    pub(super) fn progress(
        &self,
        action: u64,
        exec: Execution,
        id: MessageId,
        text: String,
    ) -> Result<()> {
        let m =
            StatusMessage::feedback(action, exec, id, StatusCode::S_OK, self.now(), text, false);
        self.queue(&m)
    }

    /// The final report of an action: queued, then the record marked done.
    pub fn finish(
        &self,
        rec: &mut ActionRecord,
        id: MessageId,
        code: StatusCode,
        text: String,
        details: Vec<String>,
    ) -> Result<()> {
        if code.is_failure() {
            error!("action {} ({} {}): {code}: {text}", rec.id, rec.package, rec.version);
        } else {
            info!("action {} ({} {}): {text}", rec.id, rec.package, rec.version);
        }
        let mut m = self.final_message(rec.id, id, code, text.clone());
        m.details = details;
        self.queue(&m)?;
        rec.final_report = Some(m);
        rec.stage = Stage::Done;
        rec.result = Some(text);
        rec.success = Some(!code.is_failure());
        rec.save(self.ctx)?;
        let _ = dmfs::remove_dir_all(&cache_dir(self.ctx, rec.id));
        Ok(())
    }

    /// The closing feedback of an action, with the report id it keeps on every resend.
    pub(super) fn final_message(
        &self,
        action: u64,
        id: MessageId,
        code: StatusCode,
        text: String,
    ) -> StatusMessage {
        let mut m =
            StatusMessage::feedback(action, Execution::Closed, id, code, self.now(), text, true);
        m.report_id = dm_shared::outbox::new_report_id();
        m
    }
}
