//! DMClientSetup: installs, upgrades, reconfigures, uninstalls and repairs the client from a
//! verified deployment folder, crash-safely.
//!
//! Setup reads `ClientInstallAction` from the folder's settings (`ClientSettings.ini` wins
//! over `DMCommonInstaller.ini`), compares the installed client version with the staged one
//! and picks an operation (see [`decide`]). Each operation is a journal of steps (see
//! [`journal`]); a kill or power loss at any step is finished or rolled back by the next setup
//! run or agent start. Every run leaves `var/lib/dm/setup-result.json` and a status message in
//! the outbox for the agent to report.

pub mod engine;
pub mod journal;

use std::path::{Path, PathBuf};
use std::time::Duration;

use dm_shared::fs::{self as dmfs, MODE_PRIVATE};
use dm_shared::manifest::{self, CLIENT_PROGRAMS, ManifestKind, VerifiedFolder};
use dm_shared::outbox::{Outbox, StatusMessage};
use dm_shared::settings::{
    AuthMode, CLIENT_SETTINGS_INI, COMMON_INSTALLER_INI, CertEnrollAction, InstallAction, Settings,
};
use dm_shared::store::{self, CertStore};
use dm_shared::{ClientVersion, Context, Platform, StatusCode, StoreName, clock};
use log::{error, info, warn};

use self::engine::{Actor, Ending, Engine, FILES_RECORD};
use self::journal::{Backup, Binary, Direction, Journal, Op, Step};
use crate::error::{Error, Result};
use crate::identity::{self, Identity};
use crate::service;

/// Status message ids setup reports (see docs/status-messages.md).
pub mod message_id {
    /// The client was installed.
    pub const INSTALLED: u32 = 11010;
    /// The client was upgraded.
    pub const UPGRADED: u32 = 11011;
    /// The client's settings were reconfigured.
    pub const RECONFIGURED: u32 = 11012;
    /// No action: a newer client is installed.
    pub const NO_ACTION: u32 = 11014;
    /// Setup failed; the device was returned to its previous state.
    pub const FAILED: u32 = 11015;
    /// The client was repaired.
    pub const REPAIRED: u32 = 11016;
    /// Certificate enrollment failed.
    pub const ENROLL_FAILED: u32 = 11017;
    /// An interrupted setup was finished or rolled back.
    pub const RECOVERED: u32 = 11018;
}

/// How to run setup.
#[derive(Debug, Clone)]
pub struct Options {
    /// The deployment folder.
    pub source: PathBuf,
    /// The settings file to use (must be a signed file of the folder).
    pub settings: Option<PathBuf>,
    /// Uninstall the damaged client and install the staged one.
    pub repair: bool,
    /// Uninstall also removes the certificates DMInstaller installed and the device's own.
    pub remove_certificates: bool,
    /// This device's platform.
    pub platform: Platform,
    /// How long to wait for a new agent to report healthy.
    pub health_timeout: Duration,
}

/// What setup decided to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Carry out an operation.
    Run(Op),
    /// A newer client is installed: nothing changes.
    NoAction(String),
    /// Nothing to do (nothing to reconfigure or remove).
    Nothing(String),
}

/// The table of the source documents: the installed client against the staged one and
/// `ClientInstallAction`.
pub fn decide(
    action: InstallAction,
    installed: Option<ClientVersion>,
    staged: ClientVersion,
    repair: bool,
) -> Decision {
    if repair {
        return Decision::Run(Op::Repair);
    }
    match (action, installed) {
        (InstallAction::Install, None) => Decision::Run(Op::Install),
        (InstallAction::Install, Some(v)) if v < staged => Decision::Run(Op::Upgrade),
        (InstallAction::Install, Some(v)) if v == staged => Decision::Run(Op::Reconfigure),
        (InstallAction::Install, Some(v)) => Decision::NoAction(format!(
            "the installed client {v} is newer than the staged {staged}; nothing was changed"
        )),
        (InstallAction::None, None) => {
            Decision::Nothing("no client is installed, so there is nothing to reconfigure".into())
        }
        (InstallAction::None, Some(_)) => Decision::Run(Op::Reconfigure),
        (InstallAction::Uninstall, None) => {
            Decision::Nothing("no client is installed, so there is nothing to remove".into())
        }
        (InstallAction::Uninstall, Some(_)) => Decision::Run(Op::Uninstall),
    }
}

