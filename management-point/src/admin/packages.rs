//! Packages and programs: importing a signed folder (or raw files) as artifacts, copied into
//! the content folder with every digest DDI lists, and the programs that run from them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use dm_shared::digest::HashingReader;
use dm_shared::fs::{self as dmfs, MODE_DIR, MODE_PUBLIC};
use dm_shared::manifest;
use dm_shared::pki::{self, Cert};
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
    /// over-the-air client upgrade), checked against trusted roots.
    Signed {
        /// The folder.
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

fn content_dir_name(name: &str, version: &str) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
            .collect::<String>()
    };
    format!("{}-{}", clean(name), clean(version))
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
    let (name, version, kind, publisher, files): (
        String,
        String,
        PackageKind,
        Option<String>,
        Vec<(String, PathBuf)>,
    ) = match source {
        PackageSource::Signed { dir, roots } => {
            let roots = Cert::load_pem(roots)?;
            let v = manifest::verify_folder(dir, &roots, std::time::SystemTime::now())?;
            let kind = v.manifest.kind;
            let mut files: Vec<(String, PathBuf)> =
                v.manifest.files.iter().map(|f| (f.path.clone(), dir.join(&f.path))).collect();
            for sig in [manifest::MANIFEST_FILE, manifest::SIGNATURE_FILE, manifest::PUBLISHER_FILE]
            {
                files.push((sig.to_string(), dir.join(sig)));
            }
            (
                v.manifest.name.clone(),
                v.manifest.version.to_string(),
                kind,
                Some(v.publisher.subject().to_string()),
                files,
            )
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
            (name.clone(), version.clone(), *kind, None, named)
        }
    };
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
    };
    pkg.id = store.add_package(&pkg)?;
    Ok(pkg)
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
    store.remove_package(p.id)?;
    Ok(Out::new(format!("package {} removed\n", p.id), json!({"removed": p.id})))
}

/// What `dmmp program add` is given.
#[derive(Debug, Clone)]
pub struct ProgramSpec {
    /// The package (id, name or name@version).
    pub package: String,
    /// The program's name.
    pub name: String,
    /// The command line, run in the package folder.
    pub command: String,
    /// Platforms it may run on; none: any.
    pub platforms: Vec<String>,
    /// Seconds it may run.
    pub max_run_time: u64,
    /// `mobile` or `desktop`.
    pub device_class: String,
}

/// `dmmp program add`.
pub fn program_add(store: &dyn Storage, spec: &ProgramSpec) -> Result<Out> {
    let pkg = find_package(store, &spec.package)?;
    for p in &spec.platforms {
        dm_shared::Platform::parse(p).map_err(Error::Usage)?;
    }
    if spec.command.trim().is_empty() {
        return Err(Error::Usage("--command must not be empty".into()));
    }
    let mut prog = Program {
        id: 0,
        package_id: pkg.id,
        name: spec.name.clone(),
        command: spec.command.clone(),
        platforms: spec.platforms.clone(),
        max_run_time: spec.max_run_time,
        device_class: spec.device_class.parse().map_err(Error::Usage)?,
    };
    prog.id = store.add_program(&prog)?;
    let text = format!("program {} added: {} runs {:?}\n", prog.id, prog.name, prog.command);
    Ok(Out::new(text, json!(prog)))
}
