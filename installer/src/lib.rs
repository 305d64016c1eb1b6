//! DMInstaller: the first program run on a device from a client deployment (a folder, or a
//! `.dmpkg` bundle, on a memory card or pushed by a tethered desktop).
//!
//! In order, each step logged: verify the deployment (signature chained to the device's
//! code-signing roots, nothing revoked or disallowed, valid dates, every file's size and
//! SHA-256, no unlisted files) before touching anything; pick this device's platform binaries;
//! check the device's security policy; copy exactly the signed bytes into a staging folder only
//! root can write (`var/lib/dm/staging/`, 0700), hashing while copying; install the publisher
//! certificate into the `privileged` and `spc` stores as one transaction; then run the staged
//! setup (`dm_<platform> setup`, or an older folder's `dmclientsetup_<platform>`) and exit
//! with its outcome. Nothing is read from the source
//! again after it is staged, so a card swapped meanwhile changes nothing. A locked device
//! refuses the certificate: the installer logs `Access Denied (0x80070005)`, queues a status
//! message for an already installed client's agent to send, leaves the device as it was and
//! does not run setup.

#![forbid(unsafe_code)]

pub mod cli;

use std::path::{Path, PathBuf};

use dm_shared::certstore::{self, CertStore};
use dm_shared::fs::Transaction;
use dm_shared::manifest::{self, VerifiedFolder};
use dm_shared::message::{MessageId, StatusMessage};
use dm_shared::outbox::Outbox;
use dm_shared::policy::SecurityPolicy;
use dm_shared::settings::{CLIENT_SETTINGS_INI, COMMON_INSTALLER_INI};
use dm_shared::{Context, Platform, StatusCode, StoreName, bundle, clock, deployment, failpoint};
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
    /// The deployment: a folder, a `.dmpkg` bundle, or a folder holding one bundle.
    pub source: PathBuf,
    /// This device's platform.
    pub platform: Platform,
}

/// Whether a managed client is installed (its active-version pointer exists).
pub fn client_installed(ctx: &Context) -> bool {
    std::fs::symlink_metadata(ctx.layout.active_pointer()).is_ok()
}

/// The staging folder of one installer run: removed, with the folders made for it, when the
/// run ends however it ends.
struct Staging {
    dir: PathBuf,
    made: Vec<PathBuf>,
}

impl Staging {
    fn new(ctx: &Context) -> Result<Staging, dm_shared::Error> {
        let dir = ctx.layout.staging_dir().join("deployment");
        // What a killed run left behind.
        dm_shared::fs::remove_dir_all(&dir)?;
        let parent = dir.parent().unwrap_or(&dir).to_path_buf();
        let made = dm_shared::fs::create_dir_all(&parent, dm_shared::fs::MODE_DIR_PRIVATE)?;
        Ok(Staging { dir, made })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = dm_shared::fs::remove_dir_all(&self.dir) {
            warn!("could not remove the staging folder: {e}");
        }
        for d in self.made.iter().rev() {
            let _ = dm_shared::fs::remove_dir(d);
        }
    }
}

