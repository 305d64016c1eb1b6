//! Carrying out a journal: applying steps forward, undoing them backward, and recovering an
//! operation a crash interrupted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dm_shared::fs::{self as dmfs, MODE_EXEC, MODE_PRIVATE, MODE_PUBLIC};
use dm_shared::{ClientVersion, Context, StoreName, failpoint};
use log::{error, info, warn};

use super::journal::{Binary, Direction, Journal, Op, Step};
use crate::error::{Error, Result};
use crate::health;
use crate::service;

/// The record of installed binaries in each version folder.
pub const FILES_RECORD: &str = ".files.json";

/// Who is carrying out the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// dmclientsetup.
    Setup,
    /// The agent, recovering at start: it is the agent, so it never starts, stops or waits
    /// for itself.
    Agent,
}

/// Runs journal steps.
#[derive(Debug)]
pub struct Engine<'a> {
    ctx: &'a Context,
    actor: Actor,
    health_timeout: Duration,
    started: Option<service::Started>,
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every step applied.
    Completed,
    /// Every applied step undone.
    RolledBack,
}

fn version_dir_name(v: &ClientVersion) -> String {
    v.to_string()
}

fn partial_dir(ctx: &Context, v: &ClientVersion) -> PathBuf {
    ctx.layout.versions_dir().join(format!("{v}.partial"))
}

/// Checks that a version folder holds exactly the expected binaries (size and SHA-256).
pub fn verify_version_dir(dir: &Path, binaries: &[Binary]) -> Result<()> {
    for b in binaries {
        let path = dir.join(&b.name);
        let (size, sha) = dm_shared::manifest::hash_file(&path, b.size)?;
        if size != b.size || sha != b.sha256 {
            return Err(dm_shared::Error::HashMismatch {
                path,
                what: "SHA-256",
                expected: b.sha256.clone(),
                actual: sha,
            }
            .into());
        }
    }
    Ok(())
}

/// Reads a version folder's record of its binaries.
pub fn read_files_record(dir: &Path) -> Result<Vec<Binary>> {
    let path = dir.join(FILES_RECORD);
    let bytes = dmfs::read_capped(&path, 64 * 1024)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| dm_shared::Error::InvalidData { path, reason: e.to_string() }.into())
}

fn copy_verified(src: &Path, dest: &Path, b: &Binary) -> Result<()> {
    use std::io::{Read, Write};
    let mut input = std::fs::File::open(src).map_err(dmfs::io_err("open", src))?;
    let mut out = dmfs::AtomicFile::create(dest, MODE_EXEC)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(dmfs::io_err("read", src))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > b.size {
            break;
        }
        ctx.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(dmfs::io_err("write", dest))?;
    }
    let sha = dm_shared::pki::to_hex(ctx.finish().as_ref());
    if total != b.size || sha != b.sha256 {
        return Err(dm_shared::Error::HashMismatch {
            path: src.to_path_buf(),
            what: if total != b.size { "size" } else { "SHA-256" },
            expected: if total != b.size { format!("{} bytes", b.size) } else { b.sha256.clone() },
            actual: if total != b.size { format!("{total} bytes or more") } else { sha },
        }
        .into());
    }
    out.commit()?;
    Ok(())
}

fn restore(path: &Path, backup: &Option<String>, mode: u32) -> Result<()> {
    match backup {
        Some(text) => {
            if let Some(dir) = path.parent() {
                dmfs::create_dir_all(dir, dmfs::MODE_DIR)?;
            }
            dmfs::write_atomic(path, text.as_bytes(), mode)?;
        }
        None => {
            dmfs::remove_file(path)?;
        }
    }
    Ok(())
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        dmfs::create_dir_all(dir, dmfs::MODE_DIR)?;
    }
    dmfs::write_atomic(path, text.as_bytes(), mode)?;
    Ok(())
}

