//! A package's health check: the program its publisher signed to say whether the device is
//! well with the package installed (`dmpack package --health-check`). It runs after another of
//! the package's programs succeeded; when a rollout asks for a soak (`dm.soak`), the action
//! stays open, `proceeding`, and the check runs again at the end of the soak before the action
//! closes, so the management point counts the device succeeded only once it has been well for
//! the whole soak (docs/rollouts.md).

use std::path::Path;

use dm_shared::ddi::{Chunk, Execution};
use dm_shared::message::MessageId;
use dm_shared::programs::SignedProgram;
use dm_shared::vocab::PackageKind;
use dm_shared::{StatusCode, clock};
use log::{debug, info};

use super::action::report_of;
use super::content;
use super::plan;
use super::state::{ActionRecord, Stage};
use super::worker::Worker;
use crate::error::Result;

/// Why a health check did not pass: the text and details of the failure report.
type Failure = (String, Vec<String>);

impl Worker<'_> {
    /// After a program of the package in `dir` succeeded (`installed` says so): runs the
    /// package's health check `check`; on success closes the action, or keeps it open for the
    /// soak the rollout asks.
    pub(super) fn check_after_install(
        &mut self,
        rec: &mut ActionRecord,
        chunk: &Chunk,
        dir: &Path,
        check: &SignedProgram,
        installed: String,
    ) -> Result<()> {
        if let Err((text, details)) = self.health_check(rec, chunk, dir, check) {
            let text = format!("{installed}, but {text}");
            return self.finish(
                rec,
                MessageId::HEALTH_CHECK_FAILED,
                StatusCode::DM_E_HEALTH_CHECK,
                text,
                details,
            );
        }
        let soak = plan::soak(chunk);
        let text = format!("{installed}; its health check {} passed", check.name);
        if soak == 0 {
            return self.finish(rec, MessageId::PROGRAM_SUCCEEDED, StatusCode::S_OK, text, vec![]);
        }
        let until = clock::unix_secs(self.ctx.clock.now()).saturating_add(soak) as i64;
        rec.stage = Stage::Soaking;
        rec.soak_until = Some(until);
        rec.save(self.ctx)?;
        let text = format!(
            "{text}; it runs again at the end of the {soak} s soak, {}",
            clock::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(until as u64))
        );
        info!("action {}: {text}", rec.id);
        self.progress(rec.id, Execution::Proceeding, MessageId::HEALTH_CHECK_SOAKING, text)
    }

    /// A soaking action offered again: once its soak is over, the health check runs again
    /// (from the package as installed, verified again first) and the action closes.
    pub(super) fn soak_check(
        &mut self,
        rec: &mut ActionRecord,
        chunk: &Chunk,
        kind: Option<PackageKind>,
    ) -> Result<()> {
        let now = clock::unix_secs(self.ctx.clock.now()) as i64;
        let until = rec.soak_until.unwrap_or(now);
        if now < until {
            debug!("action {}: soaking for {} s more", rec.id, until - now);
            return Ok(());
        }
        let dir = content::promoted_dir(self.ctx, rec.id, &rec.package, &rec.version);
        let verified = content::verify_dir(self.ctx, &dir, kind);
        let check = match &verified {
            Ok(v) => v.manifest.health_check().cloned(),
            Err(_) => None,
        };
        let outcome = match (verified, check) {
            (Err(e), _) => Err((format!("its package cannot be verified again: {e}"), vec![])),
            (Ok(_), None) => Err(("its package no longer signs a health check".into(), vec![])),
            (Ok(_), Some(check)) => {
                self.health_check(rec, chunk, &dir, &check).map(|()| check.name)
            }
        };
        match outcome {
            Ok(name) => {
                let text = format!(
                    "{} {}: its health check {name} passed again at the end of the soak",
                    rec.package, rec.version
                );
                self.finish(rec, MessageId::HEALTH_CHECK_CONFIRMED, StatusCode::S_OK, text, vec![])
            }
            Err((text, details)) => {
                let text =
                    format!("{} {} at the end of the soak: {text}", rec.package, rec.version);
                self.finish(
                    rec,
                    MessageId::HEALTH_CHECK_FAILED,
                    StatusCode::DM_E_HEALTH_CHECK,
                    text,
                    details,
                )
            }
        }
    }

    /// Runs the health check `check` of the package in `dir`.
    fn health_check(
        &mut self,
        rec: &mut ActionRecord,
        chunk: &Chunk,
        dir: &Path,
        check: &SignedProgram,
    ) -> std::result::Result<(), Failure> {
        let max = check.max_run_time;
        let outcome = self.launch(rec, chunk, dir, check, max);
        let (_, code, text, details) = report_of(&check.name, max, outcome);
        if code == StatusCode::S_OK {
            return Ok(());
        }
        Err((format!("its health check {text}"), details))
    }
}
