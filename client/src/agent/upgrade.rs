//! A client upgrade over the air: the verified client deployment is handed to its own
//! `dmclientsetup`, which stops this agent and starts the new one; whichever agent runs
//! afterwards reports the result from setup's result record.
//!
//! On a desktop (`DeviceClass=Desktop`) a client deployment is not for the desktop itself: it
//! is staged as one bundle for `dmtether`, which installs it on the devices the desktop
//! tethers (docs/tether.md).

use std::path::PathBuf;

use dm_shared::bundle;
use dm_shared::ddi::Execution;
use dm_shared::fs::{self as dmfs, MODE_PRIVATE};
use dm_shared::manifest::{self, VerifiedFolder};
use dm_shared::message::MessageId;
use dm_shared::vocab::DeviceClass;
use dm_shared::{Context, Platform, StatusCode, clock};
use log::{info, warn};

use super::content;
use super::state::{ActionRecord, Stage};
use super::worker::Worker;
use crate::error::Result;
use crate::installed::{Outcome, SetupResult, installed_version};
use crate::service;

/// How long an upgrade may go without a result from setup before it is reported failed.
const UPGRADE_DEADLINE_SECS: u64 = 7200;

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

fn pending_path(ctx: &Context) -> PathBuf {
    ctx.layout.state_dir().join("upgrade-pending.json")
}

/// Where a desktop keeps the client deployment staged for its tethered devices.
pub fn staged_dir(ctx: &Context) -> PathBuf {
    ctx.layout.tether_dir().join("staged")
}

impl Worker<'_> {
    /// Whether this client is a desktop's.
    pub fn desktop(&self) -> bool {
        self.settings.environment.device_class == DeviceClass::Desktop
    }

    /// Stages the verified client deployment of `rec` as one bundle for `dmtether`, replacing
    /// the one staged before; the action is done once it is there.
    pub fn stage_for_tether(
        &mut self,
        rec: &mut ActionRecord,
        folder: &VerifiedFolder,
    ) -> Result<()> {
        let dir = staged_dir(self.ctx);
        dmfs::create_dir_all(&dir, dmfs::MODE_DIR)?;
        let name = bundle::file_name(&folder.manifest);
        bundle::write(folder, &dir.join(&name))?;
        let entries = std::fs::read_dir(&dir).map_err(dmfs::io_err("list", &dir))?;
        for old in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
            if old.file_name().is_some_and(|n| n != name.as_str()) {
                dmfs::remove_file(&old)?;
            }
        }
        let m = &folder.manifest;
        let id = super::ledger::PackageId::of(folder);
        super::ledger::Ledger::record_run(self.ctx, id, m.version, "staged for tether", true)?;
        let _ = dmfs::remove_dir_all(&content::cache_dir(self.ctx, rec.id));
        let text = format!(
            "{} {} staged for the devices this desktop tethers: {}",
            m.name,
            m.version,
            dir.join(&name).display()
        );
        self.finish(rec, MessageId::CLIENT_STAGED_FOR_TETHER, StatusCode::S_OK, text, vec![])
    }

    /// Hands the downloaded client deployment of `rec` (whose verified manifest is `m`) to its
    /// setup: the folder's `dm_<platform> setup`, or an older folder's own
    /// `dmclientsetup_<platform>`.
    pub fn upgrade(&mut self, rec: &mut ActionRecord, m: &manifest::Manifest) -> Result<()> {
        let dir = content::promote(self.ctx, rec.id, &rec.package, &rec.version)?;
        let (file, subcommand) =
            dm_shared::deployment::program_command(m, &Platform::current(), "dmclientsetup");
        let setup = dir.join(file);
        let pending =
            PendingUpgrade { action_id: rec.id, to: rec.version.clone(), started: self.now() };
        dmfs::write_json(&pending_path(self.ctx), &pending, MODE_PRIVATE)?;
        rec.stage = Stage::Upgrading;
        rec.save(self.ctx)?;
        let text = format!("upgrading the client to {}", rec.version);
        self.progress(rec.id, Execution::Proceeding, MessageId::CLIENT_UPGRADE_STARTED, text)?;
        let _ = self.session.flush(&self.outbox);
        let args: Vec<&std::ffi::OsStr> = subcommand
            .map(std::ffi::OsStr::new)
            .into_iter()
            .chain([
                "--source".as_ref(),
                dir.as_os_str(),
                "--device-root".as_ref(),
                self.ctx.layout.root().as_os_str(),
            ])
            .collect();
        let unit = format!("dm-setup-{}-{}", rec.id, clock::unix_secs(self.ctx.clock.now()));
        match service::spawn_detached(self.ctx, &setup, &args, &unit) {
            // Setup stops this agent and starts the new one, which reports the result.
            Ok(service::Detached::Child(child)) => {
                info!(
                    "setup (pid {}) is upgrading the client; it will stop this agent",
                    child.id()
                );
                Ok(())
            }
            Ok(service::Detached::Unit(unit)) => {
                info!("setup (unit {unit}) is upgrading the client; it will stop this agent");
                Ok(())
            }
            Err(e) => {
                dmfs::remove_file(&pending_path(self.ctx))?;
                let text = format!("cannot start {}: {e}", setup.display());
                let code = StatusCode::DM_E_CHILD_FAILED;
                self.finish(rec, MessageId::CLIENT_UPGRADE_DONE, code, text, vec![])
            }
        }
    }

    /// Reports a client upgrade setup has finished (success or rollback).
    pub fn check_upgrade(&self) -> Result<()> {
        let path = pending_path(self.ctx);
        let p: PendingUpgrade = match dmfs::read_json(&path, 4096) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(()),
            Err(e) => {
                warn!("{e}; removing it");
                dmfs::remove_file(&path)?;
                return Ok(());
            }
        };
        let mut rec = ActionRecord::load(self.ctx, p.action_id).unwrap_or_else(|| {
            let mut r = ActionRecord::new(p.action_id, String::new());
            r.package = "dm-client".into();
            r.version = p.to.clone();
            r.program = "client upgrade".into();
            r.kind = "mandatory".into();
            r.stage = Stage::Upgrading;
            r
        });
        let result = SetupResult::load(self.ctx).filter(|r| r.time >= p.started);
        let installed = installed_version(self.ctx).map(|v| v.to_string());
        let done = MessageId::CLIENT_UPGRADE_DONE;
        match result {
            Some(r) if matches!(r.result, Outcome::Success | Outcome::NoAction) => {
                let text = if installed.as_deref() == Some(p.to.as_str()) {
                    format!("client upgraded to {}", p.to)
                } else {
                    let now = installed.unwrap_or_else(|| "not installed".into());
                    format!("{}; the client is {now}", r.message)
                };
                self.finish(&mut rec, done, StatusCode::S_OK, text, vec![r.message])?;
            }
            Some(r) => {
                let text = format!("client upgrade to {} failed: {}", p.to, r.message);
                self.finish(&mut rec, done, r.code, text, vec![])?;
            }
            None => {
                let started = clock::parse_rfc3339(&p.started).map_or(0, clock::unix_secs);
                let waited = clock::unix_secs(self.ctx.clock.now()).saturating_sub(started);
                if waited < UPGRADE_DEADLINE_SECS {
                    return Ok(());
                }
                let text =
                    format!("setup left no result for the upgrade to {} within 2 hours", p.to);
                self.finish(&mut rec, done, StatusCode::ERROR_INSTALL_FAILURE, text, vec![])?;
            }
        }
        dmfs::remove_file(&path)?;
        Ok(())
    }
}