/// Runs the installer. Returns setup's exit code when setup ran.
pub fn run(ctx: &Context, opts: &Options) -> Result<i32, Error> {
    let source = bundle::locate(&opts.source)?;
    info!("step 1/6: verifying the deployment {}", source.display());
    let trust = certstore::trust(&ctx.layout, ctx.clock.now())?;
    let verified = deployment::verify_source(&source, &trust, ctx.clock.now(), &opts.platform)?;
    let m = &verified.manifest;
    info!(
        "verified client deployment {} {} for {}: {} files, {} bytes, signed by {}",
        m.name,
        m.version,
        m.platforms.iter().map(Platform::as_str).collect::<Vec<_>>().join(", "),
        m.files.len(),
        m.total_size(),
        verified.publisher.describe()
    );
    failpoint::hit("installer-verified")?;

    info!("step 2/6: selecting binaries for this device ({})", opts.platform);
    let setup = deployment::program_command(&verified.manifest, &opts.platform, "dmclientsetup");
    match setup.1 {
        Some(sub) => info!("setup program: {} {sub}", setup.0),
        None => info!("setup program: {}", setup.0),
    }

    info!("step 3/6: checking the device security policy");
    let policy = SecurityPolicy::load(&ctx.layout);
    if policy.locked {
        let reason = format!("{} ({})", policy.reason, policy.source.display());
        return refuse(ctx, &verified, reason);
    }
    info!("{} ({})", policy.reason, policy.source.display());
    failpoint::hit("installer-policy-checked")?;

    info!("step 4/6: staging the signed bytes");
    let staging = match Staging::new(ctx) {
        Ok(s) => s,
        Err(e) if e.is_refusal() => return refuse(ctx, &verified, e.to_string()),
        Err(e) => return Err(e.into()),
    };
    let folder = deployment::stage(&source, &staging.dir, &trust, ctx.clock.now(), &opts.platform)?;
    if folder.manifest != verified.manifest {
        return Err(dm_shared::Error::MalformedManifest {
            path: source.join(manifest::MANIFEST_FILE),
            reason: "the deployment changed while it was copied; nothing was installed".into(),
        }
        .into());
    }
    info!("staged {} files in {}", folder.manifest.files.len(), folder.dir.display());
    failpoint::hit("installer-staged")?;

    info!("step 5/6: installing the publisher certificate into the privileged and spc stores");
    match install_publisher(ctx, &folder) {
        Ok(()) => {}
        Err(e) if e.is_refusal() => return refuse(ctx, &verified, e.to_string()),
        Err(e) => return Err(e.into()),
    }
    failpoint::hit("installer-trusted")?;

    info!("step 6/6: running setup");
    run_setup(ctx, &folder, (&folder.path_of(&setup.0), setup.1))
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
fn refuse(ctx: &Context, folder: &deployment::Verified, reason: String) -> Result<i32, Error> {
    let code = StatusCode::E_ACCESSDENIED;
    warn!(
        "the device refused the publisher certificate ({code}); setup will not run and nothing was changed"
    );
    if client_installed(ctx) {
        let mut msg = StatusMessage::event(
            "DMInstaller",
            MessageId::INSTALLER_CERT_REFUSED,
            code,
            clock::rfc3339(ctx.clock.now()),
            format!(
                "{code}: the device refused the publisher certificate of client deployment {}",
                folder.manifest.version
            ),
        );
        msg.details = vec![reason.clone(), format!("publisher: {}", folder.publisher.describe())];
        match Outbox::open(&ctx.layout).push(&msg) {
            Ok(seq) => info!(
                "status message {} queued for the management point (outbox entry {seq})",
                MessageId::INSTALLER_CERT_REFUSED
            ),
            Err(e) => warn!("could not queue the status message for the management point: {e}"),
        }
    } else {
        info!("no managed client is installed, so no status message can be sent");
    }
    Err(Error::AccessDenied { reason })
}

fn run_setup(
    ctx: &Context,
    folder: &VerifiedFolder,
    (setup, subcommand): (&Path, Option<&str>),
) -> Result<i32, Error> {
    if let Some(runner) = ctx.env.get(RUNNER_ENV) {
        warn!("running child programs through {RUNNER_ENV}={runner:?}");
    }
    let mut cmd = ctx.command(setup);
    cmd.args(subcommand);
    cmd.arg("--source").arg(&folder.dir).arg("--device-root").arg(ctx.layout.root());
    match deployment::settings_file(folder) {
        Some(name) => {
            let s = folder.path_of(name);
            info!("settings for setup: {}", s.display());
            cmd.arg("--settings").arg(s);
        }
        None => info!(
            "the folder has no {CLIENT_SETTINGS_INI} or {COMMON_INSTALLER_INI}; setup uses the device's settings"
        ),
    }
    let line = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    info!("starting {line}");
    log::logger().flush();
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use dm_shared::devpki::{self, Purpose, Spec};
    use dm_shared::manifest::{PackageKind, SignRequest, sign_folder};
    use dm_shared::pki::Cert;
    use dm_shared::{ClientVersion, message::MessageId};

    use super::*;

    struct Case {
        _tmp: tempfile::TempDir,
        ctx: Context,
        folder: PathBuf,
        root_pem: String,
    }

    /// A device root and a signed client deployment for this platform whose setup exits 0.
    fn case() -> Case {
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let spec = |cn: &str, purpose| Spec {
            common_name: cn.into(),
            purpose,
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(86_400),
        };
        let root = devpki::root_ca(&spec("test root", Purpose::Ca)).unwrap();
        let publisher =
            devpki::issue(&root, &spec("test publisher", Purpose::CodeSigning)).unwrap();
        let folder = tmp.path().join("card");
        std::fs::create_dir_all(&folder).unwrap();
        let platform = Platform::current();
        for prog in manifest::CLIENT_PROGRAMS {
            let p = folder.join(manifest::program_file(prog, &platform));
            std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let req = SignRequest {
            kind: PackageKind::ClientDeployment,
            name: "dm-client".into(),
            version: ClientVersion::new(1, 0, 0, 0),
            platforms: vec![platform],
            metadata: None,
            programs: vec![],
            now,
        };
        let chain = Cert::parse_pem(publisher.cert_pem.as_bytes(), Path::new("p")).unwrap();
        sign_folder(&folder, &req, publisher.key_pem.as_bytes(), Path::new("k"), &chain).unwrap();
        let ctx =
            Context::for_test(tmp.path().join("device"), Arc::new(dm_shared::clock::SystemClock));
        Case { _tmp: tmp, ctx, folder, root_pem: root.cert_pem }
    }

    impl Case {
        fn trust_root(&self) {
            let dir = self.ctx.layout.cert_store_dir(StoreName::Root);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("root.pem"), &self.root_pem).unwrap();
        }

        fn run(&self) -> Result<i32, Error> {
            run(&self.ctx, &Options { source: self.folder.clone(), platform: Platform::current() })
        }

        fn in_store(&self, store: StoreName) -> usize {
            CertStore::open(&self.ctx.layout, store).list().unwrap().len()
        }
    }

    #[test]
    fn a_trusted_folder_installs_its_publisher_and_runs_setup() {
        let c = case();
        c.trust_root();
        assert_eq!(c.run().unwrap(), 0);
        assert_eq!((c.in_store(StoreName::Privileged), c.in_store(StoreName::Spc)), (1, 1));
    }

    #[test]
    fn an_untrusted_folder_changes_nothing() {
        let c = case();
        let err = c.run().unwrap_err();
        assert_eq!(err.code(), StatusCode::CERT_E_UNTRUSTEDROOT, "{err}");
        assert!(!c.ctx.layout.cert_stores_dir().join("privileged").exists());
    }

    #[test]
    fn a_locked_device_refuses_and_tells_an_installed_client() {
        let c = case();
        c.trust_root();
        let policy = c.ctx.layout.security_policy_file();
        std::fs::write(&policy, "[DeviceSecurity]\nLocked=true\nReason=carrier lock\n").unwrap();
        let err = c.run().unwrap_err();
        assert_eq!(err.code(), StatusCode::E_ACCESSDENIED);
        assert_eq!(c.in_store(StoreName::Privileged), 0);
        assert!(Outbox::open(&c.ctx.layout).pending().unwrap().is_empty(), "no client, no message");

        // With a client installed, its agent is told.
        std::fs::create_dir_all(c.ctx.layout.install_dir()).unwrap();
        std::os::unix::fs::symlink("versions/0.9.0.0", c.ctx.layout.active_pointer()).unwrap();
        assert!(c.run().is_err());
        let pending = Outbox::open(&c.ctx.layout).pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].1.message_id, MessageId::INSTALLER_CERT_REFUSED);
        assert!(pending[0].1.details[0].contains("carrier lock"), "{:?}", pending[0].1.details);
    }
}
