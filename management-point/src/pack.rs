//! The publisher's side: a demo PKI, client deployment folders and their verification.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use dm_shared::bundle;
use dm_shared::devpki::{self, Issued, Purpose, Spec};
use dm_shared::fs::{self as dmfs, MODE_EXEC, MODE_PRIVATE, MODE_PUBLIC};
use dm_shared::manifest::{self, CLIENT_PROGRAMS, Manifest, PackageKind, SignRequest};
use dm_shared::pki::{Cert, Trust};
use dm_shared::programs::SignedProgram;
use dm_shared::settings::{CLIENT_SETTINGS_INI, COMMON_INSTALLER_INI, Settings};
use dm_shared::{ClientVersion, Platform};

use crate::error::{Error, Result};

const DAY: Duration = Duration::from_secs(86_400);

/// File names `dmpack dev-pki` writes.
pub mod names {
    /// The root CA certificate: install into devices' `root` store.
    pub const ROOT_CERT: &str = "root-ca.pem";
    /// The root CA key.
    pub const ROOT_KEY: &str = "root-ca.key";
    /// The code-signing publisher certificate.
    pub const PUBLISHER_CERT: &str = "publisher.pem";
    /// The publisher key.
    pub const PUBLISHER_KEY: &str = "publisher.key";
    /// The management point's TLS certificate.
    pub const SERVER_CERT: &str = "server.pem";
    /// The management point's TLS key.
    pub const SERVER_KEY: &str = "server.key";
}

fn write_pair(dir: &Path, cert_name: &str, key_name: &str, issued: &Issued) -> Result<()> {
    dmfs::write_atomic(&dir.join(cert_name), issued.cert_pem.as_bytes(), MODE_PUBLIC)?;
    dmfs::write_atomic(&dir.join(key_name), issued.key_pem.as_bytes(), MODE_PRIVATE)?;
    Ok(())
}

/// Creates a demo PKI in `dir`: a root CA, a code-signing publisher and a TLS server
/// certificate for `server_names`, valid from an hour ago for `days` days.
pub fn dev_pki(dir: &Path, days: u64, server_names: &[String], now: SystemTime) -> Result<()> {
    dmfs::create_dir_all(dir, dmfs::MODE_DIR_PRIVATE)?;
    let from = now - Duration::from_secs(3600);
    let spec = |cn: &str, purpose: Purpose, days: u64| Spec {
        common_name: cn.into(),
        purpose,
        not_before: from,
        not_after: now + DAY.saturating_mul(u32::try_from(days).unwrap_or(u32::MAX)),
    };
    let pki = |what: &str| {
        let what = what.to_string();
        move |reason| Error::Pki { what, reason }
    };
    let root = devpki::root_ca(&spec("dm Demo Root CA", Purpose::Ca, days * 2))
        .map_err(pki("the demo root CA"))?;
    let publisher = devpki::issue(&root, &spec("dm Demo Publisher", Purpose::CodeSigning, days))
        .map_err(pki("the demo publisher certificate"))?;
    let server = devpki::issue(
        &root,
        &spec("dm Management Point", Purpose::Server(server_names.to_vec()), days),
    )
    .map_err(pki("the demo server certificate"))?;
    write_pair(dir, names::ROOT_CERT, names::ROOT_KEY, &root)?;
    write_pair(dir, names::PUBLISHER_CERT, names::PUBLISHER_KEY, &publisher)?;
    write_pair(dir, names::SERVER_CERT, names::SERVER_KEY, &server)?;
    Ok(())
}

