//! Everything setup works out before it changes the device: the verified deployment folder and
//! its settings, whether those settings make a working client, and the journal of the chosen
//! operation (new files, what to restore, the folders that did not exist).

use std::path::{Path, PathBuf};

use dm_shared::certstore::{self, CertStore};
use dm_shared::deployment::MULTICALL;
use dm_shared::fs as dmfs;
use dm_shared::manifest::{self, CLIENT_PROGRAMS, VerifiedFolder};
use dm_shared::settings::{AuthMode, CLIENT_SETTINGS_INI, CertEnrollAction, Settings};
use dm_shared::{ClientVersion, Context, Platform, StoreName, clock, deployment};
use log::info;

use super::journal::{Backup, Direction, Journal, Op};
use super::options::Options;
use crate::error::{Error, Result};
use crate::identity::{self, Identity};
use crate::installed::Binary;
use crate::service;

/// A verified client deployment folder and the settings setup uses from it.
#[derive(Debug)]
pub struct Staged {
    /// The folder, verified for this device's platform.
    pub folder: VerifiedFolder,
    /// The settings file used, if any.
    pub settings_path: Option<PathBuf>,
    /// Its settings (the defaults when the folder has none).
    pub settings: Settings,
}

impl Staged {
    /// The staged client's version.
    pub fn version(&self) -> ClientVersion {
        self.folder.manifest.version
    }

    /// Verifies the folder, checks its publisher is privileged on this device and reads its
    /// settings.
    pub fn load(ctx: &Context, opts: &Options) -> Result<Staged> {
        info!("verifying the deployment folder {}", opts.source.display());
        let trust = certstore::trust(&ctx.layout, ctx.clock.now())?;
        let folder = deployment::verify(&opts.source, &trust, ctx.clock.now(), &opts.platform)?;
        let publisher = &folder.publisher;
        if !CertStore::open(&ctx.layout, StoreName::Privileged).contains(publisher.thumbprint())? {
            return Err(Error::NotPrivileged {
                subject: publisher.subject().to_string(),
                thumbprint: publisher.thumbprint().to_string(),
            });
        }
        info!(
            "staged client {} for {}, signed by {}",
            folder.manifest.version,
            opts.platform,
            publisher.describe()
        );
        let settings_path = choose_settings(&folder, opts.settings.as_deref())?;
        let settings = match &settings_path {
            Some(p) => {
                info!("settings: {}", p.display());
                // Parsed from the bytes that were checked against the signature, read once:
                // the file is never opened again, so swapping it changes nothing.
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                let (s, warnings) = Settings::parse(p, &folder.read_signed(name)?)
                    .map_err(dm_shared::Error::from)?;
                for w in warnings {
                    log::warn!("{w}");
                }
                s
            }
            None => {
                info!("the folder has no settings file; using the defaults");
                Settings::defaults()
            }
        };
        Ok(Staged { folder, settings_path, settings })
    }
}