/// The result of the last setup run, `var/lib/dm/setup-result.json`, reported by the agent.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SetupResult {
    /// The operation (`install`, …, or `none`).
    pub op: String,
    /// `success`, `failure`, `no-action`.
    pub result: String,
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
    /// Whether the agent has reported it.
    #[serde(default)]
    pub reported: bool,
}

impl SetupResult {
    /// Reads the last result.
    pub fn load(ctx: &Context) -> Option<SetupResult> {
        let bytes = dmfs::read_optional(&ctx.layout.setup_result(), 64 * 1024).ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes it.
    pub fn save(&self, ctx: &Context) -> Result<()> {
        dmfs::create_dir_all(&ctx.layout.state_dir(), dmfs::MODE_DIR_PRIVATE)?;
        let body = serde_json::to_vec_pretty(self).unwrap_or_default();
        dmfs::write_atomic(&ctx.layout.setup_result(), &body, MODE_PRIVATE)?;
        Ok(())
    }
}

/// The installed client version: where the active-version pointer points.
pub fn installed_version(ctx: &Context) -> Option<ClientVersion> {
    let target = std::fs::read_link(ctx.layout.active_pointer()).ok()?;
    target.file_name()?.to_str()?.parse().ok()
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

/// Inspects the installed client without changing anything.
pub fn inspect(ctx: &Context) -> ClientState {
    let layout = &ctx.layout;
    let mut problems = Vec::new();
    let installed = installed_version(ctx);
    let pointer_exists = std::fs::symlink_metadata(layout.active_pointer()).is_ok();
    if pointer_exists && installed.is_none() {
        problems.push(format!(
            "{} does not point at a version folder",
            layout.active_pointer().display()
        ));
    }
    if let Some(v) = installed {
        let dir = layout.version_dir(&v);
        match engine::read_files_record(&dir) {
            Ok(binaries) => {
                if let Err(e) = engine::verify_version_dir(&dir, &binaries) {
                    problems.push(e.to_string());
                }
                for prog in CLIENT_PROGRAMS {
                    if !binaries.iter().any(|b| b.name == prog) {
                        problems
                            .push(format!("{prog} is not in {}", dir.join(FILES_RECORD).display()));
                    }
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
        match Settings::load(&layout.settings_file()) {
            Ok(_) => {}
            Err(e) => problems.push(e.to_string()),
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

/// Finishes or rolls back an operation a crash interrupted, if there is one. The caller holds
/// the setup lock.
pub fn recover(ctx: &Context, actor: Actor, health_timeout: Duration) -> Result<Option<Ending>> {
    let Some(mut j) = Journal::load(ctx)? else { return Ok(None) };
    let mut engine = Engine::new(ctx, actor, health_timeout);
    let ending = engine.recover(&mut j)?;
    let v = |v: Option<ClientVersion>| v.map_or_else(|| "none".to_string(), |v| v.to_string());
    let message = match ending {
        Ending::Completed => {
            format!("finished an interrupted {} ({} -> {})", j.op.as_str(), v(j.from), v(j.to))
        }
        Ending::RolledBack => format!(
            "rolled back an interrupted {} ({} -> {}); the client is as it was",
            j.op.as_str(),
            v(j.from),
            v(j.to)
        ),
    };
    info!("{message}");
    if ending == Ending::Completed && j.op == Op::Uninstall {
        cleanup_after_uninstall(ctx);
    } else {
        let (result, code) = match ending {
            Ending::Completed => ("success", StatusCode::S_OK),
            Ending::RolledBack => ("failure", StatusCode::ERROR_INSTALL_FAILURE),
        };
        let to = if ending == Ending::Completed { j.to } else { j.from };
        record(ctx, j.op.as_str(), result, code, j.from, to, message_id::RECOVERED, message, None);
    }
    Ok(Some(ending))
}

/// Writes the result record and queues the status message (logging, never failing: the
/// operation's outcome stands either way).
#[allow(clippy::too_many_arguments)]
fn record(
    ctx: &Context,
    op: &str,
    result: &str,
    code: StatusCode,
    from: Option<ClientVersion>,
    to: Option<ClientVersion>,
    message_id: u32,
    message: String,
    log_file: Option<&Path>,
) {
    // The record is for the agent to report; without a client there is none (the log stays).
    if from.is_none() && installed_version(ctx).is_none() {
        return;
    }
    let time = clock::rfc3339(ctx.clock.now());
    let r = SetupResult {
        op: op.to_string(),
        result: result.to_string(),
        code,
        from,
        to,
        time: time.clone(),
        message: message.clone(),
        log_file: log_file.map(Path::to_path_buf),
        reported: false,
    };
    if let Err(e) = r.save(ctx) {
        warn!("could not write the setup result {}: {e}", ctx.layout.setup_result().display());
    }
    // Only a device with a client has an agent to send it.
    if installed_version(ctx).is_some() {
        let msg = StatusMessage {
            message_id,
            code,
            component: "DMClientSetup".into(),
            time,
            text: format!("{code}: {message}"),
            action_id: None,
            execution: None,
            final_result: true,
            details: log_file.map(|p| vec![format!("log: {}", p.display())]).unwrap_or_default(),
            cancel: false,
        };
        if let Err(e) = Outbox::open(&ctx.layout).push(&msg) {
            warn!("could not queue the status message: {e}");
        }
    }
}

fn cleanup_after_uninstall(ctx: &Context) {
    let _ = dmfs::remove_dir(&ctx.layout.state_dir());
    for f in [
        ctx.layout.agent_pid_file(),
        ctx.layout.agent_health_file(),
        ctx.layout.agent_lock_file(),
        ctx.layout.setup_lock(),
    ] {
        let _ = dmfs::remove_file(&f);
    }
    let _ = dmfs::remove_dir(&ctx.layout.run_dir());
}

/// The folders an operation may create, deepest first, that do not exist yet.
fn absent_dirs(ctx: &Context) -> Vec<PathBuf> {
    let l = &ctx.layout;
    let unit_dir = l.systemd_unit().parent().map(Path::to_path_buf).unwrap_or_default();
    let candidates = [
        l.versions_dir(),
        l.install_dir(),
        l.root().join("opt"),
        unit_dir.clone(),
        unit_dir.parent().map(Path::to_path_buf).unwrap_or_default(),
        l.config_dir(),
        l.state_dir(),
        l.root().join("var/lib"),
    ];
    candidates
        .into_iter()
        .filter(|d| !d.as_os_str().is_empty() && std::fs::symlink_metadata(d).is_err())
        .collect()
}

/// The settings file setup uses: `--settings` (which must be a signed file of the folder),
/// else `ClientSettings.ini`, else `DMCommonInstaller.ini`.
fn choose_settings(folder: &VerifiedFolder, given: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(p) = given {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let same_dir =
            p.parent().and_then(|d| d.canonicalize().ok()) == folder.dir.canonicalize().ok();
        if !same_dir || folder.manifest.file(name).is_none() {
            return Err(Error::UnsignedSettings { path: p.to_path_buf() });
        }
        return Ok(Some(p.to_path_buf()));
    }
    let found = [CLIENT_SETTINGS_INI, COMMON_INSTALLER_INI]
        .into_iter()
        .find(|n| folder.manifest.file(n).is_some());
    if found == Some(CLIENT_SETTINGS_INI) && folder.manifest.file(COMMON_INSTALLER_INI).is_some() {
        info!(
            "the folder has both {CLIENT_SETTINGS_INI} and {COMMON_INSTALLER_INI}; {CLIENT_SETTINGS_INI} wins"
        );
    }
    Ok(found.map(|n| folder.path_of(n)))
}

/// Whether the device's `my` store holds a certificate with its key (provisioned by the device
/// vendor, or enrolled earlier).
fn has_client_certificate(ctx: &Context) -> bool {
    let store = CertStore::open(&ctx.layout, StoreName::My);
    store
        .list()
        .unwrap_or_default()
        .iter()
        .any(|c| store.dir().join(format!("{}.key", c.thumbprint())).is_file())
}

/// Checks that settings make a client that can reach its management point.
fn check_usable(ctx: &Context, s: &Settings, file: &Path) -> Result<()> {
    let place = |section: &str, key: &str| format!("{} [{section}] {key}", file.display());
    if s.environment.management_point.is_none() {
        return Err(Error::BadSettings(format!(
            "{} is required: the agent has no management point to poll",
            place("Environment", "ManagementPoint")
        )));
    }
    match s.communication.authentication {
        AuthMode::TargetToken if s.communication.target_token.is_none() => {
            Err(Error::BadSettings(format!(
                "{} is required with Authentication=TargetToken",
                place("Communication", "TargetToken")
            )))
        }
        AuthMode::GatewayToken if s.communication.gateway_token.is_none() => {
            Err(Error::BadSettings(format!(
                "{} is required with Authentication=GatewayToken",
                place("Communication", "GatewayToken")
            )))
        }
        AuthMode::Certificate
            if !(has_client_certificate(ctx)
                || (s.installation.cert_enroll_action == CertEnrollAction::Enroll
                    && s.certificates.scep_url.is_some())) =>
        {
            Err(Error::BadSettings(format!(
                "{} needs a certificate with its key in the device's my store ({}), or CertEnrollAction=Enroll and a ScepUrl",
                place("Communication", "Authentication"),
                ctx.layout.cert_store_dir(StoreName::My).display()
            )))
        }
        _ => Ok(()),
    }
}

/// Logs every key the new settings overwrite, secrets redacted.
fn log_overwrites(old_text: Option<&str>, new: &Settings, path: &Path) -> usize {
    let old = old_text
        .and_then(|t| Settings::parse(path, t.as_bytes()).ok())
        .map(|(s, _)| s)
        .unwrap_or_else(Settings::defaults);
    let mut changes = 0;
    let show =
        |secret: bool, v: &str| if secret { "<redacted>".to_string() } else { format!("{v:?}") };
    for def in dm_shared::settings::KEYS {
        let (a, b) =
            (old.explicit_value(def.section, def.key), new.explicit_value(def.section, def.key));
        if a == b {
            continue;
        }
        changes += 1;
        match (a, b) {
            (Some(a), Some(b)) => info!(
                "settings: [{}] {} overwritten: {} -> {}",
                def.section,
                def.key,
                show(def.secret, a),
                show(def.secret, b)
            ),
            (None, Some(b)) => {
                info!("settings: [{}] {} set to {}", def.section, def.key, show(def.secret, b))
            }
            (Some(a), None) => info!(
                "settings: [{}] {} removed (was {}); the default {:?} applies",
                def.section,
                def.key,
                show(def.secret, a),
                def.default
            ),
            (None, None) => {}
        }
    }
    changes
}

fn read_text(path: &Path) -> Option<String> {
    dmfs::read_optional(path, dm_shared::settings::MAX_SETTINGS_BYTES)
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
}

fn binaries_of(folder: &VerifiedFolder, platform: &Platform) -> Result<Vec<Binary>> {
    CLIENT_PROGRAMS
        .iter()
        .map(|prog| {
            let source_name = manifest::program_file(prog, platform);
            let f = folder.manifest.file(&source_name).ok_or_else(|| {
                dm_shared::Error::MissingFile { path: folder.path_of(&source_name) }
            })?;
            Ok(Binary {
                name: (*prog).to_string(),
                source_name,
                size: f.size,
                sha256: f.sha256.clone(),
            })
        })
        .collect()
}

fn agent_running(ctx: &Context) -> bool {
    match service::mode(ctx) {
        service::Mode::Direct => service::running_pid(ctx).is_some(),
        service::Mode::Systemd => std::process::Command::new("systemctl")
            .args(["is-active", "--quiet", "dmsvc.service"])
            .status()
            .is_ok_and(|s| s.success()),
    }
}

/// What a setup run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The decision.
    pub decision: Decision,
    /// The status to exit with.
    pub code: StatusCode,
    /// A sentence for the log and the result record.
    pub message: String,
}

/// Runs setup: recover, verify, decide, carry out, record. `log_file` names this run's log in
/// the result record.
pub fn run(ctx: &Context, opts: &Options, log_file: Option<&Path>) -> Result<Outcome> {
    let lock_path = ctx.layout.setup_lock();
    let _lock = dmfs::try_lock(&lock_path)?
        .ok_or(Error::AlreadyRunning { what: "dmclientsetup", lock: lock_path.clone() })?;

    if let Some(ending) = recover(ctx, Actor::Setup, opts.health_timeout)? {
        info!("recovery: {ending:?}; continuing with this run");
    }

    info!("verifying the deployment folder {}", opts.source.display());
    let roots = store::trusted_roots(&ctx.layout)?;
    let folder = manifest::verify_folder(&opts.source, &roots, ctx.clock.now())?;
    let m = &folder.manifest;
    if m.kind != ManifestKind::ClientDeployment {
        return Err(dm_shared::Error::MalformedManifest {
            path: opts.source.join(manifest::MANIFEST_FILE),
            reason: "not a client deployment".into(),
        }
        .into());
    }
    if !m.platforms.contains(&opts.platform) {
        return Err(dm_shared::Error::PlatformUnsupported {
            platform: opts.platform.to_string(),
            available: m.platforms.iter().map(Platform::as_str).collect::<Vec<_>>().join(", "),
        }
        .into());
    }
    let publisher = &folder.publisher;
    if !CertStore::open(&ctx.layout, StoreName::Privileged).contains(publisher.thumbprint())? {
        return Err(Error::NotPrivileged {
            subject: publisher.subject().to_string(),
            thumbprint: publisher.thumbprint().to_string(),
        });
    }
    info!("staged client {} for {}, signed by {}", m.version, opts.platform, publisher.describe());

    let settings_path = choose_settings(&folder, opts.settings.as_deref())?;
    let settings = match &settings_path {
        Some(p) => {
            info!("settings: {}", p.display());
            Settings::load(p)?
        }
        None => {
            info!("the folder has no settings file; using the defaults");
            Settings::defaults()
        }
    };
    let action = settings.installation.client_install_action;
    let installed = installed_version(ctx);
    let state = inspect(ctx);
    if installed.is_some() && !state.problems.is_empty() && !opts.repair {
        warn!(
            "the installed client has problems: {}; run dmclientsetup --repair to fix them",
            state.problems.join("; ")
        );
    }
    let decision = decide(action, installed, m.version, opts.repair);
    let v = |v: Option<ClientVersion>| v.map_or_else(|| "none".to_string(), |v| v.to_string());
    info!(
        "ClientInstallAction={action:?}, installed client {}, staged client {}: {decision:?}",
        v(installed),
        m.version
    );

    let op = match decision.clone() {
        Decision::Run(op) => op,
        Decision::NoAction(msg) => {
            info!("{msg}");
            record(
                ctx,
                "none",
                "no-action",
                StatusCode::S_FALSE,
                installed,
                installed,
                message_id::NO_ACTION,
                msg.clone(),
                log_file,
            );
            return Ok(Outcome { decision, code: StatusCode::S_FALSE, message: msg });
        }
        Decision::Nothing(msg) => {
            info!("{msg}");
            return Ok(Outcome { decision, code: StatusCode::S_FALSE, message: msg });
        }
    };
    if engine::leaves_client(op) {
        check_usable(ctx, &settings, settings_path.as_deref().unwrap_or(Path::new("(defaults)")))?;
    }

    let existing_identity =
        if op == Op::Repair { Identity::load(ctx).ok().flatten() } else { Identity::load(ctx)? };
    let new_identity = identity::choose(ctx, &settings, existing_identity.as_ref());
    let backup = Backup {
        settings: read_text(&ctx.layout.settings_file()),
        unit: read_text(&ctx.layout.systemd_unit()),
        identity: read_text(&ctx.layout.identity_file()),
        agent_was_running: agent_running(ctx),
    };
    let new_settings = settings.to_ini();
    let new_unit = service::unit_text(ctx);
    let (from, to) = match op {
        Op::Install => (None, Some(m.version)),
        Op::Upgrade | Op::Reconfigure => {
            (installed, if op == Op::Upgrade { Some(m.version) } else { installed })
        }
        Op::Uninstall => (installed, None),
        Op::Repair => (installed, Some(m.version)),
    };

    // The new settings overwrite the device's, including values a user changed: say which.
    let changes = if engine::leaves_client(op) && backup.settings.is_some() {
        log_overwrites(backup.settings.as_deref(), &settings, &ctx.layout.settings_file())
    } else {
        0
    };
    if op == Op::Reconfigure {
        let identity_same = backup.identity.as_deref() == Some(new_identity.to_json().as_str());
        if changes == 0
            && backup.settings.as_deref() == Some(new_settings.as_str())
            && identity_same
            && backup.unit.as_deref() == Some(new_unit.as_str())
        {
            let msg = format!(
                "the client {} already has these settings; nothing was changed",
                v(installed)
            );
            info!("{msg}");
            if !backup.agent_was_running {
                info!("the agent is not running: starting it");
                let mut started = service::start(ctx)?;
                if let Some(version) = installed {
                    crate::health::await_healthy(ctx, version, opts.health_timeout, || {
                        started.exited()
                    })?;
                }
            }
            record(
                ctx,
                op.as_str(),
                "success",
                StatusCode::S_OK,
                installed,
                installed,
                message_id::RECONFIGURED,
                msg.clone(),
                log_file,
            );
            return Ok(Outcome { decision, code: StatusCode::S_OK, message: msg });
        }
        info!("{changes} settings change; the agent restarts to read them");
    }

    let steps: Vec<Step> = match op {
        Op::Install => vec![
            Step::StageBinaries,
            Step::PromoteBinaries,
            Step::WriteSettings,
            Step::WriteIdentity,
            Step::WriteUnit,
            Step::SwitchPointer,
            Step::StartAgent,
            Step::AwaitHealth,
        ],
        Op::Upgrade => vec![
            Step::StageBinaries,
            Step::PromoteBinaries,
            Step::WriteSettings,
            Step::WriteIdentity,
            Step::WriteUnit,
            Step::StopAgent,
            Step::SwitchPointer,
            Step::StartAgent,
            Step::AwaitHealth,
            Step::RemoveOldVersion,
        ],
        Op::Reconfigure => vec![
            Step::WriteSettings,
            Step::WriteIdentity,
            Step::WriteUnit,
            Step::StartAgent,
            Step::AwaitHealth,
        ],
        Op::Uninstall => {
            let mut s = vec![
                Step::StopAgent,
                Step::RemovePointer,
                Step::RemoveBinaries,
                Step::RemoveUnit,
                Step::RemoveSettings,
                Step::RemoveState,
            ];
            if opts.remove_certificates {
                s.push(Step::RemoveCertificates);
            }
            s
        }
        Op::Repair => vec![
            Step::StageBinaries,
            Step::StopAgent,
            Step::RemoveDamaged,
            Step::PromoteBinaries,
            Step::WriteSettings,
            Step::WriteIdentity,
            Step::WriteUnit,
            Step::SwitchPointer,
            Step::StartAgent,
            Step::AwaitHealth,
        ],
    };
    let index_after =
        |step: Step| steps.iter().position(|s| *s == step).map_or(steps.len(), |i| i + 1);
    let (commit, no_return) = match op {
        Op::Install | Op::Upgrade => {
            (index_after(Step::SwitchPointer), index_after(Step::AwaitHealth))
        }
        Op::Reconfigure => (index_after(Step::WriteUnit), steps.len()),
        Op::Uninstall => (index_after(Step::RemovePointer), index_after(Step::RemovePointer)),
        Op::Repair => (index_after(Step::StopAgent), index_after(Step::StopAgent)),
    };
    let mut j = Journal {
        op,
        from,
        to,
        platform: opts.platform.clone(),
        source: folder.dir.clone(),
        binaries: binaries_of(&folder, &opts.platform)?,
        new_settings: engine::leaves_client(op).then_some(new_settings),
        new_identity: engine::leaves_client(op).then(|| new_identity.to_json()),
        new_unit: engine::leaves_client(op).then_some(new_unit),
        backup,
        publisher_thumbprint: Some(publisher.thumbprint().to_string()),
        absent_dirs: absent_dirs(ctx),
        steps,
        commit,
        no_return,
        done: 0,
        direction: Direction::Forward,
        started: clock::rfc3339(ctx.clock.now()),
    };
    if let Some(id) = &j.new_identity {
        info!("controller id: {}", new_identity.controller_id);
        let _ = id;
    }

    let mut engine = Engine::new(ctx, Actor::Setup, opts.health_timeout);
    let result = engine.execute(&mut j);
    let (id, verb) = match op {
        Op::Install => (message_id::INSTALLED, "installed"),
        Op::Upgrade => (message_id::UPGRADED, "upgraded"),
        Op::Reconfigure => (message_id::RECONFIGURED, "reconfigured"),
        Op::Uninstall => (0, "uninstalled"),
        Op::Repair => (message_id::REPAIRED, "repaired"),
    };
    match result {
        Ok(_) => {
            let message = match op {
                Op::Upgrade => format!("client upgraded from {} to {}", v(from), v(to)),
                Op::Uninstall => format!(
                    "client {} uninstalled; logs kept in {}",
                    v(from),
                    ctx.layout.log_dir().display()
                ),
                _ => format!("client {} {verb}", v(to)),
            };
            info!("{message}");
            if op == Op::Uninstall {
                cleanup_after_uninstall(ctx);
                return Ok(Outcome { decision, code: StatusCode::S_OK, message });
            }
            record(
                ctx,
                op.as_str(),
                "success",
                StatusCode::S_OK,
                from,
                to,
                id,
                message.clone(),
                log_file,
            );
            if settings.installation.cert_enroll_action == CertEnrollAction::Enroll
                && op != Op::Reconfigure
            {
                enroll(ctx, log_file)?;
            }
            Ok(Outcome { decision, code: StatusCode::S_OK, message })
        }
        Err(e) => {
            let code = e.code();
            let message = format!("{} {} -> {} failed: {e}", op.as_str(), v(from), v(to));
            record(
                ctx,
                op.as_str(),
                "failure",
                code,
                from,
                installed_version(ctx),
                message_id::FAILED,
                message,
                log_file,
            );
            Err(e)
        }
    }
}

/// Runs the installed `dmcertenroll` (after install, upgrade or repair with
/// `CertEnrollAction=Enroll`).
fn enroll(ctx: &Context, log_file: Option<&Path>) -> Result<()> {
    let program = ctx.layout.active_pointer().join("dmcertenroll");
    info!("CertEnrollAction=Enroll: running {}", program.display());
    let mut argv: Vec<std::ffi::OsString> = ctx.env.runner().into_iter().map(Into::into).collect();
    argv.push(program.clone().into_os_string());
    argv.push("--device-root".into());
    argv.push(ctx.layout.root().as_os_str().to_owned());
    let status = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .envs(service::child_env(ctx))
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| Error::Enrollment {
            code: StatusCode::DM_E_CHILD_FAILED,
            reason: format!("cannot run {}: {e}", program.display()),
        })?;
    if status.success() {
        info!("certificate enrollment succeeded");
        return Ok(());
    }
    let code =
        status.code().and_then(StatusCode::from_exit_code).unwrap_or(StatusCode::DM_E_CHILD_FAILED);
    let reason = format!(
        "{} exited with {status}: {code}; the client is installed but has no client certificate (see the DMCertEnroll log)",
        program.display()
    );
    error!("certificate enrollment failed: {reason}");
    let installed = installed_version(ctx);
    record(
        ctx,
        "enroll",
        "failure",
        code,
        installed,
        installed,
        message_id::ENROLL_FAILED,
        format!("certificate enrollment failed: {reason}"),
        log_file,
    );
    Err(Error::Enrollment { code, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> ClientVersion {
        s.parse().unwrap()
    }

    #[test]
    fn the_table_of_the_source_documents() {
        use InstallAction as IA;
        let staged = v("1.2.0.0");
        let older = Some(v("1.1.9.9"));
        let same = Some(staged);
        let newer = Some(v("1.2.0.1"));
        assert_eq!(decide(IA::Install, None, staged, false), Decision::Run(Op::Install));
        assert_eq!(decide(IA::Install, older, staged, false), Decision::Run(Op::Upgrade));
        assert_eq!(decide(IA::Install, same, staged, false), Decision::Run(Op::Reconfigure));
        assert!(matches!(decide(IA::Install, newer, staged, false), Decision::NoAction(_)));
        assert!(
            matches!(decide(IA::None, None, staged, false), Decision::Nothing(m) if m.contains("nothing to reconfigure"))
        );
        for installed in [older, same, newer] {
            assert_eq!(decide(IA::None, installed, staged, false), Decision::Run(Op::Reconfigure));
            assert_eq!(
                decide(IA::Uninstall, installed, staged, false),
                Decision::Run(Op::Uninstall)
            );
        }
        assert!(
            matches!(decide(IA::Uninstall, None, staged, false), Decision::Nothing(m) if m.contains("nothing to remove"))
        );
        assert_eq!(decide(IA::Uninstall, newer, staged, true), Decision::Run(Op::Repair));
    }
}
