//! The installed client as every program sees it: which version is active, what each version
//! folder holds, whether the installation is complete, and the result of the last setup run.
//!
//! Setup writes this state; the agent, `dmclientsetup --status` and the installer read it.

use std::path::{Path, PathBuf};

use dm_shared::fs::{self as dmfs, MODE_PRIVATE, MODE_PUBLIC};
use dm_shared::manifest::CLIENT_PROGRAMS;
use dm_shared::{ClientVersion, Context, Settings, StatusCode, digest};

use crate::error::Result;
use crate::identity::Identity;
use crate::service;
pub use crate::setup::journal::Binary;
use crate::setup::journal::Journal;

/// The record of installed binaries in each version folder.
pub const FILES_RECORD: &str = ".files.json";

/// The largest record read back (files record, setup result).
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// The installed client version: where the active-version pointer points.
pub fn installed_version(ctx: &Context) -> Option<ClientVersion> {
    let target = std::fs::read_link(ctx.layout.active_pointer()).ok()?;
    target.file_name()?.to_str()?.parse().ok()
}

/// Checks that a version folder holds exactly the expected binaries (size and SHA-256), and
/// that each link is a link to its program.
pub fn verify_version_dir(dir: &Path, binaries: &[Binary]) -> Result<()> {
    for b in binaries {
        let path = dir.join(&b.name);
        if let Some(target) = &b.link {
            match std::fs::read_link(&path) {
                Ok(t) if t == Path::new(target) => continue,
                _ => {
                    return Err(dm_shared::Error::HashMismatch {
                        path,
                        what: "link",
                        by: "the version folder's record",
                        expected: format!("a link to {target}"),
                        actual: "something else".into(),
                    }
                    .into());
                }
            }
        }
        digest::hash_file(&path, b.size)?.check(&path, b.size, &b.sha256)?;
    }
    Ok(())
}

/// Reads a version folder's record of its binaries.
pub fn read_files_record(dir: &Path) -> Result<Vec<Binary>> {
    let path = dir.join(FILES_RECORD);
    dmfs::read_json(&path, MAX_RECORD_BYTES)?
        .ok_or_else(|| dm_shared::Error::MissingFile { path }.into())
}

/// Writes a version folder's record of its binaries.
pub fn write_files_record(dir: &Path, binaries: &[Binary]) -> Result<()> {
    Ok(dmfs::write_json(&dir.join(FILES_RECORD), binaries, MODE_PUBLIC)?)
}

/// How the last setup run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It did what it set out to do.
    Success,
    /// It failed; the device is as it was (or recovery finishes it).
    Failure,
    /// Nothing needed doing (a newer client is installed).
    NoAction,
}

impl Outcome {
    /// `success`, `failure` or `no-action`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::NoAction => "no-action",
        }
    }
}

/// The result of the last setup run, `var/lib/dm/setup-result.json`, reported by the agent.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SetupResult {
    /// The operation (`install`, …, `enroll`, or `none`), for people.
    pub op: String,
    /// How it ended.
    pub result: Outcome,
    /// The status code.
    pub code: StatusCode,
    /// The client version before.
    pub from: Option<ClientVersion>,
    /// The client version after.
    pub to: Option<ClientVersion>,
    /// When (RFC 3339).
    pub time: String,
    /// What happened.
    pub message: String,
    /// The setup log file.
    pub log_file: Option<PathBuf>,
}

impl SetupResult {
    /// Reads the last result. An unreadable record is logged and counts as none.
    pub fn load(ctx: &Context) -> Option<SetupResult> {
        let path = ctx.layout.setup_result();
        dmfs::read_json(&path, MAX_RECORD_BYTES)
            .inspect_err(|e| log::warn!("ignoring the setup result: {e}"))
            .ok()
            .flatten()
    }

    /// Writes it.
    pub fn save(&self, ctx: &Context) -> Result<()> {
        dmfs::create_dir_all(&ctx.layout.state_dir(), dmfs::MODE_DIR_PRIVATE)?;
        Ok(dmfs::write_json(&ctx.layout.setup_result(), self, MODE_PRIVATE)?)
    }
}

/// What `dmclientsetup --status` reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClientState {
    /// The installed version.
    pub installed: Option<ClientVersion>,
    /// Whether the installed client is complete: binaries matching their record, readable
    /// settings, the unit and an identity.
    pub complete: bool,
    /// What is wrong, if anything.
    pub problems: Vec<String>,
    /// An interrupted operation waiting for recovery.
    pub interrupted: Option<String>,
    /// The running agent's pid.
    pub agent_pid: Option<u32>,
    /// The controller id.
    pub controller_id: Option<String>,
}

