//! What a distribution point holds: each package in `<content>/<package id>/`, its files at
//! their paths in the package, listed in `<content>/held.json` once verified. A package is
//! copied into `<content>/.staging/<id>/`, verified there (sizes and SHA-256 as the management
//! point gave them, then the publisher's signature over the manifest or bundle), and only then
//! moved into place and listed; only listed files are served. A validation hashes them again,
//! and content that no longer matches is unlisted and removed (and copied again).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use dm_shared::fs as dmfs;
use dm_shared::{bundle, manifest};
use serde::{Deserialize, Serialize};

use crate::distribution::{ContentError, Hold, HoldFile};
use crate::error::{Error, Result};

/// What the files are checked against before the signature.
const BY: &str = "the management point's list";
/// The file listing what is held.
const HELD_FILE: &str = "held.json";
/// The largest `held.json` read.
const MAX_HELD: u64 = 64 << 20;

/// A package held, verified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldPackage {
    /// Its id.
    pub package: i64,
    /// Its name and version.
    pub name: String,
    /// Its version.
    pub version: String,
    /// When it was copied and verified.
    pub copied: i64,
    /// The refresh it was copied for.
    pub refresh: u32,
    /// The last validation asked for that was done.
    pub validated: u32,
    /// When it was last hashed (copied or validated).
    pub checked: i64,
    /// Its files.
    pub files: Vec<HoldFile>,
}

/// A file to serve: where it is, its size and its SHA-256.
#[derive(Debug, Clone)]
pub struct Served {
    /// Its path.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Its SHA-256 (hex).
    pub sha256: String,
}

/// The content folder and what it holds.
#[derive(Debug)]
pub struct Holdings {
    root: PathBuf,
    held: RwLock<Arc<BTreeMap<i64, HeldPackage>>>,
}

impl Holdings {
    /// Opens the content folder (made 0700 when missing), reading what it holds; what is
    /// there unlisted (a copy cut by a stop) is left for the copier to resume or remove.
    pub fn open(root: &Path) -> Result<Holdings> {
        dmfs::create_dir_all(root, dmfs::MODE_DIR_PRIVATE)?;
        let held = match dmfs::read_optional(&root.join(HELD_FILE), MAX_HELD)? {
            Some(b) => serde_json::from_slice::<Vec<HeldPackage>>(&b)
                .map_err(|e| Error::Config {
                    path: root.join(HELD_FILE),
                    reason: format!("not a list of held packages: {e}"),
                })?
                .into_iter()
                .map(|p| (p.package, p))
                .collect(),
            None => BTreeMap::new(),
        };
        Ok(Holdings { root: root.to_path_buf(), held: RwLock::new(Arc::new(held)) })
    }

