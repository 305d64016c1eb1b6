//! Packages and programs: importing a signed folder (or raw files) as artifacts, copied into
//! the content folder with every digest DDI lists, and the programs that run from them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use dm_shared::bundle;
use dm_shared::digest::HashingReader;
use dm_shared::fs::{self as dmfs, MODE_DIR, MODE_PUBLIC};
use dm_shared::manifest;
use dm_shared::pki::{self, Cert, Trust};
use md5::Digest;
use serde_json::json;

use super::{Out, find_package, table};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::*;
use crate::storage::Storage;

/// A file's size and the digests DDI artifacts carry.
struct Hashed {
    size: u64,
    sha256: String,
    sha1: String,
    md5: String,
}

/// A writer that feeds what passes through it to the legacy digests (SHA-1 and MD5, which DDI
/// artifacts still list) and on to `inner`, when there is one.
struct LegacyDigests<W> {
    inner: Option<W>,
    sha1: ring::digest::Context,
    md5: md5::Md5,
}

impl<W: Write> Write for LegacyDigests<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = match self.inner.as_mut() {
            Some(w) => w.write(buf)?,
            None => buf.len(),
        };
        self.sha1.update(&buf[..n]);
        self.md5.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.as_mut().map_or(Ok(()), Write::flush)
    }
}

/// Copies (when `dest` is given) and hashes a file in one pass.
fn hash_copy(src: &Path, dest: Option<&Path>) -> Result<Hashed> {
    let input = std::fs::File::open(src).map_err(dmfs::io_err("open", src))?;
    let len = input.metadata().map_err(dmfs::io_err("inspect", src))?.len();
    let mut reader = HashingReader::new(input, len);
    let mut out = LegacyDigests {
        inner: dest.map(|d| dmfs::AtomicFile::create(d, MODE_PUBLIC)).transpose()?,
        sha1: ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY),
        md5: md5::Md5::new(),
    };
    std::io::copy(&mut reader, &mut out).map_err(dmfs::io_err("copy", src))?;
    if reader.over_cap() {
        return Err(Error::Usage(format!("{} changed while it was read", src.display())));
    }
    if let Some(file) = out.inner {
        file.commit()?;
    }
    let sha256 = reader.finish();
    Ok(Hashed {
        size: sha256.size,
        sha256: sha256.sha256,
        sha1: pki::to_hex(out.sha1.finish().as_ref()),
        md5: pki::to_hex(&out.md5.finalize()),
    })
}

/// Where a package's files come from.
#[derive(Debug, Clone)]
pub enum PackageSource {
    /// A folder signed with `dmpack package` (or a client deployment folder, for an
    /// over-the-air client upgrade), or a `.dmpkg` bundle of one, checked against trusted roots.
    Signed {
        /// The folder or bundle.
        dir: PathBuf,
        /// PEM roots the publisher must chain to.
        roots: PathBuf,
    },
    /// Files served as they are, for clients with their own signing (SWUpdate images).
    Raw {
        /// The files.
        files: Vec<PathBuf>,
        /// Name.
        name: String,
        /// Version.
        version: String,
        /// Kind.
        kind: PackageKind,
    },
}

/// The content folder of a package: `<name>-<version>`, each part with every byte other than
/// letters, digits, `.` and `_` written `%XX`, so that no two packages share a folder (`dm`
/// `client-1.2.0.345` and `dm-client` `1.2.0.345` once did, and the second import deleted the
/// first one's files).
fn content_dir_name(name: &str, version: &str) -> String {
    let escape = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    format!("{}-{}", escape(name), escape(version))
}

