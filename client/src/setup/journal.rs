//! The setup journal: an operation planned as steps, each with an idempotent `apply` and
//! `undo`, and how far it got.
//!
//! The journal (`var/lib/dm/setup-journal.json`, 0600: it holds the new settings) is written
//! before the first step and after every step. If the process dies at any point, the next
//! setup run or agent start reads it: when fewer than `commit` steps are done the operation is
//! rolled back (every step that may have been applied is undone, newest first), otherwise it is
//! rolled forward (the remaining steps are applied). Everything needed to finish is in the
//! journal or already on the device, so rolling forward never needs the deployment folder.

use std::path::PathBuf;

use dm_shared::fs::{self as dmfs, MODE_PRIVATE};
use dm_shared::{ClientVersion, Context, Error as SharedError, Platform};

use crate::error::Result;

/// The largest journal read back (it holds the settings, unit and identity texts).
const MAX_JOURNAL_BYTES: u64 = 4 * 1024 * 1024;

/// What the operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// Install a client where there was none.
    Install,
    /// Replace an older client.
    Upgrade,
    /// Rewrite the settings of the installed client.
    Reconfigure,
    /// Remove the client.
    Uninstall,
    /// Remove a damaged client and install the staged one.
    Repair,
}

impl Op {
    /// Whether the operation leaves a client installed.
    pub fn leaves_client(self) -> bool {
        !matches!(self, Op::Uninstall)
    }

    /// The name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Install => "install",
            Op::Upgrade => "upgrade",
            Op::Reconfigure => "reconfigure",
            Op::Uninstall => "uninstall",
            Op::Repair => "repair",
        }
    }
}

/// One step of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Copy the new binaries into `versions/<to>.partial`, hashing while copying.
    StageBinaries,
    /// Rename `versions/<to>.partial` to `versions/<to>`.
    PromoteBinaries,
    /// Write the new settings file.
    WriteSettings,
    /// Write the device identity.
    WriteIdentity,
    /// Write the systemd unit.
    WriteUnit,
    /// Stop the running agent.
    StopAgent,
    /// Uninstall: stop the agent and remove it from the services started at boot.
    UnregisterAgent,
    /// Point `opt/dm/current` at `versions/<to>`.
    SwitchPointer,
    /// Start (or restart) the agent.
    StartAgent,
    /// Wait for the agent to report healthy.
    AwaitHealth,
    /// Remove the previous version's folder.
    RemoveOldVersion,
    /// Uninstall: remove the active-version pointer.
    RemovePointer,
    /// Uninstall: remove all client binaries.
    RemoveBinaries,
    /// Uninstall: remove the unit.
    RemoveUnit,
    /// Uninstall: remove the settings.
    RemoveSettings,
    /// Uninstall: remove client state (outbox, cache, packages, identity).
    RemoveState,
    /// Uninstall with `--remove-certificates`.
    RemoveCertificates,
    /// Repair: remove whatever is left of the damaged client (identity is kept).
    RemoveDamaged,
    /// `CertEnrollAction=Enroll`: enroll the device's certificate with the new version's
    /// `dmcertenroll`, before the agent first polls.
    EnrollCertificate,
}

impl Step {
    /// The name for logs and failpoints.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::StageBinaries => "stage-binaries",
            Step::PromoteBinaries => "promote-binaries",
            Step::WriteSettings => "write-settings",
            Step::WriteIdentity => "write-identity",
            Step::WriteUnit => "write-unit",
            Step::StopAgent => "stop-agent",
            Step::UnregisterAgent => "unregister-agent",
            Step::SwitchPointer => "switch-pointer",
            Step::StartAgent => "start-agent",
            Step::AwaitHealth => "await-health",
            Step::RemoveOldVersion => "remove-old-version",
            Step::RemovePointer => "remove-pointer",
            Step::RemoveBinaries => "remove-binaries",
            Step::RemoveUnit => "remove-unit",
            Step::RemoveSettings => "remove-settings",
            Step::RemoveState => "remove-state",
            Step::RemoveCertificates => "remove-certificates",
            Step::RemoveDamaged => "remove-damaged",
            Step::EnrollCertificate => "enroll-certificate",
        }
    }
}

