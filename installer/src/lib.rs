//! DMInstaller: the first program run on a device from a client deployment folder.
//!
//! In order, each step logged: verify the folder (signature chained to the device's `root`
//! store with the codeSigning usage, valid dates, every file's size and SHA-256, no unlisted
//! files) before touching anything; pick this device's platform binaries; check the device's
//! security policy; install the publisher certificate into the `privileged` and `spc` stores
//! as one transaction; then run the folder's `dmclientsetup_<platform>` and exit with its
//! outcome. A locked device refuses the certificate: the installer logs
//! `Access Denied (0x80070005)`, queues a status message for an already installed client's
//! agent to send, leaves the device as it was and does not run setup.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use dm_shared::fs::Transaction;
use dm_shared::manifest::{self, VerifiedFolder};
use dm_shared::outbox::{Outbox, StatusMessage, message_id};
use dm_shared::policy::SecurityPolicy;
use dm_shared::settings::{CLIENT_SETTINGS_INI, COMMON_INSTALLER_INI};
use dm_shared::store::{self, CertStore};
use dm_shared::{Context, Platform, StatusCode, StoreName, clock};
use log::{error, info, warn};

pub use dm_shared::context::RUNNER_ENV;

/// Everything that can stop the installer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Verification, trust, file system or settings failure from the shared library.
    #[error(transparent)]
    Shared(#[from] dm_shared::Error),

    /// The device refused the publisher certificate.
    #[error("the device refused the publisher certificate: {reason}")]
    AccessDenied {
        /// The policy's reason or the file system's refusal.
        reason: String,
    },

    /// Setup could not be started.
    #[error("cannot run {}: {source}{hint}", path.display())]
    SetupNotStarted {
        /// The setup program.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
        /// What to check.
        hint: &'static str,
    },

    /// Setup died from a signal.
    #[error("{} was killed by signal {signal}", path.display())]
    SetupKilled {
        /// The setup program.
        path: PathBuf,
        /// The signal.
        signal: i32,
    },
}

impl Error {
    /// The status code that reports this error (and, through it, the exit code).
    pub fn code(&self) -> StatusCode {
        match self {
            Error::Shared(e) => e.code(),
            Error::AccessDenied { .. } => StatusCode::E_ACCESSDENIED,
            Error::SetupNotStarted { .. } | Error::SetupKilled { .. } => {
                StatusCode::DM_E_CHILD_FAILED
            }
        }
    }
}

/// How to run the installer.
#[derive(Debug, Clone)]
pub struct Options {
    /// The deployment folder.
    pub source: PathBuf,
    /// This device's platform.
    pub platform: Platform,
}

/// The settings file a deployment folder's setup uses: `ClientSettings.ini` when present,
/// else `DMCommonInstaller.ini`, else none.
pub fn deployment_settings(folder: &VerifiedFolder) -> Option<PathBuf> {
    [CLIENT_SETTINGS_INI, COMMON_INSTALLER_INI]
        .into_iter()
        .find(|name| folder.manifest.file(name).is_some())
        .map(|name| folder.path_of(name))
}

/// Whether a managed client is installed (its active-version pointer exists).
pub fn client_installed(ctx: &Context) -> bool {
    std::fs::symlink_metadata(ctx.layout.active_pointer()).is_ok()
}

/// Runs the installer. Returns setup's exit code when setup ran.
pub fn run(ctx: &Context, opts: &Options) -> Result<i32, Error> {
    let source = &opts.source;
    info!("step 1/5: verifying deployment folder {}", source.display());
    let roots = store::trusted_roots(&ctx.layout)?;
    let folder = manifest::verify_folder(source, &roots, ctx.clock.now())?;
    let m = &folder.manifest;
    info!(
        "verified client deployment {} {} for {}: {} files, {} bytes, signed by {}",
        m.name,
        m.version,
        m.platforms.iter().map(Platform::as_str).collect::<Vec<_>>().join(", "),
        m.files.len(),
        m.total_size(),
        folder.publisher.describe()
    );
    if m.kind != manifest::ManifestKind::ClientDeployment {
        return Err(dm_shared::Error::MalformedManifest {
            path: source.join(manifest::MANIFEST_FILE),
            reason: format!("it is a {:?} package, not a client deployment", m.kind),
        }
        .into());
    }

    info!("step 2/5: selecting binaries for this device ({})", opts.platform);
    if !m.platforms.contains(&opts.platform) {
        return Err(dm_shared::Error::PlatformUnsupported {
            platform: opts.platform.to_string(),
            available: m.platforms.iter().map(Platform::as_str).collect::<Vec<_>>().join(", "),
        }
        .into());
    }
    let setup = folder.path_of(&manifest::program_file("dmclientsetup", &opts.platform));
    info!("setup program: {}", setup.display());

    info!("step 3/5: checking the device security policy");
    let policy = SecurityPolicy::load(&ctx.layout);
    if policy.locked {
        return refuse(ctx, &folder, format!("{} ({})", policy.reason, policy.source.display()));
    }
    info!("{} ({})", policy.reason, policy.source.display());

    info!("step 4/5: installing the publisher certificate into the privileged and spc stores");
    match install_publisher(ctx, &folder) {
        Ok(()) => {}
        Err(e) if e.is_refusal() => return refuse(ctx, &folder, e.to_string()),
        Err(e) => return Err(e.into()),
    }

    info!("step 5/5: running setup");
    run_setup(ctx, &folder, &setup)
}