/// The CA of a dev-pki folder: `root-ca.pem` and `root-ca.key`.
fn load_ca(ca_dir: &Path) -> Result<Issued> {
    let read = |name: &str| -> Result<String> {
        let bytes = dmfs::read_capped(&ca_dir.join(name), 64 * 1024)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    Ok(Issued { cert_pem: read(names::ROOT_CERT)?, key_pem: read(names::ROOT_KEY)? })
}

/// Issues one more certificate from the CA in `ca_dir` (`root-ca.pem`, `root-ca.key`).
pub fn issue_cert(ca_dir: &Path, spec: &Spec, cert_out: &Path, key_out: &Path) -> Result<()> {
    let ca = load_ca(ca_dir)?;
    let issued = devpki::issue(&ca, spec)
        .map_err(|reason| Error::Pki { what: spec.common_name.clone(), reason })?;
    dmfs::write_atomic(cert_out, issued.cert_pem.as_bytes(), MODE_PUBLIC)?;
    dmfs::write_atomic(key_out, issued.key_pem.as_bytes(), MODE_PRIVATE)?;
    Ok(())
}

/// The publisher's signing material: a key and its certificate chain.
#[derive(Debug)]
pub struct Signer {
    key_pem: Vec<u8>,
    key_path: PathBuf,
    chain: Vec<Cert>,
}

impl Signer {
    /// Loads a PKCS#8 key and a PEM chain (publisher first).
    pub fn load(key: &Path, cert: &Path) -> Result<Signer> {
        Ok(Signer {
            key_pem: dmfs::read_capped(key, 64 * 1024)?,
            key_path: key.to_path_buf(),
            chain: Cert::load_pem(cert)?,
        })
    }

    /// Signs a prepared folder.
    pub fn sign(&self, dir: &Path, req: &SignRequest) -> Result<Manifest> {
        Ok(manifest::sign_folder(dir, req, &self.key_pem, &self.key_path, &self.chain)?)
    }

    /// The publisher certificate.
    pub fn publisher(&self) -> &Cert {
        &self.chain[0]
    }
}

/// What goes into a client deployment folder.
#[derive(Debug)]
pub struct FolderSpec {
    /// The client version.
    pub version: ClientVersion,
    /// For each platform, the folder holding its built `dminstaller`, `dmclientsetup`, `dmsvc`
    /// and `dmcertenroll`.
    pub platforms: Vec<(Platform, PathBuf)>,
    /// `DMCommonInstaller.ini` and/or `ClientSettings.ini`.
    pub settings: Vec<PathBuf>,
}

/// Creates an empty output folder, refusing one that has content.
pub fn prepare_out_dir(out: &Path) -> Result<()> {
    if std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(false) {
        return Err(Error::OutputExists { path: out.to_path_buf() });
    }
    dmfs::create_dir_all(out, dmfs::MODE_DIR)?;
    Ok(())
}

/// Builds and signs a client deployment folder in `out`.
pub fn build_folder(
    spec: &FolderSpec,
    signer: &Signer,
    out: &Path,
    now: SystemTime,
) -> Result<Manifest> {
    if spec.platforms.is_empty() {
        return Err(Error::Usage("at least one --platform-bin PLATFORM=DIR is needed".into()));
    }
    for s in &spec.settings {
        let name = s.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name != COMMON_INSTALLER_INI && name != CLIENT_SETTINGS_INI {
            return Err(Error::Usage(format!(
                "{}: a settings file must be named {COMMON_INSTALLER_INI} or {CLIENT_SETTINGS_INI}",
                s.display()
            )));
        }
        // Refuse to sign settings a device would refuse.
        Settings::load(s)?;
    }
    prepare_out_dir(out)?;
    for (platform, dir) in &spec.platforms {
        add_client_programs(out, platform, dir)?;
    }
    for s in &spec.settings {
        let name = s.file_name().unwrap_or_default();
        dmfs::copy_atomic(s, &out.join(name), MODE_PUBLIC)?;
    }
    let req = SignRequest {
        kind: PackageKind::ClientDeployment,
        name: "dm-client".into(),
        version: spec.version,
        platforms: spec.platforms.iter().map(|(p, _)| p.clone()).collect(),
        metadata: None,
        programs: Vec::new(),
        now,
    };
    signer.sign(out, &req)
}

/// Copies the regular files of `src` into `out`, keeping the execute bit. Symlinks and special
/// files are refused (a package holds files), hidden names are skipped.
fn copy_tree(src: &Path, out: &Path) -> Result<usize> {
    use std::os::unix::fs::PermissionsExt;
    let mut n = 0;
    let mut stack = vec![(src.to_path_buf(), out.to_path_buf())];
    while let Some((from, to)) = stack.pop() {
        dmfs::create_dir_all(&to, dmfs::MODE_DIR)?;
        let entries = std::fs::read_dir(&from).map_err(dmfs::io_err("list", &from))?;
        for e in entries {
            let e = e.map_err(dmfs::io_err("list", &from))?;
            let name = e.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let ft = e.file_type().map_err(dmfs::io_err("inspect", &e.path()))?;
            if ft.is_dir() {
                stack.push((e.path(), to.join(&name)));
            } else if ft.is_file() {
                let exec =
                    e.metadata().map(|m| m.permissions().mode() & 0o111 != 0).unwrap_or(false);
                dmfs::copy_atomic(
                    &e.path(),
                    &to.join(&name),
                    if exec { MODE_EXEC } else { MODE_PUBLIC },
                )?;
                n += 1;
            } else {
                return Err(Error::Usage(format!(
                    "{}: only regular files and folders can go into a package",
                    e.path().display()
                )));
            }
        }
    }
    Ok(n)
}

/// What goes into a software distribution or configuration package.
#[derive(Debug)]
pub struct PackageSpec {
    /// The source folder: the package's files, its programs' scripts among them. A
    /// configuration package of items alone has none.
    pub source: Option<PathBuf>,
    /// Name.
    pub name: String,
    /// Version.
    pub version: ClientVersion,
    /// Kind.
    pub kind: PackageKind,
    /// Platforms it has binaries for (empty: platform-neutral).
    pub platforms: Vec<Platform>,
    /// The programs a device may run from it.
    pub programs: Vec<SignedProgram>,
    /// The configuration items it carries (a configuration package).
    pub items: Vec<dm_shared::config_item::ConfigItem>,
}

/// Builds and signs a package folder in `out` from `spec.source`.
pub fn build_package(
    spec: &PackageSpec,
    signer: &Signer,
    out: &Path,
    now: SystemTime,
) -> Result<Manifest> {
    if spec.kind == PackageKind::ClientDeployment {
        return Err(Error::Usage("client deployments are built with `dmpack folder`".into()));
    }
    use dm_shared::config_item::{self, ITEMS_FILE, MANIFEST_KEY};
    if !spec.items.is_empty() && spec.kind != PackageKind::Configuration {
        return Err(Error::Usage("--items: only a configuration package carries items".into()));
    }
    config_item::check_items(&spec.items).map_err(Error::Usage)?;
    for p in &spec.programs {
        check_program_file(p, spec.source.as_deref())?;
    }
    prepare_out_dir(out)?;
    let mut n = match &spec.source {
        Some(src) => copy_tree(src, out)?,
        None => 0,
    };
    let metadata = if spec.items.is_empty() {
        None
    } else {
        let items = serde_json::to_value(&spec.items).map_err(|e| Error::Usage(e.to_string()))?;
        let shown =
            serde_json::to_string_pretty(&items).map_err(|e| Error::Usage(e.to_string()))?;
        dmfs::write_atomic(&out.join(ITEMS_FILE), shown.as_bytes(), dmfs::MODE_PUBLIC)?;
        n += 1;
        Some(serde_json::json!({ MANIFEST_KEY: items }))
    };
    if n == 0 {
        return Err(Error::Usage(match &spec.source {
            Some(src) => format!("{} has no files", src.display()),
            None => "a package needs --source (or, for a configuration package, --items)".into(),
        }));
    }
    let req = SignRequest {
        kind: spec.kind,
        name: spec.name.clone(),
        version: spec.version,
        platforms: spec.platforms.clone(),
        metadata,
        programs: spec.programs.clone(),
        now,
    };
    signer.sign(out, &req)
}

/// Verifies a signed folder, or a bundle, against the roots in `roots_pem`. A bundle is
/// unpacked into a temp folder to be checked like a folder.
pub fn verify(source: &Path, roots_pem: &Path, now: SystemTime) -> Result<Manifest> {
    let trust = Trust::roots(Cert::load_pem(roots_pem)?);
    if bundle::is_bundle(source) {
        return Ok(bundle::verify(source, &trust, now)?.0);
    }
    Ok(manifest::verify_folder(source, &trust, now)?.manifest)
}

/// Writes the signed folder `source` (checked against `roots_pem`) as a bundle: to `out`, or
/// when `out` is a folder, to `<name>-<version>.dmpkg` in it. Returns the bundle's path.
pub fn bundle(source: &Path, roots_pem: &Path, out: &Path, now: SystemTime) -> Result<PathBuf> {
    let trust = Trust::roots(Cert::load_pem(roots_pem)?);
    let folder = manifest::verify_folder(source, &trust, now)?;
    let dest = if out.is_dir() {
        out.join(bundle::file_name(&folder.manifest))
    } else {
        out.to_path_buf()
    };
    if dest.exists() {
        return Err(Error::OutputExists { path: dest });
    }
    bundle::write(&folder, &dest)?;
    Ok(dest)
}

/// A program as `dmpack package --programs FILE` reads it: TOML (or JSON), with defaults.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramToml {
    /// Its name.
    pub name: String,
    /// The command: a file of the package (relative path), or an absolute program, then
    /// arguments.
    pub command: Vec<String>,
    /// Seconds it may run (default an hour).
    #[serde(default = "default_max_run_time")]
    pub max_run_time: u64,
    /// Platforms it runs on (default any).
    #[serde(default)]
    pub platforms: Vec<String>,
    /// `mobile` (default) or `desktop`.
    #[serde(default)]
    pub device_class: Option<String>,
    /// Environment additions.
    #[serde(default)]
    pub environment: std::collections::BTreeMap<String, String>,
    /// Run when the server names no program (a DDI server without this project's metadata).
    #[serde(default)]
    pub default: bool,
    /// The package's health check (at most one; docs/rollouts.md).
    #[serde(default)]
    pub health_check: bool,
}

