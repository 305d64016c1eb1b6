//! The client deployment a desktop installs on its tethered devices: the bundle its agent
//! staged (docs/tether.md), or one named on the command line. It is verified on the desktop
//! against the desktop's own trust (root store, `spc` store, revocation) before a byte of it
//! leaves for a device, and unpacked so the installer for each device's platform is at hand.

use std::path::{Path, PathBuf};

use dm_shared::fs as dmfs;
use dm_shared::manifest::Manifest;
use dm_shared::vocab::PackageKind;
use dm_shared::{Context, Platform, bundle, certstore, digest};
use log::info;

use crate::error::{Error, Result};

/// Where the desktop's agent stages client deployments.
pub fn staged_dir(ctx: &Context) -> PathBuf {
    ctx.layout.tether_dir().join("staged")
}

/// A verified client deployment bundle.
#[derive(Debug)]
pub struct Deployment {
    /// The bundle file, as copied to devices.
    pub bundle: PathBuf,
    /// Its signed manifest.
    pub manifest: Manifest,
    /// The folder it was unpacked (and verified) into on the desktop.
    pub unpacked: PathBuf,
    /// The bundle's SHA-256 when it was verified: what is copied must still be this.
    pub sha256: String,
}

impl Deployment {
    /// The bundle's file name.
    pub fn file_name(&self) -> String {
        bundle::file_name(&self.manifest)
    }

    /// The installer for `platform`, verified on the desktop, if the bundle has one: its
    /// file name, where it was unpacked, its signed SHA-256, and the first argument that makes
    /// it the installer (the client's one program `dm_<platform>` is run as `… installer`; an
    /// older bundle's `dminstaller_<platform>` needs none).
    pub fn installer(&self, platform: &Platform) -> Option<Installer> {
        let (name, subcommand) =
            dm_shared::deployment::program_command(&self.manifest, platform, "dminstaller");
        let entry = self.manifest.file(&name)?;
        Some(Installer {
            local: self.unpacked.join(&name),
            sha256: entry.sha256.clone(),
            name,
            subcommand,
        })
    }
}

/// A deployment's installer, as [`Deployment::installer`] finds it.
#[derive(Debug, Clone)]
pub struct Installer {
    /// Its file name in the deployment.
    pub name: String,
    /// Where the desktop unpacked it.
    pub local: PathBuf,
    /// Its signed SHA-256.
    pub sha256: String,
    /// The first argument that makes it the installer, if it needs one.
    pub subcommand: Option<&'static str>,
}

/// The bundle the desktop's agent staged, if there is one.
pub fn find_staged(ctx: &Context) -> Result<PathBuf> {
    let dir = staged_dir(ctx);
    let none = || {
        Error::NoBundle(format!(
            "no client deployment is staged in {}: advertise one to this desktop, or name a bundle with --bundle",
            dir.display()
        ))
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(none()),
        Err(e) => return Err(dmfs::io_err("list", &dir)(e).into()),
    };
    let mut found: Vec<PathBuf> =
        entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| bundle::is_bundle(p)).collect();
    found.sort();
    found.pop().ok_or_else(none)
}

/// Verifies `bundle` against the desktop's trust and unpacks it under the desktop's tether
/// folder (once per bundle content). A bundle that does not verify is an error: it is never
/// copied to a device.
pub fn prepare(ctx: &Context, bundle_path: &Path) -> Result<Deployment> {
    let now = ctx.clock.now();
    let trust = certstore::trust(&ctx.layout, now)?;
    let hashed = digest::hash_file(bundle_path, crate::copy::MAX_FILE)?;
    let dest = ctx.layout.tether_dir().join("unpacked").join(&hashed.sha256[..16]);
    dmfs::remove_dir_all(&dest)?;
    let folder = match bundle::unpack(bundle_path, &dest, &trust, now) {
        Ok(f) => f,
        Err(e) => {
            let _ = dmfs::remove_dir_all(&dest);
            return Err(e.into());
        }
    };
    certstore::require_spc_publisher(&ctx.layout, &folder.publisher)?;
    // Only the current deployment stays unpacked.
    if let (Some(parent), Some(mine)) = (dest.parent(), dest.file_name()) {
        for old in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            if old.file_name() != mine {
                let _ = dmfs::remove_dir_all(&old.path());
            }
        }
    }
    if folder.manifest.kind != PackageKind::ClientDeployment {
        return Err(Error::NoBundle(format!(
            "{} is a {} package, not a client deployment",
            bundle_path.display(),
            folder.manifest.kind
        )));
    }
    info!(
        "client deployment {} {} verified: {} (publisher {})",
        folder.manifest.name,
        folder.manifest.version,
        bundle_path.display(),
        folder.publisher.subject()
    );
    Ok(Deployment {
        bundle: bundle_path.to_path_buf(),
        manifest: folder.manifest,
        unpacked: dest,
        sha256: hashed.sha256,
    })
}