/// What is wrong with the files of installed version `v`.
fn version_problems(ctx: &Context, v: ClientVersion) -> Vec<String> {
    let dir = ctx.layout.version_dir(&v);
    let binaries = match read_files_record(&dir) {
        Ok(b) => b,
        Err(e) => return vec![e.to_string()],
    };
    let mut problems = Vec::new();
    if let Err(e) = verify_version_dir(&dir, &binaries) {
        problems.push(e.to_string());
    }
    for prog in CLIENT_PROGRAMS {
        if !binaries.iter().any(|b| b.name == prog) {
            problems.push(format!("{prog} is not in {}", dir.join(FILES_RECORD).display()));
        }
    }
    problems
}

/// Inspects the installed client without changing anything.
pub fn inspect(ctx: &Context) -> ClientState {
    let layout = &ctx.layout;
    let mut problems = Vec::new();
    let installed = installed_version(ctx);
    if std::fs::symlink_metadata(layout.active_pointer()).is_ok() && installed.is_none() {
        problems.push(format!(
            "{} does not point at a version folder",
            layout.active_pointer().display()
        ));
    }
    if let Some(v) = installed {
        problems.extend(version_problems(ctx, v));
        if let Err(e) = Settings::load(&layout.settings_file()) {
            problems.push(e.to_string());
        }
        if !layout.systemd_unit().is_file() {
            problems.push(format!("{} is missing", layout.systemd_unit().display()));
        }
        match Identity::load(ctx) {
            Ok(Some(_)) => {}
            Ok(None) => problems.push(format!("{} is missing", layout.identity_file().display())),
            Err(e) => problems.push(e.to_string()),
        }
    }
    let interrupted = match Journal::load(ctx) {
        Ok(j) => j.map(|j| j.describe()),
        Err(e) => Some(e.to_string()),
    };
    ClientState {
        installed,
        complete: installed.is_some() && problems.is_empty() && interrupted.is_none(),
        problems,
        interrupted,
        agent_pid: service::running_pid(ctx),
        controller_id: Identity::load(ctx).ok().flatten().map(|i| i.controller_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ctx() -> (tempfile::TempDir, Context) {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context::for_test(dir.path(), Arc::new(dm_shared::clock::FixedClock::at_unix(0)));
        (dir, ctx)
    }

    #[test]
    fn a_device_without_a_client_is_not_damaged() {
        let (_d, ctx) = ctx();
        let s = inspect(&ctx);
        assert_eq!((s.installed, s.complete, s.problems.len()), (None, false, 0));
    }

    #[test]
    fn a_changed_binary_and_missing_files_are_problems() {
        let (_d, ctx) = ctx();
        let v = ClientVersion::new(1, 0, 0, 0);
        let dir = ctx.layout.version_dir(&v);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("dmsvc"), b"agent").unwrap();
        let b = Binary {
            name: "dmsvc".into(),
            source_name: "dmsvc_x".into(),
            size: 5,
            sha256: dm_shared::pki::sha256_hex(b"agent"),
            link: None,
        };
        write_files_record(&dir, &[b]).unwrap();
        std::fs::create_dir_all(ctx.layout.install_dir()).unwrap();
        std::os::unix::fs::symlink("versions/1.0.0.0", ctx.layout.active_pointer()).unwrap();
        assert_eq!(installed_version(&ctx), Some(v));
        let s = inspect(&ctx);
        assert!(!s.complete);
        assert!(s.problems.iter().any(|p| p.contains("dminstaller is not in")), "{s:?}");
        assert!(s.problems.iter().any(|p| p.contains("ClientSettings.ini")), "{s:?}");
        std::fs::write(dir.join("dmsvc"), b"AGENT").unwrap();
        let s = inspect(&ctx);
        assert!(s.problems.iter().any(|p| p.contains("SHA-256")), "{s:?}");
    }

    #[test]
    fn setup_results_round_trip_and_damage_reads_as_none() {
        let (_d, ctx) = ctx();
        assert_eq!(SetupResult::load(&ctx), None);
        let r = SetupResult {
            op: "install".into(),
            result: Outcome::Success,
            code: StatusCode::S_OK,
            from: None,
            to: Some(ClientVersion::new(1, 0, 0, 0)),
            time: "2026-11-24T13:20:01Z".into(),
            message: "client 1.0.0.0 installed".into(),
            log_file: None,
        };
        r.save(&ctx).unwrap();
        assert_eq!(SetupResult::load(&ctx), Some(r));
        std::fs::write(ctx.layout.setup_result(), b"{").unwrap();
        assert_eq!(SetupResult::load(&ctx), None);
    }
}