/// Which way the journal is being carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Applying steps.
    Forward,
    /// Undoing steps after a failure.
    Backward,
}

/// One installed program, with what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Binary {
    /// Its installed name (`dmsvc`).
    pub name: String,
    /// Its name in the deployment folder (`dmsvc_linux-aarch64`).
    pub source_name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// Installed as a symbolic link to this program of the same folder (`dm`, the client's
    /// one program, which is `dmsvc` by that name); its size and SHA-256 are the target's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// What was on the device before the operation, to restore on rollback.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Backup {
    /// The old settings file's content.
    pub settings: Option<String>,
    /// The old unit file's content.
    pub unit: Option<String>,
    /// The old identity file's content.
    pub identity: Option<String>,
    /// Whether an agent was running.
    pub agent_was_running: bool,
    /// The `my` store's file names before the operation (an enrollment's are removed on
    /// rollback).
    #[serde(default)]
    pub my_store: Vec<String>,
}

/// The journal of one operation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Journal {
    /// The operation.
    pub op: Op,
    /// The version installed before (none for an install).
    pub from: Option<ClientVersion>,
    /// The version installed after (none for an uninstall).
    pub to: Option<ClientVersion>,
    /// The device platform.
    pub platform: Platform,
    /// The deployment folder (only needed before the binaries are staged).
    pub source: PathBuf,
    /// The programs to install.
    pub binaries: Vec<Binary>,
    /// The new settings file (canonical INI).
    pub new_settings: Option<String>,
    /// The new identity file.
    pub new_identity: Option<String>,
    /// The new unit file.
    pub new_unit: Option<String>,
    /// What to restore on rollback.
    pub backup: Backup,
    /// The publisher of the deployment (for `--remove-certificates`).
    pub publisher_thumbprint: Option<String>,
    /// Folders that did not exist before the operation; a complete rollback removes those
    /// left empty, deepest first.
    #[serde(default)]
    pub absent_dirs: Vec<PathBuf>,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Once this many steps are done, recovery rolls forward instead of back.
    pub commit: usize,
    /// A failure at or after this step does not roll back: the step is retried later.
    pub no_return: usize,
    /// Steps done.
    pub done: usize,
    /// Which way it is going.
    pub direction: Direction,
    /// When the operation started (RFC 3339).
    pub started: String,
}

impl Journal {
    /// Reads the journal of an operation in progress.
    pub fn load(ctx: &Context) -> Result<Option<Journal>> {
        dmfs::read_json(&ctx.layout.setup_journal(), MAX_JOURNAL_BYTES).map_err(|e| match e {
            SharedError::InvalidData { path, reason } => SharedError::InvalidData {
                path,
                reason: format!("{reason}; move it aside and run dmclientsetup --repair"),
            }
            .into(),
            other => other.into(),
        })
    }

    /// Writes the journal durably.
    pub fn save(&self, ctx: &Context) -> Result<()> {
        dmfs::create_dir_all(&ctx.layout.state_dir(), dmfs::MODE_DIR_PRIVATE)?;
        Ok(dmfs::write_json(&ctx.layout.setup_journal(), self, MODE_PRIVATE)?)
    }

    /// Removes the finished journal.
    pub fn remove(ctx: &Context) -> Result<()> {
        dmfs::remove_file(&ctx.layout.setup_journal())?;
        Ok(())
    }

    /// Whether recovery should roll forward.
    pub fn committed(&self) -> bool {
        self.direction == Direction::Forward && self.done >= self.commit
    }

    /// A one-line summary for logs.
    pub fn describe(&self) -> String {
        let v = |v: &Option<ClientVersion>| v.map_or_else(|| "none".to_string(), |v| v.to_string());
        format!(
            "{} {} -> {}, {} of {} steps done ({:?})",
            self.op.as_str(),
            v(&self.from),
            v(&self.to),
            self.done,
            self.steps.len(),
            self.direction
        )
    }
}