/// Points `opt/dm/current` at a version, or removes it.
fn point_at(ctx: &Context, v: Option<&ClientVersion>) -> Result<()> {
    let link = ctx.layout.active_pointer();
    match v {
        Some(v) => {
            dmfs::create_dir_all(&ctx.layout.install_dir(), dmfs::MODE_DIR)?;
            dmfs::symlink_replace(Path::new(&format!("versions/{}", version_dir_name(v))), &link)?;
        }
        None => {
            dmfs::remove_file(&link)?;
        }
    }
    Ok(())
}

/// Removes every entry of `dir` whose name is not in `keep`.
fn remove_children_except(dir: &Path, keep: &[&str]) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(dmfs::io_err("list", dir)(e).into()),
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if keep.iter().any(|k| name == *k) {
            continue;
        }
        let path = e.path();
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            dmfs::remove_dir_all(&path)?;
        } else {
            dmfs::remove_file(&path)?;
        }
    }
    Ok(())
}

const STATE_KEEP: [&str; 1] = ["setup-journal.json"];

impl<'a> Engine<'a> {
    /// An engine for `actor`.
    pub fn new(ctx: &'a Context, actor: Actor, health_timeout: Duration) -> Engine<'a> {
        Engine { ctx, actor, health_timeout, started: None }
    }

    fn hit(&self, j: &Journal, what: &str, step: Step) -> Result<()> {
        Ok(failpoint::hit(&format!("setup-{}-{what}{}", j.op.as_str(), step.as_str()))?)
    }

    /// Runs a new journal from its first step.
    pub fn execute(&mut self, j: &mut Journal) -> Result<Ending> {
        info!(
            "{}: {} steps: {}",
            j.op.as_str(),
            j.steps.len(),
            j.steps.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
        j.save(self.ctx)?;
        self.forward(j)
    }

    fn forward(&mut self, j: &mut Journal) -> Result<Ending> {
        while j.done < j.steps.len() {
            let i = j.done;
            let step = j.steps[i];
            info!("step {}/{}: {}", i + 1, j.steps.len(), step.as_str());
            let result = self.hit(j, "", step).and_then(|()| self.apply(j, step));
            match result {
                Ok(()) => {
                    j.done += 1;
                    j.save(self.ctx)?;
                }
                Err(e) if i < j.no_return => {
                    error!("step {} failed: {e} ({})", step.as_str(), e.code());
                    // The failed step may be partly applied: undo it too.
                    j.done = i + 1;
                    self.rollback(j)?;
                    return Err(Error::RolledBack { cause: Box::new(e) });
                }
                Err(e) => {
                    error!(
                        "step {} failed after the point of no return: {e}; the next setup run or agent start finishes it",
                        step.as_str()
                    );
                    return Err(e);
                }
            }
        }
        Journal::remove(self.ctx)?;
        Ok(Ending::Completed)
    }

    /// Undoes `j.done` steps, newest first.
    fn rollback(&mut self, j: &mut Journal) -> Result<Ending> {
        warn!("rolling back the {}", j.op.as_str());
        j.direction = Direction::Backward;
        j.done = j.done.min(j.steps.len());
        j.save(self.ctx)?;
        while j.done > 0 {
            let step = j.steps[j.done - 1];
            info!("undo {}", step.as_str());
            self.hit(j, "undo-", step)?;
            if let Err(e) = self.undo(j, step) {
                error!(
                    "cannot undo {}: {e}; the next setup run or agent start tries again",
                    step.as_str()
                );
                return Err(e);
            }
            j.done -= 1;
            j.save(self.ctx)?;
        }
        Journal::remove(self.ctx)?;
        for dir in &j.absent_dirs {
            // Only empty ones: anything else in them is not ours to remove.
            let _ = dmfs::remove_dir(dir);
        }
        info!("rolled back: the device is as it was before the {}", j.op.as_str());
        Ok(Ending::RolledBack)
    }

    /// Finishes or rolls back an interrupted operation.
    pub fn recover(&mut self, j: &mut Journal) -> Result<Ending> {
        warn!("found an interrupted setup operation: {}", j.describe());
        match j.direction {
            Direction::Backward => self.rollback(j),
            Direction::Forward if j.committed() => {
                info!("it had passed its commit point: finishing it");
                match self.forward(j) {
                    Err(Error::RolledBack { cause }) => {
                        error!("finishing failed and was rolled back: {cause}");
                        Ok(Ending::RolledBack)
                    }
                    other => other,
                }
            }
            Direction::Forward => {
                info!("it had not reached its commit point: rolling it back");
                // The step in progress may be partly applied.
                j.done = (j.done + 1).min(j.steps.len());
                self.rollback(j)
            }
        }
    }

    fn to(&self, j: &Journal) -> Result<ClientVersion> {
        j.to.ok_or_else(|| {
            Error::BadSettings(format!("the {} journal has no target version", j.op.as_str()))
        })
    }

    fn apply(&mut self, j: &Journal, step: Step) -> Result<()> {
        let ctx = self.ctx;
        let layout = &ctx.layout;
        match step {
            Step::StageBinaries => {
                let to = self.to(j)?;
                let done = layout.version_dir(&to);
                // A repair replaces the version folder even when it looks whole.
                if j.op != Op::Repair && verify_version_dir(&done, &j.binaries).is_ok() {
                    info!("{} is already in place", done.display());
                    return Ok(());
                }
                let partial = partial_dir(ctx, &to);
                if verify_version_dir(&partial, &j.binaries).is_ok()
                    && partial.join(FILES_RECORD).is_file()
                {
                    return Ok(());
                }
                dmfs::remove_dir_all(&partial)?;
                dmfs::create_dir_all(&partial, dmfs::MODE_DIR)?;
                for b in &j.binaries {
                    failpoint::hit("setup-copy-binary")?;
                    copy_verified(&j.source.join(&b.source_name), &partial.join(&b.name), b)?;
                    info!(
                        "copied {} ({} bytes, SHA-256 {}) to {}",
                        b.source_name,
                        b.size,
                        b.sha256,
                        partial.join(&b.name).display()
                    );
                }
                let record = serde_json::to_vec_pretty(&j.binaries).unwrap_or_default();
                dmfs::write_atomic(&partial.join(FILES_RECORD), &record, MODE_PUBLIC)?;
            }
            Step::PromoteBinaries => {
                let to = self.to(j)?;
                let done = layout.version_dir(&to);
                let partial = partial_dir(ctx, &to);
                if partial.is_dir() {
                    dmfs::remove_dir_all(&done)?;
                    dmfs::rename(&partial, &done)?;
                }
                verify_version_dir(&done, &j.binaries)?;
            }
            Step::WriteSettings => {
                if let Some(text) = &j.new_settings {
                    write_file(&layout.settings_file(), text, MODE_PRIVATE)?;
                }
            }
            Step::WriteIdentity => {
                if let Some(text) = &j.new_identity {
                    dmfs::create_dir_all(&layout.state_dir(), dmfs::MODE_DIR_PRIVATE)?;
                    write_file(&layout.identity_file(), text, MODE_PRIVATE)?;
                }
            }
            Step::WriteUnit => {
                if let Some(text) = &j.new_unit {
                    write_file(&layout.systemd_unit(), text, MODE_PUBLIC)?;
                }
            }
            Step::StopAgent => {
                if self.actor == Actor::Setup {
                    service::stop(ctx)?;
                }
            }
            Step::SwitchPointer => point_at(ctx, Some(&self.to(j)?))?,
            Step::StartAgent => {
                if self.actor == Actor::Setup {
                    self.started = Some(service::start(ctx)?);
                }
            }
            Step::AwaitHealth => {
                if self.actor == Actor::Setup {
                    let to = self.to(j)?;
                    let started = &mut self.started;
                    let h = health::await_healthy(ctx, to, self.health_timeout, || {
                        started.as_mut().and_then(|s| s.exited())
                    })?;
                    info!("the agent {to} is running (pid {})", h.pid);
                }
            }
            Step::RemoveOldVersion => {
                let keep = version_dir_name(&self.to(j)?);
                remove_children_except(&layout.versions_dir(), &[keep.as_str()])?;
            }
            Step::RemovePointer => point_at(ctx, None)?,
            Step::RemoveBinaries => {
                dmfs::remove_dir_all(&layout.install_dir())?;
            }
            Step::RemoveUnit => {
                dmfs::remove_file(&layout.systemd_unit())?;
            }
            Step::RemoveSettings => {
                dmfs::remove_file(&layout.settings_file())?;
            }
            Step::RemoveState => remove_children_except(&layout.state_dir(), &STATE_KEEP)?,
            Step::RemoveCertificates => {
                if let Some(t) = &j.publisher_thumbprint {
                    for name in [StoreName::Privileged, StoreName::Spc] {
                        if dm_shared::store::CertStore::open(layout, name).remove(t)? {
                            info!("removed the publisher {t} from the {name} store");
                        }
                    }
                }
                let my = layout.cert_store_dir(StoreName::My);
                if dmfs::remove_dir_all(&my)? {
                    info!("removed the device's own certificates ({})", my.display());
                }
            }
            Step::RemoveDamaged => {
                point_at(ctx, None)?;
                let keep = j.to.map(|to| format!("{to}.partial"));
                remove_children_except(
                    &layout.versions_dir(),
                    &keep.iter().map(String::as_str).collect::<Vec<_>>(),
                )?;
                dmfs::remove_file(&layout.settings_file())?;
                dmfs::remove_file(&layout.systemd_unit())?;
                remove_children_except(
                    &layout.state_dir(),
                    &["setup-journal.json", "identity.json"],
                )?;
            }
        }
        Ok(())
    }

    fn undo(&mut self, j: &Journal, step: Step) -> Result<()> {
        let ctx = self.ctx;
        let layout = &ctx.layout;
        match step {
            Step::StageBinaries => {
                if let Some(to) = j.to {
                    dmfs::remove_dir_all(&partial_dir(ctx, &to))?;
                }
            }
            Step::PromoteBinaries => {
                // Never remove the version being returned to.
                if let Some(to) = j.to.filter(|to| Some(*to) != j.from) {
                    dmfs::remove_dir_all(&layout.version_dir(&to))?;
                }
            }
            Step::WriteSettings => {
                restore(&layout.settings_file(), &j.backup.settings, MODE_PRIVATE)?
            }
            Step::WriteIdentity => {
                restore(&layout.identity_file(), &j.backup.identity, MODE_PRIVATE)?
            }
            Step::WriteUnit => restore(&layout.systemd_unit(), &j.backup.unit, MODE_PUBLIC)?,
            Step::StopAgent => {
                let has_client = std::fs::metadata(layout.active_pointer()).is_ok();
                if self.actor == Actor::Setup && j.backup.agent_was_running && has_client {
                    info!("restarting the agent that was running before");
                    service::start(ctx)?;
                }
            }
            Step::SwitchPointer | Step::RemovePointer => {
                let back = j.from.filter(|f| layout.version_dir(f).is_dir());
                point_at(ctx, back.as_ref())?;
            }
            Step::StartAgent => {
                if self.actor == Actor::Setup {
                    service::stop(ctx)?;
                }
            }
            Step::AwaitHealth
            | Step::RemoveOldVersion
            | Step::RemoveBinaries
            | Step::RemoveUnit
            | Step::RemoveSettings
            | Step::RemoveState
            | Step::RemoveCertificates
            | Step::RemoveDamaged => {}
        }
        Ok(())
    }
}

/// Whether an operation leaves a client installed.
pub fn leaves_client(op: Op) -> bool {
    !matches!(op, Op::Uninstall)
}
