//! What the agent does with an action, stage by stage: record it, check it ([`super::plan`]),
//! download and verify its content ([`super::content`]), then run its program or hand a client
//! upgrade to setup, reporting every stage through the outbox.
//!
//! Nothing runs unless the package's signed manifest chains to the device's roots and its
//! publisher is in the `spc` store. Transport errors are returned (the action is retried at
//! the next poll); everything the action itself gets wrong ends in a final report.

use std::path::Path;
use std::time::Duration;

use dm_shared::ddi::{self, Chunk, DeploymentBase, Execution, Rerun};
use dm_shared::fs as dmfs;
use dm_shared::manifest::{Manifest, VerifiedFolder};
use dm_shared::message::{MessageId, StatusMessage};
use dm_shared::programs::SignedProgram;
use dm_shared::vocab::PackageKind;
use dm_shared::{Context, Platform, StatusCode};
use log::{error, info, warn};

use super::contain;
use super::content::{self, cache_dir};
use super::inventory;
use super::ledger::{Ledger, PackageId};
use super::plan::{self, Refusal, Requirements, When};
use super::program::{Run, RunOutcome, run_program};
use super::state::{ActionRecord, Stage};
use super::worker::Worker;
use crate::error::{Error, Result};

/// The most times a download is retried across polls before the action fails.
const MAX_DOWNLOAD_ATTEMPTS: u32 = 8;
/// The most times a final result is sent again to a server that keeps offering its action.
const MAX_RESENDS: u32 = 5;