fn default_max_run_time() -> u64 {
    3600
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgramsFile {
    program: Vec<ProgramToml>,
}

impl ProgramToml {
    /// The program to sign.
    pub fn to_signed(&self) -> Result<SignedProgram> {
        let platforms = self
            .platforms
            .iter()
            .map(|p| Platform::parse(p).map_err(Error::Usage))
            .collect::<Result<Vec<_>>>()?;
        let device_class = match &self.device_class {
            Some(c) => c.parse().map_err(Error::Usage)?,
            None => dm_shared::vocab::DeviceClass::Mobile,
        };
        // `./run.sh` is how people name a file of the folder; the manifest names it `run.sh`.
        let mut command = self.command.clone();
        if let Some(first) = command.first_mut() {
            while let Some(rest) = first.strip_prefix("./") {
                *first = rest.to_string();
            }
        }
        Ok(SignedProgram {
            name: self.name.clone(),
            command,
            max_run_time: self.max_run_time,
            platforms,
            device_class,
            environment: self.environment.clone(),
            default: self.default,
            health_check: self.health_check,
        })
    }
}

/// Checks, before anything is written, that a program whose command is a file of the package
/// names an executable file of `source` by a relative path, and says exactly what to fix.
fn check_program_file(p: &SignedProgram, source: Option<&Path>) -> Result<()> {
    let Some(file) = p.command.first().filter(|f| !f.starts_with('/')) else { return Ok(()) };
    let bad = |reason: String| Error::ProgramCommand { program: p.name.clone(), reason };
    dm_shared::manifest::check_relative_path(file).map_err(|e| {
        bad(format!("{file:?} must name a file of the package by its path in the folder ({e})"))
    })?;
    let Some(source) = source else {
        return Err(bad(format!("{file} is not in the package: it has no --source folder")));
    };
    use std::os::unix::fs::PermissionsExt;
    match std::fs::symlink_metadata(source.join(file)) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(m) if m.is_file() => Err(bad(format!(
            "{} is not executable: `chmod +x` it, or run it through its interpreter (for example /bin/sh {file})",
            source.join(file).display()
        ))),
        Ok(_) => Err(bad(format!("{} is not a regular file", source.join(file).display()))),
        Err(_) => Err(bad(format!(
            "{} does not exist: the command's first word is a file of the folder (or an absolute path on the device)",
            source.join(file).display()
        ))),
    }
}

