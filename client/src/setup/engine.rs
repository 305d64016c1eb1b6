//! Carrying out a journal: applying steps forward, undoing them backward, and recovering an
//! operation a crash interrupted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dm_shared::digest::HashingReader;
use dm_shared::fs::{self as dmfs, MODE_EXEC, MODE_PRIVATE, MODE_PUBLIC};
use dm_shared::{ClientVersion, Context, StoreName, failpoint};
use log::{error, info, warn};

use super::journal::{Direction, Journal, Op, Step};
use crate::error::{Error, Result};
use crate::health;
use crate::installed::{Binary, FILES_RECORD, verify_version_dir, write_files_record};
use crate::service;

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

/// Copies a deployment binary into the install folder, hashing while copying: the bytes that
/// land are exactly the bytes the journal (and the signed manifest) names, or nothing lands.
fn copy_verified(src: &Path, dest: &Path, b: &Binary) -> Result<()> {
    let input = dmfs::open_regular(src)?;
    let mut reader = HashingReader::new(input, b.size);
    let mut out = dmfs::AtomicFile::create(dest, MODE_EXEC)?;
    std::io::copy(&mut reader, &mut out).map_err(dmfs::io_err("copy into", dest))?;
    reader.finish().check(src, b.size, &b.sha256)?;
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

/// Writes a file of the new client, when the journal has one.
fn write_new(path: &Path, text: &Option<String>, mode: u32) -> Result<()> {
    let Some(text) = text else { return Ok(()) };
    if let Some(dir) = path.parent() {
        dmfs::create_dir_all(dir, dmfs::MODE_DIR)?;
    }
    dmfs::write_atomic(path, text.as_bytes(), mode)?;
    Ok(())
}

/// Uninstall with `--remove-certificates`: the publisher from the privileged and spc stores,
/// and the device's own certificates.
fn remove_certificates(ctx: &Context, publisher: Option<&str>) -> Result<()> {
    if let Some(t) = publisher {
        for name in [StoreName::Privileged, StoreName::Spc] {
            if dm_shared::certstore::CertStore::open(&ctx.layout, name).remove(t)? {
                info!("removed the publisher {t} from the {name} store");
            }
        }
    }
    let my = ctx.layout.cert_store_dir(StoreName::My);
    if dmfs::remove_dir_all(&my)? {
        info!("removed the device's own certificates ({})", my.display());
    }
    Ok(())
}

/// What a repair keeps of the agent's state: the journal and identity, and everything the
/// agent still owes the management point or must not forget (reports not yet sent, actions
/// and their results, run requests, the versions each package had, installed packages, the
/// revocation lists seen). Only the download cache and runtime leftovers go.
const REPAIR_KEEP: [&str; 11] = [
    "setup-journal.json",
    "identity.json",
    "outbox",
    "actions",
    "requests",
    "package-ledger.json",
    "packages",
    "crl-seen.txt",
    "revoked-reported.txt",
    "enrollment.json",
    "cert-rotation.json",
];

/// Repair: removes whatever is left of the damaged client, keeping the staged binaries, the
/// device's identity and what the agent must not lose ([`REPAIR_KEEP`]).
fn remove_damaged(ctx: &Context, to: Option<ClientVersion>) -> Result<()> {
    let layout = &ctx.layout;
    point_at(ctx, None)?;
    let keep = to.map(|to| format!("{to}.partial"));
    remove_children_except(
        &layout.versions_dir(),
        &keep.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    dmfs::remove_file(&layout.settings_file())?;
    dmfs::remove_file(&layout.systemd_unit())?;
    remove_children_except(&layout.state_dir(), &REPAIR_KEEP)
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

/// `CertEnrollAction=Enroll`: runs the new version's `dmcertenroll`, which enrolls unless the
/// device already has a valid certificate. Its exit code is its status code.
fn enroll_certificate(ctx: &Context, to: &ClientVersion) -> Result<()> {
    let program = ctx.layout.version_dir(to).join("dmcertenroll");
    info!("CertEnrollAction=Enroll: running {}", program.display());
    let before = crate::enroll::last_record(ctx);
    let status = ctx
        .command(&program)
        .arg("--device-root")
        .arg(ctx.layout.root())
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| Error::Enrollment {
            code: dm_shared::StatusCode::DM_E_CHILD_FAILED,
            reason: format!("cannot run {}: {e}", program.display()),
        })?;
    if status.success() {
        info!("the device has its client certificate");
        return Ok(());
    }
    let code = status
        .code()
        .and_then(dm_shared::StatusCode::from_exit_code)
        .unwrap_or(dm_shared::StatusCode::DM_E_CHILD_FAILED);
    // The run's own account (the SCEP server's failInfo, say), never its challenge.
    let why = crate::enroll::last_record(ctx)
        .filter(|r| r.result == "failed" && Some(r) != before.as_ref())
        .map_or_else(|| code.to_string(), |r| r.text);
    Err(Error::Enrollment {
        code,
        reason: format!(
            "{} exited with {status}: {why} (see its DMCertEnroll log)",
            program.display()
        ),
    })
}

/// Undoes an enrollment: the `my` store's files that were not there before go, and with them
/// a rotation that names one of them.
fn undo_enrollment(ctx: &Context, before: &[String]) -> Result<()> {
    let dir = ctx.layout.cert_store_dir(StoreName::My);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(()) };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !before.contains(&name) && e.file_type().is_ok_and(|t| t.is_file()) {
            dmfs::remove_file(&e.path())?;
            info!("removed {} (enrolled by the operation being rolled back)", e.path().display());
            removed.push(name);
        }
    }
    let r = crate::enroll::Rotation::load(ctx);
    if r.is_some_and(|r| removed.iter().any(|n| n.starts_with(&r.new))) {
        dmfs::remove_file(&crate::enroll::rotation_path(ctx))?;
    }
    Ok(())
}

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
        let setup = self.actor == Actor::Setup;
        match step {
            Step::StageBinaries => self.stage_binaries(j)?,
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
                write_new(&layout.settings_file(), &j.new_settings, MODE_PRIVATE)?
            }
            Step::WriteIdentity => {
                dmfs::create_dir_all(&layout.state_dir(), dmfs::MODE_DIR_PRIVATE)?;
                write_new(&layout.identity_file(), &j.new_identity, MODE_PRIVATE)?
            }
            Step::WriteUnit => write_new(&layout.systemd_unit(), &j.new_unit, MODE_PUBLIC)?,
            Step::StopAgent if setup => {
                service::stop(ctx)?;
            }
            Step::UnregisterAgent if setup => service::unregister(ctx)?,
            Step::SwitchPointer => point_at(ctx, Some(&self.to(j)?))?,
            Step::StartAgent if setup => self.started = Some(service::start(ctx)?),
            Step::AwaitHealth if setup => {
                let to = self.to(j)?;
                let started = &mut self.started;
                let h = health::await_healthy(ctx, to, self.health_timeout, || {
                    started.as_mut().and_then(|s| s.exited())
                })?;
                info!("the agent {to} is running (pid {})", h.pid);
            }
            // The agent recovering never starts, stops or waits for itself.
            Step::StopAgent | Step::UnregisterAgent | Step::StartAgent | Step::AwaitHealth => {}
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
                remove_certificates(ctx, j.publisher_thumbprint.as_deref())?
            }
            Step::RemoveDamaged => remove_damaged(ctx, j.to)?,
            Step::EnrollCertificate => enroll_certificate(ctx, &self.to(j)?)?,
        }
        Ok(())
    }

    /// Copies the new binaries into `versions/<to>.partial`, hashing while copying.
    fn stage_binaries(&self, j: &Journal) -> Result<()> {
        let to = self.to(j)?;
        let done = self.ctx.layout.version_dir(&to);
        // A repair replaces the version folder even when it looks whole.
        if j.op != Op::Repair && verify_version_dir(&done, &j.binaries).is_ok() {
            info!("{} is already in place", done.display());
            return Ok(());
        }
        let partial = partial_dir(self.ctx, &to);
        if verify_version_dir(&partial, &j.binaries).is_ok() && partial.join(FILES_RECORD).is_file()
        {
            return Ok(());
        }
        dmfs::remove_dir_all(&partial)?;
        dmfs::create_dir_all(&partial, dmfs::MODE_DIR)?;
        for b in &j.binaries {
            failpoint::hit("setup-copy-binary")?;
            let dest = partial.join(&b.name);
            if let Some(target) = &b.link {
                dmfs::symlink_replace(Path::new(target), &dest)?;
                info!("linked {} to {target}", dest.display());
                continue;
            }
            copy_verified(&j.source.join(&b.source_name), &dest, b)?;
            info!(
                "copied {} ({} bytes, SHA-256 {}) to {}",
                b.source_name,
                b.size,
                b.sha256,
                dest.display()
            );
        }
        write_files_record(&partial, &j.binaries)
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
            Step::StopAgent | Step::UnregisterAgent => {
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
            Step::EnrollCertificate => undo_enrollment(ctx, &j.backup.my_store)?,
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use dm_shared::Platform;

    use super::*;
    use crate::setup::journal::Backup;

    struct Device {
        _tmp: tempfile::TempDir,
        ctx: Context,
        source: PathBuf,
    }

    /// A device root and a deployment folder with the four client programs.
    fn device() -> Device {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = Context::for_test(
            tmp.path().join("root"),
            Arc::new(dm_shared::clock::FixedClock::at_unix(1_800_000_000)),
        );
        std::fs::create_dir_all(ctx.layout.root()).unwrap();
        let source = tmp.path().join("folder");
        std::fs::create_dir_all(&source).unwrap();
        Device { _tmp: tmp, ctx, source }
    }

    fn binaries(d: &Device, tamper: bool) -> Vec<Binary> {
        dm_shared::manifest::CLIENT_PROGRAMS
            .iter()
            .map(|p| {
                let source_name = format!("{p}_linux-test");
                let body = format!("#!/bin/sh\n# {p}\n");
                std::fs::write(d.source.join(&source_name), &body).unwrap();
                let sha =
                    dm_shared::pki::sha256_hex(if tamper { b"other" } else { body.as_bytes() });
                Binary {
                    name: p.to_string(),
                    source_name,
                    size: body.len() as u64,
                    sha256: sha,
                    link: None,
                }
            })
            .collect()
    }

    fn journal(d: &Device, op: Op, tamper: bool) -> Journal {
        let plan = op.plan(false, false);
        Journal {
            op,
            from: None,
            to: Some(ClientVersion::new(1, 0, 0, 0)),
            platform: Platform::parse("linux-test").unwrap_or_else(|_| Platform::current()),
            source: d.source.clone(),
            binaries: binaries(d, tamper),
            new_settings: Some("[Environment]\nManagementPoint=https://mp\n".into()),
            new_identity: Some("{\"controller_id\": \"dev-1\"}\n".into()),
            new_unit: Some("[Unit]\n".into()),
            backup: Backup::default(),
            publisher_thumbprint: None,
            absent_dirs: crate::setup::prepare::absent_dirs(&d.ctx),
            steps: plan.steps,
            commit: plan.commit,
            no_return: plan.no_return,
            done: 0,
            direction: Direction::Forward,
            started: "2027-01-15T08:00:00Z".into(),
        }
    }

    fn files(ctx: &Context) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![ctx.layout.root().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() && !p.is_symlink() {
                    stack.push(p.clone());
                }
                out.push(p.strip_prefix(ctx.layout.root()).unwrap().display().to_string());
            }
        }
        out.sort_unstable();
        out
    }

    #[test]
    fn an_install_applies_every_step_and_removes_its_journal() {
        let d = device();
        let mut j = journal(&d, Op::Install, false);
        let ending = Engine::new(&d.ctx, Actor::Agent, Duration::from_secs(1)).execute(&mut j);
        assert_eq!(ending.unwrap(), Ending::Completed);
        assert_eq!(
            crate::installed::installed_version(&d.ctx),
            Some(ClientVersion::new(1, 0, 0, 0))
        );
        let dir = d.ctx.layout.version_dir(&ClientVersion::new(1, 0, 0, 0));
        verify_version_dir(&dir, &j.binaries).unwrap();
        assert!(d.ctx.layout.settings_file().is_file() && d.ctx.layout.identity_file().is_file());
        assert!(!d.ctx.layout.setup_journal().exists());
    }

    /// The client's one program is copied once; each program name is a link to it, checked
    /// as a link (a file put in its place is a damaged client).
    #[test]
    fn the_one_program_is_installed_once_with_a_link_per_program() {
        let d = device();
        let mut j = journal(&d, Op::Install, false);
        let dm = j.binaries[0].clone();
        let links = j.binaries.iter().map(|b| Binary {
            name: b.name.clone(),
            link: Some("dm".into()),
            ..dm.clone()
        });
        j.binaries =
            std::iter::once(Binary { name: "dm".into(), ..dm.clone() }).chain(links).collect();
        let ending = Engine::new(&d.ctx, Actor::Agent, Duration::from_secs(1)).execute(&mut j);
        assert_eq!(ending.unwrap(), Ending::Completed);
        let dir = d.ctx.layout.version_dir(&ClientVersion::new(1, 0, 0, 0));
        assert_eq!(std::fs::read_link(dir.join("dmsvc")).unwrap(), Path::new("dm"));
        verify_version_dir(&dir, &j.binaries).unwrap();
        std::fs::remove_file(dir.join("dmsvc")).unwrap();
        std::fs::copy(dir.join("dm"), dir.join("dmsvc")).unwrap();
        let err = verify_version_dir(&dir, &j.binaries).unwrap_err();
        assert!(err.to_string().contains("a link to dm"), "{err}");
    }

    #[test]
    fn a_failed_step_rolls_everything_back() {
        let d = device();
        let before = files(&d.ctx);
        let mut j = journal(&d, Op::Install, true);
        let err = Engine::new(&d.ctx, Actor::Agent, Duration::from_secs(1)).execute(&mut j);
        assert!(matches!(err, Err(Error::RolledBack { .. })), "{err:?}");
        assert_eq!(
            err.unwrap_err().code(),
            dm_shared::StatusCode::CRYPT_E_HASH_VALUE,
            "the cause's code survives the rollback"
        );
        let after: Vec<String> =
            files(&d.ctx).into_iter().filter(|f| !f.starts_with("var")).collect();
        assert_eq!(after, before.into_iter().filter(|f| !f.starts_with("var")).collect::<Vec<_>>());
        assert!(!d.ctx.layout.setup_journal().exists());
    }

    #[test]
    fn recovery_rolls_back_before_the_commit_point_and_forward_after() {
        for (done, want) in [(2, Ending::RolledBack), (6, Ending::Completed)] {
            let d = device();
            let mut j = journal(&d, Op::Install, false);
            let mut engine = Engine::new(&d.ctx, Actor::Agent, Duration::from_secs(1));
            // Apply the first `done` steps, then "crash" with the journal on disk.
            for i in 0..done {
                engine.apply(&j, j.steps[i]).unwrap();
            }
            j.done = done;
            j.save(&d.ctx).unwrap();
            let mut loaded = Journal::load(&d.ctx).unwrap().unwrap();
            assert_eq!(loaded.committed(), done >= j.commit);
            let ending =
                Engine::new(&d.ctx, Actor::Agent, Duration::from_secs(1)).recover(&mut loaded);
            assert_eq!(ending.unwrap(), want, "after {done} steps");
            let installed = crate::installed::installed_version(&d.ctx);
            assert_eq!(installed.is_some(), want == Ending::Completed, "after {done} steps");
            assert!(!d.ctx.layout.setup_journal().exists());
        }
    }
}