    /// The content folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What is held now.
    pub fn held(&self) -> Arc<BTreeMap<i64, HeldPackage>> {
        self.held.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The file `name` of package `package`, if held.
    pub fn served(&self, package: i64, name: &str) -> Option<Served> {
        let held = self.held();
        let p = held.get(&package)?;
        let f = p.files.iter().find(|f| f.name == name)?;
        Some(Served {
            path: self.dir_of(package).join(&f.name),
            size: f.size,
            sha256: f.sha256.clone(),
        })
    }

    /// Where package `id` is held.
    pub fn dir_of(&self, id: i64) -> PathBuf {
        self.root.join(id.to_string())
    }

    /// Where package `id` is copied before it is verified (per refresh, so a refresh never
    /// resumes from the copy it replaces).
    pub fn staging_of(&self, id: i64, refresh: u32) -> PathBuf {
        self.root.join(".staging").join(format!("{id}-{refresh}"))
    }

    /// Changes the list with `f` and writes it (atomically), then serves by it.
    fn change(&self, f: impl FnOnce(&mut BTreeMap<i64, HeldPackage>)) -> Result<()> {
        let mut g = self.held.write().unwrap_or_else(|p| p.into_inner());
        let mut next = (**g).clone();
        f(&mut next);
        let list: Vec<&HeldPackage> = next.values().collect();
        let bytes = serde_json::to_vec_pretty(&list).unwrap_or_default();
        dmfs::write_atomic(&self.root.join(HELD_FILE), &bytes, dmfs::MODE_PRIVATE)?;
        *g = Arc::new(next);
        Ok(())
    }

    /// Checks a staged copy of `h` and puts it in place of what was held: every file's size
    /// and SHA-256, then the publisher's signature (a signed package's manifest, a bundle's
    /// signature), and that it is the package the management point named.
    pub fn install(
        &self,
        h: &Hold,
        staged: &Path,
        trust: &dm_shared::pki::Trust,
        now: i64,
    ) -> Result<()> {
        for f in &h.files {
            let path = staged.join(&f.name);
            dm_shared::digest::hash_file(&path, f.size)?
                .check_against(&path, f.size, &f.sha256, BY)?;
        }
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(now.max(0) as u64);
        if h.bundle && h.files.len() != 1 {
            return Err(Error::Usage(format!(
                "package {} is named a bundle but has {} files",
                h.package,
                h.files.len()
            )));
        }
        let signed = if h.bundle {
            let (m, _) = bundle::verify(&staged.join(&h.files[0].name), trust, at)?;
            Some(m)
        } else if h.signed {
            Some(manifest::verify_folder(staged, trust, at)?.manifest)
        } else {
            None
        };
        if let Some(m) = signed {
            if m.name != h.name || m.version.to_string() != h.version {
                return Err(Error::Usage(format!(
                    "the copy of package {} is signed as {} {}, not {} {}",
                    h.package, m.name, m.version, h.name, h.version
                )));
            }
        }
        let dest = self.dir_of(h.package);
        let old = self.root.join(format!(".old-{}", h.package));
        dmfs::remove_dir_all(&old)?;
        self.change(|m| {
            m.remove(&h.package);
        })?;
        if dest.exists() {
            dmfs::rename(&dest, &old)?;
        }
        dmfs::rename(staged, &dest)?;
        dmfs::remove_dir_all(&old)?;
        self.change(|m| {
            m.insert(
                h.package,
                HeldPackage {
                    package: h.package,
                    name: h.name.clone(),
                    version: h.version.clone(),
                    copied: now,
                    refresh: h.refresh,
                    validated: h.validate,
                    checked: now,
                    files: h.files.clone(),
                },
            );
        })
    }

    /// Removes what nothing needs: package folders not held (a removal cut short), copies
    /// being replaced, and staged copies other than those of `keep` (package, refresh).
    pub fn sweep(&self, keep: &[(i64, u32)]) -> Result<()> {
        let held = self.held();
        let entries =
            std::fs::read_dir(&self.root).map_err(dm_shared::fs::io_err("list", &self.root))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = match name.parse::<i64>() {
                Ok(id) => !held.contains_key(&id),
                Err(_) => name.starts_with(".old-"),
            };
            if stale && e.path().is_dir() {
                log::info!("removing {}: nothing holds it", e.path().display());
                dmfs::remove_dir_all(&e.path())?;
            }
        }
        let staging = self.root.join(".staging");
        for e in std::fs::read_dir(&staging).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let copy =
                name.split_once('-').and_then(|(p, r)| Some((p.parse().ok()?, r.parse().ok()?)));
            if !copy.is_some_and(|c| keep.contains(&c)) {
                log::info!("removing {}: no copy needs it", e.path().display());
                dmfs::remove_dir_all(&e.path())?;
            }
        }
        Ok(())
    }

    /// Stops serving package `id` and removes its files.
    pub fn remove(&self, id: i64) -> Result<()> {
        self.change(|m| {
            m.remove(&id);
        })?;
        dmfs::remove_dir_all(&self.dir_of(id))?;
        Ok(())
    }

    /// Hashes package `id` again; content that does not match is unlisted and removed, and
    /// returned. `asked` is the validation asked for that this one does.
    pub fn validate(&self, id: i64, asked: u32, now: i64) -> Result<Vec<ContentError>> {
        let Some(p) = self.held().get(&id).cloned() else { return Ok(Vec::new()) };
        let dir = self.dir_of(id);
        let mut errors = Vec::new();
        for f in &p.files {
            let path = dir.join(&f.name);
            let r = dm_shared::digest::hash_file(&path, f.size)
                .and_then(|h| h.check_against(&path, f.size, &f.sha256, BY));
            if let Err(e) = r {
                let reason = match e {
                    dm_shared::Error::Io { source, .. }
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        "missing".to_string()
                    }
                    e => e.to_string(),
                };
                errors.push(ContentError { package: id, file: f.name.clone(), reason });
            }
        }
        if errors.is_empty() {
            self.change(|m| {
                if let Some(x) = m.get_mut(&id) {
                    x.validated = x.validated.max(asked);
                    x.checked = now;
                }
            })?;
        } else {
            for e in &errors {
                log::warn!("package {id} {}: {}; removing it to copy it again", e.file, e.reason);
            }
            self.remove(id)?;
        }
        Ok(errors)
    }
}