/// Imports a package: checks it, copies its files into the content folder (unless an
/// external distribution point serves them) and records it.
pub fn add_package(
    cfg: &Config,
    store: &dyn Storage,
    source: &PackageSource,
    distribution_point: Option<&str>,
    now: i64,
) -> Result<Package> {
    if let Some(dp) = distribution_point {
        if !dp.starts_with("https://") {
            return Err(Error::Usage(format!(
                "--distribution-point {dp:?} must be an https:// URL"
            )));
        }
    }
    let Import { name, version, kind, publisher, files, programs, config_items } = import(source)?;
    if store.packages()?.iter().any(|p| p.name == name && p.version == version) {
        return Err(Error::Conflict(format!("package {name} {version} already exists")));
    }
    let content = cfg.content().join(content_dir_name(&name, &version));
    if distribution_point.is_none() {
        dmfs::remove_dir_all(&content)?;
        dmfs::create_dir_all(&content, MODE_DIR)?;
    }
    let mut artifacts = Vec::new();
    for (fname, src) in &files {
        let dest = distribution_point.is_none().then(|| content.join(fname.replace('/', "%2F")));
        let h = hash_copy(src, dest.as_deref())?;
        artifacts.push(ArtifactRecord {
            filename: fname.clone(),
            size: h.size,
            sha256: h.sha256,
            sha1: h.sha1,
            md5: h.md5,
            path: dest,
        });
    }
    let mut pkg = Package {
        id: 0,
        name,
        version,
        kind,
        publisher,
        distribution_point: distribution_point.map(str::to_string),
        created: now,
        artifacts,
        programs,
        config_items,
    };
    pkg.id = store.add_package(&pkg)?;
    Ok(pkg)
}

/// What a source brings: its identity, its files (artifact name, where it is) and programs.
struct Import {
    name: String,
    version: String,
    kind: PackageKind,
    publisher: Option<String>,
    files: Vec<(String, PathBuf)>,
    programs: Vec<SignedProgram>,
    config_items: Vec<ConfigItem>,
}

/// Checks a source and lists its files. A signed folder gives its files and signature files;
/// a bundle is kept whole, one artifact, as any DDI server could hold it.
fn import(source: &PackageSource) -> Result<Import> {
    match source {
        PackageSource::Signed { dir, roots } => {
            let trust = Trust::roots(Cert::load_pem(roots)?);
            let now = std::time::SystemTime::now();
            let (m, publisher, files) = if bundle::is_bundle(dir) {
                let (m, chain) = bundle::verify(dir, &trust, now)?;
                let publisher = chain.first().map(|c| c.subject().to_string());
                let one = vec![(bundle::file_name(&m), dir.clone())];
                (m, publisher, one)
            } else {
                let v = manifest::verify_folder(dir, &trust, now)?;
                let mut files: Vec<(String, PathBuf)> =
                    v.manifest.files.iter().map(|f| (f.path.clone(), dir.join(&f.path))).collect();
                for sig in
                    [manifest::MANIFEST_FILE, manifest::SIGNATURE_FILE, manifest::PUBLISHER_FILE]
                {
                    files.push((sig.to_string(), dir.join(sig)));
                }
                (v.manifest, Some(v.publisher.subject().to_string()), files)
            };
            m.require_signed_programs(&dir.join(manifest::MANIFEST_FILE))?;
            let config_items = dm_shared::config_item::items_of(&m)
                .map_err(|why| Error::Usage(format!("{}: {why}", dir.display())))?;
            Ok(Import {
                config_items,
                name: m.name,
                version: m.version.to_string(),
                kind: m.kind,
                publisher,
                files,
                programs: m.programs,
            })
        }
        PackageSource::Raw { files, name, version, kind } => {
            let mut named = Vec::new();
            for f in files {
                let n = f
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| Error::Usage(format!("{}: not a file name", f.display())))?;
                manifest::check_relative_path(n)?;
                named.push((n.to_string(), f.clone()));
            }
            Ok(Import {
                name: name.clone(),
                version: version.clone(),
                kind: *kind,
                publisher: None,
                files: named,
                programs: Vec::new(),
                config_items: Vec::new(),
            })
        }
    }
}

