//! What the agent does with an action: classify the package, check the program's
//! requirements, download and verify the content, run the program (or hand a client upgrade
//! to setup), and report every stage as feedback through the outbox.
//!
//! Nothing runs unless the package's signed manifest chains to the device's roots and its
//! publisher is in the `spc` store. The program runs in the package folder with the
//! environment documented in docs/agent.md, is stopped at its maximum run time, and its
//! output goes to the agent's log.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dm_shared::ddi::{self, DeploymentBase, Handling, WindowState};
use dm_shared::fs::{self as dmfs, MODE_PRIVATE};
use dm_shared::manifest::{self, ManifestKind};
use dm_shared::outbox::{Outbox, StatusMessage, message_id as id};
use dm_shared::{Context, Platform, Settings, StatusCode, clock};
use log::{error, info, warn};

use super::ddi::Ddi;
use super::inventory;
use super::state::{ActionRecord, Stage};
use crate::error::{Error, Result};
use crate::service;
use crate::setup::{self, SetupResult};

/// The most times a download is retried across polls before the action fails.
const MAX_DOWNLOAD_ATTEMPTS: u32 = 8;
/// The largest artifact taken.
const MAX_ARTIFACT: u64 = 16 << 30;
/// Free space kept beyond what a download needs.
const SPACE_MARGIN: u64 = 32 << 20;

/// A client upgrade handed to setup, for the agent (old or new) to report when setup is done.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PendingUpgrade {
    /// The action.
    pub action_id: u64,
    /// The version being installed.
    pub to: String,
    /// When setup was started (RFC 3339).
    pub started: String,
}

/// Works on actions.
pub struct Worker<'a> {
    /// The device.
    pub ctx: &'a Context,
    /// Its settings.
    pub settings: &'a Settings,
    /// The management point.
    pub ddi: &'a mut Ddi,
    /// Where reports wait.
    pub outbox: Outbox,
    /// Set on SIGTERM.
    pub stop: Arc<AtomicBool>,
    /// The device's controller id.
    pub controller_id: String,
}

/// What a program run came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Exited with a code.
    Exited(i32),
    /// Killed by a signal.
    Signaled(i32),
    /// Ran past its maximum run time and was stopped.
    TimedOut,
}

fn pending_upgrade_path(ctx: &Context) -> PathBuf {
    ctx.layout.state_dir().join("upgrade-pending.json")
}

fn cache_dir(ctx: &Context, action: u64) -> PathBuf {
    ctx.layout.download_cache_dir().join(format!("action-{action}"))
}