impl Worker<'_> {
    /// The server offers an action that ended here. Its final report waits in the outbox, or
    /// the server lost it (a restored database, a server that reuses action ids, a report the
    /// outbox dropped on 404 or 410): then it is sent again, with its report id, at most
    /// [`MAX_RESENDS`] times. Never a queue blocked for good.
    fn resend_final(&self, rec: &mut ActionRecord) -> Result<()> {
        let waiting = self
            .outbox
            .pending()?
            .iter()
            .any(|(_, m)| m.action_id == Some(rec.id) && m.final_result && !m.cancel);
        if waiting {
            log::debug!("action {} ended here; its final report is on its way", rec.id);
            return Ok(());
        }
        if rec.resent >= MAX_RESENDS {
            if rec.resent == MAX_RESENDS {
                error!(
                    "the management point still offers action {}, whose final result was sent {MAX_RESENDS} times; not sending it again",
                    rec.id
                );
                rec.resent += 1;
                rec.save(self.ctx)?;
            }
            return Ok(());
        }
        let m = match &rec.final_report {
            Some(m) => m.clone(),
            // A record from before final reports were kept, or a cancellation.
            None => {
                let canceled = rec.stage == Stage::Canceled;
                let (id, code) = match (canceled, rec.success) {
                    (true, _) => (MessageId::CANCELED, StatusCode::S_OK),
                    (false, Some(true)) => (MessageId::PROGRAM_SUCCEEDED, StatusCode::S_OK),
                    (false, _) => (MessageId::PROGRAM_FAILED, StatusCode::DM_E_PROGRAM_FAILED),
                };
                let text = rec.result.clone().unwrap_or_else(|| "ended".into());
                let m = self.final_message(rec.id, id, code, text);
                rec.final_report = Some(m.clone());
                m
            }
        };
        warn!(
            "the management point offers action {} again, which ended here ({}): sending its final result again",
            rec.id,
            rec.result.as_deref().unwrap_or("-")
        );
        self.queue(&m)?;
        rec.resent += 1;
        rec.save(self.ctx)
    }

    fn refuse(&self, rec: &mut ActionRecord, r: Refusal) -> Result<()> {
        self.finish(rec, r.message_id, r.code, r.text, vec![])
    }

    /// Refuses an action (closed, failed, with its own message and code).
    pub fn refuse_action(&self, rec: &mut ActionRecord, r: Refusal) -> Result<()> {
        self.refuse(rec, r)
    }

    /// Reports programs a previous run of the agent left running: they are not run again.
    pub fn report_interrupted(&self) -> Result<()> {
        for mut rec in ActionRecord::all(self.ctx).into_iter().filter(|r| r.stage == Stage::Running)
        {
            if let Some(jail) = rec.contained.take() {
                let left = contain::stop_all(&jail, Duration::from_secs(2));
                if left > 0 {
                    warn!(
                        "action {}: the program {} was still running after the agent stopped: stopped its {left} process(es)",
                        rec.id, rec.program
                    );
                }
            }
            self.finish(
                &mut rec,
                MessageId::PROGRAM_INTERRUPTED,
                StatusCode::DM_E_PROGRAM_FAILED,
                "the agent stopped while the program ran; it is not run again".into(),
                vec![],
            )?;
        }
        Ok(())
    }

    /// Answers a cancellation: honoured before the program started, rejected after.
    pub fn cancel(&mut self, href: &str) -> Result<()> {
        let c: ddi::Cancel = self.session.get(href)?;
        let action: u64 = c.cancel_action.stop_id.parse().map_err(|_| Error::Malformed {
            url: href.into(),
            reason: format!("stopId {:?} is not a number", c.cancel_action.stop_id),
        })?;
        let rec = ActionRecord::load(self.ctx, action);
        let started = rec.as_ref().is_some_and(|r| {
            matches!(
                r.stage,
                Stage::Running
                    | Stage::Upgrading
                    | Stage::ImageInstalling
                    | Stage::PendingReboot
                    | Stage::Soaking
                    | Stage::Done
            )
        });
        let (exec, id, code, text) = if started {
            warn!(
                "action {action} was canceled, but its program already started: rejecting the cancellation"
            );
            let text = "the program already started; it cannot be canceled";
            (Execution::Rejected, MessageId::CANCEL_REJECTED, StatusCode::S_FALSE, text)
        } else {
            info!("action {action} was canceled before its program started");
            let _ = dmfs::remove_dir_all(&cache_dir(self.ctx, action));
            let text = "canceled before the program started";
            (Execution::Canceled, MessageId::CANCELED, StatusCode::S_OK, text)
        };
        let mut m = StatusMessage::feedback(action, exec, id, code, self.now(), text.into(), true);
        m.cancel = true;
        self.queue(&m)?;
        if !started {
            let mut r = rec.unwrap_or_else(|| ActionRecord::new(action, String::new()));
            r.stage = Stage::Canceled;
            r.result = Some("canceled".into());
            r.save(self.ctx)?;
        }
        Ok(())
    }

    /// Works on the deployment at `href`. `run_requested`: the user asked to run an available
    /// program.
    pub fn deployment(&mut self, href: &str, run_requested: bool) -> Result<()> {
        let d: DeploymentBase = self.session.get(href)?;
        let action: u64 = d.id.parse().map_err(|_| Error::Malformed {
            url: href.into(),
            reason: format!("action id {:?} is not a number", d.id),
        })?;
        let classified = plan::classify(&d.deployment);
        if let Some(mut r) = ActionRecord::load(self.ctx, action) {
            match r.stage {
                Stage::Upgrading => {
                    log::debug!("action {action} is handed to setup; its report follows");
                    return Ok(());
                }
                Stage::Done | Stage::Canceled => {
                    let same = classified
                        .as_ref()
                        .map_or(true, |(c, _)| c.name == r.package && c.version == r.version);
                    if same {
                        return self.resend_final(&mut r);
                    }
                    warn!(
                        "the management point offers action {action} again, for another package than the {} {} it was here: a server that reuses action ids; a new action",
                        r.package, r.version
                    );
                    ActionRecord::forget(self.ctx, action)?;
                }
                _ => {}
            }
        }
        let (chunk, kind) = match classified {
            Ok(c) => c,
            Err(r) => {
                let mut rec = self.record(action, href, d.deployment.chunks.first())?;
                return self.refuse(&mut rec, r);
            }
        };
        let mut rec = self.record(action, href, Some(chunk))?;
        // The server may narrow the requirements before anything is downloaded (never widen:
        // the signed ones are checked once the package is verified).
        // A desktop stages client deployments for the devices it tethers: their platforms and
        // class are the devices', not the desktop's.
        let staging = self.desktop() && kind == Some(PackageKind::ClientDeployment);
        let class = self.settings.environment.device_class;
        if let Err(r) = Requirements::of_chunk(chunk).check(&Platform::current(), class) {
            if !staging {
                return self.refuse(&mut rec, r);
            }
        }
        let when = plan::schedule(&d.deployment, run_requested);
        if when == When::NotYet {
            log::debug!("action {action}: the server says not to download yet");
            return Ok(());
        }
        if rec.stage == Stage::PendingReboot {
            return self.check_restart(&mut rec);
        }
        if rec.stage == Stage::Soaking {
            return self.soak_check(&mut rec, chunk, kind);
        }
        // A system image goes to the device's update engine, whatever the server calls it.
        // Its first bytes fail as its download would (an insecure redirect ends the action; a
        // dropped connection is tried again at the next poll).
        match self.image_engine(&mut rec, chunk) {
            Ok(Some(engine)) => return self.image(&mut rec, chunk, engine, when),
            Ok(None) => {}
            Err(e) => return self.download_failed(&mut rec, e),
        }
        if rec.stage == Stage::Downloading && !self.download(&mut rec, chunk)? {
            return Ok(());
        }
        // Every time, not only after the download: a publisher revoked since is refused.
        let (folder, program) = match self.verify(&rec, chunk, kind) {
            Ok(v) => v,
            Err(r) => return self.refuse(&mut rec, r),
        };
        take_signed_identity(self.ctx, &mut rec, &folder.manifest)?;
        if rec.stage == Stage::Downloading {
            rec.stage = Stage::Downloaded;
            rec.save(self.ctx)?;
            let text = format!("{} {} downloaded and verified", rec.package, rec.version);
            self.progress(rec.id, Execution::Downloaded, MessageId::CONTENT_DOWNLOADED, text)?;
        }
        match (when, program) {
            (When::Now, None) if folder.manifest.kind == PackageKind::Configuration => {
                self.apply_configuration(&mut rec, &folder)
            }
            (When::Now, None) if self.desktop() => self.stage_for_tether(&mut rec, &folder),
            (When::Now, None) => self.upgrade(&mut rec, &folder.manifest),
            (When::Now, Some(p)) => self.run(&mut rec, chunk, &folder, &p),
            (When::DownloadOnly, _) => {
                let text = format!(
                    "{} {} is on the device (download only; not run)",
                    rec.package, rec.version
                );
                self.finish(&mut rec, MessageId::DOWNLOAD_ONLY_DONE, StatusCode::S_OK, text, vec![])
            }
            (When::WaitForUser | When::WaitForWindow | When::NotYet, _) => {
                self.wait(&mut rec, when)
            }
        }
    }

    /// Downloads the content. `Ok(false)`: the action ended (reported). The download is
    /// announced once, now that nothing refused the action before it.
    fn download(&mut self, rec: &mut ActionRecord, chunk: &Chunk) -> Result<bool> {
        if !rec.announced {
            let text = format!("received {} {}; downloading", rec.package, rec.version);
            self.progress(rec.id, Execution::Download, MessageId::PROGRAM_RECEIVED, text)?;
            rec.announced = true;
            rec.save(self.ctx)?;
        }
        let net = &self.session.net;
        if let Err(e) = content::download(self.ctx, net, rec.id, chunk, &rec.href, &self.stop) {
            self.download_failed(rec, e)?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Verifies the downloaded package and the advertisement against it: signed by a trusted
    /// publisher in the `spc` store with a manifest that signs its programs; the name, version,
    /// kind, program and command the server states are the signed ones; the device meets the
    /// signed requirements; the version does not go backwards. Returns the package and the
    /// signed program to run (none for a client upgrade).
    fn verify(
        &self,
        rec: &ActionRecord,
        chunk: &Chunk,
        kind: Option<PackageKind>,
    ) -> std::result::Result<(VerifiedFolder, Option<SignedProgram>), Refusal> {
        let untrusted = |e: Error| Refusal {
            message_id: MessageId::PACKAGE_UNTRUSTED,
            code: e.code(),
            text: format!("the package is not trusted; nothing was run: {e}"),
        };
        let folder = content::verify(self.ctx, rec.id, kind).map_err(untrusted)?;
        let m = &folder.manifest;
        let kind = kind.unwrap_or(m.kind);
        let manifest_path = folder.path_of(dm_shared::manifest::MANIFEST_FILE);
        m.require_signed_programs(&manifest_path).map_err(|e| untrusted(e.into()))?;
        let program = plan::match_advertisement(chunk, kind, m)?.cloned();
        if let Some(p) = &program {
            let class = self.settings.environment.device_class;
            Requirements::of_program(p).check(&Platform::current(), class)?;
        }
        let highest = match kind {
            PackageKind::ClientDeployment if !self.desktop() => {
                crate::installed::installed_version(self.ctx)
            }
            // A desktop stages client deployments for its tethered devices: never an older
            // one than it staged before.
            _ => Ledger::load(self.ctx).map_err(untrusted)?.highest(PackageId::of(&folder)),
        };
        let allow = chunk.meta(ddi::meta::ALLOW_DOWNGRADE) == Some("true");
        plan::check_version(&m.name, m.version, highest, allow)?;
        if let Some(h) = highest.filter(|h| m.version < *h) {
            warn!(
                "action {}: {} {} is older than the {h} this device had; the advertisement allows the downgrade",
                rec.id, m.name, m.version
            );
        }
        Ok((folder, program))
    }

    /// A program that waits for its user or its window: reported once.
    pub(super) fn wait(&mut self, rec: &mut ActionRecord, when: When) -> Result<()> {
        let (stage, id, text) = if when == When::WaitForUser {
            let text = format!(
                "{} is available; the device's user runs it with `dmsvc run {}`",
                rec.program, rec.id
            );
            (Stage::Available, MessageId::PROGRAM_AVAILABLE, text)
        } else {
            let text = format!("{} waits for its maintenance window", rec.program);
            (Stage::Downloaded, MessageId::WAITING_FOR_WINDOW, text)
        };
        rec.stage = stage;
        if !rec.waiting_reported {
            info!("action {}: {text}", rec.id);
            self.progress(rec.id, Execution::Scheduled, id, text)?;
            rec.waiting_reported = true;
        }
        rec.save(self.ctx)
    }

    /// The action's record, created (and the action's receipt reported) on first sight.
    fn record(&self, action: u64, href: &str, chunk: Option<&Chunk>) -> Result<ActionRecord> {
        if let Some(mut r) = ActionRecord::load(self.ctx, action) {
            r.href = href.to_string();
            return Ok(r);
        }
        let meta = |k: &str| chunk.and_then(|c| c.meta(k)).unwrap_or_default().to_string();
        let mut r = ActionRecord::new(action, href.to_string());
        r.package = chunk.map(|c| c.name.clone()).unwrap_or_default();
        r.version = chunk.map(|c| c.version.clone()).unwrap_or_default();
        r.program = meta(ddi::meta::PROGRAM);
        r.kind = meta(ddi::meta::ADVERTISEMENT_KIND);
        r.save(self.ctx)?;
        info!("action {action}: {} {} ({}), program {:?}", r.package, r.version, r.kind, r.program);
        Ok(r)
    }

    pub(super) fn download_failed(&self, rec: &mut ActionRecord, e: Error) -> Result<()> {
        let transient = match &e {
            Error::Network { .. } | Error::Stopped => true,
            Error::Http { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        };
        if transient {
            let attempts = content::bump_attempts(self.ctx, rec.id);
            if matches!(e, Error::Stopped) || attempts < MAX_DOWNLOAD_ATTEMPTS {
                warn!(
                    "action {}: download interrupted ({e}); it resumes on the next poll (attempt {attempts} of {MAX_DOWNLOAD_ATTEMPTS})",
                    rec.id
                );
                return Err(e);
            }
        }
        let text = format!("the content could not be downloaded: {e}");
        self.finish(rec, MessageId::DOWNLOAD_FAILED, e.code(), text, vec![])
    }

    fn run(
        &mut self,
        rec: &mut ActionRecord,
        chunk: &Chunk,
        folder: &VerifiedFolder,
        program: &SignedProgram,
    ) -> Result<()> {
        let m = &folder.manifest;
        let package = PackageId::of(folder);
        let rerun: Rerun =
            chunk.meta(ddi::meta::RERUN).and_then(|r| r.parse().ok()).unwrap_or_default();
        let last = Ledger::load(self.ctx)?.last_run(package, m.version, &program.name);
        if !rerun.runs(last) {
            let before = if last == Some(true) { "succeeded" } else { "failed" };
            let text = format!(
                "{} of {} {} {before} before; the advertisement's rerun policy ({}) says not again",
                program.name,
                m.name,
                m.version,
                rerun.as_str()
            );
            let id = MessageId::PROGRAM_NOT_RERUN;
            return self.finish(rec, id, StatusCode::S_FALSE, text, vec![]);
        }
        let dir = content::promote(self.ctx, rec.id, &rec.package, &rec.version)?;
        let max = plan::max_run_time(chunk, program);
        rec.stage = Stage::Running;
        rec.command = program.display();
        rec.save(self.ctx)?;
        let text = format!("started {} (at most {max} s)", rec.command);
        self.progress(rec.id, Execution::Proceeding, MessageId::PROGRAM_STARTED, text)?;
        // Tell the server before a long run when it can be reached.
        if let Err(e) = self.session.flush(&self.outbox) {
            log::debug!("reports wait: {e}");
        }
        let outcome = self.launch(rec, chunk, &dir, program, max);
        let (id, code, text, details) = report_of(&program.name, max, outcome);
        if code == StatusCode::S_OK {
            let _ = inventory::record_installed(self.ctx, &rec.package, &rec.version, Some(&dir));
        }
        if let Err(e) =
            Ledger::record_run(self.ctx, package, m.version, &program.name, !code.is_failure())
        {
            error!("cannot record the run of {}: {e}", program.name);
        }
        match m.health_check().filter(|h| code == StatusCode::S_OK && h.name != program.name) {
            Some(check) => self.check_after_install(rec, chunk, &dir, check, text),
            None => self.finish(rec, id, code, text, details),
        }
    }

    /// Runs `program` of the package in `dir` for action `rec`, within `max` seconds, with
    /// the environment the agent gives every program, and records how it is contained while
    /// it runs.
    pub(super) fn launch(
        &mut self,
        rec: &mut ActionRecord,
        chunk: &Chunk,
        dir: &Path,
        program: &SignedProgram,
        max: u64,
    ) -> std::io::Result<RunOutcome> {
        let mut env: Vec<(String, String)> = program.environment.clone().into_iter().collect();
        env.extend(
            [
                ("DM_ACTION_ID", rec.id.to_string()),
                ("DM_ADVERTISEMENT_ID", chunk.meta(ddi::meta::ADVERTISEMENT).unwrap_or("").into()),
                ("DM_PACKAGE_NAME", rec.package.clone()),
                ("DM_PACKAGE_VERSION", rec.version.clone()),
                ("DM_PACKAGE_DIR", dir.display().to_string()),
                ("DM_DEVICE_ROOT", self.ctx.layout.root().display().to_string()),
                ("DM_CONTROLLER_ID", self.controller_id.clone()),
                ("DM_PLATFORM", Platform::current().to_string()),
                ("DM_PROGRAM", program.name.clone()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        info!("action {}: running {} in {}", rec.id, program.display(), dir.display());
        let launcher = launcher(self.ctx);
        let run = Run {
            launcher: &launcher,
            command: &program.command,
            dir,
            env: &env,
            max: Duration::from_secs(max),
            name: &program.name,
            action: rec.id,
        };
        let ctx = self.ctx;
        let outcome = run_program(&run, &mut |jail| {
            // Recorded before it can matter: an agent killed now stops it at its next start.
            rec.contained = Some(jail.clone());
            if let Err(e) = rec.save(ctx) {
                error!("cannot record how action {} is contained: {e}", rec.id);
            }
        });
        rec.contained = None;
        outcome
    }
}

/// Makes the action's package name and version the verified manifest's. The record was made
/// from the first offer of the action, which the management point wrote (and which may have
/// said `download: skip` under another name): the program is told `DM_PACKAGE_NAME` and
/// `DM_PACKAGE_VERSION`, and the package is kept and recorded, under the signed ones only.
fn take_signed_identity(ctx: &Context, rec: &mut ActionRecord, m: &Manifest) -> Result<()> {
    let version = m.version.to_string();
    if rec.package == m.name && rec.version == version {
        return Ok(());
    }
    if !rec.package.is_empty() {
        warn!(
            "action {}: the management point first offered it as {} {}; the signed manifest says {} {}, which is what counts",
            rec.id, rec.package, rec.version, m.name, version
        );
    }
    rec.package = m.name.clone();
    rec.version = version;
    rec.save(ctx)
}

/// What starts a program inside its cgroup: this agent's own program (through the runner
/// prefix on an emulated test device); none when it cannot be found.
fn launcher(ctx: &dm_shared::Context) -> Vec<std::ffi::OsString> {
    match std::env::current_exe() {
        Ok(exe) if exe.is_file() => {
            let mut l: Vec<std::ffi::OsString> =
                ctx.env.runner().into_iter().map(Into::into).collect();
            l.push(exe.into());
            l
        }
        _ => Vec::new(),
    }
}

/// The final report of a program run.
pub(super) fn report_of(
    name: &str,
    max: u64,
    outcome: std::io::Result<RunOutcome>,
) -> (MessageId, StatusCode, String, Vec<String>) {
    match outcome {
        Ok(RunOutcome::Exited(0)) => (
            MessageId::PROGRAM_SUCCEEDED,
            StatusCode::S_OK,
            format!("{name} completed successfully"),
            vec!["exit code 0".into()],
        ),
        Ok(RunOutcome::Exited(c)) => (
            MessageId::PROGRAM_FAILED,
            StatusCode::DM_E_PROGRAM_FAILED,
            format!("{name} failed with exit code {c}"),
            vec![format!("exit code {c}")],
        ),
        Ok(RunOutcome::Signaled(sig)) => (
            MessageId::PROGRAM_FAILED,
            StatusCode::DM_E_PROGRAM_FAILED,
            format!("{name} was killed by signal {sig}"),
            vec![format!("signal {sig}")],
        ),
        Ok(RunOutcome::TimedOut) => (
            MessageId::PROGRAM_TIMED_OUT,
            StatusCode::ERROR_TIMEOUT,
            format!("{name} ran longer than its maximum run time of {max} s and was stopped"),
            vec![format!("maximum run time {max} s")],
        ),
        Err(e) => (
            MessageId::PROGRAM_FAILED,
            StatusCode::DM_E_CHILD_FAILED,
            format!("{name} could not be started: {e}"),
            vec![],
        ),
    }
}
