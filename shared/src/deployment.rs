//! Client deployments as DMInstaller and DMClientSetup both see them: a signed folder (or a
//! `.dmpkg` bundle of one) of kind `client-deployment` with every client program for this
//! device's platform, and the settings file setup reads. One verification for both programs,
//! so they can never disagree about what a valid deployment is; and [`stage`], which copies
//! exactly the signed bytes somewhere only root can write, so what runs is what was verified.

use std::path::Path;
use std::time::SystemTime;

use crate::bundle;
use crate::digest::HashingReader;
use crate::error::{Error, Result};
use crate::fs as dmfs;
use crate::manifest::{
    self, MANIFEST_FILE, Manifest, PUBLISHER_FILE, PackageKind, SIGNATURE_FILE, SignatureFiles,
    VerifiedFolder,
};
use crate::pki::{Cert, Trust};
use crate::platform::Platform;
use crate::settings::{CLIENT_SETTINGS_INI, COMMON_INSTALLER_INI};

/// Verifies `dir` completely (signature, chain to what the device trusts, every file) and checks that it is a
/// client deployment with binaries for `platform`. Nothing is written.
pub fn verify(
    dir: &Path,
    trust: &Trust,
    now: SystemTime,
    platform: &Platform,
) -> Result<VerifiedFolder> {
    let folder = manifest::verify_folder(dir, trust, now)?;
    check_kind_and_platform(&folder.manifest, dir, platform)?;
    Ok(folder)
}

/// The settings file of a deployment: `ClientSettings.ini` when the folder has one, else
/// `DMCommonInstaller.ini`, else none (setup then uses the defaults).
pub fn settings_file(folder: &VerifiedFolder) -> Option<&'static str> {
    [CLIENT_SETTINGS_INI, COMMON_INSTALLER_INI]
        .into_iter()
        .find(|name| folder.manifest.file(name).is_some())
}

/// The client's one program (a multi-call binary), which is each client program by the name
/// it is started with (`dmsvc`, `dminstaller_linux-aarch64`) or by its first argument
/// (`dm svc`). A folder carries it as `dm_<platform>`; a device has it as `dm`, with a link
/// for each program name.
pub const MULTICALL: &str = "dm";

/// The first argument that makes [`MULTICALL`] the client program `program`: `installer`,
/// `setup`, `svc` or `certenroll`.
pub fn subcommand(program: &str) -> &'static str {
    match program {
        "dminstaller" => "installer",
        "dmclientsetup" => "setup",
        "dmcertenroll" => "certenroll",
        _ => "svc",
    }
}

/// How to start client program `program` of a deployment for `platform`: the folder's
/// multi-call `dm_<platform>` with the program's subcommand, or, in a folder made before the
/// client was one program, the program's own `<program>_<platform>`.
pub fn program_command(
    m: &Manifest,
    platform: &Platform,
    program: &str,
) -> (String, Option<&'static str>) {
    let multicall = manifest::program_file(MULTICALL, platform);
    if m.file(&multicall).is_some_and(|f| f.executable) {
        (multicall, Some(subcommand(program)))
    } else {
        (manifest::program_file(program, platform), None)
    }
}

/// The launcher a folder carries under each program's own name (`dmsvc_linux-aarch64`) beside
/// the multi-call `dm_<platform>`: a client of an older release upgrading over the air runs
/// the folder's `dmclientsetup_<platform>`, and people run `dminstaller_<platform>` from a
/// card, as they always have.
pub fn launcher_script(program: &str, platform: &Platform) -> String {
    format!(
        "#!/bin/sh\n# {program} for {platform}: the client's one program, {multicall}, started as {program}.\nexec \"$(dirname \"$0\")/{multicall}\" {sub} \"$@\"\n",
        multicall = manifest::program_file(MULTICALL, platform),
        sub = subcommand(program),
    )
}

/// What a deployment source (a folder or a bundle) was verified to be, without writing.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its publisher.
    pub publisher: Cert,
}