/// Reads a configuration item from a TOML or JSON file (docs/configuration-items.md).
pub fn read_item(path: &Path) -> Result<dm_shared::config_item::ConfigItem> {
    let bytes = dmfs::read_capped(path, 4 * 1024 * 1024)?;
    let bad = |reason: String| Error::Config { path: path.to_path_buf(), reason };
    let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
    let item: dm_shared::config_item::ConfigItem = if path.extension().is_some_and(|e| e == "json")
    {
        serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?
    } else {
        toml::from_str(&text).map_err(|e| bad(e.to_string()))?
    };
    item.check().map_err(bad)?;
    Ok(item)
}

/// Reads a programs file: `[[program]]` tables in TOML (or `{"program": [...]}` in JSON).
pub fn read_programs(path: &Path) -> Result<Vec<SignedProgram>> {
    let bytes = dmfs::read_capped(path, 1024 * 1024)?;
    let bad = |reason: String| Error::Config { path: path.to_path_buf(), reason };
    let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
    let file: ProgramsFile = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?
    } else {
        toml::from_str(&text).map_err(|e| bad(e.to_string()))?
    };
    file.program.iter().map(ProgramToml::to_signed).collect()
}

/// `NAME=COMMAND WORDS…` from the command line: an hour, any platform, mobile. The command is
/// split into words as a POSIX shell splits them (`run.sh "two words"` is two arguments), but
/// nothing else of a shell applies: no variables, no globs, no pipes.
pub fn program_flag(s: &str) -> Result<SignedProgram> {
    let usage = |why: &str| {
        Error::Usage(format!(
            "--program {s:?}: {why}; write NAME=COMMAND, such as install=install.sh --quiet \"two words\""
        ))
    };
    let (name, command) = s.split_once('=').ok_or_else(|| usage("no '=' after the name"))?;
    let command = shlex::split(command).ok_or_else(|| usage("a quote is not closed"))?;
    if command.is_empty() {
        return Err(usage("the command is empty"));
    }
    ProgramToml {
        name: name.trim().to_string(),
        command,
        max_run_time: default_max_run_time(),
        platforms: Vec::new(),
        device_class: None,
        environment: Default::default(),
        default: false,
        health_check: false,
    }
    .to_signed()
}