impl Worker<'_> {
    fn now(&self) -> String {
        clock::rfc3339(self.ctx.clock.now())
    }

    /// Queues a report on an action (durably, before anything tries to send it).
    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        action: u64,
        execution: &str,
        msg: u32,
        code: StatusCode,
        text: String,
        details: Vec<String>,
        final_result: bool,
        cancel: bool,
    ) -> Result<()> {
        let mut m =
            StatusMessage::feedback(action, execution, msg, code, self.now(), text, final_result);
        m.details = details;
        m.cancel = cancel;
        self.outbox.push(&m)?;
        let _ = self.outbox.compact(1000);
        Ok(())
    }

    /// The final report of an action: queued, then the record marked done.
    fn finish(
        &self,
        rec: &mut ActionRecord,
        msg: u32,
        code: StatusCode,
        text: String,
        details: Vec<String>,
    ) -> Result<()> {
        if code.is_failure() {
            error!("action {} ({} {}): {code}: {text}", rec.id, rec.package, rec.version);
        } else {
            info!("action {} ({} {}): {text}", rec.id, rec.package, rec.version);
        }
        self.report(rec.id, "closed", msg, code, text.clone(), details, true, false)?;
        rec.stage = Stage::Done;
        rec.result = Some(text);
        rec.success = Some(!code.is_failure());
        rec.save(self.ctx)?;
        let _ = dmfs::remove_dir_all(&cache_dir(self.ctx, rec.id));
        Ok(())
    }

    /// Reports programs a previous run of the agent left running: they are not run again.
    pub fn report_interrupted(&self) -> Result<()> {
        for mut rec in ActionRecord::all(self.ctx).into_iter().filter(|r| r.stage == Stage::Running)
        {
            self.finish(
                &mut rec,
                id::PROGRAM_INTERRUPTED,
                StatusCode::DM_E_PROGRAM_FAILED,
                "the agent stopped while the program ran; it is not run again".into(),
                vec![],
            )?;
        }
        Ok(())
    }

    /// Reports a client upgrade setup has finished (success or rollback).
    pub fn check_upgrade(&self) -> Result<()> {
        let path = pending_upgrade_path(self.ctx);
        let Some(bytes) = dmfs::read_optional(&path, 4096)? else { return Ok(()) };
        let Ok(p) = serde_json::from_slice::<PendingUpgrade>(&bytes) else {
            warn!("{} is unreadable; removing it", path.display());
            dmfs::remove_file(&path)?;
            return Ok(());
        };
        let mut rec = ActionRecord::load(self.ctx, p.action_id).unwrap_or_else(|| ActionRecord {
            id: p.action_id,
            href: String::new(),
            package: "dm-client".into(),
            version: p.to.clone(),
            program: "client upgrade".into(),
            command: String::new(),
            kind: "mandatory".into(),
            stage: Stage::Upgrading,
            result: None,
            success: None,
            updated: String::new(),
            waiting_reported: false,
        });
        let result = SetupResult::load(self.ctx).filter(|r| r.time >= p.started);
        let installed = setup::installed_version(self.ctx).map(|v| v.to_string());
        match result {
            Some(r) if r.result == "success" || r.result == "no-action" => {
                let text = if installed.as_deref() == Some(p.to.as_str()) {
                    format!("client upgraded to {}", p.to)
                } else {
                    format!(
                        "{}; the client is {}",
                        r.message,
                        installed.unwrap_or_else(|| "not installed".into())
                    )
                };
                self.finish(
                    &mut rec,
                    id::CLIENT_UPGRADE_DONE,
                    StatusCode::S_OK,
                    text,
                    vec![r.message],
                )?;
            }
            Some(r) => {
                self.finish(
                    &mut rec,
                    id::CLIENT_UPGRADE_DONE,
                    r.code,
                    format!("client upgrade to {} failed: {}", p.to, r.message),
                    vec![],
                )?;
            }
            None => {
                let started = clock::parse_rfc3339(&p.started).map_or(0, clock::unix_secs);
                if clock::unix_secs(self.ctx.clock.now()).saturating_sub(started) < 7200 {
                    return Ok(());
                }
                self.finish(
                    &mut rec,
                    id::CLIENT_UPGRADE_DONE,
                    StatusCode::ERROR_INSTALL_FAILURE,
                    format!("setup left no result for the upgrade to {} within 2 hours", p.to),
                    vec![],
                )?;
            }
        }
        dmfs::remove_file(&path)?;
        Ok(())
    }

    /// Answers a cancellation: honoured before the program started, rejected after.
    pub fn cancel(&mut self, href: &str) -> Result<()> {
        let c: ddi::Cancel = self.ddi.get(href)?;
        let action: u64 = c.cancel_action.stop_id.parse().map_err(|_| Error::Malformed {
            url: href.into(),
            reason: format!("stopId {:?} is not a number", c.cancel_action.stop_id),
        })?;
        let rec = ActionRecord::load(self.ctx, action);
        let started = rec
            .as_ref()
            .is_some_and(|r| matches!(r.stage, Stage::Running | Stage::Upgrading | Stage::Done));
        if started {
            warn!(
                "action {action} was canceled, but its program already started: rejecting the cancellation"
            );
            self.report(
                action,
                "rejected",
                id::CANCEL_REJECTED,
                StatusCode::S_FALSE,
                "the program already started; it cannot be canceled".into(),
                vec![],
                true,
                true,
            )?;
        } else {
            info!("action {action} was canceled before its program started");
            let _ = dmfs::remove_dir_all(&cache_dir(self.ctx, action));
            self.report(
                action,
                "canceled",
                id::CANCELED,
                StatusCode::S_OK,
                "canceled before the program started".into(),
                vec![],
                true,
                true,
            )?;
            let mut r = rec.unwrap_or_else(|| ActionRecord {
                id: action,
                href: String::new(),
                package: String::new(),
                version: String::new(),
                program: String::new(),
                command: String::new(),
                kind: String::new(),
                stage: Stage::Canceled,
                result: None,
                success: None,
                updated: String::new(),
                waiting_reported: false,
            });
            r.stage = Stage::Canceled;
            r.result = Some("canceled".into());
            r.save(self.ctx)?;
        }
        Ok(())
    }

    /// Works on the deployment at `href`. `run_requested`: the user asked to run an available
    /// program. Transport errors are returned (the action is retried); everything the action
    /// itself gets wrong ends in a final report.
    pub fn deployment(&mut self, href: &str, run_requested: bool) -> Result<()> {
        let d: DeploymentBase = self.ddi.get(href)?;
        let action: u64 = d.id.parse().map_err(|_| Error::Malformed {
            url: href.into(),
            reason: format!("action id {:?} is not a number", d.id),
        })?;
        if let Some(r) = ActionRecord::load(self.ctx, action) {
            if matches!(r.stage, Stage::Done | Stage::Canceled | Stage::Upgrading) {
                log::debug!("action {action} is {:?} here; its report is on its way", r.stage);
                return Ok(());
            }
        }
        let Some(chunk) = d.deployment.chunks.first() else {
            let mut rec = self.record(action, href, None)?;
            return self.finish(
                &mut rec,
                id::UNSUPPORTED_PACKAGE,
                StatusCode::DM_E_UNSUPPORTED_PACKAGE,
                "the deployment has no package".into(),
                vec![],
            );
        };
        let mut rec = self.record(action, href, Some(chunk))?;
        if d.deployment.chunks.len() > 1 {
            return self.finish(
                &mut rec,
                id::UNSUPPORTED_PACKAGE,
                StatusCode::DM_E_UNSUPPORTED_PACKAGE,
                format!(
                    "the deployment has {} packages; one per advertisement is supported",
                    d.deployment.chunks.len()
                ),
                vec![],
            );
        }
        let expected_kind = match chunk.part.as_str() {
            ddi::part::SOFTWARE_DISTRIBUTION => ManifestKind::SoftwareDistribution,
            ddi::part::CONFIGURATION => ManifestKind::Configuration,
            ddi::part::CLIENT_UPGRADE => ManifestKind::ClientDeployment,
            other => {
                return self.finish(
                    &mut rec,
                    id::UNSUPPORTED_PACKAGE,
                    StatusCode::DM_E_UNSUPPORTED_PACKAGE,
                    format!("package kind {other:?} is not supported"),
                    vec![],
                );
            }
        };

        // Requirements: platform and device class.
        let platforms = chunk.meta(ddi::meta::PLATFORMS).unwrap_or("any");
        let here = Platform::current();
        if platforms != "any" && !platforms.split(',').map(str::trim).any(|p| p == here.as_str()) {
            return self.finish(
                &mut rec,
                id::WRONG_PLATFORM,
                StatusCode::ERROR_INSTALL_PLATFORM_UNSUPPORTED,
                format!(
                    "requirements not met: the program is for {platforms}; this device is {here}"
                ),
                vec![],
            );
        }
        let class = chunk.meta(ddi::meta::DEVICE_CLASS).unwrap_or("mobile");
        let ours = match self.settings.environment.device_class {
            dm_shared::settings::DeviceClass::Mobile => "mobile",
            dm_shared::settings::DeviceClass::Desktop => "desktop",
        };
        if !class.eq_ignore_ascii_case(ours) {
            return self.finish(&mut rec, id::WRONG_DEVICE_CLASS, StatusCode::DM_E_WRONG_DEVICE_CLASS, format!("requirements not met: the program is for {class} devices; this is a {ours} device"), vec![]);
        }

        // When to run it.
        let window_closed = d.deployment.maintenance_window == Some(WindowState::Unavailable);
        let update = d.deployment.update;
        if d.deployment.download == Handling::Skip && !run_requested {
            log::debug!("action {action}: the server says not to download yet");
            return Ok(());
        }

        if rec.stage == Stage::Downloading {
            if let Err(e) = self.download(&mut rec, chunk) {
                return self.download_failed(&mut rec, e);
            }
            let dir = cache_dir(self.ctx, action);
            if let Err(e) = self.verify(&dir, expected_kind) {
                let code = e.code();
                return self.finish(
                    &mut rec,
                    id::PACKAGE_UNTRUSTED,
                    code,
                    format!("the package is not trusted; nothing was run: {e}"),
                    vec![],
                );
            }
            rec.stage = Stage::Downloaded;
            rec.save(self.ctx)?;
            self.report(
                action,
                "downloaded",
                id::CONTENT_DOWNLOADED,
                StatusCode::S_OK,
                format!("{} {} downloaded and verified", rec.package, rec.version),
                vec![],
                false,
                false,
            )?;
        }

        let run_now = match update {
            Handling::Forced => !window_closed,
            Handling::Attempt => run_requested,
            Handling::Skip => false,
        } || run_requested;
        if !run_now {
            if update == Handling::Skip
                && !window_closed
                && d.deployment.maintenance_window.is_none()
            {
                let text = format!(
                    "{} {} is on the device (download only; not run)",
                    rec.package, rec.version
                );
                return self.finish(
                    &mut rec,
                    id::DOWNLOAD_ONLY_DONE,
                    StatusCode::S_OK,
                    text,
                    vec![],
                );
            }
            let (stage, msg, text) = if update == Handling::Attempt {
                (
                    Stage::Available,
                    id::PROGRAM_AVAILABLE,
                    format!(
                        "{} is available; the device's user runs it with `dmsvc run {action}`",
                        rec.program
                    ),
                )
            } else {
                (
                    Stage::Downloaded,
                    id::WAITING_FOR_WINDOW,
                    format!("{} waits for its maintenance window", rec.program),
                )
            };
            rec.stage = stage;
            if !rec.waiting_reported {
                info!("action {action}: {text}");
                self.report(
                    action,
                    "scheduled",
                    msg,
                    StatusCode::S_OK,
                    text,
                    vec![],
                    false,
                    false,
                )?;
                rec.waiting_reported = true;
            }
            rec.save(self.ctx)?;
            return Ok(());
        }
        if expected_kind == ManifestKind::ClientDeployment {
            self.upgrade(&mut rec)
        } else {
            self.run(&mut rec, chunk)
        }
    }

    fn record(&self, action: u64, href: &str, chunk: Option<&ddi::Chunk>) -> Result<ActionRecord> {
        if let Some(mut r) = ActionRecord::load(self.ctx, action) {
            r.href = href.to_string();
            return Ok(r);
        }
        let meta = |k: &str| chunk.and_then(|c| c.meta(k)).unwrap_or_default().to_string();
        let mut r = ActionRecord {
            id: action,
            href: href.to_string(),
            package: chunk.map(|c| c.name.clone()).unwrap_or_default(),
            version: chunk.map(|c| c.version.clone()).unwrap_or_default(),
            program: meta(ddi::meta::PROGRAM),
            command: meta(ddi::meta::COMMAND),
            kind: meta(ddi::meta::ADVERTISEMENT_KIND),
            stage: Stage::Downloading,
            result: None,
            success: None,
            updated: String::new(),
            waiting_reported: false,
        };
        r.save(self.ctx)?;
        info!("action {action}: {} {} ({}), program {:?}", r.package, r.version, r.kind, r.command);
        self.report(
            action,
            "download",
            id::PROGRAM_RECEIVED,
            StatusCode::S_OK,
            format!("received {} {}; downloading", r.package, r.version),
            vec![],
            false,
            false,
        )?;
        Ok(r)
    }

    fn download_failed(&self, rec: &mut ActionRecord, e: Error) -> Result<()> {
        let transient = match &e {
            Error::Network { .. } | Error::Stopped => true,
            Error::Http { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        };
        if transient {
            let attempts = self.bump_attempts(rec.id);
            if matches!(e, Error::Stopped) || attempts < MAX_DOWNLOAD_ATTEMPTS {
                warn!(
                    "action {}: download interrupted ({e}); it resumes on the next poll (attempt {attempts} of {MAX_DOWNLOAD_ATTEMPTS})",
                    rec.id
                );
                return Err(e);
            }
        }
        let code = e.code();
        self.finish(
            rec,
            id::DOWNLOAD_FAILED,
            code,
            format!("the content could not be downloaded: {e}"),
            vec![],
        )
    }

    fn bump_attempts(&self, action: u64) -> u32 {
        let p = cache_dir(self.ctx, action).join(".attempts");
        let n = dmfs::read_optional(&p, 64)
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8_lossy(&b).trim().parse::<u32>().ok())
            .unwrap_or(0)
            + 1;
        let _ = dmfs::create_dir_all(&cache_dir(self.ctx, action), dmfs::MODE_DIR_PRIVATE);
        let _ = dmfs::write_atomic(&p, n.to_string().as_bytes(), MODE_PRIVATE);
        n
    }

    fn download(&self, rec: &mut ActionRecord, chunk: &ddi::Chunk) -> Result<()> {
        let dir = cache_dir(self.ctx, rec.id);
        dmfs::create_dir_all(&dir, dmfs::MODE_DIR_PRIVATE)?;
        // Check every artifact before fetching any.
        let mut needed = 0u64;
        for a in &chunk.artifacts {
            manifest::check_relative_path(&a.filename)?;
            if a.size > MAX_ARTIFACT {
                return Err(dm_shared::Error::TooLarge {
                    path: dir.join(&a.filename),
                    limit: MAX_ARTIFACT,
                    actual: a.size,
                }
                .into());
            }
            if a.hashes.sha256.len() != 64
                || !a.hashes.sha256.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(Error::Malformed {
                    url: rec.href.clone(),
                    reason: format!("artifact {} has no SHA-256", a.filename),
                });
            }
            let href = a.links.get("download").map(|l| l.href.as_str()).unwrap_or("");
            if !href.starts_with("https://") {
                return Err(Error::Insecure {
                    url: href.to_string(),
                    reason: format!("the download link of {} is not https", a.filename),
                });
            }
            let have = std::fs::metadata(dir.join(&a.filename)).map(|m| m.len()).unwrap_or(0)
                + std::fs::metadata(partial_of(&dir.join(&a.filename)))
                    .map(|m| m.len())
                    .unwrap_or(0);
            needed += a.size.saturating_sub(have);
        }
        let free = dmfs::available_space(&dir)?;
        if free < needed + SPACE_MARGIN {
            return Err(dm_shared::Error::Io {
                op: "download into",
                path: dir.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!(
                        "{needed} bytes to download but {free} bytes free (and {SPACE_MARGIN} kept)"
                    ),
                ),
            }
            .into());
        }
        for a in &chunk.artifacts {
            let dest = dir.join(&a.filename);
            if let Some(parent) = dest.parent() {
                dmfs::create_dir_all(parent, dmfs::MODE_DIR_PRIVATE)?;
            }
            if std::fs::metadata(&dest).is_ok_and(|m| m.len() == a.size) {
                continue;
            }
            let href = a.links.get("download").map(|l| l.href.as_str()).unwrap_or("");
            info!("downloading {} ({} bytes)", a.filename, a.size);
            let start = Instant::now();
            self.ddi.net.download(
                href,
                &partial_of(&dest),
                &dest,
                a.size,
                &a.hashes.sha256.to_ascii_lowercase(),
                &self.stop,
            )?;
            let secs = start.elapsed().as_secs_f64().max(0.001);
            info!(
                "downloaded {} ({:.1} MB/s, SHA-256 verified)",
                a.filename,
                a.size as f64 / secs / 1e6
            );
        }
        Ok(())
    }

    fn verify(&self, dir: &Path, kind: ManifestKind) -> Result<manifest::VerifiedFolder> {
        let roots = dm_shared::store::trusted_roots(&self.ctx.layout)?;
        let v = manifest::verify_folder(dir, &roots, self.ctx.clock.now())?;
        dm_shared::store::require_spc_publisher(&self.ctx.layout, &v.publisher)?;
        if v.manifest.kind != kind {
            return Err(dm_shared::Error::MalformedManifest {
                path: dir.join(manifest::MANIFEST_FILE),
                reason: format!("it is a {:?} package, advertised as {kind:?}", v.manifest.kind),
            }
            .into());
        }
        // Downloads are private files; the signed manifest says which are programs.
        for f in &v.manifest.files {
            dmfs::set_mode(
                &dir.join(&f.path),
                if f.executable { dmfs::MODE_EXEC } else { dmfs::MODE_PUBLIC },
            )?;
        }
        info!(
            "verified {} {} signed by {}",
            v.manifest.name,
            v.manifest.version,
            v.publisher.describe()
        );
        Ok(v)
    }

    fn promote(&self, rec: &ActionRecord) -> Result<PathBuf> {
        let clean = |s: &str| {
            s.chars()
                .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
                .collect::<String>()
        };
        let dest = self.ctx.layout.packages_dir().join(format!(
            "{}-{}-{}",
            clean(&rec.package),
            clean(&rec.version),
            rec.id
        ));
        dmfs::create_dir_all(&self.ctx.layout.packages_dir(), dmfs::MODE_DIR)?;
        dmfs::remove_dir_all(&dest)?;
        dmfs::rename(&cache_dir(self.ctx, rec.id), &dest)?;
        let _ = dmfs::remove_file(&dest.join(".attempts"));
        Ok(dest)
    }

    fn run(&mut self, rec: &mut ActionRecord, chunk: &ddi::Chunk) -> Result<()> {
        let dir = self.promote(rec)?;
        let max = chunk
            .meta(ddi::meta::MAX_RUN_TIME)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(3600)
            .clamp(1, 7 * 86_400);
        rec.stage = Stage::Running;
        rec.save(self.ctx)?;
        self.report(
            rec.id,
            "proceeding",
            id::PROGRAM_STARTED,
            StatusCode::S_OK,
            format!("started {:?} (at most {max} s)", rec.command),
            vec![],
            false,
            false,
        )?;
        // Tell the server before a long run when it can be reached.
        if let Err(e) = self.ddi.flush(&self.outbox) {
            log::debug!("reports wait: {e}");
        }
        let env = vec![
            ("DM_ACTION_ID".to_string(), rec.id.to_string()),
            (
                "DM_ADVERTISEMENT_ID".to_string(),
                chunk.meta(ddi::meta::ADVERTISEMENT).unwrap_or("").to_string(),
            ),
            ("DM_PACKAGE_NAME".to_string(), rec.package.clone()),
            ("DM_PACKAGE_VERSION".to_string(), rec.version.clone()),
            ("DM_PACKAGE_DIR".to_string(), dir.display().to_string()),
            ("DM_DEVICE_ROOT".to_string(), self.ctx.layout.root().display().to_string()),
            ("DM_CONTROLLER_ID".to_string(), self.controller_id.clone()),
            ("DM_PLATFORM".to_string(), Platform::current().to_string()),
        ];
        info!("action {}: running {:?} in {}", rec.id, rec.command, dir.display());
        match run_program(&rec.command, &dir, &env, Duration::from_secs(max), &rec.program) {
            Ok(RunOutcome::Exited(0)) => {
                let _ = inventory::record_installed(self.ctx, &rec.package, &rec.version);
                self.finish(
                    rec,
                    id::PROGRAM_SUCCEEDED,
                    StatusCode::S_OK,
                    format!("{} completed successfully", rec.program),
                    vec!["exit code 0".into()],
                )
            }
            Ok(RunOutcome::Exited(code)) => self.finish(
                rec,
                id::PROGRAM_FAILED,
                StatusCode::DM_E_PROGRAM_FAILED,
                format!("{} failed with exit code {code}", rec.program),
                vec![format!("exit code {code}")],
            ),
            Ok(RunOutcome::Signaled(sig)) => self.finish(
                rec,
                id::PROGRAM_FAILED,
                StatusCode::DM_E_PROGRAM_FAILED,
                format!("{} was killed by signal {sig}", rec.program),
                vec![format!("signal {sig}")],
            ),
            Ok(RunOutcome::TimedOut) => self.finish(
                rec,
                id::PROGRAM_TIMED_OUT,
                StatusCode::ERROR_TIMEOUT,
                format!(
                    "{} ran longer than its maximum run time of {max} s and was stopped",
                    rec.program
                ),
                vec![format!("maximum run time {max} s")],
            ),
            Err(e) => self.finish(
                rec,
                id::PROGRAM_FAILED,
                StatusCode::DM_E_CHILD_FAILED,
                format!("{} could not be started: {e}", rec.program),
                vec![],
            ),
        }
    }

    fn upgrade(&mut self, rec: &mut ActionRecord) -> Result<()> {
        let dir = self.promote(rec)?;
        let setup = dir.join(manifest::program_file("dmclientsetup", &Platform::current()));
        let pending =
            PendingUpgrade { action_id: rec.id, to: rec.version.clone(), started: self.now() };
        dmfs::write_atomic(
            &pending_upgrade_path(self.ctx),
            &serde_json::to_vec(&pending).unwrap_or_default(),
            MODE_PRIVATE,
        )?;
        rec.stage = Stage::Upgrading;
        rec.save(self.ctx)?;
        self.report(
            rec.id,
            "proceeding",
            id::CLIENT_UPGRADE_STARTED,
            StatusCode::S_OK,
            format!("upgrading the client to {}", rec.version),
            vec![],
            false,
            false,
        )?;
        let _ = self.ddi.flush(&self.outbox);
        let mut argv: Vec<std::ffi::OsString> =
            self.ctx.env.runner().into_iter().map(Into::into).collect();
        argv.push(setup.clone().into_os_string());
        argv.extend([
            "--source".into(),
            dir.into_os_string(),
            "--device-root".into(),
            self.ctx.layout.root().as_os_str().to_owned(),
        ]);
        info!(
            "starting the client upgrade: {}",
            argv.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
        );
        use std::os::unix::process::CommandExt;
        let spawned = Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .envs(service::child_env(self.ctx))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        match spawned {
            // Setup stops this agent and starts the new one, which reports the result.
            Ok(child) => {
                info!(
                    "setup (pid {}) is upgrading the client; it will stop this agent",
                    child.id()
                );
                Ok(())
            }
            Err(e) => {
                dmfs::remove_file(&pending_upgrade_path(self.ctx))?;
                self.finish(
                    rec,
                    id::CLIENT_UPGRADE_DONE,
                    StatusCode::DM_E_CHILD_FAILED,
                    format!("cannot start {}: {e}", setup.display()),
                    vec![],
                )
            }
        }
    }

    /// Whether an agent stop was requested.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// The `.partial` file of a download: hidden, so folder verification never counts it.