fn check_kind_and_platform(m: &Manifest, source: &Path, platform: &Platform) -> Result<()> {
    if m.kind != PackageKind::ClientDeployment {
        return Err(Error::MalformedManifest {
            path: source.join(MANIFEST_FILE),
            reason: format!("it is a {} package, not a client deployment", m.kind),
        });
    }
    if !m.platforms.contains(platform) {
        return Err(Error::PlatformUnsupported {
            platform: platform.to_string(),
            available: m.platforms.iter().map(Platform::as_str).collect::<Vec<_>>().join(", "),
        });
    }
    Ok(())
}

/// Verifies a deployment given as a folder or a bundle, completely and without writing.
pub fn verify_source(
    source: &Path,
    trust: &Trust,
    now: SystemTime,
    platform: &Platform,
) -> Result<Verified> {
    if bundle::is_bundle(source) {
        let (manifest, chain) = bundle::verify(source, trust, now)?;
        check_kind_and_platform(&manifest, source, platform)?;
        let publisher = chain
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotSigned { dir: source.to_path_buf(), what: PUBLISHER_FILE })?;
        return Ok(Verified { manifest, publisher });
    }
    let v = verify(source, trust, now, platform)?;
    Ok(Verified { manifest: v.manifest, publisher: v.publisher })
}

/// Copies a deployment (folder) or unpacks it (bundle) into `dest`, a new folder created 0700,
/// taking every byte through the check against the signed manifest, so `dest` holds exactly
/// what the publisher signed however the source changes meanwhile. Returns the staged folder.
pub fn stage(
    source: &Path,
    dest: &Path,
    trust: &Trust,
    now: SystemTime,
    platform: &Platform,
) -> Result<VerifiedFolder> {
    let staged = if bundle::is_bundle(source) {
        bundle::unpack(source, dest, trust, now)?
    } else {
        copy_folder(source, dest, trust, now)?
    };
    check_kind_and_platform(&staged.manifest, source, platform)?;
    Ok(staged)
}

/// The signature files once (capped), verified; then every listed file through the hash.
fn copy_folder(
    source: &Path,
    dest: &Path,
    trust: &Trust,
    now: SystemTime,
) -> Result<VerifiedFolder> {
    let read = |name: &'static str, cap: u64| -> Result<Vec<u8>> {
        dmfs::read_optional(&source.join(name), cap)?
            .ok_or_else(|| Error::NotSigned { dir: source.to_path_buf(), what: name })
    };
    let signed = SignatureFiles {
        manifest: read(MANIFEST_FILE, manifest::MAX_MANIFEST_BYTES)?,
        signature: read(SIGNATURE_FILE, manifest::MAX_SIGNATURE_BYTES)?,
        chain: read(PUBLISHER_FILE, crate::pki::MAX_PEM_BYTES)?,
    };
    let (manifest, chain) = signed.verify(source, trust, now)?;
    dmfs::create_dir_all(dest, dmfs::MODE_DIR_PRIVATE)?;
    for (name, data) in [
        (MANIFEST_FILE, &signed.manifest),
        (SIGNATURE_FILE, &signed.signature),
        (PUBLISHER_FILE, &signed.chain),
    ] {
        dmfs::write_atomic(&dest.join(name), data, dmfs::MODE_PRIVATE)?;
    }
    for f in &manifest.files {
        let (src, to) = (source.join(&f.path), dest.join(&f.path));
        if let Some(parent) = to.parent() {
            dmfs::create_dir_all(parent, dmfs::MODE_DIR_PRIVATE)?;
        }
        let input = dmfs::open_regular(&src)?;
        let mut reader = HashingReader::new(input, f.size);
        let mode = if f.executable { dmfs::MODE_EXEC } else { dmfs::MODE_PRIVATE };
        let mut out = dmfs::AtomicFile::create(&to, mode)?;
        std::io::copy(&mut reader, &mut out).map_err(dmfs::io_err("copy", &src))?;
        reader.finish().check(&src, f.size, &f.sha256)?;
        out.commit()?;
    }
    let publisher = chain
        .first()
        .cloned()
        .ok_or_else(|| Error::NotSigned { dir: source.to_path_buf(), what: PUBLISHER_FILE })?;
    Ok(VerifiedFolder { dir: dest.to_path_buf(), manifest, publisher, chain })
}
