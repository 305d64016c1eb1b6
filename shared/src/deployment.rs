//! Client deployment folders as DMInstaller and DMClientSetup both see them: a signed folder of
//! kind `client-deployment` with every client program for this device's platform, and the
//! settings file setup reads. One verification for both programs, so they can never disagree
//! about what a valid deployment is.

use std::path::Path;
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::manifest::{self, MANIFEST_FILE, PackageKind, VerifiedFolder};
use crate::pki::Cert;
use crate::platform::Platform;
use crate::settings::{CLIENT_SETTINGS_INI, COMMON_INSTALLER_INI};

/// Verifies `dir` completely (signature, chain to `roots`, every file) and checks that it is a
/// client deployment with binaries for `platform`. Nothing is written.
pub fn verify(
    dir: &Path,
    roots: &[Cert],
    now: SystemTime,
    platform: &Platform,
) -> Result<VerifiedFolder> {
    let folder = manifest::verify_folder(dir, roots, now)?;
    let m = &folder.manifest;
    if m.kind != PackageKind::ClientDeployment {
        return Err(Error::MalformedManifest {
            path: dir.join(MANIFEST_FILE),
            reason: format!("it is a {} package, not a client deployment", m.kind),
        });
    }
    if !m.platforms.contains(platform) {
        return Err(Error::PlatformUnsupported {
            platform: platform.to_string(),
            available: m.platforms.iter().map(Platform::as_str).collect::<Vec<_>>().join(", "),
        });
    }
    Ok(folder)
}

/// The settings file of a deployment: `ClientSettings.ini` when the folder has one, else
/// `DMCommonInstaller.ini`, else none (setup then uses the defaults).
pub fn settings_file(folder: &VerifiedFolder) -> Option<&'static str> {
    [CLIENT_SETTINGS_INI, COMMON_INSTALLER_INI]
        .into_iter()
        .find(|name| folder.manifest.file(name).is_some())
}