pub fn partial_of(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dest.with_file_name(format!(".{name}.partial"))
}

/// Runs `command` with `/bin/sh -c` in `dir`, with only the given environment (plus PATH,
/// HOME and LANG), its output logged line by line, stopped (SIGTERM, then SIGKILL after 5 s)
/// when it runs past `max`.
pub fn run_program(
    command: &str,
    dir: &Path,
    env: &[(String, String)],
    max: Duration,
    name: &str,
) -> std::io::Result<RunOutcome> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", dir)
        .env("LANG", "C.UTF-8")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let mut readers = Vec::new();
    for (stream, label) in [
        (child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>), "out"),
        (child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>), "err"),
    ] {
        let Some(stream) = stream else { continue };
        let name = name.to_string();
        readers.push(std::thread::spawn(move || {
            let mut lines = 0usize;
            for line in std::io::BufReader::new(stream).split(b'\n').map_while(|l| l.ok()) {
                lines += 1;
                if lines <= 2000 {
                    let text: String = String::from_utf8_lossy(&line).chars().take(1000).collect();
                    info!("program {name} [{label}]: {}", text.trim_end());
                } else if lines == 2001 {
                    info!("program {name} [{label}]: (further output not logged)");
                }
            }
        }));
    }
    let start = Instant::now();
    let pgid = rustix::process::Pid::from_raw(child.id() as i32);
    let outcome = loop {
        if let Some(status) = child.try_wait()? {
            break match (status.code(), status.signal()) {
                (Some(c), _) => RunOutcome::Exited(c),
                (None, Some(s)) => RunOutcome::Signaled(s),
                (None, None) => RunOutcome::Signaled(0),
            };
        }
        if start.elapsed() > max {
            warn!("program {name} ran longer than {} s: stopping it", max.as_secs());
            if let Some(p) = pgid {
                let _ = rustix::process::kill_process_group(p, rustix::process::Signal::TERM);
            }
            let grace = Instant::now();
            while child.try_wait()?.is_none() {
                if grace.elapsed() > Duration::from_secs(5) {
                    if let Some(p) = pgid {
                        let _ =
                            rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            break RunOutcome::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // A program that left children holding its output open must not hang the agent.
    let deadline = Instant::now() + Duration::from_secs(2);
    for r in readers {
        while !r.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if r.is_finished() {
            let _ = r.join();
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_run_with_their_environment_and_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let env = vec![("DM_PACKAGE_NAME".to_string(), "tools".to_string())];
        let out = run_program("test \"$DM_PACKAGE_NAME\" = tools && test \"$PWD\" = \"$HOME\" && test -z \"$SECRET_FROM_AGENT\"", dir.path(), &env, Duration::from_secs(10), "t").unwrap();
        assert_eq!(out, RunOutcome::Exited(0));
        assert_eq!(
            run_program("exit 7", dir.path(), &[], Duration::from_secs(10), "t").unwrap(),
            RunOutcome::Exited(7)
        );
        let start = Instant::now();
        assert_eq!(
            run_program("sleep 30", dir.path(), &[], Duration::from_millis(300), "t").unwrap(),
            RunOutcome::TimedOut
        );
        assert!(start.elapsed() < Duration::from_secs(10));
        // A program ignoring SIGTERM is killed.
        assert_eq!(
            run_program("trap '' TERM; sleep 30", dir.path(), &[], Duration::from_millis(300), "t")
                .unwrap(),
            RunOutcome::TimedOut
        );
    }

    #[test]
    fn partial_files_are_hidden_siblings() {
        assert_eq!(partial_of(Path::new("/c/a/run.sh")), Path::new("/c/a/.run.sh.partial"));
    }
}