/// Lists packages.
pub fn package_list(store: &dyn Storage) -> Result<Out> {
    let ps = store.packages()?;
    let rows: Vec<Vec<String>> = ps
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                p.name.clone(),
                p.version.clone(),
                p.kind.to_string(),
                p.artifacts.len().to_string(),
                p.artifacts.iter().map(|a| a.size).sum::<u64>().to_string(),
                p.distribution_point.clone().unwrap_or_else(|| "this server".into()),
                p.publisher.clone().unwrap_or_else(|| "(unsigned)".into()),
            ]
        })
        .collect();
    let header = ["ID", "NAME", "VERSION", "KIND", "FILES", "BYTES", "SERVED BY", "PUBLISHER"];
    Ok(Out::new(table(&header, &rows), json!(ps)))
}

/// Lists programs.
pub fn program_list(store: &dyn Storage) -> Result<Out> {
    let pkgs: BTreeMap<i64, Package> = store.packages()?.into_iter().map(|p| (p.id, p)).collect();
    let ps = store.programs()?;
    let rows: Vec<Vec<String>> = ps
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                p.name.clone(),
                pkgs.get(&p.package_id).map_or("?".into(), |k| format!("{} {}", k.name, k.version)),
                p.command.clone(),
                if p.platforms.is_empty() { "any".into() } else { p.platforms.join(",") },
                format!("{}s", p.max_run_time),
                p.device_class.to_string(),
            ]
        })
        .collect();
    let header = ["ID", "NAME", "PACKAGE", "COMMAND", "PLATFORMS", "MAX RUN", "CLASS"];
    Ok(Out::new(table(&header, &rows), json!(ps)))
}

/// `dmmp package add`: imports a package and says what it became.
pub fn package_add(
    cfg: &Config,
    store: &dyn Storage,
    source: &PackageSource,
    distribution_point: Option<&str>,
    now: i64,
) -> Result<Out> {
    let p = add_package(cfg, store, source, distribution_point, now)?;
    let text = format!(
        "package {} added: {} {} ({}, {} files)\n",
        p.id,
        p.name,
        p.version,
        p.kind,
        p.artifacts.len()
    );
    Ok(Out::new(text, json!(p)))
}

/// `dmmp package remove`: removes a package no advertisement uses.
pub fn package_remove(store: &dyn Storage, package: &str) -> Result<Out> {
    let p = find_package(store, package)?;
    let on: Vec<i64> =
        store.dp_contents()?.iter().filter(|r| r.package_id == p.id).map(|r| r.dp_id).collect();
    if !on.is_empty() {
        let names: Vec<String> =
            store.dps()?.into_iter().filter(|d| on.contains(&d.id)).map(|d| d.name).collect();
        return Err(Error::Conflict(format!(
            "package {} {} is on distribution points {}: dmmp dp remove it there first (or dp retire one that is gone)",
            p.name,
            p.version,
            names.join(", ")
        )));
    }
    store.remove_package(p.id)?;
    Ok(Out::new(format!("package {} removed\n", p.id), json!({"removed": p.id})))
}

/// What `dmmp program add` is given.
#[derive(Debug, Clone)]
pub struct ProgramSpec {
    /// The package (id, name or name@version).
    pub package: String,
    /// The program's name in dmmp (advertisements name it).
    pub name: String,
    /// The signed program of the package it runs (required for signed packages).
    pub signed_program: Option<String>,
    /// For raw packages only: a command for clients that read one (not ours).
    pub command: Option<String>,
    /// Platforms it may run on: narrows the signed ones; none: as signed.
    pub platforms: Vec<String>,
    /// Seconds it may run: shortens the signed limit; none: as signed.
    pub max_run_time: Option<u64>,
    /// `mobile` or `desktop`, for raw packages (a signed program's class is signed).
    pub device_class: Option<String>,
}

/// The platforms a program of dmmp runs on: the signed ones, narrowed by the administrator's
/// (who can never add one the publisher did not sign).
fn narrow_platforms(signed: &SignedProgram, asked: &[String]) -> Result<Vec<String>> {
    let signed_names: Vec<String> = signed.platforms.iter().map(|p| p.to_string()).collect();
    for p in asked {
        dm_shared::Platform::parse(p).map_err(Error::Usage)?;
        if !signed_names.is_empty() && !signed_names.contains(p) {
            return Err(Error::Usage(format!(
                "--platform {p}: program {} is signed for {} only; a server can narrow that, never widen it",
                signed.name,
                signed_names.join(", ")
            )));
        }
    }
    Ok(if asked.is_empty() { signed_names } else { asked.to_vec() })
}