fn install_publisher(ctx: &Context, folder: &VerifiedFolder) -> Result<(), dm_shared::Error> {
    let mut tx = Transaction::new();
    for name in [StoreName::Privileged, StoreName::Spc] {
        let store = CertStore::open(&ctx.layout, name);
        dm_shared::failpoint::hit("installer-store-add")?;
        if store.add(&folder.publisher, &mut tx)? {
            info!(
                "installed {} into the {name} store ({})",
                folder.publisher.describe(),
                store.path_for(folder.publisher.thumbprint()).display()
            );
        } else {
            info!("the {name} store already has {}", folder.publisher.describe());
        }
    }
    tx.commit();
    Ok(())
}

/// The locked-device path: log, queue a status message for an installed client, change
/// nothing else, and stop before setup.
fn refuse(ctx: &Context, folder: &VerifiedFolder, reason: String) -> Result<i32, Error> {
    let code = StatusCode::E_ACCESSDENIED;
    warn!(
        "the device refused the publisher certificate ({code}); setup will not run and nothing was changed"
    );
    if client_installed(ctx) {
        let msg = StatusMessage {
            message_id: message_id::INSTALLER_CERT_REFUSED,
            code,
            component: "DMInstaller".into(),
            time: clock::rfc3339(ctx.clock.now()),
            text: format!(
                "{code}: the device refused the publisher certificate of client deployment {}",
                folder.manifest.version
            ),
            action_id: None,
            execution: None,
            final_result: true,
            details: vec![reason.clone(), format!("publisher: {}", folder.publisher.describe())],
            cancel: false,
        };
        match Outbox::open(&ctx.layout).push(&msg) {
            Ok(seq) => info!(
                "status message {} queued for the management point (outbox entry {seq})",
                message_id::INSTALLER_CERT_REFUSED
            ),
            Err(e) => warn!("could not queue the status message for the management point: {e}"),
        }
    } else {
        info!("no managed client is installed, so no status message can be sent");
    }
    Err(Error::AccessDenied { reason })
}

fn run_setup(ctx: &Context, folder: &VerifiedFolder, setup: &Path) -> Result<i32, Error> {
    let mut argv: Vec<std::ffi::OsString> = ctx.env.runner().into_iter().map(Into::into).collect();
    if !argv.is_empty() {
        warn!(
            "running child programs through {RUNNER_ENV}={:?}",
            ctx.env.get(RUNNER_ENV).unwrap_or("")
        );
    }
    argv.push(setup.into());
    argv.extend(["--source".into(), folder.dir.clone().into_os_string()]);
    argv.extend(["--device-root".into(), ctx.layout.root().as_os_str().to_owned()]);
    match deployment_settings(folder) {
        Some(s) => {
            info!("settings for setup: {}", s.display());
            argv.extend(["--settings".into(), s.into_os_string()]);
        }
        None => info!(
            "the folder has no {CLIENT_SETTINGS_INI} or {COMMON_INSTALLER_INI}; setup uses the device's settings"
        ),
    }
    info!("starting {}", argv.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "));
    log::logger().flush();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    for (k, v) in ctx.env.iter() {
        cmd.env(k, v);
    }
    let status = cmd.status().map_err(|source| {
        let hint = if source.kind() == std::io::ErrorKind::PermissionDenied {
            " (is the memory card mounted noexec? copy the folder to the device and run it from there)"
        } else {
            ""
        };
        Error::SetupNotStarted { path: setup.to_path_buf(), source, hint }
    })?;
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => {
            let meaning =
                StatusCode::from_exit_code(code).map(|c| format!(": {c}")).unwrap_or_default();
            if code == 0 {
                info!("setup finished successfully");
            } else {
                error!("setup exited with code {code}{meaning}");
            }
            Ok(code)
        }
        (None, Some(signal)) => Err(Error::SetupKilled { path: setup.to_path_buf(), signal }),
        (None, None) => Err(Error::SetupKilled { path: setup.to_path_buf(), signal: 0 }),
    }
}