/// The settings file setup uses: `--settings` (which must be a signed file of the folder),
/// else the deployment's own (see [`deployment::settings_file`]).
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
    let found = deployment::settings_file(folder);
    if found == Some(CLIENT_SETTINGS_INI) && folder.manifest.file("DMCommonInstaller.ini").is_some()
    {
        info!(
            "the folder has both {CLIENT_SETTINGS_INI} and DMCommonInstaller.ini; {CLIENT_SETTINGS_INI} wins"
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
pub fn check_usable(ctx: &Context, s: &Settings, file: &Path) -> Result<()> {
    let place = |section: &str, key: &str| format!("{} [{section}] {key}", file.display());
    if s.environment.management_points.is_empty() {
        return Err(Error::BadSettings(format!(
            "{} is required: the agent has no management point to poll",
            place("Environment", "ManagementPoint")
        )));
    }
    if s.installation.cert_enroll_action == CertEnrollAction::Enroll
        && s.certificates.scep_url.is_none()
    {
        return Err(Error::BadSettings(format!(
            "{} is required with CertEnrollAction=Enroll: there is no SCEP server to enroll with",
            place("Certificates", "ScepUrl")
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

/// Logs every key the new settings overwrite, secrets redacted; returns how many changed.
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
        let (section, key) = (def.section, def.key);
        match (a, b) {
            (a, b) if a == b => continue,
            (Some(a), Some(b)) => info!(
                "settings: [{section}] {key} overwritten: {} -> {}",
                show(def.secret, a),
                show(def.secret, b)
            ),
            (None, Some(b)) => info!("settings: [{section}] {key} set to {}", show(def.secret, b)),
            (Some(a), None) => info!(
                "settings: [{section}] {key} removed (was {}); the default {:?} applies",
                show(def.secret, a),
                def.default
            ),
            (None, None) => continue,
        }
        changes += 1;
    }
    changes
}

fn read_text(path: &Path) -> Option<String> {
    dmfs::read_optional(path, dm_shared::settings::MAX_SETTINGS_BYTES)
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
}

/// The folders an operation may create, deepest first, that do not exist yet.
pub(crate) fn absent_dirs(ctx: &Context) -> Vec<PathBuf> {
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

/// What the version folder will hold: the client's one program `dm` and a link to it for each
/// program name, or (from a folder made before the client was one program) each program.
fn binaries_of(folder: &VerifiedFolder, platform: &Platform) -> Result<Vec<Binary>> {
    let binary = |name: &str, source_name: String, link: Option<String>| {
        let f = folder
            .manifest
            .file(&source_name)
            .ok_or_else(|| dm_shared::Error::MissingFile { path: folder.path_of(&source_name) })?;
        Ok(Binary {
            name: name.to_string(),
            source_name,
            size: f.size,
            sha256: f.sha256.clone(),
            link,
        })
    };
    match deployment::program_command(&folder.manifest, platform, "dmsvc") {
        (source, Some(_)) => std::iter::once(binary(MULTICALL, source.clone(), None))
            .chain(
                CLIENT_PROGRAMS.iter().map(|p| binary(p, source.clone(), Some(MULTICALL.into()))),
            )
            .collect(),
        (_, None) => CLIENT_PROGRAMS
            .iter()
            .map(|p| binary(p, manifest::program_file(p, platform), None))
            .collect(),
    }
}

/// What an operation writes, and what it would restore.
#[derive(Debug)]
pub struct Change {
    /// The new settings file (canonical INI).
    pub settings: String,
    /// The identity the client will have.
    pub identity: Identity,
    /// The new unit file.
    pub unit: String,
    /// What is on the device now.
    pub backup: Backup,
    /// How many settings the new file changes.
    pub overwrites: usize,
}

impl Change {
    /// Works out the new files of `op` and backs up the current ones.
    pub fn new(ctx: &Context, staged: &Staged, op: Op) -> Result<Change> {
        if op.leaves_client() {
            let file = staged.settings_path.as_deref().unwrap_or(Path::new("(defaults)"));
            check_usable(ctx, &staged.settings, file)?;
        }
        // A repair replaces a damaged identity rather than failing on it.
        let existing = if op == Op::Repair {
            Identity::load(ctx).ok().flatten()
        } else {
            Identity::load(ctx)?
        };
        let identity = identity::choose(ctx, &staged.settings, existing.as_ref());
        let backup = Backup {
            settings: read_text(&ctx.layout.settings_file()),
            unit: read_text(&ctx.layout.systemd_unit()),
            identity: read_text(&ctx.layout.identity_file()),
            agent_was_running: service::is_running(ctx),
            my_store: my_store_files(ctx),
        };
        // The new settings overwrite the device's, including values a user changed: say which.
        let overwrites = match (&backup.settings, op.leaves_client()) {
            (Some(old), true) => {
                log_overwrites(Some(old), &staged.settings, &ctx.layout.settings_file())
            }
            _ => 0,
        };
        Ok(Change {
            settings: staged.settings.to_ini(),
            identity,
            unit: service::unit_text(ctx),
            backup,
            overwrites,
        })
    }

    /// Whether the device already has exactly these files.
    pub fn is_noop(&self) -> bool {
        self.overwrites == 0
            && self.backup.settings.as_deref() == Some(self.settings.as_str())
            && self.backup.identity.as_deref() == Some(self.identity.to_json().as_str())
            && self.backup.unit.as_deref() == Some(self.unit.as_str())
    }

    /// The journal that carries `op` out, from `installed` to the staged client.
    pub fn into_journal(
        self,
        ctx: &Context,
        opts: &Options,
        staged: &Staged,
        op: Op,
        installed: Option<ClientVersion>,
    ) -> Result<Journal> {
        let staged_version = Some(staged.version());
        let (from, to) = match op {
            Op::Install => (None, staged_version),
            Op::Upgrade | Op::Repair => (installed, staged_version),
            Op::Reconfigure => (installed, installed),
            Op::Uninstall => (installed, None),
        };
        let enroll = staged.settings.installation.cert_enroll_action
            == dm_shared::settings::CertEnrollAction::Enroll;
        let plan = op.plan(opts.remove_certificates, enroll);
        let keep = op.leaves_client();
        Ok(Journal {
            op,
            from,
            to,
            platform: opts.platform.clone(),
            source: staged.folder.dir.clone(),
            binaries: binaries_of(&staged.folder, &opts.platform)?,
            new_settings: keep.then_some(self.settings),
            new_identity: keep.then(|| self.identity.to_json()),
            new_unit: keep.then_some(self.unit),
            backup: self.backup,
            publisher_thumbprint: Some(staged.folder.publisher.thumbprint().to_string()),
            absent_dirs: absent_dirs(ctx),
            steps: plan.steps,
            commit: plan.commit,
            no_return: plan.no_return,
            done: 0,
            direction: Direction::Forward,
            started: clock::rfc3339(ctx.clock.now()),
        })
    }
}

/// The `my` store's file names now.
fn my_store_files(ctx: &Context) -> Vec<String> {
    let dir = ctx.layout.cert_store_dir(StoreName::My);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort_unstable();
    names
}