/// `dmmp program add`: picks one of the package's signed programs (raw packages, which our
/// agent never runs, take a free command).
pub fn program_add(store: &dyn Storage, spec: &ProgramSpec) -> Result<Out> {
    let pkg = find_package(store, &spec.package)?;
    // Client deployments and configuration packages of items carry no program to pick.
    let itemized = pkg.kind == PackageKind::Configuration && !pkg.config_items.is_empty();
    let prog = if pkg.publisher.is_some() && pkg.kind != PackageKind::ClientDeployment && !itemized
    {
        let wanted = spec.signed_program.as_deref().ok_or_else(|| {
            let names: Vec<&str> = pkg.programs.iter().map(|p| p.name.as_str()).collect();
            Error::Usage(format!(
                "--program NAME: which signed program of {} {} runs ({})",
                pkg.name,
                pkg.version,
                names.join(", ")
            ))
        })?;
        let signed = pkg.programs.iter().find(|p| p.name == wanted).ok_or_else(|| {
            Error::Usage(format!("{} {} signs no program {wanted:?}", pkg.name, pkg.version))
        })?;
        if spec.command.is_some() {
            return Err(Error::Usage(format!(
                "--command: the command of {wanted} is signed by the publisher ({})",
                signed.display()
            )));
        }
        let max = spec.max_run_time.unwrap_or(signed.max_run_time);
        if max > signed.max_run_time {
            return Err(Error::Usage(format!(
                "--max-run-time {max}: program {wanted} is signed for at most {} s; a server can shorten that, never lengthen it",
                signed.max_run_time
            )));
        }
        Program {
            id: 0,
            package_id: pkg.id,
            name: spec.name.clone(),
            command: serde_json::to_string(&signed.command)
                .map_err(|e| Error::Usage(e.to_string()))?,
            platforms: narrow_platforms(signed, &spec.platforms)?,
            max_run_time: max,
            device_class: signed.device_class,
            signed_program: Some(wanted.to_string()),
        }
    } else {
        if spec.signed_program.is_some() && pkg.kind != PackageKind::ClientDeployment && !itemized {
            return Err(Error::Usage(format!(
                "--program: {} {} is a raw package without signed programs",
                pkg.name, pkg.version
            )));
        }
        for p in &spec.platforms {
            dm_shared::Platform::parse(p).map_err(Error::Usage)?;
        }
        Program {
            id: 0,
            package_id: pkg.id,
            name: spec.name.clone(),
            command: spec.command.clone().unwrap_or_default(),
            platforms: spec.platforms.clone(),
            max_run_time: spec.max_run_time.unwrap_or(3600),
            device_class: match &spec.device_class {
                Some(c) => c.parse().map_err(Error::Usage)?,
                None => DeviceClass::Mobile,
            },
            signed_program: None,
        }
    };
    let mut prog = prog;
    prog.id = store.add_program(&prog)?;
    let what = prog.signed_program.as_deref().map_or_else(
        || format!("{:?}", prog.command),
        |p| format!("signed program {p} ({})", prog.command),
    );
    Ok(Out::new(format!("program {} added: {} runs {what}\n", prog.id, prog.name), json!(prog)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_folders_are_one_per_package() {
        assert_ne!(
            content_dir_name("dm", "client-1.2.0.345"),
            content_dir_name("dm-client", "1.2.0.345")
        );
        assert_eq!(content_dir_name("tools", "1.0.0.0"), "tools-1.0.0.0");
        assert_eq!(content_dir_name("a/b", "1"), "a%2Fb-1");
        assert!(!content_dir_name("..", "..").contains('/'));
    }
}