/// Puts a platform's client programs into the folder `out`: the client's one program
/// `dm_<platform>` and, under each program's own name, a launcher that starts it as that
/// program (what people run from a card, and what a client of an older release runs to
/// upgrade); or, from a build before the client was one program, the four programs.
fn add_client_programs(out: &Path, platform: &Platform, dir: &Path) -> Result<()> {
    use dm_shared::deployment::{self, MULTICALL};
    let multicall = dir.join(MULTICALL);
    if !multicall.is_file() {
        for prog in CLIENT_PROGRAMS {
            let dest = out.join(manifest::program_file(prog, platform));
            dmfs::copy_atomic(&dir.join(prog), &dest, MODE_EXEC)?;
        }
        return Ok(());
    }
    dmfs::copy_atomic(
        &multicall,
        &out.join(manifest::program_file(MULTICALL, platform)),
        MODE_EXEC,
    )?;
    for prog in CLIENT_PROGRAMS {
        let launcher = deployment::launcher_script(prog, platform);
        let dest = out.join(manifest::program_file(prog, platform));
        dmfs::write_atomic(&dest, launcher.as_bytes(), MODE_EXEC)?;
    }
    Ok(())
}

/// Issues a certificate revocation list from the CA in `ca_dir`, revoking the certificates in
/// the PEM files `revoke`, valid for `days`; writes it as PEM to `out`.
pub fn issue_crl(
    ca_dir: &Path,
    revoke: &[PathBuf],
    number: u64,
    days: u64,
    out: &Path,
    now: SystemTime,
) -> Result<usize> {
    let ca = load_ca(ca_dir)?;
    let mut serials = Vec::new();
    for p in revoke {
        for c in Cert::load_pem(p)? {
            serials.push(c.serial().to_vec());
        }
    }
    let refs: Vec<&[u8]> = serials.iter().map(Vec::as_slice).collect();
    let until = now + DAY.saturating_mul(u32::try_from(days).unwrap_or(u32::MAX));
    let pem = devpki::crl(&ca, &refs, number, now - Duration::from_secs(60), until)
        .map_err(|reason| Error::Pki { what: "the revocation list".into(), reason })?;
    dmfs::write_atomic(out, pem.as_bytes(), MODE_PUBLIC)?;
    Ok(serials.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dm_shared::StatusCode;

    #[test]
    fn program_flags_split_words_as_a_shell_does_and_take_dot_slash() {
        let p = program_flag(r#"run=./run.sh "hello world" --x='a b' plain"#).unwrap();
        assert_eq!(p.command, ["run.sh", "hello world", "--x=a b", "plain"]);
        for bad in ["run", "run=", r#"run=run.sh "open"#] {
            let err = program_flag(bad).unwrap_err();
            assert_eq!(err.code(), StatusCode::E_INVALIDARG, "{bad}: {err}");
            assert!(err.to_string().contains("NAME=COMMAND"), "{err}");
        }
    }

    #[test]
    fn a_program_must_name_an_executable_file_of_the_folder() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("run.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/tool"), b"#!/bin/sh\n").unwrap();
        let exec = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(dir.path().join("bin/tool"), exec).unwrap();
        let check = |cmd: &str| {
            let p = program_flag(&format!("p={cmd}")).unwrap();
            check_program_file(&p, Some(dir.path()))
        };
        assert!(check("./bin/tool --quiet").is_ok());
        assert!(check("/bin/sh run.sh").is_ok(), "a program of the device");
        for (cmd, says) in [
            ("run.sh", "chmod +x"),
            ("missing.sh", "does not exist"),
            ("../escape.sh", "by its path in the folder"),
            ("bin", "not a regular file"),
        ] {
            let err = check(cmd).unwrap_err();
            assert_eq!(err.code(), StatusCode::DM_E_PROGRAM_COMMAND, "{cmd}: {err}");
            assert!(err.to_string().contains(says), "{cmd}: {err}");
        }
    }
}
